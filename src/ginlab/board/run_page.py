"""What the run page shows: a run's config, meta, summary, evaluations, log tail and commands.

Everything is read from the run folder's documented files (docs/run-folder.md) through the public
analysis API (load_meta, load_C) or as plain JSON; a file that is missing or damaged is reported in the
page (`problems`), never raised.
"""

from __future__ import annotations

import json
import os
import shlex
from typing import Any

from ginlab.analysis import RunFolderError, load_C, load_meta

# The page shows at most this much of log.txt at once (its end), and follows it from there.
LOG_TAIL_BYTES = 64 << 10


def load_run_page(path: str, name: str) -> dict[str, Any]:
    """The run page's data for the run folder `path` (shown as `name`)."""
    page: dict[str, Any] = {"name": name, "problems": []}
    try:
        page["meta"] = load_meta(path)
    except (RunFolderError, OSError) as error:
        page["meta"] = None
        page["problems"].append(str(error))
    try:
        page["config"] = load_C(path)
    except (RunFolderError, OSError) as error:
        page["config"] = {}
        if page["meta"] is not None:
            page["problems"].append(str(error))
    page["summary"] = _read_json(os.path.join(path, "summary.json"), page["problems"])
    page["evaluations"] = _evaluations(path, page["problems"])
    page["commands"] = commands(page["meta"], name)
    return page


def commands(meta: dict | None, name: str) -> dict[str, str]:
    """The command lines that reload the run in place and that start it again in a new folder."""
    if not meta or not isinstance(meta.get("command"), list) or len(meta["command"]) < 2:
        return {}
    command = [str(part) for part in meta["command"]]
    cwd = meta.get("cwd") or "."
    program, save_dir = command[0], command[1]
    prefix = f"cd {shlex.quote(cwd)} && "
    rerun = [program, save_dir.rstrip("/") + "-again", *command[2:]]
    return {
        "reload": prefix + shlex.join([program, save_dir, "-b", "training_loop.reload=True"]),
        "rerun": prefix + shlex.join(rerun),
        "original": prefix + shlex.join(command),
    }


def read_log(path: str, offset: int | None = None) -> dict[str, Any]:
    """log.txt from `offset` on (its last LOG_TAIL_BYTES when offset is None or too far back).

    Returns {"offset": where the next read starts, "text": the new text, "cut": True when the start of
    the log was left out}. A log that became shorter (rewritten) is read again from its tail.
    """
    file = os.path.join(path, "log.txt")
    try:
        with open(file, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            if offset is None or offset > size or size - offset > LOG_TAIL_BYTES:
                start = max(0, size - LOG_TAIL_BYTES)
            else:
                start = offset
            f.seek(start)
            data = f.read(size - start)
    except FileNotFoundError:
        return {"offset": 0, "text": "", "cut": False, "missing": True}
    return {
        "offset": start + len(data),
        "text": data.decode("utf-8", errors="replace"),
        "cut": start > 0 and (offset is None or start != offset),
    }


def _read_json(path: str, problems: list[str]) -> Any:
    try:
        with open(path, "rb") as f:
            return json.loads(f.read())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        problems.append(f"{path}: {error}")
        return None


def _evaluations(path: str, problems: list[str]) -> dict[str, Any]:
    folder = os.path.join(path, "evaluations")
    try:
        names = sorted(entry.name for entry in os.scandir(folder) if entry.name.endswith(".json"))
    except OSError:
        return {}
    return {name[: -len(".json")]: _read_json(os.path.join(folder, name), problems) for name in names}
