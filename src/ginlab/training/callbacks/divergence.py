"""Divergence: a training loss that is NaN or infinite stops the run (status "diverged", exit code 4).

A diverged run computes nothing useful from that step on, and without this check it would train to the end,
read as finished and perhaps pick its best checkpoint on a NaN. The checkpoints written before stay: the
Checkpointer never writes non-finite weights, so the newest checkpoint is the last finite state.
`-b divergence.stop=False` keeps training through it (the step is still reported once).
"""

from __future__ import annotations

import logging
import math

import gin
import pytorch_lightning as pl

from ginlab.config import check_bool
from ginlab.training.callbacks.hooks import skip_unused_batch_hooks
from ginlab.training.outcome import Diverged

log = logging.getLogger("ginlab.progress")


@gin.configurable("divergence", allowlist=["stop"])
@skip_unused_batch_hooks
class DivergenceCheck(pl.Callback):
    """Args: stop: whether a non-finite training loss stops the run (divergence.stop, default True)."""

    def __init__(self, stop: bool = True):
        check_bool("divergence.stop", stop)
        self.stop, self.reported = stop, False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is None:
            return
        value = loss.item() if hasattr(loss, "item") else float(loss)
        if math.isfinite(value):
            return
        if self.stop:
            raise Diverged(trainer.global_step, trainer.current_epoch, f"the training loss is {value}")
        if not self.reported:
            self.reported = True
            log.info(
                "WARNING: the training loss is %s at step %d; training goes on (divergence.stop=False)",
                value,
                trainer.global_step,
            )
