"""Every use of Lightning's private names, in one module, tied to the Lightning version it was tested with.

ginlab uses Lightning's public API everywhere else. Some things it needs have no public door:
- the shorter per-batch path (`LeanEpochLoop`): Lightning's epoch loop with the calls that have nothing to do
  left out (about 90 us per step, 5 % of the digits CNN's step; see benchmarks/train_overhead.py);
- keeping Lightning's own SIGTERM handler out (ginlab's checkpoints first, then stops);
- telling whether a DDP strategy starts its processes by re-running the script;
- the list of precision values Lightning accepts (checked before anything is written).

The lean path is taken only on the exact Lightning version it was tested against (`TESTED_VERSION`): any
other version trains on Lightning's own path, slower, never wrong, with one warning. The other touchpoints
are needed for correctness; tests/test_layers.py fails as soon as one of `PRIVATE_NAMES` disappears from the
installed Lightning, and when a private name is used outside this module.

How the lean path works. `LeanEpochLoop.advance` does for one batch what Lightning's `advance` does:
- the same progress counters, moved at the same points, so a checkpoint written in any hook holds the same
  loop state and a reload resumes it with Lightning's own code;
- the same hooks in the same order, with the same arguments and `_current_fx_name`;
- the same logger-connector calls, so `self.log` in a callback's batch hook still works.
It leaves out only calls with nothing to do: the batch conversion and transfer (the batch is on the CPU and
no transfer hook is overridden), hooks nobody overrides, the profiler (off), the step-wise LR scheduler
updates (made only under automatic optimization). The Classifier then steps its optimizer itself and counts
the step in Lightning's progress (`count_optimizer_step`). Whenever something could notice the difference,
Lightning's own `advance` runs: under DDP, with a profiler, with a precision that converts inputs or scales
the loss, with a callback that has backward or optimizer-step hooks, for another LightningModule (a subclass
of the Classifier included), for data that is not an in-memory datamodule's, and for the first batch after a
restart (Lightning decides there whether validation is still due). tests/test_epoch_loop.py checks that both
paths give bitwise-equal weights, histories and checkpoints.
"""

from __future__ import annotations

import contextlib
import logging
import typing
import warnings

import lightning_fabric.connector
import pytorch_lightning as pl
from pytorch_lightning.loops.fetchers import _DataLoaderIterDataFetcher
from pytorch_lightning.loops.optimization.manual import ManualResult
from pytorch_lightning.loops.training_epoch_loop import _TrainingEpochLoop
from pytorch_lightning.plugins.precision import MixedPrecision, Precision
from pytorch_lightning.strategies import SingleDeviceStrategy
from pytorch_lightning.strategies.launchers import _SubprocessScriptLauncher
from torch import nn

log = logging.getLogger(__name__)

TESTED_VERSION = "2.6.6"
# Private names this module relies on: (where, name). tests/test_layers.py checks each still exists.
PRIVATE_NAMES = (
    ("pytorch_lightning.loops.training_epoch_loop", "_TrainingEpochLoop"),
    ("pytorch_lightning.loops.fetchers", "_DataLoaderIterDataFetcher"),
    ("pytorch_lightning.loops.optimization.manual", "ManualResult"),
    ("pytorch_lightning.strategies.launchers", "_SubprocessScriptLauncher"),
    ("lightning_fabric.connector", "_PRECISION_INPUT"),
    ("pytorch_lightning.Trainer", "_logger_connector"),
    ("pytorch_lightning.Trainer", "_signal_connector"),
    ("pytorch_lightning.LightningModule", "_current_fx_name"),
    ("pytorch_lightning.loops.fit_loop._FitLoop", "_skip_backward"),
    ("torch.nn.parallel.DistributedDataParallel", "_set_params_and_buffers_to_ignore_for_model"),
)
# Attribute names that only this module may touch (tests/test_layers.py looks for them everywhere else).
PRIVATE_ATTRIBUTES = (
    "_logger_connector", "_signal_connector", "_current_fx_name", "_skip_backward", "optim_step_progress",
    "batch_progress", "_set_params_and_buffers_to_ignore_for_model", "_on_before_batch_transfer",
)  # fmt: skip

