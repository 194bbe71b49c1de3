"""The experiment report: tables and figures from the run folders, and a Markdown summary embedding them.

Written into `<results>/report/`:

    summary.md          what ran, the best configuration, the tables, the figures, the runs left out and why,
                        the resources each run asked for and used, with --mem / --time for the next submission
    runs.csv            one row per prepared run: grid values, other varying config values, status, metrics
    best.csv            one row per configuration (grid point without the seed): mean, std, n over seeds
    resources.csv       one row per prepared run: memory and time requested (SLURM) and used (resources.py)
    curves.png          learning curves per configuration, mean over seeds with a +-1 std band
    final_vs_<x>.png    the final validation metric against the x parameter (log axis for learning rates)

Runs are read with the analysis loaders (ginlab.analysis.load_runs / load_histories). Only finished runs are
results; every other prepared run (missing, running, interrupted, stale, failed, diverged, pruned, unreadable)
is listed with the reason it is left out, never silently dropped.
"""

import dataclasses
import logging
import math
import warnings
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from ginlab.experiments.experiment import Experiment, ExperimentError, ReportSpec, Run
from ginlab.experiments.grid import format_value, grid_parameters, short_names
from ginlab.experiments.resources import resources_intro, resources_table, resources_view, suggest
from ginlab.runfolder.atomic import atomic_write_text
from ginlab.runfolder.format import TELEMETRY_PREFIX

log = logging.getLogger(__name__)

RUN_COLUMNS = (
    "run",
    "name",
    "status",
    "epochs",
    "steps",
    "time",
    "start",
    "end",
    "heartbeat",
    "duration",
    "host",
    "reloads",
    "error",
)

# Config values that say how a run was started, not what it computes: never a column of their own.
STARTED_WITH = {"training_loop.reload", "training_loop.reload_allow_changes"}


@dataclasses.dataclass
class Report:
    """What build_report wrote: summary.md's path, its best-configuration sentence (None before any run
    finished) and the suggested sbatch options ({"mem": ..., "time": ...})."""

    summary: Path
    best: str | None
    suggested: dict


