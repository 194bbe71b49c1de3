"""What never leaves the machine: default excludes plus `.syncignore`, for pathspec and for rsync.

Excludes are written once, in gitignore syntax. `SyncFilter.is_excluded` evaluates them with pathspec
to decide whether a watchman event matters; `SyncFilter.rsync_rules` translates the same lines into
rsync filter rules. Rsync rules apply on both sides, so an excluded path on the remote (a remote
`results/`) is also protected from `--delete`.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pathspec

from ginlab.sync.destination import MARKER_NAME
from ginlab.sync.errors import UsageError

SYNCIGNORE = ".syncignore"

# Never synced, and a `!` line in .syncignore cannot bring them back: git's own data (the remote is a
# mirror of the files, not a clone), the cookie files watchman creates in the root for a moment, and
# DEST's marker: excluded, it is never deleted by --delete on DEST, and a source that is itself a
# mirror never sends its own marker along.
ALWAYS_EXCLUDED = (".git", ".watchman-cookie-*", f"/{MARKER_NAME}")

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
