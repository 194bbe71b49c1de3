"""Checkpointer: rolling, atomic checkpoints that let a run continue exactly where it stopped.

When: every `every_n_steps` optimizer steps and/or every `every_n_seconds` (mid-epoch), at every epoch end,
and when a stop signal (SIGTERM, SIGUSR1) arrived, after the current step. Where:
checkpoints/step-NNNNNNNN.ckpt, the newest `keep` of them kept; last.ckpt and best.ckpt are hard links to one
of them (files are never changed in place, only replaced by rename, so a link always points at a
complete file).

Besides Lightning's state, the checkpoint's "ginlab" entry holds what Lightning does not save:
- the random state of python, numpy and torch, restored just before the next training step consumes it
  (restoring it at load time is too early: Lightning and the data loader run code in between);
- the training loader's position (epoch, batches consumed), because Lightning prefetches a batch ahead;
- how many history/steps rows existed, so a reload cuts the history back to exactly that;
- the best score so far and the training time of earlier sessions.

Under DDP every process runs this callback and takes every decision to save together with the others (saving
is a collective operation); rank 0 writes the files; each process gets its own random state back on reload.
"""

import logging
import os
import random
import re
import signal
import time
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.trainer.states import TrainerFn

from ginlab import distributed
from ginlab.atomic import fsync_dir
from ginlab.callbacks.hooks import skip_unused_batch_hooks

log = logging.getLogger("ginlab.progress")
STEP_FILE = re.compile(r"step-(\d+)\.ckpt$")


