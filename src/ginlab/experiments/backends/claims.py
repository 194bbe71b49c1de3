"""A runner's claim on a prepared run, so that two runners on one experiment never start the same run.

Two `main.py run` at once (two terminals, or a second one started while the first still works) used to start
the same run twice: the second bin/train.py found the run folder locked by the first and exited 2, and each
runner reported the other's run as failed. Now a runner first takes the run's claim,
`<results>/claims/<run>.lock`, an OS lock (flock) that it holds for as long as its bin/train.py for that run
lives (retries included). A runner that cannot take it leaves the run to the holder and waits for it.

The kernel releases the lock when the runner dies, so a killed runner never leaves a claim behind;
`<run>.json` beside the lock names the holder for messages (a killed runner may leave it behind: only the lock
counts).
bin/train.py's own lock on the run folder stays what guarantees one writer; the claim only keeps runners from
racing for it.
"""

from __future__ import annotations

import json
import os
import socket
import time
from datetime import UTC, datetime
from pathlib import Path

import filelock

from ginlab.runfolder.atomic import atomic_write_json

INFO_WAIT_SECONDS, INFO_WAIT_STEPS = 0.5, 10  # how long to wait for a new holder to say who it is


class RunClaim:
    """The claim on one run of an experiment.

    Args:
        folder: the experiment's claims folder (`<results>/claims`).
        name: the run's name.
    """

    def __init__(self, folder: str | os.PathLike, name: str):
        self.folder = Path(folder)
        self.lock_path = self.folder / f"{name}.lock"
        self.info_path = self.folder / f"{name}.json"
        self._lock: filelock.FileLock | None = None

    @property
    def held(self) -> bool:
        """True while this object holds the claim."""
        return self._lock is not None

    def acquire(self) -> bool:
        """Take the claim if nobody holds it; True when this object holds it now (it never waits)."""
        if self._lock is not None:
            return True
        self.folder.mkdir(parents=True, exist_ok=True)
        lock = filelock.FileLock(self.lock_path, timeout=0)
        try:
            lock.acquire()
        except filelock.Timeout:
            return False
        atomic_write_json(
            self.info_path,
            {
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "since": datetime.now(UTC).isoformat(timespec="seconds"),
            },
        )
        self._lock = lock
        return True

    def release(self) -> None:
        """Give the claim up (nothing happens when this object does not hold it)."""
        if self._lock is None:
            return
        self.info_path.unlink(missing_ok=True)
        self._lock.release()
        self._lock = None

    def holder(self) -> dict | None:
        """Who holds the claim now: {"host", "pid", "since"} ({} when unknown), or None when nobody does.

        Asked by another object (another runner, `status`): the claim this object holds counts as held.
        """
        if self._lock is not None:
            return self._read_info()
        if not self.lock_path.exists():  # never claimed: create nothing (status may run on a read-only copy)
            return None
        probe = filelock.FileLock(self.lock_path, timeout=0)
        try:
            probe.acquire()
        except filelock.Timeout:
            # The holder writes who it is just after it took the lock: give it a moment to do so.
            for _ in range(INFO_WAIT_STEPS):
                info = self._read_info()
                if info:
                    return info
                time.sleep(INFO_WAIT_SECONDS / INFO_WAIT_STEPS)
            return {}
        except OSError:  # cannot even open it (a read-only copy): no runner of this host holds it
            return None
        probe.release()
        return None

    def _read_info(self) -> dict:
        try:
            info = json.loads(self.info_path.read_text())
        except (OSError, ValueError):
            return {}
        return info if isinstance(info, dict) else {}


def describe_holder(holder: dict) -> str:
    """ "the runner pid 4242 on host node3 (since ...)": for messages."""
    return (
        f"the runner pid {holder.get('pid', '?')} on host {holder.get('host', '?')}"
        f"{' (since ' + holder['since'] + ')' if holder.get('since') else ''}"
    )
