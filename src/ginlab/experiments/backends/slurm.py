"""The SLURM backend: submit the prepared runs as a job array with sbatch, then track the jobs until they end.

SLURM does all the scheduling; this module only writes the job script, calls `sbatch`, and reads `squeue` /
`scontrol` and the run folders (sacct needs slurmdbd, which many clusters and the dev cluster do not have).

Time limits and preemption (see the comment at the top of every job script):
- `#SBATCH --signal=B:USR1@<signal_seconds>`: SLURM sends SIGUSR1 to the batch script that long before the
  time limit. The script passes it on to bin/train.py, which finishes its step, writes a checkpoint, marks the
  run "interrupted" and exits 3. The script then requeues its own job (`scontrol requeue $SLURM_JOB_ID`).
- `--requeue`: a preempted job (PreemptMode=REQUEUE) or one requeued by an admin is started again. Its SIGTERM
  reaches bin/train.py, which stops the same way.
- A requeued job finds meta.json in its run folder and adds `-b training_loop.reload=True`: it continues from
  the newest checkpoint. A job whose run is already finished exits at once.
"""

import dataclasses
import getpass
import json
import logging
import shlex
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from ginlab.experiments.backends.classify import RELOAD, Run, effective_status, inspect_run, read_meta
from ginlab.experiments.backends.local import Outcome, describe_owner, refusal_message
from ginlab.experiments.experiment import ExperimentError
from ginlab.experiments.progress import Counts, Progress
from ginlab.runfolder.atomic import atomic_write_text
from ginlab.runfolder.jsonlines import JsonLinesError, append_line, read_records

log = logging.getLogger(__name__)

ACTIVE_STATES = {
    "PENDING",
    "RUNNING",
    "CONFIGURING",
    "COMPLETING",
    "REQUEUED",
    "REQUEUE_HOLD",
    "REQUEUE_FED",
    "RESIZING",
    "SUSPENDED",
    "STOPPED",
    "SIGNALING",
    "STAGE_OUT",
    "RESV_DEL_HOLD",
}


UNREACHABLE_SECONDS = 300  # while tracking, how long the queue may not answer before `run` gives up


class SlurmUnavailable(ExperimentError):
    """sbatch is missing or the cluster does not answer."""


@dataclasses.dataclass
class SlurmOptions:
    """What each job asks the cluster for (sbatch options). None leaves the cluster's default.

    Args:
        partition: --partition.
        time: --time, the time limit of one job ("HH:MM:SS", "D-HH:MM:SS" or minutes).
        cpus: --cpus-per-task; also the run's torch threads (OMP_NUM_THREADS).
        gpus: --gpus (a count or "type:count").
        mem: --mem, e.g. "8G".
        signal_seconds: SIGUSR1 this many seconds before the time limit, to checkpoint and requeue.
        max_parallel: at most this many jobs of the array at once (--array=...%N).
        extra: more sbatch arguments, as given.
    """

    partition: str | None = None
    time: str | None = "01:00:00"
    cpus: int = 1
    gpus: str | int | None = None
    mem: str | None = None
    signal_seconds: int = 120
    max_parallel: int | None = None
    extra: list[str] = dataclasses.field(default_factory=list)

    def directives(self) -> list[str]:
        values = {
            "partition": self.partition,
            "time": self.time,
            "cpus-per-task": self.cpus,
            "gpus": self.gpus,
            "mem": self.mem,
        }
        lines = [f"#SBATCH --{key}={value}" for key, value in values.items() if value not in (None, "", 0)]
        return lines + [f"#SBATCH {shlex.join([arg])}" for arg in self.extra]


@dataclasses.dataclass
class Job:
    """A SLURM job running (or waiting to run) one run: an element of an array."""

    job_id: str  # the element's own id, what scontrol requeue/update take
    array_id: str
    index: int
    state: str
    reason: str

    @property
    def label(self) -> str:
        return f"{self.array_id}_{self.index}"


