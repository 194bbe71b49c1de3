"""The run folder: its layout, its metadata, its single writer. The format is documented in
docs/run-folder.md.

Everything here is safe against a crash at any moment: metadata and summaries are replaced atomically,
history files are append-only whole lines, and a reload cuts the history back to the resumed checkpoint.
"""

import datetime
import functools
import json
import logging
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path

import filelock

from ginlab import jsonlines
from ginlab.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text

FORMAT_VERSION = 1
log = logging.getLogger(__name__)


def now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


class RunFolderError(RuntimeError):
    """A run folder that cannot be used as asked (holds a run, missing, locked by another process ...)."""


def _writes(method):
    """A method that changes the folder: it does nothing in a RunFolder opened with writer=False."""

    @functools.wraps(method)
    def write(self, *args, **kwargs):
        if self.writer:
            return method(self, *args, **kwargs)
        return None

    return write


class RunFolder:
    """Args:
    path: the folder.
    writer: False for the other processes of a multi-process (DDP) run: they run the same training code as
        the process that owns the folder, but only that one locks and writes it (see ginlab.distributed).
    """

    def __init__(self, path, writer: bool = True):
        self.path = Path(path)
        self.writer = writer
        self.meta = self.path / "meta.json"
        self.config_gin = self.path / "config.gin"
        self.config_json = self.path / "config.json"
        self.configs = self.path / "configs"
        self.git_diff = self.path / "git.diff"
        self.log = self.path / "log.txt"
        self.history = self.path / "history.jsonl"
        self.steps = self.path / "steps.jsonl"
        self.summary = self.path / "summary.json"
        self.checkpoints = self.path / "checkpoints"
        self.tensorboard = self.path / "tensorboard"
        self.evaluations = self.path / "evaluations"
        self.lock_file = self.path / ".lock"
        self.lock_info = self.path / ".lock.json"
        self._lock = None

    # -- what is there -------------------------------------------------------------------------------------
    def holds_run(self) -> bool:
        return self.meta.exists() or self.checkpoints.exists() or self.history.exists()

    def read_meta(self) -> dict:
        return json.loads(self.meta.read_text())

    def saved_config(self) -> dict:
        return json.loads(self.config_json.read_text()) if self.config_json.exists() else {}

    def config_files(self) -> list[Path]:
        """The config files the run was started with, in order, then its bindings file."""
        return sorted(self.configs.glob("*.gin")) if self.configs.exists() else []

    # -- one writer ----------------------------------------------------------------------------------------
    @_writes
    def acquire(self) -> None:
        """Become the only writer of this folder, or fail naming the process that is."""
        self.path.mkdir(parents=True, exist_ok=True)
        lock = filelock.FileLock(self.lock_file, timeout=0)
        try:
            lock.acquire()
        except filelock.Timeout:
            holder = self._read_lock_info()
            raise RunFolderError(
                f"{self.path} is being written by another process: host {holder.get('host', '?')}, "
                f"pid {holder.get('pid', '?')}, since {holder.get('started', '?')}.\n"
                f"Wait for it to finish, or stop it first "
                f"(a stopped run continues with -b training_loop.reload=True)."
            ) from None
        previous = self._read_lock_info()
        if previous:
            log.warning(
                "Taking over %s from a writer that is gone (host %s, pid %s, since %s); "
                "it did not exit cleanly.",
                self.path,
                previous.get("host"),
                previous.get("pid"),
                previous.get("started"),
            )
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

    # -- writing -------------------------------------------------------------------------------------------
    @_writes
    def create(self, command: list[str], config_files, bindings: list[str]) -> None:
        """Start a fresh run here: copy its configs, record where it comes from, mark it running."""
        self.configs.mkdir(parents=True, exist_ok=True)
        for i, f in enumerate(config_files):
            atomic_write_bytes(self.configs / f"{i:02d}-{Path(f).name}", Path(f).read_bytes())
        atomic_write_text(self.configs / "bindings.gin", "".join(b + "\n" for b in bindings))
        git = git_state(self.git_diff)
        atomic_write_json(
            self.meta,
            {
                "format_version": FORMAT_VERSION,
                "status": "running",
                "started": now(),
                "ended": None,
                "heartbeat": now(),
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "command": command,
                "cwd": os.getcwd(),
                "versions": versions(),
                "torch_threads": torch_threads(),
                "git": git,
                "error": None,
                "exit_code": None,
                "reloads": [],
            },
        )

    @_writes
    def update_meta(self, **changes) -> dict:
        meta = self.read_meta()
        meta.update(changes)
        atomic_write_json(self.meta, meta)
        return meta

    @_writes
    def record_reload(
        self,
        command: list[str],
        checkpoint,
        accepted_changes: list[str],
        history_rows: int = 0,
        step_rows: int = 0,
    ) -> None:
        # The first change a reload makes to the run: a damaged history is refused before it, not halfway.
        self.check_logs_before_reload(history_rows, step_rows)
        meta = self.read_meta()
        meta["reloads"].append(
            {
                "time": now(),
                "checkpoint": str(checkpoint) if checkpoint else None,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "command": command,
                "accepted_config_changes": accepted_changes,
            }
        )
        meta.update(
            status="running",
            ended=None,
            heartbeat=now(),
            host=socket.gethostname(),
            pid=os.getpid(),
            error=None,
            exit_code=None,
        )
        atomic_write_json(self.meta, meta)

    @_writes
    def write_config(self, operative_gin: str, flat: dict) -> None:
        atomic_write_text(self.config_gin, operative_gin)
        atomic_write_json(self.config_json, flat)

    @_writes
    def append_history(self, row: dict) -> None:
        jsonlines.append_line(self.history, json.dumps(row))

    @_writes
    def append_step(self, row: dict) -> None:
        jsonlines.append_line(self.steps, json.dumps(row))

    def history_rows(self) -> list[dict]:
        """history.jsonl's rows (a cut last line dropped).
        Raises jsonlines.JsonLinesError for a damaged line."""
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

    @_writes
    def write_summary(self, summary: dict) -> None:
        atomic_write_json(self.summary, summary)


