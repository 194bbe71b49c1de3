"""Live progress of an experiment: done / running / failed / left, and the estimated time to the end.

On a terminal the counts stay on one refreshed line under the events; otherwise (logs, CI) every event is
printed with the counts in front of it.
"""

import dataclasses
import time

from rich.console import Console
from rich.live import Live
from rich.text import Text


@dataclasses.dataclass
class Counts:
    """How many runs are done (finished), running, failed, left to start, refused, diverged and pruned."""

    done: int = 0
    running: int = 0
    failed: int = 0
    left: int = 0
    refused: int = 0
    diverged: int = 0
    pruned: int = 0

    def __str__(self) -> str:
        text = f"{self.done} done, {self.running} running, {self.failed} failed, {self.left} left"
        for name in ("refused", "diverged", "pruned"):  # shown once there are any
            if getattr(self, name):
                text += f", {getattr(self, name)} {name}"
        return text


def estimate_seconds(
    durations: list[float], running_elapsed: list[float], left: int, slots: int
) -> float | None:
    """Seconds until the end: the mean run time so far spread over the slots; None before any run ended."""
    if not durations:
        return None
    mean = sum(durations) / len(durations)
    remaining = left * mean + sum(max(mean - elapsed, 0.0) for elapsed in running_elapsed)
    return remaining / max(slots, 1)


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = round(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


class Progress:
    """Print events and keep the counts visible. Use as a context manager around the run."""

    def __init__(self, title: str, console: Console | None = None):
        self.title = title
        self.console = console or Console(highlight=False)
        self.counts = Counts()
        self.eta: float | None = None
        self.started = time.monotonic()
        self._live = None
        self._pending: list[str] = []

    def __enter__(self):
        if self.console.is_terminal:
            self._live = Live(self._line(), console=self.console, refresh_per_second=2, transient=True)
            self._live.__enter__()
        return self

    def __exit__(self, *exc):
        self._flush()
        if self._live is not None:
            self._live.__exit__(*exc)
            self._live = None
        self.console.print(f"{self.title}: {self.counts} ({format_seconds(time.monotonic() - self.started)})")

    def update(self, counts: Counts, eta: float | None = None) -> None:
        """New counts; without a terminal, the events since the last update are printed with them."""
        self.counts, self.eta = counts, eta
        if self._live is not None:
            self._live.update(self._line())
        self._flush()

    def event(self, message: str) -> None:
        if self._live is not None:
            self.console.print(message)
            self._live.update(self._line())
        else:
            self._pending.append(message)

    def _flush(self) -> None:
        for message in self._pending:
            eta = f", ETA {format_seconds(self.eta)}" if self.eta is not None else ""
            self.console.print(f"[{self.counts}{eta}] {message}")
        self._pending.clear()

    def _line(self) -> Text:
        elapsed = format_seconds(time.monotonic() - self.started)
        return Text(
            f"{self.title}: {self.counts} | elapsed {elapsed}, ETA {format_seconds(self.eta)}", style="bold"
        )
