"""bin/train.py end to end on generated and real data: the run folder, its values, and the refusals."""

import subprocess

import pytest
import torch
from conftest import ROOT, TRAIN, env, read_json, read_jsonl, train, tree_snapshot


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("runs") / "toy"
    proc = train(
        folder,
        ROOT / "configs" / "toy.gin",
        "-b",
        "training_loop.n_epochs=3#toy.num_samples=320",
        "-b",
        "cnn.dropout=0.1",
        check=0,
    )
    return folder, proc


def test_run_folder_has_every_file(toy_run):
    folder, _ = toy_run
    for name in [
        "meta.json",
        "config.gin",
        "config.json",
        "configs/00-toy.gin",
        "configs/bindings.gin",
        "log.txt",
        "history.jsonl",
        "steps.jsonl",
        "summary.json",
        "checkpoints/last.ckpt",
        "checkpoints/best.ckpt",
    ]:
        assert (folder / name).is_file(), name
    assert list((folder / "tensorboard").glob("events.out.tfevents.*"))
    assert not list(folder.rglob("*.tmp")), "temporary files left behind"


def test_meta_records_where_the_run_comes_from(toy_run):
    folder, _ = toy_run
    meta = read_json(folder / "meta.json")
    assert meta["format_version"] == 2
    assert meta["status"] == "finished" and meta["exit_code"] == 0
    assert meta["started"] <= meta["ended"] and meta["heartbeat"] >= meta["started"]
    assert meta["command"][1:] == [
        str(folder),
        str(ROOT / "configs" / "toy.gin"),
        "-b",
        "training_loop.n_epochs=3#toy.num_samples=320",
        "-b",
        "cnn.dropout=0.1",
    ]
    assert meta["cwd"] == str(ROOT)
    assert meta["versions"]["torch"] == torch.__version__ and meta["versions"]["gin"]
    assert set(meta["git"]) == {"commit", "branch", "dirty", "diff"}
    if (ROOT / ".git").exists():  # the code's repository, whatever the current folder
        import subprocess

        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
        assert meta["git"]["commit"] == head.stdout.strip()
    if meta["git"]["dirty"]:
        assert (folder / "git.diff").is_file()


def test_config_files_hold_the_values_used(toy_run):
    folder, _ = toy_run
    config = read_json(folder / "config.json")
    assert config["training_loop.n_epochs"] == 3  # from -b
    assert config["toy.num_samples"] == 320
    assert config["cnn.dropout"] == 0.1  # the later -b
    assert config["Adam.lr"] == 0.01  # from the file
    assert config["Adam.eps"] == 1e-08  # a default: the operative config holds every value used
    gin_text = (folder / "config.gin").read_text()
    assert "training_loop.n_epochs = 3" in gin_text and "cnn.dropout = 0.1" in gin_text
    assert (folder / "configs" / "00-toy.gin").read_bytes() == (ROOT / "configs" / "toy.gin").read_bytes()
    assert (folder / "configs" / "bindings.gin").read_text().splitlines() == [
        "training_loop.n_epochs=3",
        "toy.num_samples=320",
        "cnn.dropout=0.1",
    ]


def test_history_summary_and_tensorboard_agree(toy_run):
    folder, _ = toy_run
    history = read_jsonl(folder / "history.jsonl")
    assert [row["epoch"] for row in history] == [0, 1, 2]
    steps_per_epoch = history[0]["step"]
    assert [row["step"] for row in history] == [steps_per_epoch * (i + 1) for i in range(3)]
    for row in history:
        assert {"train_loss", "val_loss", "val_acc", "lr", "time"} <= set(row)
        assert 0 <= row["val_acc"] <= 1
    assert history[-1]["train_loss"] < history[0]["train_loss"], "the toy problem is learnable"
    steps = read_jsonl(folder / "steps.jsonl")
    assert [s["step"] for s in steps] == list(range(5, 3 * steps_per_epoch + 1, 5))
    summary = read_json(folder / "summary.json")
    assert summary["final"] == history[-1]
    best = max(history, key=lambda r: r["val_acc"])
    assert summary["best"]["val_acc"] == best["val_acc"] and summary["best"]["epoch"] == best["epoch"]
    assert 0 <= summary["test"]["test_acc"] <= 1 and summary["test"]["checkpoint"] == "checkpoints/best.ckpt"
    # TensorBoard's own reader sees the same validation accuracies.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder / "tensorboard")).Reload()
    tb = [e.value for e in events.Scalars("val_acc")]
    assert tb == pytest.approx([row["val_acc"] for row in history], abs=1e-6)


def test_best_checkpoint_holds_the_best_weights(toy_run):
    folder, _ = toy_run
    best = torch.load(folder / "checkpoints" / "best.ckpt", weights_only=True)
    summary = read_json(folder / "summary.json")
    assert best["global_step"] == summary["best"]["step"]
    assert "ginlab" in best and "rng" in best["ginlab"]


