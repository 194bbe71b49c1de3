"""LeanEpochLoop (src/ginlab/training/lightning_internals.py): the shorter per-batch path is taken exactly
when nothing would notice, and it trains bitwise the same as Lightning's own path, run folder and checkpoints
included."""

import textwrap
from unittest import mock

import pytest
import pytorch_lightning as pl
import torch
from conftest import HARD_CONFIG, read_json, read_jsonl, shared_run, train
from pytorch_lightning.profilers import SimpleProfiler

from ginlab.data.toy import Toy
from ginlab.models.cnn import CNN
from ginlab.training import lightning_internals
from ginlab.training.profiling import NoProfiler
from ginlab.training.task import Classifier
from ginlab.training.trainer import lean_obstacles


class CountBackward(pl.Callback):
    """Listens to a hook that only Lightning's optimizer and backward wrappers call."""

    def __init__(self):
        self.calls = 0

    def on_after_backward(self, trainer, pl_module):
        self.calls += 1


class OwnModule(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(64, 4)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.cross_entropy(self.layer(x.flatten(1)), y)

    def validation_step(self, batch, batch_idx):
        pass

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.fixture(autouse=True)
def torch_defaults():
    yield
    torch.use_deterministic_algorithms(False)  # the fits below switch it on for the whole process


def fit(module=None, callbacks=(), profiler=None, epochs=2):
    """Train a small dropout CNN (or `module`) on toy data in this process; the trainer and the module."""
    pl.seed_everything(0, verbose=False)
    dm = Toy(num_samples=256, batch_size=32, augment="shift")
    dm.setup()
    if module is None:
        net = CNN(dm.input_shape, dm.num_classes, channels=(8, 16), dropout=0.3)
        module = Classifier(
            net, torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9), gradient_clip_val=1.0
        )
    trainer = pl.Trainer(
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        deterministic=True,
        callbacks=list(callbacks),
        profiler=profiler or NoProfiler(),
        use_distributed_sampler=False,
    )
    loop = lightning_internals.install_epoch_loop(trainer, lean_obstacles)
    trainer.fit(module, datamodule=dm)
    return trainer, module, loop


def test_the_classifier_takes_the_lean_path(monkeypatch):
    backward_calls = []
    monkeypatch.setattr(Classifier, "manual_backward", lambda self, loss: backward_calls.append(1))
    trainer, _, loop = fit()
    assert loop.lean
    assert trainer.global_step == 2 * 6  # 6 batches of 32 per epoch, each counted as an optimizer step
    assert backward_calls == []  # Lightning's backward wrapper was not used


class StepsItsOwnWay(Classifier):
    """A subclass may do anything in its step; here, Lightning's optimizer wrapper, which counts the steps."""

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.cross_entropy(self.net(x), y)
        optimizer = self.optimizers()
        optimizer.zero_grad()
        self.manual_backward(loss)
        optimizer.step()
        return loss


def subclass():
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 4))
    return StepsItsOwnWay(net, torch.optim.SGD(net.parameters(), lr=0.1))


@pytest.mark.parametrize("case", ["backward hook", "mocked hook", "profiler", "own module", "subclass"])
def test_anything_that_would_notice_gets_lightnings_path(case):
    counter = CountBackward()
    mocked = mock.MagicMock(spec=pl.Callback)  # every hook a callable Lightning would call
    mocked.state_key = "mocked"
    kwargs = {
        "backward hook": {"callbacks": [counter]},
        "mocked hook": {"callbacks": [mocked]},
        "profiler": {"profiler": SimpleProfiler()},
        "own module": {"module": OwnModule()},
        "subclass": {"module": subclass()},
    }[case]
    trainer, _, loop = fit(**kwargs)
    assert not loop.lean
    assert trainer.global_step == 12
    reasons = loop.reasons()
    expected = {
        "backward hook": "CountBackward.on_after_backward",
        "mocked hook": "on_after_backward",
        "profiler": "profiler SimpleProfiler",
        "own module": "OwnModule is not ginlab's Classifier",
        "subclass": "StepsItsOwnWay is not ginlab's Classifier",
    }[case]
    assert any(expected in reason for reason in reasons), reasons
    if case == "backward hook":
        assert counter.calls == 12  # the hook is never skipped


