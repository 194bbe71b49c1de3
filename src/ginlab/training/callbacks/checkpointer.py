"""Checkpointer: rolling, atomic checkpoints that let a run continue exactly where it stopped.

When: every `checkpointer.every_n_steps` optimizer steps and/or every `checkpointer.every_n_seconds`
(mid-epoch), at every epoch end, and when a stop signal (SIGTERM, SIGUSR1, Ctrl-C) arrived, after the current
step (at an epoch's last step: after its validation and epoch-end checkpoint). Which: the newest
`checkpointer.keep` rolling checkpoints, and best.ckpt, the epoch with the best finite value of the monitored
metric (a NaN never wins). Files: ginlab.training.checkpoints.

Besides Lightning's state, the checkpoint's "ginlab" entry holds what Lightning does not save:
- the random state of python, numpy and torch, restored just before the next training step consumes it
  (restoring it at load time is too early: Lightning and the data loader run code in between);
- the training loader's position (epoch, batches consumed), because Lightning prefetches a batch ahead;
- how many history/steps rows existed, so a reload cuts the history back to exactly that;
- the best score so far and the training time of earlier sessions.

Under DDP every process runs this callback and takes every decision to save together with the others (saving
is a collective operation); rank 0 writes the files; each process gets its own random state back on reload.
"""

from __future__ import annotations

import logging
import math
import signal
import time
from pathlib import Path

import gin
import pytorch_lightning as pl
import torch
from pytorch_lightning.trainer.states import TrainerFn

from ginlab.config import check_int, check_number
from ginlab.errors import ConfigError
from ginlab.training import distributed
from ginlab.training.callbacks.hooks import skip_unused_batch_hooks
from ginlab.training.checkpoints import link_atomically, step_checkpoints
from ginlab.training.outcome import Diverged, Interrupted, ignore_stop_signals
from ginlab.training.random_state import get_rng_state, set_rng_state

log = logging.getLogger("ginlab.progress")


