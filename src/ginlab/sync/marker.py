"""DEST's marker, `.ginlab-sync.json`: which source DEST mirrors, and so whether `--delete` may run there.

`--delete` deletes whatever in DEST is not in the source. Into a folder that is not a mirror of this
project (a thesis, another project's mirror) that is data loss. So the first sync into a DEST that does
not exist yet, or is empty, writes the marker there (the source's absolute path, the host, the time),
and before the first rsync run `prepare_destination` reads DEST: `--delete` into a DEST that holds
files but no marker, or the marker of another source, is refused before anything is sent. `adopt`
(`--adopt`) makes such a DEST this source's mirror after all; it rewrites the marker.

The marker is in filter.ALWAYS_EXCLUDED: rsync never deletes it, and a source that is itself a mirror
never sends its own along. DEST is read and written with rsync and the sync's own remote shell, so a
local and an ssh DEST take the same path.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import os
import re
import socket
import tempfile
from pathlib import Path

from ginlab.sync.destination import MARKER_NAME
from ginlab.sync.errors import UsageError
from ginlab.sync.rsync import SyncConfig, call_rsync, transport_options

logger = logging.getLogger(__name__)

# How many of DEST's entries an error message names.
NUM_NAMES_SHOWN = 5


@dataclasses.dataclass(frozen=True)
class Marker:
    """The content of `.ginlab-sync.json`: DEST is the mirror of `source` on `host` since `created`."""

    source: str
    host: str
    created: str

    def to_json(self) -> str:
        about = (
            f"bin/sync.py (ginlab) mirrors {self.source} on {self.host} into this folder. "
            "bin/sync.py --delete into it is allowed from that source only (or with --adopt)."
        )
        return json.dumps({"about": about, **dataclasses.asdict(self)}, indent=2) + "\n"


@dataclasses.dataclass(frozen=True)
class DestinationContents:
    """What DEST holds at its top level, as `list_destination` found it.

    Args:
        exists: DEST exists (as a folder, or as something else).
        is_folder: DEST is a folder (or a link to one).
        names: its entries, folders with a trailing "/", the marker left out.
        marker: the marker's content, if DEST has one that could be read.
        marker_problem: why DEST's marker could not be read, if it has one that could not.
    """

    exists: bool
    is_folder: bool = True
    names: tuple[str, ...] = ()
    marker: Marker | None = None
    marker_problem: str | None = None

    @property
    def is_new(self) -> bool:
        """DEST does not exist or is an empty folder: a sync into it can delete nothing of anyone's."""
        return not self.names and self.marker is None and self.marker_problem is None

    def describe_names(self) -> str:
        """ "2 files or folders (figures/, thesis.tex)"."""
        shown = ", ".join(self.names[:NUM_NAMES_SHOWN])
        more = f", and {len(self.names) - NUM_NAMES_SHOWN} more" if len(self.names) > NUM_NAMES_SHOWN else ""
        what = "file or folder" if len(self.names) == 1 else "files or folders"
        return f"{len(self.names)} {what} ({shown}{more})"


def build_marker(source: Path) -> Marker:
    """The marker that says: this DEST mirrors `source` on this host, from now on."""
    created = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    return Marker(source=str(Path(source).resolve()), host=socket.gethostname(), created=created)


# A line of `rsync --list-only`: "drwxr-xr-x          4,096 2026/12/03 15:49:43 mirror/figures".
_LISTED = re.compile(r"^(?P<type>\S)\S*\s+[\d,]+\s+\S+\s+\S+ (?P<name>.+)$")


def list_destination(config: SyncConfig) -> DestinationContents:
    """What DEST holds at its top level, and its marker (two rsync runs when it has one).

    Raises:
        RsyncError: DEST could not be read (ssh failed, its parent folder is missing, ...).
    """
    dest = str(config.dest).rstrip("/")
    # Without a trailing slash a missing DEST is no error (--ignore-missing-args) but an empty list;
    # DEST itself comes first, then its entries; --copy-dirlinks follows a DEST that links to a folder;
    # the exclude stops at DEST's own entries.
    listing = call_rsync(
        [
            "rsync",
            "--list-only",
            "--recursive",
            "--copy-dirlinks",
            "--ignore-missing-args",
            "--exclude=/*/*/*",
            *transport_options(config),
            dest,
        ]
    ).stdout
    entries = [match for line in listing.splitlines() if (match := _LISTED.match(line))]
    if not entries:
        return DestinationContents(exists=False)
    if entries[0]["type"] != "d":
        return DestinationContents(exists=True, is_folder=False)
    names, has_marker = [], False
    for entry in entries[1:]:
        name = entry["name"].split("/", 1)[-1]
        if name == MARKER_NAME and entry["type"] == "-":
            has_marker = True
        else:
            names.append(name + ("/" if entry["type"] == "d" else ""))
    marker, problem = load_marker(config) if has_marker else (None, None)
    return DestinationContents(exists=True, names=tuple(sorted(names)), marker=marker, marker_problem=problem)


