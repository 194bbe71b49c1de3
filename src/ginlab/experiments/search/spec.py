"""What a search is: its space, sampler, pruner, budget and objective (`Search`), and the Optuna objects it
builds from them.

    Search(space={"torch.optim.Adam.lr": LogUniform(1e-4, 1e-1)}, sampler="tpe", pruner="asha", trials=40,
           metric="val_acc", mode="max", seed=0)

A trial trains for the experiment's `training_loop.n_epochs` unless its pruner stops it earlier. A pruner
decides only at its decision epochs (ASHA's and Hyperband's rungs, the median rule's checks, and the last
epoch); the trial's bin/train.py trains exactly up to the next one, so a decision is made on a finished, saved
segment and a promotion continues it from its checkpoint (`training_loop.reload="auto"` with more epochs).
"""

from __future__ import annotations

import dataclasses
import hashlib

import optuna

from ginlab.experiments.search.space import check_space, describe_space

SAMPLERS = ("random", "tpe", "grid")


@dataclasses.dataclass(frozen=True)
class ASHA:
    """Asynchronous successive halving: at epochs min_epochs * reduction_factor**k, a trial goes on only if it
    is in the top 1/reduction_factor of the trials that reached that epoch so far."""

    min_epochs: int = 1
    reduction_factor: int = 3

    def problems(self, n_epochs: int) -> list[str]:
        return _rung_problems(self.min_epochs, self.reduction_factor, n_epochs)

    def build(self, n_epochs: int) -> optuna.pruners.BasePruner:
        # Integers only: "auto" would make a decision depend on which trials had finished when it was made.
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=self.min_epochs, reduction_factor=self.reduction_factor
        )

    def decision_epochs(self, n_epochs: int) -> list[int]:
        return _rungs(self.min_epochs, self.reduction_factor, n_epochs)


@dataclasses.dataclass(frozen=True)
class Hyperband(ASHA):
    """Hyperband: several ASHA brackets with different first rungs; Optuna assigns each trial a bracket.
    Every trial stops at every rung of the first bracket; a bracket without a rung there lets it go on."""

    def build(self, n_epochs: int) -> optuna.pruners.BasePruner:
        return optuna.pruners.HyperbandPruner(
            min_resource=self.min_epochs, max_resource=n_epochs, reduction_factor=self.reduction_factor
        )


@dataclasses.dataclass(frozen=True)
class Median:
    """The median rule: stop a trial whose best metric so far is worse than the median of the completed
    trials at the same epoch, checked every `interval_epochs` from `warmup_epochs` on, once
    `startup_trials` trials completed."""

    warmup_epochs: int = 1
    interval_epochs: int = 1
    startup_trials: int = 5

    def problems(self, n_epochs: int) -> list[str]:
        problems = []
        for name in ("warmup_epochs", "interval_epochs", "startup_trials"):
            value = getattr(self, name)
            low = 0 if name == "startup_trials" else 1
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                problems.append(f"Median({name}={value!r}): expected an integer >= {low}")
        return problems

    def build(self, n_epochs: int) -> optuna.pruners.BasePruner:
        return optuna.pruners.MedianPruner(
            n_startup_trials=self.startup_trials,
            n_warmup_steps=self.warmup_epochs,
            interval_steps=self.interval_epochs,
        )

    def decision_epochs(self, n_epochs: int) -> list[int]:
        epochs = set(range(self.warmup_epochs, n_epochs + 1, self.interval_epochs))
        return sorted(epochs | {n_epochs})


PRUNERS = {"asha": ASHA, "hyperband": Hyperband, "median": Median}


@dataclasses.dataclass(frozen=True)
class TPE:
    """Optuna's tree-structured Parzen estimator: the first `startup_trials` trials are drawn at random, the
    later ones where the completed (and pruned) trials so far were good."""

    startup_trials: int = 10


def _rungs(min_epochs: int, factor: int, n_epochs: int) -> list[int]:
    epochs, rung = {n_epochs}, min_epochs
    while rung < n_epochs:
        epochs.add(rung)
        rung *= factor
    return sorted(epochs)


def _rung_problems(min_epochs, factor, n_epochs) -> list[str]:
    problems = []
    if not isinstance(min_epochs, int) or isinstance(min_epochs, bool) or min_epochs < 1:
        problems.append(f"min_epochs {min_epochs!r}: expected an integer >= 1")
    elif min_epochs >= n_epochs:
        problems.append(
            f"min_epochs {min_epochs} leaves no rung below the trials' {n_epochs} epochs: nothing could be "
            f"pruned. Lower min_epochs or raise training_loop.n_epochs"
        )
    if not isinstance(factor, int) or isinstance(factor, bool) or factor < 2:
        problems.append(f"reduction_factor {factor!r}: expected an integer >= 2")
    return problems


