"""Checkpoint files: written atomically beside their final name, read back without unpickling code.

A run's checkpoints are checkpoints/step-NNNNNNNN.ckpt, the newest `keep` of them kept; last.ckpt and
best.ckpt are hard links to one of them (files are never changed in place, only replaced by rename, so a link
always points at a complete file). Lightning's own atomic save puts its temporary file in TMPDIR, so a kill
during the move across filesystems can leave a truncated checkpoint; here the temporary file is always in the
target folder.
"""

from __future__ import annotations

import logging
import os
import re
import zipfile
from pathlib import Path

import torch
from lightning_fabric.plugins import CheckpointIO

from ginlab.runfolder.atomic import atomic_write, fsync_dir

log = logging.getLogger("ginlab.progress")
STEP_FILE = re.compile(r"step-(\d+)\.ckpt$")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be written or read."""


def save_checkpoint(checkpoint: dict, path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        atomic_write(path, lambda f: torch.save(checkpoint, f))
    except (OSError, RuntimeError) as e:  # torch's zip writer reports a failed write as RuntimeError
        raise CheckpointError(
            f"Could not write checkpoint {path}: {getattr(e, 'strerror', None) or e}. The previous checkpoints "
            f"are intact. Free space on that filesystem (df -h {path.parent}) and reload the run."
        ) from e


def load_checkpoint(path, map_location="cpu") -> dict:
    """torch.load with weights_only=True: tensors and plain Python values only, never arbitrary objects."""
    return torch.load(path, map_location=map_location, weights_only=True)


def load_verified(path) -> tuple[dict | None, str]:
    """Load a checkpoint after checking it is complete: (checkpoint, "") or (None, why it is unusable).

    One read serves both the check and the use: checkpoints can be large.
    """
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            return None, "empty file"
        with zipfile.ZipFile(path) as z:  # torch.save writes a zip archive; a cut file has no directory
            bad = z.testzip()
            if bad is not None:
                return None, f"corrupt member {bad}"
        return load_checkpoint(path), ""
    except FileNotFoundError:
        return None, "missing"
    except Exception as e:  # any failure to read means: do not resume from it
        return None, f"{type(e).__name__}: {e}"


def step_checkpoints(folder: Path) -> list[Path]:
    """The rolling checkpoints, newest first."""
    files = [p for p in Path(folder).glob("step-*.ckpt") if STEP_FILE.search(p.name)]
    return sorted(files, key=lambda p: int(STEP_FILE.search(p.name).group(1)), reverse=True)


def newest_valid_checkpoint(folder: Path) -> tuple[Path | None, dict, dict[str, str]]:
    """(the newest complete, loadable checkpoint, its content, {broken file: why}) — broken ones skipped loudly."""
    broken = {}
    for path in step_checkpoints(folder):
        state, reason = load_verified(path)
        if state is not None:
            return path, state, broken
        broken[path.name] = reason
        log.warning("WARNING: skipping broken checkpoint %s (%s); trying an older one", path, reason)
    return None, {}, broken


def link_atomically(source: Path, target: Path) -> None:
    tmp = target.with_name(f".{target.name}.link")
    tmp.unlink(missing_ok=True)
    os.link(source, tmp)
    os.replace(tmp, target)
    fsync_dir(target.parent)


class AtomicCheckpointIO(CheckpointIO):
    """Lightning plugin: every `trainer.save_checkpoint` is atomic, every load is weights_only."""

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        save_checkpoint(checkpoint, path)

    def load_checkpoint(self, path, map_location=None, weights_only=True):
        return load_checkpoint(path, map_location=map_location or "cpu")

    def remove_checkpoint(self, path):
        Path(path).unlink(missing_ok=True)
