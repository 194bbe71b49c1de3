"""The SLURM backend: submit the prepared runs as a job array with sbatch, then track the jobs until they end.

SLURM does all the scheduling; this module only writes the job script (from the template slurm_job.sh beside
it), calls `sbatch`, and reads `squeue` / `scontrol` and the run folders (sacct needs slurmdbd, which many
clusters and the dev cluster do not have).

Each job runs its run's line of jobs.txt (`bin/train.py ... -b training_loop.reload="auto"`): bin/train.py
starts the run, continues it, or exits 0 when it had finished. So a requeued job continues from the newest
checkpoint, and the job script decides nothing about the run. Time limits and preemption:
- `#SBATCH --signal=B:USR1@<signal_seconds>`: SLURM sends SIGUSR1 to the batch script that long before the
  time limit. The script passes it on to bin/train.py, which finishes its step, writes a checkpoint, marks the
  run "interrupted" and exits 3. The script then requeues its own job (`scontrol requeue $SLURM_JOB_ID`).
- `--requeue`: a preempted job (PreemptMode=REQUEUE) or one requeued by an admin is started again. Its SIGTERM
  reaches bin/train.py, which stops the same way.
"""

from __future__ import annotations

import dataclasses
import getpass
import json
import logging
import re
import shlex
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from ginlab.errors import ExitCode, RunFolderError
from ginlab.experiments.backends.plan import (
    BUSY,
    REFUSE,
    SKIP,
    Outcome,
    count,
    describe_exit,
    first_sentence,
    plan_run,
    refusal_message,
    skipped,
)
from ginlab.experiments.backends.slurm_cli import (
    ACTIVE_STATES,
    Job,
    SlurmRefused,
    SlurmUnavailable,
    output_pattern,
    parse_scontrol_job,
    parse_squeue,
    sbatch_value,
    slurm_command,
)
from ginlab.experiments.experiment import ExperimentError, Run
from ginlab.experiments.progress import Progress
from ginlab.runfolder import format as fmt
from ginlab.runfolder import read_meta, run_status
from ginlab.runfolder.atomic import atomic_write_text
from ginlab.runfolder.jsonlines import JsonLinesError, append_line, read_records

log = logging.getLogger(__name__)

