"""Finding run folders: in a folder tree, by a glob, or from a list (or a load_runs() frame)."""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable
from dataclasses import dataclass, field

from ginlab.errors import RunFolderError
from ginlab.runfolder.format import RUN_FILES

GLOB_CHARACTERS = frozenset("*?[")


@dataclass
class Found:
    """Run folders found, folders that look like runs but cannot be read, and the folder they share."""

    runs: list[str] = field(default_factory=list)  # as given or joined from what was given
    problems: dict[str, str] = field(default_factory=dict)  # path -> message naming it and what is wrong
    root: str = "."  # absolute; the deepest folder holding every run's parent folder

    def name(self, run: str) -> str:
        """The run's path relative to root: a short name for tables."""
        path = os.path.abspath(run)
        return path[len(self.root) :].lstrip(os.sep) if path.startswith(self.root) else path


def find_runs(where) -> Found:
    """Run folders under `where`.

    Args:
        where: a run folder or a folder to search (recursively; hidden folders and the insides of run
            folders are skipped), a glob of those ("results/sweep-*"), or a list of those; also a DataFrame
            with a `run` column (as returned by load_runs) or a Series of paths.

    Raises:
        RunFolderError: a single path was given and it does not exist.
    """
    found = Found()
    seen: set[str] = set()
    for path in _expand(where):
        if os.path.isfile(os.path.join(path, "meta.json")):
            _add(found, seen, path)
        elif os.path.isdir(path):
            present = [name for name in RUN_FILES if os.path.exists(os.path.join(path, name))]
            if present:
                found.problems[path] = f"{path}: meta.json is missing (it has {', '.join(present)})"
            else:
                _walk(path, found, seen, set())
        elif isinstance(where, (str, os.PathLike)) and not _is_glob(str(where)):
            raise RunFolderError(f"{path}: no such run folder or folder of runs")
        else:
            found.problems[path] = f"{path}: no such folder"
    parents = {os.path.dirname(os.path.abspath(run)) for run in found.runs}
    found.root = os.path.commonpath(parents) if parents else os.path.abspath(".")
    return found


def _expand(where) -> list[str]:
    if hasattr(where, "columns") and "run" in getattr(where, "columns", ()):
        where = where["run"]
    if isinstance(where, (str, os.PathLike)):
        where = [where]
    if not isinstance(where, Iterable):
        raise TypeError(
            f"where must be a path, a glob, a list of paths or a frame with a run column, not {where!r}"
        )
    paths = []
    for item in where:
        text = os.fspath(item)
        if _is_glob(text) and not os.path.exists(text):
            paths += sorted(glob.glob(text, recursive=True))
        else:
            paths.append(text)
    return paths


def _is_glob(text: str) -> bool:
    return not GLOB_CHARACTERS.isdisjoint(text)


def _add(found: Found, seen: set[str], path: str) -> None:
    key = os.path.abspath(path)
    if key not in seen:
        seen.add(key)
        found.runs.append(path)


def _walk(folder: str, found: Found, seen: set[str], visited: set[tuple[int, int]]) -> None:
    try:
        info = os.stat(folder)
        if (info.st_dev, info.st_ino) in visited:  # a symbolic link back up the tree
            return
        visited.add((info.st_dev, info.st_ino))
        entries = sorted(entry.name for entry in os.scandir(folder) if entry.is_dir())
    except OSError as error:
        found.problems[folder] = f"{folder}: cannot be listed ({error.strerror})"
        return
    for name in entries:
        if name.startswith("."):  # .ginlab-cache, .git, ...
            continue
        path = os.path.join(folder, name)
        if os.path.isfile(os.path.join(path, "meta.json")):
            _add(found, seen, path)
            continue
        present = [file for file in RUN_FILES[1:] if os.path.exists(os.path.join(path, file))]
        if present:
            found.problems[path] = f"{path}: meta.json is missing (it has {', '.join(present)})"
        else:
            _walk(path, found, seen, visited)
