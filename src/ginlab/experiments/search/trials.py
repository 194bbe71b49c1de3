"""A search's files, and its trials as ordinary prepared runs of bin/train.py.

<results>/<name>/
  search/search.json        what `prepare` wrote: the search, its configs and bindings, the trials' epochs
  search/study.journal      the study (Optuna's journal file; see study.py)
  search/configs/<trial>.gin  one config per trial: the experiment's bindings and the trial's parameters
  search/logs/<trial>.log   local: the output of every bin/train.py of the trial
  search/slurm/             SLURM: job scripts, submissions.jsonl, output/
  search/driver.lock        held by the one driver (`run`) of the search; driver.json says who it is
  trials/<trial>/           the run folders, written by bin/train.py only (trial-0007 is trial number 7)
  report/search.md          `report`: the best trial, tables and figures (search_*.png, search_trials.csv)
"""

from __future__ import annotations

import dataclasses
import shlex
from pathlib import Path

from ginlab.experiments.experiment import Run
from ginlab.runfolder import read_history


class SearchPaths:
    """The files of a search in an experiment's results folder (see the module docstring)."""

    def __init__(self, base: Path):
        self.base = Path(base)
        self.folder = self.base / "search"
        self.spec = self.folder / "search.json"
        self.study = self.folder / "study.journal"
        self.configs = self.folder / "configs"
        self.logs = self.folder / "logs"
        self.slurm = self.folder / "slurm"
        self.driver_lock = self.folder / "driver.lock"
        self.driver_info = self.folder / "driver.json"
        self.segments = self.folder / "segments.jsonl"
        self.trials = self.base / "trials"
        self.report = self.base / "report"


def trial_name(number: int) -> str:
    """trial-0007: the run folder, config and log name of trial number 7 (sorted by number up to 9999)."""
    return f"trial-{number:04d}"


def trial_number(name: str) -> int | None:
    """7 for "trial-0007"; None for another name."""
    prefix, _, digits = name.partition("-")
    return int(digits) if prefix == "trial" and digits.isdigit() else None


@dataclasses.dataclass
class TrialRun(Run):
    """One trial as a prepared run, trained up to `n_epochs` by its next bin/train.py (a segment).

    Its command is the grid's (`training_loop.reload="auto"`: start, continue or nothing to do) with the
    segment's
    `training_loop.n_epochs`: a larger one extends the finished segment from its checkpoint, exactly as if the
    run had been trained straight through.
    """

    n_epochs: int = 0

    def command(self, python: str = "python") -> list[str]:
        return [*super().command(python), "-b", f"training_loop.n_epochs={self.n_epochs}"]

    def command_line(self) -> str:
        return shlex.join(self.command())


def trial_run(paths: SearchPaths, configs: list[str], number: int, params: dict, n_epochs: int) -> TrialRun:
    name = trial_name(number)
    return TrialRun(
        index=number,
        name=name,
        params=params,
        save_dir=paths.trials / name,
        config_files=[*configs, str(paths.configs / f"{name}.gin")],
        n_epochs=n_epochs,
    )


def trial_config(experiment_name: str, number: int, bindings: list[str], values: dict[str, str]) -> str:
    """The text of a trial's own .gin file: the experiment's bindings, then the trial's values (gin text)."""
    lines = [
        f"# {experiment_name}: trial {number} of the search, written by `run` when the trial was drawn.",
        "# The number of epochs is given by each bin/train.py of the trial (-b training_loop.n_epochs=...).",
    ]
    if bindings:
        lines += ["", "# Every trial of the search:", *bindings]
    lines += ["", "# This trial:", *(f"{name} = {value}" for name, value in values.items())]
    return "\n".join(lines) + "\n"


def metric_values(save_dir: Path, metric: str) -> dict[int, float]:
    """{epochs trained (1, 2, ...): the metric after that epoch} from the run's history.jsonl."""
    values = {}
    for row in read_history(save_dir):
        if metric in row and isinstance(row.get("epoch"), int):
            values[row["epoch"] + 1] = float(row[metric])
    return values