def build_report(experiment: Experiment, runs: list[Run]) -> Report:
    """Write the report of the prepared `runs` into `<results>/report/`; return what it says at the top.

    Raises:
        ExperimentError: the report's metric is in no run (naming the metrics there are), or its x is not a
            grid parameter.
    """
    from ginlab.analysis import load_histories, load_runs

    spec = experiment.report
    folder = experiment.paths.report
    folder.mkdir(parents=True, exist_ok=True)
    parameters = grid_parameters([run.params for run in runs])
    short = short_names(parameters)
    if spec.x is not None and spec.x not in parameters:
        raise ExperimentError(
            f"The report's x {spec.x!r} is not a grid parameter of {experiment.name}; the grid's parameters: "
            f"{', '.join(parameters)}. Change ReportSpec(x=...) in main.py."
        )
    x = spec.x or next((p for p in parameters if p != spec.over), parameters[0])
    over = spec.over if spec.over in parameters else None
    groups = [p for p in parameters if p != over]

    started = [str(run.save_dir) for run in runs if (run.save_dir / "meta.json").is_file()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # unreadable runs are listed in the report instead
        loaded = load_runs(started, on_error="warn") if started else pd.DataFrame(columns=list(RUN_COLUMNS))
    unreadable = dict(loaded.attrs.get("unreadable", {}))
    table = runs_table(runs, loaded, short, unreadable)
    check_metric(spec, table)

    finished = table[table["status"] == "finished"]
    best = best_table(finished, groups, short, spec)
    table.drop(columns=["path"]).to_csv(folder / "runs.csv", index=False)
    best.to_csv(folder / "best.csv", index=False)

    figures = []
    if len(finished):
        from ginlab.experiments import figures as plots

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            histories = load_histories(list(finished["path"]), on_error="warn")
        curves = plots.save_learning_curves(
            experiment.name, finished, histories, groups, short, spec, folder / "curves.png"
        )
        if curves:
            figures.append(("Learning curves", curves))
        final = plots.save_final_against_x(
            experiment.name, finished, x, groups, short, spec, folder / f"final_vs_{short[x]}.png"
        )
        figures.append((f"Final {spec.metric} against {short[x]}", final))

    from ginlab.experiments.backends.slurm import submitted_options

    by_name = {str(run.name): dict(loaded_row) for run, loaded_row in _loaded_rows(runs, loaded)}
    resources = resources_table(
        [run.name for run in runs], by_name, submitted_options(experiment.paths.slurm)
    )
    resources.to_csv(folder / "resources.csv", index=False)
    suggested = suggest(resources)

    summary = summary_markdown(experiment, table, best, figures, short, spec, over)
    section = resources_intro(suggested) + markdown_table(resources_view(resources))
    summary += "\n" + "\n".join(section) + "\n"
    atomic_write_text(folder / "summary.md", summary)
    log.info("report written to %s", folder)
    return Report(folder / "summary.md", best_sentence(best, short, spec, over), suggested)


def _loaded_rows(runs: list[Run], loaded: pd.DataFrame):
    """(run, its load_runs row) for each prepared run that has one."""
    by_path = {str(row["run"]): row for _, row in loaded.iterrows()} if len(loaded) else {}
    for run in runs:
        row = by_path.get(str(run.save_dir))
        if row is not None:
            yield run, row


def runs_table(runs: list[Run], loaded: pd.DataFrame, short: dict, unreadable: dict) -> pd.DataFrame:
    """One row per prepared run: name, grid values (short names), other varying config values, status,
    epochs, final/best/test metrics, and where to look when it did not finish."""
    by_path = {str(row["run"]): row for _, row in loaded.iterrows()} if len(loaded) else {}
    config_columns = [
        c for c in loaded.columns if c not in RUN_COLUMNS and "/" not in c and c not in ("monitor", "mode")
    ]
    grid_columns = {
        c for c in config_columns for p in short if p == c or p.endswith("." + c) or c.endswith("." + p)
    }
    varying = [
        c
        for c in config_columns
        if c not in grid_columns and c not in STARTED_WITH and loaded[c].astype(str).nunique() > 1
    ]
    metric_columns = [
        c
        for c in loaded.columns
        if c.split("/")[0] in ("final", "best", "test")
        and c.split("/")[-1] not in ("epoch", "step", "time", "lr", "checkpoint")
        and not c.split("/")[-1].startswith(TELEMETRY_PREFIX)  # in the resources table instead
    ]
    rows = []
    for run in runs:
        row = {"name": run.name, **{short[p]: v for p, v in run.params.items()}}
        found = by_path.get(str(run.save_dir))
        if found is None:
            reason = unreadable.get(str(run.save_dir))
            row.update(status="unreadable" if reason else "missing", epochs=0, note=reason or "never started")
        else:
            row.update({c: found[c] for c in varying})
            row.update(status=found["status"], epochs=found["epochs"], note=note_for(found, run))
            row.update({c: found[c] for c in metric_columns})
        row["path"] = str(run.save_dir)
        rows.append(row)
    columns = ["name", *short.values(), *varying, "status", "epochs", *metric_columns, "note", "path"]
    return pd.DataFrame(rows).reindex(columns=columns)


def note_for(row, run: Run) -> str:
    """Why a run is not among the results (empty for a finished run)."""
    status = row["status"]
    error = row["error"] if isinstance(row["error"], str) else ""
    if status == "finished":
        return ""
    if status == "failed":
        return f"{error or 'failed'}; log: {run.save_dir / 'log.txt'}"
    if status in ("diverged", "pruned"):
        said = error.split(": ", 1)[-1].split(". ")[0] if error else ""
        why = "it would diverge again" if status == "diverged" else "it was stopped on purpose"
        return f"{status}{': ' + said if said else ''}; not a result, and not retried ({why})"
    if status == "interrupted":
        return "interrupted with a checkpoint: `run` continues it"
    if status == "stale":
        return f"died without saying so (last heartbeat {row['heartbeat']}): `run` continues it"
    if status == "running":
        return f"running on {row['host']}"
    return status


def check_metric(spec: ReportSpec, table: pd.DataFrame) -> None:
    finished = table[table["status"] == "finished"]
    if len(finished) and f"final/{spec.metric}" not in table.columns:
        available = sorted(c.split("/", 1)[1] for c in table.columns if c.startswith("final/"))
        raise ExperimentError(
            f"The report's metric {spec.metric!r} is in no run's summary. "
            f"Metrics there: {', '.join(available)}. Change ReportSpec(metric=...) in main.py."
        )


def best_table(finished: pd.DataFrame, groups: list[str], short: dict, spec: ReportSpec) -> pd.DataFrame:
    """Mean, std and n over seeds of the final/best/test metrics per configuration, best first."""
    keys = [short[p] for p in groups]
    metrics = [
        c
        for c in (
            f"final/{spec.metric}",
            f"best/{spec.metric}",
            f"test/{spec.metric.replace('val_', 'test_')}",
            "final/val_loss",
        )
        if c in finished.columns
    ]
    metrics = list(dict.fromkeys(metrics))
    if not len(finished) or not metrics:
        return pd.DataFrame(columns=[*keys, "n"])
    frame = finished.copy()
    for column in metrics:
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    grouped = frame.groupby(keys, dropna=False, sort=False) if keys else frame.groupby(lambda _: 0)
    stats = grouped[metrics].agg(["mean", "std"])
    stats.columns = [f"{metric} {stat}" for metric, stat in stats.columns]
    stats["n"] = grouped.size()
    stats = stats.reset_index()
    if not keys:
        stats = stats.drop(columns=stats.columns[0])
    ascending = spec.mode == "min"
    return stats.sort_values(f"final/{spec.metric} mean", ascending=ascending).reset_index(drop=True)


def summary_markdown(
    experiment: Experiment,
    table: pd.DataFrame,
    best: pd.DataFrame,
    figures,
    short: dict,
    spec: ReportSpec,
    over: str | None,
) -> str:
    counts = table["status"].value_counts()
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"# {experiment.name}: report",
        "",
        f"Written {stamp} from {experiment.paths.runs}. "
        f"{len(table)} prepared runs: " + ", ".join(f"{n} {status}" for status, n in counts.items()) + ".",
        "",
        "Grid: " + "; ".join(f"`{p}` ({s}) in {sorted_values(table[s])}" for p, s in short.items()) + ".",
        "",
    ]
    sentence = best_sentence(best, short, spec, over)
    if sentence:
        lines += [f"**Best configuration** {sentence}", ""]
    else:
        lines += ["No run has finished yet: no best configuration.", ""]
    left_out = table[table["status"] != "finished"]
    lines += ["## Runs not in the results", ""]
    if len(left_out):
        lines += [
            (
                f"{len(left_out)} of {len(table)} prepared runs are not in the results (the tables of means "
                "and the figures), each with the reason:"
            ),
            "",
        ]
        lines += markdown_table(left_out[["name", "status", "epochs", "note"]])
    else:
        lines += ["None: every prepared run finished."]
    lines += ["", f"## Best configurations (grouped over {short[over] if over else 'nothing'})", ""]
    lines += markdown_table(best) if len(best) else ["(no finished runs)"]
    for title, path in figures:
        lines += ["", f"## {title}", "", f"![{title}]({Path(path).name})"]
    lines += ["", "## All runs", "", "Also in `runs.csv`; `best.csv` has the table of means.", ""]
    lines += markdown_table(table.drop(columns=["path", "note"]))
    return "\n".join(lines) + "\n"