def test_terminal_shows_progress_and_log_keeps_it(toy_run):
    folder, proc = toy_run
    out = proc.stdout
    assert "parameters" in out and f"run folder: {folder}" in out
    step_lines = [line for line in out.splitlines() if line.startswith("step ")]
    assert step_lines and all(
        k in step_lines[0] for k in ["ex/s", "loss", "elapsed", "left", "data", "update"]
    )
    epoch_lines = [line for line in out.splitlines() if line.startswith("epoch ")]
    assert len(epoch_lines) == 3 and "val_acc" in epoch_lines[0] and "saved checkpoints/" in epoch_lines[0]
    assert "improved" in epoch_lines[0]
    log = (folder / "log.txt").read_text()
    for line in step_lines + epoch_lines:
        assert line in log


def test_a_folder_that_holds_a_run_is_refused_untouched(toy_run):
    folder, _ = toy_run
    before = tree_snapshot(folder)
    proc = train(folder, ROOT / "configs" / "toy.gin")
    assert proc.returncode == 2
    assert "already holds a run" in proc.stderr and "training_loop.reload=True" in proc.stderr
    assert tree_snapshot(folder) == before


@pytest.mark.parametrize(
    "binding, names",
    [
        ("training_loop.n_epoch=3", ["n_epoch", "-b 'training_loop.n_epoch=3'", "n_epochs"]),
        ("trainin_loop.n_epochs=3", ["trainin_loop", "training_loop"]),
        ('training_loop.model="cnnn"', ["cnnn", "cnn", "mlp", "Registered models"]),
        ('training_loop.datamodule="digit"', ["digit", "digits", "mnist", "toy"]),
        ('training_loop.callbacks=["lr_monitr"]', ["lr_monitr", "lr_monitor"]),
        ("torch.optim.Adam.lrr=1", ["lrr", "lr"]),
        ("cnn.chanels=(3,)", ["chanels", "channels"]),
    ],
)
def test_bad_bindings_exit_2_naming_the_name_the_source_and_the_nearest(tmp_path, binding, names):
    proc = train(tmp_path / "run", ROOT / "configs" / "toy.gin", "-b", binding)
    assert proc.returncode == 2, proc.stderr
    for name in names:
        assert name in proc.stderr
    assert not (tmp_path / "run").exists()


def test_a_typo_in_a_file_names_file_and_line(tmp_path):
    config = tmp_path / "typo.gin"
    config.write_text((ROOT / "configs" / "toy.gin").read_text() + "\ncnn.dropuot = 0.3\n")
    line = len(config.read_text().splitlines())
    proc = train(tmp_path / "run", config)
    assert proc.returncode == 2
    assert f'In file "{config}", line {line}' in proc.stderr and "dropout" in proc.stderr
    assert not (tmp_path / "run").exists()


def test_a_registered_name_typo_in_a_file_names_file_and_line(tmp_path):
    config = tmp_path / "typo.gin"
    config.write_text((ROOT / "configs" / "toy.gin").read_text().replace('"cnn"', '"cnm"'))
    proc = train(tmp_path / "run", config)
    assert proc.returncode == 2
    assert "Unknown model 'cnm'" in proc.stderr and f'file "{config}", line' in proc.stderr
    assert not (tmp_path / "run").exists()


def test_missing_config_file(tmp_path):
    proc = train(tmp_path / "run", tmp_path / "nope.gin")
    assert proc.returncode == 2 and str(tmp_path / "nope.gin") in proc.stderr
    assert not (tmp_path / "run").exists()


def test_usage_errors_exit_2(tmp_path):
    assert train().returncode == 2
    assert train(tmp_path / "run").returncode == 2  # no config file and no reload


def test_missing_data_directory_is_explained_before_anything_is_written(tmp_path):
    proc = train(
        tmp_path / "run",
        ROOT / "configs" / "toy.gin",
        "-b",
        f'training_loop.datamodule="cifar10"#cifar10.data_dir="{tmp_path / "nowhere"}"',
    )
    assert proc.returncode == 2
    assert str(tmp_path / "nowhere") in proc.stderr and "data_batch_1.bin" in proc.stderr
    assert "Expected layout" in proc.stderr
    assert not (tmp_path / "run").exists()


def test_failure_during_training_exits_1_and_says_why(tmp_path):
    # A user model from outside src/, pulled in by an import line in a .gin file, that fails mid-training.
    (tmp_path / "my_models.py").write_text(
        "import torch\n"
        "from ginlab.registry import register_model\n"
        "@register_model('fragile')\n"
        "class Fragile(torch.nn.Module):\n"
        "    def __init__(self, input_shape, num_classes, fail_at=3):\n"
        "        super().__init__()\n"
        "        self.linear = torch.nn.Linear(64, num_classes)\n"
        "        self.calls, self.fail_at = 0, fail_at\n"
        "    def forward(self, x):\n"
        "        self.calls += 1\n"
        "        if self.training and self.calls > self.fail_at:\n"
        "            raise RuntimeError('fragile model broke on purpose')\n"
        "        return self.linear(x.flatten(1))\n"
    )
    config = tmp_path / "fragile.gin"
    config.write_text(
        "import my_models\n"
        + (ROOT / "configs" / "toy.gin").read_text().replace('"cnn"', '"fragile"')
        + "\nfragile.fail_at = 4\n"
    )
    proc = train(tmp_path / "run", config, pythonpath=[tmp_path])
    assert proc.returncode == 1, proc.stderr
    meta = read_json(tmp_path / "run" / "meta.json")
    assert meta["status"] == "failed" and meta["exit_code"] == 1
    assert meta["error"]["type"] == "RuntimeError" and "broke on purpose" in meta["error"]["message"]
    assert "broke on purpose" in (tmp_path / "run" / "log.txt").read_text()
    assert read_json(tmp_path / "run" / "config.json")["fragile.fail_at"] == 4


