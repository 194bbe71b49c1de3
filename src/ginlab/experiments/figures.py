"""The report's figures: learning curves with a band over seeds, and the final metric against a parameter."""

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.ticker import MaxNLocator

from ginlab.experiments.experiment import ReportSpec

METRIC_LABELS = {
    "train_loss": "training loss",
    "val_loss": "validation loss",
    "val_acc": "validation accuracy",
    "test_acc": "test accuracy",
    "test_loss": "test loss",
}


def label_of(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric.replace("_", " "))


def parameter_label(parameter: str, short: dict, spec: ReportSpec) -> str:
    named = (spec.labels or {}).get(parameter)
    return f"{named} ({parameter})" if named else parameter


def configuration_label(values: dict, short: dict, n: int) -> str:
    return ", ".join(f"{short[p]} = {v}" for p, v in values.items()) + f"  (n = {n})"


def _configurations(finished: pd.DataFrame, groups: list[str], short: dict):
    """[(values, [run paths])] per configuration, sorted by the grid values."""
    keys = [short[p] for p in groups]
    if not keys:
        return [({}, list(finished["path"]))]
    out = []
    for values, part in finished.groupby(keys, sort=True, dropna=False):
        values = values if isinstance(values, tuple) else (values,)
        out.append((dict(zip(groups, values, strict=True)), list(part["path"])))
    return out


def save_learning_curves(
    name: str,
    finished: pd.DataFrame,
    histories: pd.DataFrame,
    groups: list[str],
    short: dict,
    spec: ReportSpec,
    path: Path,
) -> Path | None:
    """One panel per metric of `spec.curves`: per configuration the mean over seeds and a +-1 std band."""
    metrics = [m for m in spec.curves if m in histories.columns]
    if not metrics or histories.empty:
        return None
    configurations = _configurations(finished, groups, short)
    colours = plt.get_cmap("viridis")(
        [i / max(len(configurations) - 1, 1) * 0.9 for i in range(len(configurations))]
    )
    histories = histories.assign(run=histories["run"].astype(str))
    figure, axes = plt.subplots(1, len(metrics), figsize=(5.2 * len(metrics), 4.2), squeeze=False)
    for axis, metric in zip(axes[0], metrics, strict=True):
        for colour, (values, paths) in zip(colours, configurations, strict=True):
            rows = histories[histories["run"].isin(paths)]
            stats = rows.groupby("epoch")[metric].agg(["mean", "std", "count"])
            epochs = stats.index + 1
            axis.plot(
                epochs, stats["mean"], color=colour, label=configuration_label(values, short, len(paths))
            )
            band = stats["std"].fillna(0)
            axis.fill_between(
                epochs, stats["mean"] - band, stats["mean"] + band, color=colour, alpha=0.2, linewidth=0
            )
        axis.set_xlabel("epoch")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_ylabel(label_of(metric))
        axis.set_title(label_of(metric).capitalize())
        axis.grid(alpha=0.3)
    over = f" over {short[spec.over]}s" if spec.over in short else ""
    figure.suptitle(f"{name}: learning curves, mean and \u00b11 std{over}")
    handles, labels = axes[0][0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=min(len(labels), 4), frameon=False)
    figure.tight_layout(rect=(0, 0.08 + 0.045 * math.ceil(len(labels) / 4), 1, 1))
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def save_final_against_x(
    name: str, finished: pd.DataFrame, x: str, groups: list[str], short: dict, spec: ReportSpec, path: Path
) -> Path:
    """Every run as a dot, the mean over seeds as a line with +-1 std error bars; log x axis if asked."""
    column = f"final/{spec.metric}"
    frame = finished.assign(**{column: pd.to_numeric(finished[column], errors="coerce")})
    others = [p for p in groups if p != x]
    figure, axis = plt.subplots(figsize=(6.4, 4.6))
    lines = _configurations(frame, others, short)
    colours = plt.get_cmap("tab10")(range(len(lines)))
    for colour, (values, paths) in zip(colours, lines, strict=True):
        part = frame[frame["path"].isin(paths)]
        axis.scatter(part[short[x]], part[column], color=colour, alpha=0.45, s=18)
        stats = part.groupby(short[x])[column].agg(["mean", "std", "count"]).sort_index()
        label = "mean \u00b1 std" + (f": {configuration_label(values, short, len(paths))}" if values else "")
        axis.errorbar(
            stats.index,
            stats["mean"],
            yerr=stats["std"].fillna(0),
            color=colour,
            marker="o",
            capsize=3,
            label=label,
        )
    if spec.log_x:
        axis.set_xscale("log")
    axis.set_xlabel(parameter_label(x, short, spec))
    axis.set_ylabel(f"final {label_of(spec.metric)}")
    over = f"\n({len(frame)} runs; dots: single {short[spec.over]}s)" if spec.over in short else ""
    named = (spec.labels or {}).get(x, short[x])
    axis.set_title(f"{name}: final {label_of(spec.metric)} against {named}{over}", fontsize=10)
    axis.grid(alpha=0.3, which="both")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
