"""Shared test helpers: run bin/train.py as a real process on tiny real or generated data."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TRAIN = [sys.executable, str(ROOT / "bin" / "train.py")]

# A few-second configuration with everything that makes exact resume hard: shuffling, dropout,
# random augmentation, momentum, an epoch-wise LR schedule, frequent mid-epoch checkpoints.
HARD_CONFIG = """
training_loop.model = "cnn"
training_loop.datamodule = "toy"
training_loop.n_epochs = 4
training_loop.optimizer = @torch.optim.SGD
torch.optim.SGD.lr = 0.05
torch.optim.SGD.momentum = 0.9
training_loop.lr_scheduler = @torch.optim.lr_scheduler.StepLR
torch.optim.lr_scheduler.StepLR.step_size = 1
torch.optim.lr_scheduler.StepLR.gamma = 0.8
training_loop.log_every_n_steps = 3
training_loop.checkpoint_every_n_steps = 4
cnn.channels = (8, 16)
cnn.dropout = 0.3
toy.batch_size = 16
toy.num_samples = 512
toy.augment = "shift"
"""


def env(pythonpath=()) -> dict:
    e = dict(os.environ)
    paths = [*map(str, pythonpath), str(ROOT / "src"), *([e["PYTHONPATH"]] if e.get("PYTHONPATH") else [])]
    e["PYTHONPATH"] = os.pathsep.join(paths)
    e.setdefault("OMP_NUM_THREADS", "1")
    return e


def train(*args, timeout=300, check=None, pythonpath=(), **kwargs) -> subprocess.CompletedProcess:
    """Run bin/train.py with `args`; return the finished process (stdout and stderr as text)."""
    proc = subprocess.run([*TRAIN, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env=env(pythonpath), cwd=ROOT, **kwargs)
    if check is not None and proc.returncode != check:
        raise AssertionError(f"exit {proc.returncode}, expected {check}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def start_train(*args) -> subprocess.Popen:
    return subprocess.Popen([*TRAIN, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env(), cwd=ROOT)


def read_json(path) -> dict:
    return json.loads(Path(path).read_text())


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


@pytest.fixture
def hard_config(tmp_path) -> Path:
    path = tmp_path / "hard.gin"
    path.write_text(HARD_CONFIG)
    return path


def tree_snapshot(folder) -> dict:
    """{relative path: (size, mtime_ns, bytes)} of every file: to prove a folder was not touched."""
    folder = Path(folder)
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(folder.rglob("*")) if p.is_file()}
