"""Loaders for many runs: one row per run (load_runs) and all histories in one frame (load_histories).

    runs = load_runs("results/sweep")                      # status, config values, final/best/test metrics
    H = load_histories("results/sweep", metrics=["val_acc"], select={"Adam.lr": 0.001})
    H = load_histories(runs[runs["status"] == "finished"])  # the runs of a filtered frame

Folders that are not readable runs are left out and reported together in one UnreadableRunsWarning.
"""

from __future__ import annotations

import difflib
import fnmatch
import os
import warnings
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from ginlab.analysis import jsonl
from ginlab.analysis.cache import HistoryCache, file_key
from ginlab.analysis.discover import Found, find_runs
from ginlab.analysis.run import (
    HISTORY_INDEX,
    STALE_AFTER_SECONDS,
    RunFolderError,
    effective_status,
    history_frame,
    load_config,
    load_evaluations,
    load_meta,
    load_summary,
)
from ginlab.runfolder.format import TELEMETRY_PREFIX
from ginlab.runfolder.read import parse_time, telemetry_maxima

# Columns of load_runs() before the config values, in this order.
RUN_COLUMNS = (
    "run", "name", "status", "epochs", "steps", "time", "start", "end", "heartbeat", "duration",
    "host", "reloads", "error",
)  # fmt: skip
# Metric columns come after the config values, grouped by where they come from, in this order.
METRIC_GROUPS = ("monitor", "mode", "final/", "best/", "test/", "max/", "eval/")
# At most this many unreadable runs are listed in the warning (all are in frame.attrs["unreadable"]).
MAX_LISTED = 20

Select = Mapping[str, Any] | Callable[[dict[str, Any]], bool] | None


class UnreadableRunsWarning(UserWarning):
    """Some folders that look like runs could not be read and were left out."""


def load_runs(
    where,
    select: Select = None,
    *,
    stale_after: float = STALE_AFTER_SECONDS,
    on_error: str = "warn",
) -> pd.DataFrame:
    """One row per run: path, status, progress, times, every config value, final/best/test metrics.

    Columns: run (the path), name (the path relative to the runs' common folder), status (running, stale,
    finished, failed, interrupted, diverged, pruned: ginlab.runfolder.run_status, the rule every reader
    uses), epochs (finished epochs), steps, time (training seconds), start, end,
    heartbeat (UTC timestamps), duration (wall-clock seconds until end, last heartbeat, or now while
    running), host, reloads, error ("Type: message" of a failed run); then every config value under its gin
    name ("Adam.lr"); then monitor and mode (from summary.json), final/<metric> (summary.json, or the last
    history line while there is no summary), best/<metric> and test/<metric> (summary.json),
    max/sys_<resource> (the largest value of each telemetry column over the epochs: peak memory, CPU, data
    wait ...; summary.json, or the history while there is none) and eval/<checkpoint>-<split>/<metric>
    (evaluations/).

    Args:
        where: a folder to search, a glob, a list of those, or a frame with a run column (see find_runs).
        select: keep only runs whose config matches, decided before anything else is read: a dict of gin
            name -> wanted value (a set means any of its values, a callable is called with the value), or
            a callable given the whole config dict.
        stale_after: seconds without heartbeat after which a running run of another host is reported as
            "stale" (on this host, a run whose process is gone is "stale" at once).
        on_error: "warn" (one UnreadableRunsWarning listing every unreadable run), "raise" or "ignore".
            The unreadable runs are also in `frame.attrs["unreadable"]` ({path: reason}).

    Raises:
        RunFolderError: `where` is a path that does not exist, or on_error="raise" and a run is unreadable.
        KeyError: `select` names a config value that no run has.
    """
    found = find_runs(where)
    now = datetime.now(UTC)
    rows, config_keys, seen_keys = [], {}, set()
    for run in found.runs:
        try:
            row = _run_row(run, found, select, now, stale_after, config_keys, seen_keys)
        except (RunFolderError, jsonl.JsonLinesError, OSError) as error:  # a damaged history.jsonl line
            found.problems[run] = _message(run, error)
            continue
        if row is not None:
            rows.append(row)
    _add_history_maxima(rows)
    _check_select(select, seen_keys)
    columns = list(RUN_COLUMNS) + sorted(config_keys)
    frame = pd.DataFrame.from_records(rows, columns=None) if rows else pd.DataFrame(columns=columns)
    metric_columns = sorted(
        (name for name in frame.columns if name not in config_keys and name not in RUN_COLUMNS),
        key=lambda name: (_group(name), name),
    )
    frame = frame.reindex(columns=columns + metric_columns)
    for name in ("start", "end", "heartbeat"):
        frame[name] = pd.to_datetime(frame[name], utc=True, format="ISO8601", errors="coerce")
    return _report(frame, found, on_error, where)