def local_instead(experiment_name: str) -> str:
    return (
        f"To run the experiment on this machine instead: python experiments/{experiment_name}/main.py run "
        "--backend local"
    )


def slurm_command(args: list[str], experiment_name: str, timeout: float = 60) -> str:
    """Run a SLURM client command; return its stdout.

    Raises:
        SlurmUnavailable: the command is missing, timed out, or failed (with its message).
    """
    if shutil.which(args[0]) is None:
        raise SlurmUnavailable(
            f"`{args[0]}` not found: SLURM is not installed on this machine (or not on PATH), so the "
            f"experiment cannot be submitted to a cluster.\n{local_instead(experiment_name)}"
        )
    try:
        result = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise SlurmUnavailable(
            f"`{shlex.join(args)}` got no answer within {timeout:.0f} s: the SLURM controller is not "
            f"answering.\n{local_instead(experiment_name)}"
        ) from None
    if result.returncode != 0:
        message = (result.stderr or result.stdout).strip()
        raise SlurmUnavailable(
            f"`{shlex.join(args)}` failed (exit {result.returncode}): {message}\n"
            f"Is the cluster up? (`sinfo`; for the development cluster: sudo bin/slurm-dev-cluster start)\n"
            f"{local_instead(experiment_name)}"
        )
    return result.stdout