# Set by Lightning on the module ~45 times per step (the Classifier skips nn.Module.__setattr__ for it).
SET_PER_STEP = ("_current_fx_name",)
# Called by Lightning's optimizer wrapper and backward: the lean step calls neither, so nobody may listen.
STEP_HOOKS = ("on_before_backward", "on_after_backward", "on_before_optimizer_step")
TRANSFER_HOOKS = ("on_before_batch_transfer", "transfer_batch_to_device", "on_after_batch_transfer")


def precision_values() -> list:
    """Every value Lightning accepts for `precision` (its canonical strings first)."""
    values = []

    def collect(tp):
        for arg in typing.get_args(tp):
            if typing.get_origin(arg) is typing.Literal or typing.get_args(arg):
                collect(arg)
            elif arg not in values:
                values.append(arg)

    collect(lightning_fabric.connector._PRECISION_INPUT)
    return sorted(values, key=lambda v: (not isinstance(v, str) or "-" not in v, str(v)))


def keep_signal_handlers(trainer: pl.Trainer) -> None:
    """Stop Lightning from installing its own SIGTERM handler (it would end the run before a checkpoint, and
    under DDP it runs a collective operation inside the handler, in one process alone)."""
    trainer._signal_connector.register_signal_handlers = lambda: None


def starts_processes_by_script(strategy) -> bool:
    """True for DDP that starts the other processes by re-running the command line (ginlab can run that)."""
    return isinstance(strategy.launcher, _SubprocessScriptLauncher)


def ignore_in_ddp(module: nn.Module, buffers: list[str]) -> None:
    """Buffers DDP must not copy from rank 0 before each forward: each process keeps its own."""
    nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(module, buffers)


def skips_backward(trainer: pl.Trainer) -> bool:
    """True in an epoch that only refreshes batch-norm statistics (SWA's last epoch): no optimizer step."""
    return trainer.fit_loop._skip_backward


def lean(trainer: pl.Trainer) -> bool:
    """True while the epoch runs on the lean path (the module then steps its optimizer itself)."""
    return getattr(trainer.fit_loop.epoch_loop, "lean", False)


@contextlib.contextmanager
def count_optimizer_step(trainer: pl.Trainer):
    """Around an optimizer step made outside Lightning's wrapper: counted where the wrapper counts it."""
    progress = trainer.fit_loop.epoch_loop.manual_optimization.optim_step_progress
    progress.increment_ready()
    yield
    progress.increment_completed()


def steps_counted_by_automatic_optimization(checkpoint: dict) -> None:
    """A checkpoint of a run saved under automatic optimization counts its steps where manual optimization
    does not look: copy them over (runs from before the Classifier stepped its optimizer itself)."""
    loops = checkpoint.get("loops", {}).get("fit_loop", {})
    manual = loops.get("epoch_loop.manual_optimization.optim_step_progress")
    automatic = loops.get("epoch_loop.automatic_optimization.optim_progress")
    steps = automatic["optimizer"]["step"] if automatic else None
    if manual and steps and manual["total"]["completed"] == 0 and steps["total"]["completed"]:
        loops["epoch_loop.manual_optimization.optim_step_progress"] = steps


def install_epoch_loop(trainer: pl.Trainer, obstacles) -> LeanEpochLoop | None:
    """Put a LeanEpochLoop in place of the trainer's epoch loop (as the Trainer builds its own); return it.

    Args:
        obstacles: callable(trainer) -> the reasons, on ginlab's side, the lean path cannot run (empty: it can).
    """
    if pl.__version__ != TESTED_VERSION:
        warnings.warn(
            f"ginlab's shorter per-batch path was tested with pytorch-lightning {TESTED_VERSION}, and "
            f"{pl.__version__} is installed: training takes Lightning's own path (slower, same results).",
            stacklevel=2,
        )
        return None
    current = trainer.fit_loop.epoch_loop
    loop = LeanEpochLoop(trainer, min_steps=current.min_steps, max_steps=current.max_steps)
    loop.obstacles = obstacles
    trainer.fit_loop.epoch_loop = loop
    return loop


def _listens(obj, hook: str, base: type) -> bool:
    """Whether Lightning would call something for `hook` on `obj`: anything callable but `base`'s empty method."""
    fn = getattr(obj, hook, None)
    return callable(fn) and getattr(fn, "__func__", fn) is not getattr(base, hook)