def versions() -> dict:
    import gin
    import pytorch_lightning
    import torch

    import ginlab

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "pytorch_lightning": pytorch_lightning.__version__,
        "gin": getattr(gin, "__version__", "0.5.0"),
        "ginlab": ginlab.__version__,
    }


def torch_threads() -> int:
    """The number of threads torch computes with (OMP_NUM_THREADS, or the cores): a reload keeps it, because
    torch's CPU sums are split by thread and another number gives other bits."""
    import torch

    return torch.get_num_threads()


def git_state(diff_path: Path) -> dict:
    """Commit, branch and dirtiness of the code; the diff is saved beside meta.json when dirty.

    The code is the repository that holds the ginlab package (a fork of ginlab, run from anywhere); for an
    installed package, the repository of the current folder.
    """
    commit, where = None, None
    for folder in (Path(__file__).resolve().parent, Path.cwd()):
        try:
            out = subprocess.run(
                ["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=30
            )
        except (OSError, subprocess.SubprocessError):
            break
        if out.returncode == 0 and out.stdout.strip():
            commit, where = out.stdout.strip(), folder
            break

    def git(*args):
        return subprocess.run(
            ["git", "-C", str(where), *args], capture_output=True, text=True, timeout=30
        ).stdout

    if commit is None:
        return {"commit": None, "branch": None, "dirty": None, "diff": None}
    status = git("status", "--porcelain", "--untracked-files=no")
    dirty = bool(status.strip())
    if dirty:
        atomic_write_text(diff_path, git("diff", "HEAD"))
    return {
        "commit": commit,
        "branch": git("rev-parse", "--abbrev-ref", "HEAD").strip(),
        "dirty": dirty,
        "diff": diff_path.name if dirty else None,
    }


def python_command() -> list[str]:
    return [sys.executable, *sys.argv]
