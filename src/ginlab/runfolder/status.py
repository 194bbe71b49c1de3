"""The one rule that says what state a run is in, used by every reader (load_runs, bin/runs.py, experiment
status, the backends, the board).

meta.json records what the writing process last said: running, or how it ended. A process can die without
saying so (SIGKILL, a lost node), so "running" is believed only while the run still shows life:
- on this host, its process must exist: a dead pid means "stale" at once;
- on another host, its heartbeat (refreshed every `heartbeat.every_seconds`, 30 s by default) must be younger
  than `stale_after` (5 minutes).
"""

from __future__ import annotations

import socket
from datetime import UTC, datetime
from typing import Any

from ginlab.processes import process_alive
from ginlab.runfolder import format as fmt
from ginlab.runfolder.read import parse_time

_HOST = socket.gethostname()


def run_status(
    meta: dict[str, Any], now: datetime | None = None, stale_after: float = fmt.STALE_AFTER_SECONDS
) -> str:
    """The run's status as every reader must see it: meta.json's, or "stale" for a run that died silently.

    Args:
        meta: the run's meta.json.
        now: the time to compare the heartbeat with (default: now).
        stale_after: seconds without heartbeat after which a running run on another host is taken as dead.
    """
    status = meta.get("status")
    if status != fmt.RUNNING:
        return status if isinstance(status, str) else "unknown"
    pid = meta.get("pid")
    if meta.get("host") == _HOST and isinstance(pid, int) and pid > 0 and not process_alive(pid):
        return fmt.STALE
    beat = parse_time(meta.get("heartbeat")) or parse_time(meta.get("started"))
    if beat is None:
        return fmt.RUNNING
    now = now or datetime.now(UTC)
    return fmt.STALE if (now - beat).total_seconds() > stale_after else fmt.RUNNING


def describe_owner(meta: dict[str, Any] | None) -> str:
    """Where a run is (or was last) running: "host node3, pid 4242, heartbeat 2026-...": for messages."""
    meta = meta or {}
    return f"host {meta.get('host', '?')}, pid {meta.get('pid', '?')}, heartbeat {meta.get('heartbeat', '?')}"
