"""Warm starts (ginlab.workers): a run forked from the warm process is the run bin/train.py would have
written alone, whatever ran before it there; kills of the run or of the warm process leave runs that reload
exactly; the warm process does not grow; a change to ginlab's code is never run with the old code."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, TRAIN, assert_same_run, env, read_json, shared_run
from test_experiments import cli, start_cli, wait_for, write_experiment

from ginlab.workers import WarmStarter
from ginlab.workers.client import start_command

pytestmark = pytest.mark.xdist_group("workers")

ONE_EPOCH = ["-b", "training_loop.n_epochs=1"]
FAILING_MODEL = """
import torch
from ginlab.registry import register_model


@register_model("breaks")
class Breaks(torch.nn.Module):
    def __init__(self, input_shape, num_classes):
        super().__init__()
        self.linear = torch.nn.Linear(64, num_classes)

    def forward(self, x):
        raise RuntimeError("this model breaks on purpose")
"""


def fresh(run, *args) -> subprocess.CompletedProcess:
    """bin/train.py alone, in a fresh interpreter (not through the warm process conftest.train may use)."""
    return subprocess.run(
        [*TRAIN, str(run), *map(str, args)], capture_output=True, text=True, env=env(), cwd=ROOT, timeout=600
    )


def warm(starter: WarmStarter, run: Path, *args, extra_env=None):
    """The same command forked by `starter`; returns the process (its output in RUN.log beside the run)."""
    log = run.parent / f"{run.name}.log"
    environment = {**env(), **(extra_env or {})}
    return starter.spawn([*TRAIN, str(run), *map(str, args)], cwd=ROOT, env=environment, stdout=log)


def output(run: Path) -> str:
    return (run.parent / f"{run.name}.log").read_text()


def wait_for_checkpoint(run: Path, timeout=120) -> None:
    wait_for(lambda: any((run / "checkpoints").glob("step-*.ckpt")), timeout, f"a checkpoint in {run}")


def test_every_shipped_config_trained_warm_after_unrelated_runs_equals_it_trained_alone(tmp_path):
    (tmp_path / "breaking_models.py").write_text(FAILING_MODEL)
    (tmp_path / "breaks.gin").write_text(
        'import breaking_models\ntraining_loop.model = "breaks"\ntraining_loop.datamodule = "toy"\n'
    )
    with WarmStarter() as starter:
        # Runs that leave global state behind in a process that trains them: another model and data, a
        # profiler, MLflow, an exception from the user's model, a divergence, a run stopped by a signal.
        before = tmp_path / "before"
        before.mkdir()
        sequence = [
            (before / "mlp", ["configs/mlp.gin", *ONE_EPOCH, "-b", "mnist.batch_size=256"], 0),
            (before / "profiled", ["configs/toy.gin", "-b", 'trainer.profiler="simple"'], 0),
            (
                before / "mlflow",
                ["configs/toy.gin", "-b", f'mlflow.tracking_uri="sqlite:///{tmp_path / "mlflow.db"}"'],
                0,
            ),
            (before / "breaks", [tmp_path / "breaks.gin"], 1),
            (
                before / "diverges",
                ["configs/toy.gin", "-b", "training_loop.optimizer=@torch.optim.SGD#torch.optim.SGD.lr=1e30"],
                4,
            ),
        ]
        for run, args, expected in sequence:
            process = warm(
                starter, run, *args, extra_env={"PYTHONPATH": f"{tmp_path}{os.pathsep}{env()['PYTHONPATH']}"}
            )
            assert process.wait(timeout=600) == expected, output(run)
        stopped = warm(starter, before / "stopped", "configs/toy.gin", "-b", "toy.num_samples=4096")
        wait_for_checkpoint(before / "stopped")
        shown = Path(f"/proc/{stopped.pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        assert f"bin/train.py {before / 'stopped'} configs/toy.gin" in shown  # what ps shows: the run
        stopped.send_signal(signal.SIGTERM)
        assert stopped.wait(timeout=120) == 3, output(before / "stopped")
        assert "this model breaks on purpose" in output(before / "breaks")

        for config in sorted((ROOT / "configs").glob("*.gin")):
            args = [f"configs/{config.name}", *ONE_EPOCH, "-b", "history.every_n_steps=7"]
            run = tmp_path / f"warm-{config.stem}"
            process = warm(starter, run, *args)
            assert process.wait(timeout=600) == 0, output(run)
            alone = tmp_path / f"alone-{config.stem}"
            assert fresh(alone, *args).returncode == 0
            assert_same_run(run, alone)
            meta = read_json(run / "meta.json")
            command = read_json(alone / "meta.json")["command"]
            assert meta["command"] == [command[0], str(run), *command[2:]]  # as bin/train.py records it
            assert meta["status"] == "finished" and meta["pid"] == process.pid


def test_a_killed_warm_run_and_a_killed_warm_process_leave_runs_that_reload_exactly(
    tmp_path_factory, tmp_path, hard_config
):
    reference = shared_run(tmp_path_factory, "workers-hard", hard_config)
    reload = ["-b", "training_loop.reload=True"]
    with WarmStarter() as starter:
        run = tmp_path / "killed"
        process = warm(starter, run, hard_config)
        wait_for_checkpoint(run)
        process.kill()
        assert process.wait(timeout=60) == -signal.SIGKILL
        assert warm(starter, run, *reload).wait(timeout=600) == 0, output(run)
        assert_same_run(run, reference)

        # The warm process dies: the kernel stops its run with SIGTERM (checkpoint, exit 3, "interrupted"),
        # the run's end is reported as that signal, and the next spawn starts a new warm process.
        run = tmp_path / "orphaned"
        process = warm(starter, run, hard_config)
        wait_for_checkpoint(run)
        first_server = starter.server.pid
        os.kill(first_server, signal.SIGKILL)
        assert process.wait(timeout=120) == -signal.SIGTERM
        assert read_json(run / "meta.json")["status"] == "interrupted"
        assert warm(starter, run, *reload).wait(timeout=600) == 0, output(run)
        assert starter.server.pid != first_server
        assert_same_run(run, reference)


def test_a_run_the_backend_ran_warm_and_that_was_sigkilled_is_retried_by_reload_and_ends_exactly(tmp_path):
    main = write_experiment(
        tmp_path,
        "killed",
        {"training_loop.seed": [0]},
        bindings=["toy.num_samples = 4096"],
        x="training_loop.seed",
    )
    assert cli(main, "prepare", "--no-check").returncode == 0
    runner = start_cli(main, "run", "--slots", "1", one_core=True)  # one torch thread, as `fresh` below
    run = tmp_path / "results" / "runs" / "seed=0"
    wait_for_checkpoint(run)
    pid = read_json(run / "meta.json")["pid"]
    assert pid != runner.pid
    os.kill(pid, signal.SIGKILL)
    out, _ = runner.communicate(timeout=600)
    assert runner.returncode == 0, out
    assert "retrying" in out and "finished seed=0" in out
    assert len(read_json(run / "meta.json")["reloads"]) == 1
    alone = tmp_path / "alone"
    assert (
        fresh(alone, "configs/toy.gin", "-b", "toy.num_samples = 4096#training_loop.seed=0").returncode == 0
    )
    assert_same_run(run, alone)


def test_the_warm_process_does_not_grow_over_many_runs(tmp_path):
    with WarmStarter() as starter:
        sizes = []
        for i in range(25):
            run = tmp_path / f"r{i}"
            process = warm(
                starter, run, "configs/toy.gin", "-b", "training_loop.n_epochs=1#toy.num_samples=64"
            )
            assert process.wait(timeout=300) == 0, output(run)
            sizes.append(resident_mb(starter.server.pid))
    assert max(sizes) <= sizes[0] * 1.10, sizes


def resident_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def test_a_change_to_ginlabs_code_gets_a_new_warm_process_said_once(tmp_path, caplog):
    source = ROOT / "src" / "ginlab" / "training" / "outcome.py"
    times = os.stat(source)
    with WarmStarter() as starter:
        assert warm(starter, tmp_path / "a", "configs/toy.gin", *ONE_EPOCH).wait(timeout=300) == 0
        first = starter.server.pid
        try:
            os.utime(source, ns=(times.st_atime_ns, times.st_mtime_ns + 1_000_000_000))
            assert warm(starter, tmp_path / "b", "configs/toy.gin", *ONE_EPOCH).wait(timeout=300) == 0
        finally:
            os.utime(source, ns=(times.st_atime_ns, times.st_mtime_ns))
        assert starter.server.pid != first and starter.restarts == 1
    assert (
        "ginlab's code changed since the warm process imported it (ginlab/training/outcome.py)" in caplog.text
    )


def test_a_warm_process_that_cannot_start_falls_back_to_fresh_processes_saying_so_once(tmp_path, caplog):
    python = tmp_path / "python"  # an interpreter whose warm process breaks (an import error, say)
    python.write_text(
        "#!/bin/sh\n"
        '[ "$2" = ginlab.workers.server ] && { echo "ImportError: boom" >&2; exit 1; }\n'
        f'exec {sys.executable} "$@"\n'
    )
    python.chmod(0o755)
    starter = WarmStarter(str(python))
    for name in ("a", "b"):
        process = start_command([*TRAIN, str(tmp_path / name), "configs/toy.gin", *ONE_EPOCH], ROOT, env(),
                                tmp_path / f"{name}.log", starter)  # fmt: skip
        assert isinstance(process, subprocess.Popen) and process.wait(timeout=300) == 0
    warnings = [r.getMessage() for r in caplog.records if "fresh process" in r.getMessage()]
    assert len(warnings) == 1 and "ImportError: boom" in warnings[0], caplog.text
