"""The page's first answers for a results tree seen before, so that rows are on screen before pandas is imported.

On 2 cores, a board started on a tree it has seen spends ~0.9 s in Python before its runs table can answer
anything (pandas and pyarrow imported, the cached table read). So whenever the board writes its table cache
(ginlab.board.table_cache), it also writes beside it what that same table answers to the page's first two
requests: /api/meta and the first block of the default view (no text, filter, sort or group). At the next
start the server answers those two from this file with the standard library alone, while the board loads
behind it (ginlab.board.starting); anything else waits for the board. Once the board is loaded, the page's
live poll sees a newer version and asks again.

These answers are the table cache's rows, shown before any run is compared with its files, exactly as the
board's own first answer from the cache is (the page says "checking runs against their files" until the check
ends). What depends on the clock moves on by the time since the file was written: ages and running durations
grow, and a running run whose last heartbeat is now older than the stale limit reads "stale", in its row and
in the status counts.

The file is the table cache's name with `.first.json` (`ROOT/.ginlab-cache/board-runs.first.json`), written
atomically after it and stamped with that file's size and modification time: a first view that does not go
with the table cache beside it (either rewritten or removed by something else) is not used.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from typing import Any

from ginlab.board.table_cache import CACHE_VERSION, TableCache

logger = logging.getLogger(__name__)

FORMAT = 1
ROWS = 200  # the page's first block (BLOCK in static/board.js)
SUFFIX = ".first.json"
# Query parameters that do not change which rows the default view shows.
NEUTRAL_PARAMS = frozenset({"start", "end", "token"})


def first_view_path(cache_path: str) -> str:
    """Where the first view that goes with the table cache `cache_path` lives."""
    base = cache_path[: -len(".parquet")] if cache_path.endswith(".parquet") else cache_path
    return base + SUFFIX


def save_first_view(
    cache_path: str,
    meta: dict[str, Any],
    rows: list[dict[str, Any]],
    running: dict[str, float],
    stale_after: float,
) -> str:
    """Write the first view that goes with the table cache just written at `cache_path`; its path.

    Args:
        cache_path: the table cache written (its size and modification time are stamped in).
        meta: what /api/meta answered from that table.
        rows: the first ROWS rows of the default view, as /api/runs answered them.
        running: each running run's seconds since its last heartbeat (since its start when it has none).
        stale_after: seconds of silence after which a running run is stale.
    """
    from ginlab.runfolder.atomic import atomic_write_text

    stat = os.stat(cache_path)
    document = {
        "format": FORMAT,
        "table_cache": {"version": CACHE_VERSION, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns},
        "written": time.time(),
        "stale_after": stale_after,
        "meta": meta,
        "rows": rows[:ROWS],
        "running": running,
    }
    path = first_view_path(cache_path)
    text = json.dumps(document, separators=(",", ":"), allow_nan=False)
    atomic_write_text(path, text)
    return path


class FirstView:
    """The first answers of one results root, read back from disk; see the module's docstring."""

    def __init__(self, document: dict[str, Any]):
        self.meta_answer: dict[str, Any] = document["meta"]
        self.rows: list[dict[str, Any]] = document["rows"]
        self.running: dict[str, float] = document["running"]
        self.written = float(document["written"])
        self.stale_after = float(document["stale_after"])

    @classmethod
    def load(cls, root: str) -> FirstView | None:
        """The first view of `root` (a real path), or None when there is none that goes with its table cache."""
        existing = TableCache(root).existing()  # the table cache is read from the newest of its places
        if not existing:
            return None
        cache_path = existing[0]
        path = first_view_path(cache_path)
        try:
            stat = os.stat(cache_path)
            with open(path, encoding="utf-8") as f:
                document = json.load(f)
            stamp = document["table_cache"]
            if document["format"] != FORMAT or stamp != {
                "version": CACHE_VERSION,
                "size": stat.st_size,
                "mtime_ns": stat.st_mtime_ns,
            }:
                logger.info("the first view %s does not go with the table cache beside it: not used", path)
                return None
            return cls(document)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as error:
            logger.info("ignoring the unreadable first view %s: %s", path, error)
            return None

    def meta(self, now: float | None = None) -> dict[str, Any]:
        """/api/meta as the board answers it before its check: version 0, not checked, counts moved on."""
        turned = self._turned_stale(now)
        counts = Counter(self.meta_answer.get("counts") or {})
        if turned:
            counts["running"] -= len(turned)
            counts["stale"] += len(turned)
        return {
            **self.meta_answer,
            "version": 0,
            "loading": None,
            "checked": False,
            "counts": {status: n for status, n in counts.most_common() if n > 0},
        }

    def runs(self, params, start: int, end: int, now: float | None = None) -> dict[str, Any] | None:
        """The first block of the default view, or None when the request asks for anything else."""
        if any(value for key, value in params.items() if key not in NEUTRAL_PARAMS):
            return None  # a text, filter, sort, group or experiment: only the board can answer
        total = int(self.meta_answer.get("total", len(self.rows)))
        if start != 0 or (end > len(self.rows) and len(self.rows) < total):
            return None  # rows this file does not hold
        now = time.time() if now is None else now
        elapsed = max(0.0, now - self.written)
        turned = self._turned_stale(now)
        rows = []
        for row in self.rows[:end]:
            row = dict(row)
            if isinstance(row.get("age"), (int, float)):
                row["age"] += elapsed
            silence = self.running.get(row.get("name"))
            if row.get("status") == "running" and silence is not None:
                if isinstance(row.get("duration"), (int, float)):
                    # Stale: its duration ends at its last heartbeat; running: it is still growing.
                    row["duration"] += -silence if row["name"] in turned else elapsed
                if row["name"] in turned:
                    row["status"] = "stale"
            rows.append(row)
        return {"total": total, "rows": rows, "version": 0}

    def changes(self) -> dict[str, Any]:
        """/api/changes before the board is loaded: nothing changed yet, nothing checked yet."""
        total = int(self.meta_answer.get("total", len(self.rows)))
        return {"version": 0, "changed": [], "loading": None, "checked": False, "total": total}

    def _turned_stale(self, now: float | None) -> set[str]:
        elapsed = max(0.0, (time.time() if now is None else now) - self.written)
        return {name for name, silence in self.running.items() if silence + elapsed > self.stale_after}


__all__ = ["FirstView", "first_view_path", "save_first_view"]
