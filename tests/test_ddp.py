"""DDP for real: two CPU processes (Lightning's DDP over gloo) train one run through bin/train.py.

Rank 0 alone writes the run folder, every process trains on its own share of each epoch, validation and test
metrics are summed across the processes, signals stop both processes at the same step, and a reload continues
the run exactly.
"""

import math
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
from conftest import HARD_CONFIG, ROOT, env, read_json, read_jsonl, start_train, train

from ginlab.data.batching import EpochBatchSampler
from ginlab.training.distributed import is_main_process

# The resume tests' configuration (everything that makes exact resume hard), shorter, on two processes.
DDP_CONFIG = (
    HARD_CONFIG
    + """
training_loop.n_epochs = 3
history.every_n_steps = 2
trainer.accelerator = "cpu"
trainer.devices = 2
"""
)
# The toy split of 512 examples: 77 validation, 77 test, 358 training examples. One process makes
# ceil(358 / 16) = 23 steps per epoch; each of 2 DDP processes takes every other batch of the epoch's order,
# the odd last one dropped so that both make the same number of steps: 11. Validation and test have 5 batches
# each (4 x 16 + 13), split 3 and 2 between the processes: uneven on purpose.
TRAIN_EXAMPLES = 512 - 2 * round(0.15 * 512)
STEPS_ONE_PROCESS = math.ceil(TRAIN_EXAMPLES / 16)
STEPS_PER_EPOCH = STEPS_ONE_PROCESS // 2


@pytest.fixture
def config(tmp_path) -> Path:
    path = tmp_path / "ddp.gin"
    path.write_text(DDP_CONFIG)
    return path


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The 3-epoch DDP run, uninterrupted."""
    folder = tmp_path_factory.mktemp("ddp_reference")
    (folder / "ddp.gin").write_text(DDP_CONFIG)
    train(folder / "run", folder / "ddp.gin", check=0, timeout=240)
    return folder / "run"


def processes_using(folder: Path) -> list[int]:
    """Pids of live processes whose command line names `folder` (a DDP process left behind would)."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if str(folder).encode() in cmdline.read_bytes():
                pids.append(int(cmdline.parent.name))
        except OSError:
            pass
    return pids


def evaluate_in_one_process(run: Path) -> tuple[dict, dict]:
    """bin/evaluate.py's (last checkpoint on val, best checkpoint on test), from one fresh single process."""
    code = (
        "import sys; from ginlab.training.evaluate import evaluate; "
        "evaluate(sys.argv[1], 'last', 'val'); evaluate(sys.argv[1], 'best', 'test')"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(run)],
        capture_output=True,
        text=True,
        env=env(),
        cwd=ROOT,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr
    return read_json(run / "evaluations" / "last-val.json"), read_json(run / "evaluations" / "best-test.json")


def assert_same_run(run: Path, reference: Path) -> None:
    """Bitwise the same weights, optimizer state, history and test metrics (apart from the time columns)."""
    a = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(reference / "checkpoints" / "last.ckpt", weights_only=True)
    assert a["global_step"] == b["global_step"]
    for key, value in b["state_dict"].items():
        assert torch.equal(a["state_dict"][key], value), key
    for x, y in zip(
        a["optimizer_states"][0]["state"].values(), b["optimizer_states"][0]["state"].values(), strict=False
    ):
        assert torch.equal(x["momentum_buffer"], y["momentum_buffer"])

    def rows(path):  # without what is measured rather than computed: the time, the sys_* resources
        return [
            {k: v for k, v in row.items() if k != "time" and not k.startswith("sys_")}
            for row in read_jsonl(path)
        ]

    assert rows(run / "history.jsonl") == rows(reference / "history.jsonl")
    assert rows(run / "steps.jsonl") == rows(reference / "steps.jsonl")
    assert read_json(run / "summary.json")["test"] == read_json(reference / "summary.json")["test"]


