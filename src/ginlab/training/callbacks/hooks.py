"""Lightning calls every callback's per-batch hooks on every batch, and skips a hook only
when it is not callable.

Each call costs about 1 us (hook lookup, profiler context, the call), so the ~20 per training step that
ginlab's four callbacks do not use add up to 1% of a small model's step (benchmarks/train_overhead.py).
`@skip_unused_batch_hooks` sets the per-batch hooks a callback class does not override to None, which
Lightning reads as "nothing to call"; `is_overridden` treats None as not overridden too.
"""

import pytorch_lightning as pl

BATCH_HOOKS = (
    "on_train_batch_start",
    "on_train_batch_end",
    "on_before_backward",
    "on_after_backward",
    "on_before_optimizer_step",
    "on_before_zero_grad",
    "on_validation_batch_start",
    "on_validation_batch_end",
    "on_test_batch_start",
    "on_test_batch_end",
    "on_predict_batch_start",
    "on_predict_batch_end",
)


def skip_unused_batch_hooks(cls):
    for name in BATCH_HOOKS:
        if getattr(cls, name) is getattr(pl.Callback, name):
            setattr(cls, name, None)
    return cls
