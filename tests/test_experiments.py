"""Experiments on the local backend, with the real bin/train.py on the toy data (a few seconds per run).

The main flow is one story, run once per module: prepare a 2 x 2 grid; run it with one slot and press Ctrl-C
in the middle of the second run; run again and SIGKILL the runner itself; run again to the end. Each test
then checks one promise on what that left behind: nothing finished was redone, interrupted runs were reloaded
and are complete, the report is right, a changed config is refused by name.

Then, each on an experiment of its own: a run that fails in training, one that diverges, one asked for more
epochs, a SIGKILLed bin/train.py (stale for every reader at once), and two runners at once.
"""

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import ROOT, env, read_json, read_jsonl, tree_snapshot

from ginlab.experiments.grid import expand_grid, format_value, point_name, short_names
from ginlab.experiments.progress import estimate_seconds
from ginlab.runfolder import read_meta, run_status

# ~1.5 s of training per run (4096 samples, 3 epochs): long enough to be interrupted mid-run.
BINDINGS = ["training_loop.n_epochs = 3", "toy.num_samples = 4096"]
GRID = {"torch.optim.Adam.lr": [1e-3, 1e-2], "training_loop.seed": [0, 1]}
NAMES = ["lr=0.001_seed=0", "lr=0.001_seed=1", "lr=0.01_seed=0", "lr=0.01_seed=1"]


def write_experiment(
    folder: Path, name: str, grid, bindings=(), configs=("configs/toy.gin",), x="torch.optim.Adam.lr"
) -> Path:
    """An experiment main.py like experiments/tune_lr/main.py, with its results in folder/results; its report
    plots against `x`."""
    folder.mkdir(parents=True, exist_ok=True)
    main = folder / "main.py"
    main.write_text(
        textwrap.dedent(f"""\
        from ginlab.experiments import Experiment, ReportSpec, main

        experiment = Experiment(
            name={name!r}, configs={list(configs)!r}, grid={grid!r}, bindings={list(bindings)!r},
            report=ReportSpec(metric="val_acc", mode="max", x={x!r}, over="training_loop.seed",
                              labels={{"torch.optim.Adam.lr": "learning rate"}}),
            results_dir={str(folder / "results")!r}, root={str(ROOT)!r})
        if __name__ == "__main__":
            main(experiment)
        """)  # noqa: E501  (the generated main.py's own layout)
    )
    return main


def cli(main: Path, *args, timeout=240, path=None, pythonpath=()) -> subprocess.CompletedProcess:
    environment = {**env(pythonpath), "COLUMNS": "250"}  # tables wide enough that no cell is wrapped
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


def start_cli(main: Path, *args, one_core=False, output=subprocess.PIPE) -> subprocess.Popen:
    """main.py as a process; `one_core`: on one CPU (so it sees 1 core, and gives its runs 1 torch thread)."""
    one = {min(os.sched_getaffinity(0))}
    return subprocess.Popen(
        [sys.executable, str(main), *args],
        stdout=output,
        stderr=subprocess.STDOUT,
        text=True,
        env=env(),
        cwd=ROOT,
        preexec_fn=(lambda: os.sched_setaffinity(0, one)) if one_core else None,
    )


