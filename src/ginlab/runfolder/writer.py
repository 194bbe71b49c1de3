"""The run folder's one writer: whether a run may start or continue in a folder, and every write it makes.

Everything here is safe against a crash at any moment: metadata and summaries are replaced atomically,
history files are append-only whole lines, and a reload cuts the history back to the resumed checkpoint.
ginlab writes only into folders it created: a fresh run starts in a missing or empty folder, a reload only
in a folder whose meta.json ginlab wrote; anything else is refused before a file is touched.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import json
import logging
import os
import shutil
import socket
from pathlib import Path
from typing import Any

import filelock

from ginlab.errors import RunFolderError
from ginlab.runfolder import format as fmt
from ginlab.runfolder import jsonlines
from ginlab.runfolder.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
from ginlab.runfolder.environment import environment, git_state, installed_packages, versions
from ginlab.runfolder.read import read_json, read_meta, read_summary
from ginlab.runfolder.status import describe_owner, run_status

log = logging.getLogger(__name__)


def now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


@dataclasses.dataclass
class Start:
    """What a folder allows: "fresh" (missing or empty) or "reload" (it holds a run: `meta`)."""

    action: str
    meta: dict | None = None


def plan_start(path: str | os.PathLike, reload: bool | str) -> Start:
    """Decide, before anything is written, whether a run starts fresh in `path` or continues the run there.

    Args:
        path: the run folder.
        reload: False (start fresh), True (continue the run there) or "auto" (whichever the folder holds).

    Raises:
        RunFolderError: the folder cannot be used as asked; the message says why and how to go on.
    """
    path = Path(path)
    _check_writable(path)
    entries = sorted(p.name for p in path.iterdir()) if path.is_dir() else []
    if fmt.META in entries:
        meta = read_meta(path)  # a damaged or newer meta.json is refused here, for every tool alike
        if reload is False:
            raise RunFolderError(
                f"{path} already holds a run (status {run_status(meta)}). To continue it, add "
                "-b training_loop.reload=True; to start a new run, choose another folder. "
                "Nothing was changed."
            )
        return Start("reload", meta)
    foreign = [name for name in entries if name not in fmt.BEFORE_META]
    if fmt.LOCK_INFO in entries and all(_left_by_a_start(name) for name in foreign):
        foreign = []  # a start killed before it wrote meta.json: no run is here, and a new start replaces it
    if foreign:
        shown = ", ".join(n + ("/" if (path / n).is_dir() else "") for n in foreign[:6])
        raise RunFolderError(
            f"{path} holds files but no run record (meta.json): "
            f"{shown}{', ...' if len(foreign) > 6 else ''}. "
            f"ginlab starts a run only in a missing or empty folder and continues only a folder "
            "whose meta.json it wrote, so it will not write here. Choose another SAVE_DIR, or move these "
            "files away. Nothing was changed."
        )
    if reload is True:
        raise RunFolderError(
            f"Cannot reload {path}: it holds no run (no meta.json). Start a fresh run there by leaving out "
            f'training_loop.reload=True (or use training_loop.reload="auto").'
        )
    return Start("fresh")


def nothing_to_do(path: str | os.PathLike, meta: dict | None, n_epochs: int) -> bool:
    """What reload="auto" does not continue: a run that finished at least `n_epochs` epochs, or that ended for
    good (diverged: it would diverge again; pruned: a search stopped it). Either is continued by hand with
    reload=True."""
    status = (meta or {}).get("status")
    if status in (fmt.DIVERGED, fmt.PRUNED):
        return True
    if status != fmt.FINISHED:
        return False
    summary = read_summary(path) or {}
    return isinstance(summary.get("epochs"), int) and summary["epochs"] >= n_epochs


def _left_by_a_start(name: str) -> bool:
    """A file a fresh run writes before its meta.json, or a temporary file of an atomic write (.NAME.XXXX.tmp)."""
    return name in fmt.CREATION or (name.startswith(".") and name.endswith(".tmp"))


def _remove(entry: Path, quietly: bool = False) -> None:
    """Remove a file, a link or a folder with what it holds (a link to a folder: the link only); `quietly`:
    what is already gone, or cannot be removed inside a folder, is passed over."""
    if entry.is_dir() and not entry.is_symlink():
        shutil.rmtree(entry, ignore_errors=quietly)
    else:
        entry.unlink(missing_ok=quietly)


def _check_writable(path: Path) -> None:
    """Refuse a SAVE_DIR that names a file, lies under a file, or cannot be written, with the reason."""
    if path.exists() and not path.is_dir():
        raise RunFolderError(f"{path} is a file, not a folder: SAVE_DIR must be a folder (missing or empty).")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise RunFolderError(f"Cannot create {path}: {existing} is a file, not a folder.")
    if not os.access(existing, os.W_OK | os.X_OK):
        probe = os.statvfs(existing)
        why = (
            "is on a read-only file system" if probe.f_flag & os.ST_RDONLY else "is not writable by this user"
        )
        raise RunFolderError(f"Cannot write {path}: {existing} {why}. Choose a SAVE_DIR you can write to.")


def _writes(method):
    """A method that changes the folder: it does nothing in a RunFolder opened with writer=False."""

    @functools.wraps(method)
    def write(self, *args, **kwargs):
        if self.writer:
            return method(self, *args, **kwargs)
        return None

    return write


class RunFolder(fmt.RunPaths):
    """The writer of one run folder (docs/run-folder.md).

    Args:
        path: the folder.
        writer: False for the other processes of a multi-process (DDP) run: they run the same training code
            as the process that owns the folder, but only that one locks and writes it.
    """

    def __init__(self, path: str | os.PathLike, writer: bool = True):
        super().__init__(path)
        self.writer = writer
        self._lock = None
        self._created_folder = False
        self.recorded_exit_code: int | None = None  # what mark_ended wrote in this process

    # -- what is there -------------------------------------------------------------------------------------
    def read_meta(self) -> dict:
        return read_meta(self.path)

    def saved_config(self) -> dict:
        return read_json(self.config_json) if self.config_json.exists() else {}

    # -- one writer ----------------------------------------------------------------------------------------
    @_writes
    def acquire(self) -> None:
        """Become the only writer of this folder, or fail naming the process that is."""
        self._created_folder = not self.path.exists()
        self.path.mkdir(parents=True, exist_ok=True)
        lock = filelock.FileLock(self.lock_file, timeout=0)
        try:
            lock.acquire()
        except filelock.Timeout:
            holder = self._read_lock_info()
            raise RunFolderError(
                f"{self.path} is being written by another process: host {holder.get('host', '?')}, "
                f"pid {holder.get('pid', '?')}, since {holder.get('started', '?')}.\n"
                "Wait for it to finish, or stop it first (a stopped run continues with "
                "-b training_loop.reload=True)."
            ) from None
        previous = self._read_lock_info()
        if previous:
            log.warning(
                "Taking over %s from a writer that is gone (host %s, pid %s, since %s); it did not exit "
                "cleanly.",
                self.path, previous.get("host"), previous.get("pid"), previous.get("started"),
            )  # fmt: skip
        atomic_write_json(
            self.lock_info, {"host": socket.gethostname(), "pid": os.getpid(), "started": now()}
        )
        self._lock = lock

    def release(self) -> None:
        if self._lock is not None:
            self.lock_info.unlink(missing_ok=True)
            self._lock.release()
            self._lock = None

    def _read_lock_info(self) -> dict:
        try:
            return json.loads(self.lock_info.read_text())
        except (OSError, ValueError):
            return {}

    # -- starting and continuing ---------------------------------------------------------------------------
    @_writes
    def create(
        self, command: list[str], config_files, bindings: list[str], torch_threads: int | None
    ) -> None:
        """Start a fresh run here: copy its configs, record where it comes from, then mark it running.

        meta.json is written last: a folder with a meta.json always holds the configs and environment of its
        run, and a start killed before it leaves no run (plan_start lets the next start replace what it left).
        All or nothing: when a write fails (a full disk), what was written is removed again, the folder too
        if this run created it, and RunFolderError says why.
        """
        if self.meta.exists():  # another process started a run here after plan_start looked
            raise RunFolderError(f"{self.path} holds a run now (meta.json); nothing was changed.")
        # What a start killed before its meta.json left (plan_start let this start go ahead of it).
        for name in filter(_left_by_a_start, os.listdir(self.path)):
            _remove(self.path / name)
        try:
            env = environment()
            git, diff = git_state()
            atomic_write_json(self.environment, env)
            if diff is not None:
                atomic_write_text(self.git_diff, diff)
            self.configs.mkdir(exist_ok=True)
            for i, f in enumerate(config_files):
                atomic_write_bytes(self.configs / f"{i:02d}-{Path(f).name}", Path(f).read_bytes())
            atomic_write_text(self.bindings, "".join(b + "\n" for b in bindings))
            atomic_write_json(self.meta, {
                "format_version": fmt.FORMAT_VERSION,
                "status": fmt.RUNNING,
                "started": now(),
                "ended": None,
                "heartbeat": now(),
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "command": command,
                "cwd": os.getcwd(),
                "versions": versions(env["packages"]),
                "python_executable": env["python"]["executable"],
                "platform": env["platform"]["platform"],
                "torch_threads": torch_threads,
                "git": git,
                "error": None,
                "exit_code": None,
                "last_checkpoint": None,
                "reloads": [],
            })  # fmt: skip
        except OSError as error:
            self.discard()
            raise RunFolderError(
                f"Could not create the run folder {self.path}: {error.strerror or error}. "
                f"Nothing was left behind; free space or choose another SAVE_DIR."
            ) from error

    @_writes
    def discard(self) -> None:
        """Remove what a fresh run wrote (used when it could not start): the folder too if it created it."""
        self.release()
        if self._created_folder:
            shutil.rmtree(self.path, ignore_errors=True)
            return
        for entry in self.path.iterdir():
            _remove(entry, quietly=True)

    @_writes
    def record_reload(
        self,
        command: list[str],
        checkpoint,
        accepted_changes: list[str],
        from_step: int,
        history_rows: int = 0,
        step_rows: int = 0,
    ) -> None:
        # The first change a reload makes to the run: a damaged history is refused before it, not halfway.
        self.check_logs_before_reload(history_rows, step_rows)
        meta = self.read_meta()
        entry = {
            "time": now(),
            "checkpoint": str(checkpoint) if checkpoint else None,
            "from_step": from_step,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "command": command,
            "accepted_config_changes": accepted_changes,
        }
        changed = self._environment_changes()
        if changed:
            entry["environment_changes"] = changed
        meta["reloads"].append(entry)
        meta.update(
            status=fmt.RUNNING, ended=None, heartbeat=now(), host=socket.gethostname(), pid=os.getpid(),
            error=None, exit_code=None,
        )  # fmt: skip
        atomic_write_json(self.meta, meta)

    def _environment_changes(self) -> dict[str, list]:
        """{package: [version the run started with, version now]} for every package that differs."""
        try:
            before = read_json(self.environment).get("packages", {})
        except (FileNotFoundError, RunFolderError, AttributeError):
            return {}  # a format-1 run folder has no environment.json
        now_installed = installed_packages()
        return {
            name: [before.get(name), now_installed.get(name)]
            for name in sorted({*before, *now_installed})
            if before.get(name) != now_installed.get(name)
        }

    # -- metadata ------------------------------------------------------------------------------------------
    @_writes
    def update_meta(self, **changes: Any) -> dict:
        meta = self.read_meta()
        meta.update(changes)
        atomic_write_json(self.meta, meta)
        return meta

    @_writes
    def heartbeat(self) -> None:
        self.update_meta(heartbeat=now())

    @_writes
    def record_checkpoint(self, path: Path, step: int, epoch: int) -> None:
        """meta.json names the newest checkpoint: a reload that finds none usable then knows one existed."""
        self.update_meta(last_checkpoint={"file": path.name, "step": step, "epoch": epoch}, heartbeat=now())

    @_writes
    def mark_ended(self, status: str, exit_code: int, error: dict | None = None) -> None:
        """Record how the run ended (status and exit code agree with what the process exits with)."""
        self.update_meta(status=status, ended=now(), heartbeat=now(), exit_code=exit_code, error=error)
        self.recorded_exit_code = exit_code

    @_writes
    def mark_pruned(self, message: str) -> None:
        """Record that a hyperparameter search stopped this run on purpose: status "pruned", the reason in
        `error`. Its checkpoints and history stay; `reload=True` with more epochs continues it by hand.
        Call with the folder's lock held (acquire), so that no bin/train.py is writing it."""
        meta = self.read_meta()
        if meta.get("status") == fmt.PRUNED:
            return
        self.update_meta(
            status=fmt.PRUNED, ended=meta.get("ended") or now(), error={"type": "Pruned", "message": message}
        )

    @_writes
    def write_config(self, operative_gin: str, flat: dict) -> None:
        atomic_write_text(self.config_gin, operative_gin)
        atomic_write_json(self.config_json, flat)

    @_writes
    def write_summary(self, summary: dict) -> None:
        atomic_write_json(self.summary, summary)

    # -- history -------------------------------------------------------------------------------------------
    @_writes
    def append_history(self, row: dict) -> None:
        jsonlines.append_line(self.history, json.dumps(row))

    @_writes
    def append_step(self, row: dict) -> None:
        jsonlines.append_line(self.steps, json.dumps(row))

    def history_rows(self) -> list[dict]:
        """history.jsonl's rows (a cut last line dropped). Raises JsonLinesError for a damaged line."""
        return self._read_log(self.history)[0]

    def step_rows(self) -> list[dict]:
        return self._read_log(self.steps)[0]

    def sync_logs(self) -> None:
        """fsync history.jsonl and steps.jsonl. Called before a checkpoint records how many rows they hold, so
        that even after a machine crash the files hold at least the rows a checkpoint counts on."""
        for path in (self.history, self.steps):
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def check_logs_before_reload(self, history_rows: int = 0, step_rows: int = 0) -> None:
        """Refuse a reload whose history.jsonl or steps.jsonl has a damaged line before the last one, or fewer
        rows than the checkpoint to resume was written after (history_rows, step_rows).

        Checked before the reload changes anything: cutting a damaged file back to the resumed checkpoint
        would count its rows wrongly and keep the wrong ones; a file short of rows would go on with a gap.
        """
        try:
            have = {self.history: len(self.history_rows()), self.steps: len(self.step_rows())}
        except jsonlines.JsonLinesError as error:
            raise RunFolderError(f"Cannot reload {self.path}: {error} Nothing was changed.") from None
        for path, need in [(self.history, history_rows), (self.steps, step_rows)]:
            if have[path] < need:
                raise RunFolderError(
                    f"Cannot reload {self.path}: {path.name} holds {have[path]} rows, but the checkpoint to "
                    f"resume was written after {need}: rows were lost since (the file was replaced, cut, or "
                    f"copied incompletely). Restore {path.name} from a copy, or delete the newer step-*.ckpt "
                    f"files in checkpoints/ so that the reload resumes from one the file agrees with. "
                    f"Nothing was changed."
                )

    @_writes
    def cut_history(self, history_rows: int, step_rows: int) -> None:
        """Keep the first rows that the resumed checkpoint had seen written; drop what came after it.

        A file whose last line was dropped (cut or garbled by a crash) is rewritten too, so that the next
        line is not appended after a damaged one, which readers would then have to refuse.
        """
        for path, keep in [(self.history, history_rows), (self.steps, step_rows)]:
            rows, clean = self._read_log(path)
            if len(rows) != keep or not clean:
                jsonlines.rewrite(path, rows[:keep])

    @staticmethod
    def _read_log(path: Path) -> tuple[list[dict], bool]:
        """The file's rows, and whether the file holds exactly their lines (nothing dropped at its end)."""
        data = jsonlines.read_bytes(path)
        whole, _ = jsonlines.complete_part(data)
        return jsonlines.parse_records(whole, str(path)), whole == data


__all__ = ["RunFolder", "Start", "describe_owner", "nothing_to_do", "now", "plan_start"]
