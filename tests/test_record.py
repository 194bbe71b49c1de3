"""The run record never lies and a user's files are never touched (issue 12's cases on the training side): values
stored as used, a newer format refused by every tool, the complete environment, foreign folders, divergence,
unusable checkpoints, a full disk, a late Ctrl-C, and what a person reads."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import ROOT, env, read_json, read_jsonl, start_train, train, train_here, tree_snapshot

from ginlab import load_C, load_histories, load_runs
from ginlab.runfolder import read_history

TOY = ROOT / "configs" / "toy.gin"
RELOAD = ("-b", "training_loop.reload=True")


def evaluate(*args):
    return subprocess.run([sys.executable, str(ROOT / "bin" / "evaluate.py"), *map(str, args)],
                          capture_output=True, text=True, env=env(), cwd=ROOT)  # fmt: skip


@pytest.fixture(scope="module")
def macro_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("macro") / "run"
    train(folder, TOY, "-b", "LR=0.005#torch.optim.Adam.lr=%LR#training_loop.n_epochs=1", check=0)
    return folder


def test_a_macro_is_stored_as_the_value_used_and_every_reader_agrees(macro_run, tmp_path):
    config = read_json(macro_run / "config.json")
    assert config["Adam.lr"] == 0.005 and not any("macro" in key or key == "LR" for key in config)
    assert load_C(macro_run)["Adam.lr"] == 0.005
    (macro_run / "config.json").rename(tmp_path / "config.json")  # load_C then parses config.gin
    try:
        assert load_C(macro_run)["Adam.lr"] == 0.005
    finally:
        (tmp_path / "config.json").rename(macro_run / "config.json")
    assert len(load_histories(macro_run.parent, select={"Adam.lr": 0.005})["run"].unique()) == 1
    runs = subprocess.run([sys.executable, str(ROOT / "bin" / "runs.py"), str(macro_run.parent), "-f",
                           "Adam.lr=0.005"], capture_output=True, text=True, env=env(), cwd=ROOT)  # fmt: skip
    assert "1 run" in runs.stdout and "run" in runs.stdout.split("\n")[1], runs.stdout


def test_a_reload_with_the_macros_literal_value_is_no_change(macro_run, capsys):
    code, _, err = train_here(macro_run, *RELOAD, "-b", "torch.optim.Adam.lr=0.005#training_loop.n_epochs=1",
                              capsys=capsys)  # fmt: skip
    assert "differs" not in err and code == 0, err


@pytest.mark.parametrize("tool", ["reload", "evaluate", "load"])
def test_a_newer_format_is_refused_by_every_tool(macro_run, tmp_path, tool, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(macro_run, run)
    meta = read_json(run / "meta.json")
    (run / "meta.json").write_text(json.dumps({**meta, "format_version": 99}))
    before = tree_snapshot(run)
    if tool == "reload":
        code, _, err = train_here(run, *RELOAD, capsys=capsys)
    elif tool == "evaluate":
        proc = evaluate(run)
        code, err = proc.returncode, proc.stderr
    else:
        with pytest.raises(Exception, match="format_version 99 is newer") as raised:
            load_C(run)
        code, err = 2, str(raised.value)
    assert code == 2 and "format_version 99 is newer than this ginlab reads" in err
    assert tree_snapshot(run) == before


def test_the_run_records_its_complete_environment(macro_run):
    meta = read_json(macro_run / "meta.json")
    assert meta["python_executable"] == sys.executable and meta["platform"]
    packages = read_json(macro_run / "environment.json")["packages"]
    assert packages["torch"] == torch.__version__ and len(packages) > 50
    assert {"pytorch-lightning", "gin-config", "pandas", "filelock"} <= set(packages)


@pytest.mark.parametrize("content", ["user files", "checkpoints only"])
def test_a_folder_that_is_not_a_run_is_never_written(tmp_path, capsys, content):
    folder = tmp_path / "mine"
    folder.mkdir()
    if content == "user files":
        (folder / "config.json").write_text('{"mine": true}\n')
        (folder / "summary.json").write_text('{"thesis": 1}\n')
    else:
        (folder / "checkpoints").mkdir()
        (folder / "checkpoints" / "model.ckpt").write_bytes(b"weights")
    before = tree_snapshot(folder)
    for args in [(TOY,), (*RELOAD,), (TOY, "-b", 'training_loop.reload="auto"')]:
        code, _, err = train_here(folder, *args, capsys=capsys)
        assert code == 2 and "holds files but no run record" in err, err
        assert ("config.json" in err) if content == "user files" else ("checkpoints/" in err)
        assert "Choose another SAVE_DIR, or move these files away" in err
    assert tree_snapshot(folder) == before


def test_meta_json_is_written_last_so_a_run_folder_always_holds_its_configs(tmp_path, monkeypatch):
    """A start killed at any moment leaves either a run with its configs and environment, or no run."""
    import ginlab.runfolder.writer as writer

    written = []
    for name in ("atomic_write_json", "atomic_write_text", "atomic_write_bytes"):
        original = getattr(writer, name)
        monkeypatch.setattr(writer, name, lambda path, data, _f=original: (written.append(
            Path(path).relative_to(run)), _f(path, data))[1])  # fmt: skip
    run = tmp_path / "run"
    folder = writer.RunFolder(run)
    folder.acquire()
    try:
        folder.create(["bin/train.py", str(run), str(TOY)], [TOY], ["a.b=1"], 1)
    finally:
        folder.release()
    assert written[-1] == Path("meta.json")
    assert {Path("environment.json"), Path("configs/00-toy.gin"), Path("configs/bindings.gin")} <= set(
        written
    )


def leftovers_of_a_killed_start(folder: Path) -> None:
    """What a bin/train.py killed before its meta.json leaves: its lock info, some creation files, a
    temporary file of an atomic write."""
    folder.mkdir(parents=True)
    (folder / ".lock").write_text("")
    (folder / ".lock.json").write_text(
        '{"host": "elsewhere", "pid": 999999, "started": "2026-12-03T00:00:00"}'
    )
    (folder / "environment.json").write_text("{}")
    (folder / "configs").mkdir()
    (folder / "configs" / "00-older.gin").write_text("training_loop.n_epochs = 99\n")
    (folder / ".meta.json.x1y2.tmp").write_text('{"status": "runn')


@pytest.mark.parametrize("reload", [None, "auto"])
def test_a_start_killed_before_its_meta_json_is_started_again(tmp_path, reload):
    run = tmp_path / "run"
    leftovers_of_a_killed_start(run)
    bindings = ["-b", 'training_loop.reload="auto"'] if reload else []
    proc = train(run, TOY, *bindings)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (run / "configs").iterdir()) == ["00-toy.gin", "bindings.gin"]
    assert not list(run.glob(".*.tmp"))
    meta = read_json(run / "meta.json")
    assert meta["status"] == "finished" and meta["reloads"] == []
    assert load_C(run)["training_loop.n_epochs"] != 99


def test_leftovers_beside_a_file_of_someone_else_are_never_touched(tmp_path, capsys):
    run = tmp_path / "run"
    leftovers_of_a_killed_start(run)
    (run / "notes.txt").write_text("mine")
    without_lock_info = tmp_path / "configs-only"  # a user's folder of gin files, not a start of ginlab's
    (without_lock_info / "configs").mkdir(parents=True)
    (without_lock_info / "configs" / "00-mine.gin").write_text("x = 1\n")
    for folder in (run, without_lock_info):
        before = tree_snapshot(folder)
        code, _, err = train_here(folder, TOY, capsys=capsys)
        assert code == 2 and "holds files but no run record" in err, err
        assert tree_snapshot(folder) == before


def test_an_experiment_starts_again_a_run_killed_before_its_meta_json(tmp_path):
    from ginlab.experiments.backends.plan import START, plan_run
    from ginlab.experiments.experiment import Run

    run = Run(0, "lr=0.1", {}, tmp_path / "run", [str(TOY)])
    leftovers_of_a_killed_start(run.save_dir)
    assert plan_run(run, ROOT).action == START


def test_a_diverging_run_stops_says_so_and_keeps_its_last_finite_checkpoint(tmp_path):
    run = tmp_path / "run"
    diverge = "training_loop.optimizer=@torch.optim.SGD#torch.optim.SGD.lr=1e9#checkpointer.every_n_steps=1"
    proc = train(run, TOY, "-b", diverge)
    assert proc.returncode == 4, proc.stderr
    meta = read_json(run / "meta.json")
    assert meta["status"] == "diverged" and meta["exit_code"] == 4
    step = int(re.search(r"at step (\d+)", meta["error"]["message"]).group(1))
    assert "nan" in meta["error"]["message"].lower() or "not finite" in meta["error"]["message"]
    assert not (run / "summary.json").exists()
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] < step
    assert all(torch.isfinite(t).all() for t in last["state_dict"].values() if t.is_floating_point())
    for row in read_history(run):
        assert row["val_acc"] == row["val_acc"], "no NaN row before the stop"
    assert load_runs(run).iloc[0]["status"] == "diverged"


def test_training_through_divergence_never_picks_a_nan_as_best(tmp_path):
    run = tmp_path / "run"
    train(run, TOY, "-b", "training_loop.optimizer=@torch.optim.SGD#torch.optim.SGD.lr=1e9#divergence.stop=False#"
          "training_loop.early_stopping_patience=5", check=0)  # fmt: skip
    summary = read_json(run / "summary.json")
    history = read_jsonl(run / "history.jsonl")
    finite = [row for row in history if row["val_acc"] == row["val_acc"]]
    if finite:
        assert summary["best"]["val_acc"] == max(row["val_acc"] for row in finite)
    else:
        assert "val_acc" not in summary["best"] and summary["best"]["checkpoint"] == "checkpoints/last.ckpt"


@pytest.mark.parametrize("damage", ["deleted", "broken"])
def test_a_reload_without_a_usable_checkpoint_is_refused_not_restarted(tmp_path, capsys, damage):
    run = tmp_path / "run"
    train(run, TOY, "-b", "training_loop.n_epochs=1", check=0)
    for checkpoint in (run / "checkpoints").glob("*.ckpt"):
        if damage == "deleted":
            checkpoint.unlink()
        else:
            checkpoint.write_bytes(b"not a checkpoint")
    before = tree_snapshot(run)
    code, out, err = train_here(run, *RELOAD, "-b", "training_loop.n_epochs=2", capsys=capsys)
    assert code == 2
    assert (
        "was written" in err and "no checkpoint can be used" in err and "no checkpoint was written" not in out
    )
    assert "move the folder away and start a fresh run" in err
    assert tree_snapshot(run) == before


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small file system needs root")
@pytest.mark.parametrize("room", ["nothing", "only for the start"])
def test_a_full_disk_at_start_up_leaves_a_failed_record_or_no_folder(tmp_path, room):
    disk = tmp_path / "disk"
    disk.mkdir()
    # How much a run writes when it is created (meta, environment, git.diff, configs), measured on a real one.
    probe = tmp_path / "probe"
    train(probe, TOY, "-b", "training_loop.n_epochs=1", check=0)
    created = sum(
        -(-p.stat().st_size // 4096) * 4096
        for p in [
            probe / "meta.json",
            probe / "environment.json",
            *probe.glob("git.diff"),
            *probe.glob("configs/*"),
        ]
    )
    size = 64 * 1024 if room == "nothing" else created + 64 * 1024
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(disk)], check=True)
    try:
        if room == "nothing":  # fill it
            (disk / "filler").write_bytes(b"x" * (size - 8192))
        proc = train(disk / "run", TOY, "-b", "training_loop.n_epochs=1")
        assert proc.returncode in (1, 2), proc.stdout + proc.stderr
        assert "No space left on device" in proc.stderr
        if (disk / "run" / "meta.json").exists():
            meta = read_json(disk / "run" / "meta.json")
            assert meta["status"] == "failed" and "No space left" in meta["error"]["message"]
        else:
            assert not (disk / "run").exists(), sorted(p.name for p in (disk / "run").iterdir())
    finally:
        subprocess.run(["umount", str(disk)], check=True)


@pytest.mark.parametrize("delay", [0.0, 0.05, 0.3])
def test_a_second_ctrl_c_after_the_checkpoint_does_not_change_the_exit_code(tmp_path, delay):
    run = tmp_path / "run"
    proc = start_train(run, TOY, "-b", "training_loop.n_epochs=1000#toy.num_samples=2048")
    for line in proc.stdout:
        if line.startswith("step "):
            proc.send_signal(signal.SIGINT)
        if "checkpoint written" in line:
            time.sleep(delay)
            proc.send_signal(signal.SIGINT)
            break
    proc.communicate(timeout=120)
    meta = read_json(run / "meta.json")
    assert meta["status"] == "interrupted" and proc.returncode == meta["exit_code"] == 3


def test_what_a_person_reads_counts_epochs_from_1(tmp_path):
    run = tmp_path / "run"
    proc = train(run, TOY, "-b", "training_loop.n_epochs=6#training_loop.monitor='val_loss'#"
                 "training_loop.monitor_mode='max'", check=0)  # fmt: skip
    printed = {
        int(m.group(1)): line for line in proc.stdout.splitlines() if (m := re.match(r"epoch (\d+)/6", line))
    }
    stills = [line for line in printed.values() if "still" in line]
    assert stills, "the test needs an epoch that did not improve"
    for line in stills:
        value, epoch = re.search(r"still ([\d.]+) \(epoch (\d+)\)", line).groups()
        assert f"val_loss {value}" in printed[int(epoch)]
    history = read_jsonl(run / "history.jsonl")
    assert [row["epoch"] for row in history] == list(range(6))  # files count from 0, as Lightning does
    out = evaluate(run, "--checkpoint", "last").stdout
    assert "last (after epoch 6/6, step" in out


def test_the_start_line_names_a_lightning_modules_own_class(tmp_path):
    (tmp_path / "netty.py").write_text(
        "import torch, pytorch_lightning as pl\n"
        "from ginlab.registry import register_model\n"
        "@register_model('netty')\n"
        "class Netty(pl.LightningModule):\n"
        "    def __init__(self):\n"
        "        super().__init__(); self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 4))\n"
        "    def training_step(self, batch, i):\n"
        "        x, y = batch; return torch.nn.functional.cross_entropy(self.net(x), y)\n"
        "    def validation_step(self, batch, i):\n"
        "        x, y = batch; self.log('val_loss', torch.nn.functional.cross_entropy(self.net(x), y))\n"
        "    def configure_optimizers(self):\n"
        "        return torch.optim.SGD(self.parameters(), lr=0.1)\n"
    )
    config = tmp_path / "netty.gin"
    config.write_text(
        "import netty\n"
        + TOY.read_text()
        .replace('"cnn"', '"netty"')
        .replace(
            'training_loop.monitor = "val_acc"',
            'training_loop.monitor = "val_loss"\ntraining_loop.monitor_mode = "min"',
        )
    )
    proc = train(tmp_path / "run", config, "-b", "training_loop.n_epochs=1", pythonpath=[tmp_path], check=0)
    assert "model: Netty, 260 parameters" in proc.stdout
