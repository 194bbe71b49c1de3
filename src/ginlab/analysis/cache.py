"""A consolidated parquet copy of many runs' histories, so that reading them again takes one file read.

The cache of the runs under a folder ROOT is `ROOT/.ginlab-cache/histories.parquet`; when ROOT cannot be
written (someone else's results, a read-only mount) it is `$XDG_CACHE_HOME/ginlab/histories/<hash>.parquet`
(XDG_CACHE_HOME defaults to ~/.cache). When neither can be written, histories are read without a cache.

Each run's rows are valid while its history.jsonl keeps the size and modification time they were read at:
an appended epoch, a rewrite on reload or a new run is noticed and only those runs are read again. Runs are
keyed by their path relative to ROOT, so a results folder copied or moved with its mtimes kept (rsync -a,
cp -p) keeps a valid cache. The file is replaced atomically (a temporary file in the same folder, then a
rename): readers running at the same time see the old or the new cache, never a part of one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile

import pyarrow as pa
import pyarrow.parquet as pq

logger = logging.getLogger(__name__)

CACHE_VERSION = 1
FOLDER_NAME = ".ginlab-cache"
FILE_NAME = "histories.parquet"
MISSING = (-1, 0)  # the key of a history.jsonl that does not exist yet


def file_key(path: str) -> tuple[int, int]:
    """(size, mtime in ns) of a file; MISSING when it does not exist."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return MISSING
    return info.st_size, info.st_mtime_ns


class HistoryCache:
    """The cached histories of the runs under one folder.

    `entries` maps a run's path relative to the root to [size, mtime_ns, first row, number of rows] of its
    rows in `table`.
    """

    def __init__(self, root: str):
        self.root = os.path.abspath(root)
        digest = hashlib.sha256(self.root.encode()).hexdigest()[:20]
        user_cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        self.paths = [
            os.path.join(self.root, FOLDER_NAME, FILE_NAME),
            os.path.join(user_cache, "ginlab", "histories", f"{digest}.parquet"),
        ]
        if os.path.dirname(self.root) == self.root:  # runs share no folder but "/": keep out of it
            del self.paths[0]

    def load(self) -> tuple[pa.Table | None, dict[str, list[int]]]:
        """The cached table and entries; (None, {}) when there is no usable cache."""
        candidates = []
        for path in self.paths:
            with contextlib.suppress(OSError):
                candidates.append((os.stat(path).st_mtime_ns, path))
        for _, path in sorted(candidates, reverse=True):  # the newest first
            try:
                table = pq.read_table(path)
                info = json.loads(table.schema.metadata[b"ginlab"])
            except (OSError, KeyError, TypeError, ValueError, pa.ArrowException) as error:
                logger.info("ignoring the unreadable history cache %s: %s", path, error)
                continue
            if info.get("version") != CACHE_VERSION or info.get("root") not in (self.root, "."):
                continue
            return table.replace_schema_metadata(None), info["runs"]
        return None, {}

    def save(self, table: pa.Table, entries: dict[str, list[int]]) -> str | None:
        """Write the cache where it can be written; the path written, or None when nowhere could be."""
        info = {"version": CACHE_VERSION, "root": ".", "runs": entries}
        table = table.replace_schema_metadata({"ginlab": json.dumps(info, separators=(",", ":"))})
        for index, path in enumerate(self.paths):
            if not path.startswith(self.root + os.sep):  # outside the root it is keyed by the root's path
                info["root"] = self.root
                table = table.replace_schema_metadata({"ginlab": json.dumps(info, separators=(",", ":"))})
            try:
                _write_atomically(table, path)
            except OSError as error:
                logger.info("cannot write the history cache %s (%s); trying the next place", path, error)
                continue
            for other in self.paths[index + 1 :]:  # a stale fallback must not shadow this one
                _remove_quietly(other)
            return path
        logger.warning("histories are read without a cache: none of %s can be written", self.paths)
        return None


def _write_atomically(table: pa.Table, path: str) -> None:
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=folder, prefix=".histories-", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as f:
            # Uncompressed: written in ~0.03 s and read in ~0.01 s for 2,000 runs x 100 epochs.
            pq.write_table(table, f, compression="none", use_dictionary=False, write_statistics=False)
        os.replace(temporary, path)
    except BaseException:
        _remove_quietly(temporary)
        raise


def _remove_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.remove(path)
