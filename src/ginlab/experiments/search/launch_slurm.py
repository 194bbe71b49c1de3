"""Trials on a SLURM cluster: each segment is a one-element job array submitted with the grid's SLURM backend
(the same job script template: signal before the time limit, checkpoint, requeue, continue).

The jobs outlive the driver: a driver that is killed (or whose allocation expires) leaves them running, and
the next driver follows them instead of submitting them again (`submissions.jsonl` names each job's trial,
`squeue` says which still run). `stop` leaves them running too, as the grid's Ctrl-C does: a segment that ends
while no driver runs is simply found finished by the next one.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from ginlab.errors import ExitCode, RunFolderError
from ginlab.experiments.backends.slurm import SlurmBackend, SlurmOptions
from ginlab.experiments.backends.slurm_cli import ACTIVE_STATES, SlurmUnavailable
from ginlab.experiments.search.launch import SegmentEnd, TrialLauncher
from ginlab.experiments.search.trials import TrialRun
from ginlab.runfolder import format as fmt
from ginlab.runfolder import read_meta, run_status

UNREACHABLE_SECONDS = 300  # how long the queue may not answer before the driver gives up


@dataclasses.dataclass
class _Job:
    run: TrialRun
    label: str
    started: float


class SlurmLauncher(TrialLauncher):
    """Segments as SLURM jobs.

    Args:
        name: the experiment's name (the jobs' name).
        root: the repository root (the jobs' working directory).
        folder: job scripts, submissions.jsonl and output (`<results>/search/slurm`).
        options: what each job asks for.
        slots: at most this many segments queued or running at once.
        poll_seconds: how often squeue is asked.
        python: the interpreter the jobs run (default: this one; it must exist on the nodes).
    """

    def __init__(
        self,
        name: str,
        root: Path,
        folder: Path,
        options: SlurmOptions,
        slots: int = 4,
        poll_seconds: float = 10.0,
        python: str | None = None,
    ):
        self.backend = SlurmBackend(name, root, folder, options, python=python)
        self.backend.check_cluster()
        self.slots = max(1, slots)
        self.poll_seconds = poll_seconds
        self.description = f"at most {self.slots} SLURM job(s) at a time"
        self._jobs: dict[str, _Job] = {}
        self._queued = self.backend.active_jobs()  # jobs of an earlier driver, still queued or running
        self._last_poll = 0.0
        self._unreachable_since: float | None = None

    def start(self, run: TrialRun) -> None:
        job = self._queued.pop(run.name, None)
        if job is not None:  # submitted by an earlier driver and still there: follow it
            self._jobs[run.name] = _Job(run, job.label, time.monotonic())
            return
        array_id = self.backend.submit([run])
        self._jobs[run.name] = _Job(run, f"{array_id}_{run.index}", time.monotonic())

    def ended(self) -> list[SegmentEnd]:
        if not self._jobs or time.monotonic() - self._last_poll < self.poll_seconds:
            return []
        self._last_poll = time.monotonic()
        try:
            active = self.backend.active_jobs()
            self._unreachable_since = None
        except SlurmUnavailable:  # a controller restart or a network blip: keep trying for a while
            self._unreachable_since = self._unreachable_since or time.monotonic()
            if time.monotonic() - self._unreachable_since > UNREACHABLE_SECONDS:
                raise
            return []
        ends = []
        for name, job in list(self._jobs.items()):
            if name in active and active[name].label == job.label:
                continue
            state, code = self.backend.job_info(job.label)
            if state in ACTIVE_STATES:  # gone from squeue for a moment while it is requeued
                continue
            del self._jobs[name]
            output = self.backend.output_path(job.label)
            ends.append(
                SegmentEnd(job.run, _exit_code(job.run, code), time.monotonic() - job.started, output, None)
            )
        return ends

    def active(self) -> set[str]:
        return set(self._jobs)

    def stop(self, kill: bool = False) -> None:
        """Leave the jobs running (like the grid's Ctrl-C): the next driver follows or finds them."""
        self._jobs.clear()


def _exit_code(run: TrialRun, code: int | None) -> int:
    """bin/train.py's exit code from scontrol, or (once scontrol forgot the job) from the run folder."""
    if code is not None:
        return code
    try:
        status = run_status(read_meta(run.save_dir))
    except RunFolderError:
        return ExitCode.FAILED
    return {
        fmt.FINISHED: ExitCode.FINISHED,
        fmt.DIVERGED: ExitCode.DIVERGED,
        fmt.INTERRUPTED: ExitCode.INTERRUPTED,
        fmt.PRUNED: ExitCode.FINISHED,
    }.get(status, ExitCode.FAILED)
