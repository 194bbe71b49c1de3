"""The report's resources table: sbatch's units read as sbatch reads them, suggestions that cover the largest
run with a margin, and a real experiment's report showing requested against used."""

import json

import pandas as pd
import pytest
from conftest import read_json, read_jsonl
from test_experiments import cli, write_experiment

from ginlab.experiments.resources import (
    COLUMNS,
    format_memory,
    format_time,
    parse_memory_mb,
    parse_time_seconds,
    suggest,
)


@pytest.mark.parametrize(
    "text, mib", [("8G", 8192), ("500M", 500), ("2048", 2048), ("1T", 1024**2), ("512K", 0.5), (None, None)]
)
def test_memory_is_read_in_sbatchs_units(text, mib):
    assert parse_memory_mb(text) == mib


@pytest.mark.parametrize(
    "text, seconds",
    [("30", 1800), ("10:30", 630), ("01:00:00", 3600), ("1-02", 93600), ("1-00:30", 88200),
     ("2-00:00:01", 172801), ("UNLIMITED", None), (None, None)],
)  # fmt: skip
def test_time_is_read_in_sbatchs_formats(text, seconds):
    assert parse_time_seconds(text) == seconds


def test_formats_are_what_sbatch_reads():
    assert format_memory(1280) == "1280M" and format_memory(2048) == "2G"
    assert format_time(1620) == "00:27:00" and format_time(90061) == "1-01:01:01"


def test_suggestions_cover_the_largest_run_with_a_margin():
    table = pd.DataFrame(
        [
            ["a", "finished", None, 800.0, None, None, 600.0, 1],
            ["b", "failed", None, 1000.0, None, None, 5000.0, 1],  # out of memory counts; its time does not
            ["c", "finished", None, None, None, None, 1200.0, 2],
        ],
        columns=COLUMNS,
    )
    # 1000 MiB x 1.25 = 1250, up to a multiple of 256: 1280 MiB; 1200 s x 1.25 + 120 s = 27 min.
    assert suggest(table) == {"mem": "1280M", "time": "00:27:00"}
    assert suggest(table.iloc[0:0]) == {"mem": None, "time": None}


def test_the_report_shows_requested_against_used_and_what_to_ask_for_next(tmp_path):
    main = write_experiment(
        tmp_path,
        "res",
        {"training_loop.seed": [0]},
        bindings=["training_loop.n_epochs = 1"],
        x="training_loop.seed",
    )
    assert cli(main, "prepare", "--no-check").returncode == 0
    result = cli(main, "run")
    assert result.returncode == 0, result.stdout[-3000:]
    results = tmp_path / "results"
    # As if the run had been submitted to SLURM with --mem 1G --time 00:01:00 (the record `run` keeps).
    (results / "slurm").mkdir()
    record = {
        "array_id": "7",
        "indices": [0],
        "names": ["seed=0"],
        "options": {"mem": "1G", "time": "00:01:00"},
    }
    (results / "slurm" / "submissions.jsonl").write_text(json.dumps(record) + "\n")
    assert cli(main, "report").returncode == 0

    run = results / "runs" / "seed=0"
    peak = max(row["sys_peak_rss_mb"] for row in read_jsonl(run / "history.jsonl"))
    used = read_json(run / "summary.json")["time"]
    table = pd.read_csv(results / "report" / "resources.csv")
    assert table.loc[0, "name"] == "seed=0" and table.loc[0, "status"] == "finished"
    assert table.loc[0, "mem_requested_mb"] == 1024 and table.loc[0, "time_requested_s"] == 60
    assert table.loc[0, "peak_rss_mb"] == peak and table.loc[0, "time_used_s"] == pytest.approx(used)
    summary = (results / "report" / "summary.md").read_text()
    section = summary.split("## Resources")[1]
    expected = suggest(table)
    assert f"--mem {expected['mem']} --time {expected['time']}" in section
    assert "| seed=0 | finished | 1.00 GiB | " in section and "| 00:01:00 |" in section
    runs_csv = pd.read_csv(results / "report" / "runs.csv")
    assert not [c for c in runs_csv.columns if "sys_" in c]  # resources have their own table
