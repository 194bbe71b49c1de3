"""Classifier: the LightningModule that trains any registered `nn.Module` mapping images to class scores.

Metrics are accumulated in tensors during the epoch and logged once at its end (train_loss, val_loss,
val_acc, test_loss, test_acc): per-step `self.log` calls would cost more than a small model's step.
The accumulators are part of the checkpoint, so an epoch resumed mid-way reports the same mean.
Under DDP each process sums over its own share of the batches, and the sums are added up across processes
before the means are taken: the metrics are those of the whole epoch and the whole evaluation split.

The optimizer step is written out here (Lightning's "manual optimization": zero_grad, backward, clip, step),
because Lightning's automatic optimization wraps the same four calls in closures and hook dispatch that cost
about 65 us per step, 2% of the digits CNN's step (benchmarks/train_overhead.py). What automatic optimization
would do besides, this module does itself: gradient clipping by norm, and stepping the LR schedulers once per
epoch (after validation, so ReduceLROnPlateau sees the epoch's val metric). Where LeanEpochLoop runs the lean
path (lightning_internals.py), the four calls go to the torch optimizer and the loss directly, not through Lightning's
wrappers, whose hooks nobody listens to then.

`eval_sums` and `eval_metrics` are the one definition of the evaluation metrics: bin/evaluate.py uses them too,
so its numbers equal the training run's.
"""

import inspect

import pytorch_lightning as pl
import torch
from torch import nn
from torch.nn import functional as F

from ginlab.training import distributed, lightning_internals

# Attributes set on every training step: Lightning sets _current_fx_name before and after each of the ~20
# hooks it calls per step (about 45 times), and training_step counts examples. nn.Module.__setattr__ first
# checks whether the value is a parameter, buffer or submodule; for these plain values that check is pure
# overhead, about 1.5 us a time, 2-3% of a small model's step.
_PLAIN_PER_STEP = frozenset({*lightning_internals.SET_PER_STEP, "_train_count"})
PLATEAU_MONITOR = "val_loss"  # what a ReduceLROnPlateau schedule is stepped with


