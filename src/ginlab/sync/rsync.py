"""One rsync run: the command line, running it, reading its output, and what its failures mean.

Why each batch re-runs rsync over the whole tree instead of `--files-from` with the changed paths:
rsync's quick check (size + mtime) makes a no-change walk of a code tree cost tens of milliseconds,
deletions and renames (including whole folders) are then handled by rsync itself exactly as in the
first sync, an event that watchman coalesced or dropped (a recrawl) cannot leave the remote stale, and
the rsync filter rules stay the one authority on what is sent. The price is one file-list exchange per
batch, which benchmarks/sync_latency.py measures.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import subprocess
import time
from pathlib import Path

from ginlab.sync.destination import Destination, default_ssh_command
from ginlab.sync.errors import SyncError
from ginlab.sync.filter import SyncFilter
from ginlab.sync.process_group import run_in_own_group

logger = logging.getLogger(__name__)

# rsync exit codes that retrying cannot fix: usage/syntax error, protocol incompatibility, unsupported
# action (see "EXIT VALUES" in `man rsync`). Everything else (255 for ssh, 12 and 10 for a lost stream,
# 30 for a timeout, 23 for a partial transfer) is worth retrying.
PERMANENT_RSYNC_ERRORS = {1: "syntax or usage error", 2: "protocol incompatibility", 4: "unsupported action"}
# 24: some source files vanished during the transfer (an editor's temporary file); the next batch
# catches up, so it counts as success.
VANISHED_FILES = 24


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


@dataclasses.dataclass(frozen=True)
class SyncConfig:
    """What to sync where, and how.

    Args:
        source: the project folder.
        dest: from `load_destination`.
        delete: delete on DEST what was deleted locally (never excluded paths, never outside DEST). Refused
            into a DEST that ginlab did not create for this source, unless `adopt` (see marker.py).
        dry_run: only report what would be sent and deleted.
        adopt: make DEST this source's mirror even if ginlab did not create it or it mirrors another
            source: its marker is (re)written, and `delete` is allowed.
        rsh: the remote shell for ssh destinations (default `default_ssh_command()`).
        retries: retries of a failed rsync before giving up; None retries forever.
        retry_wait: seconds before the first retry, doubled on each failure up to `max_retry_wait`.
        io_timeout: seconds without any data from the other side before rsync gives up (rsync --timeout;
            also while the remote shell has not connected).
    """

    source: Path
    dest: Destination
    delete: bool = False
    dry_run: bool = False
    adopt: bool = False
    rsh: str | None = None
    retries: int | None = 3
    retry_wait: float = 1.0
    max_retry_wait: float = 60.0
    io_timeout: int = 120


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


def transport_options(config: SyncConfig) -> list[str]:
    """The rsync options of every run towards DEST: the I/O timeout, and the remote shell for an ssh DEST."""
    options = [f"--timeout={config.io_timeout}"]
    if config.dest.is_remote:
        options += ["--rsh", config.rsh or default_ssh_command()]
    return options


def build_rsync_command(config: SyncConfig, sync_filter: SyncFilter) -> list[str]:
    # -rlpt, not -a: owners, groups and devices of a laptop mean nothing on a cluster. Each file is
    # written to a temporary name and renamed, so a job on the remote never imports half a file.
    # --modify-window=-1 compares mtimes to the nanosecond: by default rsync compares whole seconds,
    # so a save within the same second as the last sync that keeps the size ("lr = 0.1" -> "0.2") would
    # be skipped. The receiving rsync must be 3.1.3 or newer for this (man rsync, --modify-window).
    command = [
        "rsync",
        "-rlpt",
        "--modify-window=-1",
        "--itemize-changes",
        "--stats",
        *transport_options(config),
    ]
    if config.dest.is_remote:
        command.append("--compress")
    if config.delete:
        # Deletes only inside DEST; excluded paths there (DEST's marker too) are protected by the same
        # filter rules.
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


def call_rsync(command: list[str], ok: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess:
    """Run an rsync command line and return it finished, with its output as text.

    When it is interrupted (KeyboardInterrupt), or when it ends, nothing it started is left running.

    Raises:
        RsyncError: rsync exited with a code not in `ok`.
    """
    logger.debug("running %s", " ".join(command))
    # Its own process group: stopping it also stops the remote shell it started (process_group.py).
    # C locale: rsync's output is parsed.
    completed = run_in_own_group(command, env={**os.environ, "LC_ALL": "C"})
    if completed.returncode not in ok:
        raise RsyncError(completed.returncode, completed.stderr)
    return completed


def run_rsync(config: SyncConfig, sync_filter: SyncFilter) -> SyncResult:
    """Run rsync once.

    Raises:
        RsyncError: rsync failed (ssh could not connect, the link broke, DEST cannot be written).
    """
    start = time.perf_counter()
    completed = call_rsync(build_rsync_command(config, sync_filter), ok=(0, VANISHED_FILES))
    seconds = time.perf_counter() - start
    if completed.returncode == VANISHED_FILES:
        logger.debug("files vanished during the transfer (rsync exit 24); the next batch catches up")
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
