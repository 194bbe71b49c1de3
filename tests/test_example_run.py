"""results/example_run: a committed run folder that the current code would write, and that loads."""

import inspect
from pathlib import Path

import pytest
import torch

from ginlab import load_C, load_H, load_runs
from ginlab.run_folder import FORMAT_VERSION, RunFolder

EXAMPLE = Path(__file__).resolve().parents[1] / "results" / "example_run"


def test_the_example_run_is_in_the_current_format():
    run = RunFolder(EXAMPLE)
    for path in [
        run.meta,
        run.config_gin,
        run.config_json,
        run.log,
        run.history,
        run.steps,
        run.summary,
        run.checkpoints / "best.ckpt",
        run.checkpoints / "last.ckpt",
        run.configs / "bindings.gin",
    ]:
        assert path.is_file(), f"{path} missing: regenerate results/example_run (see results/README.md)"
    meta = run.read_meta()
    assert meta["format_version"] == FORMAT_VERSION and meta["status"] == "finished"
    # Every parameter training_loop has today is in the example's config: a new one means regenerate it.
    from ginlab.loop import training_loop

    hidden = {"save_dir", "command", "config_files", "bindings", "accepted_changes", "on_folder_ready"}
    params = {f"training_loop.{p}" for p in inspect.signature(training_loop).parameters} - {
        f"training_loop.{p}" for p in hidden
    }
    assert params == {k for k in load_C(EXAMPLE) if k.startswith("training_loop.")}
    state = torch.load(run.checkpoints / "last.ckpt", weights_only=True)
    assert {"state_dict", "optimizer_states", "loops", "ginlab"} <= set(state)


def test_the_example_run_loads_with_the_analysis_helpers():
    config = load_C(EXAMPLE)
    history = load_H(EXAMPLE)
    assert config["training_loop.model"] == "cnn" and config["training_loop.n_epochs"] == len(history) == 4
    assert history["val_acc"].iloc[-1] > 0.8
    runs = load_runs(EXAMPLE)
    row = runs.iloc[0]
    assert row["status"] == "finished"
    assert row["eval/best-test/test_acc"] == pytest.approx(row["test/test_acc"], abs=1e-6)
