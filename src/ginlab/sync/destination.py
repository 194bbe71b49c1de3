"""Where the mirror goes: DEST parsed and checked for safety, and the tools needed to reach it."""

from __future__ import annotations

import dataclasses
import posixpath
import re
import shutil
import subprocess
from pathlib import Path

from ginlab.sync.errors import SyncError, UsageError

INSTALL_HINTS = {
    "watchman": "  Debian/Ubuntu: sudo apt-get install watchman\n  macOS:         brew install watchman",
    "rsync": "  Debian/Ubuntu: sudo apt-get install rsync\n  macOS:         brew install rsync",
    "ssh": "  Debian/Ubuntu: sudo apt-get install openssh-client\n  macOS:         ships with the system",
}
# Written into DEST by the first sync; says which source DEST mirrors (see marker.py).
MARKER_NAME = ".ginlab-sync.json"
# Nanosecond mtimes (--modify-window=-1) need 3.1.3, on both sides; macOS ships 2.6.9 or openrsync.
MINIMUM_RSYNC = (3, 1, 3)


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


def load_source(source: Path) -> Path:
    """The project folder to mirror, as an absolute path.

    Raises:
        UsageError: `source` is not a folder.
    """
    if not Path(source).is_dir():
        raise UsageError(f"--source {source} is not a folder")
    return Path(source).resolve()


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
