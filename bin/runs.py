#!/usr/bin/env python3
"""`ls` for runs: a table of each run's status, progress, best metric and age.

    bin/runs.py results/sweep                     # every run under results/sweep, by name
    bin/runs.py results -s age --status running   # what is running now, most recently active first
    bin/runs.py results -f Adam.lr=0.001 -c cnn.dropout --metric val_loss

The best metric is the one the runs monitor (summary.json), or --metric; runs that have not finished yet get
it from their history so far. Status "stale" means the run says it is running but its heartbeat stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections import Counter
from datetime import UTC, datetime

import pandas as pd
from rich.console import Console
from rich.table import Table
from rich.text import Text

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))
from ginlab.analysis import RunFolderError, load_histories, load_runs  # noqa: E402

STATUS_STYLES = {
    "running": "green",
    "stale": "yellow",
    "finished": "blue",
    "failed": "red",
    "interrupted": "magenta",
}
SORT_KEYS = ("name", "status", "progress", "best", "age")


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    console = Console(width=None if sys.stdout.isatty() else int(os.environ.get("COLUMNS", "160")))
    try:
        where = args.folders[0] if len(args.folders) == 1 else args.folders
        runs = load_runs(where, select=parse_filters(args.filter) or None, on_error="ignore")
    except (RunFolderError, KeyError) as error:
        print(f"runs.py: {error.args[0] if isinstance(error, KeyError) else error}", file=sys.stderr)
        return 2
    unreadable = runs.attrs["unreadable"]
    metric, mode = monitored_metric(runs, args.metric, args.mode)
    if args.status:
        wanted = args.status.split(",")
        unknown = sorted(set(wanted) - set(STATUS_STYLES))
        if unknown:
            print(
                f"runs.py: unknown status {', '.join(unknown)}; statuses are {', '.join(STATUS_STYLES)}",
                file=sys.stderr,
            )
            return 2
        runs = runs[runs["status"].isin(wanted)]
    runs = runs.assign(
        best=best_values(runs, metric, mode),
        age=age_seconds(runs),
        progress=runs["epochs"]
        / runs.get("training_loop.n_epochs", pd.Series(float("nan"), index=runs.index)),
    )
    ascending = args.sort not in ("best", "progress") or (args.sort == "best" and mode == "min")
    runs = runs.sort_values(args.sort, ascending=ascending != args.reverse, na_position="last", kind="stable")
    if args.limit:
        runs = runs.head(args.limit)

    console.print(build_table(runs, metric, mode, args.columns))
    console.print(summary_line(runs, unreadable))
    for reason in list(unreadable.values())[:5]:
        console.print(Text(f"  unreadable: {reason}", style="yellow"))
    return 0


def parse_arguments(argv):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("folders", nargs="*", metavar="FOLDER",
                        default=[os.environ.get("RESULTS_DIR", "results")],
                        help="run folders, folders of runs or globs "
                             "(default: $RESULTS_DIR or ./results)")  # fmt: skip
    parser.add_argument("-s", "--sort", choices=SORT_KEYS, default="name",
                        help="sort by this column "
                             "(default name; best puts the best first, age the newest)")  # fmt: skip
    parser.add_argument("-r", "--reverse", action="store_true", help="reverse the order")
    parser.add_argument("--status", help="only runs with these statuses, e.g. running,stale")
    parser.add_argument("-f", "--filter", action="append", default=[], metavar="NAME=VALUE",
                        help="only runs whose config has this value, e.g. Adam.lr=0.001 "
                             "(repeat a NAME for 'any of')")  # fmt: skip
    parser.add_argument("-c", "--column", dest="columns", action="append", default=[], metavar="NAME",
                        help="also show this config value or load_runs column, "
                             "e.g. cnn.dropout or test/test_acc")  # fmt: skip
    parser.add_argument("--metric", help="the metric whose best value is shown (default: the monitored one)")
    parser.add_argument(
        "--mode", choices=("min", "max"), help="whether lower or higher is better for --metric"
    )
    parser.add_argument("-n", "--limit", type=int, help="show at most this many runs")
    return parser.parse_args(argv)


def parse_filters(filters: list[str]) -> dict:
    """["Adam.lr=0.001", "Adam.lr=0.01"] -> select for load_runs; values are JSON or else plain strings."""
    select: dict[str, list] = {}
    for text in filters:
        name, separator, value = text.partition("=")
        if not separator:
            raise SystemExit(f"runs.py: a filter is NAME=VALUE, like Adam.lr=0.001, not {text!r}")
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
    """The metric to show the best of: --metric, else the one most runs monitor; and min or max."""
    monitors = (
        Counter(zip(runs["monitor"].dropna(), runs["mode"].fillna(""), strict=False))
        if len(runs)
        else Counter()
    )
    if metric is None and monitors:
        metric, mode = monitors.most_common(1)[0][0][0], mode or monitors.most_common(1)[0][0][1] or None
    if metric is not None and mode is None:
        known = [m for (name, m) in monitors if name == metric and m]
        mode = known[0] if known else ("min" if "loss" in metric else "max")
    return metric, mode


def best_values(runs: pd.DataFrame, metric: str | None, mode: str | None) -> pd.Series:
    """Best value of the metric per run:
    summary.json's when it monitors that metric, else from the history."""
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
    """Seconds since each run last showed life: its last heartbeat while running, else its end."""
    now = pd.Timestamp(datetime.now(UTC))
    active = runs["status"].isin(["running", "stale"])
    last = runs["heartbeat"].where(active, runs["end"].fillna(runs["heartbeat"]))
    return (now - last).dt.total_seconds()


def build_table(runs: pd.DataFrame, metric: str | None, mode: str | None, columns: list[str]) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("run", overflow="fold")
    table.add_column("status")
    table.add_column("progress", justify="right")
    table.add_column(f"best {metric} ({mode})" if metric else "best", justify="right")
    table.add_column("age", justify="right")
    for name in columns:
        table.add_column(name, justify="right")
    for _, run in runs.iterrows():
        total = run.get("training_loop.n_epochs")
        progress = f"{run['epochs']}/{int(total)}" if pd.notna(total) else f"{run['epochs']}/?"
        cells = [
            run["name"],
            Text(run["status"], style=STATUS_STYLES.get(run["status"], "")),
            progress,
            format_value(run["best"]),
            format_age(run["age"]),
        ]
        cells += [format_value(run.get(name)) for name in columns]
        table.add_row(*cells)
    return table


def summary_line(runs: pd.DataFrame, unreadable: dict) -> Text:
    counts = Counter(runs["status"])
    text = Text(f"{len(runs)} run{'' if len(runs) == 1 else 's'}: ")
    text.append(", ".join(f"{count} {status}" for status, count in sorted(counts.items())) or "none")
    if unreadable:
        text.append(f"; {len(unreadable)} unreadable", style="yellow")
    return text


def format_value(value) -> str:
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value)
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def format_age(seconds: float) -> str:
    if pd.isna(seconds):
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}" if seconds >= 10 * size else f"{seconds / size:.1f}{unit}"
    return f"{max(seconds, 0):.0f}s"


if __name__ == "__main__":
    sys.exit(main())
