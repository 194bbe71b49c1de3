"""A view of the runs table: filter (text, status, expression, experiment), sort, group, page.

A view is what the page's URL holds (see docs/board.md): `q` text to find in any text column, `status`
(comma-separated), `expr` (see ginlab.board.expression), `exp` (an experiment: its runs only), `sort`
(`column:asc,column:desc`), `group` (comma-separated config keys). Grouped, each row is one combination of
the keys' values with `n` (runs in it), the runs' statuses and, for every numeric metric, the mean and the
standard deviation over the group's runs (`<metric> std`): the spread over seeds when the keys are every
config value but the seed.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ginlab.board.expression import ExpressionError, filter_mask
from ginlab.board.paths import BoardError

# Numeric columns that are averaged over a group besides the metrics (columns with "/").
AVERAGED = ("epochs", "steps", "time", "duration", "progress")
HIDDEN = ("run", "_signature")


@dataclass
class View:
    """The rows the page asks for; parsed from the request's query parameters."""

    text: str = ""
    status: list[str] = field(default_factory=list)
    expression: str = ""
    experiment: str = ""
    sort: list[tuple[str, bool]] = field(default_factory=list)  # (column, ascending)
    group: list[str] = field(default_factory=list)

    @classmethod
    def from_params(cls, params) -> View:
        """From a mapping of query parameters (q, status, expr, exp, sort, group)."""
        sort = []
        for part in _split(params.get("sort", "")):
            column, _, direction = (
                part.rpartition(":") if part.endswith((":asc", ":desc")) else (part, "", "asc")
            )
            sort.append((column, direction != "desc"))
        return cls(
            text=params.get("q", "").strip(),
            status=_split(params.get("status", "")),
            expression=params.get("expr", "").strip(),
            experiment=params.get("exp", "").strip(),
            sort=sort,
            group=_split(params.get("group", "")),
        )


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def select_runs(frame: pd.DataFrame, view: View, experiment_runs: set[str] | None = None) -> pd.DataFrame:
    """The runs of the view, with an `age` column (seconds since the last heartbeat or the end).

    Args:
        frame: the runs table.
        view: the filters.
        experiment_runs: the run names of view.experiment (None when no experiment is chosen).

    Raises:
        ExpressionError: the expression cannot be evaluated.
    """
    frame = with_age(frame)
    return frame[runs_mask(frame, view, experiment_runs)]


def page_of_runs(
    frame: pd.DataFrame, view: View, experiment_runs: set[str] | None, start: int, end: int
) -> tuple[int, pd.DataFrame]:
    """(number of runs in the view, its rows start..end, sorted, with `age`).

    Only the filter's and the sort's columns are touched for all runs; the other columns only for the rows
    sent (at 20,000 runs, copying every column of every run would cost more than the sort itself).

    Raises:
        ExpressionError: the expression cannot be evaluated.
        BoardError: a sort column that the table does not have.
    """
    needs_age = "age" in view.expression or any(column == "age" for column, _ in view.sort)
    base = with_age(frame) if needs_age else frame
    mask = runs_mask(base, view, experiment_runs)
    columns = [column for column, _ in view.sort if column]
    if columns:
        for column in columns:
            if column not in base.columns:
                raise BoardError(f"cannot sort by {column!r}: the table has no such column")
        order = sort_rows(base.loc[mask, list(dict.fromkeys(columns))], view.sort).index
    else:
        order = base.index[mask]
    return len(order), with_age(frame.loc[order[start:end]])


def runs_mask(frame: pd.DataFrame, view: View, experiment_runs: set[str] | None = None) -> np.ndarray:
    """Which rows of `frame` the view's filters keep."""
    mask = np.ones(len(frame), dtype=bool)
    if view.status:
        mask &= frame["status"].isin(view.status).to_numpy()
    if experiment_runs is not None:
        mask &= frame.index.isin(list(experiment_runs))
    for word in view.text.lower().split():
        found = np.zeros(len(frame), dtype=bool)
        for column in text_columns(frame):
            found |= frame[column].str.lower().str.contains(word, regex=False).fillna(False).to_numpy(bool)
        mask &= found
    if view.expression:
        mask &= filter_mask(frame, view.expression).to_numpy()
    return mask


