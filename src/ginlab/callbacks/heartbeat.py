"""Heartbeat: refreshes meta.json's heartbeat so readers can tell a live run from a dead one."""

import time

import pytorch_lightning as pl

from ginlab.callbacks.hooks import skip_unused_batch_hooks
from ginlab.run_folder import RunFolder, now


@skip_unused_batch_hooks
class Heartbeat(pl.Callback):
    def __init__(self, run: RunFolder, every_seconds: float = 30.0):
        self.run, self.every_seconds = run, every_seconds
        self._last = time.monotonic()

    def beat(self) -> None:
        self._last = time.monotonic()
        self.run.update_meta(heartbeat=now())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if time.monotonic() - self._last >= self.every_seconds:
            self.beat()

    def on_validation_end(self, trainer, pl_module):
        if time.monotonic() - self._last >= self.every_seconds:
            self.beat()