@gin.configurable("checkpointer", allowlist=["every_n_steps", "every_n_seconds", "keep"])
@skip_unused_batch_hooks
class Checkpointer(pl.callbacks.Checkpoint):
    """Args:
    run: the RunFolder (checkpoints go to run.checkpoints; meta.json names the newest).
    history: the HistoryWriter, whose row counts and elapsed time go into each checkpoint.
    monitor, mode: the metric that decides best.ckpt ("val_acc", "max").
    check_finite: refuse to write a checkpoint whose weights are NaN or infinite (the run diverged).
    every_n_steps, every_n_seconds: mid-epoch checkpoint frequency (None: off). From gin: checkpointer.*.
    keep: how many rolling checkpoints to keep (at least 2: a reload falls back on the older one when the
        newest cannot be read).
    """

    def __init__(
        self,
        run,
        history,
        monitor: str = "val_acc",
        mode: str = "max",
        check_finite: bool = True,
        every_n_steps: int | None = None,
        every_n_seconds: float | None = 300,
        keep: int = 2,
    ):
        check_int("checkpointer.every_n_steps", every_n_steps, minimum=1, optional=True, example=500)
        check_number("checkpointer.every_n_seconds", every_n_seconds, 0, exclusive=True, optional=True)
        check_int("checkpointer.keep", keep, minimum=2, example=2)
        self.run, self.folder, self.history = run, Path(run.checkpoints), history
        self.monitor, self.mode, self.check_finite = monitor, mode, check_finite
        self.every_n_steps, self.every_n_seconds, self.keep = every_n_steps, every_n_seconds, keep
        self.best = None  # {"value", "epoch", "step"}
        self.stop_signal = None
        self.hard_stop = False  # a second Ctrl-C: stop at once, no checkpoint of the current step
        self._rng_to_restore = None
        self._last_save = time.monotonic()
        self.last_path = None
        self.save_seconds = 0.0  # time spent writing checkpoints (the history's sys_checkpoint_seconds)
        self._distributed = False  # several processes (DDP): set when training starts

    # -- signals -------------------------------------------------------------------------------------------
    def on_train_start(self, trainer, pl_module):
        # Lightning registers its own SIGTERM handler when fit starts (ginlab keeps it out: see
        # lightning_internals.keep_signal_handlers); ours are the only ones.
        self.install_signal_handlers()
        self._distributed = trainer.world_size > 1

    def on_test_start(self, trainer, pl_module):
        # The same for the final test; a stop signal during it lets the (short) test finish.
        self.install_signal_handlers()

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGUSR1 only set a flag: the step in progress finishes, then a checkpoint is written."""

        def handler(signum, frame):
            self.stop_signal = signum

        def hard_interrupt(signum, frame):
            self.hard_stop = True
            raise KeyboardInterrupt

        def interrupt(signum, frame):
            # The first Ctrl-C stops gracefully like SIGTERM; a second one stops at once.
            signal.signal(signal.SIGINT, hard_interrupt)
            handler(signum, frame)

        for sig in (signal.SIGTERM, signal.SIGUSR1):
            signal.signal(sig, handler)
        signal.signal(signal.SIGINT, interrupt)

    def stop_requested(self) -> bool:
        """Whether a stop signal arrived in any process (all processes get the same answer)."""
        self.stop_signal, _ = distributed.agree(self.stop_signal, False)
        return self.stop_signal is not None

    # -- saving --------------------------------------------------------------------------------------------
    @staticmethod
    def _loader(trainer):
        return getattr(trainer.datamodule, "train_loader", None)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        self.run.sync_logs()  # the rows this checkpoint counts must be on disk before it is
        loader = self._loader(trainer)
        rng = get_rng_state()
        checkpoint["ginlab"] = {
            "rng": rng,
            # Under DDP the processes' random states drift apart (shares of different sizes draw different
            # amounts): all of them, so that each process gets its own back.
            "rng_per_rank": distributed.all_gather_object(rng) if trainer.world_size > 1 else None,
            "world_size": trainer.world_size,
            "loader": loader.state_dict() if loader is not None else None,
            "history_rows": self.history.history_rows,
            "step_rows": self.history.step_rows,
            "elapsed": self.history.elapsed(),
            "best": self.best,
        }

    def save(self, trainer, pl_module, best: bool = False) -> Path:
        if self.check_finite and not all(torch.isfinite(p).all() for p in pl_module.parameters()):
            # Weights that are NaN or infinite continue nothing: the newest checkpoint stays the last finite.
            raise Diverged(trainer.global_step, trainer.current_epoch, "the model's weights are not finite")
        started = time.monotonic()
        path = self.folder / f"step-{trainer.global_step:08d}.ckpt"
        trainer.save_checkpoint(path)  # every process: the checkpoint is gathered from all; rank 0 writes it
        if trainer.is_global_zero:
            link_atomically(path, self.folder / "last.ckpt")
            if best:
                link_atomically(path, self.folder / "best.ckpt")
            self._prune()
            self.run.record_checkpoint(path, trainer.global_step, trainer.current_epoch)
        distributed.barrier()  # the others may read the links next (the final test loads best.ckpt)
        self.last_path = path
        self._last_save = time.monotonic()
        self.save_seconds += self._last_save - started
        return path

    def _prune(self) -> None:
        for old in step_checkpoints(self.folder)[self.keep :]:
            old.unlink(missing_ok=True)  # best.ckpt and last.ckpt are links of their own: they stay intact

    def _due(self) -> bool:
        return self.every_n_seconds is not None and time.monotonic() - self._last_save >= self.every_n_seconds

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self._rng_to_restore is not None:
            set_rng_state(self._rng_to_restore)
            self._rng_to_restore = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        loader = self._loader(trainer)
        if loader is not None:
            loader.consumed = batch_idx + 1
        last_batch = batch_idx + 1 >= trainer.num_training_batches
        # Not at the last batch: the epoch-end checkpoint follows right after validation.
        due = not last_batch and (
            bool(self.every_n_steps and trainer.global_step % self.every_n_steps == 0) or self._due()
        )
        if self._distributed:  # the clocks and the signals differ between processes; saving needs them all
            self.stop_signal, due = distributed.agree(self.stop_signal, due)
        # At the last batch the stop waits for the epoch's validation and its end checkpoint
        # (on_train_epoch_end stops after them): Lightning continues a checkpoint taken between the last batch
        # and the validation with the next epoch, so that epoch's validation and history row never happened.
        if self.stop_signal is not None and not last_batch:
            path = self.save(trainer, pl_module)
            ignore_stop_signals()  # the stop's checkpoint is written
            log.info("%s received: checkpoint written to %s", signal.Signals(self.stop_signal).name, path)
            raise Interrupted(self.stop_signal)
        if due:
            self.save(trainer, pl_module)

    def on_train_epoch_end(self, trainer, pl_module):
        # Lightning calls Checkpoint callbacks after the others (and after EarlyStopping's check), so the
        # history row for this epoch is written and the early-stopping state is current.
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
        if self.monitor not in metrics:
            raise ConfigError(
                f"training_loop.monitor={self.monitor!r} was not logged in epoch "
                f"{trainer.current_epoch + 1}, so no best checkpoint can be chosen. Logged metrics: "
                f"{', '.join(sorted(metrics)) or 'none'}. Set training_loop.monitor to one of them (and "
                f"training_loop.monitor_mode to 'min' or 'max')."
            )
        value, previous = metrics[self.monitor], self.best
        improved = math.isfinite(value) and (
            previous is None
            or (value > previous["value"] if self.mode == "max" else value < previous["value"])
        )
        if improved:
            self.best = {"value": value, "epoch": trainer.current_epoch, "step": trainer.global_step}
        path = self.save(trainer, pl_module, best=improved)
        shown = "  ".join(
            f"{k} {v:.4f}" for k, v in sorted(metrics.items()) if k.startswith(("train_", "val_"))
        )
        if improved:
            verdict = f"best {self.monitor} improved" + (f" from {previous['value']:.4f}" if previous else "")
            verdict += " -> checkpoints/best.ckpt"
        elif self.best is None:
            verdict = f"{self.monitor} is {value}: no best checkpoint yet"
        else:  # epochs are counted from 1 wherever a person reads them
            verdict = f"best {self.monitor} still {self.best['value']:.4f} (epoch {self.best['epoch'] + 1})"
        log.info(
            "epoch %d/%d | %s | %s | saved %s",
            trainer.current_epoch + 1, trainer.max_epochs, shown, verdict,
            path.relative_to(self.folder.parent),
        )  # fmt: skip
        if self.stop_requested():
            ignore_stop_signals()  # the stop's checkpoint is written
            raise Interrupted(self.stop_signal)

    # -- loading -------------------------------------------------------------------------------------------
    def on_load_checkpoint(self, trainer, pl_module, checkpoint):
        state = checkpoint.get("ginlab")
        if state is None or trainer.state.fn != TrainerFn.FITTING:
            # The final test loads best.ckpt through this hook too: it must not set the run's clock, best
            # score and row counts back to that epoch's.
            return
        saved_world = state.get("world_size", 1)
        if saved_world != trainer.world_size:
            raise RuntimeError(
                f"The checkpoint was written by a run of {saved_world} process(es), and this one has "
                f"{trainer.world_size}: each process continues its own share of the data and its own random "
                f"state, so the run continues only with the same number. Reload on a machine that has them, "
                f"with -b trainer.devices={saved_world} if the saved configuration says otherwise."
            )
        per_rank = state.get("rng_per_rank")
        self._rng_to_restore = per_rank[trainer.global_rank] if per_rank else state["rng"]
        self.best = state["best"]
        self.history.resume(state["elapsed"], state["history_rows"], state["step_rows"])
        if state["loader"] is not None and trainer.datamodule is not None:
            trainer.datamodule.resume_state = state["loader"]
