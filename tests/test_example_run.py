"""results/example_run: a committed run folder that the current code would write, and that loads; and a run
folder of format 1 (ginlab 0.1), which every reader still reads and a reload still continues."""

import inspect
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT, env, read_json, train, tree_snapshot

from ginlab import load_C, load_H, load_runs
from ginlab.runfolder import FORMAT_VERSION, RunFolder

EXAMPLE = ROOT / "results" / "example_run"
FORMAT_1 = Path(__file__).resolve().parent / "fixtures" / "run_format_1"


def test_the_example_run_is_in_the_current_format():
    run = RunFolder(EXAMPLE)
    for path in [run.meta, run.environment, run.config_gin, run.config_json, run.log, run.history, run.steps,
                 run.summary, run.checkpoints / "best.ckpt", run.checkpoints / "last.ckpt", run.bindings]:  # fmt: skip
        assert path.is_file(), f"{path} missing: regenerate results/example_run (see results/README.md)"
    meta = run.read_meta()
    assert meta["format_version"] == FORMAT_VERSION and meta["status"] == "finished"
    assert meta["git"]["dirty"] is False, (
        "regenerate results/example_run from a clean tree (results/README.md)"
    )
    # Every parameter training_loop has today is in the example's config: a new one means regenerate it.
    from ginlab.training.loop import training_loop

    params = {f"training_loop.{p}" for p in inspect.signature(training_loop).parameters} - {
        "training_loop.save_dir", "training_loop.launch"}  # fmt: skip
    assert params == {k for k in load_C(EXAMPLE) if k.startswith("training_loop.")}
    state = torch.load(run.checkpoints / "last.ckpt", weights_only=True)
    assert {"state_dict", "optimizer_states", "loops", "ginlab"} <= set(state)


@pytest.mark.parametrize("folder", [EXAMPLE, FORMAT_1], ids=["current", "format-1"])
def test_the_example_runs_load_with_the_analysis_helpers(folder):
    config = load_C(folder)
    history = load_H(folder)
    assert config["training_loop.model"] == "cnn" and config["training_loop.n_epochs"] == len(history) == 4
    assert history["val_acc"].iloc[-1] > 0.8
    row = load_runs(folder).iloc[0]
    assert row["status"] == "finished"
    assert row["eval/best-test/test_acc"] == pytest.approx(row["test/test_acc"], abs=1e-6)


def test_a_format_1_run_is_evaluated_but_not_continued(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(FORMAT_1, run)
    assert read_json(run / "config.json")["training_loop.log_every_n_steps"] == 20  # format 1's names
    before = tree_snapshot(run)
    proc = train(run, "-b", "training_loop.reload=True#training_loop.n_epochs=5", check=2)
    assert "format_version 1" in proc.stderr and read_json(run / "meta.json")["git"]["commit"] in proc.stderr
    assert tree_snapshot(run) == before
    # bin/evaluate.py rebuilds the model from format 1's config.gin, its settings under their new names.
    evaluate = subprocess.run([sys.executable, str(ROOT / "bin" / "evaluate.py"), str(run)], capture_output=True,
                              text=True, env=env(), cwd=ROOT)  # fmt: skip
    assert evaluate.returncode == 0, evaluate.stderr
    assert read_json(run / "evaluations" / "best-test.json")["metrics"]["test_acc"] == pytest.approx(
        read_json(run / "summary.json")["test"]["test_acc"], abs=1e-6
    )
