"""An experiment: gin config files + a grid of parameter values, and the runs it is prepared into.

`Experiment` is what an experiment's main.py defines; `Run` is one prepared grid point (its name, values, run
folder and config files); `ExperimentPaths` names the files of the experiment's results folder
(`$RESULTS_DIR/<name>/` by default):

    experiment.json    the prepared runs (what `run` executes)
    jobs.txt           one bin/train.py command per run, to be run from the repository root
    configs/<run>.gin  one config per grid point: the experiment's fixed bindings and the point's values
    runs/<run>/        the run folders, written by bin/train.py only
    logs/<run>.log     local backend: the output of every attempt at the run
    claims/<run>.lock  local backend: held by the runner whose bin/train.py runs that run (backends/claims.py)
    slurm/             SLURM backend: job scripts, submissions.jsonl, output/
    report/            written by `report`

Writing them is `prepare`'s job (ginlab.experiments.prepare).
"""

from __future__ import annotations

import dataclasses
import os
import shlex
from pathlib import Path

from ginlab.experiments.grid import expand_grid, format_value, grid_parameters, point_name, short_names

# Every run of an experiment is started with this binding (both backends, the SLURM job script, jobs.txt):
# bin/train.py then starts the run in an empty folder, continues an interrupted or failed one, and exits 0 at
# once when it finished (the one place where start-or-reload is decided).
RELOAD_AUTO = 'training_loop.reload="auto"'


class ExperimentError(Exception):
    """An experiment that cannot be prepared, run or reported; the message says what to do."""


@dataclasses.dataclass
class ReportSpec:
    """What `report` plots and ranks.

    Args:
        metric: the validation metric that ranks configurations, e.g. "val_acc".
        mode: "max" or "min" (which is better).
        x: the grid parameter on the x axis of "final metric against x" and the colour of the learning curves.
        log_x: plot `x` on a log axis (learning rates).
        over: the grid parameter averaged over (seeds): tables give mean, std and n over it, curves a band.
        curves: history metrics drawn as learning curves, one panel each.
        labels: readable names of grid parameters for axes, e.g. {"torch.optim.Adam.lr": "learning rate"}.
    """

    metric: str = "val_acc"
    mode: str = "max"
    x: str | None = None
    log_x: bool = True
    over: str | None = "training_loop.seed"
    curves: tuple[str, ...] = ("train_loss", "val_loss", "val_acc")
    labels: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Run:
    """One prepared run: a grid point, its run folder and the config files bin/train.py gets.

    Args:
        index: its position in experiment.json (also its SLURM array index).
        name: the run's name, from its grid values ("lr=0.001_seed=0"); its run folder's name.
        params: the grid point, {gin parameter: value}.
        save_dir: the run folder.
        config_files: the experiment's config files, then the run's own configs/<name>.gin.
    """

    index: int
    name: str
    params: dict
    save_dir: Path
    config_files: list[str]

    def command(self, python: str = "python") -> list[str]:
        """The bin/train.py command line (to run from the repository root): the same for a fresh start, a
        continuation and a finished run, because bin/train.py decides which it is (RELOAD_AUTO)."""
        return [python, "bin/train.py", str(self.save_dir), *self.config_files, "-b", RELOAD_AUTO]

    def command_line(self) -> str:
        return shlex.join(self.command())

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "save_dir": str(self.save_dir)}

    @classmethod
    def from_dict(cls, data: dict) -> Run:
        return cls(**{**data, "save_dir": Path(data["save_dir"])})


@dataclasses.dataclass
class Experiment:
    """A grid of runs of bin/train.py.

    Args:
        name: the experiment's name; its results go to `$RESULTS_DIR/<name>/` unless `results_dir` is given.
        configs: gin files given to every run, relative to the repository root.
        grid: {gin parameter: [values]} (all combinations) or a list of {parameter: value} points; None for
            an experiment that only searches.
        bindings: gin bindings given to every run, e.g. ["training_loop.n_epochs = 10"].
        report: what `report` ranks and plots.
        slurm: defaults for the SLURM backend: partition, time, cpus, gpus, mem, signal_seconds (command-line
            options override them).
        results_dir: where the experiment's files and run folders go.
        root: the repository root holding bin/train.py (default: found from the ginlab package or the cwd).
        search: a hyperparameter search (ginlab.experiments.search.Search), instead of or beside the grid;
            its trials go to `trials/`, its study and files to `search/` (docs/experiments.md, "Searches").
    """

    name: str
    configs: list[str]
    grid: dict | list | None = None
    bindings: list[str] = dataclasses.field(default_factory=list)
    report: ReportSpec = dataclasses.field(default_factory=ReportSpec)
    slurm: dict = dataclasses.field(default_factory=dict)
    results_dir: str | None = None
    root: str | None = None
    search: object | None = None  # a ginlab.experiments.search.Search (not imported here: it imports optuna)

    def __post_init__(self):
        if self.grid is None and self.search is None:
            raise ExperimentError(
                f"Experiment {self.name!r} has neither a grid nor a search: give one of them."
            )
        self.root = Path(self.root).resolve() if self.root else find_root()
        base = self.results_dir or Path(os.environ.get("RESULTS_DIR", self.root / "results")) / self.name
        self.paths = ExperimentPaths(Path(base).resolve())

    def build_runs(self) -> list[Run]:
        """The runs of the grid as `prepare` would write them (nothing is checked or written).

        Raises:
            ValueError: the grid is empty or repeats a point.
            ExperimentError: two grid points get the same run name.
        """
        if self.grid is None:  # a search only: its trials are drawn by `run`, not prepared
            return []
        points = expand_grid(self.grid)
        short = short_names(grid_parameters(points))
        runs = []
        for index, point in enumerate(points):
            name = point_name(point, short)
            runs.append(
                Run(
                    index=index,
                    name=name,
                    params=point,
                    save_dir=self.paths.runs / name,
                    config_files=[*self.configs, str(self.paths.configs / f"{name}.gin")],
                )
            )
        names = [run.name for run in runs]
        if len(set(names)) != len(names):
            repeated = sorted({n for n in names if names.count(n) > 1})
            raise ExperimentError(f"Two grid points get the same run name: {', '.join(repeated)}.")
        return runs

    def point_config(self, run: Run) -> str:
        """The text of the run's own .gin file: the fixed bindings, then the grid point's values."""
        lines = [
            f"# {self.name}: run {run.name} (grid point {run.index}).",
            f"# Written by `prepare`; given to bin/train.py after {', '.join(self.configs)}.",
        ]
        if self.bindings:
            lines += ["", "# Every run of the experiment:", *self.bindings]
        lines += ["", "# This grid point:"]
        lines += [f"{name} = {format_value(value)}" for name, value in run.params.items()]
        return "\n".join(lines) + "\n"


@dataclasses.dataclass
class ExperimentPaths:
    """The files of an experiment's results folder (see the module docstring)."""

    base: Path

    def __post_init__(self):
        self.experiment_json = self.base / "experiment.json"
        self.jobs = self.base / "jobs.txt"
        self.configs = self.base / "configs"
        self.runs = self.base / "runs"
        self.logs = self.base / "logs"
        self.claims = self.base / "claims"
        self.slurm = self.base / "slurm"
        self.report = self.base / "report"


def find_root() -> Path:
    """The repository root: the folder with bin/train.py above the ginlab package, else above the cwd."""
    import ginlab

    for start in (Path(ginlab.__file__).resolve().parent, Path.cwd().resolve()):
        for folder in (start, *start.parents):
            if (folder / "bin" / "train.py").is_file():
                return folder
    return Path.cwd().resolve()