class SlurmBackend:
    """Submit prepared runs to SLURM and follow them.

    Args:
        name: the experiment's name (the jobs' name).
        root: the repository root (the jobs' working directory).
        folder: where job scripts, the submission record and the jobs' output go (`<results>/slurm`).
        options: what each job asks for.
        retries: how often a failed run is submitted again (reloading) before it is reported as failed.
        poll_seconds: how often squeue is asked while tracking.
        python: the interpreter the jobs run bin/train.py with (default: this one; it must exist
            on the nodes).
    """

    def __init__(
        self,
        name: str,
        root: Path,
        folder: Path,
        options: SlurmOptions,
        retries: int = 1,
        poll_seconds: float = 10,
        python: str | None = None,
        progress: Progress | None = None,
    ):
        self.name = name
        self.root = Path(root)
        self.folder = Path(folder)
        self.options = options
        self.retries = retries
        self.poll_seconds = poll_seconds
        self.python = python or sys.executable
        self.progress = progress or Progress(f"{name} on SLURM")
        self.submissions = self.folder / "submissions.jsonl"

    # --- the cluster ---------------------------------------------------------------------------------------

    def check_cluster(self) -> None:
        """Raises SlurmUnavailable unless sbatch exists and the controller answers."""
        slurm_command(["sbatch", "--version"], self.name, timeout=20)
        slurm_command(["squeue", "-h", "-o", "%i", "-u", getpass.getuser()], self.name, timeout=30)

    def active_jobs(self) -> dict[str, Job]:
        """{run name: its job} for the jobs of this experiment that are still queued or running."""
        names = self._submitted_names()
        if not names:
            return {}
        output = slurm_command(
            ["squeue", "-h", "-r", "-u", getpass.getuser(), "-o", "%A|%F|%K|%T|%r"], self.name
        )
        jobs = {}
        for line in output.splitlines():
            fields = line.strip().split("|")
            if len(fields) != 5 or not fields[2].isdigit() or (fields[1], int(fields[2])) not in names:
                continue
            job = Job(
                job_id=fields[0], array_id=fields[1], index=int(fields[2]), state=fields[3], reason=fields[4]
            )
            if job.state in ACTIVE_STATES:
                jobs[names[fields[1], job.index]] = job
        return jobs

    def _submitted_names(self) -> dict[tuple[str, int], str]:
        """{(array id, array index): run name} of every submission (indices can change when the grid does)."""
        try:
            entries = read_records(self.submissions)
        except JsonLinesError as error:
            # Skipping the line would forget that submission's jobs, and `run` would submit its runs again.
            raise ExperimentError(
                f"{error} Each line records one job array this experiment submitted: if you delete one, "
                f"cancel that array's jobs (squeue shows them) before `run` submits their runs again."
            ) from None
        names = {}
        for entry in entries:
            for index, name in zip(entry["indices"], entry["names"], strict=False):
                names[str(entry["array_id"]), index] = name
        return names

    def job_state(self, job_id: str) -> str | None:
        """JobState of one job from scontrol (it knows ended jobs for MinJobAge, 300 s by default)."""
        try:
            output = slurm_command(["scontrol", "-o", "show", "job", job_id], self.name, timeout=30)
        except SlurmUnavailable:
            return None
        for field in output.split():
            if field.startswith("JobState="):
                return field.split("=", 1)[1]
        return None

    def last_jobs(self) -> dict[str, str]:
        """{run name: "arrayid_index"} of the newest submission of each run."""
        return {name: f"{array_id}_{index}" for (array_id, index), name in self._submitted_names().items()}

    # --- submitting ----------------------------------------------------------------------------------------

    def job_script(self, runs: list[Run]) -> str:
        """A batch script running the given runs as elements of a job array (index = the run's index)."""
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        lines = [
            "#!/bin/bash",
            f"# {self.name}: {len(runs)} run(s) of bin/train.py as a SLURM job array, written on {stamp}.",
            "# The array index is the run's index in experiment.json; submit again by hand with",
            "#   sbatch --array=I,J <this file>",
            (
                "# Time limit: SLURM sends SIGUSR1 to this script --signal seconds before it; "
                "the script passes it to"
            ),
            "# bin/train.py (checkpoint, exit 3) and requeues the job, which then reloads the run. A SIGTERM",
            (
                "# (scancel, preemption) is passed on too; "
                "then only SLURM itself requeues (preemption), not the script."
            ),
            f"#SBATCH --job-name={self.name}",
            f"#SBATCH --output={self.folder / 'output'}/%A_%a.out",
            "#SBATCH --open-mode=append",
            "#SBATCH --requeue",
            f"#SBATCH --signal=B:USR1@{int(self.options.signal_seconds)}",
            *self.options.directives(),
            "set -u",
            f"cd {shlex.quote(str(self.root))}",
            'case "${SLURM_ARRAY_TASK_ID:-}" in',
        ]
        for run in runs:
            command = run.command(python=self.python)
            lines.append(
                f"    {run.index}) save_dir={shlex.quote(str(run.save_dir))}; "
                f"command=({shlex.join(command)}) ;;"
            )
        lines += [
            '    *) echo "no run with array index ${SLURM_ARRAY_TASK_ID:-(none)} in $0" >&2; exit 2 ;;',
            "esac",
            (
                'echo "==== $(date -Is) job $SLURM_JOB_ID (${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}) on '
                '$(hostname), start ${SLURM_RESTART_COUNT:-0}: $save_dir"'
            ),
            'if [ -f "$save_dir/meta.json" ]; then',
            '    if grep -q \'"status": *"finished"\' "$save_dir/meta.json"; then',
            '        echo "finished already: nothing to do"; exit 0',
            "    fi",
            (
                f"    command+=(-b {RELOAD})  # interrupted, failed or killed: "
                "continue from the newest checkpoint"
            ),
            "fi",
            'export OMP_NUM_THREADS="${SLURM_CPUS_PER_TASK:-1}" MKL_NUM_THREADS="${SLURM_CPUS_PER_TASK:-1}"',
            "export PYTHONUNBUFFERED=1",
            'signalled=""',
            'forward() { signalled="$1"; kill -s "$1" "$child" 2>/dev/null || true; }',
            "trap 'forward USR1' USR1",
            "trap 'forward TERM' TERM",
            '"${command[@]}" &',
            "child=$!",
            "# wait returns early when a trapped signal arrives: wait again until bin/train.py has exited.",
            'wait "$child"',
            'while kill -0 "$child" 2>/dev/null; do wait "$child"; done',
            'wait "$child"; code=$?',
            'echo "==== $(date -Is) bin/train.py exited with $code${signalled:+ after SIG$signalled}"',
            (
                "# 3: checkpoint written; 138 (128 + SIGUSR1): "
                "the signal came before bin/train.py could handle it."
            ),
            'if [ "$signalled" = USR1 ] && { [ "$code" = 3 ] || [ "$code" = 138 ]; }; then',
            '    echo "==== time limit near: requeueing job $SLURM_JOB_ID"',
            '    scontrol requeue "$SLURM_JOB_ID"',
            "fi",
            'exit "$code"',
        ]
        return "\n".join(lines) + "\n"

    def submit(self, runs: list[Run]) -> str:
        """Write a job script for `runs` and submit it as one job array; return the array's job id."""
        (self.folder / "output").mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S-%f")
        script = self.folder / f"job-{stamp}.sh"
        atomic_write_text(script, self.job_script(runs))
        script.chmod(0o755)
        array = ",".join(str(run.index) for run in runs)
        if self.options.max_parallel:
            array += f"%{self.options.max_parallel}"
        output = slurm_command(["sbatch", "--parsable", f"--array={array}", str(script)], self.name)
        array_id = output.strip().split(";")[0]
        append_line(
            self.submissions,
            json.dumps(
                {
                    "array_id": array_id,
                    "indices": [run.index for run in runs],
                    "names": [run.name for run in runs],
                    "script": str(script),
                    "time": datetime.now(UTC).isoformat(timespec="seconds"),
                    "options": dataclasses.asdict(self.options),
                }
            ),
        )
        return array_id

    def output_path(self, label: str) -> Path:
        return self.folder / "output" / f"{label}.out"

    # --- run and track -------------------------------------------------------------------------------------

    def run(self, runs: list[Run]) -> list[Outcome]:
        """Submit every run that is neither finished nor queued already; follow all of them until they end."""
        self.check_cluster()
        active = self.active_jobs()
        outcomes: dict[str, Outcome] = {}
        to_submit, tracked = [], {}
        for run in runs:
            state = inspect_run(run, self.root)
            if run.name in active:
                tracked[run.name] = run
                self.progress.event(
                    f"{run.name}: already {active[run.name].state} as job {active[run.name].label}"
                )
            elif state.action == "skip":
                outcomes[run.name] = Outcome(run, "skipped", "finished before")
            elif state.action == "conflict":
                outcomes[run.name] = Outcome(run, "refused", "; ".join(state.differences))
                self.progress.event(refusal_message(run, state.differences))
            elif state.action == "busy":
                outcomes[run.name] = Outcome(run, "busy", f"running elsewhere ({describe_owner(state.meta)})")
                self.progress.event(
                    f"{run.name} is running outside this experiment's jobs "
                    f"({describe_owner(state.meta)}): not submitted"
                )
            else:
                to_submit.append(run)
        attempts = {run.name: 0 for run in runs}
        with self.progress:
            if to_submit:
                array_id = self._submit(to_submit, attempts)
                self.progress.event(f"submitted {len(to_submit)} run(s) as job array {array_id}")
                tracked.update({run.name: run for run in to_submit})
            try:
                self._track(tracked, outcomes, attempts, runs)
            except KeyboardInterrupt:
                self.progress.event(
                    "stopped tracking: the jobs keep running on the cluster; `status` shows them "
                    "and `run` follows them again"
                )
                for run in tracked.values():
                    outcomes.setdefault(run.name, Outcome(run, "queued", "still on the cluster"))
                raise
        return [outcomes.get(run.name) or Outcome(run, "queued", "still on the cluster") for run in runs]

    def _submit(self, runs: list[Run], attempts: dict) -> str:
        for run in runs:
            attempts[run.name] += 1
        return self.submit(runs)

    def _track(self, tracked: dict[str, Run], outcomes: dict, attempts: dict, runs: list[Run]) -> None:
        seen: dict[str, tuple] = {}
        labels = self.last_jobs()
        unreachable_since = None
        while tracked:
            try:
                active = self.active_jobs()
                unreachable_since = None
            except SlurmUnavailable as error:  # a controller restart or a network blip: keep trying a while
                now = time.monotonic()
                if unreachable_since is None:
                    unreachable_since = now
                    self.progress.event(
                        f"the SLURM queue does not answer; trying again for 5 minutes "
                        f"({str(error).splitlines()[0]})"
                    )
                if now - unreachable_since > UNREACHABLE_SECONDS:
                    raise
                time.sleep(self.poll_seconds)
                continue
            retry = []
            for name, run in list(tracked.items()):
                job = active.get(name)
                if job is not None:
                    state = (job.state, job.reason)
                    if seen.get(name) != state:
                        seen[name] = state
                        why = f" ({job.reason})" if job.reason not in ("None", "") else ""
                        self.progress.event(f"job {job.label} {run.name}: {job.state}{why}")
                    labels[name] = job.label
                    continue
                label = labels.get(name, "?")
                # Gone from squeue. A job between its end and its requeue can be missing for a moment.
                meta = read_meta(run.save_dir)
                status = effective_status(meta) if meta else "missing"
                job_state = self.job_state(label) if status != "finished" else None
                if job_state in ACTIVE_STATES:
                    continue
                del tracked[name]
                out = self.output_path(label)
                if status == "finished":
                    outcomes[run.name] = Outcome(run, "finished", f"job {label}", out, attempts[name])
                    self.progress.event(f"finished {run.name} (job {label})")
                elif (job_state or "").startswith("CANCELLED"):  # scancel: someone's decision, not a failure
                    saved = {"interrupted": "a checkpoint", "missing": "the run not started"}.get(
                        status, f"the run {status}"
                    )
                    outcomes[run.name] = Outcome(
                        run,
                        "interrupted",
                        f"job {label} was cancelled, leaving {saved}; `run` continues it",
                        out,
                        attempts[name],
                    )
                    self.progress.event(
                        f"{run.name}: job {label} was cancelled, leaving {saved}; output: {out}"
                    )
                elif attempts[name] <= self.retries:
                    # Failed, killed, timed out without requeueing, or not startable (NODE_FAIL ...):
                    # reload it.
                    self.progress.event(
                        f"{run.name}: {ended(label, status, meta, job_state)}; submitting it "
                        f"again (output: {out})"
                    )
                    retry.append(run)
                else:
                    reason = ended(label, status, meta, job_state)
                    outcomes[run.name] = Outcome(run, "failed", reason, out, attempts[name])
                    self.progress.event(
                        f"FAILED {run.name}: {reason}; output: {out}, run log: {run.save_dir / 'log.txt'}"
                    )
            if retry:
                array_id = self._submit(retry, attempts)
                tracked.update({run.name: run for run in retry})
                for run in retry:
                    seen.pop(run.name, None)
                    labels[run.name] = f"{array_id}_{run.index}"
            done = sum(o.status in ("finished", "skipped") for o in outcomes.values())
            failed = sum(o.status == "failed" for o in outcomes.values())
            running = sum(job.state == "RUNNING" for i, job in active.items() if i in tracked)
            self.progress.update(
                Counts(
                    done,
                    running,
                    failed,
                    len(tracked) - running,
                    sum(o.status == "refused" for o in outcomes.values()),
                )
            )
            if tracked:
                time.sleep(self.poll_seconds)


def ended(label: str, status: str, meta: dict | None, job_state: str | None) -> str:
    """Why a job that is gone from the queue did not finish its run."""
    state = f" ({job_state})" if job_state else ""
    if meta is None:
        return f"job {label} ended{state} before bin/train.py wrote the run folder"
    text = f"job {label} ended{state} with the run {status}"
    error = meta.get("error") or {}
    if error.get("message"):
        text += f": {error.get('type', 'Error')}: {error['message']}"
    return text
