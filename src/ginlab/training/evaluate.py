"""Evaluate a checkpoint of a run folder: rebuild model and data from the run's own saved config.

Writes evaluations/<checkpoint>-<split>.json (metrics) and evaluations/<checkpoint>-<split>.predictions.csv
(per example: index in the split, target, prediction, one score column per class), both atomically.
The metrics are the Classifier's own (ginlab.training.task.eval_sums / eval_metrics, on the same batches), so
the test accuracy of the best checkpoint equals the one in summary.json.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import torch

from ginlab.config import parse, split_bindings, upgrade_text
from ginlab.errors import ConfigError, RunFolderError
from ginlab.runfolder import RunPaths, now, read_meta
from ginlab.runfolder.atomic import atomic_write_bytes, atomic_write_json
from ginlab.training.checkpoints import load_verified
from ginlab.training.task import Classifier, eval_metrics, eval_sums

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")


def resolve_checkpoint(run: RunPaths, checkpoint: str) -> tuple[str, Path, dict]:
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
    """Evaluate `checkpoint` of the run in `save_dir` on `split`; write and return the evaluation record.

    Raises:
        RunFolderError: not a run folder, or one in a format this ginlab does not read.
        ConfigError: an unknown split or checkpoint, or bindings that do not parse.
    """
    run = RunPaths(save_dir)
    meta = read_meta(save_dir)  # the one reader: a damaged or newer run folder is refused here
    if not (run.config_gin.exists() or run.config_files()):
        raise RunFolderError(f"{save_dir} has no config.gin and no configs/: its configuration is unknown.")
    if split not in SPLITS:
        raise ConfigError(f"Unknown split {split!r}; expected one of {', '.join(SPLITS)}.")
    name, path, state = resolve_checkpoint(run, checkpoint)
    base = run.config_gin.read_text() if run.config_gin.exists() else _started_with(run)
    import ginlab.training  # noqa: F401  (every configurable the saved config names)

    parse(
        [],
        split_bindings(bindings),
        base_text=upgrade_text(base) if meta.get("format_version") == 1 else base,
    )

    from ginlab.training.loop import build_from_config

    parts = build_from_config()
    if not isinstance(parts.module, Classifier):
        raise ConfigError(f"bin/evaluate.py evaluates ginlab's classifiers; {parts.model_class} is a LightningModule "
                          "of its own: evaluate it with its own test_step (trainer.test).")  # fmt: skip
    parts.module.load_state_dict(state["state_dict"])
    parts.module.eval()
    datamodule = parts.datamodule
    x_all, y_all = datamodule.split(split)
    sums, scores = torch.zeros(3, dtype=torch.float64), []
    with torch.no_grad():
        for x, y in datamodule._eval_loader(split):
            logits = parts.module(x)
            sums += eval_sums(logits, y)
            scores.append(torch.softmax(logits, dim=1))
    scores = torch.cat(scores)
    ginlab_state = state.get("ginlab") or {}
    result = {
        "checkpoint": name,
        "checkpoint_path": _relative(path, run.path),
        "epoch": state.get("epoch"),  # the epoch index (from 0), as in history.jsonl
        "epochs_done": ginlab_state.get("history_rows"),
        "step": state.get("global_step"),
        "split": split,
        "examples": int(sums[2].item()),
        "metrics": eval_metrics(sums, split),
        "bindings": list(bindings),
        "time": now(),
    }
    run.evaluations.mkdir(exist_ok=True)
    stem = f"{name}-{split}"
    atomic_write_bytes(run.evaluations / f"{stem}.predictions.csv", _predictions_csv(y_all, scores))
    atomic_write_json(run.evaluations / f"{stem}.json", result)
    return result


def report_line(save_dir, result: dict) -> str:
    """What bin/evaluate.py prints: the run, the checkpoint (epochs counted from 1), the split, the metrics."""
    import gin

    try:
        n_epochs = gin.query_parameter("training_loop.n_epochs")
    except ValueError:
        n_epochs = None
    metrics = "  ".join(f"{k} {v:.6f}" for k, v in result["metrics"].items())
    where = describe_checkpoint(result, n_epochs)
    return f"{save_dir}: {where} on {result['split']} ({result['examples']} examples): {metrics}"


def describe_checkpoint(result: dict, n_epochs: int | None = None) -> str:
    """ "best (after epoch 8/8, step 160)" or "last (in epoch 5, step 90)": epochs counted from 1, as printed
    during training."""
    done, epoch = result.get("epochs_done"), result.get("epoch")
    total = f"/{n_epochs}" if n_epochs else ""
    if isinstance(done, int) and isinstance(epoch, int) and done > epoch:
        where = f"after epoch {done}{total}"
    elif isinstance(epoch, int):
        where = f"in epoch {epoch + 1}{total}"
    else:
        where = "epoch unknown"
    return f"{result['checkpoint']} ({where}, step {result.get('step')})"


def _started_with(run: RunPaths) -> str:
    return "\n".join(path.read_text() for path in run.config_files())


def _relative(path: Path, folder: Path) -> str:
    path, folder = path.resolve(), folder.resolve()
    return str(path.relative_to(folder)) if path.is_relative_to(folder) else str(path)


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
