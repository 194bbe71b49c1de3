"""Per-epoch histories for the curves, read with ginlab.analysis.load_histories when they are asked for.

A few hundred runs are read straight from their history.jsonl files (`cache=False`): 50 runs take about
40 ms, always current (a running run's newest epoch included) and the board holds nothing in memory. More
runs than that (a group averaged over thousands of seeds) go through the analysis layer's consolidated
parquet cache in `.ginlab-cache/` (docs/analysis.md), which reads them in one file and keeps itself current.
Holding every history in memory instead would cost about 600 MB at 20,000 runs x 100 epochs.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pandas as pd

from ginlab.analysis import load_histories

logger = logging.getLogger(__name__)

INDEX = ("epoch", "step", "time")
# Up to this many runs are read from their files; more go through the analysis layer's cache.
DIRECT_LIMIT = 400


def read_histories(paths: dict[str, str], metric: str | None = None) -> dict[str, dict[str, np.ndarray]]:
    """The histories of these runs (name -> folder): name -> {column: values}; unreadable runs left out.

    Args:
        paths: run names and their folders.
        metric: keep only this metric (and epoch, step, time); None keeps all.
    """
    if not paths:
        return {}
    direct = len(paths) <= DIRECT_LIMIT
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            frame = load_histories(list(paths.values()), cache=not direct, on_error="ignore")
        except (OSError, ValueError) as error:  # RunFolderError is a ValueError
            logger.info("cannot read the histories of %d runs: %s", len(paths), error)
            return {}
    columns = [c for c in frame.columns if c != "run" and (metric is None or c in (*INDEX, metric))]
    arrays = {c: pd.to_numeric(frame[c], errors="coerce").astype("float64").to_numpy() for c in columns}
    codes = frame["run"].cat.codes.to_numpy()  # the rows come run after run
    positions = np.arange(len(frame["run"].cat.categories))
    starts, stops = np.searchsorted(codes, positions), np.searchsorted(codes, positions, side="right")
    by_path = {path: name for name, path in paths.items()}
    return {
        by_path.get(path, path): {c: values[start:stop] for c, values in arrays.items()}
        for path, start, stop in zip(frame["run"].cat.categories, starts, stops, strict=True)
        if stop > start
    }


def metric_names(histories: dict[str, dict[str, np.ndarray]]) -> list[str]:
    """The metric columns these histories have values for."""
    names: dict[str, None] = {}
    for columns in histories.values():
        names.update(dict.fromkeys(c for c, v in columns.items() if c not in INDEX and np.isfinite(v).any()))
    return list(names)


def curve(columns: dict[str, np.ndarray], metric: str, x: str) -> tuple[list, list]:
    """(x values, metric values) of one run; epochs without the metric are left out."""
    if metric not in columns or x not in columns:
        return [], []
    keep = np.isfinite(columns[metric]) & np.isfinite(columns[x])
    return columns[x][keep].tolist(), columns[metric][keep].tolist()


def band(histories: list[dict[str, np.ndarray]], metric: str, x: str) -> dict:
    """Mean, std and number of runs at each epoch over these runs (x: the runs' mean x at that epoch)."""
    parts = [columns for columns in histories if metric in columns and x in columns]
    if not parts:
        return {"x": [], "y": [], "std": [], "n": []}
    both = pd.DataFrame(
        {name: np.concatenate([p[name] for p in parts]) for name in dict.fromkeys(["epoch", x, metric])}
    )
    both = both[np.isfinite(both[metric])]
    grouped = both.groupby("epoch", sort=True)
    stats = grouped[metric].agg(["mean", "std", "count"])
    xs = grouped[x].mean() if x != "epoch" else stats.index.to_series()
    return {
        "x": numbers(xs),
        "y": numbers(stats["mean"]),
        "std": numbers(stats["std"].fillna(0.0)),
        "n": [int(v) for v in stats["count"]],
    }


def numbers(series: pd.Series) -> list:
    """Plain floats for JSON, None where a value is missing or not finite."""
    values = pd.to_numeric(series, errors="coerce").astype("float64").to_numpy()
    return [float(v) if np.isfinite(v) else None for v in values]
