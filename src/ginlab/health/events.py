"""What a notification says: one event (a run finished, failed, diverged or went stale; an experiment
finished), and a digest of several, written for a person reading it on a phone.

Every message names the run folder (or the report), so the reader knows where to look next.
"""

from __future__ import annotations

import dataclasses
import os
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from ginlab.runfolder import format as fmt
from ginlab.runfolder import parse_time

# Set by an experiment's `run` for the runs it starts (children and SLURM jobs inherit it): their messages
# name the experiment, and they share its notification state (ginlab.health.throttle).
EXPERIMENT_VARIABLE = "GINLAB_EXPERIMENT"
EXPERIMENT_DIR_VARIABLE = "GINLAB_EXPERIMENT_DIR"
DIGEST_LINES = 25  # events listed one per line in a digest; the rest are counted


@dataclasses.dataclass
class Event:
    """Something a person is told about: its kind (settings.EVENTS), a one-line title and a body."""

    kind: str
    title: str
    body: str
    time: str = dataclasses.field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Event:
        return cls(
            **{field.name: data[field.name] for field in dataclasses.fields(cls) if field.name in data}
        )


def _label(path: Path) -> str:
    experiment = os.environ.get(EXPERIMENT_VARIABLE)
    return f"[{experiment}] {path.name}" if experiment else path.name


def run_ended_event(path, meta: dict, summary: dict | None) -> Event | None:
    """The event of a run that recorded how it ended (finished, failed, diverged); None for other endings."""
    path = Path(path).resolve()
    status = meta.get("status")
    host = meta.get("host", "?")
    took = _took(meta)
    if status == fmt.FINISHED:
        summary = summary or {}
        lines = [f"Finished on {host}{took}: {summary.get('epochs', '?')} epochs."]
        best = summary.get("best") or {}
        shown = [f"{k} {v:.4g}" for k, v in _numbers(summary.get("test")).items()]
        shown += [f"best {k} {v:.4g}" for k, v in _numbers(best, skip=("epoch", "step")).items()]
        if shown:  # epochs count from 1 wherever a person reads them
            epoch = f" (epoch {best['epoch'] + 1})" if isinstance(best.get("epoch"), int) else ""
            lines.append(", ".join(shown) + epoch)
        peak = _numbers(summary.get("max")).get(f"{fmt.TELEMETRY_PREFIX}peak_rss_mb")
        if peak is not None:
            lines.append(f"Peak memory {peak:.0f} MiB.")
        lines.append(f"Run folder: {path}")
        return Event("finished", f"{_label(path)} finished", "\n".join(lines))
    error = meta.get("error") or {}
    said = f"{error.get('type', 'Error')}: {_first_line(error.get('message', ''))}" if error else ""
    if status == fmt.FAILED:
        body = f"Failed on {host}{took}: {said or 'no error recorded'}.\nLog: {path / fmt.LOG}"
        return Event("failed", f"{_label(path)} FAILED", body)
    if status == fmt.DIVERGED:
        body = f"Diverged on {host}{took}: {_first_line(error.get('message', ''))}\nRun folder: {path}"
        return Event("diverged", f"{_label(path)} DIVERGED", body)
    return None


def stale_event(path, meta: dict, process_gone: bool, stale_after: float) -> Event:
    """A running run that stopped showing life: its process died silently, or its heartbeat stopped."""
    path = Path(path).resolve()
    host, pid, beat = meta.get("host", "?"), meta.get("pid", "?"), meta.get("heartbeat", "?")
    if process_gone:
        why = (
            f"its process {pid} on {host} is gone without recording how it ended (killed, out of memory, "
            f"or the machine went down)"
        )
    else:
        age = _age(beat)
        why = (
            f"its heartbeat stopped {age} ago (at {beat}; stale after {stale_after:g} s) while its process "
            f"{pid} on {host} is still there: hung (a data loader, a deadlock, a file system) or stopped"
        )
    body = (
        f"STALE: {why}.\nLog: {path / fmt.LOG}\nA stale run is continued with -b training_loop.reload=True."
    )
    return Event("stale", f"{_label(path)} is STALE", body)


def compose(events: list[Event]) -> tuple[str, str]:
    """(title, body) of one message for these events: the event itself, or a digest of them."""
    if len(events) == 1:
        return events[0].title, events[0].body
    return digest_title(events), digest_body(events)


def digest_title(events: list[Event]) -> str:
    experiment = os.environ.get(EXPERIMENT_VARIABLE)
    counts = ", ".join(f"{n} {kind}" for kind, n in Counter(e.kind for e in events).most_common())
    return f"{f'[{experiment}] ' if experiment else ''}{len(events)} events: {counts}"


def digest_body(events: list[Event]) -> str:
    lines = [f"{e.time}  {e.title}" for e in events[:DIGEST_LINES]]
    if len(events) > DIGEST_LINES:
        lines.append(f"... and {len(events) - DIGEST_LINES} more")
    return f"{len(events)} events held back to keep the messages few:\n" + "\n".join(lines)


def _numbers(values, skip=()) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in (values or {}).items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in skip
    }


def _first_line(text: str) -> str:
    line = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    return line if len(line) <= 300 else line[:297] + "..."


def _took(meta: dict) -> str:
    start, end = parse_time(meta.get("started")), parse_time(meta.get("ended"))
    if not start or not end:
        return ""
    seconds = int((end - start).total_seconds())
    return f" after {seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _age(beat) -> str:
    when = parse_time(beat)
    if when is None:
        return "?"
    return f"{(datetime.now(UTC) - when).total_seconds():.0f} s"