class Interrupted(Exception):
    """Training stopped on a signal after writing a checkpoint; reload continues it exactly."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


# -- random state, as plain tensors and lists (loadable with weights_only=True) ------------------------------
def get_rng_state() -> dict:
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    version, py_state, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "python": {"version": version, "state": list(py_state), "gauss": py_gauss},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])
    )
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def link_atomically(source: Path, target: Path) -> None:
    tmp = target.with_name(f".{target.name}.link")
    tmp.unlink(missing_ok=True)
    os.link(source, tmp)
    os.replace(tmp, target)
    fsync_dir(target.parent)


def step_checkpoints(folder: Path) -> list[Path]:
    """The rolling checkpoints, newest first."""
    files = [p for p in folder.glob("step-*.ckpt") if STEP_FILE.search(p.name)]
    return sorted(files, key=lambda p: int(STEP_FILE.search(p.name).group(1)), reverse=True)


@skip_unused_batch_hooks
class Checkpointer(pl.callbacks.Checkpoint):
    """Args:
    folder: where checkpoints go (run_folder/checkpoints).
    history: the HistoryWriter, whose row counts and elapsed time go into each checkpoint.
    monitor, mode: the metric that decides best.ckpt ("val_acc", "max").
    every_n_steps, every_n_seconds: mid-epoch checkpoint frequency (None: off).
    keep: how many rolling checkpoints to keep (at least 2).
    """

    def __init__(
        self,
        folder,
        history,
        monitor: str = "val_acc",
        mode: str = "max",
        every_n_steps: int | None = None,
        every_n_seconds: float | None = 300,
        keep: int = 2,
    ):
        if mode not in ("min", "max"):
            raise ValueError(f"monitor mode {mode!r} is not known; expected 'min' or 'max'.")
        self.folder, self.history = Path(folder), history
        self.monitor, self.mode = monitor, mode
        self.every_n_steps, self.every_n_seconds, self.keep = every_n_steps, every_n_seconds, max(2, keep)
        self.best = None  # {"value", "epoch", "step"}
        self.stop_signal = None
        self.hard_stop = False  # a second Ctrl-C: stop at once, no checkpoint of the current step
        self._rng_to_restore = None
        self._last_save = time.monotonic()
        self.last_path = None
        self._distributed = False  # several processes (DDP): set when training starts

    # -- signals -------------------------------------------------------------------------------------------
    def setup(self, trainer, pl_module, stage):
        # Lightning installs its own SIGTERM handler right before training and testing (after this hook), and
        # until on_train_start replaces it, a SIGTERM would reach it. Under DDP it runs a collective operation
        # (a broadcast) inside the handler, in the signalled process alone: the processes then wait for each
        # other forever (seen with a SIGTERM to rank 0 during the sanity check). The signals are ours.
        trainer._signal_connector.register_signal_handlers = lambda: None

    def on_train_start(self, trainer, pl_module):
        # Lightning registers its own SIGTERM handler when fit starts; it would raise SystemExit(0) at the
        # next loop boundary, possibly before a checkpoint of the last step exists. Ours must be the only one.
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

    # -- saving --------------------------------------------------------------------------------------------
    def _loader(self, trainer):
        datamodule = trainer.datamodule
        return getattr(datamodule, "train_loader", None)

    def stop_requested(self) -> bool:
        """Whether a stop signal arrived in any process (all processes get the same answer)."""
        self.stop_signal, _ = distributed.agree(self.stop_signal, False)
        return self.stop_signal is not None

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        self.history.run.sync_logs()  # the rows this checkpoint counts must be on disk before it is
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

    def save(self, trainer, best: bool = False) -> Path:
        path = self.folder / f"step-{trainer.global_step:08d}.ckpt"
        trainer.save_checkpoint(path)  # every process: the checkpoint is gathered from all; rank 0 writes it
        if trainer.is_global_zero:
            link_atomically(path, self.folder / "last.ckpt")
            if best:
                link_atomically(path, self.folder / "best.ckpt")
            self._prune()
        distributed.barrier()  # the others may read the links next (the final test loads best.ckpt)
        self.last_path = path
        self._last_save = time.monotonic()
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
        if self.stop_signal is not None:
            path = self.save(trainer)
            log.info("%s received: checkpoint written to %s", signal.Signals(self.stop_signal).name, path)
            raise Interrupted(self.stop_signal)
        if due:
            self.save(trainer)

    def on_train_epoch_end(self, trainer, pl_module):
        # Lightning calls Checkpoint callbacks after the others (and after EarlyStopping's check), so the
        # history row for this epoch is written and the early-stopping state is current.
        value = trainer.callback_metrics.get(self.monitor)
        improved = False
        if value is not None:
            value = float(value)
            if self.best is None or (
                value > self.best["value"] if self.mode == "max" else value < self.best["value"]
            ):
                previous = self.best
                self.best = {"value": value, "epoch": trainer.current_epoch, "step": trainer.global_step}
                improved = True
        path = self.save(trainer, best=improved)
        metrics = "  ".join(
            f"{k} {float(v):.4f}"
            for k, v in sorted(trainer.callback_metrics.items())
            if k.startswith(("train_", "val_")) and v.numel() == 1
        )
        if value is None:
            verdict = f"{self.monitor} not logged: no best checkpoint"
        elif improved:
            verdict = (
                f"best {self.monitor} improved"
                + (f" from {previous['value']:.4f}" if previous else "")
                + " -> checkpoints/best.ckpt"
            )
        else:
            verdict = f"best {self.monitor} still {self.best['value']:.4f} (epoch {self.best['epoch']})"
        log.info(
            "epoch %d/%d | %s | %s | saved %s",
            trainer.current_epoch + 1,
            trainer.max_epochs,
            metrics,
            verdict,
            path.relative_to(self.folder.parent),
        )
        if self.stop_requested():
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
                f"with -b training_loop.devices={saved_world} if the saved configuration says otherwise "
                f"(then also -b training_loop.reload_allow_changes=True)."
            )
        per_rank = state.get("rng_per_rank")
        self._rng_to_restore = per_rank[trainer.global_rank] if per_rank else state["rng"]
        self.best = state["best"]
        self.history.resume(state["elapsed"], state["history_rows"], state["step_rows"])
        if state["loader"] is not None and trainer.datamodule is not None:
            trainer.datamodule.resume_state = state["loader"]