def lightning_obstacles(trainer: pl.Trainer) -> list[str]:
    """What, on Lightning's side, rules the lean path out (the training layer adds its own conditions)."""
    obstacles = []
    if type(trainer.strategy) is not SingleDeviceStrategy:
        obstacles.append(f"strategy {type(trainer.strategy).__name__}")
    plugin = trainer.precision_plugin
    if not (type(plugin) is Precision or (type(plugin) is MixedPrecision and plugin.scaler is None)):
        obstacles.append(f"precision plugin {type(plugin).__name__}")
    for callback in trainer.callbacks:
        for hook in STEP_HOOKS:
            if _listens(callback, hook, pl.Callback):
                obstacles.append(f"{type(callback).__name__}.{hook}")
    return obstacles


def _needs_transfer(trainer: pl.Trainer) -> bool:
    if trainer.strategy.root_device.type != "cpu":
        return True
    module, datamodule = trainer.lightning_module, trainer.datamodule
    return any(_listens(module, hook, pl.LightningModule) for hook in TRANSFER_HOOKS) or any(
        _listens(datamodule, hook, pl.LightningDataModule) for hook in TRANSFER_HOOKS
    )


class LeanEpochLoop(_TrainingEpochLoop):
    lean = False  # decided at the start of each epoch
    obstacles = staticmethod(lambda trainer: ["no conditions given"])
    _reported = None

    def reasons(self) -> list[str]:
        """Why this trainer cannot take the lean path (empty: it can)."""
        return lightning_obstacles(self.trainer) + self.obstacles(self.trainer)

    def on_run_start(self, data_fetcher) -> None:
        super().on_run_start(data_fetcher)
        trainer = self.trainer
        obstacles = self.reasons()
        if isinstance(data_fetcher, _DataLoaderIterDataFetcher):
            obstacles.append("training_step takes dataloader_iter")
        if obstacles != self._reported:
            log.debug(
                "per-batch path: %s", "Lightning's, for " + "; ".join(obstacles) if obstacles else "lean"
            )
            self._reported = obstacles
        self.lean = not obstacles
        if self.lean:
            self._transfer = _needs_transfer(trainer)
            # Lightning calls each callback's hook when it is callable; the base class's are empty.
            self._on_batch_start = [
                cb.on_train_batch_start
                for cb in trainer.callbacks
                if _listens(cb, "on_train_batch_start", pl.Callback)
            ]
            self._on_batch_end = [
                cb.on_train_batch_end
                for cb in trainer.callbacks
                if _listens(cb, "on_train_batch_end", pl.Callback)
            ]

    def advance(self, data_fetcher) -> None:
        if not self.lean or self.restarting:
            # (a restart may resume mid-validation or skip it: Lightning's own code decides)
            return super().advance(data_fetcher)
        self.val_loop.restarting = False
        trainer = self.trainer
        module = trainer.lightning_module

        batch, _, _ = next(data_fetcher)
        batch_idx = self.batch_idx + 1
        self.batch_progress.is_last_batch = data_fetcher.done
        if self._transfer:
            batch = trainer.precision_plugin.convert_input(batch)
            batch = module._on_before_batch_transfer(batch, dataloader_idx=0)
            batch = trainer.strategy.batch_to_device(batch, dataloader_idx=0)
        self.batch_progress.increment_ready()
        trainer._logger_connector.on_batch_start(batch)

        previous_fx = module._current_fx_name
        module._current_fx_name = "on_train_batch_start"
        for hook in self._on_batch_start:
            hook(trainer, module, batch, batch_idx)
        self.batch_progress.increment_started()

        module._current_fx_name = "training_step"
        output = trainer.strategy.training_step(batch, batch_idx)
        batch_output = ManualResult.from_training_step_output(output).asdict()
        del output
        self.batch_progress.increment_processed()

        module._current_fx_name = "on_train_batch_end"
        for hook in self._on_batch_end:
            hook(trainer, module, batch_output, batch, batch_idx)
        module._current_fx_name = previous_fx
        trainer._logger_connector.on_batch_end()
        self.batch_progress.increment_completed()
        trainer._logger_connector.update_train_step_metrics()
        return None
