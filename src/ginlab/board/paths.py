"""Paths in requests, kept inside the results root.

Every path the page asks for (a run, a log, a report figure) is a name relative to the root the board was
started on. `resolve_inside` refuses absolute paths, `..` parts and anything whose real path (symbolic links
followed) leaves the root, so a request can never read a file outside it.
"""

from __future__ import annotations

import os


class BoardError(Exception):
    """The board cannot do what was asked; the message says what was wrong and how to fix it."""


class OutsideRootError(BoardError):
    """A requested path is absolute, has `..` parts, or leads out of the results root."""


def results_root(root: str) -> str:
    """The real path of the folder a board is started on; BoardError when it is not a folder."""
    path = os.path.realpath(root)
    if not os.path.isdir(path):
        raise BoardError(f"{root}: no such folder; give the folder that holds your run folders")
    return path


def resolve_inside(root: str, relative: str) -> str:
    """The real path of `relative` under `root`, which must not leave it.

    Args:
        root: the results root (a real path: symbolic links already resolved).
        relative: a name relative to root, with "/" separators ("sweep/run-1/log.txt").

    Raises:
        OutsideRootError: `relative` is absolute, empty of meaning, has ".." parts, or its real path (with
            symbolic links followed) is outside root.
    """
    if not isinstance(relative, str) or "\x00" in relative:
        raise OutsideRootError(f"{relative!r} is not a path name")
    if (
        relative.startswith(("/", "\\"))
        or os.path.isabs(relative)
        or (len(relative) > 1 and relative[1] == ":")
    ):
        raise OutsideRootError(
            f"{relative!r} is an absolute path; the board only serves paths relative to its results root"
        )
    parts = relative.replace("\\", "/").split("/")
    if ".." in parts:
        raise OutsideRootError(f"{relative!r} has a '..' part; paths must stay inside the results root")
    path = os.path.realpath(os.path.join(root, *[part for part in parts if part not in ("", ".")]))
    if not is_inside(root, path):
        raise OutsideRootError(
            f"{relative!r} leads out of the results root {root} (a symbolic link to {path}); "
            "the board only serves files inside it"
        )
    return path


def is_inside(root: str, path: str) -> bool:
    """True when the real path `path` is `root` or below it."""
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)
