"""The runs table of a results root: one row per run, from ginlab.analysis.load_runs, kept current.

`RunsTable.frame` is indexed by the run's name (its path relative to the root) and holds load_runs'
columns (docs/analysis.md) with values the page can sort and group: config values that are lists or mixed
types become their JSON text. Added columns: `progress` (finished epochs / training_loop.n_epochs) and
`_signature` (see ginlab.board.scan). A folder that cannot be read as a run (being created, damaged,
half deleted) is a row with status "unreadable" and the reason in `error`.

`refresh()` re-reads only the runs whose files changed; statuses that depend on the clock (a running run
whose heartbeat stopped becomes "stale") are recomputed on every refresh.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import warnings
from collections.abc import Callable

import numpy as np
import pandas as pd

from ginlab.analysis import load_runs
from ginlab.board.scan import ENDED, ended_signature, scan_tree, signature
from ginlab.board.table_cache import TableCache

logger = logging.getLogger(__name__)

STALE_AFTER_SECONDS = 300.0  # docs/run-folder.md: a running run whose heartbeat is older is "stale"
UNREADABLE = "unreadable"
# Seconds between two writes of the table cache while the board runs.
SAVE_EVERY_SECONDS = 60.0
# Runs read by the first load_runs call before its rows are shown (a tree never seen fills in chunk by
# chunk); each next chunk is twice as large, up to MAX_CHUNK_RUNS (fewer merges of a growing table).
CHUNK_RUNS = 1000
TIME_COLUMNS = ("start", "end", "heartbeat")
MAX_CHUNK_RUNS = 8000


class RunsTable:
    """The runs under one root, read with load_runs, cached on disk, re-read where files changed.

    Args:
        root: the results root.
        stale_after: seconds of heartbeat silence after which a running run is stale.
        after_save: called with the table cache's path each time it was written (the board writes its
            first view beside it, ginlab.board.first_view).
    """

    def __init__(
        self,
        root: str,
        stale_after: float = STALE_AFTER_SECONDS,
        after_save: Callable[[str], None] | None = None,
    ):
        self.root = root
        self.stale_after = stale_after
        self.after_save = after_save
        self.cache = TableCache(root)
        self.frame = _empty()
        self.experiments: dict[str, str] = {}
        self.version = 0
        self.changes: list[tuple[int, frozenset[str]]] = []  # (version, names changed in it), newest last
        self.checked = False  # True once every run was compared with its files
        self.loading: tuple[int, int] | None = None  # (runs read, runs to read) while a refresh reads
        self._lock = threading.Lock()
        self._saved_at = 0.0
        self._dirty = False

    # -- loading -------------------------------------------------------------------------------------

    def load_cached(self) -> bool:
        """Start from the table cached on disk, if there is one (nothing is checked yet)."""
        cached = self.cache.load()
        if cached is None or "name" not in cached.columns:
            return False
        cached["run"] = [self._path(name) for name in cached["name"]]
        self._publish(_finish(cached.set_index("name", drop=False), self.stale_after), set(cached["name"]))
        logger.info("runs table: %d runs from the cache", len(cached))
        return True

    def refresh(self, names: list[str] | None = None) -> set[str]:
        """Re-read the runs whose files changed; the names of the rows that changed.

        Runs are read in chunks and each chunk is published at once, so that a tree never seen before
        shows its first rows after the first chunk instead of after the last.

        Args:
            names: only look at these runs (None: scan the whole tree, also for new and removed runs).
        """
        with self._lock:
            frame = self.frame
            if names is None:
                tree = scan_tree(self.root)
                self.experiments = tree.experiments
                paths = tree.runs
                removed = set(frame.index) - set(paths)
            else:
                paths = {name: self._path(name) for name in names}
                removed = set()
            known = frame.loc[frame.index.intersection(list(paths)), ["status", "_signature"]]
            statuses = dict(zip(known.index, known["status"], strict=True))
            old_signatures = dict(zip(known.index, known["_signature"], strict=True))
            changed = []  # new runs, and known runs whose files changed
            for name, path in paths.items():
                if name not in statuses or signature(path, statuses[name]) != old_signatures.get(name):
                    changed.append(name)
            if not changed and not removed and not self._turning_stale(frame):
                if names is None:
                    self.checked = True
                return set()  # nothing to do: the table stays as it is (no copy of it)
            touched = set(removed)
            if removed:
                frame = _merge(frame, None, removed)
            self.loading = (0, len(changed)) if changed else None
            for first, size in _chunks(len(changed)):
                chunk = changed[first : first + size]
                # Taken before the read: a change during the read is seen by the next refresh.
                signatures = {name: signature(paths[name]) for name in chunk}
                fresh = read_rows({name: paths[name] for name in chunk}) if chunk else None
                if fresh is not None:
                    fresh["_signature"] = [
                        ended_signature(signatures[name]) if status in ENDED else signatures[name]
                        for name, status in zip(fresh.index, fresh["status"], strict=True)
                    ]
                before = frame[["status"]] if len(frame) else None
                frame = _finish(_merge(frame, fresh, set()), self.stale_after)
                now_touched = set(chunk) | _status_changes(before, frame)
                touched |= now_touched
                self.loading = (first + len(chunk), len(changed)) if changed else None
                if now_touched or (removed and first == 0):
                    self._publish(frame, now_touched | removed)
            self.loading = None
            if names is None:
                self.checked = True
            if touched:
                self._dirty = True
            if self._dirty and (names is None or time.monotonic() - self._saved_at > SAVE_EVERY_SECONDS):
                self.save()
            return touched

    def save(self) -> None:
        """Write the table cache now."""
        path = self.cache.save(self.frame.reset_index(drop=True).drop(columns=["run"], errors="ignore"))
        self._saved_at = time.monotonic()
        self._dirty = False
        if path is not None and self.after_save is not None:
            try:
                self.after_save(path)
            except Exception as error:  # the cache itself is written; the next start is only slower
                logger.warning("could not write what goes beside the table cache %s: %s", path, error)

    def live_names(self) -> list[str]:
        """Runs whose files change by themselves: running, and unreadable (perhaps being created).

        A stale run that comes back to life rewrites its meta.json: the next scan of the tree sees it.
        """
        frame = self.frame
        if not len(frame):
            return []
        return list(frame.index[frame["status"].isin(["running", UNREADABLE])])

    def _turning_stale(self, frame: pd.DataFrame) -> bool:
        """True when a run shown as running has gone without a heartbeat for stale_after seconds."""
        if not len(frame):
            return False
        running = frame["status"].to_numpy() == "running"
        if not running.any():
            return False
        beat = frame.loc[running, "heartbeat"].fillna(frame.loc[running, "start"])
        return bool(((pd.Timestamp.now(tz="UTC") - beat).dt.total_seconds() > self.stale_after).any())

    def changed_since(self, version: int) -> set[str] | None:
        """Names changed after `version`; None when that is too long ago to know (refresh everything)."""
        if version >= self.version:
            return set()
        if not self.changes or self.changes[0][0] > version + 1:
            return None
        names: set[str] = set()
        for changed_version, changed in self.changes:
            if changed_version > version:
                names |= changed
        return names

    def _publish(self, frame: pd.DataFrame, touched: set[str]) -> None:
        self.frame = frame
        self.version += 1
        self.changes = [*self.changes[-199:], (self.version, frozenset(touched))]

    def _path(self, name: str) -> str:
        return self.root if name == "." else os.path.join(self.root, name)


def _chunks(total: int) -> list[tuple[int, int]]:
    """(first, size) of the chunks in which `total` runs are read; one empty chunk when there are none."""
    chunks, first, size = [], 0, CHUNK_RUNS
    while first < total or not chunks:
        chunks.append((first, size))
        first, size = first + size, min(2 * size, MAX_CHUNK_RUNS)
    return chunks


def read_rows(paths: dict[str, str]) -> pd.DataFrame:
    """load_runs on these runs (name -> path): readable rows, and a row per unreadable run."""
    by_path = {path: name for name, path in paths.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # unreadable runs become rows below, not a warning
        frame = load_runs(list(paths.values()), on_error="ignore")
    frame["name"] = [by_path.get(path, path) for path in frame["run"]]  # relative to the board's root
    problems = frame.attrs.get("unreadable", {})
    if problems:
        rows = pd.DataFrame(
            {
                "run": list(problems),
                "name": [by_path.get(path, path) for path in problems],
                "status": UNREADABLE,
                "error": list(problems.values()),
            }
        )
        frame = pd.concat([frame, rows], ignore_index=True) if len(frame) else rows
    frame.attrs = {}
    return normalize(frame.set_index("name", drop=False))


def normalize(frame: pd.DataFrame) -> pd.DataFrame:
    """Make every column sortable and groupable: numbers, text, times (lists and mixed values as JSON)."""
    for column in TIME_COLUMNS:  # a merge of frames whose times differ in unit or emptiness gives objects
        if column in frame.columns and not isinstance(frame[column].dtype, pd.DatetimeTZDtype):
            frame[column] = pd.to_datetime(frame[column], utc=True, errors="coerce", format="ISO8601")
    for column in frame.columns:
        series = frame[column]
        if series.dtype != object:
            continue
        values = series.dropna()
        types = set(map(type, values))
        if not types:
            frame[column] = series.astype("float64") if column.count("/") else series
        elif types <= {int, float, bool, np.float64, np.int64, np.bool_} and types != {bool}:
            frame[column] = pd.to_numeric(series, errors="coerce")
        elif types <= {str}:
            frame[column] = series.astype("str").where(series.notna(), None)
        elif types != {bool}:
            frame[column] = series.map(_as_text)
    return frame


def _as_text(value) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, str):
        return value
    return json.dumps(value, default=str)


def _merge(frame: pd.DataFrame, fresh: pd.DataFrame | None, removed: set[str]) -> pd.DataFrame:
    drop = set(removed) | (set(fresh.index) if fresh is not None else set())
    kept = frame.drop(index=[name for name in drop if name in frame.index]) if drop else frame
    if fresh is None or not len(fresh):
        return kept
    if not len(kept):
        return fresh
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # all-NA columns in concat
        merged = pd.concat([kept, fresh])
    return normalize(merged)


def last_beat(frame: pd.DataFrame) -> pd.Series:
    """When each run last showed it was alive: its heartbeat, or its start when it has none."""
    return frame["heartbeat"].fillna(frame["start"])


def _finish(frame: pd.DataFrame, stale_after: float) -> pd.DataFrame:
    """Recompute what depends on the clock (running or stale, duration so far) and derived columns."""
    if not len(frame):
        return frame
    frame = frame.copy()
    now = pd.Timestamp.now(tz="UTC")
    live = frame["status"].isin(["running", "stale"])
    if live.any():
        beat = last_beat(frame.loc[live])
        stale = (now - beat).dt.total_seconds() > stale_after
        frame.loc[live, "status"] = np.where(stale, "stale", "running")
        until = beat.where(stale, now)
        frame.loc[live, "duration"] = (until - frame.loc[live, "start"]).dt.total_seconds()
    if "training_loop.n_epochs" in frame.columns:
        total = pd.to_numeric(frame["training_loop.n_epochs"], errors="coerce")
        frame["progress"] = pd.to_numeric(frame["epochs"], errors="coerce") / total.where(total > 0)
    else:
        frame["progress"] = np.nan
    frame.index.name = None  # the names are also the column "name"
    return frame.sort_index()


def _status_changes(before: pd.DataFrame | None, after: pd.DataFrame) -> set[str]:
    if before is None:
        return set()
    common = before.index.intersection(after.index)
    differ = before.loc[common, "status"] != after.loc[common, "status"]
    return set(common[differ.to_numpy()])


def _empty() -> pd.DataFrame:
    columns = ["run", "name", "status", "epochs", "steps", "time", "start", "end", "heartbeat", "duration",
               "host", "reloads", "error", "progress", "_signature"]  # fmt: skip
    frame = pd.DataFrame({name: pd.Series(dtype=object) for name in columns})
    for name in ("start", "end", "heartbeat"):
        frame[name] = pd.Series(dtype="datetime64[ns, UTC]")
    frame = frame.set_index("name", drop=False)
    frame.index.name = None
    return frame
