"""Opening the run folder for training: a fresh run is created; a reload finds the checkpoint to resume,
checks that it can, records itself and cuts the history back to that checkpoint.

Everything that can refuse a reload (no usable checkpoint although one was written, fewer epochs asked for
than already trained, a damaged history) is checked before the first write, so a refusal changes nothing.
"""

from __future__ import annotations

import logging

import torch

from ginlab.errors import ConfigError, RunFolderError
from ginlab.runfolder import RunFolder, Start, now
from ginlab.training.checkpoints import newest_valid_checkpoint

log = logging.getLogger("ginlab.progress")


def open_run(run: RunFolder, start: Start, launch, n_epochs: int) -> str | None:
    """Make the folder this run's; return the checkpoint to resume from (None: from step 0).

    Args:
        run: the folder (writer=False in DDP's other processes, which only look).
        start: plan_start's decision ("fresh" or "reload").
        launch: the command, config files, bindings and accepted changes to record.
        n_epochs: the epochs asked for (a reload cannot ask for fewer than it has trained).
    """
    if start.action == "fresh":
        run.create(launch.command, launch.config_files, launch.bindings, torch.get_num_threads())
        _ready(run, launch)
        return None
    if run.writer:
        for tmp in run.checkpoints.glob(".*.tmp"):
            tmp.unlink()  # a write that a kill interrupted
    checkpoint, state, broken = newest_valid_checkpoint(run.checkpoints)
    meta = run.read_meta()
    resumed = state.get("ginlab", {})
    if checkpoint is None and (broken or meta.get("last_checkpoint")):
        raise RunFolderError(_unusable(run, meta, broken))
    done = resumed.get("history_rows", 0)
    if done > n_epochs:
        raise ConfigError(
            f"{run.path} has trained {done} epochs already: training_loop.n_epochs={n_epochs} cannot be reached "
            f"again. Use n_epochs >= {done}. Nothing was changed."
        )
    changes = [str(change) for change in launch.changes]
    run.record_reload(launch.command, checkpoint, changes, state.get("global_step", 0),
                      resumed.get("history_rows", 0), resumed.get("step_rows", 0))  # fmt: skip
    keep_torch_threads(meta.get("torch_threads"))
    where = (
        f"{checkpoint} (step {state.get('global_step')})"
        if checkpoint
        else "step 0 (no checkpoint was written)"
    )
    log.info("==== reload %s from %s", now(), where)
    _ready(run, launch)
    run.cut_history(resumed.get("history_rows", 0), resumed.get("step_rows", 0))
    return str(checkpoint) if checkpoint else None


def _ready(run: RunFolder, launch) -> None:
    if launch.on_folder_ready is not None and run.writer:
        launch.on_folder_ready(run)


def _unusable(run: RunFolder, meta: dict, broken: dict[str, str]) -> str:
    last = meta.get("last_checkpoint") or {}
    written = (
        f"meta.json says {last.get('file')} was written (step {last.get('step')})"
        if last else "checkpoints were written"
    )  # fmt: skip
    found = "; ".join(f"{name}: {why}" for name, why in broken.items()) or "none is left in checkpoints/"
    return (
        f"Cannot reload {run.path}: {written}, but no checkpoint can be used ({found}). Restarting from step 0 "
        f"would silently throw its training away, so nothing was changed. To continue it, restore a checkpoint "
        f"from a copy into {run.checkpoints}; to train it again from the start, move the folder away and start "
        f"a fresh run with the same configuration (its command is in meta.json)."
    )


def keep_torch_threads(threads: int | None) -> None:
    """Compute with the run's thread count: torch splits its CPU sums by thread, so a reload with another count
    (another --slots, another node, another OMP_NUM_THREADS) would continue a different run."""
    if threads and threads != torch.get_num_threads():
        log.info(
            "torch threads: %d, as when the run started (this process would use %d): the results depend on it",
            threads, torch.get_num_threads(),
        )  # fmt: skip
        torch.set_num_threads(threads)
