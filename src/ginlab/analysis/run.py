"""Loaders for one run folder (docs/run-folder.md): its configuration, history and status.

    C = load_C("results/first_run")    # {"training_loop.n_epochs": 5, "Adam.lr": 0.001, ...}
    H = load_H("results/first_run")    # DataFrame: epoch, step, time, train_loss, val_loss, ...
    H, C = load_HC("results/first_run")

Nothing in the folder is executed and its lock is never taken: a run that is still being written reads
as far as it got.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from ginlab.analysis import jsonl
from ginlab.config.reader import read_gin
from ginlab.errors import RunFolderError
from ginlab.runfolder import format as fmt
from ginlab.runfolder.read import read_config_json, read_evaluations, read_meta, read_summary
from ginlab.runfolder.status import run_status

# The history columns that are not metrics, in the order they come first.
HISTORY_INDEX = ("epoch", "step", "time")
STALE_AFTER_SECONDS = fmt.STALE_AFTER_SECONDS

Run = str | os.PathLike

# The one reader (ginlab.runfolder.read) under the names analysis scripts know.
load_meta = read_meta
load_summary = read_summary
load_evaluations = read_evaluations
effective_status = run_status

__all__ = [
    "RunFolderError",
    "effective_status",
    "history_frame",
    "load_C",
    "load_H",
    "load_HC",
    "load_config",
    "load_evaluations",
    "load_meta",
    "load_summary",
]


def load_C(run: Run) -> dict[str, Any]:
    """The run's configuration: a flat dict of typed values keyed by gin names, as the run used them.

    Read from config.json, or parsed from config.gin (gin's operative config) when config.json is absent;
    both give the same values (macros resolved, references as "@name" text).

    Args:
        run: the run folder.

    Raises:
        RunFolderError: not a run folder, a format version this reader does not know, or no readable config.
    """
    run = Path(run)
    read_meta(run)
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
    read_meta(run)
    path = os.path.join(run, fmt.HISTORY)
    tables = jsonl.read_tables([path])
    if path in tables.errors:
        raise RunFolderError(tables.errors[path])
    return history_frame(tables.table)


def load_HC(run: Run) -> tuple[pd.DataFrame, dict[str, Any]]:
    """`(load_H(run), load_C(run))`."""
    return load_H(run), load_C(run)


def load_config(run: Run) -> dict[str, Any] | None:
    """config.json, else config.gin parsed; None when the run has neither (yet)."""
    config = read_config_json(run)
    if config is not None:
        return config
    path = os.path.join(run, fmt.CONFIG_GIN)
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        return None
    try:
        return read_gin(text, path, mode="values")
    except ValueError as error:
        raise RunFolderError(str(error)) from None


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