def eval_sums(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(summed cross-entropy, correct predictions, examples) of a batch, in float64: added up over batches."""
    return torch.stack(
        [
            F.cross_entropy(logits, y, reduction="sum").double(),
            (logits.argmax(1) == y).sum().double(),
            torch.tensor(len(y), dtype=torch.float64),
        ]
    )


def eval_metrics(sums: torch.Tensor | None, stage: str) -> dict[str, float]:
    """{"<stage>_loss", "<stage>_acc"} from the sums of a whole split ({} when it had no example)."""
    if sums is None or not sums[2]:
        return {}
    loss_sum, correct, count = sums.tolist()
    return {f"{stage}_loss": loss_sum / count, f"{stage}_acc": correct / count}


class Classifier(pl.LightningModule):
    METRICS = ("val_acc", "val_loss", "train_loss")  # what it logs each epoch (and test_* on the test split)

    def __init__(
        self,
        net: nn.Module,
        optimizer: torch.optim.Optimizer,
        lr_scheduler=None,
        gradient_clip_val: float | None = None,
    ):
        super().__init__()
        self.net = net
        self._optimizer, self._lr_scheduler = optimizer, lr_scheduler
        self.gradient_clip_val = gradient_clip_val
        self.automatic_optimization = False
        # Sum of loss * batch size over the epoch (one in-place op per step, no sync) and the example count.
        self.register_buffer("_train_loss_sum", torch.zeros((), dtype=torch.float64), persistent=False)
        # DDP copies rank 0's buffers to the other processes before each forward; this one is each
        # process's own.
        lightning_internals.ignore_in_ddp(self, ["_train_loss_sum"])
        self._train_count = 0
        self._eval_sums = {}

    def __setattr__(self, name, value):
        if name in _PLAIN_PER_STEP:
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def forward(self, x):
        return self.net(x)

    def configure_optimizers(self):
        if self._lr_scheduler is None:
            return self._optimizer
        return {
            "optimizer": self._optimizer,
            "lr_scheduler": {"scheduler": self._lr_scheduler, "interval": "epoch"},
        }

    # -- training ------------------------------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self.net(x), y)
        self._train_loss_sum.add_(loss.detach(), alpha=len(y))
        self._train_count += len(y)
        trainer = self.trainer
        if lightning_internals.skips_backward(trainer):  # SWA's extra epoch that only refreshes batch norm
            return loss
        if lightning_internals.lean(trainer):
            # The same four calls on the torch optimizer itself, counted where Lightning's wrapper counts them
            # (global_step). The lean path runs only when nothing listens to the hooks the wrapper would call
            # and the precision plugin does not scale the loss: see lightning_internals.py.
            optimizer = trainer.optimizers[0]
            optimizer.zero_grad()
            loss.backward()
            self._clip(optimizer)
            with lightning_internals.count_optimizer_step(trainer):
                optimizer.step()
        else:
            optimizer = self.optimizers()
            optimizer.zero_grad()
            self.manual_backward(loss)
            self._clip(optimizer)
            optimizer.step()
        return loss

    def _clip(self, optimizer):
        if self.gradient_clip_val is not None:
            self.clip_gradients(
                optimizer, gradient_clip_val=self.gradient_clip_val, gradient_clip_algorithm="norm"
            )

    # Lightning inspects training_step's signature on every step (to decide whether to pass batch_idx);
    # inspect honours a stored __signature__, which turns that 20 us into 4 us.
    training_step.__signature__ = inspect.signature(training_step)

    def _log_global(self, name: str, value: float) -> None:
        # `value` is already the same in every process (from sums added up across them). sync_dist=True says
        # so to Lightning, which warns otherwise; "max" of equal values keeps it bit for bit (a
        # mean may round).
        self.log(name, value, sync_dist=True, reduce_fx="max")

    def on_train_epoch_end(self):
        loss_sum, count = self._train_loss_sum.item(), self._train_count
        if distributed.world_size() > 1:
            loss_sum, count = distributed.all_reduce_sum(
                torch.tensor([loss_sum, count], dtype=torch.float64)
            ).tolist()
        if count:
            self._log_global("train_loss", loss_sum / count)
        self._train_loss_sum.zero_()
        self._train_count = 0
        # Validation has run: step the epoch-wise schedulers now (trainer.lr_scheduler_configs, not only ours,
        # so that a callback replacing the schedule, like SWA's SWALR, is stepped too).
        for config in self.trainer.lr_scheduler_configs:
            if config.interval != "epoch" or (self.current_epoch + 1) % config.frequency:
                continue
            if isinstance(config.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                value = self.trainer.callback_metrics.get(PLATEAU_MONITOR)
                if value is None:
                    raise RuntimeError(
                        f"ReduceLROnPlateau follows {PLATEAU_MONITOR}, which was not logged this "
                        f"epoch (logged: {sorted(self.trainer.callback_metrics)}): the datamodule "
                        f"needs a validation split."
                    )
                config.scheduler.step(float(value))
            else:
                config.scheduler.step()

    # -- evaluation ----------------------------------------------------------------------------------------
    def _eval_step(self, batch, stage):
        x, y = batch
        self._eval_sums[stage] = self._eval_sums.get(stage, 0) + eval_sums(self.net(x), y)

    def _eval_epoch_end(self, stage):
        sums = self._eval_sums.pop(stage, None)
        if distributed.world_size() > 1:  # every process calls this once per evaluation, with or without sums
            sums = distributed.all_reduce_sum(
                sums if sums is not None else torch.zeros(3, dtype=torch.float64)
            )
        for name, value in eval_metrics(sums, stage).items():
            self._log_global(name, value)

    def on_validation_epoch_start(self):
        # Lightning's manual optimization switches off DDP's broadcast of buffers (it marks each training
        # forward as needing no gradient sync), so each process's batch-norm statistics follow its own
        # batches. Every share is evaluated with rank 0's, the ones its checkpoint holds. (In training mode
        # batch norm uses the batch's statistics, so training itself is the same either way.)
        distributed.broadcast_from_rank_0(self.net.buffers())

    def validation_step(self, batch, batch_idx):
        self._eval_step(batch, "val")

    def on_validation_epoch_end(self):
        self._eval_epoch_end("val")

    def test_step(self, batch, batch_idx):
        self._eval_step(batch, "test")

    def on_test_epoch_end(self):
        self._eval_epoch_end("test")

    def predict_step(self, batch, batch_idx):
        x, y = batch
        return {"target": y, "scores": torch.softmax(self.net(x), dim=1)}

    # -- exact resume --------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint):
        state = {"sum": self._train_loss_sum.clone().cpu(), "count": self._train_count}
        if distributed.world_size() > 1:  # each process continues its own sums: all of them
            state["per_rank"] = distributed.all_gather_object(dict(state))
        checkpoint["ginlab_train_loss"] = state

    def on_load_checkpoint(self, checkpoint):
        # Runs saved while Classifier used automatic optimization count their steps in that loop's progress;
        # Lightning reads the step count of manual optimization from its own (then zero) progress.
        lightning_internals.steps_counted_by_automatic_optimization(checkpoint)
        if "ginlab_train_loss" in checkpoint:
            state = checkpoint["ginlab_train_loss"]
            per_rank = state.get("per_rank")
            if per_rank and len(per_rank) == distributed.world_size():
                state = per_rank[self.global_rank]
            # (another number of processes is refused by the Checkpointer callback, with the reason)
            self._train_loss_sum.copy_(state["sum"])
            self._train_count = state["count"]
