"""Experiments on the local backend, with the real bin/train.py on the toy data (a few seconds per run).

The main flow is one story, run once per module: prepare a 2 x 2 grid; run it with one slot and press Ctrl-C
in the middle of the second run; run again and SIGKILL the runner itself; run again to the end. Each test
then checks one promise on what that left behind: nothing finished was redone, interrupted runs were reloaded
and are complete, the report is right, a changed config is refused by name.
"""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import ROOT, env, read_json, read_jsonl, tree_snapshot

from ginlab.experiments.backends.classify import effective_status, read_meta
from ginlab.experiments.grid import expand_grid, format_value, point_name, short_names
from ginlab.experiments.progress import estimate_seconds

# ~1.5 s of training per run (4096 samples, 3 epochs): long enough to be interrupted mid-run.
BINDINGS = ["training_loop.n_epochs = 3", "toy.num_samples = 4096"]
GRID = {"torch.optim.Adam.lr": [1e-3, 1e-2], "training_loop.seed": [0, 1]}
NAMES = ["lr=0.001_seed=0", "lr=0.001_seed=1", "lr=0.01_seed=0", "lr=0.01_seed=1"]


def write_experiment(folder: Path, name: str, grid, bindings=(), configs=("configs/toy.gin",)) -> Path:
    """An experiment main.py like experiments/tune_lr/main.py, with its results in folder/results."""
    folder.mkdir(parents=True, exist_ok=True)
    main = folder / "main.py"
    main.write_text(
        textwrap.dedent(f"""\
        from ginlab.experiments import Experiment, ReportSpec, main

        experiment = Experiment(
            name={name!r}, configs={list(configs)!r}, grid={grid!r}, bindings={list(bindings)!r},
            report=ReportSpec(metric="val_acc", mode="max", x="torch.optim.Adam.lr", over="training_loop.seed",
                              labels={{"torch.optim.Adam.lr": "learning rate"}}),
            results_dir={str(folder / "results")!r}, root={str(ROOT)!r})
        if __name__ == "__main__":
            main(experiment)
        """)  # noqa: E501  (the generated main.py's own layout)
    )
    return main