def runs_py(folder) -> subprocess.CompletedProcess:
    """bin/runs.py on a folder of runs, as a program."""
    command = [sys.executable, str(ROOT / "bin" / "runs.py"), str(folder)]
    return subprocess.run(
        command, capture_output=True, text=True, env={**env(), "COLUMNS": "200"}, check=False
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
    """As status_of, but "stale" for a "running" run whose process is gone (the one status rule)."""
    if not (run_dir / "meta.json").is_file():
        return None
    return run_status(read_meta(run_dir))


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
    assert jobs[3] == (  # the command both backends run: bin/train.py decides start or continue
        f"python bin/train.py {results}/runs/lr=0.01_seed=1 configs/toy.gin "
        f"{results}/configs/lr=0.01_seed=1.gin -b 'training_loop.reload=\"auto\"'"
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
    # A model setting: a reload cannot change it (ginlab.config.reload), so bin/train.py would refuse it too.
    changed = write_experiment(flow["main"].parent, "flow", GRID, [*BINDINGS, "cnn.dropout = 0.3"])
    before = {name: tree_snapshot(flow["runs"] / name) for name in NAMES}
    try:
        not_prepared = cli(changed, "run")
        assert not_prepared.returncode == 2
        assert "grid or bindings changed since `prepare`" in not_prepared.stdout
        prepared = cli(changed, "prepare", "--no-check")
        assert "4 refused" in prepared.stdout
        result = cli(changed, "run")
        assert result.returncode == 1
        assert "REFUSED lr=0.001_seed=0" in result.stdout
        assert "cnn.dropout: run folder has 0.2, prepared 0.3" in result.stdout
        assert "4 refused" in result.stdout
        assert {name: tree_snapshot(flow["runs"] / name) for name in NAMES} == before
        status = cli(changed, "status")
        assert status.returncode == 1 and status.stdout.startswith("4 refused")
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
        assert "2 of 6 prepared runs are not in the results" in summary
        assert "| lr=0.001_seed=2 | missing | 0 | never started |" in summary
        best = pd.read_csv(flow["runs"].parent / "report" / "best.csv")
        assert list(best["n"]) == [2, 2]  # means over the finished seeds only
    finally:
        write_experiment(flow["main"].parent, "flow", GRID, BINDINGS)
        assert cli(flow["main"], "prepare", "--no-check").returncode == 0


# --- failures -----------------------------------------------------------------------------------------------


# A user's model from a module next to main.py (imported by an `import` line of its .gin file) that raises in
# forward after a few training steps: a failure during training (exit 1), again when the run is continued.
FRAGILE_MODELS = """\
import torch
from ginlab.registry import register_model


@register_model("fragile")
class Fragile(torch.nn.Module):
    def __init__(self, input_shape, num_classes, fail_at=3):
        super().__init__()
        self.linear = torch.nn.Linear(64, num_classes)
        self.calls, self.fail_at = 0, fail_at

    def forward(self, x):
        self.calls += 1
        if self.training and self.calls > self.fail_at:
            raise RuntimeError("fragile model broke on purpose")
        return self.linear(x.flatten(1))
"""


def fragile_config(folder: Path) -> Path:
    (folder / "fragile_models.py").write_text(FRAGILE_MODELS)
    config = folder / "fragile.gin"
    # Only values the run uses: bin/train.py refuses to continue a run whose config files bind a value it
    # never used (configs/toy.gin's cnn.* here), which would turn the retry into a refusal.
    config.write_text(
        "import fragile_models\n"
        'training_loop.model = "fragile"\n'
        'training_loop.datamodule = "toy"\n'
        "training_loop.n_epochs = 3\n"
        "training_loop.optimizer = @torch.optim.Adam\n"
        "torch.optim.Adam.lr = 0.01\n"
        'training_loop.monitor = "val_acc"\n'
        "toy.num_samples = 256\n"
    )
    return config


def test_a_run_that_fails_in_training_is_retried_once_then_reported_with_its_log(tmp_path):
    config = str(fragile_config(tmp_path))
    main = write_experiment(
        tmp_path, "fails", {"fragile.fail_at": [3]}, configs=[config], x="fragile.fail_at"
    )
    assert cli(main, "prepare", "--no-check").returncode == 0
    result = cli(main, "run", pythonpath=[tmp_path])
    assert result.returncode == 1, result.stdout
    log = tmp_path / "results" / "logs" / "fail_at=3.log"
    assert "fail_at=3 failed (exit 1): RuntimeError: fragile model broke on purpose" in result.stdout
    assert "retrying" in result.stdout
    assert "FAILED fail_at=3: failed (exit 1): RuntimeError: fragile model broke on purpose" in result.stdout
    assert str(log) in result.stdout
    attempts = [line for line in log.read_text().splitlines() if " attempt " in line]
    assert len(attempts) == 2 and "attempt 2 (reload)" in attempts[1]
    meta = read_json(tmp_path / "results" / "runs" / "fail_at=3" / "meta.json")
    assert meta["status"] == "failed" and len(meta["reloads"]) == 1  # the retry continued the same run

    assert cli(main, "report").returncode == 0
    summary = (tmp_path / "results" / "report" / "summary.md").read_text()
    assert "| fail_at=3 | failed |" in summary and "fragile model broke on purpose" in summary
    assert "No run has finished yet" in summary


def test_a_diverged_run_is_shown_as_such_never_retried_and_not_counted_as_a_result(tmp_path):
    grid = {"torch.optim.SGD.lr": [0.01, 1e9]}
    bindings = ["training_loop.optimizer = @torch.optim.SGD", "training_loop.n_epochs = 2"]
    main = write_experiment(tmp_path, "diverges", grid, bindings, x="torch.optim.SGD.lr")
    names = [point_name(p, short_names(list(grid))) for p in expand_grid(grid)]
    good, bad = names
    runs = tmp_path / "results" / "runs"
    log = tmp_path / "results" / "logs" / f"{bad}.log"
    assert cli(main, "prepare", "--no-check").returncode == 0

    result = cli(main, "run")
    # Nothing is left to do: the diverged run ended for good (running it again would diverge again).
    assert result.returncode == 0, result.stdout
    assert f"DIVERGED {bad}" in result.stdout and "not retried" in result.stdout
    assert "1 finished, 1 diverged" in result.stdout or "1 diverged, 1 finished" in result.stdout
    meta = read_json(runs / bad / "meta.json")
    assert meta["status"] == "diverged" and meta["exit_code"] == 4
    assert len([line for line in log.read_text().splitlines() if " attempt " in line]) == 1

    again = cli(main, "run")
    assert again.returncode == 0 and "1 skipped" in again.stdout and "1 diverged" in again.stdout
    assert len([line for line in log.read_text().splitlines() if " attempt " in line]) == 1  # not retried

    status = cli(main, "status")
    assert status.returncode == 0 and status.stdout.startswith("1 finished, 1 diverged")
    assert bad in status.stdout and "not retried" in status.stdout

    listed = runs_py(runs)
    rows = {line.split()[0]: line.split()[1] for line in listed.stdout.splitlines()[1:3]}
    assert rows == {good: "finished", bad: "diverged"}, listed.stdout

    from ginlab.analysis import load_runs

    assert dict(zip(*load_runs(runs)[["name", "status"]].T.values, strict=True)) == {
        good: "finished",
        bad: "diverged",
    }

    assert cli(main, "report").returncode == 0
    report = tmp_path / "results" / "report"
    best = pd.read_csv(report / "best.csv")
    assert list(best["lr"]) == [0.01] and list(best["n"]) == [1]  # the diverged run is no result
    summary = (report / "summary.md").read_text()
    left_out = summary.split("## Runs not in the results")[1].split("##")[0]
    assert f"| {bad} | diverged |" in left_out and "not a result, and not retried" in left_out
    assert "the training loss is nan" in left_out or "the training loss is inf" in left_out

    # "pruned" (what a hyperparameter search will record for a run it stopped) is shown and kept the same way.
    meta_path = runs / bad / "meta.json"
    meta_path.write_text(json.dumps({**read_json(meta_path), "status": "pruned", "error": None}))
    again = cli(main, "run")
    assert again.returncode == 0 and "1 pruned" in again.stdout, again.stdout
    assert len([line for line in log.read_text().splitlines() if " attempt " in line]) == 1
    assert cli(main, "status").stdout.startswith("1 finished, 1 pruned")
    assert runs_py(runs).stdout.splitlines()[2].split()[:2] == [bad, "pruned"]
    assert cli(main, "report").returncode == 0
    assert f"| {bad} | pruned |" in (report / "summary.md").read_text()
    assert list(pd.read_csv(report / "best.csv")["n"]) == [1]


def test_a_finished_run_asked_for_more_epochs_is_extended_not_refused(tmp_path):
    main = write_experiment(tmp_path, "extend", {"training_loop.seed": [0]}, ["training_loop.n_epochs = 1"])
    run = tmp_path / "results" / "runs" / "seed=0"
    assert cli(main, "prepare", "--no-check").returncode == 0
    assert cli(main, "run").returncode == 0
    assert len(read_jsonl(run / "history.jsonl")) == 1

    longer = write_experiment(tmp_path, "extend", {"training_loop.seed": [0]}, ["training_loop.n_epochs = 2"])
    prepared = cli(longer, "prepare", "--no-check")
    assert "1 to extend" in prepared.stdout, prepared.stdout  # bookkeeping: no conflict
    status = cli(longer, "status")
    assert status.returncode == 1 and status.stdout.startswith("1 to extend")
    result = cli(longer, "run")
    assert result.returncode == 0, result.stdout
    assert "continuing seed=0" in result.stdout
    assert [row["epoch"] for row in read_jsonl(run / "history.jsonl")] == [0, 1]
    meta = read_json(run / "meta.json")
    assert meta["status"] == "finished" and len(meta["reloads"]) == 1
    assert cli(longer, "status").returncode == 0


def test_report_with_a_metric_no_run_has_names_the_metrics_there_are(flow, tmp_path):
    main = flow["main"]
    text = main.read_text().replace('metric="val_acc"', 'metric="val_accuracy"')
    other = main.parent / "other_metric.py"
    other.write_text(text)
    result = cli(other, "report")
    assert result.returncode == 2
    assert "The report's metric 'val_accuracy' is in no run's summary" in result.stdout
    assert "val_acc" in result.stdout.split("Metrics there:")[1]


# --- one status rule, one runner per run --------------------------------------------------------------------


def test_a_sigkilled_run_is_stale_at_once_for_runs_py_load_runs_and_status(tmp_path):
    # Issue 12 case 13. Its meta.json still says "running" with a fresh heartbeat; on this host the process
    # check says at once that it is gone. Before, bin/runs.py and load_runs said "running" for 5 minutes.
    bindings = ["training_loop.n_epochs = 50", "toy.num_samples = 4096"]
    main = write_experiment(tmp_path, "killed", {"training_loop.seed": [0]}, bindings)
    assert cli(main, "prepare", "--no-check").returncode == 0
    run = tmp_path / "results" / "runs" / "seed=0"
    line = [line for line in (tmp_path / "results" / "jobs.txt").read_text().splitlines() if line[:1] != "#"]
    command = [sys.executable, *shlex.split(line[0])[1:]]  # a line of jobs.txt, as a user would run it
    process = subprocess.Popen(
        command, cwd=ROOT, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for(lambda: training_started(run), what="the run to train")
    finally:
        process.kill()
        process.wait()
    killed_at = time.monotonic()
    meta = read_json(run / "meta.json")
    assert meta["status"] == "running" and meta["pid"] == process.pid

    listed = runs_py(run.parent)
    assert listed.stdout.splitlines()[1].split()[:2] == ["seed=0", "stale"], listed.stdout

    from ginlab.analysis import load_runs

    assert list(load_runs(run.parent)["status"]) == ["stale"]
    status = cli(main, "status")
    assert status.stdout.startswith("1 stale (died silently)"), status.stdout
    assert time.monotonic() - killed_at < 120  # well within the 5 minutes a heartbeat takes to go stale


def test_a_run_folder_another_bin_train_py_is_starting_is_left_to_it(tmp_path):
    # Between taking the run folder's lock and writing meta.json, a bin/train.py (started by hand from
    # jobs.txt, or left by a killed runner) has the folder: a runner must wait for it, not start a second one.
    main = write_experiment(tmp_path, "starting", {"training_loop.seed": [0]})
    assert cli(main, "prepare", "--no-check").returncode == 0
    run = tmp_path / "results" / "runs" / "seed=0"
    run.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run / ".lock").touch()
        info = {"host": socket.gethostname(), "pid": holder.pid, "started": "2026-12-03T17:00:00+00:00"}
        (run / ".lock.json").write_text(json.dumps(info))
        status = cli(main, "status")
        assert status.stdout.startswith("1 starting"), status.stdout
        assert (
            f"being started by another process (host {socket.gethostname()}, pid {holder.pid})"
            in status.stdout
        )
    finally:
        holder.kill()
        holder.wait()
    assert cli(main, "status").stdout.startswith("1 left (not started)")  # a dead writer's file is no writer


def test_two_runners_at_once_share_the_runs_instead_of_failing_each_other_s(tmp_path):
    # Issue 12 case 15. Before: each runner started every run; the second bin/train.py of a run found the
    # folder locked and exited 2, and each runner reported the other's run as "FAILED (exit 2)".
    main = write_experiment(tmp_path, "twice", {"training_loop.seed": [0, 1]}, ["training_loop.n_epochs = 1"])
    assert cli(main, "prepare", "--no-check").returncode == 0
    outputs = [tmp_path / "first.out", tmp_path / "second.out"]
    runners = []
    for output in outputs:
        with open(output, "w") as out:
            runners.append(start_cli(main, "run", "--slots", "1", output=out))
    codes = [runner.wait(timeout=300) for runner in runners]
    texts = [output.read_text() for output in outputs]
    assert codes == [0, 0], texts
    assert not any("FAILED" in text or "exit 2" in text for text in texts), texts
    assert any("claimed by the runner pid" in text and "waiting for it" in text for text in texts), texts
    runs = tmp_path / "results" / "runs"
    for name in ("seed=0", "seed=1"):
        meta = read_json(runs / name / "meta.json")
        assert meta["status"] == "finished" and meta["reloads"] == []  # trained once, by one runner
        log = (tmp_path / "results" / "logs" / f"{name}.log").read_text()
        assert len([line for line in log.splitlines() if " attempt " in line]) == 1, log
        assert sum(f"finished {name} in" in text for text in texts) == 1  # by one runner ...
        assert sum(f"{name} was finished by another" in text for text in texts) <= 1  # ... the other waited
