"""The report's "resources" table: what each run asked the cluster for against what it used, and the `--mem` /
`--time` to ask for next time.

Used memory is the run's peak resident memory (its processes together: the history's sys_peak_rss_mb, largest
over the epochs, which load_runs gives as max/sys_peak_rss_mb); used time is its training time over all its
sessions (jobs), start-up excluded. Requested values are those of the newest SLURM submission of the run
(slurm/submissions.jsonl); a run that ran locally requested nothing.

Suggestions cover the largest run with a margin, in the units sbatch reads: memory x 1.25 rounded up to
256 MiB (a run that failed counts too: running out of memory is a failure), time x 1.25 + 2 minutes for
start-up and the final test, rounded up to a minute (finished runs only: a failed run's time says nothing
about what finishing takes).
"""

from __future__ import annotations

import math
import re

import pandas as pd

from ginlab.runfolder.format import TELEMETRY_PREFIX

PEAK = f"max/{TELEMETRY_PREFIX}peak_rss_mb"
GPU_PEAK = f"max/{TELEMETRY_PREFIX}gpu_peak_reserved_mb"
MEMORY_MARGIN, MEMORY_STEP_MB = 1.25, 256
TIME_MARGIN, TIME_EXTRA_SECONDS = 1.25, 120
COLUMNS = ["name", "status", "mem_requested_mb", "peak_rss_mb", "gpu_peak_reserved_mb", "time_requested_s",
           "time_used_s", "jobs"]  # fmt: skip


def resources_table(
    names: list[str], loaded_by_name: dict[str, dict], requested: dict[str, dict]
) -> pd.DataFrame:
    """One row per prepared run (COLUMNS): requested and used memory (MiB) and time (seconds), jobs it took.

    Args:
        names: the prepared runs' names, in order.
        loaded_by_name: {name: its load_runs row as a dict} for the runs that have a run folder.
        requested: {name: the sbatch options of its newest submission} (ginlab.experiments.backends.slurm).
    """
    rows = []
    for name in names:
        loaded, options = loaded_by_name.get(name, {}), requested.get(name) or {}
        rows.append({
            "name": name,
            "status": loaded.get("status", "missing"),
            "mem_requested_mb": parse_memory_mb(options.get("mem")),
            "peak_rss_mb": _number(loaded.get(PEAK)),
            "gpu_peak_reserved_mb": _number(loaded.get(GPU_PEAK)),
            "time_requested_s": parse_time_seconds(options.get("time")),
            "time_used_s": _number(loaded.get("time")),
            "jobs": 1 + int(loaded.get("reloads") or 0) if loaded else 0,
        })  # fmt: skip
    return pd.DataFrame(rows, columns=COLUMNS)


def suggest(table: pd.DataFrame) -> dict[str, str | None]:
    """{"mem": "1536M", "time": "00:25:00"}: what to ask for next time (None where no run says)."""
    peaks = pd.to_numeric(table["peak_rss_mb"], errors="coerce").dropna()
    finished = table[table["status"] == "finished"]
    times = pd.to_numeric(finished["time_used_s"], errors="coerce").dropna()
    memory = None
    if len(peaks):
        memory = format_memory(math.ceil(peaks.max() * MEMORY_MARGIN / MEMORY_STEP_MB) * MEMORY_STEP_MB)
    time = None
    if len(times):
        time = format_time(math.ceil((times.max() * TIME_MARGIN + TIME_EXTRA_SECONDS) / 60) * 60)
    return {"mem": memory, "time": time}


def resources_intro(suggested: dict[str, str | None]) -> list[str]:
    """The summary.md section's heading and its sentence with the suggested options (the table follows)."""
    lines = ["## Resources", ""]
    if not (suggested["mem"] or suggested["time"]):
        return [*lines, "No run has recorded its resources yet.", ""]
    options = " ".join(f"--{key} {value}" for key, value in suggested.items() if value)
    return [
        *lines,
        f"Suggested for the next submission: `run --backend slurm {options}` (the largest run's peak "
        f"memory x {MEMORY_MARGIN:g}; the longest training time x {TIME_MARGIN:g} + "
        f"{TIME_EXTRA_SECONDS // 60} min; `resources.csv` has the numbers).",
        "",
    ]


def resources_view(table: pd.DataFrame) -> pd.DataFrame:
    """The table as a person reads it: memory in MiB or GiB, times as sbatch writes them."""
    shown = pd.DataFrame({
        "run": table["name"],
        "status": table["status"],
        "memory requested": table["mem_requested_mb"].map(_memory_cell),
        "memory used (peak)": table["peak_rss_mb"].map(_memory_cell),
        "time requested": table["time_requested_s"].map(_time_cell),
        "time used": table["time_used_s"].map(_time_cell),
        "jobs": table["jobs"],
    })  # fmt: skip
    if table["gpu_peak_reserved_mb"].notna().any():
        shown.insert(4, "GPU memory (peak)", table["gpu_peak_reserved_mb"].map(_memory_cell))
    return shown


def parse_memory_mb(value) -> float | None:
    """sbatch's --mem ("8G", "500M", "1T", "2048": MiB by default) in MiB; None when not given."""
    if value in (None, ""):
        return None
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)B?\s*", str(value), re.IGNORECASE)
    if not match:
        return None
    factor = {"K": 1 / 1024, "": 1, "M": 1, "G": 1024, "T": 1024**2}[match.group(2).upper()]
    return float(match.group(1)) * factor


def parse_time_seconds(value) -> float | None:
    """sbatch's --time ("MM", "MM:SS", "HH:MM:SS", "D-HH", "D-HH:MM", "D-HH:MM:SS") in seconds; None when not
    given or unlimited."""
    if value in (None, ""):
        return None
    text = str(value).strip()
    days = 0
    if "-" in text:
        day, text = text.split("-", 1)
        days = int(day)
        parts = [int(p) for p in text.split(":")] + [0] * (3 - len(text.split(":")))
        hours, minutes, seconds = parts[:3]
    else:
        parts = [int(p) for p in text.split(":")] if re.fullmatch(r"[\d:]+", text) else None
        if parts is None:
            return None  # UNLIMITED, INFINITE
        hours, minutes, seconds = {1: (0, parts[0], 0), 2: (0, *parts), 3: tuple(parts)}[len(parts)]
    return float(((days * 24 + hours) * 60 + minutes) * 60 + seconds)


def format_memory(mb: float) -> str:
    mb = int(math.ceil(mb))
    return f"{mb // 1024}G" if mb % 1024 == 0 else f"{mb}M"


def format_time(seconds: float) -> str:
    seconds = int(math.ceil(seconds))
    days, rest = divmod(seconds, 86400)
    text = f"{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"
    return f"{days}-{text}" if days else text


def _number(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def _memory_cell(mb) -> str:
    if mb is None or (isinstance(mb, float) and math.isnan(mb)):
        return ""
    return f"{mb / 1024:.2f} GiB" if mb >= 1024 else f"{mb:.0f} MiB"


def _time_cell(seconds) -> str:
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return ""
    return format_time(seconds)
