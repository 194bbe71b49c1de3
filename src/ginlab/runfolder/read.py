"""The one reader of a run folder's files: meta, config, summary, evaluations and history, never executed.

Every reader of ginlab (the loaders, bin/runs.py, the experiment backends, a reload, bin/evaluate.py) goes
through these functions, so a folder reads one way everywhere: a newer format is refused by all of them,
a damaged file is an error naming it, a file still being written is never read half-way.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ginlab.errors import RunFolderError
from ginlab.runfolder import format as fmt
from ginlab.runfolder import jsonlines

Run = str | os.PathLike


def read_json(path: Run) -> Any:
    """A JSON file's value.

    Raises:
        FileNotFoundError: the file does not exist.
        RunFolderError: it is empty or not valid JSON (ginlab writes these files atomically, so this is
            damage from outside, not a write in progress).
    """
    with open(path, "rb") as f:
        data = f.read()
    if not data.strip():
        raise RunFolderError(f"{os.fspath(path)} is empty: it was damaged after ginlab wrote it")
    try:
        return json.loads(data)
    except ValueError as error:
        raise RunFolderError(f"{os.fspath(path)} is not valid JSON ({error}): it was damaged") from None


def read_meta(run: Run) -> dict[str, Any]:
    """meta.json of a run folder, after checking that this ginlab knows its format version.

    Raises:
        RunFolderError: no such folder, no meta.json (the message lists what the folder holds instead),
            meta.json damaged, or a format version this ginlab does not know.
    """
    run = os.fspath(run)  # plain strings: this runs once per run in load_runs, where pathlib costs show
    try:
        meta = read_json(os.path.join(run, fmt.META))
    except FileNotFoundError:
        raise RunFolderError(why_not_a_run_folder(Path(run))) from None
    except NotADirectoryError:
        raise RunFolderError(f"{run} is a file, not a run folder") from None
    if not isinstance(meta, dict):
        raise RunFolderError(f"{run}: meta.json is not a JSON object: it was damaged")
    check_format_version(meta, run)
    return meta


def check_format_version(meta: dict[str, Any], run: Run) -> None:
    """Raise RunFolderError unless meta's format_version is one this ginlab reads."""
    version = meta.get("format_version")
    if version in fmt.READABLE_VERSIONS and not isinstance(version, bool):
        return
    known = ", ".join(map(str, fmt.READABLE_VERSIONS))
    if version is None:
        problem = "meta.json has no format_version (it was not written by a ginlab run-folder writer)"
    elif isinstance(version, int) and version > max(fmt.READABLE_VERSIONS):
        problem = (
            f"run folder format_version {version} is newer than this ginlab reads ({known}); upgrade ginlab "
            "to read, evaluate or continue it"
        )
    else:
        problem = f"unknown run folder format_version {version!r}"
    raise RunFolderError(f"{os.fspath(run)}: {problem}. This ginlab reads format_version {known}.")


def read_config_json(run: Run) -> dict[str, Any] | None:
    """config.json (the values the run used, flat); None when the run has not written it (yet)."""
    try:
        config = read_json(os.path.join(run, fmt.CONFIG_JSON))
    except FileNotFoundError:
        return None
    if not isinstance(config, dict):
        raise RunFolderError(f"{os.fspath(run)}: config.json is not a JSON object: it was damaged")
    return config


def read_summary(run: Run) -> dict[str, Any] | None:
    """summary.json (final, best and test metrics); None until the run has ended."""
    try:
        summary = read_json(os.path.join(run, fmt.SUMMARY))
    except FileNotFoundError:
        return None
    if not isinstance(summary, dict):
        raise RunFolderError(f"{os.fspath(run)}: summary.json is not a JSON object: it was damaged")
    return summary


def read_evaluations(run: Run) -> dict[str, dict[str, Any]]:
    """bin/evaluate.py results: {"best-test": {"checkpoint": "best", "split": "test", "metrics": {...}}}."""
    folder = os.path.join(run, fmt.EVALUATIONS)
    try:
        names = sorted(entry.name for entry in os.scandir(folder) if entry.name.endswith(".json"))
    except (FileNotFoundError, NotADirectoryError):
        return {}
    evaluations = {}
    for name in names:
        try:
            record = read_json(os.path.join(folder, name))
        except FileNotFoundError:  # replaced between listing and reading
            continue
        if isinstance(record, dict):
            evaluations[name[: -len(".json")]] = record
    return evaluations


def read_history(run: Run) -> list[dict[str, Any]]:
    """history.jsonl's rows, one per finished epoch (a cut last line dropped; [] before the first epoch).

    Raises:
        JsonLinesError: a line before the last one is damaged (the message names file and line).
    """
    return jsonlines.read_records(os.path.join(run, fmt.HISTORY))


def telemetry_maxima(rows: list[dict[str, Any]]) -> dict[str, float]:
    """The largest value of each telemetry (sys_*) column over history rows: what the run needed at most."""
    maxima: dict[str, float] = {}
    for row in rows:
        for key, value in row.items():
            if key.startswith(fmt.TELEMETRY_PREFIX) and isinstance(value, (int, float)) and value == value:
                maxima[key] = max(maxima.get(key, value), value)
    return maxima


def read_steps(run: Run) -> list[dict[str, Any]]:
    """steps.jsonl's rows (see read_history)."""
    return jsonlines.read_records(os.path.join(run, fmt.STEPS))


def parse_time(text: Any) -> datetime | None:
    """An ISO 8601 time as an aware datetime (UTC assumed when it names no zone); None if absent or bad."""
    if not isinstance(text, str):
        return None
    try:
        time = datetime.fromisoformat(text)
    except ValueError:
        return None
    return time if time.tzinfo else time.replace(tzinfo=UTC)


def why_not_a_run_folder(run: Path) -> str:
    """Why `run` (which has no meta.json) is not a run folder, naming what it holds instead."""
    if not run.exists():
        return f"{run}: no such run folder"
    if not run.is_dir():
        return f"{run} is a file, not a run folder"
    present = [name for name in fmt.RUN_FILES if (run / name).exists()]
    if present:
        return f"{run} is not a readable run folder: meta.json is missing (it has {', '.join(present)})"
    inner = sorted(entry.name for entry in os.scandir(run) if (Path(entry.path) / fmt.META).is_file())
    if inner:
        example = ", ".join(inner[:3]) + (", ..." if len(inner) > 3 else "")
        return (
            f"{run} is not a run folder but holds {len(inner)} run folders ({example}): "
            "use load_runs() or load_histories() to read many runs"
        )
    return f"{run} is not a run folder: meta.json is missing (see docs/run-folder.md)"
