"""How the search driver trains its trials: the one small interface between the scheduler and the machines.

The driver (driver.py) decides WHAT to train: trial n up to epoch e (a `TrialRun` whose command is
bin/train.py
with `training_loop.reload="auto"` and `training_loop.n_epochs=e`). A `TrialLauncher` decides only WHERE and
HOW: it starts such a segment, says when one has ended and how, and stops them. Everything the driver knows
about a trial comes from the run folder and the study, never from the launcher, so a launcher can be replaced
(this machine's processes, SLURM jobs, a pool of in-process workers) without touching the scheduler.

    launcher.start(run)        train run.save_dir up to run.n_epochs (starts, continues or extends it)
    launcher.ended()           the segments that ended since the last call (never blocks)
    launcher.active()          the trials whose segment is in flight
    launcher.stop(kill=False)  ask every segment in flight to stop (checkpoint); kill=True: at once
"""

from __future__ import annotations

import abc
import dataclasses
from pathlib import Path

from ginlab.experiments.search.trials import TrialRun


@dataclasses.dataclass
class SegmentEnd:
    """How one segment (one bin/train.py of a trial) ended.

    Args:
        run: the segment.
        code: bin/train.py's exit code (ginlab.errors.ExitCode; negative: killed by that signal).
        seconds: its wall time, from start (or submission) to end.
        output: the file with its output (a local log or a SLURM output file).
        printed: what bin/train.py printed after "error:" (a refusal writes nothing else), if anything.
    """

    run: TrialRun
    code: int
    seconds: float
    output: Path | None = None
    printed: str | None = None


class TrialLauncher(abc.ABC):
    """Trains segments of trials (see the module docstring). `slots`: how many may be in flight at once."""

    slots: int = 1
    description: str = ""

    @abc.abstractmethod
    def start(self, run: TrialRun) -> None:
        """Train `run` up to run.n_epochs; return at once."""

    @abc.abstractmethod
    def ended(self) -> list[SegmentEnd]:
        """The segments that ended since the last call."""

    @abc.abstractmethod
    def active(self) -> set[str]:
        """The names of the trials with a segment in flight."""

    @abc.abstractmethod
    def stop(self, kill: bool = False) -> None:
        """Ask every segment in flight to stop after writing a checkpoint (kill=True: stop it at once)."""

    def close(self) -> None:  # noqa: B027 (optional hook)
        """Called once when the driver ends."""