def test_both_paths_train_bitwise_the_same():
    lean_trainer, lean, loop = fit()
    full_trainer, full, full_loop = fit(callbacks=[CountBackward()])
    assert loop.lean and not full_loop.lean
    for (name, a), (_, b) in zip(lean.state_dict().items(), full.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    opt_a, opt_b = lean_trainer.optimizers[0].state_dict(), full_trainer.optimizers[0].state_dict()
    for index, state in opt_a["state"].items():
        for key, value in state.items():
            assert torch.equal(value, opt_b["state"][index][key]), (index, key)
    # The loop state a checkpoint holds (what a reload resumes from) is the same too.
    assert lean_trainer.fit_loop.state_dict() == full_trainer.fit_loop.state_dict()
    assert float(lean_trainer.callback_metrics["train_loss"]) == float(
        full_trainer.callback_metrics["train_loss"]
    )


def test_a_callbacks_batch_hooks_and_logging_work_on_the_lean_path():
    class LogsPerBatch(pl.Callback):
        def __init__(self):
            self.seen, self.batch_types = [], set()

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.seen.append(("start", batch_idx, pl_module._current_fx_name))
            self.batch_types.add(type(batch))

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.seen.append(("end", batch_idx, float(outputs["loss"]) > 0))
            pl_module.log("train_batch_idx", float(batch_idx), on_step=False, on_epoch=True, batch_size=1)

    callback = LogsPerBatch()
    trainer, _, loop = fit(callbacks=[callback], epochs=1)
    assert loop.lean
    assert callback.seen == [
        (kind, i, value)
        for i in range(6)
        for kind, value in (("start", "on_train_batch_start"), ("end", True))
    ]
    assert float(trainer.callback_metrics["train_batch_idx"]) == pytest.approx(2.5)  # mean of 0..5
    assert callback.batch_types == {
        list
    }  # what DataLoader's default_convert makes of the (x, y) tuple, as before


def test_a_run_folder_is_the_same_on_both_paths(tmp_path_factory, tmp_path):
    """The run of test_resume.py's reference (lean), against the same run with a backward hook (Lightning's
    path): the same weights, optimizer, history and steps, and the same mid-epoch and
    epoch-end checkpoints."""
    config = tmp_path_factory.mktemp("reference") / "hard.gin"
    config.write_text(HARD_CONFIG)
    lean = shared_run(tmp_path_factory, "reference-workers0", config, "-b", "toy.num_workers=0")
    (tmp_path / "count_backward.py").write_text(
        textwrap.dedent("""
        import pytorch_lightning as pl
        from ginlab.registry import register_callback

        @register_callback("count_backward")
        class CountBackward(pl.Callback):
            def __init__(self):
                self.calls = 0

            def on_after_backward(self, trainer, pl_module):
                self.calls += 1

            def on_train_end(self, trainer, pl_module):
                print(f"backward hook calls: {self.calls}")
    """)
    )
    extra = tmp_path / "extra.gin"
    extra.write_text('import count_backward\ntraining_loop.callbacks = ["count_backward"]\n')
    full = tmp_path / "full"
    proc = train(full, config, extra, "-b", "toy.num_workers=0", check=0, pythonpath=[tmp_path])
    steps = read_json(full / "summary.json")["steps"]
    assert f"backward hook calls: {steps}" in proc.stdout

    def computed(row):  # without what is measured rather than computed: the time, the sys_* resources
        return {k: v for k, v in row.items() if k != "time" and not k.startswith("sys_")}

    for name in ("history.jsonl", "steps.jsonl"):
        assert [computed(row) for row in read_jsonl(lean / name)] == [
            computed(row) for row in read_jsonl(full / name)
        ], name
    assert read_json(lean / "summary.json")["test"] == read_json(full / "summary.json")["test"]
    checkpoints = sorted(p.name for p in (lean / "checkpoints").glob("step-*.ckpt"))
    assert checkpoints == sorted(p.name for p in (full / "checkpoints").glob("step-*.ckpt"))
    for name in [*checkpoints, "best.ckpt"]:
        a = torch.load(lean / "checkpoints" / name, weights_only=True)
        b = torch.load(full / "checkpoints" / name, weights_only=True)
        assert a["loops"] == b["loops"] and a["global_step"] == b["global_step"], name
        for key in a["state_dict"]:
            assert torch.equal(a["state_dict"][key], b["state_dict"][key]), (name, key)
        for index, state in a["optimizer_states"][0]["state"].items():
            for key, value in state.items():
                assert torch.equal(value, b["optimizer_states"][0]["state"][index][key]), (name, index, key)
