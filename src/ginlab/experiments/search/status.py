"""`status` of a search: trials done / running / pruned / failed / left, the best so far, an ETA, and whether
the study's records agree with the run folders (read only: the study file and the run folders, never a lock).
"""

from __future__ import annotations

import dataclasses
import json
import math
from datetime import UTC, datetime

from optuna.trial import FrozenTrial, TrialState
from rich.table import Table

from ginlab.errors import RunFolderError
from ginlab.experiments.experiment import Experiment
from ginlab.experiments.progress import format_seconds
from ginlab.experiments.search.spec import Search
from ginlab.experiments.search.study import FAILURE, SearchStudy
from ginlab.experiments.search.trials import SearchPaths, trial_name, trial_number
from ginlab.processes import process_alive
from ginlab.runfolder import format as fmt
from ginlab.runfolder import read_history, read_meta, run_status

STATES = {TrialState.COMPLETE: "done", TrialState.RUNNING: "running", TrialState.PRUNED: "pruned",
          TrialState.FAIL: "failed"}  # fmt: skip


@dataclasses.dataclass
class TrialRow:
    number: int
    state: str
    params: dict
    epochs: int
    value: float | None
    folder: str  # the run folder's status
    details: str


@dataclasses.dataclass
class SearchStatus:
    """A search's trials as `status` shows them."""

    name: str
    metric: str
    rows: list[TrialRow]
    budget: int
    best: FrozenTrial | None
    eta: float | None
    driver: dict | None
    problems: list[str]

    def counts(self) -> dict[str, int]:
        counts = {word: 0 for word in ("done", "running", "pruned", "failed")}
        for row in self.rows:
            counts[row.state] = counts.get(row.state, 0) + 1
        counts["left"] = max(self.budget - len(self.rows), 0)
        return counts

    @property
    def done(self) -> bool:
        """Nothing is left to do: every trial of the budget ended (complete, pruned or failed)."""
        counts = self.counts()
        return not counts["running"] and not counts["left"]

    def summary(self) -> str:
        counts = self.counts()
        text = f"search {self.name}: " + ", ".join(f"{n} {word}" for word, n in counts.items())
        if self.best is not None:
            text += f"; best so far: trial {self.best.number}, {self.metric} {self.best.value:.4g}"
        if not self.done:
            text += f"; ETA {format_seconds(self.eta)}"
            who = self.driver
            text += (
                f"; driven by pid {who.get('pid')} on {who.get('host')} since {who.get('since')}"
                if who else "; no driver is running (`run` continues it)"
            )  # fmt: skip
        if self.problems:
            text += "\nThe study and the run folders disagree:\n" + "\n".join(f"  {p}" for p in self.problems)
        return text

    def table(self, show_all: bool = False) -> Table:
        table = Table(title=f"{self.name}: trials")
        for column in ("trial", "state", "epochs", self.metric, "run folder", "parameters", "details"):
            table.add_column(column)
        for row in self.rows:
            if show_all or row.state != "done" or (self.best is not None and row.number == self.best.number):
                value = "" if row.value is None else f"{row.value:.4g}"
                params = ", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in row.params.items())
                table.add_row(
                    str(row.number), row.state, str(row.epochs), value, row.folder, params, row.details
                )
        return table


def search_status(experiment: Experiment, search: Search) -> SearchStatus:
    """The state of every trial of the search (nothing is written)."""
    paths = SearchPaths(experiment.paths.base)
    driver = _live_driver(paths)
    if not paths.study.is_file():
        return SearchStatus(experiment.name, search.metric, [], search.budget(), None, None, driver, [])
    study = SearchStudy(paths.study, experiment.name, search.direction)
    trials = study.trials()
    rows = [_row(paths, trial) for trial in trials]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best = study.study.best_trial if complete else None
    slots = (driver or {}).get("slots") or 1
    return SearchStatus(
        experiment.name, search.metric, rows, search.budget(), best,
        _eta(trials, rows, search.budget(), slots), driver, check_records(paths, trials, search.metric),
    )  # fmt: skip


