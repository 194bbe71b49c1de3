"""Settings that moved in ginlab 0.2 (run-folder format 2): from `training_loop` to the object they configure.

Used for two things: a config that still binds an old name gets an error naming the new one, and a run
folder written by ginlab 0.1 (format 1) is evaluated with its saved settings under their new names.
"""

from __future__ import annotations

import re

RENAMED = {
    "training_loop.log_every_n_steps": "history.every_n_steps",
    "training_loop.print_every_n_steps": "progress.every_n_steps",
    "training_loop.checkpoint_every_n_steps": "checkpointer.every_n_steps",
    "training_loop.checkpoint_every_n_seconds": "checkpointer.every_n_seconds",
    "training_loop.keep_checkpoints": "checkpointer.keep",
    "training_loop.heartbeat_seconds": "heartbeat.every_seconds",
    "training_loop.mlflow_tracking_uri": "mlflow.tracking_uri",
    "training_loop.mlflow_experiment": "mlflow.experiment",
    "training_loop.precision": "trainer.precision",
    "training_loop.deterministic": "trainer.deterministic",
    "training_loop.accelerator": "trainer.accelerator",
    "training_loop.devices": "trainer.devices",
    "training_loop.strategy": "trainer.strategy",
    "training_loop.profiler": "trainer.profiler",
}

_OLD_BINDING = re.compile(r"^(\s*)(" + "|".join(re.escape(old) for old in RENAMED) + r")(\s*=)", re.MULTILINE)


def upgrade_text(text: str) -> str:
    """A format-1 gin text with the moved settings bound under their new names."""
    return _OLD_BINDING.sub(lambda m: m.group(1) + RENAMED[m.group(2)] + m.group(3), text)
