"""Heartbeat: refreshes meta.json's heartbeat so readers can tell a live run from a dead one.

It beats from the training loop itself (never from a thread of its own): a run whose loop stops, on a hung
data loader or a deadlock, stops beating, which is how readers and the watchdog (ginlab.health.watchdog) tell.
"""

import time

import gin
import pytorch_lightning as pl

from ginlab.config import check_number
from ginlab.training.callbacks.hooks import skip_unused_batch_hooks


@gin.configurable("heartbeat", allowlist=["every_seconds"])
@skip_unused_batch_hooks
class Heartbeat(pl.Callback):
    """Args: run: the RunFolder; every_seconds: at most this often (heartbeat.every_seconds, default 30)."""

    def __init__(self, run, every_seconds: float = 30.0):
        check_number("heartbeat.every_seconds", every_seconds, 0, exclusive=True, example=30)
        self.run, self.every_seconds = run, every_seconds
        self._last = time.monotonic()

    def beat(self) -> None:
        self._last = time.monotonic()
        self.run.heartbeat()

    def on_train_start(self, trainer, pl_module):
        # Setting up fit (data, sanity validation) took a while since the folder was opened: say so.
        self.beat()

    def on_train_epoch_start(self, trainer, pl_module):
        if time.monotonic() - self._last >= self.every_seconds:
            self.beat()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if time.monotonic() - self._last >= self.every_seconds:
            self.beat()

    def on_validation_end(self, trainer, pl_module):
        if time.monotonic() - self._last >= self.every_seconds:
            self.beat()