def _row(paths: SearchPaths, trial: FrozenTrial) -> TrialRow:
    save_dir = paths.trials / trial_name(trial.number)
    try:
        meta = read_meta(save_dir)
        folder = run_status(meta)
        epochs = len(read_history(save_dir))
    except RunFolderError:
        meta, folder, epochs = None, "missing", 0
    details = ""
    if trial.state == TrialState.FAIL:
        details = str(trial.system_attrs.get(FAILURE, ""))
    elif trial.state == TrialState.PRUNED:
        details = f"pruned after epoch {trial.last_step}"
    elif trial.state == TrialState.RUNNING:
        details = f"{folder}, {describe_progress(trial)}"
    value = trial.value if trial.state.is_finished() else (
        trial.intermediate_values[trial.last_step] if trial.last_step is not None else None
    )  # fmt: skip
    return TrialRow(trial.number, STATES[trial.state], trial.params, epochs, value, folder, details)


def describe_progress(trial: FrozenTrial) -> str:
    decisions = SearchStudy.decisions(trial)
    if not decisions:
        return "first segment"
    return f"promoted after epoch {max(decisions)}"


def check_records(paths: SearchPaths, trials: list[FrozenTrial], metric: str) -> list[str]:
    """Where the study and the run folders disagree (empty when they agree): a trial folder without a trial,
    a pruned trial whose folder is not pruned (or the reverse), a complete trial whose folder has not finished
    every epoch or whose history gives another value."""
    problems = []
    numbers = {t.number for t in trials}
    if paths.trials.is_dir():
        for folder in sorted(paths.trials.iterdir()):
            if folder.name.startswith("."):  # the loaders' history cache, not a run
                continue
            number = trial_number(folder.name)
            if number is None or number not in numbers:
                problems.append(f"{folder} is no trial of the study")
    for trial in trials:
        save_dir = paths.trials / trial_name(trial.number)
        try:
            meta = read_meta(save_dir)
        except RunFolderError:
            if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
                problems.append(f"trial {trial.number} is {trial.state.name} but has no run folder")
            continue
        status = meta.get("status")
        if (trial.state == TrialState.PRUNED) != (status == fmt.PRUNED) and trial.state.is_finished():
            problems.append(f"trial {trial.number} is {trial.state.name}, its run folder {status}")
        if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
            history = read_history(save_dir)
            rows = [row for row in history if row.get("epoch", -1) + 1 <= trial.last_step]
            for row in rows:
                step = row["epoch"] + 1
                want = trial.intermediate_values.get(step)
                got = row.get(metric)
                if want is not None and got is not None and not _same(want, got):
                    problems.append(f"trial {trial.number} epoch {step}: the study has {want}, history {got}")
                    break
            if len(rows) != trial.last_step:
                problems.append(
                    f"trial {trial.number}: the study has {trial.last_step} epochs, history {len(rows)}"
                )
    return problems


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def _eta(trials: list[FrozenTrial], rows: list[TrialRow], budget: int, slots: int) -> float | None:
    """Seconds to the end: wall seconds per epoch of the ended trials, times the epochs still to train."""
    ended = [t for t in trials if t.state.is_finished() and t.datetime_complete and t.last_step]
    if not ended:
        return None
    seconds = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in ended)
    epochs = sum(t.last_step for t in ended)
    mean_epochs = epochs / len(ended)
    running = sum(max(mean_epochs - row.epochs, 0) for row in rows if row.state == "running")
    left = max(budget - len(trials), 0) * mean_epochs
    return (running + left) * seconds / epochs / max(slots, 1)


def _live_driver(paths: SearchPaths) -> dict | None:
    """driver.json of a driver whose process still lives on this host (or runs on another host)."""
    try:
        info = json.loads(paths.driver_info.read_text())
    except (OSError, ValueError):
        return None
    import socket

    if info.get("host") == socket.gethostname() and not process_alive(int(info.get("pid") or 0)):
        return None
    info.setdefault("since", datetime.now(UTC).isoformat(timespec="seconds"))
    return info
