"""Never a storm: at most `burst` messages per `window_seconds`, shared by every process that sends.

The runs of a grid end in separate processes, on separate nodes under SLURM, so the count of recent messages
and the events held back live in one small state file (`outbox.json`, guarded by an OS lock beside it) in a
folder they all see: the experiment's `notify/` folder for the runs of an experiment (its `run` sets
GINLAB_EXPERIMENT_DIR), else ~/.cache/ginlab/notify/ (one file per set of URLs).

An event is sent at once while fewer than `burst` messages went out within the window; beyond that it is held.
Held events go out together, as one digest, with the first event that comes a whole window after the last
message, or with the experiment's closing message (`drain`). So a grid of 500 failing runs sends its first
`burst` failures and then digests, at most `burst` messages per window.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from pathlib import Path

import filelock

from ginlab.health.events import EXPERIMENT_DIR_VARIABLE, Event
from ginlab.runfolder.atomic import atomic_write_json

log = logging.getLogger(__name__)
LOCK_TIMEOUT = 30.0  # seconds; a lock held longer is a stuck process: send without throttling


def state_folder(urls) -> Path:
    """Where the processes that send to these URLs keep their shared state (see the module docstring)."""
    experiment = os.environ.get(EXPERIMENT_DIR_VARIABLE)
    if experiment:
        return Path(experiment) / "notify"
    try:
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    except (RuntimeError, KeyError):  # no home folder (a bare container): the state lives as long as /tmp
        cache = Path(tempfile.gettempdir())
    key = hashlib.sha256("\n".join(sorted(urls)).encode()).hexdigest()[:12]
    return cache / "ginlab" / "notify" / key


class Outbox:
    """The shared count of recent messages and the events held back (see the module docstring)."""

    def __init__(self, folder: Path, burst: int, window_seconds: float):
        self.folder, self.burst, self.window = Path(folder), burst, window_seconds
        self.path = self.folder / "outbox.json"

    def admit(self, event: Event) -> list[Event] | None:
        """The events to send now (the held ones first, then `event`), or None: `event` is held."""
        with self._locked() as state:
            now = time.time()
            recent = [t for t in state["sent"] if now - t < self.window]
            held = [Event.from_dict(e) for e in state["held"]]
            last = max(state["sent"], default=None)
            if len(recent) < self.burst and (not held or last is None or now - last >= self.window):
                state.update(sent=[*recent, now], held=[])
                return [*held, event]
            state.update(sent=recent, held=[*state["held"], event.to_dict()])
            return None

    def drain(self) -> list[Event]:
        """Every held event (they are sent now, with a closing message), counted as one message sent."""
        with self._locked() as state:
            held = [Event.from_dict(e) for e in state["held"]]
            state.update(sent=[*state["sent"], time.time()], held=[])
            return held

    def _locked(self):
        return _State(self)


class _State:
    """The state file, read and written under its lock: `with outbox._locked() as state: ...`."""

    def __init__(self, outbox: Outbox):
        self.outbox = outbox
        self.lock = filelock.FileLock(str(outbox.folder / "outbox.lock"), timeout=LOCK_TIMEOUT)

    def __enter__(self) -> dict:
        self.outbox.folder.mkdir(parents=True, exist_ok=True)
        self.lock.acquire()
        try:
            self.state = json.loads(self.outbox.path.read_text())
            if not isinstance(self.state, dict):
                raise ValueError("not an object")
            self.state.setdefault("sent", [])
            self.state.setdefault("held", [])
        except FileNotFoundError:
            self.state = {"sent": [], "held": []}
        except ValueError as error:  # damaged by hand: start again rather than never notify
            log.warning("%s is not readable (%s): starting a new one", self.outbox.path, error)
            self.state = {"sent": [], "held": []}
        return self.state

    def __exit__(self, kind, error, traceback):
        try:
            if kind is None:
                atomic_write_json(self.outbox.path, self.state)
        finally:
            self.lock.release()
