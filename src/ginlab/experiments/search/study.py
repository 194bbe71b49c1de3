"""The study of a search: Optuna's journal file in the experiment folder, written so a kill loses nothing.

The study lives in `search/study.journal` (Optuna's JournalFileBackend: one append-only file, one JSON line
per
operation, fsynced, no server). Every change the driver makes is ONE line, so a driver killed at any moment
leaves the study either before or after that change, never in between:

- a trial is created with all its parameters at once (the storage's `create_new_trial` with a template);
- a pruning decision is recorded as one system attribute of its trial, `ginlab:decision:<epoch>`, holding the
  decision and what the pruner wanted to write; only then is it applied, and applying it again is harmless;
- a trial ends with one state change (COMPLETE with its value, PRUNED with its last value, FAIL).

Sampling and pruning are pure functions of what the study holds: the sampler and the pruner run on a copy of
the study in memory (`mirror`), with a sampler seeded from (search seed, trial number). Optuna's own `ask`,
`should_prune` and `tell` on the file would write several lines for one step, and a sampler kept across trials
would draw differently after a restart; this way a restarted driver makes the same draws and decisions.

The study records the search it was made for (space, sampler, pruner, metric, seed, epochs) and the Optuna
version that wrote it; a search that differs, or another Optuna version, is refused before anything runs.
"""

from __future__ import annotations

import logging
import math
import os
from datetime import UTC, datetime
from pathlib import Path

import optuna
from optuna.storages import InMemoryStorage, JournalStorage
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock
from optuna.trial import FrozenTrial, TrialState

from ginlab.experiments.experiment import ExperimentError

log = logging.getLogger(__name__)

RECORD = "ginlab"  # the study's user attribute holding the search it was made for
DECISION = "ginlab:decision:"  # + epoch (5 digits): one trial's pruning decision after that epoch
FAILURE = "ginlab:failure"  # why a trial failed


class StudyError(ExperimentError):
    """The study file cannot be used as asked (another Optuna version, another search, damage)."""


