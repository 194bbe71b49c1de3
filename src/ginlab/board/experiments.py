"""Experiment folders (docs/experiments.md): their grid, how many of their runs are in which status, and
the report's figures."""

from __future__ import annotations

import json
import os
from collections import Counter
from typing import Any

import pandas as pd

from ginlab.board.paths import is_inside

FIGURES = (".png", ".svg", ".jpg", ".jpeg")
NOT_STARTED = "not started"


def load_experiment(root: str, name: str, folder: str, frame: pd.DataFrame) -> dict[str, Any]:
    """An experiment's page: grid values, run statuses, report files (paths relative to root).

    Args:
        root: the results root (real path).
        name: the experiment folder relative to root.
        folder: its path.
        frame: the runs table (its statuses).
    """
    info: dict[str, Any] = {"name": name, "problems": []}
    try:
        with open(os.path.join(folder, "experiment.json"), "rb") as f:
            data = json.loads(f.read())
    except (OSError, ValueError) as error:
        info["problems"].append(f"{name}/experiment.json cannot be read: {error}")
        data = {}
    runs = data.get("runs") if isinstance(data.get("runs"), list) else []
    info["title"] = data.get("name", os.path.basename(folder))
    info["prepared"] = data.get("prepared")
    grid: dict[str, list] = {}
    for run in runs:
        for key, value in (run.get("params") or {}).items():
            values = grid.setdefault(key, [])
            if value not in values:
                values.append(value)
    info["grid"] = grid
    members = experiment_runs(root, data, folder)
    statuses = frame["status"].to_dict() if len(frame) else {}
    counts = Counter(statuses.get(member, NOT_STARTED) for member in members)
    info["counts"] = dict(counts.most_common())
    info["runs"] = len(members)
    info["report"] = _report(root, os.path.join(folder, "report"))
    return info


def experiment_runs(root: str, data: dict, folder: str) -> list[str]:
    """The board names (relative to root) of the experiment's run folders, in the prepared order."""
    base = data.get("root") or folder
    names = []
    for run in data.get("runs") or []:
        save_dir = str(run.get("save_dir") or "")
        if not save_dir:
            continue
        path = os.path.realpath(save_dir if os.path.isabs(save_dir) else os.path.join(base, save_dir))
        if not is_inside(root, path):
            # The experiment may have been moved with its results: look in its own runs/ folder.
            path = os.path.realpath(os.path.join(folder, "runs", run.get("name", "")))
        if is_inside(root, path):
            names.append(os.path.relpath(path, root))
    return names


def _report(root: str, folder: str) -> dict[str, Any]:
    try:
        names = sorted(entry.name for entry in os.scandir(folder) if entry.is_file())
    except OSError:
        return {"figures": [], "summary": None, "files": []}
    relative = os.path.relpath(folder, root)
    summary = None
    if "summary.md" in names:
        with open(os.path.join(folder, "summary.md"), encoding="utf-8", errors="replace") as f:
            summary = f.read(200_000)
    return {
        "figures": [f"{relative}/{name}" for name in names if name.lower().endswith(FIGURES)],
        "files": [f"{relative}/{name}" for name in names],
        "summary": summary,
    }
