"""Preparing an experiment: check its grid with gin; write experiment.json, jobs.txt and one .gin per run.

Preparing again rewrites those three (atomically) and never touches a run folder. `run` executes what the
last `prepare` wrote, and refuses to start when main.py's grid or bindings changed since (`grid_changed`).
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

from ginlab.experiments.experiment import RELOAD_AUTO, Experiment, ExperimentError, Run
from ginlab.experiments.grid import format_value
from ginlab.runfolder.atomic import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)


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

    Args:
        experiment: what to prepare.
        check: parse every grid point with gin as bin/train.py would, before anything is written.

    Raises:
        ExperimentError: the grid is invalid; nothing is written.
    """
    try:
        runs = experiment.build_runs()
    except ValueError as error:
        raise ExperimentError(str(error)) from None
    if check:
        check_experiment(experiment, runs)
    from ginlab.experiments.notify import experiment_settings

    experiment_settings(experiment, runs)  # a notification URL Apprise cannot use: refused before writing
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
    """jobs.txt: one command per run, the same that both backends run."""
    lines = [
        f"# {experiment.name}: {len(runs)} runs, one command per line, to run from {experiment.root}",
        f"# With -b {RELOAD_AUTO}, each line starts its run, continues it when it was interrupted or failed,",
        "# and does nothing when it finished: run any line again at any time.",
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
