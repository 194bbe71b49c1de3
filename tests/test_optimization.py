"""Classifier's own optimizer step (Lightning's manual optimization): clipping, LR schedules, precision, and
reloading runs saved while Classifier still used Lightning's automatic optimization."""

import shutil

import pytest
import pytorch_lightning as pl
import torch
from conftest import ROOT, read_json, read_jsonl, train

from ginlab.data.toy import Toy
from ginlab.training.task import Classifier

TOY = ROOT / "configs" / "toy.gin"


def one_step_update_norm(gradient_clip_val):
    """Norm of the parameter change made by one SGD(lr=1) step on a toy batch."""
    torch.manual_seed(0)
    dm = Toy(num_samples=128, batch_size=32)
    dm.setup()
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, dm.num_classes))
    before = torch.cat([p.detach().clone().flatten() for p in net.parameters()])
    module = Classifier(net, torch.optim.SGD(net.parameters(), lr=1.0), gradient_clip_val=gradient_clip_val)
    trainer = pl.Trainer(
        max_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    trainer.fit(module, datamodule=dm)
    assert trainer.global_step == 1
    after = torch.cat([p.detach().flatten() for p in net.parameters()])
    return float((after - before).norm())


def test_gradient_clipping_bounds_the_update_by_the_gradient_norm():
    unclipped = one_step_update_norm(None)
    clipped = one_step_update_norm(1e-3)
    assert unclipped > 0.05
    assert clipped == pytest.approx(1e-3, rel=1e-3)  # SGD with lr 1: the update is the clipped gradient


def test_gradient_clipping_is_wired_from_the_config(tmp_path):
    from ginlab.config import parse
    from ginlab.training.loop import build_from_config

    parse([TOY], ["training_loop.gradient_clip_val=0.5"])
    module = build_from_config().module
    assert (
        isinstance(module, Classifier)
        and module.gradient_clip_val == 0.5
        and not module.automatic_optimization
    )


def test_an_epoch_schedule_steps_once_per_epoch(tmp_path):
    train(
        tmp_path / "run",
        TOY,
        "-b",
        "training_loop.lr_scheduler=@torch.optim.lr_scheduler.StepLR#"
        "torch.optim.lr_scheduler.StepLR.step_size=1#torch.optim.lr_scheduler.StepLR.gamma=0.5",
        check=0,
    )
    lrs = [row["lr"] for row in read_jsonl(tmp_path / "run" / "history.jsonl")]
    # toy.gin: Adam lr 1e-2, 3 epochs; each row shows the rate its epoch trained with
    assert lrs == pytest.approx([1e-2, 5e-3, 2.5e-3])
    steps = [row for row in read_jsonl(tmp_path / "run" / "steps.jsonl")]
    assert {row["lr"] for row in steps if row["epoch"] == 0} == {1e-2}  # not stepped within an epoch


def test_reduce_on_plateau_sees_each_epochs_val_loss(tmp_path):
    train(
        tmp_path / "run",
        TOY,
        "-b",
        "training_loop.lr_scheduler=@torch.optim.lr_scheduler.ReduceLROnPlateau#"
        "torch.optim.lr_scheduler.ReduceLROnPlateau.patience=0#"
        "torch.optim.lr_scheduler.ReduceLROnPlateau.factor=0.5#training_loop.n_epochs=4#"
        # "max" on a falling loss: most epochs count as no improvement, so the lr is cut
        "torch.optim.lr_scheduler.ReduceLROnPlateau.mode='max'",
        check=0,
    )
    rows = read_jsonl(tmp_path / "run" / "history.jsonl")
    # Replay: the same scheduler fed the recorded val_loss once per epoch must give the recorded lrs.
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1e-2)
    replay = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", patience=0, factor=0.5)
    expected = []
    for row in rows:  # the rate the epoch trained with, then the step its val_loss makes
        expected.append(optimizer.param_groups[0]["lr"])
        replay.step(row["val_loss"])
    assert [row["lr"] for row in rows] == pytest.approx(expected)
    assert len(set(expected)) > 1, "the test needs at least one reduction to mean anything"


def test_bf16_mixed_precision_trains(tmp_path):
    train(
        tmp_path / "run",
        TOY,
        "-b",
        "trainer.precision='bf16-mixed'#training_loop.gradient_clip_val=1.0",
        check=0,
    )
    summary = read_json(tmp_path / "run" / "summary.json")
    assert summary["steps"] == 18 and summary["test"]["test_acc"] > 0.3


