"""Where the prepared runs of an experiment run: this machine (local) or a SLURM cluster (slurm).

plan         what to do with each prepared run (start, reload, skip, busy, refuse), how it ended (Outcome),
             the counts and the failure text: the one module both backends share
claims       a runner's claim on a run, so that two runners on one experiment never start the same run
local        the local backend: N runs at a time on this machine
slurm        the SLURM backend: a job array from the template slurm_job.sh, followed until its jobs end
slurm_cli    sbatch, squeue and scontrol: their errors (cluster down vs. refused) and sbatch's quoting

Both backends run the same command per run, `bin/train.py ... -b training_loop.reload="auto"` (also the line
of jobs.txt), and bin/train.py decides whether it starts, continues or has nothing left to do.
"""
