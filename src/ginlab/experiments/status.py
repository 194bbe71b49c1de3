"""`status`: what each prepared run's folder says (the backends' own plan), with its SLURM job, counted.

Statuses come from ginlab.runfolder.run_status through backends.plan, the same rule bin/runs.py and load_runs
use: a run whose process died on this host is "stale" at once, everywhere.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ginlab.experiments.backends.plan import BUSY, REFUSE, RELOAD, SKIP, RunState, first_sentence, plan_run
from ginlab.experiments.experiment import Experiment, Run
from ginlab.runfolder import describe_owner
from ginlab.runfolder import format as fmt
from ginlab.runfolder.jsonlines import complete_part, read_bytes

# The order in which statuses are counted, and the words for some of them.
ORDER = [
    "finished", "diverged", "pruned", "to extend", "running", "starting", "queued", "interrupted", "stale",
    "failed", "refused", "damaged", "missing",
]  # fmt: skip
WORDS = {
    "missing": "left (not started)",
    "stale": "stale (died silently)",
    "to extend": "to extend (finished, more epochs prepared)",
}


@dataclasses.dataclass
class StatusRow:
    """One prepared run as `status` shows it."""

    run: Run
    status: str
    epochs: str
    job: str
    details: str
    done: bool  # nothing is left to do for it: it finished, diverged or was pruned


@dataclasses.dataclass
class ExperimentStatus:
    """Every prepared run's row, and a note when the SLURM queue could not be read."""

    rows: list[StatusRow]
    note: str = ""

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for row in self.rows:
            counts[row.status] = counts.get(row.status, 0) + 1
        return dict(sorted(counts.items(), key=lambda item: ORDER.index(item[0]) if item[0] in ORDER else 99))

    @property
    def done(self) -> bool:
        """Nothing is left to do: every run finished, diverged or was pruned."""
        return all(row.done for row in self.rows)

    def summary(self) -> str:
        """ "4 finished, 1 diverged, 2 left (not started)" (and the note, if any)."""
        text = ", ".join(f"{n} {WORDS.get(status, status)}" for status, n in self.counts().items())
        return f"{text} {self.note}".rstrip()


def experiment_status(experiment: Experiment, runs: list[Run]) -> ExperimentStatus:
    """The status of every prepared run of `experiment`, with its SLURM job when it has one."""
    jobs, labels, note = {}, {}, ""
    if (experiment.paths.slurm / "submissions.jsonl").is_file():
        from ginlab.experiments.backends.slurm import SlurmBackend, SlurmOptions
        from ginlab.experiments.backends.slurm_cli import SlurmRefused, SlurmUnavailable

        backend = SlurmBackend(experiment.name, experiment.root, experiment.paths.slurm, SlurmOptions())
        labels = backend.last_jobs()
        try:
            jobs = backend.active_jobs()
        except (SlurmUnavailable, SlurmRefused) as error:
            note = f"(SLURM queue not readable: {str(error).splitlines()[0]})"
    rows = []
    for run in runs:
        state = plan_run(run, experiment.root, experiment.paths.claims)
        status = state.shown_status
        if status == fmt.FINISHED and state.action == RELOAD:
            status = "to extend"
        job = jobs.get(run.name)
        if job is not None and job.state == "PENDING" and status not in (fmt.RUNNING, fmt.FINISHED):
            status = "queued"
        if job is not None:
            why = f" ({job.reason})" if job.reason not in ("None", "") else ""
            label = f"{job.label} {job.state}{why}"
        else:
            label = labels.get(run.name, "")
        done = state.action == SKIP
        rows.append(StatusRow(run, status, epochs_done(run.save_dir), label, details(run, state), done))
    return ExperimentStatus(rows, note)


def epochs_done(save_dir: Path) -> str:
    """The history lines a reader keeps (ginlab.runfolder.jsonlines: a cut or garbled last line is no epoch).

    Counted, not parsed: a damaged line before the last is reported when the run is reloaded or loaded.
    """
    path = save_dir / fmt.HISTORY
    if not path.is_file():
        return ""
    whole, _ = complete_part(read_bytes(path))
    return str(sum(1 for line in whole.split(b"\n") if line.strip()))


def details(run: Run, state: RunState) -> str:
    """What a person needs to know about a run that is not simply finished."""
    meta = state.meta or {}
    error = meta.get("error") or {}
    if state.action == REFUSE:
        return "; ".join(state.reasons)
    if state.action == BUSY and state.status != fmt.RUNNING:  # claimed by a runner, or a writer starting
        return state.reasons[0]
    if state.status == fmt.FAILED:
        return f"{error.get('type', '')}: {error.get('message', '')}; log: {run.save_dir / fmt.LOG}"
    if state.status in (fmt.DIVERGED, fmt.PRUNED):
        said = first_sentence(error.get("message") or "")
        return f"{said + '; ' if said else ''}not retried: `run` leaves it as it is"
    if state.status == fmt.RUNNING:
        return describe_owner(meta)
    if state.status == fmt.FINISHED and state.action == RELOAD:
        return "`run` trains it on to the prepared training_loop.n_epochs"
    if state.status in (fmt.INTERRUPTED, fmt.STALE):
        return "`run` continues it from its newest checkpoint"
    return ""
