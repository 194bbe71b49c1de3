"""Tests of bin/runs.py, run as a program on run folders written per docs/run-folder.md, and of the library
function behind it (ginlab.analysis.runs_table)."""

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from test_analysis import write_run

from ginlab.analysis.runs_table import monitored_metric, parse_filters, runs_table

ROOT = Path(__file__).parents[1]


def runs_py(*args) -> subprocess.CompletedProcess:
    """bin/runs.py run as a program."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "COLUMNS": "200"}
    command = [sys.executable, str(ROOT / "bin" / "runs.py"), *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, env=env, check=False)


def load_program():
    """bin/runs.py as a module, to call its main() in this process (faster than a new process)."""
    spec = importlib.util.spec_from_file_location("runs_program", ROOT / "bin" / "runs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def run_main(capsys, monkeypatch):
    """Call runs.py's main(argv); gives (exit code, stdout, stderr)."""
    monkeypatch.setenv("COLUMNS", "200")
    program = load_program()

    def call(*args):
        code = program.main([str(arg) for arg in args])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return call


def table_rows(output: str) -> dict[str, list[str]]:
    """{run name: [cells...]} of the printed table (cells are separated by runs of spaces)."""
    rows = {}
    for line in output.splitlines()[1:]:
        if re.match(r"\d+ runs?: ", line):  # the summary line ends the table
            break
        rows[line.split()[0]] = line.split()[1:]
    return rows


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli") / "sweep"
    write_run(root / "lr-0.001", lr=0.001)
    write_run(root / "lr-0.01", lr=0.01, n_epochs=4)
    write_run(
        root / "running", status="running", lr=0.003, heartbeat_age=5, partial_line='{"epoch": 3, "step": 1'
    )
    write_run(root / "stale", status="running", lr=0.03, heartbeat_age=900)
    write_run(root / "failed", status="failed", lr=0.1, epochs=2)
    (root / "no-meta").mkdir()
    (root / "no-meta" / "config.json").write_text("{}")
    return root


def test_is_an_executable_python_program():
    program = ROOT / "bin" / "runs.py"
    assert os.access(program, os.X_OK) and program.read_text().startswith("#!/usr/bin/env python3\n")


def test_lists_status_progress_best_and_age_of_every_run(sweep):
    result = runs_py(sweep)
    assert result.returncode == 0, result.stderr
    header = result.stdout.splitlines()[0].split()
    assert header == ["run", "status", "progress", "best", "val_acc", "(max)", "age"]
    rows = table_rows(result.stdout)
    assert list(rows) == ["failed", "lr-0.001", "lr-0.01", "running", "stale"]
    assert rows["lr-0.001"][:3] == ["finished", "5/5", "0.66"]  # best from summary.json
    assert rows["running"][:3] == ["running", "3/5", "0.58"]  # best so far, from the complete history lines
    assert rows["stale"][0] == "stale" and rows["stale"][3] == "15m"
    assert rows["failed"][:3] == ["failed", "2/5", "0.54"]
    assert "5 runs: 1 failed, 2 finished, 1 running, 1 stale; 1 unreadable" in result.stdout
    assert f"unreadable: {sweep / 'no-meta'}: meta.json is missing (it has config.json)" in result.stdout


def test_sorts_filters_and_shows_config_columns(sweep, run_main):
    code, out, _ = run_main(sweep, "--sort", "best", "-c", "Adam.lr", "--status", "finished,failed")
    assert code == 0 and list(table_rows(out)) == ["lr-0.001", "lr-0.01", "failed"]
    assert table_rows(out)["lr-0.01"][-1] == "0.01"
    _, out, _ = run_main(sweep, "--sort", "age", "--reverse", "-f", "Adam.lr=0.03", "-f", "Adam.lr=0.003")
    assert list(table_rows(out)) == ["stale", "running"]
    _, out, _ = run_main(sweep, "--metric", "val_loss", "-n", "1", "--sort", "best")
    rows = table_rows(out)
    assert "val_loss (min)" in out
    assert list(rows) == ["lr-0.001"] and rows["lr-0.001"][2] == "0.2"


def test_bad_folder_filter_or_status_exits_with_a_message(sweep, run_main):
    result = runs_py(sweep / "nowhere")
    assert result.returncode == 2 and "nowhere: no such run folder or folder of runs" in result.stderr
    code, _, err = run_main(sweep, "-f", "Adam.lrr=0.1")
    assert code == 2 and "close names: Adam.lr" in err
    code, _, err = run_main(sweep, "--status", "runing")
    assert code == 2 and "unknown status runing; statuses are running, stale, finished" in err


def test_each_run_s_monitor_is_paired_with_its_own_mode(tmp_path, run_main):
    # A run without a monitor yet (running: no summary.json) sorts before runs that monitor val_loss (min)
    # and val_acc (max, the majority). Pairing the monitors without gaps with the modes with gaps shifted
    # every mode by one run, so that (val_loss, "") and (val_acc, "min") counted and val_loss won the tie.
    root = tmp_path / "sweep"
    write_run(root / "a-running", status="running", heartbeat_age=5)
    write_run(root / "b-loss", lr=0.01)
    summary = json.loads((root / "b-loss" / "summary.json").read_text())
    summary["monitor"] = {"metric": "val_loss", "mode": "min"}
    (root / "b-loss" / "summary.json").write_text(json.dumps(summary))
    write_run(root / "c-acc", lr=0.001)
    write_run(root / "d-acc", lr=0.003)
    code, out, _ = run_main(root)
    assert code == 0
    assert out.splitlines()[0].split()[3:6] == ["best", "val_acc", "(max)"]
    table = runs_table(root)
    assert (table.metric, table.mode) == ("val_acc", "max")
    assert monitored_metric(table.frame, "val_loss", None) == ("val_loss", "min")  # the mode that run gave


def test_the_table_is_a_library_function_bin_runs_py_only_prints(sweep):
    table = runs_table(sweep, statuses=["finished", "failed"], sort="best")
    assert list(table.frame["name"]) == ["lr-0.001", "lr-0.01", "failed"]  # best val_acc first
    assert table.counts() == {"failed": 1, "finished": 2}
    assert list(table.frame["progress"]) == [1.0, 1.0, 0.4]
    assert list(table.unreadable) == [str(sweep / "no-meta")]
    with pytest.raises(ValueError, match="unknown status runing; statuses are running, stale, finished"):
        runs_table(sweep, statuses=["runing"])
    with pytest.raises(ValueError, match="a filter is NAME=VALUE"):
        parse_filters(["Adam.lr"])
    assert parse_filters(["Adam.lr=0.001", "name=x"]) == {"Adam.lr": 0.001, "name": "x"}
