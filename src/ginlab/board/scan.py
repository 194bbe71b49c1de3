"""Finding the run folders and experiment folders under a results root, and noticing which changed.

A run folder is a folder with a meta.json (docs/run-folder.md); a folder holding other run files but no
meta.json is a run folder being created or half deleted, and is listed too (its row says what is wrong).
An experiment folder has an experiment.json (docs/experiments.md). Hidden folders (.ginlab-cache, .git)
and the insides of run folders are not searched, as ginlab.analysis does. Symbolic links are followed only
when they stay inside the root.

Each run gets a signature: the sizes and modification times of the files its row is read from. A run whose
signature is unchanged since it was read needs no new read. For a run that has ended, meta.json and
evaluations/ are enough (a reload or a new end rewrites meta.json; bin/evaluate.py adds a file to
evaluations/); a run that may still be writing also has config.json, summary.json and history.jsonl in it.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from ginlab.board.paths import is_inside
from ginlab.runfolder import format as fmt

logger = logging.getLogger(__name__)

ENDED_FILES = (fmt.META, fmt.EVALUATIONS)
LIVE_FILES = (*ENDED_FILES, fmt.CONFIG_JSON, fmt.CONFIG_GIN, fmt.SUMMARY, fmt.HISTORY)
# Files that make a folder without meta.json a (broken) run folder rather than a folder to search.
RUN_FILES = tuple(name for name in fmt.RUN_FILES if name != fmt.META)
# Statuses after which a run's files other than meta.json and evaluations/ no longer change by themselves.
ENDED = frozenset(fmt.ENDED)


@dataclass
class Tree:
    """What a scan found: run folders and experiment folders, by name relative to the root -> path."""

    root: str
    runs: dict[str, str] = field(default_factory=dict)
    experiments: dict[str, str] = field(default_factory=dict)


def scan_tree(root: str) -> Tree:
    """Every run folder and experiment folder under `root` (a real path), by name relative to it."""
    tree = Tree(root)
    if os.path.isfile(os.path.join(root, "meta.json")):
        tree.runs["."] = root
        return tree
    _walk(root, "", tree, set())
    return tree


def _walk(folder: str, prefix: str, tree: Tree, visited: set[tuple[int, int]]) -> None:
    try:
        info = os.stat(folder)
        if (info.st_dev, info.st_ino) in visited:  # a symbolic link back up the tree
            return
        visited.add((info.st_dev, info.st_ino))
        entries = sorted(
            (entry for entry in os.scandir(folder) if not entry.name.startswith(".") and entry.is_dir()),
            key=lambda entry: entry.name,
        )
    except OSError as error:
        logger.info("cannot list %s: %s", folder, error)
        return
    if os.path.isfile(os.path.join(folder, "experiment.json")):
        tree.experiments[prefix.rstrip("/") or "."] = folder
    for entry in entries:
        path = entry.path
        if entry.is_symlink() and not is_inside(tree.root, os.path.realpath(path)):
            logger.info("not following %s: it links out of the results root", path)
            continue
        name = prefix + entry.name
        if os.path.isfile(os.path.join(path, "meta.json")) or any(
            os.path.exists(os.path.join(path, file)) for file in RUN_FILES
        ):
            tree.runs[name] = path
        else:
            _walk(path, name + "/", tree, visited)


def signature(run: str, status: str | None = None) -> str:
    """The sizes and modification times of the files a run's row is read from, as one text.

    Args:
        run: the run folder.
        status: the status its row was read with; for an ended run only meta.json and evaluations/ count.
    """
    parts = []
    for name in ENDED_FILES if status in ENDED else LIVE_FILES:
        try:
            info = os.stat(f"{run}/{name}")
        except OSError:
            parts.append("-")
            continue
        parts.append(f"{info.st_size}:{info.st_mtime_ns}")
    return " ".join(parts)


def ended_signature(live_signature: str) -> str:
    """The signature of an ended run, from the one taken with every file (its first parts)."""
    return " ".join(live_signature.split(" ")[: len(ENDED_FILES)])


def history_signature(run: str) -> str:
    """Size and modification time of the run's history.jsonl ("-" when it does not exist)."""
    try:
        info = os.stat(os.path.join(run, "history.jsonl"))
    except OSError:
        return "-"
    return f"{info.st_size}:{info.st_mtime_ns}"
