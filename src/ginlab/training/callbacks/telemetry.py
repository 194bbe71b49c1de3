"""Telemetry: what each epoch cost in resources, as `sys_*` columns of its history.jsonl row.

Each row covers the time since the previous row (the first: since training started), so the end-of-epoch
checkpoint written after a row counts in the next one:

    sys_peak_rss_mb            peak resident memory of the run's processes so far (MiB; ginlab.health.usage)
    sys_cpu_percent            CPU time of those processes over the wall time (100 = one core busy)
    sys_data_wait              time waiting for batches / time of the training steps (0 .. 1)
    sys_checkpoint_seconds     seconds spent writing checkpoints
    sys_examples_per_second    training examples per second of training steps (all processes)
    sys_gpu_peak_allocated_mb, sys_gpu_peak_reserved_mb   torch's peak GPU memory of this process (MiB)
    sys_gpu_util_percent       mean GPU utilisation (NVML)

A source that is missing leaves its column out (no GPU, no NVML, no way to list the processes), never 0. The
step times come from ProgressPrinter, which measures them anyway, and the checkpoint time from the
Checkpointer: this callback adds no work to a training step. A background thread samples the process tree's
memory (and the GPU) every `telemetry.every_seconds`.
"""

from __future__ import annotations

import logging
import time

import gin
import pytorch_lightning as pl

from ginlab.config import check_bool, check_number
from ginlab.health.gpu import GpuMonitor
from ginlab.health.usage import ProcessTree, Sampler
from ginlab.health.watchdog import watchdog_pids
from ginlab.runfolder.format import TELEMETRY_PREFIX as P
from ginlab.training.callbacks.hooks import skip_unused_batch_hooks

log = logging.getLogger(__name__)
MIB = 2**20


@gin.configurable("telemetry", allowlist=["enabled", "every_seconds"])
@skip_unused_batch_hooks
class Telemetry(pl.Callback):
    """Args:
    progress: the ProgressPrinter (step, data and example counts). checkpointer: the Checkpointer.
    enabled: record the sys_* columns (telemetry.enabled, default True).
    every_seconds: how often the memory of the process tree and the GPU are sampled (telemetry.every_seconds).
    """

    def __init__(self, progress, checkpointer, enabled: bool = True, every_seconds: float = 1.0):
        check_bool("telemetry.enabled", enabled)
        check_number("telemetry.every_seconds", every_seconds, 0, exclusive=True, example=1.0)
        self.progress, self.checkpointer = progress, checkpointer
        self.enabled, self.every_seconds = enabled, every_seconds
        self.active = False
        self.tree = self.gpu = self.sampler = None
        self._device = None

    def on_train_start(self, trainer, pl_module):
        # Only the process that writes the history measures (under DDP the others are in its tree).
        if not self.enabled or trainer.global_rank != 0:
            return
        self.tree = ProcessTree(exclude=watchdog_pids)
        self.gpu, self._device = self._open_gpu(trainer)
        sources = [self.tree.sample] + ([self.gpu.sample] if self.gpu else [])
        self.sampler = Sampler(self.every_seconds, sources).start()
        self.active = True
        self._mark()

    def on_train_end(self, trainer, pl_module):
        self.close()

    def teardown(self, trainer, pl_module, stage):
        self.close()  # also when training failed

    def close(self) -> None:
        if self.sampler is not None:
            self.sampler.stop()
            self.sampler = None
        if self.gpu is not None:
            self.gpu.close()
            self.gpu = None
        self.active = False

    def _mark(self) -> None:
        """Remember the counters now: the next row covers what happens from here."""
        self._time = time.monotonic()
        self._cpu = self.tree.cpu_seconds()
        self._steps = self.progress.totals()
        self._checkpoint = self.checkpointer.save_seconds

    def columns(self, trainer) -> dict:
        """The sys_* values since the previous row (called by the HistoryWriter for each row)."""
        if not self.active:
            return {}
        self.sampler.sample_now()  # a worker that lives only within the epoch may not have been sampled yet
        now, cpu = time.monotonic(), self.tree.cpu_seconds()
        data, update, _, examples = (b - a for a, b in zip(self._steps, self.progress.totals(), strict=True))
        row = {f"{P}peak_rss_mb": round(self.tree.peak_rss_bytes() / MIB, 1)}
        if cpu is not None and self._cpu is not None and now > self._time:
            row[f"{P}cpu_percent"] = round(100 * (cpu - self._cpu) / (now - self._time), 1)
        if data + update > 0:
            row[f"{P}data_wait"] = round(data / (data + update), 4)
            if examples:
                row[f"{P}examples_per_second"] = round(examples * trainer.world_size / (data + update), 1)
        row[f"{P}checkpoint_seconds"] = round(self.checkpointer.save_seconds - self._checkpoint, 3)
        row.update(self._gpu_columns())
        self._mark()
        return row

    # -- GPU -----------------------------------------------------------------------------------------------
    @staticmethod
    def _open_gpu(trainer):
        device = trainer.strategy.root_device
        if device.type != "cuda":
            return None, None
        import torch

        index = device.index if device.index is not None else torch.cuda.current_device()
        try:
            uuid = str(torch.cuda.get_device_properties(index).uuid)
        except Exception:  # an older driver or build without UUIDs
            uuid = None
        torch.cuda.reset_peak_memory_stats(index)
        return GpuMonitor.open(uuid, index), index

    def _gpu_columns(self) -> dict:
        if self._device is None:
            return {}
        import torch

        row = {
            f"{P}gpu_peak_allocated_mb": round(torch.cuda.max_memory_allocated(self._device) / MIB, 1),
            f"{P}gpu_peak_reserved_mb": round(torch.cuda.max_memory_reserved(self._device) / MIB, 1),
        }
        torch.cuda.reset_peak_memory_stats(self._device)  # each row: the peak of its own epoch
        utilisation = self.gpu.take_mean() if self.gpu is not None else None
        if utilisation is not None:
            row[f"{P}gpu_util_percent"] = round(utilisation, 1)
        return row
