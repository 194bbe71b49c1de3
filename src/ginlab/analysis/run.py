"""Loaders for one run folder (docs/run-folder.md): its configuration, history and status.

    C = load_C("results/first_run")    # {"training_loop.n_epochs": 5, "Adam.lr": 0.001, ...}
    H = load_H("results/first_run")    # DataFrame: epoch, step, time, train_loss, val_loss, ...
    H, C = load_HC("results/first_run")

Nothing in the folder is executed and its lock is never taken: a run that is still being written reads
as far as it got.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from ginlab.analysis import jsonl
from ginlab.gin_reader import read_gin

# The run-folder format versions this reader understands (docs/run-folder.md, "Versions").
KNOWN_FORMAT_VERSIONS = (1,)
# A "running" run whose heartbeat is older than this died without saying so (docs/run-folder.md).
STALE_AFTER_SECONDS = 300.0
# The history columns that are not metrics, in the order they come first.
HISTORY_INDEX = ("epoch", "step", "time")
# Files whose presence marks a folder as a run folder that lost its meta.json.
RUN_FILES = ("meta.json", "config.json", "config.gin", "history.jsonl", "summary.json")

Run = str | os.PathLike


class RunFolderError(ValueError):
    """A folder cannot be read as a run folder; the message says which folder and what is wrong."""


def load_C(run: Run) -> dict[str, Any]:
    """The run's configuration: a flat dict of typed values keyed by gin names.

    Read from config.json, or parsed from config.gin (gin's operative config) when config.json is absent.

    Args:
        run: the run folder.

    Raises:
        RunFolderError: not a run folder, a format version this reader does not know, or no readable config.
    """
    run = Path(run)
    load_meta(run)
    config = load_config(run)
    if config is None:
        raise RunFolderError(
            f"{run}: has neither config.json nor config.gin, so its configuration is unknown"
        )
    return config


def load_H(run: Run) -> pd.DataFrame:
    """The run's per-epoch history: columns epoch, step, time, then one per metric.

    A last line that is incomplete (the run is still writing it, or died mid-write) is left out. A run
    that has not finished an epoch yet gives an empty frame.

    Args:
        run: the run folder.

    Raises:
        RunFolderError: not a run folder, a format version this reader does not know, or a damaged line
            before the last one of history.jsonl.
    """
    load_meta(run)
    path = os.path.join(run, "history.jsonl")
    tables = jsonl.read_tables([path])
    if path in tables.errors:
        raise RunFolderError(tables.errors[path])
    return history_frame(tables.table)


def load_HC(run: Run) -> tuple[pd.DataFrame, dict[str, Any]]:
    """`(load_H(run), load_C(run))`."""
    return load_H(run), load_C(run)


def load_meta(run: Run) -> dict[str, Any]:
    """meta.json of a run folder, after checking that this reader knows its format version.

    Raises:
        RunFolderError: no such folder, no meta.json (the message lists what the folder holds instead),
            meta.json damaged, or a format version this reader does not know.
    """
    run = os.fspath(run)  # plain strings: this runs once per run in load_runs, where pathlib costs show
    try:
        meta = read_json(os.path.join(run, "meta.json"))
    except FileNotFoundError:
        raise RunFolderError(_why_not_a_run_folder(Path(run))) from None
    if not isinstance(meta, dict):
        raise RunFolderError(f"{run}: meta.json is not a JSON object")
    check_format_version(meta, run)
    return meta


def check_format_version(meta: dict[str, Any], run: Run) -> None:
    """Raise RunFolderError unless meta's format_version is one this reader knows."""
    version = meta.get("format_version")
    if version in KNOWN_FORMAT_VERSIONS and not isinstance(version, bool):
        return
    known = ", ".join(map(str, KNOWN_FORMAT_VERSIONS))
    if version is None:
        problem = "meta.json has no format_version (it was not written by a ginlab run-folder writer)"
    elif isinstance(version, int) and version > max(KNOWN_FORMAT_VERSIONS):
        problem = (
            f"run folder format_version {version} is newer than this ginlab reads ({known}); upgrade ginlab"
        )
    else:
        problem = f"unknown run folder format_version {version!r}"
    raise RunFolderError(f"{run}: {problem}. This ginlab reads format_version {known}.")


def load_config(run: Run) -> dict[str, Any] | None:
    """config.json, else config.gin parsed; None when the run has neither (yet)."""
    run = os.fspath(run)
    try:
        config = read_json(os.path.join(run, "config.json"))
    except FileNotFoundError:
        pass
    else:
        if not isinstance(config, dict):
            raise RunFolderError(f"{run}: config.json is not a JSON object")
        return config
    path = os.path.join(run, "config.gin")
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        return None
    try:
        return read_gin(text, path, mode="values")
    except ValueError as error:
        raise RunFolderError(str(error)) from None


def load_summary(run: Run) -> dict[str, Any] | None:
    """summary.json (final, best and test metrics); None until the run has ended."""
    try:
        summary = read_json(os.path.join(run, "summary.json"))
    except FileNotFoundError:
        return None
    if not isinstance(summary, dict):
        raise RunFolderError(f"{run}: summary.json is not a JSON object")
    return summary


def load_evaluations(run: Run) -> dict[str, dict[str, Any]]:
    """bin/evaluate.py results: {"best-test": {"checkpoint": "best", "split": "test", "metrics": {...}}}."""
    folder = os.path.join(run, "evaluations")
    try:
        names = sorted(entry.name for entry in os.scandir(folder) if entry.name.endswith(".json"))
    except (FileNotFoundError, NotADirectoryError):
        return {}
    evaluations = {}
    for name in names:
        try:
            record = read_json(os.path.join(folder, name))
        except FileNotFoundError:  # replaced between listing and reading
            continue
        if isinstance(record, dict):
            evaluations[name[: -len(".json")]] = record
    return evaluations


def effective_status(
    meta: dict[str, Any], now: datetime | None = None, stale_after: float = STALE_AFTER_SECONDS
) -> str:
    """The run's status as a reader should see it: "stale" for a running run whose heartbeat is old.

    Args:
        meta: the run's meta.json.
        now: the time to compare the heartbeat with (default: now).
        stale_after: seconds without heartbeat after which a running run is taken as dead.
    """
    status = meta.get("status")
    if status != "running":
        return status if isinstance(status, str) else "unknown"
    beat = parse_time(meta.get("heartbeat")) or parse_time(meta.get("started"))
    if beat is None:
        return "running"
    now = now or datetime.now(UTC)
    return "stale" if (now - beat).total_seconds() > stale_after else "running"


def parse_time(text: Any) -> datetime | None:
    """An ISO 8601 time as an aware datetime (UTC assumed when it names no zone); None if absent or bad."""
    if not isinstance(text, str):
        return None
    try:
        time = datetime.fromisoformat(text)
    except ValueError:
        return None
    return time if time.tzinfo else time.replace(tzinfo=UTC)


def read_json(path: str | os.PathLike) -> Any:
    """A JSON file's value.

    Raises:
        FileNotFoundError: the file does not exist.
        RunFolderError: it is not valid JSON (the files read with this are written atomically, so this is
            damage, not a write in progress).
    """
    with open(path, "rb") as f:
        data = f.read()
    try:
        return json.loads(data)
    except ValueError as error:
        raise RunFolderError(f"{path} is not valid JSON: {error}") from None


def history_frame(table: pa.Table) -> pd.DataFrame:
    """A history table as a DataFrame with epoch, step and time first and metrics in order of appearance."""
    names = [name for name in HISTORY_INDEX if name in table.column_names]
    names += [name for name in table.column_names if name not in HISTORY_INDEX]
    frame = table.select(names).to_pandas() if names else pd.DataFrame()
    for name, dtype in zip(HISTORY_INDEX, ("int64", "int64", "float64"), strict=True):
        if name not in frame.columns:
            frame.insert(
                HISTORY_INDEX.index(name), name, pd.Series([], dtype=dtype) if frame.empty else pd.NA
            )
    return frame


def _why_not_a_run_folder(run: Path) -> str:
    if not run.exists():
        return f"{run}: no such run folder"
    if not run.is_dir():
        return f"{run} is a file, not a run folder"
    present = [name for name in RUN_FILES if (run / name).exists()]
    if present:
        return f"{run} is not a readable run folder: meta.json is missing (it has {', '.join(present)})"
    inner = sorted(entry.name for entry in os.scandir(run) if (Path(entry.path) / "meta.json").is_file())
    if inner:
        example = ", ".join(inner[:3]) + (", ..." if len(inner) > 3 else "")
        return (
            f"{run} is not a run folder but holds {len(inner)} run folders ({example}): "
            "use load_runs() or load_histories() to read many runs"
        )
    return f"{run} is not a run folder: meta.json is missing (see docs/run-folder.md)"
