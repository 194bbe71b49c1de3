"""Evaluate a checkpoint of a run folder: rebuild model and data from the run's own saved config.

Writes evaluations/<checkpoint>-<split>.json (metrics) and evaluations/<checkpoint>-<split>.predictions.csv
(per example: index in the split, target, prediction, one score column per class), both atomically.
The metrics are computed the way training computes them (same batches, same sums), so the test accuracy
of the best checkpoint equals the one in summary.json.
"""

import io
import logging
from pathlib import Path

import torch
from torch.nn import functional as F

from ginlab.atomic import atomic_write_bytes, atomic_write_json
from ginlab.checkpoint_io import load_verified
from ginlab.config import ConfigError, parse, split_bindings
from ginlab.run_folder import RunFolder, now

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")


def resolve_checkpoint(run: RunFolder, checkpoint: str) -> tuple[str, Path, dict]:
    """(name, path, content): name 'best'/'last' or the file's stem for a path; errors name the choices."""
    if checkpoint in ("best", "last"):
        path = run.checkpoints / f"{checkpoint}.ckpt"
        name = checkpoint
    else:
        path = Path(checkpoint)
        if not path.is_absolute() and not path.exists():
            path = run.path / checkpoint
        name = path.stem
    if not path.is_file():
        available = sorted(p.name for p in run.checkpoints.glob("*.ckpt")) if run.checkpoints.exists() else []
        raise ConfigError(
            f"Checkpoint not found: {path}. Expected best, last or a path; "
            f"this run has: {', '.join(available) or 'no checkpoints'}."
        )
    state, reason = load_verified(path)
    if state is None:
        raise ConfigError(
            f"Checkpoint {path} cannot be read ({reason}); try another one (--checkpoint last)."
        )
    return name, path, state


def evaluate(save_dir, checkpoint: str = "best", split: str = "test", bindings=()) -> dict:
    run = RunFolder(save_dir)
    if not run.meta.exists() or not (run.config_gin.exists() or run.config_files()):
        raise ConfigError(
            f"{save_dir} is not a run folder: it has no meta.json and config.gin "
            f"(a folder written by bin/train.py is expected)."
        )
    if split not in SPLITS:
        raise ConfigError(f"Unknown split {split!r}; expected one of {', '.join(SPLITS)}.")
    name, path, state = resolve_checkpoint(run, checkpoint)
    base = [run.config_gin] if run.config_gin.exists() else run.config_files()
    parse([], split_bindings(bindings), base_files=base)

    from ginlab.loop import build_from_config  # imports Lightning: after the cheap checks

    datamodule, module = build_from_config()
    module.load_state_dict(state["state_dict"])
    module.eval()
    x_all, y_all = datamodule.split(split)
    loader = datamodule._eval_loader(split)
    loss_sum = correct = count = torch.zeros((), dtype=torch.float64)
    scores = []
    with torch.no_grad():
        for x, y in loader:
            logits = module(x)
            loss_sum = loss_sum + F.cross_entropy(logits, y, reduction="sum").double()
            correct = correct + (logits.argmax(1) == y).sum().double()
            count = count + len(y)
            scores.append(torch.softmax(logits, dim=1))
    scores = torch.cat(scores)
    metrics = {f"{split}_loss": (loss_sum / count).item(), f"{split}_acc": (correct / count).item()}
    result = {
        "checkpoint": name,
        "checkpoint_path": str(path.resolve().relative_to(run.path.resolve()))
        if path.resolve().is_relative_to(run.path.resolve())
        else str(path),
        "epoch": state.get("epoch"),
        "step": state.get("global_step"),
        "split": split,
        "examples": int(count.item()),
        "metrics": metrics,
        "bindings": list(bindings),
        "time": now(),
    }
    run.evaluations.mkdir(exist_ok=True)
    stem = f"{name}-{split}"
    atomic_write_bytes(run.evaluations / f"{stem}.predictions.csv", _predictions_csv(y_all, scores))
    atomic_write_json(run.evaluations / f"{stem}.json", result)
    return result


def _predictions_csv(targets: torch.Tensor, scores: torch.Tensor) -> bytes:
    import pandas as pd

    frame = pd.DataFrame(
        {"index": range(len(targets)), "target": targets.numpy(), "prediction": scores.argmax(1).numpy()}
    )
    for k in range(scores.shape[1]):
        frame[f"score_{k}"] = scores[:, k].numpy()
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False, float_format="%.6g")
    return buffer.getvalue().encode()
