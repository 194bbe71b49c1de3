"""bin/evaluate.py rebuilds model and data from a run folder and reproduces the recorded test metrics."""

import subprocess
import sys

import pandas as pd
import pytest
from conftest import ROOT, env, read_json, train


def evaluate(*args):
    return subprocess.run(
        [sys.executable, str(ROOT / "bin" / "evaluate.py"), *map(str, args)],
        capture_output=True,
        text=True,
        env=env(),
        cwd=ROOT,
        timeout=300,
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("evaluate") / "run"
    train(folder, ROOT / "configs" / "toy.gin", "-b", "toy.num_samples=300", check=0)
    return folder


def test_best_checkpoint_on_test_matches_the_training_run(run):
    proc = evaluate(run)
    assert proc.returncode == 0, proc.stderr
    result = read_json(run / "evaluations" / "best-test.json")
    summary = read_json(run / "summary.json")
    assert result["metrics"]["test_acc"] == pytest.approx(summary["test"]["test_acc"], abs=1e-6)
    assert result["metrics"]["test_loss"] == pytest.approx(summary["test"]["test_loss"], abs=1e-6)
    assert result["step"] == summary["best"]["step"]
    predictions = pd.read_csv(run / "evaluations" / "best-test.predictions.csv")
    assert len(predictions) == result["examples"]
    assert list(predictions.columns[:3]) == ["index", "target", "prediction"]
    scores = predictions.filter(like="score_")
    assert scores.shape[1] == 4 and (scores.sum(axis=1) - 1).abs().max() < 1e-4
    assert (predictions["prediction"] == predictions["target"]).mean() == pytest.approx(
        result["metrics"]["test_acc"], abs=1e-9
    )


def test_last_checkpoint_on_val_and_a_path(run):
    assert evaluate(run, "--checkpoint", "last", "--split", "val").returncode == 0
    result = read_json(run / "evaluations" / "last-val.json")
    history = [line for line in (run / "history.jsonl").read_text().splitlines() if line]
    import json

    assert result["metrics"]["val_acc"] == pytest.approx(json.loads(history[-1])["val_acc"], abs=1e-6)
    step_file = sorted((run / "checkpoints").glob("step-*.ckpt"))[-1]
    assert evaluate(run, "--checkpoint", step_file).returncode == 0
    assert (run / "evaluations" / f"{step_file.stem}-test.json").exists()


def test_bad_input(run, tmp_path):
    proc = evaluate(tmp_path)
    assert proc.returncode == 2 and "not a run folder" in proc.stderr
    proc = evaluate(run, "--checkpoint", "nope")
    assert proc.returncode == 2 and "best.ckpt" in proc.stderr and "last.ckpt" in proc.stderr
    assert evaluate(run, "--split", "bogus").returncode == 2
