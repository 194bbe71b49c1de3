#!/usr/bin/env python3
"""What ginlab's training loop costs per step, against a hand-written PyTorch loop on the same work.

Same model (the digits CNN of configs/cnn.gin), same data (digits, batch 64, batches sliced from in-memory
tensors), same optimizer, same number of steps; both measured in this one process, alternating, several
rounds. Steady-state step time is the median interval between consecutive training-step starts within an
epoch (all per-step costs included: data fetch, callbacks, history, heartbeat, progress, checkpoint checks).
Epoch-end work (validation, checkpoint) is reported separately as whole-run wall time.

Also measured: `bin/train.py --help` (goal < 0.5 s) and start-up to the first training step of a real run.

    python benchmarks/train_overhead.py [--epochs 10] [--rounds 3]
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from ginlab.registry import register_callback  # noqa: E402

STEP_STARTS = []


@register_callback("bench_step_timer")
class StepTimer(pl.Callback):
    def on_train_epoch_start(self, trainer, pl_module):
        STEP_STARTS.append([])

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        STEP_STARTS[-1].append(time.perf_counter())


def steady_step_time(epochs_of_starts) -> float:
    # Drop each epoch's first interval: it includes creating the epoch's iterator.
    intervals = [b - a for starts in epochs_of_starts for a, b in zip(starts[1:], starts[2:])]
    return statistics.median(intervals)


def hand_written(epochs: int, seed: int = 0):
    """The loop a researcher would write: the same model, data split, batches and optimizer."""
    from ginlab.data.digits import Digits
    from ginlab.models.cnn import CNN

    dm = Digits(batch_size=64)
    x, y = dm.split("train")
    xv, yv = dm.split("val")
    torch.manual_seed(seed)
    net = CNN(dm.input_shape, 10, channels=(32, 64), dropout=0.2)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    starts, t0 = [], time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for epoch in range(epochs):
            net.train()
            order = torch.randperm(len(x), generator=torch.Generator().manual_seed(epoch))
            epoch_starts = []
            for i in range(0, len(x), 64):
                epoch_starts.append(time.perf_counter())
                idx = order[i:i + 64]
                loss = F.cross_entropy(net(x[idx]), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            starts.append(epoch_starts)
            net.eval()
            with torch.no_grad():
                correct = sum((net(xv[i:i + 64]).argmax(1) == yv[i:i + 64]).sum().item() for i in range(0, len(xv), 64))
            torch.save({"model": net.state_dict(), "opt": opt.state_dict(), "acc": correct / len(xv)},
                       os.path.join(tmp, "last.ckpt"))
    return steady_step_time(starts), time.perf_counter() - t0


def plain_lightning(epochs: int):
    """Lightning alone on the same module and batches: what ginlab's own callbacks add is ginlab - this."""
    from ginlab.data.digits import Digits
    from ginlab.models.cnn import CNN
    from ginlab.task import Classifier

    STEP_STARTS.clear()
    dm = Digits(batch_size=64)
    dm.setup()
    torch.manual_seed(0)
    net = CNN(dm.input_shape, 10, channels=(32, 64), dropout=0.2)
    module = Classifier(net, torch.optim.Adam(net.parameters(), lr=3e-3))
    trainer = pl.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, deterministic=True, callbacks=[StepTimer()])
    t0 = time.perf_counter()
    trainer.fit(module, datamodule=dm)
    return steady_step_time(STEP_STARTS), time.perf_counter() - t0


def ginlab_loop(epochs: int):
    from ginlab.config import parse
    from ginlab.loop import training_loop

    STEP_STARTS.clear()
    with tempfile.TemporaryDirectory() as tmp:
        parse([ROOT / "configs" / "cnn.gin"], [f"training_loop.n_epochs={epochs}",
                                               'training_loop.callbacks=["bench_step_timer"]'])
        t0 = time.perf_counter()
        training_loop(os.path.join(tmp, "run"))
        total = time.perf_counter() - t0
    return steady_step_time(STEP_STARTS), total


def command_time(args, until=None, repeats=5) -> float:
    times = []
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    for _ in range(repeats):
        t0 = time.perf_counter()
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)
        if until:
            for line in proc.stdout:
                if line.startswith(until):
                    break
            times.append(time.perf_counter() - t0)
            proc.kill()
            proc.communicate()
        else:
            proc.communicate()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    import logging
    import warnings

    from ginlab.train import quiet_lightning, setup_logging

    setup_logging()
    quiet_lightning()
    logging.getLogger("ginlab.progress").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore")

    hand_step, hand_total, gin_step, gin_total, pl_step = [], [], [], [], []
    hand_written(2)  # warm-up: first-call costs of torch kernels
    for _ in range(args.rounds):
        s, t = hand_written(args.epochs)
        hand_step.append(s), hand_total.append(t)
        pl_step.append(plain_lightning(args.epochs)[0])
        s, t = ginlab_loop(args.epochs)
        gin_step.append(s), gin_total.append(t)
    hs, gs, ps = statistics.median(hand_step), statistics.median(gin_step), statistics.median(pl_step)
    ht, gt = statistics.median(hand_total), statistics.median(gin_total)
    print(f"digits CNN, batch 64, {args.epochs} epochs, median of {args.rounds} alternating rounds, "
          f"{torch.get_num_threads()} threads")
    print(f"steady-state step:  hand-written {1000 * hs:.3f} ms   plain Lightning {1000 * ps:.3f} ms   "
          f"ginlab {1000 * gs:.3f} ms")
    print(f"  ratio ginlab / hand-written {gs / hs:.3f}  (goal <= 1.10);  plain Lightning / hand-written "
          f"{ps / hs:.3f};  ginlab / plain Lightning {gs / ps:.3f}  (what ginlab's callbacks add)")
    per_round = [g / h for g, h in zip(gin_step, hand_step)]
    print(f"  per-round ginlab / hand-written: {', '.join(f'{r:.3f}' for r in per_round)}")
    print(f"whole run (train + validation + checkpoint each epoch, + test for ginlab):  hand-written {ht:.2f} s   "
          f"ginlab {gt:.2f} s   ratio {gt / ht:.2f}")
    help_time = command_time([sys.executable, str(ROOT / "bin" / "train.py"), "--help"])
    print(f"bin/train.py --help: {help_time:.3f} s  (goal < 0.5 s)")
    with tempfile.TemporaryDirectory() as tmp:
        startup = []
        for i in range(3):
            startup.append(command_time([sys.executable, str(ROOT / "bin" / "train.py"), f"{tmp}/r{i}",
                                         str(ROOT / "configs" / "cnn.gin")], until="step ", repeats=1))
        print(f"start-up to the first progress line of a real run (cnn.gin, includes its first "
              f"{20} steps): {statistics.median(startup):.2f} s")


if __name__ == "__main__":
    main()
