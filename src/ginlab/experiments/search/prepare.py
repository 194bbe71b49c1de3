"""Preparing a search: check it against gin and the study it would continue; write search/search.json.

Everything is checked before anything is written, and all problems are reported at once: the space (empty,
inverted or non-positive log ranges), the sampler and pruner, every parameter as a gin binding (as
bin/train.py
would parse it, at both ends of its range), the metric (logged after every epoch when a pruner needs it),
and, when the search already has trials, that the search is still the one its study was made for.
`prepare` writes only search.json: the study file and the trials' configs are written by `run`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from datetime import UTC, datetime

from ginlab.experiments.experiment import Experiment, ExperimentError
from ginlab.experiments.search.space import all_corners
from ginlab.experiments.search.spec import Search
from ginlab.experiments.search.study import SearchStudy
from ginlab.experiments.search.trials import SearchPaths
from ginlab.runfolder.atomic import atomic_write_json

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Prepared:
    """What `prepare` wrote into search.json: the search's record, configs, bindings, decision epochs."""

    description: dict
    configs: list[str]
    bindings: list[str]
    decision_epochs: list[int]

    @property
    def n_epochs(self) -> int:
        return self.description["n_epochs"]


# What the built-in classifier logs: after every epoch (history.jsonl), and once at the end (summary.json).
PER_EPOCH_DEFAULT = ("val_acc", "val_loss", "train_loss")
AT_END = ("test_acc", "test_loss")


def configured_value(name: str, default):
    """The value gin binds `name` to after the last parse (its default when unbound)."""
    import gin

    try:
        return gin.query_parameter(name)
    except ValueError:
        return default


def check_search(experiment: Experiment, search: Search) -> Prepared:
    """Check the search with gin as bin/train.py would; return what `prepare` records (nothing is written).

    Raises:
        ExperimentError: naming every problem, each with its parameter and what would be valid.
    """
    from ginlab.errors import ConfigError
    from ginlab.training.configure import check_config

    missing = [c for c in experiment.configs if not (experiment.root / c).is_file()]
    if missing:
        raise ExperimentError(f"Config file not found: {', '.join(missing)} (relative to {experiment.root}).")
    configs = [str(experiment.root / c) for c in experiment.configs]
    try:
        check_config(configs, list(experiment.bindings))
    except ConfigError as error:
        raise ExperimentError(
            f"The configs and bindings of {experiment.name} are not valid:\n{error}"
        ) from None
    n_epochs = configured_value("training_loop.n_epochs", 10)
    model = configured_value("training_loop.model", None)
    problems = search.problems(n_epochs)
    if not problems:  # each parameter at its ends, as a gin binding (all bad names at once, like a grid)
        seen = set()
        for point in all_corners(search.space):
            bindings = [*experiment.bindings, *(f"{k} = {v}" for k, v in point.items())]
            try:
                check_config(configs, bindings)
            except ConfigError as error:
                text = str(error)
                if text not in seen:
                    seen.add(text)
                    problems.append("space: " + text.replace("\n", "\n    "))
    problems += _metric_problems(search, model)
    if problems:
        raise ExperimentError(
            f"The search of {experiment.name} is not valid for {', '.join(experiment.configs)}:\n"
            + "\n".join(f"- {p}" for p in problems)
        )
    return Prepared(
        description={
            **search.describe(n_epochs),
            "configs": experiment.configs,
            "bindings": experiment.bindings,
        },
        configs=list(experiment.configs),
        bindings=list(experiment.bindings),
        decision_epochs=search.decision_epochs(n_epochs),
    )


def _metric_problems(search: Search, model) -> list[str]:
    """The metric must be logged; a pruner needs it after every epoch. Known for the built-in classifier
    (any registered nn.Module); a LightningModule's own metrics are checked after its first segment."""
    from ginlab.training.build import epoch_metrics

    per_epoch = epoch_metrics(model) if isinstance(model, str) else PER_EPOCH_DEFAULT
    if per_epoch is None:
        return []  # its own metrics: the driver checks the first trial's history
    if search.metric in per_epoch:
        return []
    if search.metric in AT_END:
        if search.pruner_spec is None:
            return []
        return [
            f"pruner {search.pruner_name} needs a metric logged after every epoch, and {search.metric!r} is "
            f"measured once, at the end (summary.json). Use one of {', '.join(per_epoch)} (history.jsonl), "
            "or pruner=None"
        ]
    return [
        f"metric {search.metric!r} is never logged by model {model!r}: after every epoch it logs "
        f"{', '.join(per_epoch)}, at the end {', '.join(AT_END)}. Set Search(metric=...) to one of those"
    ]


def prepare_search(experiment: Experiment, search: Search) -> Prepared:
    """Check the search (check_search) and the study it would continue; write search/search.json.

    Raises:
        ExperimentError: the search is invalid, or differs from the one its existing trials were made for
            (the differences listed); nothing is written.
    """
    prepared = check_search(experiment, search)
    paths = SearchPaths(experiment.paths.base)
    if paths.study.is_file():
        study = SearchStudy(paths.study, experiment.name, search.direction)
        study.check_search(prepared.description)
    paths.folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(
        paths.spec,
        {
            "name": experiment.name,
            "prepared": datetime.now(UTC).isoformat(timespec="seconds"),
            "root": str(experiment.root),
            "search": prepared.description,
            "configs": prepared.configs,
            "bindings": prepared.bindings,
            "decision_epochs": prepared.decision_epochs,
            "trials": search.budget(),
        },
    )
    log.info("prepared the search of %s in %s", experiment.name, paths.folder)
    return prepared


def load_prepared_search(experiment: Experiment, search: Search) -> Prepared:
    """What the last `prepare` recorded, checked against main.py's search.

    Raises:
        ExperimentError: not prepared, or main.py's search, configs or bindings changed since.
    """
    paths = SearchPaths(experiment.paths.base)
    if not paths.spec.is_file():
        raise ExperimentError(
            f"The search of {experiment.name} is not prepared ({paths.spec} does not exist): run `prepare` "
            f"first."
        )
    data = json.loads(paths.spec.read_text())
    prepared = Prepared(data["search"], data["configs"], data["bindings"], data["decision_epochs"])
    wanted = {
        **search.describe(prepared.n_epochs),
        "configs": experiment.configs,
        "bindings": experiment.bindings,
    }
    if wanted != prepared.description:
        from ginlab.experiments.search.study import differences

        changes = differences(prepared.description, wanted, old="prepared")
        raise ExperimentError(
            "main.py's search changed since `prepare`:\n"
            + "\n".join(f"  {line}" for line in changes)
            + "\nRun `prepare` again first (it refuses a change that the search's trials cannot follow)."
        )
    return prepared
