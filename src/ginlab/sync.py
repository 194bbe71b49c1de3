"""Mirror a project folder to a local or ssh destination and keep it current (rsync + watchman).

The flow: `build_filter` (default excludes + `.syncignore`) -> `sync` (one rsync run, retried with
backoff) -> `watch` (a watchman subscription; every batch of changes that is not excluded runs `sync`
again). `bin/sync.py` is the command line; docs/sync.md is the user guide.

Why each batch re-runs rsync over the whole tree instead of `--files-from` with the changed paths:
rsync's quick check (size + mtime) makes a no-change walk of a code tree cost tens of milliseconds,
deletions and renames (including whole folders) are then handled by rsync itself exactly as in the
first sync, an event that watchman coalesced or dropped (a recrawl) cannot leave the remote stale, and
the rsync filter rules stay the one authority on what is sent. The price is one file-list exchange per
batch, which benchmarks/sync_latency.py measures.

Excludes are written once, in gitignore syntax. `SyncFilter.is_excluded` evaluates them with pathspec
to decide whether a watchman event matters; `SyncFilter.rsync_rules` translates the same lines into
rsync filter rules. Rsync rules apply on both sides, so an excluded path on the remote (a remote
`results/`) is also protected from `--delete`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import posixpath
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Self

import pathspec

from ginlab.processes import process_alive

logger = logging.getLogger(__name__)

SYNCIGNORE = ".syncignore"

# Never synced, and a `!` line in .syncignore cannot bring them back: git's own data (the remote is a
# mirror of the files, not a clone) and the cookie files watchman creates in the root for a moment.
ALWAYS_EXCLUDED = (".git", ".watchman-cookie-*")

# Results and data are produced where the code runs and can be huge; environments are machine-specific.
# Anchored with a leading "/" where a name is also a common package name (src/ginlab/data is code).
DEFAULT_EXCLUDES = (
    "/results/",
    "/data/",
    "mlruns/",
    "lightning_logs/",
    "wandb/",
    ".venv/",
    "venv/",
    ".conda/",
    ".tox/",
    ".nox/",
    "*.egg-info/",
)

# Caches and editor/OS leftovers. These rules are "perishable" for rsync: a remote __pycache__ is kept
# like any excluded file, but it does not stop `--delete` from removing a folder deleted locally.
CACHE_EXCLUDES = (
    "__pycache__/",
    "*.py[cod]",
    ".pytest_cache/",
    ".mypy_cache/",
    ".ruff_cache/",
    ".ginlab-cache/",
    ".ipynb_checkpoints/",
    ".DS_Store",
    "*.swp",
    "*~",
)

# rsync exit codes that retrying cannot fix: usage/syntax error, protocol incompatibility, unsupported
# action (see "EXIT VALUES" in `man rsync`). Everything else (255 for ssh, 12 and 10 for a lost stream,
# 30 for a timeout, 23 for a partial transfer) is worth retrying.
PERMANENT_RSYNC_ERRORS = {1: "syntax or usage error", 2: "protocol incompatibility", 4: "unsupported action"}
# 24: some source files vanished during the transfer (an editor's temporary file); the next batch
# catches up, so it counts as success.
VANISHED_FILES = 24

INSTALL_HINTS = {
    "watchman": "  Debian/Ubuntu: sudo apt-get install watchman\n  macOS:         brew install watchman",
    "rsync": "  Debian/Ubuntu: sudo apt-get install rsync\n  macOS:         brew install rsync",
    "ssh": "  Debian/Ubuntu: sudo apt-get install openssh-client\n  macOS:         ships with the system",
}
# Nanosecond mtimes (--modify-window=-1) need 3.1.3, on both sides; macOS ships 2.6.9 or openrsync.
MINIMUM_RSYNC = (3, 1, 3)


class SyncError(RuntimeError):
    """Sync failed: a tool is missing, watchman failed, or the remote kept failing."""


class UsageError(ValueError):
    """The arguments cannot work (bad or unsafe DEST, missing source folder)."""


class RsyncError(SyncError):
    """One rsync run failed."""

    def __init__(self, returncode: int, stderr: str):
        self.returncode = returncode
        self.stderr = stderr.strip()
        last_lines = " | ".join(self.stderr.splitlines()[-3:]) or "no message"
        meaning = PERMANENT_RSYNC_ERRORS.get(returncode, "")
        super().__init__(f"rsync exit {returncode}{' (' + meaning + ')' if meaning else ''}: {last_lines}")

    @property
    def retryable(self) -> bool:
        return self.returncode not in PERMANENT_RSYNC_ERRORS


# ---------------------------------------------------------------------------------------------------
# Excludes


@dataclasses.dataclass(frozen=True)
class SyncFilter:
    """What never leaves the machine: default excludes followed by the lines of `.syncignore`.

    Args:
        lines: gitignore-syntax lines in order (a later line wins, `!pattern` re-includes).
        perishable: the lines that are caches (see CACHE_EXCLUDES).
    """

    lines: tuple[str, ...]
    perishable: frozenset[str] = frozenset(CACHE_EXCLUDES)

    def __post_init__(self):
        object.__setattr__(self, "_spec", pathspec.GitIgnoreSpec.from_lines(self.lines))
        object.__setattr__(self, "_always", pathspec.GitIgnoreSpec.from_lines(ALWAYS_EXCLUDED))

    def is_excluded(self, relative_path: str, is_dir: bool = False) -> bool:
        """Whether rsync leaves this path (relative to the source, "/"-separated) out."""
        parts = [part for part in relative_path.split("/") if part not in ("", ".")]
        if not parts:
            return False
        # As in git and rsync: inside an excluded folder nothing can be re-included.
        for depth in range(1, len(parts)):
            folder = "/".join(parts[:depth]) + "/"
            if self._always.match_file(folder) or self._spec.match_file(folder):
                return True
        path = "/".join(parts) + ("/" if is_dir else "")
        return self._always.match_file(path) or self._spec.match_file(path)

    def rsync_rules(self) -> list[str]:
        """The same excludes as rsync `--filter` rules (first match wins, so the lines are reversed)."""
        rules = [f"- {pattern}" for pattern in ALWAYS_EXCLUDED]
        for line in reversed(self.lines):
            rules += gitignore_to_rsync(line, perishable=line in self.perishable)
        return rules


def build_filter(source: Path) -> SyncFilter:
    """The default excludes plus `source/.syncignore` (if present).

    Raises:
        UsageError: a line of .syncignore is not a valid gitignore pattern.
    """
    lines = [*DEFAULT_EXCLUDES, *CACHE_EXCLUDES]
    syncignore = source / SYNCIGNORE
    if syncignore.is_file():
        for number, line in enumerate(syncignore.read_text(encoding="utf-8").splitlines(), start=1):
            try:
                pathspec.GitIgnoreSpec.from_lines([line])
            except ValueError as error:
                raise UsageError(
                    f"{syncignore} line {number}: {line!r} is not a gitignore pattern ({error}). "
                    "Escape a literal '!' or '#' at the start with a backslash."
                ) from error
            lines.append(line)
    return SyncFilter(tuple(lines))


_WILDCARDS = re.compile(r"[*?\[]")


def gitignore_to_rsync(line: str, perishable: bool = False) -> list[str]:
    """Translate one gitignore line into rsync filter rules (none for blanks and comments).

    The differences handled: gitignore anchors a pattern with a slash in the middle (rsync anchors
    only a leading "/"), "**/x" matches x at any depth (rsync: drop the prefix, leave it unanchored),
    and "a/**/b" also matches "a/b" (rsync's "/**/" needs at least one folder: emit both forms).
    """
    line = line.rstrip("\n")
    if not line.strip() or line.startswith("#"):
        return []
    if not line.endswith("\\ "):
        line = line.rstrip(" ")
    include = line.startswith("!")
    if include or line.startswith(("\\!", "\\#")):
        line = line[1:]
    dir_only = line.endswith("/")
    body = line.rstrip("/")
    anchored = "/" in body
    body = body.lstrip("/")
    while body.startswith("**/"):
        body, anchored = body[3:], False
    if not body:
        return []
    if not _WILDCARDS.search(body):
        body = re.sub(r"\\(.)", r"\1", body)  # rsync reads a backslash literally in a plain pattern
    rule = ("+ " if include else ("-p " if perishable else "- ")) + ("/" if anchored else "")
    return [rule + variant + ("/" if dir_only else "") for variant in _expand_double_star(body)]


def _expand_double_star(body: str) -> list[str]:
    if "/**/" not in body:
        return [body]
    head, tail = body.split("/**/", 1)
    return [f"{head}/**/{rest}" for rest in _expand_double_star(tail)] + [
        f"{head}/{rest}" for rest in _expand_double_star(tail)
    ]


# ---------------------------------------------------------------------------------------------------
# Destination and tools


@dataclasses.dataclass(frozen=True)
class Destination:
    """Where the mirror goes: a local folder, or `path` on `host` (user@host) over ssh."""

    path: str
    host: str | None = None

    @property
    def is_remote(self) -> bool:
        return self.host is not None

    def __str__(self) -> str:
        return f"{self.host}:{self.path}" if self.host else self.path

    def rsync_argument(self) -> str:
        return str(self).rstrip("/") + "/"


_REMOTE = re.compile(r"^(?P<host>[^/:]+):(?P<path>.*)$")  # rsync's rule: a colon before any slash


def load_destination(dest: str, source: Path) -> Destination:
    """Parse and check DEST (a local path or user@host:path).

    Raises:
        UsageError: DEST is empty, an rsync daemon URL, a home or root folder, or overlaps the source
            (syncing into a parent of the project, with `--delete`, would delete everything beside it).
    """
    how_to = "Give a folder of its own, e.g. ../ginlab-mirror or user@host:work/ginlab"
    if not dest.strip():
        raise UsageError(f"DEST is empty. {how_to}")
    if dest.startswith("rsync://") or "::" in dest.split("/", 1)[0]:
        raise UsageError(f"DEST {dest!r} is an rsync daemon address, which is not supported. {how_to}")
    match = _REMOTE.match(dest)
    if match:
        path = match["path"]
        normalized = posixpath.normpath(path) if path else ""
        if normalized in ("", "/", ".", "..") or re.fullmatch(r"~[^/]*/?", path) or path == "$HOME":
            raise UsageError(
                f"DEST {dest!r} is the remote home or root folder itself, not a folder for the project"
                f" (an empty path after ':' means home). {how_to}"
            )
        return Destination(path=path, host=match["host"])
    target = Path(dest).expanduser().resolve()
    source = source.resolve()
    if target in (Path("/"), Path.home().resolve()):
        raise UsageError(f"DEST {dest!r} is the root or home folder itself. {how_to}")
    if target == source or source in target.parents:
        raise UsageError(f"DEST {dest!r} is inside the source {source}; it would sync into itself. {how_to}")
    if target in source.parents:
        raise UsageError(f"DEST {dest!r} contains the source {source}; that would mix the two. {how_to}")
    if not target.parent.is_dir():
        raise UsageError(f"DEST {dest!r}: its parent folder {target.parent} does not exist. Create it first.")
    return Destination(path=str(target))


def check_tools(need_watchman: bool, need_ssh: bool) -> None:
    """Fail early, with the install command, when rsync (or watchman, or ssh) is missing.

    Raises:
        SyncError: a tool is missing or rsync is too old.
    """
    needed = ["rsync"] + (["watchman"] if need_watchman else []) + (["ssh"] if need_ssh else [])
    for tool in needed:
        if shutil.which(tool) is None:
            why = " to see file changes (`--once` works without it)" if tool == "watchman" else ""
            raise SyncError(
                f"{tool} is not installed; bin/sync.py needs it{why}. Install it:\n{INSTALL_HINTS[tool]}"
            )
    version_text = subprocess.run(["rsync", "--version"], check=False, capture_output=True, text=True).stdout
    found = re.search(r"version\s+(\d+)\.(\d+)\.(\d+)", version_text)
    if found is None or "openrsync" in version_text or tuple(map(int, found.groups())) < MINIMUM_RSYNC:
        first_line = version_text.splitlines()[0] if version_text else "unknown version"
        raise SyncError(
            f"rsync {'.'.join(map(str, MINIMUM_RSYNC))} or newer is needed, found: {first_line}. "
            f"Install it:\n{INSTALL_HINTS['rsync']}"
        )


def default_ssh_command() -> str:
    """ssh for rsync `-e`: fail fast on an unreachable host, notice a dead link, share one connection.

    Sharing (ControlMaster) saves the ssh handshake on every batch; the master stays 2 minutes after
    the last use. It is only set up when ~/.ssh exists, where the control socket lives.
    """
    options = ["-o ConnectTimeout=10", "-o ServerAliveInterval=15", "-o ServerAliveCountMax=3"]
    if (Path.home() / ".ssh").is_dir():
        options += ["-o ControlMaster=auto", "-o ControlPath=~/.ssh/ginlab-sync-%C", "-o ControlPersist=120"]
    return " ".join(["ssh", *options])


# ---------------------------------------------------------------------------------------------------
# One rsync run


@dataclasses.dataclass(frozen=True)
class SyncConfig:
    """What to sync where, and how.

    Args:
        source: the project folder.
        dest: from `load_destination`.
        delete: delete on DEST what was deleted locally (never excluded paths, never outside DEST).
        dry_run: only report what would be sent and deleted.
        rsh: the remote shell for ssh destinations (default `default_ssh_command()`).
        retries: retries of a failed rsync before giving up; None retries forever.
        retry_wait: seconds before the first retry, doubled on each failure up to `max_retry_wait`.
    """

    source: Path
    dest: Destination
    delete: bool = False
    dry_run: bool = False
    rsh: str | None = None
    retries: int | None = 3
    retry_wait: float = 1.0
    max_retry_wait: float = 60.0


@dataclasses.dataclass(frozen=True)
class SyncResult:
    """What one rsync run did (or would do, when dry_run)."""

    num_files: int  # regular files sent
    num_deleted: int
    num_bytes: int  # size of the files sent
    num_bytes_sent: int  # bytes on the wire, after rsync's delta and compression
    seconds: float
    changes: tuple[str, ...]  # rsync's itemized lines: "<f+++++++++ src/model.py", "*deleting old.py"
    dry_run: bool = False

    def summary(self) -> str:
        """One line: "3 files, 12.4 kB (1.2 kB sent), 1 deleted in 0.05 s"."""
        deleted = f", {self.num_deleted} deleted" if self.num_deleted else ""
        sent = "" if self.dry_run else f" ({format_bytes(self.num_bytes_sent)} sent)"
        files = "file" if self.num_files == 1 else "files"
        return (
            f"{self.num_files} {files}, {format_bytes(self.num_bytes)}{sent}{deleted} in {self.seconds:.2f} s"
        )


def format_bytes(num_bytes: int) -> str:
    size = float(num_bytes)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


def build_rsync_command(config: SyncConfig, sync_filter: SyncFilter) -> list[str]:
    # -rlpt, not -a: owners, groups and devices of a laptop mean nothing on a cluster. Each file is
    # written to a temporary name and renamed, so a job on the remote never imports half a file.
    # --modify-window=-1 compares mtimes to the nanosecond: by default rsync compares whole seconds,
    # so a save within the same second as the last sync that keeps the size ("lr = 0.1" -> "0.2") would
    # be skipped. The receiving rsync must be 3.1.3 or newer for this (man rsync, --modify-window).
    command = ["rsync", "-rlpt", "--modify-window=-1", "--itemize-changes", "--stats", "--timeout=120"]
    if config.dest.is_remote:
        command += ["--compress", "--rsh", config.rsh or default_ssh_command()]
    if config.delete:
        # Deletes only inside DEST; excluded paths there are protected by the same filter rules.
        command.append("--delete")
    if config.dry_run:
        command.append("--dry-run")
    command += [f"--filter={rule}" for rule in sync_filter.rsync_rules()]
    return command + [str(config.source).rstrip("/") + "/", config.dest.rsync_argument()]


_STATS = {
    "num_files": re.compile(r"^Number of regular files transferred:\s*([\d,]+)", re.MULTILINE),
    "num_deleted": re.compile(r"^Number of deleted files:\s*([\d,]+)", re.MULTILINE),
    "num_bytes": re.compile(r"^Total transferred file size:\s*([\d,]+)", re.MULTILINE),
    "num_bytes_sent": re.compile(r"^Total bytes sent:\s*([\d,]+)", re.MULTILINE),
}
_ITEMIZED = re.compile(r"^(\*deleting|[<>ch.*][fdLDS][^ ]*) ")


def parse_rsync_output(stdout: str, seconds: float, dry_run: bool = False) -> SyncResult:
    """Read the `--stats` numbers and the `--itemize-changes` lines from rsync's output."""
    numbers = {
        name: int(m[1].replace(",", "")) if (m := p.search(stdout)) else 0 for name, p in _STATS.items()
    }
    changes = tuple(line for line in stdout.splitlines() if _ITEMIZED.match(line))
    if not _STATS["num_deleted"].search(stdout):  # rsync < 3.1 has no such line
        numbers["num_deleted"] = sum(line.startswith("*deleting") for line in changes)
    return SyncResult(**numbers, seconds=seconds, changes=changes, dry_run=dry_run)


def run_rsync(config: SyncConfig, sync_filter: SyncFilter) -> SyncResult:
    """Run rsync once.

    Raises:
        RsyncError: rsync failed (ssh could not connect, the link broke, DEST cannot be written).
    """
    command = build_rsync_command(config, sync_filter)
    logger.debug("running %s", " ".join(command))
    start = time.perf_counter()
    # C locale: the --stats lines are parsed.
    completed = subprocess.run(
        command,
        check=False,
        capture_output=True,
        text=True,
        errors="replace",
        env={**os.environ, "LC_ALL": "C"},
    )
    seconds = time.perf_counter() - start
    if completed.returncode == VANISHED_FILES:
        logger.debug("files vanished during the transfer (rsync exit 24); the next batch catches up")
    elif completed.returncode != 0:
        raise RsyncError(completed.returncode, completed.stderr)
    return parse_rsync_output(completed.stdout, seconds, dry_run=config.dry_run)


class Backoff:
    """Waits between retries: `initial`, doubled after each failure, at most `maximum` seconds."""

    def __init__(self, initial: float, maximum: float):
        self.initial, self.maximum = initial, maximum
        self.failures = 0

    def next_wait(self) -> float:
        self.failures += 1
        return min(self.initial * 2 ** (self.failures - 1), self.maximum)

    def reset(self) -> None:
        self.failures = 0


def sync(config: SyncConfig, sync_filter: SyncFilter | None = None) -> SyncResult:
    """Sync once, retrying a failed rsync `config.retries` times with backoff.

    Raises:
        RsyncError: rsync still failed after the retries, or failed in a way retrying cannot fix.
    """
    sync_filter = sync_filter or build_filter(config.source)
    backoff = Backoff(config.retry_wait, config.max_retry_wait)
    while True:
        try:
            return run_rsync(config, sync_filter)
        except RsyncError as error:
            if not error.retryable or (config.retries is not None and backoff.failures >= config.retries):
                raise
            wait = backoff.next_wait()
            logger.warning(
                "sync to %s failed (%s); retry %d in %.3g s", config.dest, error, backoff.failures, wait
            )
            time.sleep(wait)


# ---------------------------------------------------------------------------------------------------
# watchman


def _import_pywatchman():
    try:
        import pywatchman
    except ImportError as error:
        raise SyncError(
            f"the Python package pywatchman is missing ({error}); it is pinned in requirements.txt: "
            "`source e.sh` installs it, or `pip install pywatchman==4.0.0`"
        ) from error
    return pywatchman


class OwnWatchman:
    """A private watchman daemon: its socket, state, log and pid files all live in `folder`.

    Use it when no watchman service runs (CI, a cluster login node) or to keep away from it.
    """

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.sockpath = str(self.folder / "sock")
        self.logfile = self.folder / "log"
        self.pidfile = self.folder / "pid"

    def start(self) -> OwnWatchman:
        """Start the daemon (`watchman get-sockname` spawns it) and wait until it answers.

        Raises:
            SyncError: watchman is missing or did not start.
        """
        check = shutil.which("watchman")
        if check is None:
            raise SyncError(f"watchman is not installed. Install it:\n{INSTALL_HINTS['watchman']}")
        self.folder.mkdir(parents=True, exist_ok=True)
        if len(self.sockpath) > 100:  # unix socket paths are limited to about 104 bytes
            raise SyncError(f"the watchman socket path {self.sockpath} is too long; use a shorter folder")
        command = [
            "watchman",
            f"--sockname={self.sockpath}",
            f"--statefile={self.folder / 'state'}",
            f"--logfile={self.logfile}",
            f"--pidfile={self.pidfile}",
            "get-sockname",
        ]
        completed = subprocess.run(command, check=False, capture_output=True, text=True, timeout=30)
        if completed.returncode != 0 or not os.path.exists(self.sockpath):
            log_tail = self.logfile.read_text(errors="replace")[-2000:] if self.logfile.exists() else ""
            raise SyncError(
                f"could not start watchman in {self.folder} (exit {completed.returncode}): "
                f"{completed.stderr.strip()}\n{log_tail}".strip()
            )
        logger.info("started a private watchman (socket %s, log %s)", self.sockpath, self.logfile)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the daemon to shut down; kill it if it has not exited after `timeout` seconds."""
        pid = self.pid()
        subprocess.run(
            ["watchman", f"--sockname={self.sockpath}", "shutdown-server"],
            check=False,
            capture_output=True,
            timeout=timeout,
        )
        deadline = time.monotonic() + timeout
        while pid is not None and process_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        if pid is not None and process_alive(pid):
            logger.warning("watchman (pid %d) did not shut down in %.0f s; killing it", pid, timeout)
            os.kill(pid, 9)

    def pid(self) -> int | None:
        try:
            return int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


class WatchmanSubscription:
    """Changes under `source`, from watchman, as lists of paths relative to `source`.

    Leaving the `with` block unsubscribes, and removes the watch if this subscription created it (a
    watch that existed before, e.g. an editor's, is left alone).

    Args:
        source: the folder to watch.
        sockpath: the watchman socket; None uses $WATCHMAN_SOCK or the user's running service.
    """

    def __init__(self, source: Path, sockpath: str | None = None):
        self.source = Path(source)
        self.sockpath = sockpath
        self.name = f"ginlab-sync-{os.getpid()}"
        self.client = None
        self.root = None
        self.created_watch = False
        self._seen_first_result = False

    def __enter__(self) -> Self:
        pywatchman = _import_pywatchman()
        # Generous: subscribing to a big tree waits for watchman's first crawl of it.
        self.client = pywatchman.client(sockpath=self.sockpath, timeout=120.0)
        try:
            watched = set(self.client.query("watch-list")["roots"])
            response = self.client.query("watch-project", str(self.source))
            self.root = response["watch"]
            self.created_watch = self.root not in watched
            query = {
                # Only git's folder is dropped here; the precise excludes are applied in Python
                # (SyncFilter.is_excluded) with the same rules rsync gets, so the two cannot disagree.
                "expression": ["not", ["anyof", ["dirname", ".git"], ["match", ".watchman-cookie-*"]]],
                "fields": ["name", "exists", "type"],
                "empty_on_fresh_instance": True,
            }
            if response.get("relative_path"):
                query["relative_root"] = response["relative_path"]
            self.client.query("subscribe", self.root, self.name, query)
        except (pywatchman.WatchmanError, OSError) as error:
            self.close()
            raise SyncError(
                f"watchman could not watch {self.source}: {error}. Is the watchman service running and "
                "reachable ($WATCHMAN_SOCK)? `bin/sync.py --own-watchman` starts a private one instead."
            ) from error
        logger.debug("watching %s (root %s, new watch: %s)", self.source, self.root, self.created_watch)
        return self

    def wait(self, timeout: float) -> list[tuple[str, bool]] | None:
        """Wait up to `timeout` seconds for changes; returns [(path, is_dir)], or None if none came.

        A fresh-instance result (watchman lost track, e.g. after an overflow) returns [(".", True)].

        Raises:
            SyncError: the connection to watchman broke or the watch was removed.
        """
        pywatchman = _import_pywatchman()
        self.client.setTimeout(max(timeout, 0.001))
        try:
            self.client.receive()
        except pywatchman.SocketTimeout:
            pass
        except (pywatchman.WatchmanError, OSError) as error:
            raise SyncError(f"lost the connection to watchman: {error}") from error
        changes = []
        for result in self.client.getSubscription(self.name) or []:
            if result.get("canceled"):
                raise SyncError(
                    f"watchman stopped watching {self.root}: the folder was deleted or moved, or the "
                    "watch was removed (watch-del). Start bin/sync.py again."
                )
            if result.get("is_fresh_instance"):
                # The first result after subscribing always is one; a later one means watchman lost
                # track (a recrawl after an overflow): the whole tree may have changed.
                if self._seen_first_result:
                    changes.append((".", True))
                self._seen_first_result = True
                continue
            changes += [(entry["name"], entry.get("type") == "d") for entry in result.get("files", [])]
        return changes or None

    def close(self) -> None:
        if self.client is None:
            return
        # Closing the connection ends the subscription. The watch is removed over a new connection:
        # a Ctrl-C may have landed in the middle of reading a result on the old one.
        sockpath = self.client.sockpath
        self.client.close()
        self.client = None
        if self.root is None or not self.created_watch:
            return
        pywatchman = _import_pywatchman()
        try:
            with pywatchman.client(sockpath=sockpath, timeout=10.0) as client:
                client.query("watch-del", self.root)
        except (pywatchman.WatchmanError, OSError) as error:
            logger.warning("could not remove the watchman watch on %s: %s", self.root, error)

    def __exit__(self, *exc_info) -> None:
        self.close()


def watch(
    config: SyncConfig,
    on_sync: Callable[[SyncResult], None],
    sockpath: str | None = None,
    stop: threading.Event | None = None,
) -> None:
    """Sync once, then after every batch of changes, until Ctrl-C (KeyboardInterrupt) or `stop` is set.

    Failed syncs are retried with backoff (forever when `config.retries` is None) while changes keep
    being collected; the next successful sync sends all of them.

    Raises:
        RsyncError: rsync failed in a way retrying cannot fix, or ran out of retries.
        SyncError: watchman failed.
    """
    sync_filter = build_filter(config.source)
    with WatchmanSubscription(config.source, sockpath) as subscription:
        # Subscribed before the first sync, so nothing saved during it is missed.
        pending, next_attempt = True, 0.0
        backoff = Backoff(config.retry_wait, config.max_retry_wait)
        while stop is None or not stop.is_set():
            timeout = max(0.0, next_attempt - time.monotonic()) if pending else 0.5
            changes = subscription.wait(min(timeout, 0.5))
            drain_until = time.monotonic() + 0.1  # take what arrived meanwhile, but never wait long
            while changes and time.monotonic() < drain_until and (more := subscription.wait(0.005)):
                changes += more
            if changes and any(path == SYNCIGNORE for path, _ in changes):
                try:
                    sync_filter = build_filter(config.source)
                    logger.info("%s changed; reloaded the excludes", SYNCIGNORE)
                    pending = True
                except UsageError as error:
                    logger.error("%s; still using the excludes from before", error)
            if changes and any(not sync_filter.is_excluded(path, is_dir) for path, is_dir in changes):
                pending = True
            if not pending or time.monotonic() < next_attempt:
                continue
            try:
                result = run_rsync(config, sync_filter)
            except RsyncError as error:
                if not error.retryable or (config.retries is not None and backoff.failures >= config.retries):
                    raise
                wait = backoff.next_wait()
                next_attempt = time.monotonic() + wait
                logger.warning(
                    "sync to %s failed (%s); retry %d in %.3g s", config.dest, error, backoff.failures, wait
                )
                continue
            if backoff.failures:
                logger.warning(
                    "sync to %s works again after %d failed attempts", config.dest, backoff.failures
                )
            backoff.reset()
            pending = False
            on_sync(result)
