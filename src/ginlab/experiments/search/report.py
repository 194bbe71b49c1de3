"""The search report: the best configuration, how the search got there, and what it cost.

Written into `<results>/report/` beside the grid's files (their names start with `search`):

    search.md               the best trial and configuration (mean +- std over seeds when the space repeats
                            seeds), the trials' table, the figures, the compute used against full trials
    search_trials.csv       one row per trial: number, state, parameters, epochs trained, value, run folder
    status
    search_history.png      the optimization history: each trial's value and the best so far (Optuna's plot)
    search_parallel.png     parallel coordinates of the parameters, coloured by value (Optuna's plot)
    search_importance.png   parameter importance (Optuna's fANOVA), once enough trials completed
    search_curves.png       learning curves of the top trials, with the pruned ones faint

Values come from the study; curves and epochs from the run folders (ginlab.analysis.load_histories).
"""

from __future__ import annotations

import logging
import math
import warnings
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
from optuna.trial import TrialState

from ginlab.experiments.experiment import Experiment, ExperimentError
from ginlab.experiments.report import markdown_table
from ginlab.experiments.search.spec import Search
from ginlab.experiments.search.study import FAILURE, SearchStudy
from ginlab.experiments.search.trials import SearchPaths, trial_name
from ginlab.runfolder.atomic import atomic_write_text

log = logging.getLogger(__name__)

TOP = 5  # learning curves of this many best trials
SEED = "training_loop.seed"


def build_search_report(experiment: Experiment, search: Search) -> Path:
    """Write the search's report into `<results>/report/`; return the path of search.md.

    Raises:
        ExperimentError: the search has no study yet (`run` was never started).
    """
    paths = SearchPaths(experiment.paths.base)
    if not paths.study.is_file():
        raise ExperimentError(
            f"The search of {experiment.name} has no trials yet ({paths.study}): `run` it first."
        )
    study = SearchStudy(paths.study, experiment.name, search.direction)
    record = study.record() or {}
    n_epochs = record.get("n_epochs")
    trials = study.trials()
    paths.report.mkdir(parents=True, exist_ok=True)
    table = trials_table(paths, trials, search)
    table.to_csv(paths.report / "search_trials.csv", index=False)
    figures = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna's matplotlib plots are marked experimental
        figures += _optuna_figures(study, paths.report)
        curves = _learning_curves(experiment.name, paths, trials, search, paths.report / "search_curves.png")
    if curves:
        figures.append(("Learning curves of the top trials", curves))
    text = summary_markdown(experiment, search, study, table, figures, n_epochs)
    atomic_write_text(paths.report / "search.md", text)
    log.info("search report written to %s", paths.report)
    return paths.report / "search.md"


def load_trials(experiment: Experiment) -> pd.DataFrame:
    """The search's trials as a DataFrame: trial number, state in the study (complete, running, pruned, fail),
    parameters, epochs trained, value, and the run folder's status (what load_runs and bin/runs.py show).

    Raises:
        ExperimentError: the experiment has no search, or the search has no study yet.
    """
    search = experiment.search
    if search is None:
        raise ExperimentError(f"Experiment {experiment.name!r} has no search.")
    paths = SearchPaths(experiment.paths.base)
    if not paths.study.is_file():
        raise ExperimentError(f"The search of {experiment.name} has no trials yet ({paths.study}).")
    study = SearchStudy(paths.study, experiment.name, search.direction)
    return trials_table(paths, study.trials(), search)


