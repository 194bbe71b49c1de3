"""LeanEpochLoop: Lightning's training epoch loop, with a shorter path through each batch for
ginlab's Classifier.

Lightning's path through one training batch is general. It converts and moves every batch, calls every hook of
every callback and of the module through the profiler, inspects training_step's signature, and wraps each
optimizer step in a closure that calls three more rounds of hooks. For ginlab's Classifier in one process,
most of that has nothing to do: the batch is already on the CPU, ginlab's callbacks use two hooks of the
twenty, and nothing listens to the backward and optimizer-step hooks. The empty calls cost about 90 us per
step, 5 % of the digits CNN's step (benchmarks/train_overhead.py).

`LeanEpochLoop.advance` does for one batch what Lightning's `advance` does:
- the same progress counters, moved at the same points, so a checkpoint written in any hook holds the same
  loop state and a reload resumes it with Lightning's own code;
- the same hooks in the same order, with the same arguments and `_current_fx_name`;
- the same logger-connector calls, so `self.log` in a callback's batch hook still works.

It leaves out only calls with nothing to do in that case:
- the batch conversion and transfer, when the batch is on the CPU and no batch-transfer hook is overridden;
- hooks that nobody overrides;
- the profiler, which is off;
- the step-wise LR scheduler updates, which Lightning makes only under automatic optimization.

The Classifier then steps its optimizer itself, counting the step in Lightning's progress (see
`Classifier.training_step`, which reads `lean`). Whenever the case is not that one, the loop runs Lightning's
own `advance`, and the Classifier goes through Lightning's optimizer and backward wrappers. That happens under
DDP, with a profiler on, with a precision that converts inputs or scales the loss, with a callback that has
backward or optimizer-step hooks, for another LightningModule (a subclass of the Classifier included) and for
data that is not an InMemoryDataModule's. The first batch after a restart also goes through Lightning's
`advance`, which decides whether validation is still due. tests/test_epoch_loop.py checks that both paths give
bitwise-equal weights, histories and checkpoints.
"""

import logging

import pytorch_lightning as pl
from pytorch_lightning.loops.fetchers import _DataLoaderIterDataFetcher
from pytorch_lightning.loops.optimization.manual import ManualResult
from pytorch_lightning.loops.training_epoch_loop import _TrainingEpochLoop
from pytorch_lightning.plugins.precision import MixedPrecision, Precision
from pytorch_lightning.strategies import SingleDeviceStrategy

log = logging.getLogger(__name__)

# Called by Lightning's optimizer wrapper and backward: the lean step calls neither, so nobody may listen.
STEP_HOOKS = ("on_before_backward", "on_after_backward", "on_before_optimizer_step")
TRANSFER_HOOKS = ("on_before_batch_transfer", "transfer_batch_to_device", "on_after_batch_transfer")


def _listens(obj, hook: str, base: type) -> bool:
    """Whether Lightning would call something for `hook` on `obj`:
    anything callable but `base`'s empty method."""
    fn = getattr(obj, hook, None)
    return callable(fn) and getattr(fn, "__func__", fn) is not getattr(base, hook)


def lean_obstacles(trainer: "pl.Trainer") -> list[str]:
    """Why the lean path cannot run for this trainer (empty: it can)."""
    from ginlab.data import InMemoryDataModule
    from ginlab.profiling import NoProfiler
    from ginlab.task import Classifier

    module, obstacles = trainer.lightning_module, []
    # Exactly the Classifier: a subclass may step, take its arguments or run backward its own way.
    if type(module) is not Classifier:
        obstacles.append(f"the model {type(module).__name__} is not ginlab's Classifier")
    # ginlab's in-memory batches: (x, y) tensors on the CPU, never None.
    if not isinstance(trainer.datamodule, InMemoryDataModule):
        obstacles.append(f"the datamodule {type(trainer.datamodule).__name__} is not an InMemoryDataModule")
    if type(trainer.strategy) is not SingleDeviceStrategy:
        obstacles.append(f"strategy {type(trainer.strategy).__name__}")
    if type(trainer.profiler) is not NoProfiler:
        obstacles.append(f"profiler {type(trainer.profiler).__name__}")
    plugin = trainer.precision_plugin
    if not (type(plugin) is Precision or (type(plugin) is MixedPrecision and plugin.scaler is None)):
        obstacles.append(f"precision plugin {type(plugin).__name__}")
    for callback in trainer.callbacks:
        for hook in STEP_HOOKS:
            if _listens(callback, hook, pl.Callback):
                obstacles.append(f"{type(callback).__name__}.{hook}")
    return obstacles


def _needs_transfer(trainer: "pl.Trainer") -> bool:
    if trainer.strategy.root_device.type != "cpu":
        return True
    module, datamodule = trainer.lightning_module, trainer.datamodule
    return any(_listens(module, hook, pl.LightningModule) for hook in TRANSFER_HOOKS) or any(
        _listens(datamodule, hook, pl.LightningDataModule) for hook in TRANSFER_HOOKS
    )


class LeanEpochLoop(_TrainingEpochLoop):
    lean = False  # decided at the start of each epoch
    _reported = None

    def on_run_start(self, data_fetcher) -> None:
        super().on_run_start(data_fetcher)
        trainer = self.trainer
        obstacles = lean_obstacles(trainer)
        if isinstance(data_fetcher, _DataLoaderIterDataFetcher):
            obstacles.append("training_step takes dataloader_iter")
        if obstacles != self._reported:
            log.debug(
                "per-batch path: %s", "Lightning's, for " + "; ".join(obstacles) if obstacles else "lean"
            )
            self._reported = obstacles
        self.lean = not obstacles  # Classifier.training_step reads it too
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
            super().advance(data_fetcher)
            return
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


def install(trainer: "pl.Trainer") -> LeanEpochLoop:
    """Put a LeanEpochLoop in place of the trainer's epoch loop (as the Trainer itself builds its own)."""
    current = trainer.fit_loop.epoch_loop
    trainer.fit_loop.epoch_loop = LeanEpochLoop(
        trainer, min_steps=current.min_steps, max_steps=current.max_steps
    )
    return trainer.fit_loop.epoch_loop