@dataclasses.dataclass
class Search:
    """A hyperparameter search over gin parameters, run as ordinary run folders (docs/experiments.md).

    Args:
        space: {gin parameter: Uniform | LogUniform | IntRange | Choice}.
        sampler: "tpe" (default; or TPE(startup_trials=...)), "random" or "grid" (every combination of
            Choice/IntRange values, in an order drawn from the seed).
        pruner: None (every trial trains all epochs), "asha", "hyperband", "median", or ASHA(...),
            Hyperband(...), Median(...) with settings.
        trials: how many trials to run (grid: default and at most the number of grid points). May be raised
            later to continue a search.
        metric: the validation metric to optimize, one of what history.jsonl logs each epoch ("val_acc").
        mode: "max" or "min".
        seed: the seed of the sampler: the same seed, space and results give the same trials.
    """

    space: dict
    sampler: str | TPE = "tpe"
    pruner: str | ASHA | Median | None = None
    trials: int | None = None
    metric: str = "val_acc"
    mode: str = "max"
    seed: int = 0

    @property
    def pruner_spec(self) -> ASHA | Median | None:
        """The pruner with its settings (a name given as a string gets the defaults)."""
        if isinstance(self.pruner, str):
            return PRUNERS[self.pruner]() if self.pruner in PRUNERS else None
        return self.pruner

    def problems(self, n_epochs: int) -> list[str]:
        """Everything wrong with the search for trials of `n_epochs` epochs (empty when it can run)."""
        problems = check_space(self.space)
        if isinstance(self.sampler, TPE):
            startup = self.sampler.startup_trials
            if not isinstance(startup, int) or isinstance(startup, bool) or startup < 0:
                problems.append(f"TPE(startup_trials={startup!r}): expected an integer >= 0")
        elif self.sampler not in SAMPLERS:
            problems.append(f"sampler {self.sampler!r}: expected one of {', '.join(SAMPLERS)} or TPE(...)")
        if self.sampler == "grid" and not problems:
            continuous = [name for name, d in self.space.items() if d.grid_values() is None]
            if continuous:
                problems.append(
                    f"sampler 'grid' needs Choice or IntRange dimensions; {', '.join(continuous)} "
                    f"{'is' if len(continuous) == 1 else 'are'} continuous"
                )
        if isinstance(self.pruner, str) and self.pruner not in PRUNERS:
            problems.append(f"pruner {self.pruner!r}: expected None or one of {', '.join(PRUNERS)}")
        elif self.pruner is not None and not isinstance(self.pruner, (str, ASHA, Median)):
            problems.append(f"pruner {self.pruner!r}: expected None, a name, or ASHA/Hyperband/Median(...)")
        elif self.pruner_spec is not None:
            problems += [f"pruner {self.pruner_name}: {p}" for p in self.pruner_spec.problems(n_epochs)]
        if self.mode not in ("min", "max"):
            problems.append(f"mode {self.mode!r}: expected 'max' or 'min'")
        if not isinstance(self.metric, str) or not self.metric:
            problems.append(f"metric {self.metric!r}: expected a metric name such as 'val_acc'")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            problems.append(f"seed {self.seed!r}: expected an integer >= 0")
        if self.trials is not None and (
            not isinstance(self.trials, int) or isinstance(self.trials, bool) or self.trials < 1
        ):
            problems.append(f"trials {self.trials!r}: expected an integer >= 1")
        return problems

    @property
    def pruner_name(self) -> str | None:
        spec = self.pruner_spec
        return None if spec is None else type(spec).__name__.lower()

    def grid_size(self) -> int | None:
        if self.sampler != "grid":
            return None
        size = 1
        for dimension in self.space.values():
            size *= len(dimension.grid_values())
        return size

    def budget(self) -> int:
        """The number of trials to run."""
        size = self.grid_size()
        if self.trials is None:
            return size if size is not None else 20
        return min(self.trials, size) if size is not None else self.trials

    def decision_epochs(self, n_epochs: int) -> list[int]:
        """The epochs (counted from 1) after which a trial's pruner decides; the last is n_epochs."""
        spec = self.pruner_spec
        return [n_epochs] if spec is None else spec.decision_epochs(n_epochs)

    def describe(self, n_epochs: int) -> dict:
        """What the study records: everything that must not change once trials exist (`trials` may)."""
        spec = self.pruner_spec
        return {
            "space": describe_space(self.space),
            "sampler": self.sampler_name,
            "sampler_settings": dataclasses.asdict(self.sampler) if isinstance(self.sampler, TPE) else {},
            "pruner": None if spec is None else {"type": self.pruner_name, **dataclasses.asdict(spec)},
            "metric": self.metric,
            "mode": self.mode,
            "seed": self.seed,
            "n_epochs": n_epochs,
        }

    # --- Optuna objects ------------------------------------------------------------------------------------

    def build_sampler(self, trial_number: int) -> optuna.samplers.BaseSampler:
        """The sampler that draws trial `trial_number`, seeded from (seed, trial number) only.

        A sampler made anew for every trial draws the same values whether or not the driver was restarted in
        between: a sampler kept across trials would continue a random stream that a restart starts again.
        """
        seed = trial_seed(self.seed, trial_number)
        if self.sampler == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        if self.sampler == "grid":
            # The grid's order is one shuffle by the seed, and trial n takes point n: the same seed for every
            # trial (a seed per trial would shuffle each trial's grid differently and repeat points).
            space = {name: dimension.grid_values() for name, dimension in self.space.items()}
            return optuna.samplers.GridSampler(space, seed=self.seed)
        startup = self.sampler.startup_trials if isinstance(self.sampler, TPE) else TPE().startup_trials
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)

    @property
    def sampler_name(self) -> str:
        return "tpe" if isinstance(self.sampler, TPE) else self.sampler

    def build_pruner(self, n_epochs: int) -> optuna.pruners.BasePruner:
        spec = self.pruner_spec
        return optuna.pruners.NopPruner() if spec is None else spec.build(n_epochs)

    @property
    def direction(self) -> str:
        return "maximize" if self.mode == "max" else "minimize"


def trial_seed(seed: int, trial_number: int) -> int:
    """A 32-bit seed for one trial's sampler: a hash, so that neighbouring seeds give unrelated streams."""
    digest = hashlib.sha256(f"ginlab-search:{seed}:{trial_number}".encode()).digest()
    return int.from_bytes(digest[:4], "little")
