"""Callbacks, one per file: ginlab's own (always on, each configured under its own gin name) and the extra
ones a config adds by name (`training_loop.callbacks = ["lr_monitor"]`, registered in extra.py)."""

from ginlab.training.callbacks import extra  # noqa: F401  (importing registers the named callbacks)
from ginlab.training.callbacks.checkpointer import Checkpointer
from ginlab.training.callbacks.divergence import DivergenceCheck
from ginlab.training.callbacks.heartbeat import Heartbeat
from ginlab.training.callbacks.history import HistoryWriter
from ginlab.training.callbacks.mlflow import mlflow_logger
from ginlab.training.callbacks.progress import ProgressPrinter
from ginlab.training.callbacks.reload_changes import ReloadChanges
from ginlab.training.callbacks.telemetry import Telemetry

__all__ = [
    "Checkpointer",
    "DivergenceCheck",
    "Heartbeat",
    "HistoryWriter",
    "ProgressPrinter",
    "ReloadChanges",
    "Telemetry",
    "mlflow_logger",
]
