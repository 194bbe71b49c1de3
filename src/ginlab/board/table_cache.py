"""The board's copy of the runs table on disk, so that a results tree seen before paints at once.

It lives where ginlab.analysis keeps its history cache (ginlab.caches): the `.ginlab-cache/` folder at the top of the
results tree (`ROOT/.ginlab-cache/board-runs.parquet`; for a board started on a single run folder, in the
folder holding it, never inside a run folder), or `$XDG_CACHE_HOME/ginlab/board/<hash>.parquet` when that
cannot be written (ginlab.caches). Each row keeps the signature of the files it was read from
(ginlab.board.scan): a row whose files changed is read again.
"""

from __future__ import annotations

import hashlib
import logging
import os
from typing import TYPE_CHECKING

from ginlab.caches import FOLDER_NAME, ParquetCache

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

CACHE_VERSION = 1


class TableCache:
    """The runs table of one results root, saved as parquet."""

    def __init__(self, root: str):
        self.root = root
        self.root_is_run = os.path.isfile(os.path.join(root, "meta.json"))
        if self.root_is_run:  # never inside a run folder: beside it, named after it
            digest = hashlib.sha256(root.encode()).hexdigest()[:16]
            local = os.path.join(os.path.dirname(root), FOLDER_NAME, f"board-runs-{digest}.parquet")
        else:
            local = os.path.join(root, FOLDER_NAME, "board-runs.parquet")
        self.store = ParquetCache(root, local, "board", CACHE_VERSION)
        self.paths = self.store.paths
        self.existing = self.store.existing

    def load(self) -> pd.DataFrame | None:
        """The cached table (with its `_signature` column), or None when there is no usable cache."""
        table, _ = self.store.load()
        return table.to_pandas() if table is not None else None

    def save(self, frame: pd.DataFrame) -> str | None:
        """Write the table where it can be written; the path written, or None."""
        import pyarrow as pa

        try:
            table = pa.Table.from_pandas(frame, preserve_index=False)
        except (pa.ArrowException, TypeError, ValueError) as error:
            logger.warning("the runs table cannot be cached (%s); the next start reads every run", error)
            return None
        return self.store.save(table, {})
