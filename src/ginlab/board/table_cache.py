"""The board's copy of the runs table on disk, so that a results tree seen before paints at once.

It lives where ginlab.analysis keeps its history cache: the `.ginlab-cache/` folder at the top of the
results tree (`ROOT/.ginlab-cache/board-runs.parquet`; for a board started on a single run folder, in the
folder holding it, never inside a run folder), or `$XDG_CACHE_HOME/ginlab/board/<hash>.parquet` when that
cannot be written. Each row keeps the signature of the files it was read from (ginlab.board.scan): a row
whose files changed is read again. The file is replaced atomically (a temporary file in the same folder,
then a rename). Delete it at any time; it is rebuilt on the next start.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

logger = logging.getLogger(__name__)

CACHE_VERSION = 1
FOLDER_NAME = ".ginlab-cache"


class TableCache:
    """The runs table of one results root, saved as parquet."""

    def __init__(self, root: str, root_is_run: bool = False):
        self.root = root
        digest = hashlib.sha256(root.encode()).hexdigest()[:16]
        user_cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        if root_is_run:  # never inside a run folder: beside it, named after it
            local = os.path.join(os.path.dirname(root), FOLDER_NAME, f"board-runs-{digest}.parquet")
        else:
            local = os.path.join(root, FOLDER_NAME, "board-runs.parquet")
        self.paths = [local, os.path.join(user_cache, "ginlab", "board", f"{digest}.parquet")]

    def load(self) -> pd.DataFrame | None:
        """The cached table (with its `_signature` column), or None when there is no usable cache."""
        candidates = []
        for path in self.paths:
            with contextlib.suppress(OSError):
                candidates.append((os.stat(path).st_mtime_ns, path))
        for _, path in sorted(candidates, reverse=True):  # the newest first
            try:
                table = pq.read_table(path)
                info = json.loads(table.schema.metadata[b"ginlab-board"])
            except (OSError, KeyError, TypeError, ValueError, pa.ArrowException) as error:
                logger.info("ignoring the unreadable board cache %s: %s", path, error)
                continue
            if info.get("version") != CACHE_VERSION or info.get("root") not in (self.root, "."):
                continue
            return table.replace_schema_metadata(None).to_pandas()
        return None

    def save(self, frame: pd.DataFrame) -> str | None:
        """Write the table where it can be written; the path written, or None."""
        try:
            table = pa.Table.from_pandas(frame, preserve_index=False)
        except (pa.ArrowException, TypeError, ValueError) as error:
            logger.warning("the runs table cannot be cached (%s); the next start reads every run", error)
            return None
        for index, path in enumerate(self.paths):
            local = os.path.dirname(os.path.dirname(path)) == self.root
            info = {"version": CACHE_VERSION, "root": "." if local else self.root}
            try:
                _write_atomically(table.replace_schema_metadata({"ginlab-board": json.dumps(info)}), path)
            except OSError as error:
                logger.info("cannot write the board cache %s (%s); trying the next place", path, error)
                continue
            for other in self.paths[index + 1 :]:  # a stale fallback must not shadow this one
                _remove_quietly(other)
            return path
        logger.warning("the runs table is not cached: none of %s can be written", self.paths)
        return None


def _write_atomically(table: pa.Table, path: str) -> None:
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=folder, prefix=".board-runs-", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as f:
            pq.write_table(table, f, compression="none")
        os.replace(temporary, path)
    except BaseException:
        _remove_quietly(temporary)
        raise


def _remove_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.remove(path)
