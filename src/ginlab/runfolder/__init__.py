"""The run folder (docs/run-folder.md), with no torch and no gin: the format in one place.

format      file names, the format version, the statuses
read        the one reader of meta.json, config.json, summary.json, evaluations and the history
status      the one rule for "running" / "stale" / how it ended
writer      RunFolder, the one writer, and plan_start: fresh, reload or refuse, before anything is written
atomic, jsonlines   crash-safe writes; the JSON-lines rule for appended files
"""

from ginlab.runfolder.format import FORMAT_VERSION, READABLE_VERSIONS, STATUSES, RunPaths
from ginlab.runfolder.read import (
    check_format_version,
    parse_time,
    read_config_json,
    read_evaluations,
    read_history,
    read_json,
    read_meta,
    read_steps,
    read_summary,
    why_not_a_run_folder,
)
from ginlab.runfolder.status import describe_owner, run_status
from ginlab.runfolder.writer import RunFolder, Start, nothing_to_do, now, plan_start

__all__ = [
    "FORMAT_VERSION",
    "READABLE_VERSIONS",
    "STATUSES",
    "RunFolder",
    "RunPaths",
    "Start",
    "check_format_version",
    "describe_owner",
    "nothing_to_do",
    "now",
    "parse_time",
    "plan_start",
    "read_config_json",
    "read_evaluations",
    "read_history",
    "read_json",
    "read_meta",
    "read_steps",
    "read_summary",
    "run_status",
    "why_not_a_run_folder",
]