def assert_written_once(run: Path, epochs: int) -> None:
    """One finished meta.json, one history row per epoch, each logged step once, no line of rank 1's."""
    meta = read_json(run / "meta.json")
    assert meta["status"] == "finished" and meta["exit_code"] == 0
    assert not (run / ".lock.json").exists()
    history = read_jsonl(run / "history.jsonl")
    assert [row["epoch"] for row in history] == list(range(epochs))
    assert [row["step"] for row in history] == [STEPS_PER_EPOCH * (e + 1) for e in range(epochs)]
    steps = [row["step"] for row in read_jsonl(run / "steps.jsonl")]
    assert steps == list(range(2, STEPS_PER_EPOCH * epochs + 1, 2))
    for name in ("history.jsonl", "steps.jsonl"):
        lines = (run / name).read_text().splitlines()
        assert len(lines) == len(set(lines)), name
    # log.txt holds every session (a reload starts a new one): within each, no line twice, e.g. a progress
    # line printed by both processes. Rank 1 prints only warnings, each line marked with its rank.
    log = (run / "log.txt").read_text()
    for session in log.split("==== reload"):
        lines = [line for line in session.splitlines() if line.strip()]
        twice = [line for line, n in Counter(lines).items() if n > 1]
        assert not twice, twice
    assert sum(line.startswith("epoch ") for line in log.splitlines()) == epochs
    summary = read_json(run / "summary.json")
    assert summary["epochs"] == epochs and summary["steps"] == STEPS_PER_EPOCH * epochs
    assert processes_using(run) == []


def test_two_processes_train_one_run_folder_and_reload_continues_it(tmp_path, config, reference):
    run = tmp_path / "run"
    proc = train(run, config, "-b", "training_loop.n_epochs=2", check=0, timeout=240)
    assert "[rank 1] error" not in proc.stderr, proc.stderr
    assert_written_once(run, epochs=2)
    # Half the steps of one process per epoch (within rounding): every process trained on its own share.
    assert (STEPS_ONE_PROCESS, STEPS_PER_EPOCH) == (23, 11)

    for path in (run / "checkpoints").glob("*.ckpt"):  # rolling ones, last and best: all complete
        state = torch.load(path, weights_only=True)
        assert state["ginlab"]["world_size"] == 2 and len(state["ginlab"]["rng_per_rank"]) == 2

    # The metrics are those of the whole validation / test split: the same as one process evaluating the
    # same weights on all of it (bin/evaluate.py), although the processes had 3 and 2 of its batches.
    history, summary = read_jsonl(run / "history.jsonl"), read_json(run / "summary.json")
    val, test = evaluate_in_one_process(run)
    assert val["examples"] == 77 and val["step"] == history[-1]["step"]
    assert val["metrics"]["val_acc"] == pytest.approx(history[-1]["val_acc"], abs=1e-6)
    assert val["metrics"]["val_loss"] == pytest.approx(history[-1]["val_loss"], abs=1e-6)
    assert test["examples"] == 77 and test["step"] == summary["best"]["step"]
    assert test["metrics"]["test_acc"] == pytest.approx(summary["test"]["test_acc"], abs=1e-6)
    assert test["metrics"]["test_loss"] == pytest.approx(summary["test"]["test_loss"], abs=1e-6)

    # A reload of the DDP run, to more epochs: the same as the run that had 3 epochs from the start.
    train(run, "-b", "training_loop.reload=True#training_loop.n_epochs=3", check=0, timeout=240)
    assert_written_once(run, epochs=3)
    assert len(read_json(run / "meta.json")["reloads"]) == 1
    assert_same_run(run, reference)


def test_sigterm_to_rank_0_stops_both_processes_and_reload_continues_exactly(tmp_path, config, reference):
    run = tmp_path / "run"
    proc = start_train(run, config)
    for line in proc.stdout:  # the handlers are in place when training starts: stop at one of the first steps
        if line.startswith("training: "):
            proc.send_signal(signal.SIGTERM)  # to rank 0 alone, as `kill PID` does
            break
    out = line + proc.communicate(timeout=120)[0]
    assert proc.returncode == 3, out
    assert "SIGTERM received: checkpoint written" in out
    meta = read_json(run / "meta.json")
    assert meta["status"] == "interrupted" and meta["exit_code"] == 3
    assert processes_using(run) == []  # rank 1 stopped at the same step, after the same checkpoint
    stopped_at = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    assert 0 < stopped_at < 3 * STEPS_PER_EPOCH

    train(run, "-b", "training_loop.reload=True", check=0, timeout=240)
    assert_written_once(run, epochs=3)
    assert_same_run(run, reference)


