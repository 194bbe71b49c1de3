"""Exact resume and fault tolerance, with real processes and real signals.

The reference is the same configuration run without interruption; after any sequence of kills and reloads
every tensor of the final state (weights, optimizer, scheduler) and every history row must be identical.
"""

import json
import os
import random
import resource
import signal
import socket
import tempfile
import time

import pytest
from conftest import (
    assert_same_run,
    final_state,
    read_json,
    read_jsonl,
    shared_run,
    start_train,
    train,
    tree_snapshot,
)

from ginlab.runfolder import RunFolder

RELOAD = ["-b", "training_loop.reload=True"]


def wait_for_steps(proc, count):
    """Read the run's output until `count` progress lines went by (False if it ended first)."""
    seen = 0
    for line in proc.stdout:
        if line.startswith("step "):
            seen += 1
            if seen >= count:
                return True
    return False


@pytest.fixture(scope="session")
def reference(tmp_path_factory):
    """The uninterrupted runs the interrupted ones must reproduce, by number of workers.

    Each is trained once per session (by bin/train.py, like the runs compared with it), whichever xdist worker
    needs it first; `reference.config` is this worker's copy of the configuration.
    """
    from conftest import HARD_CONFIG

    config = tmp_path_factory.mktemp("reference") / "hard.gin"
    config.write_text(HARD_CONFIG)

    def get(workers=0):
        return shared_run(
            tmp_path_factory, f"reference-workers{workers}", config, "-b", f"toy.num_workers={workers}"
        )

    get.config = config
    return get


def partial_checkpoints(folder) -> set[str]:
    """The temporary files of checkpoint writes in progress (or cut by a kill) in a run folder."""
    try:
        return {
            e.name
            for e in os.scandir(folder / "checkpoints")
            if e.name.startswith(".step-") and e.name.endswith(".tmp")
        }
    except FileNotFoundError:
        return set()


def newest_checkpoint_step(folder) -> int:
    """The step of the newest complete checkpoint file (-1: none)."""
    return max((int(p.name[5:13]) for p in (folder / "checkpoints").glob("step-*.ckpt")), default=-1)


class Killer:
    """SIGKILLs a training process at one kind of moment; each method returns True if the kill landed there.

    The process prints every step (print_every_n_steps=1) and checkpoints every 2 steps."""

    def __init__(self, folder, rng):
        self.folder, self.rng, self.steps_per_epoch = folder, rng, None

    def lines(self, proc):
        for line in proc.stdout:
            if line.startswith("training: "):  # "training: 92 steps over 4 epochs, from step 0"
                total, epochs = line.split()[1], line.split()[4]
                self.steps_per_epoch = int(total) // int(epochs)
            yield line

    def kill(self, proc):
        proc.kill()
        proc.wait()

    def mid_epoch(self, proc):
        """After 1-12 steps and up to 50 ms more: inside an epoch, at or between mid-epoch checkpoints."""
        steps = self.rng.randint(1, 12)
        for line in self.lines(proc):
            if line.startswith("step ") and (steps := steps - 1) == 0:
                time.sleep(self.rng.uniform(0, 0.05))
                self.kill(proc)
                newest = newest_checkpoint_step(self.folder)
                return newest > 0 and newest % self.steps_per_epoch != 0
        return False

    def in_validation(self, proc):
        """Right after an epoch's last training step: in its validation, before its epoch-end checkpoint."""
        for line in self.lines(proc):
            if line.startswith("step ") and int(line.split()[1].split("/")[0]) % self.steps_per_epoch == 0:
                end = int(line.split()[1].split("/")[0])
                self.kill(proc)
                return newest_checkpoint_step(self.folder) < end  # the epoch-end checkpoint was not written
        return False

    def at_epoch_end(self, proc):
        """At once after an epoch's line:
        its history row and checkpoint are written, the next epoch starts."""
        for line in self.lines(proc):
            if line.startswith("epoch "):
                self.kill(proc)
                # none of the next epoch
                return newest_checkpoint_step(self.folder) % self.steps_per_epoch == 0
        return False

    def in_checkpoint_write(self, proc):
        """While a checkpoint file is written (after 0-3 whole writes of this process), at the moment its
        temporary file appears: the kill must leave the cut temporary file behind."""
        for line in self.lines(proc):
            if line.startswith("training: "):  # reloaded; from here on it writes a checkpoint every 2 steps
                break
        else:
            return False
        seen, writes = partial_checkpoints(self.folder), self.rng.randint(0, 3)
        while proc.poll() is None:  # a tight loop: a write lasts milliseconds (fsync), a poll microseconds
            new = partial_checkpoints(self.folder) - seen
            if new and writes == 0:
                self.kill(proc)
                return bool(new & partial_checkpoints(self.folder))
            seen, writes = seen | new, writes - bool(new)
        return False


