"""Where ginlab keeps its caches of what it read from run folders, and how they are written.

A cache of the runs under a folder ROOT lives in `ROOT/.ginlab-cache/` (never inside a run folder); when that
cannot be written (someone else's results, a read-only mount) in `$XDG_CACHE_HOME/ginlab/<kind>/<hash>.parquet`
(XDG_CACHE_HOME defaults to ~/.cache), keyed by ROOT's path; when neither can be written, there is no cache.
A cache is one parquet file with its own metadata (a version and the root it describes), replaced atomically
(ginlab.runfolder.atomic): readers running at the same time see the old or the new file, never a part of one.
Delete it at any time; it is rebuilt.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa

# pyarrow and the writer are imported where they are used: the board's start finds its cache files (this
# module) before it imports pandas and pyarrow, so that it shows rows sooner (ginlab.board.first_view).

logger = logging.getLogger(__name__)

FOLDER_NAME = ".ginlab-cache"


class ParquetCache:
    """One cache file of a results root, with a fallback place.

    Args:
        root: the folder whose runs the cache describes.
        local: where the cache goes first (under ROOT/.ginlab-cache, or beside a single run folder).
        kind: its name in the user's cache folder (`histories`, `board`).
        version: the layout of what is cached; a file of another version is ignored.
    """

    def __init__(self, root: str, local: str | None, kind: str, version: int):
        self.root, self.kind, self.version = root, kind, version
        digest = hashlib.sha256(root.encode()).hexdigest()[:20]
        user_cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        self.paths = [
            path for path in (local, os.path.join(user_cache, "ginlab", kind, f"{digest}.parquet")) if path
        ]

    def existing(self) -> list[str]:
        """The places that hold a cache file, newest first (the order readers try them in)."""
        candidates = []
        for path in self.paths:
            with contextlib.suppress(OSError):
                candidates.append((os.stat(path).st_mtime_ns, path))
        return [path for _, path in sorted(candidates, reverse=True)]

    def load(self) -> tuple[pa.Table | None, dict]:
        """The newest usable cached table and its metadata; (None, {}) when there is none."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        for path in self.existing():
            try:
                table = pq.read_table(path)
                info = json.loads(table.schema.metadata[b"ginlab"])
            except (OSError, KeyError, TypeError, ValueError, pa.ArrowException) as error:
                logger.info("ignoring the unreadable %s cache %s: %s", self.kind, path, error)
                continue
            if info.get("version") == self.version and info.get("root") in (self.root, "."):
                return table.replace_schema_metadata(None), info
        return None, {}

    def save(self, table: pa.Table, info: dict) -> str | None:
        """Write the table (with `info` in its metadata) where it can be written; that path, or None."""
        import pyarrow.parquet as pq

        from ginlab.runfolder.atomic import atomic_write

        for index, path in enumerate(self.paths):
            # In ROOT's own cache folder the root is "." (the tree can move); elsewhere it is ROOT's path.
            inside = path.startswith(os.path.join(self.root, FOLDER_NAME) + os.sep)
            meta = {**info, "version": self.version, "root": "." if inside else self.root}
            stamped = table.replace_schema_metadata({"ginlab": json.dumps(meta, separators=(",", ":"))})
            try:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                # Uncompressed: 2,000 runs x 100 epochs are written in ~0.03 s and read in ~0.01 s.
                atomic_write(path, lambda f, t=stamped: pq.write_table(t, f, compression="none"))
            except OSError as error:
                logger.info(
                    "cannot write the %s cache %s (%s); trying the next place", self.kind, path, error
                )
                continue
            for other in self.paths[index + 1 :]:  # a stale fallback must not shadow this one
                with contextlib.suppress(OSError):
                    os.remove(other)
            return path
        logger.warning("no %s cache: none of %s can be written", self.kind, self.paths)
        return None