def best_sentence(best: pd.DataFrame, short: dict, spec: ReportSpec, over: str | None) -> str | None:
    """ "(max of the final val_acc, mean over seed): lr = 0.001: val_acc 0.98 +- 0.002 (n = 3)."; None
    before any run finished."""
    metric = f"final/{spec.metric} mean"
    if not len(best) or metric not in best.columns:
        return None
    top = best.iloc[0]
    keys = ", ".join(f"{s} = {top[s]}" for p, s in short.items() if p != over)
    std = top.get(f"final/{spec.metric} std")
    spread = f" +- {std:.4g}" if isinstance(std, float) and not math.isnan(std) else ""
    return (
        f"({spec.mode} of the final {spec.metric}, mean over {short.get(over, 'runs') if over else 'runs'}): "
        f"{keys or 'the only one'}: {spec.metric} {top[metric]:.4g}{spread} (n = {int(top['n'])})."
    )


def sorted_values(column: pd.Series) -> str:
    values = sorted(set(column.dropna().tolist()), key=lambda v: (str(type(v)), v))
    return (
        "{" + ", ".join(format_value(v) if isinstance(v, (int, float, str)) else str(v) for v in values) + "}"
    )


def markdown_table(frame: pd.DataFrame) -> list[str]:
    def cell(value) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return ""
        if isinstance(value, float):
            return f"{value:.4g}"
        return str(value).replace("|", "\\|").replace("\n", " ")

    header = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return lines
