"""Callbacks, one per file. ginlab's own (always on) and extra ones registered by name for
`training_loop.callbacks = ["name", ...]`."""

from ginlab.callbacks import extra  # noqa: F401  (importing registers the named callbacks)
from ginlab.callbacks.checkpointer import Checkpointer, Interrupted  # noqa: F401
from ginlab.callbacks.heartbeat import Heartbeat  # noqa: F401
from ginlab.callbacks.history import HistoryWriter  # noqa: F401
from ginlab.callbacks.progress import ProgressPrinter  # noqa: F401