def cli(main: Path, *args, timeout=240, path=None) -> subprocess.CompletedProcess:
    environment = env()
    if path is not None:
        environment["PATH"] = path
    return subprocess.run(
        [sys.executable, str(main), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environment,
        cwd=ROOT,
        check=False,
    )


def start_cli(main: Path, *args, one_core=False) -> subprocess.Popen:
    """main.py as a process; `one_core`: on one CPU (so it sees 1 core, and gives its runs 1 torch thread)."""
    one = {min(os.sched_getaffinity(0))}
    return subprocess.Popen(
        [sys.executable, str(main), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env(),
        cwd=ROOT,
        preexec_fn=(lambda: os.sched_setaffinity(0, one)) if one_core else None,
    )


def wait_for(condition, timeout=120, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def status_of(run_dir: Path) -> str | None:
    try:
        return read_json(run_dir / "meta.json")["status"]
    except (FileNotFoundError, ValueError):
        return None


def live_status(run_dir: Path) -> str | None:
    """As status_of, but "stale" for a "running" run whose process is gone (killed before its handlers)."""
    meta = read_meta(run_dir)
    return effective_status(meta) if meta else None


def training_started(run_dir: Path) -> bool:
    """steps.jsonl has a line: bin/train.py is inside fit, with its signal handlers installed."""
    try:
        return (run_dir / "steps.jsonl").stat().st_size > 0
    except FileNotFoundError:
        return False


# --- grid: names and values ---------------------------------------------------------------------------------


def test_grid_points_are_all_combinations_in_order_with_readable_names():
    points = expand_grid(GRID)
    short = short_names(list(GRID))
    assert short == {"torch.optim.Adam.lr": "lr", "training_loop.seed": "seed"}
    assert [point_name(p, short) for p in points] == NAMES
    assert points[1] == {"torch.optim.Adam.lr": 1e-3, "training_loop.seed": 1}
    assert short_names(["a.x.lr", "b.x.lr", "c.seed"]) == {
        "a.x.lr": "a.x.lr",
        "b.x.lr": "b.x.lr",
        "c.seed": "seed",
    }
    assert [format_value(v) for v in (1e-4, 3, "cnn", (8, 16), True, "@torch.optim.SGD")] == [
        "0.0001",
        "3",
        "'cnn'",
        "(8, 16)",
        "True",
        "@torch.optim.SGD",
    ]
    with pytest.raises(ValueError, match="repeats the point"):
        expand_grid([{"a.b": 1}, {"a.b": 1}])
    with pytest.raises(ValueError, match="'a.b' has no values"):
        expand_grid({"a.b": []})


def test_eta_spreads_the_mean_run_time_over_the_slots():
    assert estimate_seconds([], [1.0], left=3, slots=2) is None
    # mean 10 s; 4 left and one running for 4 s (6 s to go): (40 + 6) / 2
    assert estimate_seconds([8.0, 12.0], [4.0], left=4, slots=2) == pytest.approx(23.0)


# --- prepare ------------------------------------------------------------------------------------------------


def test_prepare_writes_one_config_per_point_and_a_jobs_file_and_is_safe_to_repeat(tmp_path):
    main = write_experiment(tmp_path, "prep", GRID, BINDINGS)
    first = cli(main, "prepare")
    assert first.returncode == 0, first.stdout + first.stderr
    results = tmp_path / "results"
    assert "Prepared 4 runs" in first.stdout and "4 to start" in first.stdout
    assert sorted(p.name for p in (results / "configs").iterdir()) == [f"{n}.gin" for n in sorted(NAMES)]
    point = (results / "configs" / "lr=0.01_seed=1.gin").read_text()
    assert "training_loop.n_epochs = 3\n" in point
    assert "torch.optim.Adam.lr = 0.01\ntraining_loop.seed = 1\n" in point
    jobs = [line for line in (results / "jobs.txt").read_text().splitlines() if not line.startswith("#")]
    assert jobs[3] == (
        f"python bin/train.py {results}/runs/lr=0.01_seed=1 configs/toy.gin "
        f"{results}/configs/lr=0.01_seed=1.gin"
    )
    prepared = read_json(results / "experiment.json")
    assert [r["name"] for r in prepared["runs"]] == NAMES
    assert prepared["runs"][2]["params"] == {"torch.optim.Adam.lr": 0.01, "training_loop.seed": 0}

    (results / "runs" / NAMES[0]).mkdir(parents=True)
    (results / "runs" / NAMES[0] / "keep.txt").write_text("mine")
    before = {p: p.read_bytes() for p in [results / "jobs.txt", *(results / "configs").iterdir()]}
    again = cli(main, "prepare", "--no-check")
    assert again.returncode == 0, again.stdout + again.stderr
    assert {p: p.read_bytes() for p in before} == before
    assert (results / "runs" / NAMES[0] / "keep.txt").read_text() == "mine"


def test_prepare_refuses_a_grid_over_names_that_are_not_gin_parameters(tmp_path):
    grid = {"torch.optim.Adam.lrr": [1e-3], "training_loop.sed": [0, 1]}
    main = write_experiment(tmp_path, "typo", grid)
    result = cli(main, "prepare")
    assert result.returncode == 2
    out = result.stdout
    assert "grid parameter 'torch.optim.Adam.lrr'" in out and "Did you mean: lr?" in out
    assert "grid parameter 'training_loop.sed'" in out and "Did you mean: seed" in out
    assert not (tmp_path / "results").exists()


def test_run_before_prepare_says_to_prepare(tmp_path):
    main = write_experiment(tmp_path, "unprepared", GRID)
    result = cli(main, "run")
    assert result.returncode == 2
    assert "is not prepared" in result.stdout and "run `prepare` first" in result.stdout


def test_slurm_backend_without_sbatch_says_so_and_how_to_run_locally(tmp_path):
    main = write_experiment(tmp_path, "nosbatch", GRID)
    assert cli(main, "prepare", "--no-check").returncode == 0
    python_only = str(Path(sys.executable).parent)  # no sbatch on this PATH
    result = cli(main, "run", "--backend", "slurm", path=python_only)
    assert result.returncode == 2
    assert "`sbatch` not found: SLURM is not installed" in result.stdout
    assert "main.py run --backend local" in result.stdout


# --- the main flow: interrupted twice, then finished --------------------------------------------------------


@pytest.fixture(scope="module")
def flow(tmp_path_factory):
    folder = tmp_path_factory.mktemp("flow")
    main = write_experiment(folder, "flow", GRID, BINDINGS)
    runs = folder / "results" / "runs"
    record = {"main": main, "runs": runs}
    assert cli(main, "prepare", "--no-check").returncode == 0  # the check has its own tests

    # 1. One slot; Ctrl-C (SIGINT to the runner) while the second run trains. The runner gives a run with one
    # slot all its cores as torch threads; on a busy machine (the other test worker) two OpenMP threads spin
    # against each other (measured: 60 s instead of 9 s for a run). On one core, it gives one thread.
    runner = start_cli(main, "run", "--slots", "1", one_core=True)
    wait_for(
        lambda: status_of(runs / NAMES[0]) == "finished" and training_started(runs / NAMES[1]),
        what="the first run to finish and the second to train",
    )
    record["finished_first"] = tree_snapshot(runs / NAMES[0])
    runner.send_signal(signal.SIGINT)
    record["ctrl_c"] = (runner.wait(timeout=60), runner.stdout.read())
    record["after_ctrl_c"] = {name: status_of(runs / name) for name in NAMES}

    # 2. Two slots; the runner is killed (SIGKILL) while the third run trains: its children get SIGTERM from
    # the kernel. (The kill does not wait for the second run, which reloads meanwhile: the third run's
    # training takes about a second, less than a reload's start-up, and would end before it.)
    runner = start_cli(main, "run", "--slots", "2")
    wait_for(lambda: training_started(runs / NAMES[2]), what="the third run to train")
    runner.kill()
    record["killed"] = runner.wait(timeout=10)
    wait_for(
        lambda: all(live_status(runs / n) != "running" for n in NAMES),
        timeout=60,
        what="the orphaned runs to stop",
    )
    record["after_kill"] = {name: live_status(runs / name) for name in NAMES}

    # 3. Again, to the end.
    started = time.monotonic()
    final = cli(main, "run")
    record["final"] = (final.returncode, final.stdout + final.stderr, time.monotonic() - started)
    return record


def test_ctrl_c_stops_the_runs_with_a_checkpoint_and_says_how_to_continue(flow):
    code, output = flow["ctrl_c"]
    assert code == 130, output
    assert "Stopped." in output and "run` continues" in output
    assert flow["after_ctrl_c"] == {
        NAMES[0]: "finished",
        NAMES[1]: "interrupted",
        NAMES[2]: None,
        NAMES[3]: None,
    }


def test_a_killed_runner_leaves_its_runs_interrupted_not_running(flow):
    assert flow["killed"] == -signal.SIGKILL
    statuses = flow["after_kill"]
    assert statuses[NAMES[0]] == "finished"
    assert (
        statuses[NAMES[2]] == "interrupted"
    )  # it was training: SIGTERM via PR_SET_PDEATHSIG, checkpoint, exit 3
    # The reloaded run was somewhere between start-up and its test phase; it stopped, whichever way.
    assert statuses[NAMES[1]] != "running"


def test_running_again_finishes_everything_without_redoing_finished_runs(flow):
    code, output, _ = flow["final"]
    assert code == 0, output
    assert "Every run finished" in output
    runs = flow["runs"]
    assert all(status_of(runs / name) == "finished" for name in NAMES)
    assert tree_snapshot(runs / NAMES[0]) == flow["finished_first"]  # not touched after it finished
    meta = read_json(runs / NAMES[1] / "meta.json")
    assert len(meta["reloads"]) >= 1
    for name in NAMES:  # one history line per epoch, whatever the interruptions
        assert [row["epoch"] for row in read_jsonl(runs / name / "history.jsonl")] == [0, 1, 2]
    logs = (runs.parent / "logs" / f"{NAMES[1]}.log").read_text()
    assert "(reload)" in logs


def test_a_second_run_skips_everything(flow):
    before = {name: tree_snapshot(flow["runs"] / name) for name in NAMES}
    result = cli(flow["main"], "run")
    assert result.returncode == 0
    assert "4 skipped" in result.stdout
    assert {name: tree_snapshot(flow["runs"] / name) for name in NAMES} == before


def test_status_counts_the_runs(flow):
    result = cli(flow["main"], "status")
    assert result.returncode == 0
    assert result.stdout.startswith("4 finished")


def test_report_tables_figures_and_summary(flow):
    result = cli(flow["main"], "report")
    assert result.returncode == 0, result.stdout + result.stderr
    report = flow["runs"].parent / "report"
    runs = pd.read_csv(report / "runs.csv")
    assert list(runs["name"]) == NAMES
    assert list(runs.columns[:5]) == [
        "name",
        "lr",
        "seed",
        "status",
        "epochs",
    ]  # only what varies, then status
    assert {"final/val_acc", "best/val_acc", "final/val_loss"} <= set(runs.columns)
    summaries = {name: read_json(flow["runs"] / name / "summary.json") for name in NAMES}
    assert list(runs["final/val_acc"]) == pytest.approx([summaries[n]["final"]["val_acc"] for n in NAMES])

    best = pd.read_csv(report / "best.csv")
    assert set(best["lr"]) == {0.001, 0.01} and list(best["n"]) == [2, 2]
    for _, row in best.iterrows():
        values = pd.Series(
            [summaries[n]["final"]["val_acc"] for n in NAMES if n.startswith(f"lr={row['lr']}_")]
        )
        assert row["final/val_acc mean"] == pytest.approx(values.mean())
        assert row["final/val_acc std"] == pytest.approx(values.std())
    assert best["final/val_acc mean"].is_monotonic_decreasing  # best first (mode max)

    summary = (report / "summary.md").read_text()
    assert (
        "![Learning curves](curves.png)" in summary
        and "![Final val_acc against lr](final_vs_lr.png)" in summary
    )
    assert f"lr = {best['lr'][0]}" in summary.split("**Best configuration**")[1].splitlines()[0]
    assert "None: every prepared run finished." in summary
    for png in ("curves.png", "final_vs_lr.png"):
        data = (report / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_a_finished_run_with_another_config_is_refused_by_name(flow, tmp_path):
    changed = write_experiment(
        flow["main"].parent, "flow", GRID, ["training_loop.n_epochs = 4", "toy.num_samples = 4096"]
    )
    before = {name: tree_snapshot(flow["runs"] / name) for name in NAMES}
    try:
        not_prepared = cli(changed, "run")
        assert not_prepared.returncode == 2
        assert "grid or bindings changed since `prepare`" in not_prepared.stdout
        prepared = cli(changed, "prepare", "--no-check")
        assert "refused" in prepared.stdout
        result = cli(changed, "run")
        assert result.returncode == 1
        assert "REFUSED lr=0.001_seed=0" in result.stdout
        assert "training_loop.n_epochs: run folder has 3, prepared 4" in result.stdout
        assert "4 refused" in result.stdout
        assert {name: tree_snapshot(flow["runs"] / name) for name in NAMES} == before
    finally:
        write_experiment(flow["main"].parent, "flow", GRID, BINDINGS)
        assert cli(flow["main"], "prepare", "--no-check").returncode == 0


def test_report_and_status_list_runs_that_are_missing(flow):
    bigger = write_experiment(
        flow["main"].parent, "flow", {**GRID, "training_loop.seed": [0, 1, 2]}, BINDINGS
    )
    try:
        assert cli(bigger, "prepare", "--no-check").returncode == 0
        status = cli(bigger, "status")
        assert status.returncode == 1
        assert status.stdout.startswith("4 finished, 2 left (not started)")
        assert "lr=0.01_seed=2" in status.stdout
        assert cli(bigger, "report").returncode == 0
        summary = (flow["runs"].parent / "report" / "summary.md").read_text()
        assert "2 of 6 prepared runs are not finished" in summary
        assert "| lr=0.001_seed=2 | missing | 0 | never started |" in summary
        best = pd.read_csv(flow["runs"].parent / "report" / "best.csv")
        assert list(best["n"]) == [2, 2]  # means over the finished seeds only
    finally:
        write_experiment(flow["main"].parent, "flow", GRID, BINDINGS)
        assert cli(flow["main"], "prepare", "--no-check").returncode == 0


# --- failures -----------------------------------------------------------------------------------------------


def test_a_failing_run_is_retried_once_then_reported_with_its_log(tmp_path):
    # batch_size 0 passes the gin check but fails inside training (exit 1), again on reload.
    main = write_experiment(tmp_path, "fails", {"torch.optim.Adam.lr": [1e-3], "toy.batch_size": [0]})
    assert cli(main, "prepare", "--no-check").returncode == 0
    result = cli(main, "run")
    assert result.returncode == 1
    log = tmp_path / "results" / "logs" / "lr=0.001_batch_size=0.log"
    assert "retrying" in result.stdout
    assert "FAILED lr=0.001_batch_size=0: failed (exit 1): ZeroDivisionError" in result.stdout
    assert str(log) in result.stdout
    attempts = [line for line in log.read_text().splitlines() if " attempt " in line]
    assert len(attempts) == 2 and "attempt 2 (reload)" in attempts[1]

    assert cli(main, "report").returncode == 0
    summary = (tmp_path / "results" / "report" / "summary.md").read_text()
    assert "| lr=0.001_batch_size=0 | failed |" in summary and "ZeroDivisionError" in summary
    assert "No run has finished yet" in summary


def test_report_with_a_metric_no_run_has_names_the_metrics_there_are(flow, tmp_path):
    main = flow["main"]
    text = main.read_text().replace('metric="val_acc"', 'metric="val_accuracy"')
    other = main.parent / "other_metric.py"
    other.write_text(text)
    result = cli(other, "report")
    assert result.returncode == 2
    assert "The report's metric 'val_accuracy' is in no run's summary" in result.stdout
    assert "val_acc" in result.stdout.split("Metrics there:")[1]