def load_histories(
    where,
    metrics: str | list[str] | None = None,
    select: Select = None,
    *,
    cache: bool = True,
    on_error: str = "warn",
) -> pd.DataFrame:
    """All runs' per-epoch histories in one frame: run (categorical path), epoch, step, time, metrics.

    Histories are kept in a consolidated cache (see ginlab.analysis.cache); a run whose history.jsonl
    changed since it was cached is read again, the others come from the cache.

    Args:
        where: a folder to search, a glob, a list of those, or a frame with a run column (see find_runs).
        metrics: metric columns to keep (names or globs such as "val_*"); None keeps all.
        select: keep only runs whose config matches (see load_runs); configs are read before histories.
        cache: False reads every history.jsonl and leaves the cache alone.
        on_error: "warn", "raise" or "ignore" for unreadable runs (see load_runs).

    Raises:
        RunFolderError: `where` is a path that does not exist, or on_error="raise" and a run is unreadable.
        KeyError: a wanted metric is in no run's history, or `select` names a config value no run has.
    """
    found = find_runs(where)
    runs = _select_runs(found, select) if select is not None else found.runs
    store = HistoryCache(found.root) if cache else None
    try:
        table, wanted, counts = _read_histories(found, runs, store)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as error:  # e.g. a metric that is a number here, text there
        if store is not None:  # perhaps only against the cached rows: try once more without them
            return load_histories(where, metrics, select, cache=False, on_error=on_error)
        raise RunFolderError(f"the histories under {found.root} cannot be combined: {error}") from None
    frame = history_frame(_drop_empty_columns(table))
    frame = _keep_metrics(frame, metrics)
    codes = np.repeat(np.arange(len(wanted)), counts)
    frame.insert(0, "run", pd.Categorical.from_codes(codes, categories=pd.Index(wanted)))
    return _report(frame, found, on_error, where)


def _read_histories(found: Found, runs: list[str], store: HistoryCache | None):
    """The wanted runs' history rows (one run after the other), those runs, and their numbers of rows.

    Rows come from the cache where a run's history.jsonl is unchanged, else from the file; runs that
    cannot be read are added to found.problems and left out. The cache is updated when anything was read.
    """
    relative = [found.name(run) for run in runs]
    keys = [file_key(os.path.join(run, "history.jsonl")) for run in runs]
    cached_table, entries = store.load() if store else (None, {})
    fresh = [
        i
        for i, (name, key) in enumerate(zip(relative, keys, strict=True))
        if entries.get(name, [])[:2] != list(key)
    ]
    readable = [i for i in fresh if _check_meta(runs[i], found)]
    paths = [os.path.join(runs[i], "history.jsonl") for i in readable]
    tables = jsonl.read_tables(paths)
    for i, path in zip(readable, paths, strict=True):
        if path in tables.errors:
            found.problems[runs[i]] = tables.errors[path]
    fresh_rows = dict(zip(readable, _starts_and_counts(tables.counts), strict=True))

    # Where each wanted run's rows are in `combined`: the cached rows, then the fresh ones.
    combined = _concat([cached_table, tables.table])
    offset = cached_table.num_rows if cached_table is not None else 0
    wanted, starts, counts = [], [], []
    for i, name in enumerate(relative):
        if runs[i] in found.problems:
            continue
        start, count = (
            (fresh_rows[i][0] + offset, fresh_rows[i][1]) if i in fresh_rows else entries[name][2:4]
        )
        wanted.append(i)
        starts.append(start)
        counts.append(count)
    table = _take(combined, starts, counts)
    if store is not None and fresh:
        _update_cache(store, table, [relative[i] for i in wanted], [keys[i] for i in wanted], counts,
                      combined, entries, set(relative))  # fmt: skip
    return table, [runs[i] for i in wanted], counts


