"""The runs table behind bin/runs.py: one row per run with its status, progress, best metric and age.

    table = runs_table("results/sweep", sort="best", statuses=["running", "stale"])
    table.frame                 # load_runs' columns + progress, best, age; filtered, sorted and cut
    table.metric, table.mode    # the metric whose best value `best` is, and whether min or max is better

Statuses are load_runs' (ginlab.runfolder.run_status, the one rule): a run whose process died on this host is
"stale" at once; "diverged" and "pruned" are shown as such.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections import Counter
from datetime import UTC, datetime

import pandas as pd

from ginlab.analysis.many import load_histories, load_runs
from ginlab.runfolder.format import STALE, STATUSES

SORT_KEYS = ("name", "status", "progress", "best", "age")
N_EPOCHS = "training_loop.n_epochs"


@dataclasses.dataclass
class RunsTable:
    """The table: `frame` (one row per run shown), the metric of its `best` column and the runs left out.

    Args:
        frame: load_runs' columns plus `progress` (finished epochs / training_loop.n_epochs), `best` (the best
            value of `metric` so far) and `age` (seconds since the run last showed life).
        metric: the metric `best` is the best value of (None when no run has one).
        mode: "min" or "max": which value of `metric` is best.
        unreadable: {path: reason} of the folders that look like runs but could not be read.
    """

    frame: pd.DataFrame
    metric: str | None
    mode: str | None
    unreadable: dict[str, str]

    def counts(self) -> dict[str, int]:
        """{status: number of runs shown}, sorted by status."""
        return dict(sorted(Counter(self.frame["status"]).items()))


def runs_table(
    where,
    *,
    select: dict | None = None,
    statuses: list[str] | None = None,
    metric: str | None = None,
    mode: str | None = None,
    sort: str = "name",
    reverse: bool = False,
    limit: int | None = None,
) -> RunsTable:
    """The runs under `where` as bin/runs.py shows them.

    Args:
        where: what load_runs takes: a folder, a run folder, a glob, or a list of those.
        select: keep only runs whose config matches (load_runs' select; see parse_filters).
        statuses: keep only runs with one of these statuses.
        metric: the metric whose best value is shown (default: the one most runs monitor).
        mode: "min" or "max" for `metric` (default: what the runs monitor it with, else "min" for a loss).
        sort: one of SORT_KEYS; "best" puts the best first, "age" the most recently active first.
        reverse: reverse the order.
        limit: keep at most this many runs (after sorting).

    Raises:
        RunFolderError: `where` is a single path that does not exist.
        KeyError: `select` names a config value that no run has (the message suggests close names).
        ValueError: an unknown status, sort key or mode.
    """
    unknown = sorted(set(statuses or ()) - set(STATUSES))
    if unknown:
        raise ValueError(f"unknown status {', '.join(unknown)}; statuses are {', '.join(STATUSES)}")
    if sort not in SORT_KEYS:
        raise ValueError(f"unknown sort key {sort!r}; sort by one of {', '.join(SORT_KEYS)}")
    if mode not in (None, "min", "max"):
        raise ValueError(f"mode {mode!r}: expected 'min' or 'max'")
    runs = load_runs(where, select=select, on_error="ignore")
    unreadable = dict(runs.attrs["unreadable"])
    metric, mode = monitored_metric(runs, metric, mode)
    if statuses:
        runs = runs[runs["status"].isin(statuses)]
    total = runs[N_EPOCHS] if N_EPOCHS in runs else pd.Series(float("nan"), index=runs.index)
    runs = runs.assign(
        best=best_values(runs, metric, mode),
        age=age_seconds(runs),
        progress=runs["epochs"] / pd.to_numeric(total, errors="coerce"),
    )
    ascending = sort not in ("best", "progress") or (sort == "best" and mode == "min")
    runs = runs.sort_values(sort, ascending=ascending != reverse, na_position="last", kind="stable")
    if limit:
        runs = runs.head(limit)
    return RunsTable(runs, metric, mode, unreadable)


def parse_filters(filters: list[str]) -> dict:
    """["Adam.lr=0.001", "Adam.lr=0.01"] -> load_runs' select; values are JSON, else plain strings.

    A name given more than once means "any of these values".

    Raises:
        ValueError: a filter that is not NAME=VALUE.
    """
    select: dict[str, list] = {}
    for text in filters:
        name, separator, value = text.partition("=")
        if not separator or not name.strip():
            raise ValueError(f"a filter is NAME=VALUE, like Adam.lr=0.001, not {text!r}")
        with contextlib.suppress(ValueError):
            value = json.loads(value)
        select.setdefault(name.strip(), []).append(value)
    return {
        name: values[0] if len(values) == 1 else (lambda value, options=tuple(values): value in options)
        for name, values in select.items()
    }


def monitored_metric(
    runs: pd.DataFrame, metric: str | None, mode: str | None
) -> tuple[str | None, str | None]:
    """The metric to show the best of: `metric`, else the one most runs monitor; and "min" or "max".

    Each run's monitor is paired with its own mode (runs without a monitor, e.g. still running, count for
    nothing).
    """
    monitored = runs.loc[runs["monitor"].notna(), ["monitor", "mode"]] if len(runs) else runs
    monitors = Counter(
        (name, run_mode if isinstance(run_mode, str) else "")
        for name, run_mode in zip(monitored.get("monitor", []), monitored.get("mode", []), strict=True)
    )
    if metric is None and monitors:
        (metric, common_mode), _ = monitors.most_common(1)[0]
        mode = mode or common_mode or None
    if metric is not None and mode is None:
        known = [m for (name, m) in monitors if name == metric and m]
        mode = known[0] if known else ("min" if "loss" in metric else "max")
    return metric, mode


def best_values(runs: pd.DataFrame, metric: str | None, mode: str | None) -> pd.Series:
    """Best value of the metric per run: summary.json's when it monitors that metric, else the history's."""
    best = pd.Series(float("nan"), index=runs.index)
    if metric is None or runs.empty:
        return best
    if f"best/{metric}" in runs:
        best = runs[f"best/{metric}"].where(runs["monitor"] == metric).astype(float)
    missing = runs[best.isna() & (runs["epochs"] > 0)]
    if len(missing):
        try:
            histories = load_histories(missing, metrics=metric, on_error="ignore")
        except KeyError:  # no run has logged this metric
            return best
        per_run = histories.groupby("run", observed=True)[metric].agg(mode)
        best = best.fillna(missing["run"].map(per_run).astype(float))
    return best


def age_seconds(runs: pd.DataFrame) -> pd.Series:
    """Seconds since each run last showed life: its last heartbeat while running (or stale), else its end."""
    now = pd.Timestamp(datetime.now(UTC))
    active = runs["status"].isin(["running", STALE])
    last = runs["heartbeat"].where(active, runs["end"].fillna(runs["heartbeat"]))
    return (now - last).dt.total_seconds()