def test_swa_callback_replaces_and_steps_the_schedule(tmp_path):
    # SWA from the second epoch (its swa_epoch_start counts from 1), annealing to its lr over two epochs, then
    # (the CNN has batch norm) one extra epoch of forward passes only, to refresh the statistics.
    train(
        tmp_path / "run",
        TOY,
        "-b",
        'training_loop.callbacks=["swa"]#swa.swa_lrs=0.05#swa.swa_epoch_start=2#swa.annealing_epochs=2',
        check=0,
    )
    rows = read_jsonl(tmp_path / "run" / "history.jsonl")
    # The rate each epoch trained with: SWALR starts at epoch 2 from the rate in force and anneals to 0.05 at
    # the end of each epoch; the batch-norm epoch reads the last one.
    assert [row["lr"] for row in rows] == pytest.approx([1e-2, 1e-2, 0.03, 0.05])
    assert [row["step"] for row in rows] == [6, 12, 18, 18]  # the batch-norm epoch makes no optimizer step


def as_saved_by_automatic_optimization(checkpoint_file):
    """Rewrite a checkpoint's loop progress as ginlab saved it while Classifier used automatic optimization:
    the step count in the automatic loop's progress, the manual loop's progress at zero."""
    state = torch.load(checkpoint_file, weights_only=True)
    loops = state["loops"]["fit_loop"]
    manual = loops["epoch_loop.manual_optimization.optim_step_progress"]
    automatic = loops["epoch_loop.automatic_optimization.optim_progress"]
    automatic["optimizer"]["step"] = {k: dict(v) for k, v in manual.items()}
    automatic["optimizer"]["zero_grad"] = {k: {**v, "started": v["completed"]} for k, v in manual.items()}
    loops["epoch_loop.manual_optimization.optim_step_progress"] = {
        k: {key: 0 for key in v} for k, v in manual.items()
    }
    torch.save(state, checkpoint_file)


def test_a_run_saved_with_automatic_optimization_continues_exactly(tmp_path):
    train(tmp_path / "reference", TOY, check=0)
    train(tmp_path / "old", TOY, "-b", "training_loop.n_epochs=2", check=0)
    for checkpoint in (tmp_path / "old" / "checkpoints").glob("step-*.ckpt"):
        as_saved_by_automatic_optimization(checkpoint)
    train(tmp_path / "old", "-b", "training_loop.reload=True#training_loop.n_epochs=3", check=0)

    def without_time(rows):  # without what is measured: the time and the sys_* resource columns
        return [{k: v for k, v in row.items() if k != "time" and not k.startswith("sys_")} for row in rows]

    for name in ("history.jsonl", "steps.jsonl"):
        assert without_time(read_jsonl(tmp_path / "old" / name)) == without_time(
            read_jsonl(tmp_path / "reference" / name)
        )
    old = torch.load(tmp_path / "old" / "checkpoints" / "last.ckpt", weights_only=True)
    reference = torch.load(tmp_path / "reference" / "checkpoints" / "last.ckpt", weights_only=True)
    assert old["global_step"] == reference["global_step"] == 18
    for key, value in reference["state_dict"].items():
        assert torch.equal(old["state_dict"][key], value), key


def test_a_copied_run_folder_keeps_working(tmp_path):
    # The committed example run (a copy of it) continues from its checkpoint to more epochs.
    run = tmp_path / "example_run"
    shutil.copytree(ROOT / "results" / "example_run", run)
    train(run, "-b", "training_loop.reload=True#training_loop.n_epochs=5", check=0)
    summary = read_json(run / "summary.json")
    assert summary["epochs"] == 5 and summary["steps"] == 100


def test_the_profiler_reports_into_the_run_folder(tmp_path):
    train(tmp_path / "run", TOY, "-b", 'trainer.profiler="simple"', check=0)
    report = (tmp_path / "run" / "profile" / "fit-profile.txt").read_text()
    assert "run_training_batch" in report and "[Callback]Checkpointer.on_train_epoch_end" in report


def test_an_unknown_profiler_is_a_configuration_error(tmp_path):
    proc = train(tmp_path / "run", TOY, "-b", 'trainer.profiler="simpel"', check=2)
    assert "trainer.profiler = 'simpel'" in proc.stderr
    assert "expected one of 'advanced', 'pytorch', 'simple' or None" in proc.stderr
    assert not (tmp_path / "run").exists()


def test_testing_an_earlier_best_checkpoint_keeps_the_runs_clock(tmp_path):
    # "max" val_loss on a falling loss: the best checkpoint is the first epoch's, the final test loads it.
    train(
        tmp_path / "run",
        TOY,
        "-b",
        "training_loop.monitor='val_loss'#training_loop.monitor_mode='max'",
        check=0,
    )
    history, summary = (
        read_jsonl(tmp_path / "run" / "history.jsonl"),
        read_json(tmp_path / "run" / "summary.json"),
    )
    assert summary["best"]["epoch"] < history[-1]["epoch"]
    assert summary["time"] >= history[-1]["time"]
    assert summary["best"]["val_loss"] == max(row["val_loss"] for row in history)
