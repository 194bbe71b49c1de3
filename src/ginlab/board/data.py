"""The board's data: what each endpoint answers, from the runs table and the histories.

    board = Board("results")          # loads the cached table, if any
    board.start()                     # reads changed runs in the background, then follows live runs
    board.runs({"sort": "best/val_acc:desc"}, 0, 200)

Every answer is plain JSON-ready data; the server (ginlab.board.server) only routes to these methods, and
the static export (ginlab.board.export) calls the same ones.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import Counter
from typing import Any

import pandas as pd

from ginlab.board import experiments as experiment_pages
from ginlab.board.first_view import ROWS as FIRST_VIEW_ROWS
from ginlab.board.first_view import save_first_view
from ginlab.board.histories import DIRECT_LIMIT, band, curve, metric_names, read_histories
from ginlab.board.paths import BoardError, resolve_inside, results_root
from ginlab.board.query import (
    View,
    group_members,
    group_rows,
    page_of_runs,
    rows_json,
    select_runs,
    sort_rows,
)
from ginlab.board.run_page import load_run_page, read_log
from ginlab.board.table import STALE_AFTER_SECONDS, RunsTable, last_beat

logger = logging.getLogger(__name__)

# Seconds between two looks at the runs that may change by themselves (running, stale, unreadable).
LIVE_EVERY_SECONDS = 1.0
# The whole tree (new and removed runs, evaluations of ended runs) is scanned at least this often, and at
# most every FULL_SCAN_FACTOR times the last scan's duration (so a huge tree does not keep a core busy).
FULL_SCAN_SECONDS = 10.0
FULL_SCAN_FACTOR = 20
# With rows from the cache, the check of every run waits at most this long for the page's first answer.
FIRST_ANSWER_WAIT_SECONDS = 2.0
MAX_ROWS = 20_000  # rows per answer (the page asks for blocks of 200)
MAX_CURVES = 200  # runs or groups drawn at once
META_COLUMNS = ("name", "status", "progress", "age", "epochs", "steps", "time", "start", "end", "heartbeat",
                "duration", "host", "reloads", "error", "monitor", "mode")  # fmt: skip
X_AXES = ("epoch", "step", "time")


class Board:
    """The runs under one results root, as the page sees them."""

    def __init__(self, root: str, stale_after: float = STALE_AFTER_SECONDS):
        self.root = path = results_root(root)
        self.table = RunsTable(path, stale_after, after_save=self._save_first_view)
        self.table.load_cached()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._answered = threading.Event()  # the first rows were sent

    # -- background reading -------------------------------------------------------------------------

    def start(self) -> None:
        """Check every run against its files in the background, then follow the live ones."""
        self._thread = threading.Thread(target=self.follow, name="board-refresh", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
        if self.table.checked:
            self.table.save()

    def loaded(self) -> Board:
        """This board (a `StartingBoard` answers the same once its board is loaded)."""
        return self

    def first_answer_sent(self) -> None:
        """The page has its first rows (from the first view on disk): the check need not wait for them."""
        self._answered.set()

    def wait_checked(self, timeout: float = 600.0) -> bool:
        """Wait until every run was compared with its files once (for tests and the export)."""
        deadline = time.monotonic() + timeout
        while not self.table.checked and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.table.checked

    def follow(self) -> None:
        """What `start` runs in its thread, here in the calling one: check every run against its files, then
        follow the live ones, until `stop`."""
        if self._thread is None:
            self._thread = threading.current_thread()
        # With rows from the cache, let the first page get them before the check competes for the CPU.
        if len(self.table.frame):
            self._answered.wait(FIRST_ANSWER_WAIT_SECONDS)
        next_full = 0.0
        while not self._stop.is_set():
            try:
                if time.monotonic() >= next_full:
                    started = time.monotonic()
                    self.table.refresh()
                    spent = time.monotonic() - started
                    next_full = time.monotonic() + max(FULL_SCAN_SECONDS, FULL_SCAN_FACTOR * spent)
                else:
                    self.table.refresh(self.table.live_names())
            except Exception:  # the board keeps serving what it has; the next round tries again
                logger.exception("reading the runs failed; trying again")
            self._stop.wait(LIVE_EVERY_SECONDS)

    # -- answers ---------------------------------------------------------------------------------------

    def meta(self) -> dict[str, Any]:
        """The table's columns (by kind), defaults for a first view, status counts, loading progress."""
        frame = self.table.frame
        columns = [c for c in [*META_COLUMNS, *frame.columns] if c in frame.columns or c == "age"]
        columns = list(dict.fromkeys(c for c in columns if c not in ("run", "_signature")))
        config = [c for c in columns if "." in c and "/" not in c]
        metrics = [c for c in columns if "/" in c]
        monitors = Counter(frame["monitor"].dropna()) if "monitor" in frame.columns else Counter()
        monitor = monitors.most_common(1)[0][0] if monitors else None
        history_metrics = sorted(
            {c.split("/", 1)[1] for c in metrics if c.startswith("final/")} - {"epoch", "step"}
        )
        return {
            "root": self.root,
            "version": self.table.version,
            "loading": self.table.loading,
            "checked": self.table.checked,
            "total": len(frame),
            "counts": dict(Counter(frame["status"]).most_common()) if len(frame) else {},
            "columns": {
                "run": [c for c in columns if c in META_COLUMNS],
                "config": config,
                "metrics": metrics,
            },
            "numeric": [c for c in columns if c in frame.columns and pd.api.types.is_numeric_dtype(frame[c])]
            + ["age"],
            "default_columns": self._default_columns(frame, config, metrics, monitor),
            "monitor": monitor,
            "history_metrics": history_metrics,
            "x_axes": list(X_AXES),
            "experiments": sorted(self.table.experiments),
        }

    def runs(self, params, start: int = 0, end: int = 200) -> dict[str, Any]:
        """A block of the view's rows (runs, or groups when the view groups)."""
        view = View.from_params(params)
        start, end = max(0, int(start)), min(int(end), int(start) + MAX_ROWS)
        if view.group:
            frame = sort_rows(group_rows(self._select(view), view.group), view.sort)
            total, page = len(frame), frame.iloc[start:end]
        else:
            members = self.experiment_runs(view.experiment) if view.experiment else None
            total, page = page_of_runs(self.table.frame, view, members, start, end)
        answer = {"total": total, "rows": rows_json(page), "version": self.table.version}
        self._answered.set()
        return answer

    def curves(
        self, params, runs: list[str], groups: list[str], metric: str, x: str = "epoch"
    ) -> dict[str, Any]:
        """The curves of the selected runs and groups: x, y per run; x, mean, std, n per group.

        Args:
            params: the view (its filters decide a group's runs; its group keys what a group is).
            runs: run names.
            groups: groups' `_key` values (JSON lists of the group keys' values).
            metric: a history metric ("val_acc").
            x: "epoch", "step" or "time".
        """
        if x not in X_AXES:
            raise BoardError(f"x must be one of {', '.join(X_AXES)}, not {x!r}")
        runs, groups = list(runs)[:MAX_CURVES], list(groups)[:MAX_CURVES]
        frame = self.table.frame
        known = [name for name in runs if name in frame.index]
        view = View.from_params(params)
        members: dict[str, list[str]] = {}
        if groups and view.group:
            selected = self._select(view)
            for key in groups:
                members[key] = list(group_members(selected, view.group, _parse_key(key)).index)
        wanted = {name: frame.at[name, "run"] for name in [*known, *(n for m in members.values() for n in m)]}
        # Few runs: every metric (the page offers them all); many: only the one drawn.
        histories = read_histories(wanted, None if len(wanted) <= DIRECT_LIMIT else metric)
        series = []
        for name in known:
            xs, ys = curve(histories.get(name, {}), metric, x)
            series.append({"kind": "run", "name": name, "label": name, "x": xs, "y": ys})
        for key, names in members.items():
            stats = band([histories[n] for n in names if n in histories], metric, x)
            series.append(
                {
                    "kind": "group",
                    "name": key,
                    "label": _group_label(view.group, key),
                    "runs": len(names),
                    **stats,
                }
            )
        return {
            "metric": metric,
            "x": x,
            "series": series,
            "metrics": metric_names(histories),
            "version": self.table.version,
        }

    def run_page(self, name: str, compare: str | None = None) -> dict[str, Any]:
        """The run page of `name`, with the config of `compare` for the differences."""
        page = load_run_page(self._run_path(name), name)
        frame = self.table.frame
        page["row"] = rows_json(frame.loc[[name]])[0] if name in frame.index else None
        if compare:
            page["compare"] = load_run_page(self._run_path(compare), compare)["config"]
            page["compare_name"] = compare
        return page

    def log(self, name: str, offset: int | None = None) -> dict[str, Any]:
        return read_log(self._run_path(name), offset)

    def experiments(self) -> list[dict[str, Any]]:
        frame = self.table.frame
        return [
            experiment_pages.load_experiment(self.root, name, folder, frame)
            for name, folder in sorted(self.table.experiments.items())
        ]

    def experiment_runs(self, name: str) -> set[str]:
        folder = self.table.experiments.get(name)
        if folder is None:
            raise BoardError(
                f"no experiment {name!r} under {self.root}; "
                f"experiments: {', '.join(self.table.experiments) or 'none'}"
            )
        with open(os.path.join(folder, "experiment.json"), "rb") as f:
            data = json.loads(f.read())
        return set(experiment_pages.experiment_runs(self.root, data, folder))

    def file(self, relative: str) -> str:
        """The path of a report file under the root (figures, summary.md, csv)."""
        path = resolve_inside(self.root, relative)
        if not path.lower().endswith(
            (".png", ".svg", ".jpg", ".jpeg", ".md", ".csv", ".txt")
        ) or not os.path.isfile(path):
            raise BoardError(f"{relative!r} is not a report file the board shows (figures, .md, .csv, .txt)")
        return path

    def changes(self, since: int) -> dict[str, Any]:
        changed = self.table.changed_since(since)
        return {
            "version": self.table.version,
            "changed": None if changed is None else sorted(changed)[:1000],
            "loading": self.table.loading,
            "checked": self.table.checked,
            "total": len(self.table.frame),
        }

    # -- the first view on disk ------------------------------------------------------------------------

    def _save_first_view(self, cache_path: str) -> None:
        """Beside the table cache just written: what its table answers to the page's first requests."""
        frame = self.table.frame
        _, page = page_of_runs(frame, View(), None, 0, FIRST_VIEW_ROWS)
        running = frame[frame["status"] == "running"] if len(frame) else frame
        silence = {}
        if len(running):
            seconds = (pd.Timestamp.now(tz="UTC") - last_beat(running)).dt.total_seconds().fillna(0.0)
            silence = dict(zip(running.index, seconds, strict=True))
        save_first_view(cache_path, self.meta(), rows_json(page), silence, self.table.stale_after)

    # -- helpers -----------------------------------------------------------------------------------------

    def _select(self, view: View) -> pd.DataFrame:
        members = self.experiment_runs(view.experiment) if view.experiment else None
        return select_runs(self.table.frame, view, members)

    def _run_path(self, name: str) -> str:
        if name not in self.table.frame.index:
            resolve_inside(self.root, name)  # a path out of the root is refused as such
            raise BoardError(f"no run {name!r} under {self.root}")
        return resolve_inside(self.root, name)

    @staticmethod
    def _default_columns(
        frame: pd.DataFrame, config: list[str], metrics: list[str], monitor: str | None
    ) -> list[str]:
        varying = [c for c in config if len(frame) and frame[c].nunique(dropna=False) > 1][:12]
        chosen = ["name", "status", "progress", "age", *varying]
        if monitor:
            chosen += [c for c in (f"best/{monitor}", f"final/{monitor}") if c in metrics]
        chosen += [c for c in metrics if c.startswith("test/") and c != "test/checkpoint"]
        if "final/val_loss" in metrics and "final/val_loss" not in chosen:
            chosen.append("final/val_loss")
        return chosen


def _parse_key(key: str) -> list:
    try:
        value = json.loads(key)
    except ValueError:
        raise BoardError(f"group {key!r} is not a group key (a JSON list of the group's values)") from None
    if not isinstance(value, list):
        raise BoardError(f"group {key!r} is not a group key (a JSON list of the group's values)")
    return value


def _group_label(keys: list[str], key: str) -> str:
    values = _parse_key(key)
    return " ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in zip(keys, values, strict=False))