@pytest.mark.parametrize("workers", [0, 2])
def test_sigkill_mid_epoch_in_validation_at_epoch_end_and_in_a_checkpoint_write_gives_the_same_run(
    tmp_path, reference, workers
):
    """SIGKILL at each kind of moment where a kill is hard to survive, reloading after each: inside an epoch
    (steps since the last checkpoint are lost and redone); during validation (the epoch's last step is redone,
    the epoch-end checkpoint was not written); right after an epoch ended (the next epoch's order,
    augmentation and worker seeds start from the epoch-end checkpoint); in the middle of writing a checkpoint
    file (a cut temporary file is left; the reload removes it and falls back to the previous checkpoint).
    Where exactly is drawn at random; a kill that came too late for its kind of moment (a busy machine) is
    tried again."""
    rng = random.Random(1234 + workers)
    folder = tmp_path / "run"
    args = [
        folder,
        reference.config,
        "-b",
        f"toy.num_workers={workers}#checkpointer.every_n_steps=2#progress.every_n_steps=1",
    ]
    killer = Killer(folder, rng)
    plan = [killer.mid_epoch, killer.in_validation, killer.at_epoch_end, killer.in_checkpoint_write]
    kills = 0
    proc = start_train(*args)
    while True:
        if plan and plan[0](proc):
            plan.pop(0)
        proc.communicate()
        if proc.returncode == 0:
            break
        assert proc.returncode == -signal.SIGKILL
        kills += 1
        assert kills <= 8, f"{plan[0].__name__}: no kill landed there"
        proc = start_train(*args, *RELOAD)
    assert not plan, f"the run finished before {plan[0].__name__}"
    assert not partial_checkpoints(folder)  # the reload after the cut write removed its temporary file
    # The reloads allowed a different checkpoint and print frequency: they change when state is saved and what
    # the terminal shows, not what is computed.
    assert_same_run(reference(workers), folder)
    log = (folder / "log.txt").read_text()
    assert log.count("==== reload") == kills
    assert len(read_json(folder / "meta.json")["reloads"]) == kills


def interrupt(args, sig, steps=3):
    proc = start_train(*args)
    assert wait_for_steps(proc, steps)
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=60)
    return proc.returncode, out


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1])
def test_stop_signal_writes_a_checkpoint_marks_interrupted_and_reload_continues_exactly(
    tmp_path, reference, sig
):
    folder = tmp_path / "run"
    code, out = interrupt([folder, reference.config], sig)
    assert code == 3, out
    meta = read_json(folder / "meta.json")
    assert meta["status"] == "interrupted" and meta["exit_code"] == 3
    assert f"{signal.Signals(sig).name} received: checkpoint written" in out
    train(folder, *RELOAD, check=0)
    assert read_json(folder / "meta.json")["status"] == "finished"
    assert_same_run(reference(0), folder)