def with_age(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with `age`: seconds since the last heartbeat (running, stale) or the end."""
    if not len(frame):
        return frame.assign(age=pd.Series(dtype="float64"))
    now = pd.Timestamp.now(tz="UTC")
    live = frame["status"].isin(["running", "stale"])
    last = frame["heartbeat"].where(live, frame["end"].fillna(frame["heartbeat"]))
    return frame.assign(age=(now - last).dt.total_seconds())


def text_columns(frame: pd.DataFrame) -> list[str]:
    return [
        column
        for column in frame.columns
        if column not in HIDDEN and str(frame[column].dtype) in ("str", "string", "object")
    ]


def sort_rows(frame: pd.DataFrame, sort: list[tuple[str, bool]]) -> pd.DataFrame:
    """Sorted by the columns in order (missing values last); by name when nothing is asked.

    Raises:
        BoardError: a sort column that the table does not have.
    """
    wanted = [(column, ascending) for column, ascending in sort if column]
    for column, _ in wanted:
        if column not in frame.columns:
            raise BoardError(f"cannot sort by {column!r}: the table has no such column")
    if not wanted:
        return frame
    return frame.sort_values(
        [column for column, _ in wanted],
        ascending=[ascending for _, ascending in wanted],
        na_position="last",
        kind="stable",
    )


def group_rows(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """One row per combination of the keys' values: n, statuses, mean and std of every numeric metric.

    Raises:
        BoardError: a key the table does not have.
    """
    for key in keys:
        if key not in frame.columns:
            raise BoardError(f"cannot group by {key!r}: the table has no such column")
    numeric = [
        column
        for column in frame.columns
        if ("/" in column or column in AVERAGED)
        and column not in keys
        and pd.api.types.is_numeric_dtype(frame[column])
    ]
    if not len(frame):
        return pd.DataFrame(columns=[*keys, "n", "statuses", "_key"])
    grouped = frame.groupby(keys, dropna=False, sort=False)
    means = grouped[numeric].mean()
    stds = grouped[numeric].std().add_suffix(" std")
    counts = grouped.size().rename("n")
    result = pd.concat([counts, means, stds], axis=1)
    by_status = frame.groupby([*keys, "status"], dropna=False, sort=False).size()
    texts: dict = {}
    for index, count in by_status.items():
        *key, status = index if isinstance(index, tuple) else (index,)
        group_key = tuple(key) if len(key) > 1 else key[0]
        texts.setdefault(group_key, []).append(f"{count} {status}")
    result["statuses"] = [
        ", ".join(sorted(texts.get(index, []), key=lambda t: -int(t.split()[0]))) for index in result.index
    ]
    result = result.reset_index()
    result["_key"] = [
        json.dumps([json_value(value) for value in row]) for row in result[keys].itertuples(index=False)
    ]
    return result


def group_members(frame: pd.DataFrame, keys: list[str], key: list) -> pd.DataFrame:
    """The rows of `frame` in the group whose key values are `key` (JSON values, None for missing)."""
    mask = np.ones(len(frame), dtype=bool)
    for column, value in zip(keys, key, strict=False):
        series = frame[column]
        mask &= (series.isna() if value is None else series == _as_column_type(value, series)).to_numpy(bool)
    return frame[mask]


def _as_column_type(value, series: pd.Series):
    if pd.api.types.is_numeric_dtype(series) and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def json_value(value):
    """A value as JSON can hold it: None for missing, ISO text for times, plain numbers."""
    if value is None or value is pd.NaT:
        return None
    if isinstance(value, (float, np.floating)):
        return None if math.isnan(value) or math.isinf(value) else float(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.bool_,)):
        return bool(value)
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if isinstance(value, (int, str, bool)):
        return value
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return str(value)


def rows_json(frame: pd.DataFrame, columns: list[str] | None = None) -> list[dict]:
    """The rows as JSON-ready dicts (only `columns` when given; internal columns left out)."""
    names = [
        c
        for c in (columns if columns is not None else frame.columns)
        if c in frame.columns and c not in HIDDEN
    ]
    values = [frame[name].tolist() for name in names]
    return [
        {name: json_value(column[i]) for name, column in zip(names, values, strict=True)}
        for i in range(len(frame))
    ]


__all__ = [
    "ExpressionError",
    "View",
    "group_members",
    "group_rows",
    "json_value",
    "rows_json",
    "select_runs",
    "sort_rows",
    "with_age",
]