def environment(pid: int) -> bytes:
    try:
        return b"\0" + Path(f"/proc/{pid}/environ").read_bytes()  # NUL-separated, as the process was started
    except OSError:
        return b""


def children_of(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "pid (command)": state, ppid, ...
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def test_rank_1_dying_before_the_process_group_exists_ends_rank_0_with_the_reason(tmp_path, config):
    # torch.distributed would keep rank 0 waiting for it for 30 minutes; ginlab's watcher ends it after 10 s.
    run = tmp_path / "run"
    proc = start_train(run, config)
    children = []
    while not children and proc.poll() is None:  # rank 0 also runs git: find the child started as rank 1
        children = [pid for pid in children_of(proc.pid) if b"\0LOCAL_RANK=1\0" in environment(pid)]
    for pid in children:
        os.kill(pid, signal.SIGKILL)  # while it starts up
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 1, out
    meta = read_json(run / "meta.json")
    assert meta["status"] == "failed" and meta["error"]["type"] == "ProcessLost"
    assert f"rank 1 (pid {children[0]}) exited with code -9" in meta["error"]["message"]
    assert "reload=True" in meta["error"]["message"] and not (run / ".lock.json").exists()
    assert processes_using(run) == []


def test_rank_0_killed_while_rank_1_starts_up_leaves_no_process_behind(tmp_path, config):
    # Rank 1 would wait 30 minutes to connect to a rank 0 that is gone; it follows rank 0 instead.
    run = tmp_path / "run"
    proc = start_train(run, config)
    children = []
    while not children and proc.poll() is None:
        children = [pid for pid in children_of(proc.pid) if b"\0LOCAL_RANK=1\0" in environment(pid)]
    proc.kill()
    proc.communicate(timeout=60)
    for _ in range(600):
        if not processes_using(run):
            break
        time.sleep(0.1)
    assert processes_using(run) == []


def test_a_reload_with_another_number_of_processes_is_refused(tmp_path, reference):
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    proc = train(
        run,
        "-b",
        "training_loop.reload=True#trainer.devices=1#training_loop.reload_allow_changes=True"
        "#training_loop.n_epochs=4",
        timeout=240,
    )
    assert proc.returncode == 1
    assert "written by a run of 2 process(es), and this one has 1" in proc.stderr
    assert "trainer.devices=2" in read_json(run / "meta.json")["error"]["message"]


# -- without processes ---------------------------------------------------------------------------------------
def test_evaluation_shares_use_every_batch_once_and_need_one_batch_each():
    # 77 examples in batches of 16: 5 batches, 3 for rank 0 and 2 for rank 1, none dropped.
    shards = [
        list(EpochBatchSampler(77, 16, shuffle=False, rank=r, world_size=2, even_shards=False))
        for r in (0, 1)
    ]
    assert [len(s) for s in shards] == [3, 2]
    indices = torch.cat([b[2] for shard in shards for b in shard])
    assert sorted(indices.tolist()) == list(range(77))
    # Training shares are even: the odd batch is dropped so that both processes make the same number of steps.
    assert [len(EpochBatchSampler(77, 16, shuffle=True, rank=r, world_size=2)) for r in (0, 1)] == [2, 2]
    with pytest.raises(ValueError, match="each process needs at least one batch"):
        len(EpochBatchSampler(10, 16, shuffle=False, rank=1, world_size=2, even_shards=False))


@pytest.mark.parametrize(
    "variables, main",
    [
        ({}, True),
        ({"LOCAL_RANK": "0", "NODE_RANK": "0", "WORLD_SIZE": "2"}, True),  # rank 0 after starting the others
        ({"LOCAL_RANK": "1", "WORLD_SIZE": "2"}, False),  # started by rank 0
        ({"NODE_RANK": "1"}, False),  # main process of a second node
        ({"RANK": "0", "LOCAL_RANK": "0"}, True),
        ({"RANK": "3", "LOCAL_RANK": "1"}, False),  # torchrun
        ({"SLURM_PROCID": "0"}, True),
        ({"SLURM_PROCID": "1"}, False),
        ({"SLURM_PROCID": "0", "LOCAL_RANK": "1"}, False),  # started by rank 0 inside a SLURM job
    ],
)
def test_who_owns_the_run_folder(monkeypatch, variables, main):
    for name in ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    assert is_main_process() is main
    assert os.environ.get("RANK") == variables.get("RANK")