TEMPLATE = Path(__file__).with_name("slurm_job.sh")
UNREACHABLE_SECONDS = 300  # while tracking, how long the queue may not answer before `run` gives up


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
        extra: more sbatch arguments, as given ("--account=myproject", "--exclusive").
    """

    partition: str | None = None
    time: str | None = "01:00:00"
    cpus: int = 1
    gpus: str | int | None = None
    mem: str | None = None
    signal_seconds: int = 120
    max_parallel: int | None = None
    extra: list[str] = dataclasses.field(default_factory=list)

    @classmethod
    def from_arguments(cls, args) -> SlurmOptions:
        """The options given to `main.py run --backend slurm` (ginlab.experiments.cli's arguments)."""
        return cls(
            partition=args.partition,
            time=args.time,
            cpus=args.cpus,
            gpus=args.gpus,
            mem=args.mem,
            signal_seconds=args.signal_seconds,
            max_parallel=args.max_parallel,
            extra=args.sbatch,
        )

    def directives(self) -> list[str]:
        """The #SBATCH lines of these options, every value quoted for sbatch."""
        values = {
            "partition": self.partition,
            "time": self.time,
            "cpus-per-task": self.cpus,
            "gpus": self.gpus,
            "mem": self.mem,
        }
        lines = [
            f"#SBATCH --{key}={sbatch_value(value, f'--{key}')}"
            for key, value in values.items()
            if value not in (None, "", 0)
        ]
        for argument in self.extra:
            option, equals, value = argument.partition("=")
            if not option.startswith("-") or any(c.isspace() for c in option):
                raise ExperimentError(
                    f"--sbatch {argument!r} is not an sbatch option: give one option per --sbatch, written "
                    f"--name=value or --flag (e.g. --sbatch=--account=myproject)."
                )
            lines.append(f"#SBATCH {option}={sbatch_value(value, option)}" if equals else f"#SBATCH {option}")
        return lines


def render(template: str, values: dict[str, object]) -> str:
    """The template with each {{name}} replaced by str(values[name]).

    Raises:
        KeyError: the template names a value not given, or a given value is not used (a template and its
            caller that disagree are a bug, not a run to submit).
    """
    used = set()

    def fill(match: re.Match) -> str:
        used.add(match.group(1))
        return str(values[match.group(1)])

    text = re.sub(r"\{\{(\w+)\}\}", fill, template)
    if set(values) - used:
        raise KeyError(f"{TEMPLATE.name} does not use {sorted(set(values) - used)}")
    return text


class SlurmBackend:
    """Submit prepared runs to SLURM and follow them.

    Args:
        name: the experiment's name (the jobs' name).
        root: the repository root (the jobs' working directory).
        folder: where job scripts, the submission record and the jobs' output go (`<results>/slurm`).
        options: what each job asks for.
        retries: how often a failed run is submitted again (it continues) before it is reported as failed.
        poll_seconds: how often squeue is asked while tracking.
        python: the interpreter the jobs run bin/train.py with (default: this one; it must exist on the
            nodes).
        progress: where events and counts are shown.
        claims: the experiment's claims folder: runs a local runner holds are not submitted.
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
        claims: Path | None = None,
    ):
        self.name = name
        self.root = Path(root)
        self.folder = Path(folder)
        self.options = options
        self.retries = retries
        self.poll_seconds = poll_seconds
        self.python = python or sys.executable
        self.progress = progress or Progress(f"{name} on SLURM")
        self.claims = claims
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
        return {
            names[job.array_id, job.index]: job
            for job in parse_squeue(output)
            if (job.array_id, job.index) in names and job.state in ACTIVE_STATES
        }

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

    def job_info(self, job_id: str) -> tuple[str | None, int | None]:
        """(JobState, exit code) of one job from scontrol, which knows ended jobs for MinJobAge (300 s by
        default); (None, None) when it does not know the job (any more)."""
        try:
            output = slurm_command(["scontrol", "-o", "show", "job", job_id], self.name, timeout=30)
        except (SlurmUnavailable, SlurmRefused):
            return None, None
        return parse_scontrol_job(output)

    def last_jobs(self) -> dict[str, str]:
        """{run name: "arrayid_index"} of the newest submission of each run."""
        return {name: f"{array_id}_{index}" for (array_id, index), name in self._submitted_names().items()}

    # --- submitting ----------------------------------------------------------------------------------------

    def job_script(self, runs: list[Run]) -> str:
        """A batch script running the given runs as elements of a job array (index = the run's index).

        Raises:
            ExperimentError: a path or option cannot be written into an #SBATCH line (sbatch_value).
        """
        cases = [
            f"    {run.index}) save_dir={shlex.quote(str(run.save_dir))}; "
            f"command=({shlex.join(run.command(python=self.python))}) ;;"
            for run in runs
        ]
        return render(
            TEMPLATE.read_text(),
            {
                "experiment": self.name,
                "count": len(runs),
                "written": datetime.now(UTC).isoformat(timespec="seconds"),
                "job_name": sbatch_value(self.name, "The experiment name"),
                "output": sbatch_value(output_pattern(str(self.folder / "output")), "The results folder"),
                "signal_seconds": int(self.options.signal_seconds),
                "directives": "\n".join(self.options.directives()),
                "root": shlex.quote(str(self.root)),
                "cases": "\n".join(cases),
                "exit_usage": int(ExitCode.USAGE),
                "exit_interrupted": int(ExitCode.INTERRUPTED),
                "exit_usr1_unhandled": 128 + signal.SIGUSR1,
            },
        )

    def submit(self, runs: list[Run]) -> str:
        """Write a job script for `runs` and submit it as one job array; return the array's job id.

        Raises:
            SlurmRefused: sbatch rejected the script or an option (its message, and the script's path).
            SlurmUnavailable: the controller does not answer.
        """
        text = self.job_script(runs)  # before anything is written: a path sbatch cannot read is refused here
        (self.folder / "output").mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S-%f")
        script = self.folder / f"job-{stamp}.sh"
        atomic_write_text(script, text)
        script.chmod(0o755)
        array = ",".join(str(run.index) for run in runs)
        if self.options.max_parallel:
            array += f"%{self.options.max_parallel}"
        try:
            output = slurm_command(["sbatch", "--parsable", f"--array={array}", str(script)], self.name)
        except SlurmRefused as error:
            raise SlurmRefused(
                f"sbatch refused the job script {script}:\n{error}\nNothing was submitted. Read the script, "
                f"fix what sbatch names (an option of `run --backend slurm` or of the experiment's slurm "
                f"settings), and run again."
            ) from None
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
            if run.name in active:
                tracked[run.name] = run
                job = active[run.name]
                self.progress.event(f"{run.name}: already {job.state} as job {job.label}")
                continue
            state = plan_run(run, self.root, self.claims)
            if state.action == SKIP:
                outcomes[run.name] = skipped(run, state)
            elif state.action == REFUSE:
                outcomes[run.name] = Outcome(run, "refused", "; ".join(state.reasons))
                self.progress.event(refusal_message(run, state))
            elif state.action == BUSY:
                outcomes[run.name] = Outcome(run, "busy", state.reasons[0])
                self.progress.event(f"{run.name} is {state.reasons[0]}: not submitted")
            else:
                to_submit.append(run)
        attempts = {run.name: 0 for run in runs}
        with self.progress:
            if to_submit:
                array_id = self._submit(to_submit, attempts)
                self.progress.event(f"submitted {len(to_submit)} run(s) as job array {array_id}")
                tracked.update({run.name: run for run in to_submit})
            try:
                self._track(tracked, outcomes, attempts)
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

    def _track(self, tracked: dict[str, Run], outcomes: dict, attempts: dict) -> None:
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
                if self._ended(run, labels.get(name, "?"), attempts[name], outcomes):
                    del tracked[name]
                    if name not in outcomes:
                        retry.append(run)
            if retry:
                array_id = self._submit(retry, attempts)
                tracked.update({run.name: run for run in retry})
                for run in retry:
                    seen.pop(run.name, None)
                    labels[run.name] = f"{array_id}_{run.index}"
            running = sum(job.state == "RUNNING" for name, job in active.items() if name in tracked)
            self.progress.update(count(outcomes.values(), running, len(tracked) - running))
            if tracked:
                time.sleep(self.poll_seconds)

    def _ended(self, run: Run, label: str, attempts: int, outcomes: dict) -> bool:
        """A job gone from squeue: record how its run ended, or leave it out of `outcomes` to submit it again.

        Returns False while the job only seems gone (between its end and its requeue it can be missing for a
        moment).
        """
        try:
            meta = read_meta(run.save_dir)
        except RunFolderError:  # not written (the job ended before bin/train.py wrote it), or damaged
            meta = None
        status = run_status(meta) if meta else "missing"
        job_state, code = self.job_info(label) if status != fmt.FINISHED else (None, None)
        if job_state in ACTIVE_STATES:
            return False
        out = self.output_path(label)
        if status == fmt.FINISHED:
            outcomes[run.name] = Outcome(run, "finished", f"job {label}", out, attempts)
            self.progress.event(f"finished {run.name} (job {label})")
        elif status in (fmt.DIVERGED, fmt.PRUNED):  # ended for good: it would diverge again
            error = (meta.get("error") or {}).get("message")
            message = (
                f"job {label}: the run {status}{': ' + first_sentence(error) if error else ''}; not retried"
            )
            outcomes[run.name] = Outcome(run, status, message, out, attempts)
            self.progress.event(f"{status.upper()} {run.name}: {message}; output: {out}")
        elif (job_state or "").startswith("CANCELLED"):  # scancel: someone's decision, not a failure
            left = {"interrupted": "a checkpoint", "missing": "the run not started"}.get(
                status, f"the run {status}"
            )
            message = f"job {label} was cancelled, leaving {left}; `run` continues it"
            outcomes[run.name] = Outcome(run, "interrupted", message, out, attempts)
            self.progress.event(f"{run.name}: job {label} was cancelled, leaving {left}; output: {out}")
        elif code == ExitCode.USAGE:  # bin/train.py refused before writing: running it again changes nothing
            reason = f"job {label}: bin/train.py {describe_exit(code, None, _printed_error(out))}"
            outcomes[run.name] = Outcome(run, "refused", reason, out, attempts)
            self.progress.event(f"REFUSED {run.name}: {reason}; output: {out}")
        elif attempts <= self.retries:
            # Failed, killed, timed out without requeueing, or not startable (NODE_FAIL ...): run it again.
            reason = ended(label, status, meta, job_state)
            self.progress.event(f"{run.name}: {reason}; submitting it again (output: {out})")
        else:
            reason = ended(label, status, meta, job_state)
            outcomes[run.name] = Outcome(run, "failed", reason, out, attempts)
            self.progress.event(
                f"FAILED {run.name}: {reason}; output: {out}, run log: {run.save_dir / fmt.LOG}"
            )
        return True


def submitted_options(folder: Path) -> dict[str, dict]:
    """{run name: the SlurmOptions (as a dict) of its newest submission}, from <folder>/submissions.jsonl; {}
    for an experiment never submitted (or a record that cannot be read: the report then shows no request)."""
    path = Path(folder) / "submissions.jsonl"
    try:
        entries = read_records(path)
    except (FileNotFoundError, JsonLinesError):
        return {}
    options = {}
    for entry in entries:
        for name in entry.get("names") or []:
            options[name] = entry.get("options") or {}
    return options


def _printed_error(output: Path) -> str | None:
    """The last "error: ..." line bin/train.py printed into a job's output file."""
    try:
        lines = output.read_text(errors="replace").splitlines()
    except OSError:
        return None
    errors = [line[len("error: ") :] for line in lines if line.startswith("error: ")]
    return errors[-1] if errors else None


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
