#!/usr/bin/env python3
"""What ginlab's training loop costs per step, against a hand-written PyTorch loop on the same work.

1. The goal (<= 1.10x): the digits CNN of configs/cnn.gin, batch 64, batches sliced from in-memory tensors,
   the same optimizer and number of steps, for a hand-written loop, plain Lightning (a textbook
   LightningModule with automatic optimization, on the same batches) and ginlab's loop; measured in this one
   process, alternating, several rounds. The hand-written loop and plain Lightning run in torch's default
   mode, as a researcher writes them; ginlab in its own default, deterministic mode (which exact resume
   needs). Steady-state step time is the median interval between consecutive training-step starts within an
   epoch (all per-step costs included: data fetch, callbacks, history, heartbeat, progress, checkpoint
   checks); epoch-end work (validation, checkpoint) is reported separately as whole-run wall time. Also
   measured interleaved: after each epoch of the Lightning or ginlab loop, one epoch of the hand-written loop,
   so that the two are timed within a second of each other (this machine's speed drifts by tens of percent
   between runs seconds apart); the ratio per epoch pair, median and quartiles over all of them.
2. The per-step overhead itself, in microseconds: the same three loops on a one-layer model with one torch
   thread, timed in CPU time of the main thread, so that the model's compute is negligible and other load on
   the machine hardly moves the numbers. This is what 1. is made of, and what to watch when changing
   callbacks. Also ginlab on Lightning's own per-batch path (a callback listening to on_after_backward forces
   it): what src/ginlab/epoch_loop.py saves.

Also measured: `bin/train.py --help` (goal < 0.5 s) and start-up to the first training step of a real run.

3. `--telemetry`: what the history's sys_* columns cost (goal <= 1 % of the digits CNN's step). ginlab's
   loop on the CNN, one torch thread, with telemetry on and off (`telemetry.enabled=False`), alternating: the
   steady-state step as wall time and as CPU time of the main thread (which other load on the machine hardly
   moves), the whole run's wall and CPU time, the ratios on / off per round; and telemetry's own CPU time (its
   epoch-end columns in the main thread, its sampler thread) as a share of the run's CPU time.

    python benchmarks/train_overhead.py [--epochs 10] [--rounds 5] [--telemetry]
"""

import argparse
import contextlib
import math
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from ginlab.data.digits import Digits  # noqa: E402
from ginlab.models.cnn import CNN as CNN_MODEL  # noqa: E402
from ginlab.registry import register_callback, register_model  # noqa: E402

STEP_STARTS = []
CLOCK = time.perf_counter  # part 2 switches to the main thread's CPU time


@register_callback("bench_step_timer")
class StepTimer(pl.Callback):
    def on_train_epoch_start(self, trainer, pl_module):
        STEP_STARTS.append([])

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        STEP_STARTS[-1].append(CLOCK())


@register_callback("bench_backward_hook")
class BackwardHook(pl.Callback):
    """Listens to a hook that only Lightning's backward wrapper calls:
    the run takes Lightning's per-batch path."""

    def on_after_backward(self, trainer, pl_module):
        pass


@contextlib.contextmanager
def torch_defaults():
    """Torch's default mode (not deterministic), also inside a fit that switched deterministic mode on."""
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(False)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(deterministic)


@register_model("bench_linear")
class Linear(nn.Module):
    """A one-layer model: its step costs next to nothing, so what is measured is the loop around it."""

    def __init__(self, input_shape, num_classes):
        super().__init__()
        self.layer = nn.Linear(math.prod(input_shape), num_classes)

    def forward(self, x):
        return self.layer(x.flatten(1))


class PlainLightning(pl.LightningModule):
    """The LightningModule a researcher would write: automatic optimization,
    the loss logged once per epoch."""

    def __init__(self, net, lr, optimizer):
        super().__init__()
        self.net, self.lr, self.optimizer_class = net, lr, optimizer

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        return self.optimizer_class(self.parameters(), lr=self.lr)


def steady_step_time(epochs_of_starts) -> float:
    # Drop each epoch's first interval: it includes creating the epoch's iterator.
    intervals = [b - a for starts in epochs_of_starts for a, b in zip(starts[1:], starts[2:], strict=False)]
    return statistics.median(intervals)


# The two workloads: (bindings for ginlab, how the other two loops build the same model, data and optimizer).
CNN = dict(
    bindings=[],
    datamodule=lambda: Digits(batch_size=64),
    net=lambda dm: CNN_MODEL(dm.input_shape, 10, channels=(32, 64), dropout=0.2),
    optimizer=torch.optim.Adam,
    lr=3e-3,
)
LINEAR = dict(
    bindings=[
        "training_loop.model='bench_linear'",
        "training_loop.optimizer=@torch.optim.SGD",
        "torch.optim.SGD.lr=0.1",
    ],
    datamodule=lambda: Digits(batch_size=64),
    net=lambda dm: Linear(dm.input_shape, 10),
    optimizer=torch.optim.SGD,
    lr=0.1,
)


