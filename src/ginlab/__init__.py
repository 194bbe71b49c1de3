"""ginlab: trustworthy, resumable, comparable training runs driven by gin configs.

The flow: config (gin files + bindings) -> registries (build) -> training loop (Lightning) -> run folder ->
analysis (load_C, load_H, load_runs ...) -> experiments (prepare / run / report).

This module stays import-light (no torch): analysis scripts and `bin/*.py --help` must start fast.
"""

__version__ = "0.1.0"

_LAZY = {
    "load_C": "ginlab.analysis",
    "load_H": "ginlab.analysis",
    "load_HC": "ginlab.analysis",
    "load_runs": "ginlab.analysis",
    "load_histories": "ginlab.analysis",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ginlab' has no attribute {name!r}")
