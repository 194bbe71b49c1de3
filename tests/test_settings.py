"""Every setting is checked before anything is written: a bad value exits 2 naming the binding, where it came from
and what is valid, and the run folder is absent or untouched. A bug in a model's own code is not a configuration
error: it exits 1 with its traceback in meta.json."""

import os
import shutil
import subprocess

import pytest
from conftest import ROOT, read_json, train, train_here, tree_snapshot

TOY = ROOT / "configs" / "toy.gin"

BAD_VALUES = [
    # (binding, what the message must name)
    ('training_loop.monitor_mode="maximum"', ["training_loop.monitor_mode = 'maximum'", "'min', 'max'"]),
    ('trainer.precision="bf17"', ["trainer.precision = 'bf17'", "'bf16-mixed'", "'32-true'"]),
    ('trainer.precision="16-bogus"', ["trainer.precision = '16-bogus'", "'16-mixed'"]),
    (
        'training_loop.monitor="val_accuracy"',
        ["training_loop.monitor = 'val_accuracy'", "val_acc", "val_loss"],
    ),
    ('training_loop.n_epochs="abc"', ["training_loop.n_epochs = 'abc'", "a positive integer"]),
    ("training_loop.n_epochs=2.5", ["training_loop.n_epochs = 2.5", "a positive integer"]),
    ("training_loop.n_epochs=-3", ["training_loop.n_epochs = -3", "a positive integer"]),
    ("training_loop.n_epochs=0", ["training_loop.n_epochs = 0", "a positive integer"]),
    ("toy.batch_size=0", ["toy.batch_size = 0", "a positive integer"]),
    ("toy.val_fraction=0.9", ["toy.val_fraction = 0.9", "< 1"]),
    ('trainer.strategy="fsdp"', ["trainer.strategy = 'fsdp'", "'ddp'"]),
    ('trainer.accelerator="quantum"', ["trainer.accelerator = 'quantum'", "'cpu'", "'gpu'"]),
    ("trainer.devices=0", ["trainer.devices = 0", "a number of devices >= 1"]),
    ("checkpointer.keep=1", ["checkpointer.keep = 1", "an integer >= 2"]),
    ("checkpointer.every_n_steps=0", ["checkpointer.every_n_steps = 0", "a positive integer"]),
    ("checkpointer.every_n_seconds=-5", ["checkpointer.every_n_seconds = -5", "> 0"]),
    ("history.every_n_steps=0", ["history.every_n_steps = 0", "a positive integer"]),
    ("heartbeat.every_seconds=0", ["heartbeat.every_seconds = 0", "> 0"]),
    ("training_loop.early_stopping_patience=0", ["early_stopping_patience = 0", "a positive integer"]),
    ('training_loop.reload="sometimes"', ["training_loop.reload", "'auto'"]),
    ('training_loop.callbacks=["nope"]', ["Unknown callback 'nope'", "lr_monitor", "swa"]),
    ('cnn.channels="abc"', ["cnn.channels = 'abc'", "tuple of integers"]),
    ("cnn.dropout=1.5", ["cnn.dropout = 1.5", "<= 1"]),
    ("torch.optim.Adam.lr=-1", ["Adam", "Invalid learning rate"]),
    # A string without quotes is not a gin value: say so, instead of gin's "<ast.Name object at 0x...>".
    (
        "training_loop.monitor=val_acc",
        ["not a gin value", "Strings need quotes", 'training_loop.monitor = "val_acc"'],
    ),
    # A scope nothing enters would be ignored silently.
    ("train/torch.optim.Adam.lr=0.02", ["scope 'train'", "nothing enters", "@train/torch.optim.Adam"]),
    # Settings that moved out of training_loop name their new place.
    ("training_loop.log_every_n_steps=3", ["log_every_n_steps", "history.every_n_steps"]),
]


@pytest.mark.parametrize("binding, names", BAD_VALUES, ids=[b for b, _ in BAD_VALUES])
def test_a_bad_value_exits_2_naming_it_before_anything_is_written(tmp_path, capsys, binding, names):
    code, _, err = train_here(tmp_path / "run", TOY, "-b", binding, capsys=capsys)
    assert code == 2, err
    for name in names:
        assert name in err, f"{name!r} not in: {err}"
    if "=" in binding and "(-b" in err:  # where it came from
        assert f"-b '{binding}'" in err
    assert not (tmp_path / "run").exists()


def test_a_config_file_of_random_bytes_is_named(tmp_path, capsys):
    config = tmp_path / "noise.gin"
    config.write_bytes(os.urandom(300) + b"\xff\xfe")
    code, _, err = train_here(tmp_path / "run", config, capsys=capsys)
    assert code == 2 and str(config) in err and "not UTF-8" in err
    assert not (tmp_path / "run").exists()


