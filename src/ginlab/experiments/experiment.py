"""An experiment: gin config files + a grid of parameter values, prepared into one run per grid point.

`prepare` writes, into the experiment's results folder (default `$RESULTS_DIR/<name>/`):

    experiment.json    the prepared runs: name, parameters, run folder, config files (what `run` executes)
    jobs.txt           one `python bin/train.py ...` command per run, to be run from the repository root
    configs/<run>.gin  one config per grid point: the experiment's fixed bindings and the point's values
    runs/<run>/        the run folders, written by bin/train.py (never touched by `prepare`)

Preparing again rewrites the first three (atomically) and leaves the run folders alone.
"""

import dataclasses
import json
import logging
import os
from datetime import UTC, datetime
from pathlib import Path

from ginlab.experiments.backends.classify import Run
from ginlab.experiments.grid import expand_grid, format_value, grid_parameters, point_name, short_names
from ginlab.runfolder.atomic import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)


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
class Experiment:
    """A grid of runs of bin/train.py.

    Args:
        name: the experiment's name; its results go to `$RESULTS_DIR/<name>/` unless `results_dir` is given.
        configs: gin files given to every run, relative to the repository root.
        grid: {gin parameter: [values]} (all combinations) or a list of {parameter: value} points.
        bindings: gin bindings given to every run, e.g. ["training_loop.n_epochs = 10"].
        report: what `report` ranks and plots.
        slurm: defaults for the SLURM backend: partition, time, cpus, gpus, mem, signal_seconds (command-line
            options override them).
        results_dir: where the experiment's files and run folders go.
        root: the repository root holding bin/train.py (default: found from the ginlab package or the cwd).
    """

    name: str
    configs: list[str]
    grid: dict | list
    bindings: list[str] = dataclasses.field(default_factory=list)
    report: ReportSpec = dataclasses.field(default_factory=ReportSpec)
    slurm: dict = dataclasses.field(default_factory=dict)
    results_dir: str | None = None
    root: str | None = None

    def __post_init__(self):
        self.root = Path(self.root).resolve() if self.root else find_root()
        base = self.results_dir or Path(os.environ.get("RESULTS_DIR", self.root / "results")) / self.name
        self.paths = ExperimentPaths(Path(base).resolve())

    def build_runs(self) -> list[Run]:
        """The runs of the grid as `prepare` would write them (nothing is checked or written)."""
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
    """The files of an experiment's results folder."""

    base: Path

    def __post_init__(self):
        self.experiment_json = self.base / "experiment.json"
        self.jobs = self.base / "jobs.txt"
        self.configs = self.base / "configs"
        self.runs = self.base / "runs"
        self.logs = self.base / "logs"
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


def check_experiment(experiment: Experiment, runs: list[Run]) -> None:
    """Validate every run's configs and bindings as bin/train.py would (gin names and values).

    Raises:
        ExperimentError: naming the bad grid point, gin's message and the nearest valid names.
    """
    from ginlab.errors import ConfigError
    from ginlab.training.configure import check_config as check_bindings

    missing = [c for c in experiment.configs if not (experiment.root / c).is_file()]
    if missing:
        raise ExperimentError(f"Config file not found: {', '.join(missing)} (relative to {experiment.root}).")
    configs = [str(experiment.root / c) for c in experiment.configs]
    # Each grid parameter on its own first, so that every bad name is reported at once.
    problems = []
    for name, value in runs[0].params.items():
        try:
            check_bindings(configs, [*experiment.bindings, f"{name} = {format_value(value)}"])
        except ConfigError as error:
            problems.append(f"- grid parameter {name!r}:\n    " + str(error).replace("\n", "\n    "))
    if problems:
        raise ExperimentError(
            f"The grid of {experiment.name} is not valid for {', '.join(experiment.configs)}:\n"
            + "\n".join(problems)
        )
    for run in runs:
        bindings = [*experiment.bindings, *(f"{k} = {format_value(v)}" for k, v in run.params.items())]
        try:
            check_bindings(configs, bindings)
        except ConfigError as error:
            raise ExperimentError(f"Grid point {run.name} is not a valid configuration:\n{error}") from None


def prepare(experiment: Experiment, check: bool = True) -> list[Run]:
    """Check the grid and write experiment.json, jobs.txt and one .gin per point (see the module docstring).

    Raises:
        ExperimentError: the grid is invalid; nothing is written.
    """
    try:
        runs = experiment.build_runs()
    except ValueError as error:
        raise ExperimentError(str(error)) from None
    if check:
        check_experiment(experiment, runs)
    paths = experiment.paths
    for folder in (paths.base, paths.configs, paths.runs):
        folder.mkdir(parents=True, exist_ok=True)
    wanted = {f"{run.name}.gin" for run in runs}
    for run in runs:
        atomic_write_text(paths.configs / f"{run.name}.gin", experiment.point_config(run))
    for stale in paths.configs.glob("*.gin"):  # points removed from the grid since the last prepare
        if stale.name not in wanted:
            stale.unlink()
    atomic_write_text(paths.jobs, jobs_text(experiment, runs))
    atomic_write_json(
        paths.experiment_json,
        {
            "name": experiment.name,
            "prepared": datetime.now(UTC).isoformat(timespec="seconds"),
            "root": str(experiment.root),
            "configs": experiment.configs,
            "bindings": experiment.bindings,
            "runs": [run.to_dict() for run in runs],
        },
    )
    log.info("prepared %d runs in %s", len(runs), paths.base)
    return runs


def jobs_text(experiment: Experiment, runs: list[Run]) -> str:
    lines = [
        f"# {experiment.name}: {len(runs)} runs, one command per line, to run from {experiment.root}",
        "# (a run whose folder already exists continues with: -b training_loop.reload=True)",
    ]
    lines += [run.command_line() for run in runs]
    return "\n".join(lines) + "\n"


def load_prepared(experiment: Experiment) -> list[Run]:
    """The runs written by the last `prepare`.

    Raises:
        ExperimentError: the experiment was never prepared.
    """
    path = experiment.paths.experiment_json
    if not path.is_file():
        raise ExperimentError(
            f"{experiment.name} is not prepared ({path} does not exist): run `prepare` first."
        )
    data = json.loads(path.read_text())
    return [Run.from_dict(entry) for entry in data["runs"]]


def grid_changed(experiment: Experiment, prepared: list[Run]) -> bool:
    """True when main.py's grid no longer gives the prepared runs (prepare was not run after an edit)."""
    try:
        current = experiment.build_runs()
    except (ValueError, ExperimentError):
        return True
    if [r.to_dict() for r in current] != [r.to_dict() for r in prepared]:
        return True
    return any(
        not (experiment.paths.configs / f"{run.name}.gin").is_file()
        or (experiment.paths.configs / f"{run.name}.gin").read_text() != experiment.point_config(run)
        for run in current
    )