def _run_row(run, found: Found, select, now, stale_after, config_keys, seen_keys) -> dict | None:
    meta = load_meta(run)
    config = load_config(run) or {}
    seen_keys.update(config)
    if select is not None and not _matches(config, select):
        return None
    config_keys.update(dict.fromkeys(config))
    summary = load_summary(run) or {}
    # A run that ended has its progress in summary.json; only a running one (or one resumed after its
    # summary was written) needs the tail of its history.
    ended = summary and meta.get("status") != "running" and "epochs" in summary
    last = None if ended else jsonl.read_last_record(os.path.join(run, "history.jsonl"))
    status = effective_status(meta, now, stale_after)
    start, end, beat = (parse_time(meta.get(name)) for name in ("started", "ended", "heartbeat"))
    until = end or (now if status == "running" else beat)
    error = meta.get("error") if isinstance(meta.get("error"), dict) else None
    row = {
        "run": run,
        "name": found.name(run),
        "status": status,
        "epochs": last["epoch"] + 1
        if last and isinstance(last.get("epoch"), int)
        else summary.get("epochs", 0),
        "steps": last.get("step") if last else summary.get("steps"),
        "time": last.get("time") if last else summary.get("time"),
        "start": meta.get("started"),
        "end": meta.get("ended"),
        "heartbeat": meta.get("heartbeat"),
        "duration": (until - start).total_seconds() if start and until else None,
        "host": meta.get("host"),
        "reloads": len(meta.get("reloads") or []),
        "error": f"{error.get('type')}: {error.get('message')}" if error else None,
    }
    row.update(config)
    monitor = summary.get("monitor") or {}
    row["monitor"], row["mode"] = monitor.get("metric"), monitor.get("mode")
    final = summary.get("final") or ({k: v for k, v in last.items() if k != "time"} if last else {})
    for group, values in (("final", final), ("best", summary.get("best")), ("test", summary.get("test"))):
        for name, value in (values or {}).items():
            row[f"{group}/{name}"] = value
    if ended:  # the run's maxima are in its summary (none from a ginlab before telemetry)
        row.update({f"max/{name}": value for name, value in (summary.get("max") or {}).items()})
    else:
        row[_NEEDS_MAXIMA] = True
    for stem, evaluation in load_evaluations(run).items():
        for name, value in (evaluation.get("metrics") or {}).items():
            row[f"eval/{stem}/{name}"] = value
    return row


_NEEDS_MAXIMA = "_history_maxima"  # a row whose max/ columns come from its history (no summary yet)


def _add_history_maxima(rows: list[dict]) -> None:
    """max/sys_* of the runs without a summary, from their whole histories (read together, in one pass)."""
    wanted = [row for row in rows if row.pop(_NEEDS_MAXIMA, False)]
    if not wanted:
        return
    paths = [os.path.join(row["run"], "history.jsonl") for row in wanted]
    tables = jsonl.read_tables(paths)
    columns = [name for name in tables.table.column_names if name.startswith(TELEMETRY_PREFIX)]
    if not columns:
        return
    start = 0
    values = {name: tables.table.column(name).to_pylist() for name in columns}
    for row, count in zip(wanted, tables.counts, strict=True):  # a damaged file has 0 rows: no maxima
        history = [{name: values[name][i] for name in columns} for i in range(start, start + count)]
        row.update({f"max/{name}": value for name, value in telemetry_maxima(history).items()})
        start += count


def _group(column: str) -> int:
    for index, prefix in enumerate(METRIC_GROUPS):
        if column == prefix or column.startswith(prefix):
            return index
    return len(METRIC_GROUPS)


def _matches(config: dict[str, Any], select) -> bool:
    if callable(select):
        try:
            return bool(select(config))
        except KeyError:
            return False
    for key, wanted in select.items():
        if key not in config:
            return False
        value = config[key]
        if isinstance(wanted, (set, frozenset)):
            if not any(value == option for option in wanted):
                return False
        elif callable(wanted):
            if not wanted(value):
                return False
        elif value != wanted:
            return False
    return True


def _check_select(select, seen_keys: set[str]) -> None:
    if not isinstance(select, Mapping) or not seen_keys:
        return
    for key in select:
        if key not in seen_keys:
            close = difflib.get_close_matches(key, seen_keys, n=3)
            hint = f"; close names: {', '.join(close)}" if close else ""
            raise KeyError(f"select names {key!r}, which no run's config has{hint}")