def test_a_stop_at_an_epochs_last_step_validates_that_epoch_first(tmp_path, reference):
    """A stop signal at the last training step of an epoch: the epoch's validation, history row and end
    checkpoint happen before the stop (a checkpoint taken before them continued with the next epoch, and that
    epoch's row was never written: seen in an experiment's kill test)."""
    expected = reference(0)
    steps_per_epoch = read_json(expected / "summary.json")["steps"] // 4
    (tmp_path / "stop_at.py").write_text(
        "import os, signal\n"
        "import pytorch_lightning as pl\n"
        "from ginlab.registry import register_callback\n\n"
        "@register_callback('stop_at_step')\n"
        "class StopAt(pl.Callback):\n"
        "    def __init__(self, step=0):\n"
        "        self.step = step\n\n"
        "    def on_train_batch_end(self, trainer, *args):\n"
        "        if trainer.global_step == self.step:\n"
        "            os.kill(os.getpid(), signal.SIGTERM)\n"
    )
    stop = tmp_path / "stop.gin"
    stop.write_text(
        f'import stop_at\ntraining_loop.callbacks = ["stop_at_step"]\nstop_at_step.step = {steps_per_epoch}\n'
    )
    folder = tmp_path / "run"
    proc = train(folder, reference.config, stop, pythonpath=[tmp_path])
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert [row["epoch"] for row in read_jsonl(folder / "history.jsonl")] == [0]
    assert read_json(folder / "meta.json")["status"] == "interrupted"
    train(folder, *RELOAD, check=0, pythonpath=[tmp_path])
    assert [row["epoch"] for row in read_jsonl(folder / "history.jsonl")] == [0, 1, 2, 3]
    assert_same_run(expected, folder)


def test_a_reload_computes_with_the_thread_count_the_run_started_with(tmp_path, reference, monkeypatch):
    # torch's CPU sums are split by thread: 1 and 2 threads give different bits for the same run. The
    # reference trained with 1 thread (conftest); the reload happens where torch would take 2 (another
    # --slots, another node).
    expected, folder = reference(0), tmp_path / "run"  # (the reference trains here if no test needed it yet)
    code, out = interrupt([folder, reference.config], signal.SIGTERM)
    assert code == 3, out
    assert read_json(folder / "meta.json")["torch_threads"] == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    proc = train(folder, *RELOAD, check=0)
    assert "torch threads: 1, as when the run started (this process would use 2)" in proc.stdout + proc.stderr
    assert_same_run(expected, folder)


def test_ctrl_c_twice_stops_at_once_and_the_run_still_reloads(tmp_path, reference):
    folder = tmp_path / "run"
    proc = start_train(folder, reference.config)
    assert wait_for_steps(proc, 3)
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 3, out
    assert read_json(folder / "meta.json")["status"] == "interrupted"
    train(folder, *RELOAD, check=0)
    assert_same_run(reference(0), folder)


