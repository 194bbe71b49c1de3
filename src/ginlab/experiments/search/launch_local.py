"""Trials on this machine: one `bin/train.py` process per segment, as the grid's local backend runs its runs.

Each process runs in its own session (a Ctrl-C in the terminal reaches only the driver), with
OMP_NUM_THREADS = cores // slots, its output appended to `search/logs/<trial>.log`, and asks the kernel for
SIGTERM when the driver dies (PR_SET_PDEATHSIG): a killed driver's segments write a checkpoint and exit 3,
and the
next driver continues them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from ginlab.experiments.backends.local import available_cores
from ginlab.experiments.search.launch import SegmentEnd, TrialLauncher
from ginlab.experiments.search.trials import TrialRun
from ginlab.workers.client import (
    WarmProcess,
    WarmStarter,
    child_environment,
    printed_error,
    start_command,
)


@dataclasses.dataclass
class _Process:
    run: TrialRun
    process: subprocess.Popen | WarmProcess
    started: float
    log: Path
    offset: int


class LocalLauncher(TrialLauncher):
    """Segments as child processes of the driver.

    Args:
        root: the repository root (bin/train.py's working directory).
        logs: the folder of the trials' logs.
        slots: segments at a time (default: the number of cores).
        python: the interpreter for bin/train.py (default: this one).
        warm: fork segments from a warm process (ginlab.workers) instead of a fresh interpreter each.
    """

    def __init__(
        self, root: Path, logs: Path, slots: int | None = None, python: str | None = None, warm: bool = True
    ):
        self.root = Path(root)
        self.logs = Path(logs)
        self.slots = max(1, slots or available_cores())
        self.threads = max(1, available_cores() // self.slots)
        self.python = python or sys.executable
        self.description = f"{self.slots} at a time on this machine, {self.threads} torch thread(s) each"
        self._processes: dict[str, _Process] = {}
        self.starter = WarmStarter(self.python) if warm else None

    def close(self) -> None:
        """End the warm process (the driver calls it once no segment is left)."""
        if self.starter is not None:
            self.starter.close()

    def start(self, run: TrialRun) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        command = run.command(python=self.python)
        log_path = self.logs / f"{run.name}.log"
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        with open(log_path, "a") as log_file:
            log_file.write(f"==== {stamp} to epoch {run.n_epochs}: {' '.join(command)}\n")
            log_file.flush()
            offset = log_file.tell()
        process = start_command(command, self.root, child_environment(self.threads), log_path, self.starter)
        self._processes[run.name] = _Process(run, process, time.monotonic(), log_path, offset)

    def ended(self) -> list[SegmentEnd]:
        ends = []
        for name, job in list(self._processes.items()):
            code = job.process.poll()
            if code is None:
                continue
            del self._processes[name]
            ends.append(
                SegmentEnd(
                    job.run, code, time.monotonic() - job.started, job.log, printed_error(job.log, job.offset)
                )
            )
        return ends

    def active(self) -> set[str]:
        return set(self._processes)

    def stop(self, kill: bool = False) -> None:
        for job in self._processes.values():
            with contextlib.suppress(ProcessLookupError):
                job.process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
