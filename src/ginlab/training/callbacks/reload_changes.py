"""ReloadChanges: a reload's accepted hyperparameter changes, applied once the checkpoint is restored.

Lightning restores the optimizer's and the schedule's state from the checkpoint, hyperparameters included,
so a changed learning rate would be recorded in config.json and never used. This callback sets the new
values right after the restore (fit's on_train_start), so the run computes with what its record says from
the reload's step on (ginlab.config.reload says which changes a reload may apply; meta.json lists them).
"""

from __future__ import annotations

import logging

import pytorch_lightning as pl

log = logging.getLogger("ginlab.progress")


class ReloadChanges(pl.Callback):
    """Args: optimizer_values: {param: new value} for the run's optimizer (e.g. {"lr": 0.001});
    scheduler_values: {attribute: new value} for its LR schedule; patience: new early-stopping patience."""

    def __init__(self, optimizer_values: dict, scheduler_values: dict, patience: int | None = None):
        self.optimizer_values, self.scheduler_values, self.patience = (
            optimizer_values,
            scheduler_values,
            patience,
        )

    def on_train_start(self, trainer, pl_module):
        for optimizer in trainer.optimizers:
            for group in optimizer.param_groups:
                for name, value in self.optimizer_values.items():
                    if name == "lr" and "initial_lr" in group and group["initial_lr"]:
                        # Under a schedule the rate is the schedule's position times the base rate: the schedule
                        # continues from its position on the new base rate.
                        group["lr"] = group["lr"] * value / group["initial_lr"]
                        group["initial_lr"] = value
                    else:
                        group[name] = value
        for config in trainer.lr_scheduler_configs:
            scheduler = config.scheduler
            if "lr" in self.optimizer_values and hasattr(scheduler, "base_lrs"):
                scheduler.base_lrs = [self.optimizer_values["lr"]] * len(scheduler.base_lrs)
            for name, value in self.scheduler_values.items():
                setattr(scheduler, name, value)
        if self.patience is not None:
            for callback in trainer.callbacks:
                if isinstance(callback, pl.callbacks.EarlyStopping):
                    callback.patience = self.patience
        changed = {**self.optimizer_values, **self.scheduler_values}
        if changed:
            log.info(
                "applied from step %d on: %s",
                trainer.global_step,
                ", ".join(f"{k}={v!r}" for k, v in changed.items()),
            )