def test_signal_handlers_only_set_flags_and_a_second_ctrl_c_stops_at_once():
    from ginlab.training.callbacks.checkpointer import Checkpointer

    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)}
    try:
        checkpointer = Checkpointer(RunFolder(tempfile.mkdtemp()), history=None)
        checkpointer.install_signal_handlers()
        os.kill(os.getpid(), signal.SIGUSR1)
        assert checkpointer.stop_signal == signal.SIGUSR1 and not checkpointer.hard_stop
        os.kill(os.getpid(), signal.SIGINT)  # the first Ctrl-C: a flag, like SIGTERM
        assert checkpointer.stop_signal == signal.SIGINT and not checkpointer.hard_stop
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)  # the second: at once
        assert checkpointer.hard_stop
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def test_broken_newest_checkpoints_are_skipped_loudly(tmp_path, reference):
    folder = tmp_path / "run"
    code, _ = interrupt([folder, reference.config, "-b", "checkpointer.keep=4"], signal.SIGTERM, steps=8)
    assert code == 3
    newest = sorted((folder / "checkpoints").glob("step-*.ckpt"))[-3:]
    assert len(newest) == 3
    for path, damage in zip(newest, ["truncated", "empty", "garbage"], strict=True):
        data = path.read_bytes()
        path.unlink()  # last.ckpt may be a link to it: damage only this name's file
        path.write_bytes(
            {"truncated": data[: len(data) // 2], "empty": b"", "garbage": os.urandom(len(data))}[damage]
        )
    proc = train(folder, *RELOAD, check=0)
    for path in newest:
        assert f"skipping broken checkpoint {path}" in proc.stdout + proc.stderr
    assert_same_run(reference(0), folder)


def test_a_kill_during_a_checkpoint_write_leaves_the_previous_ones_intact(tmp_path, reference):
    folder = tmp_path / "run"
    code, _ = interrupt([folder, reference.config], signal.SIGTERM, steps=6)
    assert code == 3
    # What a SIGKILL in the middle of torch.save leaves behind: a partial temporary file beside the targets.
    newest = sorted((folder / "checkpoints").glob("step-*.ckpt"))[-1]
    partial = folder / "checkpoints" / f".step-99999999.ckpt.{os.getpid()}.tmp"
    partial.write_bytes(newest.read_bytes()[:1000])
    train(folder, *RELOAD, check=0)
    assert not partial.exists()
    assert_same_run(reference(0), folder)


def test_extending_a_finished_run_equals_running_longer(tmp_path, reference):
    folder = tmp_path / "run"
    train(folder, reference.config, "-b", "training_loop.n_epochs=2", check=0)
    train(folder, *RELOAD, "-b", "training_loop.n_epochs=4", check=0)
    assert_same_run(reference(0), folder)


def test_a_run_killed_before_its_first_checkpoint_reloads_from_step_0(tmp_path, reference):
    folder = tmp_path / "run"
    proc = start_train(folder, reference.config)
    for line in proc.stdout:
        if line.startswith("run folder:"):
            proc.kill()
            break
    proc.communicate()
    assert (folder / "meta.json").exists() and not list((folder / "checkpoints").glob("step-*.ckpt"))
    proc = train(folder, *RELOAD, check=0)
    assert "from step 0 (no checkpoint was written)" in proc.stdout
    assert_same_run(reference(0), folder)


def test_reload_of_a_missing_or_empty_folder_is_an_error(tmp_path):
    for folder in (tmp_path / "missing", tmp_path / "empty"):
        if folder.name == "empty":
            folder.mkdir()
        proc = train(folder, *RELOAD)
        assert proc.returncode == 2 and "holds no run" in proc.stderr
    assert not (tmp_path / "missing").exists() and not list((tmp_path / "empty").iterdir())


def test_a_reload_applies_an_accepted_hyperparameter_change_and_refuses_what_it_cannot_apply(
    tmp_path, reference
):
    folder = tmp_path / "run"
    train(folder, reference.config, "-b", "training_loop.n_epochs=1", check=0)
    before = tree_snapshot(folder)
    # The architecture cannot change under a checkpoint: refused up front, even with reload_allow_changes.
    proc = train(
        folder,
        reference.config,
        *RELOAD,
        "-b",
        "torch.optim.SGD.lr=0.1#cnn.dropout=0.5#training_loop.n_epochs=2#training_loop.reload_allow_changes=True",
    )
    assert (
        proc.returncode == 2 and "cnn.dropout: 0.3 -> 0.5" in proc.stderr and "cannot change" in proc.stderr
    )
    # A learning rate can be applied from the reload on, when allowed.
    proc = train(folder, reference.config, *RELOAD, "-b", "torch.optim.SGD.lr=0.1#training_loop.n_epochs=2")
    assert proc.returncode == 2
    assert "SGD.lr: 0.05 -> 0.1" in proc.stderr and "reload_allow_changes" in proc.stderr
    assert "n_epochs" not in proc.stderr.split("differs")[1].split("Reload with")[0]  # may change on reload
    assert tree_snapshot(folder) == before
    train(folder, *RELOAD, "-b", "torch.optim.SGD.lr=0.1#training_loop.n_epochs=2", "-b",
          "training_loop.reload_allow_changes=True", check=0)  # fmt: skip
    meta = read_json(folder / "meta.json")
    assert meta["reloads"][-1]["accepted_config_changes"] == ["SGD.lr: 0.05 -> 0.1"]
    assert meta["reloads"][-1]["from_step"] == read_jsonl(folder / "history.jsonl")[0]["step"]
    assert read_json(folder / "config.json")["SGD.lr"] == 0.1
    # The record is true: epoch 1 trained at the new base rate on the schedule's position (StepLR, gamma 0.8).
    history = read_jsonl(folder / "history.jsonl")
    assert [row["lr"] for row in history] == pytest.approx([0.05, 0.1 * 0.8])
    group = final_state(folder)["optimizer_states"][0]["param_groups"][0]
    assert group["initial_lr"] == 0.1 and group["lr"] == pytest.approx(0.1 * 0.8**2)


def test_one_writer_per_folder_and_a_stale_lock_is_taken_over(tmp_path, reference):
    folder = tmp_path / "run"
    proc = start_train(folder, reference.config, "-b", "training_loop.n_epochs=1000")
    # Three epochs printed: the last checkpoint's epoch is then >= 2 however the SIGTERM below falls (with only
    # "epoch 2/" printed, a loaded machine saw epoch 1, and "too few" below became n_epochs=0).
    assert any(line.startswith("epoch 3/") for line in proc.stdout)
    # The writer is paused (it still holds the folder) while the second process starts: it would otherwise
    # train on and take the CPU the second one needs to start.
    proc.send_signal(signal.SIGSTOP)
    try:
        second = train(folder, *RELOAD)
    finally:
        proc.send_signal(signal.SIGCONT)
    assert second.returncode == 2
    assert f"host {socket.gethostname()}, pid {proc.pid}" in second.stderr
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == 3
    epoch = final_state(folder)["epoch"]
    too_few = train(folder, *RELOAD, "-b", f"training_loop.n_epochs={epoch - 1}")
    assert too_few.returncode == 2 and "epochs already" in too_few.stderr
    assert f"training_loop.n_epochs={epoch - 1} cannot be reached again" in too_few.stderr
    # A writer that died without releasing: its lock record is still there, nobody holds the lock.
    (folder / ".lock.json").write_text(json.dumps({"host": "gone-host", "pid": 999999, "started": "earlier"}))
    third = train(folder, *RELOAD, "-b", f"training_loop.n_epochs={epoch + 1}", check=0)
    assert "Taking over" in third.stderr and "gone-host" in third.stderr


def test_a_failed_checkpoint_write_is_reported_and_the_previous_checkpoint_survives(tmp_path, reference):
    folder = tmp_path / "run"
    code, _ = interrupt([folder, reference.config], signal.SIGTERM, steps=2)
    assert code == 3
    before = {p.name: p.read_bytes() for p in (folder / "checkpoints").glob("*.ckpt")}
    size = max(len(b) for b in before.values())

    def small_disk():  # the file-size limit makes every write past `size // 2` bytes fail, like a full disk
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (size // 2, size // 2))

    proc = train(folder, *RELOAD, preexec_fn=small_disk)
    assert proc.returncode == 1
    assert "Could not write checkpoint" in proc.stderr and "previous checkpoints are intact" in proc.stderr
    meta = read_json(folder / "meta.json")
    assert meta["status"] == "failed" and "Could not write checkpoint" in meta["error"]["message"]
    for name, data in before.items():
        assert (folder / "checkpoints" / name).read_bytes() == data
    assert not list((folder / "checkpoints").glob(".*.tmp"))
    train(folder, *RELOAD, check=0)  # with space again, it finishes exactly
    assert_same_run(reference(0), folder)


def test_a_reload_ignores_values_the_run_never_used(tmp_path):
    # configs/toy.gin binds torch.optim.Adam.lr; a run trained with SGD never calls Adam, so its config.json
    # has no Adam.lr, and binding it (unchanged, or even to another value) changes nothing the run computes.
    run = tmp_path / "run"
    sgd = "training_loop.optimizer=@torch.optim.SGD#torch.optim.SGD.lr=0.05"
    train(run, "configs/toy.gin", "-b", f"{sgd}#training_loop.n_epochs=1", check=0)
    assert "torch.optim.Adam.lr" not in read_json(run / "config.json")
    train(run, "configs/toy.gin", "-b", f"{sgd}#training_loop.n_epochs=2#training_loop.reload=True", check=0)
    train(
        run,
        "configs/toy.gin",
        *RELOAD,
        "-b",
        f"{sgd}#training_loop.n_epochs=3#torch.optim.Adam.lr=0.5",
        check=0,
    )
    assert read_json(run / "meta.json")["status"] == "finished"
    assert [row["epoch"] for row in read_jsonl(run / "history.jsonl")] == [0, 1, 2]
    # A value the run did use is still refused when changed.
    refused = train(
        run, "configs/toy.gin", *RELOAD, "-b", f"{sgd}#training_loop.n_epochs=4#toy.num_samples=512"
    )
    assert refused.returncode == 2 and "toy.num_samples" in refused.stderr
