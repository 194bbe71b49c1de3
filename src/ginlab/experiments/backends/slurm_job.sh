#!/bin/bash
# {{experiment}}: {{count}} run(s) of bin/train.py as a SLURM job array, written by ginlab on {{written}}.
# The array index is the run's index in experiment.json; submit again by hand with
#   sbatch --array=I,J <this file>
# Each element runs its line of jobs.txt: with training_loop.reload="auto", bin/train.py starts the run, continues
# it from its newest checkpoint when it was interrupted, failed or requeued, and exits 0 when it had finished.
# Time limit: SLURM sends SIGUSR1 to this script --signal seconds before it; the script passes it to bin/train.py
# (checkpoint, exit {{exit_interrupted}}) and requeues the job, which then continues the run. A SIGTERM (scancel,
# preemption) is passed on too; then only SLURM itself requeues (preemption), not the script.
# Paths in #SBATCH lines are quoted for sbatch (a "%" in a path is written "%%"); in bash lines, for bash.
#SBATCH --job-name={{job_name}}
#SBATCH --output={{output}}
#SBATCH --open-mode=append
#SBATCH --requeue
#SBATCH --signal=B:USR1@{{signal_seconds}}
{{directives}}
set -u
cd {{root}} || exit {{exit_usage}}
case "${SLURM_ARRAY_TASK_ID:-}" in
{{cases}}
    *) echo "no run with array index ${SLURM_ARRAY_TASK_ID:-(none)} in $0" >&2; exit {{exit_usage}} ;;
esac
echo "==== $(date -Is) job $SLURM_JOB_ID (${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}) on $(hostname), start ${SLURM_RESTART_COUNT:-0}: $save_dir"
export OMP_NUM_THREADS="${SLURM_CPUS_PER_TASK:-1}" MKL_NUM_THREADS="${SLURM_CPUS_PER_TASK:-1}"
export PYTHONUNBUFFERED=1
signalled=""
forward() { signalled="$1"; kill -s "$1" "$child" 2>/dev/null || true; }
trap 'forward USR1' USR1
trap 'forward TERM' TERM
"${command[@]}" &
child=$!
# wait returns early when a trapped signal arrives: wait again until bin/train.py has exited.
wait "$child"
while kill -0 "$child" 2>/dev/null; do wait "$child"; done
wait "$child"; code=$?
echo "==== $(date -Is) bin/train.py exited with $code${signalled:+ after SIG$signalled}"
# {{exit_interrupted}}: checkpoint written; {{exit_usr1_unhandled}} (128 + SIGUSR1): the signal came before bin/train.py could handle it.
if [ "$signalled" = USR1 ] && { [ "$code" = {{exit_interrupted}} ] || [ "$code" = {{exit_usr1_unhandled}} ]; }; then
    echo "==== time limit near: requeueing job $SLURM_JOB_ID"
    scontrol requeue "$SLURM_JOB_ID"
fi
exit "$code"