def test_includes_are_found_beside_the_including_file_and_a_missing_one_is_named(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # not the configs' folder: the include is found beside the file anyway
    folder = tmp_path / "configs"
    folder.mkdir()
    shutil.copy(TOY, folder / "base.gin")
    (folder / "main.gin").write_text("include 'base.gin'\ntraining_loop.n_epochs = 0\n")
    code, _, err = train_here(tmp_path / "run", folder / "main.gin", capsys=capsys)
    assert code == 2 and "training_loop.n_epochs = 0" in err  # base.gin was read, then the bad value found
    (folder / "main.gin").write_text("include 'missing.gin'\n")
    code, _, err = train_here(tmp_path / "run", folder / "main.gin", capsys=capsys)
    assert (
        code == 2
        and "include 'missing.gin'" in err
        and str(folder) in err
        and str(folder / "main.gin") in err
    )
    assert not (tmp_path / "run").exists()


def test_no_config_file_without_a_reload(tmp_path, capsys):
    code, _, err = train_here(tmp_path / "run", "-b", "training_loop.reload=False", capsys=capsys)
    assert code == 2 and "No CONFIG file given" in err
    assert not (tmp_path / "run").exists()


def test_a_save_dir_that_is_a_file_or_lies_under_a_file(tmp_path, capsys):
    file = tmp_path / "notes.txt"
    file.write_text("mine\n")
    code, _, err = train_here(file, TOY, capsys=capsys)
    assert code == 2 and f"{file} is a file, not a folder" in err
    code, _, err = train_here(file / "run", TOY, capsys=capsys)
    assert code == 2 and f"{file} is a file, not a folder" in err
    assert file.read_text() == "mine\n"


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a read-only file system needs root")
def test_a_save_dir_on_a_read_only_file_system(tmp_path, capsys):
    mount = tmp_path / "ro"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(mount)], check=True)
    try:
        code, _, err = train_here(mount / "run", TOY, capsys=capsys)
        assert code == 2 and "read-only file system" in err
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_a_reload_whose_meta_json_is_empty(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "meta.json").write_text("")
    before = tree_snapshot(run)
    code, _, err = train_here(run, "-b", "training_loop.reload=True", capsys=capsys)
    assert code == 2 and f"{run / 'meta.json'} is empty" in err
    assert tree_snapshot(run) == before


def test_a_bug_in_a_models_init_exits_1_with_its_traceback_in_meta(tmp_path):
    (tmp_path / "buggy.py").write_text(
        "import torch\n"
        "from ginlab.registry import register_model\n"
        "@register_model('buggy')\n"
        "class Buggy(torch.nn.Module):\n"
        "    def __init__(self, input_shape, num_classes):\n"
        "        super().__init__()\n"
        "        self.layer = torch.nn.Linear(64, num_classes)\n"
        "        raise ValueError('a bug in Buggy.__init__, on purpose')\n"
    )
    config = tmp_path / "buggy.gin"
    config.write_text("import buggy\n" + TOY.read_text().replace('"cnn"', '"buggy"'))
    proc = train(tmp_path / "run", config, pythonpath=[tmp_path])
    assert proc.returncode == 1, proc.stderr
    meta = read_json(tmp_path / "run" / "meta.json")
    assert meta["status"] == "failed" and meta["exit_code"] == 1
    assert meta["error"]["type"] == "ValueError" and "on purpose" in meta["error"]["message"]
    assert 'buggy.py", line 8' in meta["error"]["traceback"]


def test_a_monitor_the_first_validation_does_not_log_stops_the_run_naming_what_was_logged(tmp_path):
    (tmp_path / "own.py").write_text(
        "import torch, pytorch_lightning as pl\n"
        "from ginlab.registry import register_model\n"
        "@register_model('own')\n"
        "class Own(pl.LightningModule):\n"
        "    def __init__(self):\n"
        "        super().__init__(); self.layer = torch.nn.Linear(64, 4)\n"
        "    def training_step(self, batch, i):\n"
        "        x, y = batch; return torch.nn.functional.cross_entropy(self.layer(x.flatten(1)), y)\n"
        "    def validation_step(self, batch, i):\n"
        "        x, y = batch\n"
        "        self.log('val_loss', torch.nn.functional.cross_entropy(self.layer(x.flatten(1)), y))\n"
        "    def configure_optimizers(self):\n"
        "        return torch.optim.SGD(self.parameters(), lr=0.1)\n"
    )
    config = tmp_path / "own.gin"
    config.write_text("import own\n" + TOY.read_text().replace('"cnn"', '"own"'))
    proc = train(tmp_path / "run", config, pythonpath=[tmp_path])
    assert proc.returncode == 1
    meta = read_json(tmp_path / "run" / "meta.json")
    assert (
        meta["status"] == "failed"
        and "training_loop.monitor='val_acc' was not logged" in meta["error"]["message"]
    )
    assert "Logged metrics: val_loss" in meta["error"]["message"]
    assert not (tmp_path / "run" / "checkpoints" / "best.ckpt").exists()


def test_reload_auto_starts_continues_and_then_has_nothing_to_do(tmp_path):
    run = tmp_path / "run"
    auto = ("-b", 'training_loop.reload="auto"#training_loop.n_epochs=2')
    first = train(run, TOY, *auto, "-b", "checkpointer.every_n_steps=2", check=0)  # empty: starts
    assert "run folder:" in first.stdout and read_json(run / "meta.json")["reloads"] == []
    meta = read_json(run / "meta.json")
    (run / "meta.json").write_text(  # as if it had been interrupted after its last checkpoint
        __import__("json").dumps({**meta, "status": "interrupted", "exit_code": 3})
    )
    second = train(run, TOY, *auto, check=0)  # interrupted: continues
    assert "==== reload" in second.stdout and len(read_json(run / "meta.json")["reloads"]) == 1
    before = tree_snapshot(run)
    third = train(run, TOY, *auto, check=0)  # finished: nothing to do, nothing written
    assert "finished already" in third.stdout and tree_snapshot(run) == before
