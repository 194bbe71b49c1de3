"""HistoryWriter: one history.jsonl line per epoch, one steps.jsonl line every N steps.

Rows are appended as whole lines; the checkpoint records how many rows existed when it was taken, and a
reload cuts the files back to that many, so after any sequence of kills there is exactly one row per epoch.
A row's `lr` is the learning rate its epoch (or step) trained with: the epoch's is taken when the epoch
starts, before the schedule steps at its end.
Under DDP every process runs it (the step loss is averaged over them) and the run folder writes only in
rank 0. Other callbacks add columns to each row through `column_sources` (Telemetry's sys_* columns).
"""

from __future__ import annotations

import time

import gin
import pytorch_lightning as pl

from ginlab.config import check_int
from ginlab.training import distributed
from ginlab.training.callbacks.hooks import skip_unused_batch_hooks


@gin.configurable("history", allowlist=["every_n_steps"])
@skip_unused_batch_hooks
class HistoryWriter(pl.callbacks.Checkpoint):
    """Args:
    run: the RunFolder.
    every_n_steps: a steps.jsonl row (and TensorBoard's train_loss_step) every this many optimizer steps.
    """

    # A Checkpoint subclass only so that Lightning calls its on_train_epoch_end in the "monitoring" pass,
    # after the LightningModule's own on_train_epoch_end has logged the epoch's training metrics.
    def __init__(self, run, every_n_steps: int = 50):
        check_int("history.every_n_steps", every_n_steps, minimum=1, example=50)
        self.run, self.every_n_steps = run, every_n_steps
        self.elapsed_before = 0.0  # training seconds of earlier sessions of this run (from the checkpoint)
        self.history_rows = 0
        self.step_rows = 0
        self._start = time.monotonic()
        self._epoch_lr = None
        self.column_sources = []  # functions trainer -> {column: value} adding to each row (Telemetry)

    def elapsed(self) -> float:
        return self.elapsed_before + time.monotonic() - self._start

    def resume(self, elapsed: float, history_rows: int, step_rows: int) -> None:
        self.elapsed_before, self.history_rows, self.step_rows = elapsed, history_rows, step_rows
        self._start = time.monotonic()

    @staticmethod
    def _lr(trainer) -> float | None:
        return trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else None

    def on_train_start(self, trainer, pl_module):
        # Lightning does not call on_train_epoch_start for an epoch it resumes in the middle: the rate in
        # force when training (re)starts is that epoch's (schedules step at epoch ends; a reload's change
        # applies now).
        self._epoch_lr = self._lr(trainer)

    def on_train_epoch_start(self, trainer, pl_module):
        self._epoch_lr = self._lr(trainer)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step
        if step % self.every_n_steps == 0:
            loss = outputs["loss"].item() if isinstance(outputs, dict) else float(outputs)
            if trainer.world_size > 1:  # DDP: the loss of the step's whole batch, over every process's share
                loss = distributed.mean_over_processes(loss)
            row = {
                "step": step,
                "epoch": trainer.current_epoch,
                "time": round(self.elapsed(), 3),
                "train_loss": loss,
                "lr": self._lr(trainer),
            }
            self.run.append_step(row)
            self.step_rows += 1
            for logger in trainer.loggers:
                logger.log_metrics({"train_loss_step": loss}, step=step)

    def on_train_epoch_end(self, trainer, pl_module):
        metrics = {
            k: float(v)
            for k, v in trainer.callback_metrics.items()
            if k.startswith(("train_", "val_")) and v.numel() == 1
        }
        row = {
            "epoch": trainer.current_epoch,
            "step": trainer.global_step,
            "time": round(self.elapsed(), 3),
            **dict(sorted(metrics.items())),
            "lr": self._epoch_lr if self._epoch_lr is not None else self._lr(trainer),
        }
        for source in self.column_sources:
            row.update(source(trainer))
        self.run.append_history(row)
        self.history_rows += 1