class HandLoop:
    """The loop a researcher would write: the same model, data split, batches and optimizer."""

    def __init__(self, work, seed: int = 0):
        dm = work["datamodule"]()
        self.x, self.y = dm.split("train")
        self.xv, self.yv = dm.split("val")
        torch.manual_seed(seed)
        self.net = work["net"](dm)
        self.opt = work["optimizer"](self.net.parameters(), lr=work["lr"])

    def train_epoch(self, epoch: int) -> list[float]:
        """One epoch; the start time of each step."""
        net, opt, x, y = self.net, self.opt, self.x, self.y
        net.train()
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(epoch))
        starts = []
        with torch_defaults():
            for i in range(0, len(x), 64):
                starts.append(CLOCK())
                idx = order[i : i + 64]
                loss = F.cross_entropy(net(x[idx]), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        return starts

    def validate_and_save(self, folder) -> None:
        net, xv, yv = self.net, self.xv, self.yv
        net.eval()
        with torch.no_grad():
            correct = sum(
                (net(xv[i : i + 64]).argmax(1) == yv[i : i + 64]).sum().item() for i in range(0, len(xv), 64)
            )
        torch.save(
            {"model": net.state_dict(), "opt": self.opt.state_dict(), "acc": correct / len(xv)},
            os.path.join(folder, "last.ckpt"),
        )


def hand_written(work, epochs: int, seed: int = 0):
    loop = HandLoop(work, seed)
    starts, t0 = [], time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for epoch in range(epochs):
            starts.append(loop.train_epoch(epoch))
            loop.validate_and_save(tmp)
    return steady_step_time(starts), time.perf_counter() - t0


INTERLEAVED = {
    "work": None,
    "hand": [],
}  # the workload of the interleaved hand-written epochs, and their starts


@register_callback("bench_interleaved")
class Interleaved(pl.Callback):
    """After each epoch of the loop being measured, one epoch of the hand-written loop: the two are timed
    within a second of each other, so a machine that speeds up or slows down affects both alike."""

    def __init__(self):
        self.hand = HandLoop(INTERLEAVED["work"], seed=1)

    def on_train_epoch_end(self, trainer, pl_module):
        INTERLEAVED["hand"].append(self.hand.train_epoch(trainer.current_epoch))


def epoch_ratios(measured, hand) -> list[float]:
    """Per epoch: the loop's median step interval over the next hand-written epoch's."""

    def median_interval(starts):
        return statistics.median(b - a for a, b in zip(starts[1:], starts[2:], strict=False))

    return [
        median_interval(m) / median_interval(h)
        for m, h in zip(measured, hand, strict=False)
        if len(m) > 3 and len(h) > 3
    ]


def plain_lightning(work, epochs: int, interleave: bool = False):
    """Lightning alone, as documented, on the same batches (ginlab's in-memory DataModule)."""
    STEP_STARTS.clear()
    INTERLEAVED.update(work=work, hand=[])
    dm = work["datamodule"]()
    dm.setup()
    torch.manual_seed(0)
    module = PlainLightning(work["net"](dm), work["lr"], work["optimizer"])
    trainer = pl.Trainer(
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[StepTimer(), *([Interleaved()] if interleave else [])],
    )
    t0 = time.perf_counter()
    with torch_defaults():
        trainer.fit(module, datamodule=dm)
    return steady_step_time(STEP_STARTS), time.perf_counter() - t0


def ginlab_loop(work, epochs: int, interleave: bool = False, lightning_path: bool = False, bindings=()):
    from ginlab.config import parse
    from ginlab.training.loop import training_loop

    STEP_STARTS.clear()
    INTERLEAVED.update(work=work, hand=[])
    callbacks = [
        "bench_step_timer",
        *(["bench_interleaved"] if interleave else []),
        *(["bench_backward_hook"] if lightning_path else []),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        parse(
            [ROOT / "configs" / "cnn.gin"],
            [
                f"training_loop.n_epochs={epochs}",
                f"training_loop.callbacks={callbacks}",
                *work["bindings"],
                *bindings,
            ],
        )
        t0 = time.perf_counter()
        training_loop(os.path.join(tmp, "run"))
        total = time.perf_counter() - t0
    return steady_step_time(STEP_STARTS), total


def command_time(args, until=None, repeats=5) -> float:
    times = []
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    for _ in range(repeats):
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT
        )
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


TELEMETRY_CPU = {"seconds": 0.0}  # CPU time spent in telemetry's own code (main thread and sampler thread)
_INSIDE = threading.local()  # columns() calls sample_now(): count the outer call only


def count_telemetry_cpu():
    """Wrap the two places telemetry works (the row's columns, the sampler's samples): add up their CPU
    time."""
    from ginlab.health.usage import Sampler
    from ginlab.training.callbacks.telemetry import Telemetry

    def timed(function):
        def wrapper(*args, **kwargs):
            if getattr(_INSIDE, "active", False):
                return function(*args, **kwargs)
            _INSIDE.active, start = True, time.thread_time()
            try:
                return function(*args, **kwargs)
            finally:
                TELEMETRY_CPU["seconds"] += time.thread_time() - start
                _INSIDE.active = False

        return wrapper

    Telemetry.columns = timed(Telemetry.columns)
    Sampler.sample_now = timed(Sampler.sample_now)


def telemetry_overhead(epochs: int, rounds: int) -> None:
    """Part 3 (see the module docstring). One torch thread, so that the main thread's CPU time is all of a
    step's: CPU times hardly move with other load on the machine, wall times do (both are printed)."""
    global CLOCK
    count_telemetry_cpu()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    ginlab_loop(CNN, 2)  # warm-up
    runs = {False: [], True: []}  # per run: (step wall, step CPU, run wall, run CPU of the process, own CPU)
    for i in range(rounds):
        for enabled in (False, True) if i % 2 == 0 else (True, False):  # alternate who goes first
            binding = [f"telemetry.enabled={enabled}"]
            CLOCK = time.perf_counter
            step_wall, run_wall = ginlab_loop(CNN, epochs, bindings=binding)
            CLOCK = time.thread_time
            TELEMETRY_CPU["seconds"] = 0.0
            cpu_before = time.process_time()
            step_cpu, _ = ginlab_loop(CNN, epochs, bindings=binding)
            run_cpu = time.process_time() - cpu_before
            runs[enabled].append((step_wall, step_cpu, run_wall, run_cpu, TELEMETRY_CPU["seconds"]))
    CLOCK = time.perf_counter
    torch.set_num_threads(threads)

    def ratios(column):
        return [on[column] / off[column] for on, off in zip(runs[True], runs[False], strict=True)]

    def median(enabled, column):
        return statistics.median(run[column] for run in runs[enabled])

    print(
        f"3. telemetry: digits CNN, batch 64, 1 thread, {epochs} epochs, {rounds} rounds, on/off alternating"
    )
    for name, column in (("wall time", 0), ("CPU time of the main thread", 1)):
        per_round = ", ".join(f"{r:.3f}" for r in ratios(column))
        print(
            f"steady-state step, {name}:  off {1000 * median(False, column):.3f} ms   on "
            f"{1000 * median(True, column):.3f} ms   on / off {statistics.median(ratios(column)):.4f} "
            f"(median of per-round ratios; goal <= 1.01; per round {per_round})"
        )
    print(
        f"whole run (with validation, checkpoints, test), wall: off {median(False, 2):.2f} s   on "
        f"{median(True, 2):.2f} s   on / off {statistics.median(ratios(2)):.3f};  CPU of the process: off "
        f"{median(False, 3):.2f} s   on {median(True, 3):.2f} s   on / off {statistics.median(ratios(3)):.3f}"
    )
    own = [run[4] / run[3] for run in runs[True]]  # per run: telemetry's CPU seconds over the run's
    print(
        f"  telemetry's own CPU time (its epoch-end columns and its sampler thread): "
        f"{100 * statistics.median(own):.3f} % of the run's CPU time (median; max {100 * max(own):.3f} %)"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--telemetry", action="store_true", help="only part 3: telemetry on against off")
    args = parser.parse_args()
    import logging
    import warnings

    from ginlab.training.logs import quiet_lightning, setup_logging

    setup_logging()
    quiet_lightning()
    logging.getLogger("ginlab.progress").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore")
    if args.telemetry:
        telemetry_overhead(args.epochs, args.rounds)
        return

    hand_step, hand_total, gin_step, gin_total, pl_step = [], [], [], [], []
    hand_written(CNN, 2)  # warm-up: first-call costs of torch kernels
    for _ in range(args.rounds):
        s, t = hand_written(CNN, args.epochs)
        hand_step.append(s), hand_total.append(t)
        pl_step.append(plain_lightning(CNN, args.epochs)[0])
        s, t = ginlab_loop(CNN, args.epochs)
        gin_step.append(s), gin_total.append(t)
    hs, gs, ps = statistics.median(hand_step), statistics.median(gin_step), statistics.median(pl_step)
    ht, gt = statistics.median(hand_total), statistics.median(gin_total)
    per_round = [g / h for g, h in zip(gin_step, hand_step, strict=True)]
    print(
        f"1. digits CNN, batch 64, {args.epochs} epochs, {args.rounds} alternating rounds, "
        f"{torch.get_num_threads()} threads (wall time)"
    )
    print(
        f"steady-state step (median of rounds):  hand-written {1000 * hs:.3f} ms   plain Lightning "
        f"{1000 * ps:.3f} ms   ginlab {1000 * gs:.3f} ms"
    )
    print(
        f"  ginlab / hand-written: {statistics.median(per_round):.3f} "
        f"(median of per-round ratios; goal <= 1.10)"
        f";  plain Lightning / hand-written {ps / hs:.3f};  ginlab / plain Lightning {gs / ps:.3f}"
    )
    print(f"  per-round ginlab / hand-written: {', '.join(f'{r:.3f}' for r in per_round)}")
    print(
        f"whole run (train + validation + checkpoint each epoch, + test for ginlab):  "
        f"hand-written {ht:.2f} s   "
        f"ginlab {gt:.2f} s   ratio {gt / ht:.2f}"
    )

    # The same, interleaved: one hand-written epoch after each epoch of the loop measured (see Interleaved).
    ratios = {"plain Lightning": [], "ginlab": []}
    for _ in range(args.rounds):
        plain_lightning(CNN, args.epochs, interleave=True)
        ratios["plain Lightning"] += epoch_ratios(STEP_STARTS, INTERLEAVED["hand"])
        ginlab_loop(CNN, args.epochs, interleave=True)
        ratios["ginlab"] += epoch_ratios(STEP_STARTS, INTERLEAVED["hand"])
    quartiles = {name: statistics.quantiles(r, n=4) for name, r in ratios.items()}
    print(
        f"  interleaved epoch by epoch ({len(ratios['ginlab'])} epochs each; median [quartiles]):  ginlab / "
        f"hand-written {quartiles['ginlab'][1]:.3f} "
        f"[{quartiles['ginlab'][0]:.3f}, {quartiles['ginlab'][2]:.3f}]"
        f" (goal <= 1.10);  plain Lightning / hand-written {quartiles['plain Lightning'][1]:.3f} "
        f"[{quartiles['plain Lightning'][0]:.3f}, {quartiles['plain Lightning'][2]:.3f}]"
    )

    global CLOCK
    CLOCK, threads = time.thread_time, torch.get_num_threads()
    torch.set_num_threads(1)
    overhead = {"hand-written": [], "plain Lightning": [], "ginlab": [], "lightning path": []}
    for _ in range(args.rounds):
        overhead["hand-written"].append(hand_written(LINEAR, args.epochs)[0])
        overhead["plain Lightning"].append(plain_lightning(LINEAR, args.epochs)[0])
        overhead["ginlab"].append(ginlab_loop(LINEAR, args.epochs)[0])
        overhead["lightning path"].append(ginlab_loop(LINEAR, args.epochs, lightning_path=True)[0])
    torch.set_num_threads(threads)
    CLOCK = time.perf_counter
    us = {name: 1e6 * statistics.median(times) for name, times in overhead.items()}
    print("2. per-step cost on a one-layer model (1 thread, CPU time of the main thread, median of rounds):")
    print(
        f"  hand-written {us['hand-written']:.0f} us   plain Lightning {us['plain Lightning']:.0f} us "
        f"(+{us['plain Lightning'] - us['hand-written']:.0f})   ginlab {us['ginlab']:.0f} us "
        f"(+{us['ginlab'] - us['hand-written']:.0f})   ginlab on Lightning's per-batch path "
        f"{us['lightning path']:.0f} us (+{us['lightning path'] - us['hand-written']:.0f})"
    )
    print(
        f"  ginlab's overhead is {100 * (us['ginlab'] - us['hand-written']) / (1e6 * hs):.1f}% "
        f"of a hand-written CNN step ({1000 * hs:.2f} ms)"
    )
    help_time = command_time([sys.executable, str(ROOT / "bin" / "train.py"), "--help"])
    print(f"bin/train.py --help: {help_time:.3f} s  (goal < 0.5 s)")
    with tempfile.TemporaryDirectory() as tmp:
        startup = []
        for i in range(3):
            startup.append(
                command_time(
                    [
                        sys.executable,
                        str(ROOT / "bin" / "train.py"),
                        f"{tmp}/r{i}",
                        str(ROOT / "configs" / "cnn.gin"),
                    ],
                    until="step ",
                    repeats=1,
                )
            )
        print(
            f"start-up to the first progress line of a real run (cnn.gin, includes its first "
            f"{20} steps): {statistics.median(startup):.2f} s"
        )


if __name__ == "__main__":
    main()
