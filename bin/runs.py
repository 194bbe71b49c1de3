#!/usr/bin/env python3
"""`ls` for runs: a table of each run's status, progress, best metric and age.

    bin/runs.py results/sweep                     # every run under results/sweep, by name
    bin/runs.py results -s age --status running   # what is running now, most recently active first
    bin/runs.py results -f Adam.lr=0.001 -c cnn.dropout --metric val_loss

The best metric is the one the runs monitor (summary.json), or --metric; runs that have not finished yet get
it from their history so far. Status "stale" means the run says it is running but its process is gone (on
this host) or its heartbeat stopped (on another); "diverged" runs stopped on a NaN or infinite loss.
Exit codes: 0 listed; 2 a folder, filter, status or option that cannot be used (the message says why).
"""

from __future__ import annotations

import argparse
import json
import numbers
import os
import sys

from rich.console import Console
from rich.table import Table
from rich.text import Text

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))
from ginlab.analysis.runs_table import SORT_KEYS, RunsTable, parse_filters, runs_table  # noqa: E402
from ginlab.errors import RunFolderError  # noqa: E402

STATUS_STYLES = {
    "running": "green",
    "stale": "yellow",
    "finished": "blue",
    "failed": "red",
    "interrupted": "magenta",
    "diverged": "bold red",
    "pruned": "dim",
}
MISSING = "-"


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    console = Console(width=None if sys.stdout.isatty() else int(os.environ.get("COLUMNS", "160")))
    try:
        table = runs_table(
            args.folders[0] if len(args.folders) == 1 else args.folders,
            select=parse_filters(args.filter) or None,
            statuses=args.status.split(",") if args.status else None,
            metric=args.metric,
            mode=args.mode,
            sort=args.sort,
            reverse=args.reverse,
            limit=args.limit,
        )
    except (RunFolderError, KeyError, ValueError) as error:
        print(f"runs.py: {error.args[0] if isinstance(error, KeyError) else error}", file=sys.stderr)
        return 2
    console.print(build_table(table, args.columns))
    console.print(summary_line(table))
    for reason in list(table.unreadable.values())[:5]:
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


def build_table(runs: RunsTable, columns: list[str]) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("run", overflow="fold")
    table.add_column("status")
    table.add_column("progress", justify="right")
    table.add_column(f"best {runs.metric} ({runs.mode})" if runs.metric else "best", justify="right")
    table.add_column("age", justify="right")
    for name in columns:
        table.add_column(name, justify="right")
    for _, run in runs.frame.iterrows():
        total = run.get("training_loop.n_epochs")
        progress = f"{run['epochs']}/{int(total)}" if is_number(total) else f"{run['epochs']}/?"
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


def summary_line(runs: RunsTable) -> Text:
    count = len(runs.frame)
    text = Text(f"{count} run{'' if count == 1 else 's'}: ")
    text.append(", ".join(f"{n} {status}" for status, n in runs.counts().items()) or "none")
    if runs.unreadable:
        text.append(f"; {len(runs.unreadable)} unreadable", style="yellow")
    return text


def is_number(value) -> bool:
    """A real number that is not NaN (numpy's too: the frame's cells are numpy scalars)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and value == value  # NaN != NaN


def format_value(value) -> str:
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value)
    if value is None or (isinstance(value, float) and value != value):
        return MISSING
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def format_age(seconds: float) -> str:
    if not is_number(seconds):
        return MISSING
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}" if seconds >= 10 * size else f"{seconds / size:.1f}{unit}"
    return f"{max(seconds, 0):.0f}s"


if __name__ == "__main__":
    sys.exit(main())
