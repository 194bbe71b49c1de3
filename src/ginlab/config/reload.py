"""What a reload may change in a run's configuration, and what it must refuse.

A reload continues the run from its checkpoint, so its record must stay true: a changed value is either
1. **bookkeeping** that changes nothing computed (how long to train, how often to log or checkpoint, where to
   mirror, which devices): taken as it is;
2. **applied from the reload on**, with `training_loop.reload_allow_changes=True`: the hyperparameters of the
   run's own optimizer and LR schedule (set on them after the checkpoint is restored), gradient clipping,
   early-stopping patience, data loader workers, divergence handling. meta.json records each one with the
   step from which it applies;
3. **refused** otherwise (the model, the data, the seed, the optimizer's class ...): a checkpoint of one
   architecture cannot continue as another, so the run cannot honestly say it used the new value.
"""

from __future__ import annotations

import dataclasses

from ginlab.config.values import minimal_name

BOOKKEEPING = {
    "training_loop.n_epochs",
    "training_loop.reload",
    "training_loop.reload_allow_changes",
    "trainer.accelerator",  # the number of processes is checked against the checkpoint's
    "trainer.devices",
    "trainer.profiler",
}
BOOKKEEPING_PREFIXES = (
    "history.", "progress.", "heartbeat.", "mlflow.", "checkpointer.", "telemetry.", "notify.",
)  # fmt: skip
APPLIED = {
    "training_loop.gradient_clip_val",
    "training_loop.early_stopping_patience",
    "divergence.stop",
}
APPLIED_SUFFIXES = (".num_workers",)  # batches are functions of (seed, epoch, position), not of the workers


@dataclasses.dataclass
class Change:
    key: str
    old: object
    new: object
    kind: str  # "bookkeeping" | "applied" | "refused"
    target: str | None = None  # "optimizer" | "scheduler": whose hyperparameter an applied change sets

    def __str__(self) -> str:
        old = "(not set)" if self.old is _MISSING else repr(self.old)
        return f"{self.key}: {old} -> {self.new!r}"


_MISSING = object()


def classify(saved: dict, new: dict, complete: bool = True) -> list[Change]:
    """The values bound in `new` that differ from the run's `saved` flat config, each with its kind.

    Args:
        saved: the run's config.json (every value it used).
        new: what the reload's config files and bindings bind (flat_config(operative=False)).
        complete: `saved` holds every value the run used (config.json). Then a key it lacks belongs to
            something the run never calls (`Adam.lr` in a run trained with SGD): binding it changes nothing,
            so it is no change. False when `saved` is only what the run's files bound (killed before
            config.json).
    """
    optimizer = minimal_name(saved.get("training_loop.optimizer"))
    scheduler = minimal_name(saved.get("training_loop.lr_scheduler"))
    changes = []
    for key, value in new.items():
        old = saved.get(key, _MISSING)
        if old == value or (old is _MISSING and complete):
            continue
        configurable = key.rsplit(".", 1)[0]
        target = {optimizer: "optimizer", scheduler: "scheduler"}.get(configurable) if configurable else None
        changes.append(Change(key, old, value, _kind(key, optimizer, scheduler), target))
    return changes


def _kind(key: str, optimizer: str | None, scheduler: str | None) -> str:
    if key in BOOKKEEPING or key.startswith(BOOKKEEPING_PREFIXES):
        return "bookkeeping"
    configurable = key.rsplit(".", 1)[0]
    if key in APPLIED or key.endswith(APPLIED_SUFFIXES) or configurable in (optimizer, scheduler):
        return "applied"
    return "refused"