def test_help_is_fast_because_it_imports_nothing_heavy(tmp_path):
    # A 'torch' that cannot be imported proves --help never imports it (timing is for benchmarks/).
    fake = tmp_path / "fake"
    (fake / "torch").mkdir(parents=True)
    (fake / "torch" / "__init__.py").write_text("raise ImportError('torch imported by --help')\n")
    import subprocess
    import sys

    for args in (["--help"], []):
        proc = subprocess.run(
            [sys.executable, str(ROOT / "bin" / "train.py"), *args],
            capture_output=True,
            text=True,
            env={"PYTHONPATH": str(fake), "PATH": "/usr/bin:/bin"},
        )
        assert "torch imported" not in proc.stderr
        assert proc.returncode == (0 if args else 2)
    assert "SAVE_DIR" in proc.stderr


def test_a_complete_lightning_module_and_a_plain_datamodule_from_outside_src(tmp_path):
    # The escape hatch for tasks that are not image classification: register a LightningModule as the model
    # and any LightningDataModule as the data; ginlab brings the run folder, checkpoints and history.
    (tmp_path / "my_task.py").write_text(
        "import torch, pytorch_lightning as pl\n"
        "from torch.utils.data import DataLoader, TensorDataset\n"
        "from ginlab.registry import register_datamodule, register_model\n"
        "@register_model('regressor')\n"
        "class Regressor(pl.LightningModule):\n"
        "    def __init__(self, lr=0.1):\n"
        "        super().__init__(); self.layer = torch.nn.Linear(3, 1); self.lr = lr\n"
        "    def training_step(self, batch, i):\n"
        "        x, y = batch; loss = torch.nn.functional.mse_loss(self.layer(x), y)\n"
        "        self.log('train_loss', loss, on_epoch=True, on_step=False); return loss\n"
        "    def validation_step(self, batch, i):\n"
        "        x, y = batch; self.log('val_loss', torch.nn.functional.mse_loss(self.layer(x), y))\n"
        "    def configure_optimizers(self):\n"
        "        return torch.optim.SGD(self.parameters(), lr=self.lr)\n"
        "@register_datamodule('lines')\n"
        "class Lines(pl.LightningDataModule):\n"
        "    def setup(self, stage):\n"
        "        g = torch.Generator().manual_seed(0); x = torch.randn(256, 3, generator=g)\n"
        "        self.data = TensorDataset(x, x @ torch.tensor([[1.0], [-2.0], [0.5]]))\n"
        "    def train_dataloader(self):\n"
        "        return DataLoader(self.data, batch_size=32, shuffle=True)\n"
        "    def val_dataloader(self):\n"
        "        return DataLoader(self.data, batch_size=64)\n"
    )
    config = tmp_path / "task.gin"
    config.write_text(
        'import my_task\ntraining_loop.model = "regressor"\ntraining_loop.datamodule = "lines"\n'
        'training_loop.n_epochs = 3\ntraining_loop.monitor = "val_loss"\n'
        'training_loop.monitor_mode = "min"\nregressor.lr = 0.05\n'
    )
    train(tmp_path / "run", config, pythonpath=[tmp_path], check=0)
    history = read_jsonl(tmp_path / "run" / "history.jsonl")
    assert [row["epoch"] for row in history] == [0, 1, 2]
    assert history[-1]["val_loss"] < history[0]["val_loss"]
    summary = read_json(tmp_path / "run" / "summary.json")
    assert summary["best"]["val_loss"] == min(row["val_loss"] for row in history)
    assert read_json(tmp_path / "run" / "config.json")["regressor.lr"] == 0.05


def test_a_terminal_that_goes_away_does_not_stop_the_log(tmp_path):
    # The reader of the run's output closes it early (a closed pipe, an ssh session that hung up): the run
    # goes on, and log.txt still gets everything.
    proc = subprocess.Popen(
        [*TRAIN, str(tmp_path / "run"), str(ROOT / "configs" / "toy.gin")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env(),
        cwd=ROOT,
    )
    proc.stdout.readline()
    proc.stdout.close()
    assert proc.wait(timeout=120) == 0
    log = (tmp_path / "run" / "log.txt").read_text()
    assert "epoch 3/3" in log and "test (best.ckpt)" in log