def trials_table(paths: SearchPaths, trials, search: Search) -> pd.DataFrame:
    """One row per trial: number, state, parameters (short names), epochs trained, value, folder status."""
    from ginlab.analysis import load_runs

    folders = [str(paths.trials / trial_name(t.number)) for t in trials]
    present = [f for f in folders if (Path(f) / "meta.json").is_file()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        runs = load_runs(present, on_error="warn") if present else pd.DataFrame(columns=["run"])
    by_path = {str(row["run"]): row for _, row in runs.iterrows()}
    rows = []
    for trial, folder in zip(trials, folders, strict=True):
        run = by_path.get(folder)
        row = {"trial": trial.number, "state": trial.state.name.lower()}
        row.update({name.rsplit(".", 1)[-1]: value for name, value in trial.params.items()})
        row["epochs"] = int(run["epochs"]) if run is not None and not pd.isna(run["epochs"]) else 0
        row[search.metric] = trial.value
        row["run folder"] = run["status"] if run is not None else "missing"
        row["note"] = str(trial.system_attrs.get(FAILURE, "")) if trial.state == TrialState.FAIL else ""
        rows.append(row)
    return pd.DataFrame(rows)


def configurations(table: pd.DataFrame, search: Search) -> pd.DataFrame:
    """Complete trials grouped by their parameters without the seed: mean, std, n of the value, best first."""
    done = table[table["state"] == "complete"]
    keys = [name.rsplit(".", 1)[-1] for name in search.space if name != SEED]
    if not len(done) or not keys:
        return pd.DataFrame()
    frame = done.assign(**{k: done[k].astype(str) for k in keys})
    stats = frame.groupby(keys, sort=False)[search.metric].agg(["mean", "std", "count"]).reset_index()
    stats = stats.rename(columns={"count": "n"})
    return stats.sort_values("mean", ascending=search.mode == "min").reset_index(drop=True)


def summary_markdown(experiment, search: Search, study: SearchStudy, table, figures, n_epochs) -> str:
    trials = study.trials()
    states = table["state"].value_counts().to_dict() if len(table) else {}
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"# {experiment.name}: search report",
        "",
        f"Written {stamp} from {SearchPaths(experiment.paths.base).study}. {len(trials)} of "
        f"{search.budget()} "
        "trials: " + (", ".join(f"{n} {s}" for s, n in states.items()) or "none yet") + ".",
        "",
        f"Sampler {search.sampler_name}, pruner {search.pruner_name or 'none'}, {search.mode} "
        f"{search.metric} after "
        f"{n_epochs} epochs, seed {search.seed}. Space: "
        + "; ".join(f"`{name}` {d.describe()}" for name, d in search.space.items())
        + ".",
        "",
    ]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if complete:
        best = study.study.best_trial
        params = ", ".join(f"`{k}` = {v}" for k, v in best.params.items())
        lines += [f"**Best trial**: {best.number}, {search.metric} {best.value:.4g}: {params}.", ""]
        groups = configurations(table, search)
        if SEED in search.space and len(groups) and groups["n"].max() > 1:
            top = groups.iloc[0]
            std = top["std"] if not math.isnan(top["std"]) else 0.0
            lines += [
                f"**Best configuration** (mean over seeds): {search.metric} {top['mean']:.4g} +- {std:.4g} "
                f"(n = {int(top['n'])}).",
                "",
                "## Configurations over seeds",
                "",
                *markdown_table(groups),
                "",
            ]
    else:
        lines += ["No trial has completed yet: no best trial.", ""]
    used = int(table["epochs"].sum()) if len(table) else 0
    full = len(trials) * (n_epochs or 0)
    share = f" ({used / full:.0%})" if full else ""
    lines += [
        "## Compute",
        "",
        f"{used} epochs trained over {len(trials)} trials{share}; the same trials trained in full would "
        f"have cost "
        f"{full} epochs.",
        "",
    ]
    for title, path in figures:
        lines += [f"## {title}", "", f"![{title}]({Path(path).name})", ""]
    lines += ["## Trials", "", "Also in `search_trials.csv`.", "", *markdown_table(table)]
    return "\n".join(lines) + "\n"


def _optuna_figures(study: SearchStudy, folder: Path) -> list[tuple[str, Path]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as plots

    complete = [t for t in study.trials() if t.state == TrialState.COMPLETE]
    wanted = [
        ("Optimization history", "search_history.png", plots.plot_optimization_history, 1),
        ("Parallel coordinates", "search_parallel.png", plots.plot_parallel_coordinate, 1),
        ("Parameter importance", "search_importance.png", plots.plot_param_importances, 2),
    ]
    figures = []
    for title, name, plot, needed in wanted:
        if len(complete) < needed:
            continue
        try:
            axes = plot(study.study)
        except (ValueError, RuntimeError) as error:  # e.g. importance of a single distinct value
            log.warning("%s not drawn: %s", title, error)
            continue
        figure = axes.figure if hasattr(axes, "figure") else axes[0].figure
        figure.set_size_inches(8, 5)
        figure.tight_layout()
        figure.savefig(folder / name, dpi=110)
        plt.close(figure)
        figures.append((title, folder / name))
    return figures


def _learning_curves(name: str, paths: SearchPaths, trials, search: Search, path: Path) -> Path | None:
    """The metric per epoch of the top trials (by value), and every pruned trial faint behind them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ginlab.analysis import load_histories

    complete = sorted((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: t.value,
                      reverse=search.mode == "max")[:TOP]  # fmt: skip
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    shown = [t for t in [*complete, *pruned] if (paths.trials / trial_name(t.number) / "meta.json").is_file()]
    if not complete or not shown:
        return None
    histories = load_histories([str(paths.trials / trial_name(t.number)) for t in shown], on_error="ignore")
    if search.metric not in histories.columns:
        return None
    figure, axis = plt.subplots(figsize=(8, 5))
    for trial in pruned:
        rows = histories[histories["run"].astype(str) == str(paths.trials / trial_name(trial.number))]
        axis.plot(rows["epoch"] + 1, rows[search.metric], color="grey", alpha=0.3, linewidth=1)
    for rank, trial in enumerate(complete):
        rows = histories[histories["run"].astype(str) == str(paths.trials / trial_name(trial.number))]
        label = f"trial {trial.number} ({trial.value:.4g})"
        width = 2 if rank == 0 else 1.2
        axis.plot(
            rows["epoch"] + 1, rows[search.metric], marker="o", markersize=3, label=label, linewidth=width
        )
    axis.set_xlabel("epoch")
    axis.set_ylabel(search.metric)
    axis.set_title(f"{name}: the {len(complete)} best trials; pruned trials in grey")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