def optuna_quiet() -> None:
    """Optuna's INFO lines ("Trial 3 finished ...") would repeat what the driver says in its own words."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def differences(recorded: dict, wanted: dict, prefix: str = "", old: str = "the study has") -> list[str]:
    """Each key whose value differs between two search records, as 'key: the study has X, main.py has Y'."""
    lines = []
    for key in sorted(set(recorded) | set(wanted), key=str):
        before, after = recorded.get(key, "(not set)"), wanted.get(key, "(not set)")
        if isinstance(before, dict) and isinstance(after, dict):
            lines += differences(before, after, f"{prefix}{key}.", old)
        elif before != after:
            lines.append(f"{prefix}{key}: {old} {before!r}, main.py has {after!r}")
    return lines


class SearchStudy:
    """The study file of one search.

    Args:
        path: the journal file (`<results>/<name>/search/study.journal`).
        name: the study's name (the experiment's).
        direction: "maximize" or "minimize".
        writer: True for the driver (it holds the search's driver lock, so it repairs a line cut by a kill and
            clears a journal lock left by a killed driver); False to read (status, report).

    Raises:
        StudyError: the file was written by another Optuna version, or Optuna cannot read it.
    """

    def __init__(self, path: str | os.PathLike, name: str, direction: str, writer: bool = False):
        self.path = Path(path)
        self.name = name
        self.direction = direction
        if writer:
            self._repair()
        backend = JournalFileBackend(str(self.path), lock_obj=JournalFileOpenLock(str(self.path)))
        try:
            self.storage = JournalStorage(backend)
            if writer:
                self.study = optuna.create_study(
                    study_name=name, storage=self.storage, direction=direction, load_if_exists=True
                )
            else:
                self.study = optuna.load_study(study_name=name, storage=self.storage)
        except (ValueError, KeyError, TypeError) as error:
            raise StudyError(
                f"The study file {self.path} cannot be read by optuna {optuna.__version__}: "
                f"{type(error).__name__}: {error}. {self._written_by()}"
            ) from None
        recorded = self.record()
        if recorded and recorded.get("optuna") != optuna.__version__:
            raise StudyError(
                f"The study file {self.path} was written by optuna {recorded.get('optuna')}, and this "
                f"environment has optuna {optuna.__version__}. A study is continued only by the version that "
                f"wrote it (its samplers and file format change between versions). Install "
                f"optuna=={recorded.get('optuna')} to continue it, or move {self.path.parent} away to start "
                f"a new search. Nothing was changed."
            )

    def _written_by(self) -> str:
        return "It may have been written by another Optuna version, or damaged."

    def _repair(self) -> None:
        """Drop a last line cut by a kill mid-write (Optuna would glue the next line to it), and remove a
        journal lock file left by a killed driver (only the driver writes, and it holds the driver lock)."""
        Path(str(self.path) + ".lock").unlink(missing_ok=True)
        if not self.path.is_file():
            return
        with open(self.path, "rb+") as f:
            data = f.read()
            if data and not data.endswith(b"\n"):
                keep = data.rfind(b"\n") + 1
                log.warning("%s: dropping a last line cut by a kill (%d bytes)", self.path, len(data) - keep)
                f.truncate(keep)
                f.flush()
                os.fsync(f.fileno())

    # --- what the study was made for -----------------------------------------------------------------------

    def record(self) -> dict | None:
        """The search this study was made for (None before `record_search`)."""
        return self.study.user_attrs.get(RECORD)

    def record_search(self, description: dict) -> None:
        """Record the search (and this Optuna version) in a new study, in one line."""
        self.study.set_user_attr(RECORD, {**description, "optuna": optuna.__version__})

    def check_search(self, description: dict) -> None:
        """Raise StudyError, listing the differences, when the study was made for another search.

        A study without trials takes the new search: nothing was computed under the old one.
        """
        recorded = self.record()
        if recorded is None:
            return
        recorded = {k: v for k, v in recorded.items() if k != "optuna"}
        changes = differences(recorded, description)
        if changes and self.trials():
            raise StudyError(
                f"The search changed since its study began ({len(self.trials())} trial(s) in {self.path}):\n"
                + "\n".join(f"  {line}" for line in changes)
                + "\nTrials made under one search cannot be continued under another. Undo the change in "
                "main.py, or move the experiment's search/ and trials/ folders away (or give the experiment "
                "another name) to start a new search. Nothing was changed."
            )

    # --- reading -------------------------------------------------------------------------------------------

    def trials(self) -> list[FrozenTrial]:
        return self.study.get_trials(deepcopy=False)

    def trial(self, number: int) -> FrozenTrial:
        return self.trials()[number]

    @staticmethod
    def decisions(trial: FrozenTrial) -> dict[int, dict]:
        """{epoch: {"prune", "attrs", "value"}} of the trial's recorded pruning decisions."""
        return {
            int(key[len(DECISION) :]): value
            for key, value in trial.system_attrs.items()
            if key.startswith(DECISION)
        }

    # --- the copy in memory that samplers and pruners run on -----------------------------------------------

    def mirror(self, sampler=None, pruner=None) -> optuna.Study:
        """A study in memory with the same name, direction and trials, for a sampler or pruner to work on."""
        storage = InMemoryStorage()
        study = optuna.create_study(
            storage=storage, study_name=self.name, direction=self.direction, sampler=sampler, pruner=pruner
        )
        study_id = storage.get_study_id_from_name(self.name)
        for trial in self.trials():
            storage.create_new_trial(study_id, template_trial=trial)
        return study

    def sample(self, sampler, distributions: dict) -> FrozenTrial:
        """Trial number len(trials)'s parameters as `sampler` draws them from what the study holds
        (in memory: nothing is written)."""
        copy = self.mirror(sampler=sampler)
        copy.ask(fixed_distributions=distributions)
        return copy.get_trials(deepcopy=True)[-1]

    def decide(self, pruner, number: int) -> tuple[bool, dict]:
        """(prune?, the system attributes the pruner wrote) for trial `number` at its last reported epoch
        (in memory: nothing is written)."""
        copy = self.mirror(pruner=pruner)
        trial = copy.get_trials(deepcopy=True)[number]
        prune = bool(pruner.prune(copy, trial))
        after = copy.get_trials(deepcopy=True)[number].system_attrs
        written = {key: value for key, value in after.items() if trial.system_attrs.get(key) != value}
        return prune, written

    # --- writing: one line per change ----------------------------------------------------------------------

    def create_trial(self, drawn: FrozenTrial) -> int:
        """Add a running trial with all the drawn parameters (and the sampler's own attributes) in one line;
        return its number."""
        template = FrozenTrial(
            number=0,  # the storage numbers it
            state=TrialState.RUNNING,
            value=None,
            datetime_start=datetime.now(UTC),
            datetime_complete=None,
            params=drawn.params,
            distributions=drawn.distributions,
            user_attrs={},
            system_attrs=drawn.system_attrs,
            intermediate_values={},
            trial_id=0,
        )
        trial_id = self.storage.create_new_trial(self.study._study_id, template_trial=template)
        return self.storage.get_trial_number_from_id(trial_id)

    def _id(self, number: int) -> int:
        return self.trials()[number]._trial_id

    def report(self, number: int, values: dict[int, float]) -> None:
        """The metric after each epoch (1-based) as the trial's intermediate values (those there: skipped)."""
        trial = self.trial(number)
        for epoch, value in sorted(values.items()):
            if trial.intermediate_values.get(epoch) != value:
                self.storage.set_trial_intermediate_value(trial._trial_id, epoch, value)

    def record_decision(self, number: int, epoch: int, prune: bool, attrs: dict, value: float) -> None:
        key = f"{DECISION}{epoch:05d}"
        self.storage.set_trial_system_attr(
            self._id(number), key, {"epoch": epoch, "prune": prune, "attrs": attrs, "value": value}
        )

    def apply_decision(self, number: int, decision: dict) -> None:
        """Write what the pruner wanted written (its rung records); again after a kill, harmlessly."""
        trial = self.trial(number)
        for key, value in decision.get("attrs", {}).items():
            if trial.system_attrs.get(key) != value:
                self.storage.set_trial_system_attr(trial._trial_id, key, value)

    def finish(self, number: int, state: TrialState, value: float | None = None, why: str = "") -> None:
        """End a running trial: COMPLETE with its value, PRUNED with its last value (as Optuna's tell does),
        FAIL with the reason."""
        trial = self.trial(number)
        if trial.state != TrialState.RUNNING:
            return
        if why:
            self.storage.set_trial_system_attr(trial._trial_id, FAILURE, why)
        ok = value is not None and math.isfinite(value) and state != TrialState.FAIL
        self.storage.set_trial_state_values(trial._trial_id, state, [value] if ok else None)