def _select_runs(found: Found, select) -> list[str]:
    runs, seen_keys = [], set()
    for run in found.runs:
        try:
            config = load_config(run) or {}
        except (RunFolderError, OSError) as error:
            found.problems[run] = _message(run, error)
            continue
        seen_keys.update(config)
        if _matches(config, select):
            runs.append(run)
    _check_select(select, seen_keys)
    return runs


def _check_meta(run: str, found: Found) -> bool:
    try:
        load_meta(run)
    except (RunFolderError, OSError) as error:
        found.problems[run] = _message(run, error)
        return False
    return True


def _starts_and_counts(counts: list[int]) -> list[tuple[int, int]]:
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]) if counts else []
    return [(int(start), count) for start, count in zip(starts, counts, strict=True)]


def _concat(tables: list[pa.Table | None]) -> pa.Table:
    tables = [table for table in tables if table is not None and table.num_columns]
    if not tables:
        return pa.table({})
    if len(tables) == 1:
        return tables[0]
    return pa.concat_tables(tables, promote_options="permissive")


def _take(table: pa.Table, starts: list[int], counts: list[int]) -> pa.Table:
    """The rows starts[i] .. starts[i] + counts[i] of every i, in that order."""
    total = int(sum(counts))
    if total == table.num_rows and _contiguous(starts, counts):
        return table
    counts_array = np.asarray(counts, dtype=np.int64)
    out_starts = np.cumsum(counts_array) - counts_array
    indices = np.arange(total, dtype=np.int64) + np.repeat(
        np.asarray(starts, dtype=np.int64) - out_starts, counts_array
    )
    return table.take(pa.array(indices))


def _contiguous(starts: list[int], counts: list[int]) -> bool:
    position = 0
    for start, count in zip(starts, counts, strict=True):
        if count and start != position:
            return False
        position += count
    return True


def _update_cache(store, table, names, keys, counts, combined, entries, wanted_names) -> None:
    """Save the wanted runs' rows, and the cached rows of other runs under the root that still exist."""
    new_entries, position = {}, 0
    for name, key, count in zip(names, keys, counts, strict=True):
        new_entries[name] = [key[0], key[1], position, count]
        position += count
    kept_starts, kept_counts = [], []
    for name, (size, mtime, start, count) in entries.items():
        if name not in wanted_names and os.path.isdir(os.path.join(store.root, name)):
            new_entries[name] = [size, mtime, position, count]
            kept_starts.append(start)
            kept_counts.append(count)
            position += count
    if kept_counts:
        table = _concat([table, _take(combined, kept_starts, kept_counts)])
    store.save(table, new_entries)


def _drop_empty_columns(table: pa.Table) -> pa.Table:
    """Drop the metric columns that only other runs of the cache have (no value at all in these rows)."""
    if not table.num_rows:
        return table
    empty = [name for name in table.column_names if table.column(name).null_count == table.num_rows]
    return table.drop_columns([name for name in empty if name not in HISTORY_INDEX])


def _keep_metrics(frame: pd.DataFrame, metrics) -> pd.DataFrame:
    if metrics is None:
        return frame
    patterns = [metrics] if isinstance(metrics, str) else list(metrics)
    available = [name for name in frame.columns if name not in HISTORY_INDEX]
    kept = []
    for pattern in patterns:
        matched = [name for name in available if fnmatch.fnmatchcase(name, pattern)]
        if not matched and len(frame):
            raise KeyError(
                f"metric {pattern!r} is in no run's history; the histories have: {', '.join(available)}"
            )
        kept += [name for name in matched if name not in kept]
    return frame[[name for name in HISTORY_INDEX if name in frame.columns] + kept]


def _message(run: str, error: Exception) -> str:
    text = str(error)
    return text if text.startswith(run) else f"{run}: {text}"


def _report(frame: pd.DataFrame, found: Found, on_error: str, where) -> pd.DataFrame:
    problems = found.problems
    frame.attrs["unreadable"] = dict(problems)
    if not found.runs and not problems and isinstance(where, (str, os.PathLike)):
        warnings.warn(
            f"no run folders (folders with a meta.json) found in {os.fspath(where)!r}", stacklevel=3
        )
    if not problems or on_error == "ignore":
        return frame
    listed = list(problems.values())[:MAX_LISTED]
    more = f"\n  ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
    message = (
        f"{len(problems)} run folder(s) could not be read and were left out:\n  " + "\n  ".join(listed) + more
    )
    if on_error == "raise":
        raise RunFolderError(message)
    warnings.warn(UnreadableRunsWarning(message), stacklevel=3)
    return frame
