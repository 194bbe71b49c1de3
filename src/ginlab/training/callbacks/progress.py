"""ProgressPrinter: what a researcher needs on the terminal to steer a run.

At start: parameter count and run folder. Every N steps: step/total, examples/s, loss, elapsed, time left,
data fetch time and model update time (both per step, averaged since the last line).

The step counters only grow (`totals()`): a progress line shows what changed since the previous line, and the
Telemetry callback takes the same counters for each history row, so nothing is measured twice.
"""

import logging
import time

import gin
import pytorch_lightning as pl

from ginlab.config import check_int
from ginlab.training.callbacks.hooks import skip_unused_batch_hooks

log = logging.getLogger("ginlab.progress")


def duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


@gin.configurable("progress", allowlist=["every_n_steps"])
@skip_unused_batch_hooks
class ProgressPrinter(pl.Callback):
    """Args:
    run_path: the run folder (printed at the start).
    model_name: what the start line calls the model (the registered class, not ginlab's wrapper around it).
    every_n_steps: a progress line every this many steps (progress.every_n_steps; None: history's cadence).
    default_every: that cadence.
    """

    def __init__(self, run_path, model_name: str, every_n_steps: int | None = None, default_every: int = 50):
        check_int("progress.every_n_steps", every_n_steps, minimum=1, optional=True, example=50)
        self.run_path, self.model_name = run_path, model_name
        self.every_n_steps = every_n_steps or default_every
        self._data_time = self._update_time = 0.0  # totals since this process started training
        self._steps = self._examples = 0
        self._reset_window()
        self._t_end = None

    def totals(self) -> tuple[float, float, int, int]:
        """(seconds waiting for batches, seconds of the steps' own work, steps, examples) so far."""
        return self._data_time, self._update_time, self._steps, self._examples

    def _reset_window(self):
        self._window = self.totals()
        self._loss_sum = None
        self._window_start = time.monotonic()

    def on_train_start(self, trainer, pl_module):
        params = sum(p.numel() for p in pl_module.parameters())
        trainable = sum(p.numel() for p in pl_module.parameters() if p.requires_grad)
        log.info(
            "model: %s, %s parameters (%s trainable)",
            self.model_name,
            f"{params:,}",
            f"{trainable:,}",
        )
        log.info("run folder: %s", self.run_path)
        log.info(
            "training: %d steps over %d epochs, from step %d",
            trainer.estimated_stepping_batches,
            trainer.max_epochs,
            trainer.global_step,
        )
        self._started = time.monotonic()
        self._first_step = trainer.global_step
        self._reset_window()
        self._t_end = None

    def on_train_epoch_start(self, trainer, pl_module):
        # Waiting for the epoch's first batch (the loader's iterator, its workers starting) is data time;
        # the validation and checkpoint since the last step are not.
        self._t_end = time.monotonic()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._t_start = time.monotonic()
        if self._t_end is not None:
            self._data_time += self._t_start - self._t_end

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._t_end = time.monotonic()
        self._update_time += self._t_end - self._t_start
        self._steps += 1
        # (try/except rather than contextlib.suppress: this runs on every batch)
        try:  # noqa: SIM105
            self._examples += len(batch[0])
        except TypeError:
            pass
        loss = outputs["loss"].detach() if isinstance(outputs, dict) else None
        if loss is not None:
            if self._loss_sum is None:
                self._loss_sum = loss.clone()
            else:
                self._loss_sum.add_(loss)  # in place: no new tensor per step
        step = trainer.global_step
        if self.every_n_steps and step % self.every_n_steps == 0:
            self._print(trainer, step)

    def _print(self, trainer, step):
        now = time.monotonic()
        window = max(now - self._window_start, 1e-9)
        total = trainer.estimated_stepping_batches
        done_here = max(step - self._first_step, 1)
        left = (now - self._started) / done_here * (total - step)
        data, update, steps, examples = (b - a for a, b in zip(self._window, self.totals(), strict=True))
        steps = max(steps, 1)
        loss = (self._loss_sum / steps).item() if self._loss_sum is not None else float("nan")
        log.info(
            "step %d/%d | %.0f ex/s | loss %.4f | elapsed %s | left %s | data %.2f ms | update %.2f ms",
            step,
            total,
            examples / window,
            loss,
            duration(now - self._started),
            duration(left),
            1000 * data / steps,
            1000 * update / steps,
        )
        self._reset_window()