def load_marker(config: SyncConfig) -> tuple[Marker | None, str | None]:
    """DEST's marker, or why it cannot be read.

    Raises:
        RsyncError: DEST could not be read.
    """
    with tempfile.TemporaryDirectory(prefix="ginlab-marker-") as folder:
        marker_on_dest = f"{str(config.dest).rstrip('/')}/{MARKER_NAME}"
        call_rsync(["rsync", "--max-size=1m", *transport_options(config), marker_on_dest, folder + "/"])
        path = Path(folder) / MARKER_NAME
        try:
            fields = json.loads(path.read_text(encoding="utf-8"))
            return Marker(source=fields["source"], host=fields["host"], created=fields["created"]), None
        except FileNotFoundError:
            return None, "it is larger than 1 MB"
        except (ValueError, TypeError, KeyError) as error:
            return None, f"it is not the JSON ginlab writes: {error!r}"


def save_marker(config: SyncConfig, marker: Marker) -> None:
    """Write the marker into DEST (creating DEST if it does not exist).

    Raises:
        RsyncError: DEST could not be written.
    """
    with tempfile.TemporaryDirectory(prefix="ginlab-marker-") as folder:
        # The folder is sent, not the file: rsync creates a missing DEST (not its parents) only for a
        # folder. Its mode becomes DEST's if rsync creates DEST (the sync's -p then gives it the source's).
        os.chmod(folder, 0o755)
        (Path(folder) / MARKER_NAME).write_text(marker.to_json(), encoding="utf-8")
        call_rsync(
            ["rsync", "--recursive", *transport_options(config), folder + "/", config.dest.rsync_argument()]
        )
    logger.debug(
        "wrote %s into %s: the mirror of %s on %s", MARKER_NAME, config.dest, marker.source, marker.host
    )


def prepare_destination(config: SyncConfig) -> None:
    """Before the first rsync run: refuse an unsafe `--delete`, and mark a DEST that ginlab creates.

    Without `config.adopt`: `--delete` into a DEST that holds files but has no marker, or the marker of
    another source (or one that cannot be read), raises UsageError; without `--delete` such a DEST
    gets a warning and no marker. A DEST that does not exist or is empty gets the marker (not in a dry
    run), as does any DEST with `config.adopt`.

    Raises:
        UsageError: `--delete` into a DEST that is not this source's mirror, or DEST is not a folder.
        RsyncError: DEST could not be read or written; worth retrying.
    """
    contents = list_destination(config)
    if not contents.is_folder:
        raise UsageError(
            f"DEST {config.dest} is a file, not a folder. Give a folder, e.g. {config.dest}-mirror"
        )
    ours = build_marker(config.source)
    found = contents.marker
    if found is not None and (found.source, found.host) == (ours.source, ours.host):
        return
    if not contents.is_new and not config.adopt:
        problem, remedy = _not_our_mirror(config, contents, ours)
        if config.delete:
            raise UsageError(
                f"{problem} --delete would delete whatever in it is not in {ours.source}, so it is refused; "
                f"nothing was changed. {remedy}"
            )
        logger.warning(
            "%s Without --delete nothing is deleted there; --delete will be refused there unless --adopt "
            "makes DEST this project's mirror.",
            problem,
        )
        return
    if config.dry_run:
        return
    save_marker(config, ours)
    if not contents.is_new:
        logger.info("DEST %s adopted: it is now the mirror of %s on %s", config.dest, ours.source, ours.host)


def _not_our_mirror(config: SyncConfig, contents: DestinationContents, ours: Marker) -> tuple[str, str]:
    """Why DEST is not this source's mirror, and what to do about it."""
    check = "see what --delete would remove with `--dry-run --delete --adopt`, then sync once with --adopt"
    if contents.marker is not None:
        found = contents.marker
        return (
            f"DEST {config.dest} is the mirror of {found.source} on {found.host} (its {MARKER_NAME} was "
            f"written {found.created}), not of {ours.source} on {ours.host}.",
            f"Give this project a DEST of its own. If that mirror may go, {check} (it rewrites the marker).",
        )
    if contents.marker_problem is not None:
        problem = (
            f"DEST {config.dest} has a {MARKER_NAME} that cannot be read ({contents.marker_problem}), so "
            "whose mirror it is is unknown."
        )
    else:
        problem = (
            f"DEST {config.dest} holds {contents.describe_names()} and has no {MARKER_NAME}: ginlab did "
            f"not create it, so it may be no mirror of {ours.source} at all."
        )
    remedy = (
        f"If DEST is meant to be this project's mirror, {check} (it writes the marker; later runs need "
        "no flag). Otherwise give a new or empty folder as DEST."
    )
    return problem, remedy
