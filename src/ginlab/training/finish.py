"""The end of a run that trained to the end: test the best checkpoint, write summary.json, mark it
finished."""

from __future__ import annotations

import logging

import gin
from pytorch_lightning.utilities.model_helpers import is_overridden

from ginlab.config import flat_config
from ginlab.errors import ExitCode
from ginlab.runfolder import format as fmt
from ginlab.runfolder.read import telemetry_maxima
from ginlab.training.outcome import record

log = logging.getLogger("ginlab.progress")


def summarize(run, trainer, parts, checkpointer, history, monitor: str, monitor_mode: str) -> dict:
    """Test the best checkpoint (the last one when no epoch had a finite monitored value), write summary.json
    and the final config, and record the run as finished; return the summary."""
    best = run.checkpoints / "best.ckpt"
    tested = best if best.exists() else run.checkpoints / "last.ckpt"
    test_metrics = {}
    if is_overridden("test_step", parts.module) and tested.exists():
        results = trainer.test(
            parts.module, datamodule=parts.datamodule, ckpt_path=str(tested), verbose=False, weights_only=True
        )
        test_metrics = {k: float(v) for k, v in (results[0] if results else {}).items()}
        log.info("test (%s): %s", tested.name, "  ".join(f"{k} {v:.4f}" for k, v in test_metrics.items()))
    rows = run.history_rows()
    chosen = checkpointer.best
    summary = {
        "status": fmt.FINISHED,
        "epochs": len(rows),
        "steps": trainer.global_step,
        "time": round(history.elapsed(), 3),
        "monitor": {"metric": monitor, "mode": monitor_mode},
        "final": rows[-1] if rows else {},
        "best": {
            **(
                {"epoch": chosen["epoch"], "step": chosen["step"], monitor: chosen["value"]} if chosen else {}
            ),
            "checkpoint": str(tested.relative_to(run.path)),
        },
        "test": {**test_metrics, "checkpoint": str(tested.relative_to(run.path))},
        "max": telemetry_maxima(rows),  # the largest sys_* value of any epoch: what the run needed at most
    }
    run.write_summary(summary)
    run.write_config(gin.operative_config_str(), flat_config())
    record(run, fmt.FINISHED, ExitCode.FINISHED)
    return summary
