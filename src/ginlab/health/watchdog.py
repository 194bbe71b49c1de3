"""The watchdog: a small process beside a run that reports what the run cannot say itself.

A run whose data loader hangs, which is frozen (SIGSTOP, a stuck file system) or killed (SIGKILL, the
out-of-memory killer) sends nothing: its own threads stop with it. The watchdog is a separate process (no
torch, a few MiB) that reads the run's meta.json every few seconds and applies the one status rule
(ginlab.runfolder.run_status, with notify.stale_after): once the run is stale, because its heartbeat stopped
or its process died without recording an ending, it sends one "stale" notification, then never again. It ends
when the run records how it ended (the run notifies that itself), when another process takes the folder
over, or once its run's process is gone.

    python -m ginlab.health.watchdog RUN_FOLDER PID        # started by start_watchdog

Its settings come in an environment variable, not on its command line: a URL may hold a token, and every user
of a machine can read command lines, while a process's environment is its owner's.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from ginlab.health.deliver import prepare
from ginlab.health.events import stale_event
from ginlab.health.notifier import Notifier
from ginlab.health.settings import NotifySettings
from ginlab.processes import process_alive
from ginlab.runfolder import format as fmt
from ginlab.runfolder import read_meta, run_status

log = logging.getLogger(__name__)
_STARTED: dict[int, subprocess.Popen] = {}  # the watchdogs this process started, by pid
SETTINGS_VARIABLE = "GINLAB_WATCHDOG_SETTINGS"


def watchdog_pids() -> set[int]:
    """The pids of the watchdogs this process started that are still alive (telemetry leaves them out)."""
    return {pid for pid, process in _STARTED.items() if process.poll() is None}


def poll_seconds(stale_after: float) -> float:
    """How often the watchdog looks: a fifth of stale_after, at most every 5 s."""
    return min(5.0, max(0.1, stale_after / 5))


def start_watchdog(run_folder, settings: NotifySettings) -> subprocess.Popen | None:
    """Start the watchdog of the run in `run_folder` (this process's), or None when "stale" is not wanted."""
    if not settings.wants("stale"):
        return None
    import ginlab

    source = str(Path(ginlab.__file__).resolve().parents[1])
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([source, *filter(None, [os.environ.get("PYTHONPATH")])]),
        SETTINGS_VARIABLE: settings.to_json(),
    }
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "ginlab.health.watchdog", str(run_folder), str(os.getpid())],
            env=env,
            stdin=subprocess.DEVNULL,  # its output goes where the run's goes (log.txt)
        )
    except OSError as error:  # no process left to start (limits, memory): the run goes on without one
        log.warning("no watchdog for %s (%s): a stall will not be notified", run_folder, error)
        return None
    _STARTED[process.pid] = process
    return process


def stop_watchdog(process: subprocess.Popen | None) -> None:
    """End the watchdog (the run is ending and reports that itself)."""
    if process is None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    _STARTED.pop(process.pid, None)


def watch(run_folder, pid: int, settings: NotifySettings, notifier: Notifier | None = None) -> str:
    """Watch the run until it ends or is taken over; return why the watch ended."""
    notifier = notifier or Notifier(settings)
    prepare(settings.urls)  # when the run stalls, its message goes out at once
    every = poll_seconds(settings.stale_after)
    reported = False
    while True:
        time.sleep(every)
        alive = process_alive(pid)
        try:
            meta = read_meta(run_folder)
        except Exception:  # being replaced, or removed: the run itself decides about its folder
            if not alive:
                return "run process gone"
            continue
        if meta.get("pid") != pid:
            return "another process took the run folder over"
        if meta.get("status") != fmt.RUNNING:
            return f"the run recorded its end ({meta.get('status')})"
        if not alive:
            if not reported:  # it died without recording how: tell once (it may have been told stale already)
                notifier.send(
                    stale_event(run_folder, meta, process_gone=True, stale_after=settings.stale_after)
                )
            return "run process gone"
        if not reported and run_status(meta, stale_after=settings.stale_after) == fmt.STALE:
            notifier.send(stale_event(run_folder, meta, process_gone=False, stale_after=settings.stale_after))
            reported = True


def main(argv: list[str]) -> int:
    # The terminal's Ctrl-C is the run's to handle; the watchdog ends when the run does.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=logging.WARNING, format="WARNING ginlab watchdog: %(message)s")
    run_folder, pid = argv[0], int(argv[1])
    settings = NotifySettings.from_json(os.environ[SETTINGS_VARIABLE])
    watch(run_folder, pid, settings)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
