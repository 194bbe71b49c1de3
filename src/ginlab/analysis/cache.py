"""A consolidated parquet copy of many runs' histories, so that reading them again takes one file read.

The cache of the runs under a folder ROOT is `ROOT/.ginlab-cache/histories.parquet`, or its fallback
(ginlab.caches). When neither can be written, histories are read without a cache.

Each run's rows are valid while its history.jsonl keeps the size and modification time they were read at:
an appended epoch, a rewrite on reload or a new run is noticed and only those runs are read again. Runs are
keyed by their path relative to ROOT, so a results folder copied or moved with its mtimes kept (rsync -a,
cp -p) keeps a valid cache.
"""

from __future__ import annotations

import os

import pyarrow as pa

from ginlab.caches import FOLDER_NAME, ParquetCache

CACHE_VERSION = 1
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
        # Runs that share no folder but "/" keep out of it.
        local = (
            os.path.join(self.root, FOLDER_NAME, FILE_NAME)
            if os.path.dirname(self.root) != self.root
            else None
        )
        self.store = ParquetCache(self.root, local, "histories", CACHE_VERSION)
        self.paths = self.store.paths

    def load(self) -> tuple[pa.Table | None, dict[str, list[int]]]:
        """The cached table and entries; (None, {}) when there is no usable cache."""
        table, info = self.store.load()
        return (table, info["runs"]) if table is not None else (None, {})

    def save(self, table: pa.Table, entries: dict[str, list[int]]) -> str | None:
        """Write the cache where it can be written; the path written, or None when nowhere could be."""
        return self.store.save(table, {"runs": entries})
