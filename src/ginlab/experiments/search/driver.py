"""The search driver (`run`): draws trials, trains them segment by segment, lets the pruner decide at each
decision epoch, and survives being killed at any moment.

What each trial is doing is never kept in the driver's memory alone: it follows from the study (study.py) and
the trial's run folder, so a driver started again after a kill carries on exactly where the last one was:

    the trial in the study                    its run folder                     the driver
    RUNNING, last decision "prune"            any                                marks the folder pruned,
    ends the
                                                                                 trial PRUNED
    RUNNING, kept at the last epoch           finished                           ends the trial COMPLETE
    RUNNING, next decision at epoch e         finished with e epochs             reports the epochs, decides
    RUNNING, next decision at epoch e         missing, fewer epochs, interrupted trains it to e: bin/train.py
                                              or stale (a killed segment)        starts, continues or extends
                                              it
    RUNNING                                   written by a live process          waits for that process
    (no trial left RUNNING)                                                      draws the next trial

Trials that are running go first, lowest number first; a new trial is drawn only when a slot is free and no
running trial waits for one. With one slot this is Optuna's sequential order (each trial trains until it is
pruned or complete before the next is drawn), whether or not the driver was killed in between.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import signal
import socket
import time
from datetime import UTC, datetime

import filelock
from optuna.trial import TrialState

from ginlab.errors import ExitCode, RunFolderError
from ginlab.experiments.backends.plan import BUSY, REFUSE, describe_exit, plan_run
from ginlab.experiments.experiment import Experiment, ExperimentError
from ginlab.experiments.progress import Counts, Progress
from ginlab.experiments.search.launch import SegmentEnd, TrialLauncher
from ginlab.experiments.search.prepare import Prepared
from ginlab.experiments.search.spec import Search
from ginlab.experiments.search.study import SearchStudy, optuna_quiet
from ginlab.experiments.search.trials import (
    SearchPaths,
    TrialRun,
    metric_values,
    trial_config,
    trial_name,
    trial_run,
)
from ginlab.runfolder import RunFolder, read_history, read_meta, read_summary, run_status
from ginlab.runfolder import format as fmt
from ginlab.runfolder.atomic import atomic_write_json, atomic_write_text
from ginlab.runfolder.jsonlines import append_line

log = logging.getLogger(__name__)

WAIT_CHECK_SECONDS = 1.0  # how often trials whose run folder another process writes are looked at again
RESTARTS = 3  # segments killed or interrupted from outside are continued this often per driver, then failed


class SearchError(ExperimentError):
    """The search cannot go on as asked; the message says why and what to do."""


@dataclasses.dataclass
class DriverResult:
    """How `run` ended: the trials' states, and whether a stop request ended it."""

    counts: dict
    stopped: bool
    failed: list[str]


class SearchDriver:
    """Run a search until its budget of trials is complete, pruned or failed (see the module docstring).

    Args:
        experiment: the experiment (its root, configs and name).
        search: the search (its sampler, pruner and metric).
        prepared: what `prepare` recorded (the search's description, configs, bindings, decision epochs).
        launcher: where segments train (launch.py).
        retries: how often a segment that failed (exit 1) is started again before its trial fails.
        poll_seconds: how often the launcher is asked for ended segments.
        progress: where events and counts are shown.
    """

    def __init__(
        self,
        experiment: Experiment,
        search: Search,
        prepared: Prepared,
        launcher: TrialLauncher,
        retries: int = 1,
        poll_seconds: float = 0.1,
        progress: Progress | None = None,
    ):
        self.experiment = experiment
        self.search = search
        self.prepared = prepared
        self.paths = SearchPaths(experiment.paths.base)
        self.launcher = launcher
        self.retries = retries
        self.poll_seconds = poll_seconds
        self.progress = progress or Progress(f"{experiment.name} search")
        self.n_epochs = prepared.n_epochs
        self.budget = search.budget()
        self._stop_requests = 0

    # --- the loop ------------------------------------------------------------------------------------------

    def run(self) -> DriverResult:
        """Run the search; return how its trials stand.

        Raises:
            SearchError: another driver runs this search, or a trial cannot go on (the metric is not logged).
            StudyError: the study was made for another search or by another Optuna version.
        """
        optuna_quiet()
        self.paths.folder.mkdir(parents=True, exist_ok=True)
        lock = filelock.FileLock(self.paths.driver_lock, timeout=0)
        try:
            lock.acquire()
        except filelock.Timeout:
            raise SearchError(self._other_driver()) from None
        previous = self._install_signal_handlers()
        try:
            atomic_write_json(self.paths.driver_info, {
                "host": socket.gethostname(), "pid": os.getpid(),
                "since": datetime.now(UTC).isoformat(timespec="seconds"),
                "slots": self.launcher.slots, "launcher": self.launcher.description,
            })  # fmt: skip
            self.study = SearchStudy(
                self.paths.study, self.experiment.name, self.search.direction, writer=True
            )
            self.study.check_search(self.prepared.description)
            if self.study.record() is None:
                self.study.record_search(self.prepared.description)
            for trial in self.study.trials():  # decisions a killed driver recorded but did not apply
                for decision in self.study.decisions(trial).values():
                    self.study.apply_decision(trial.number, decision)
            with self.progress:
                try:
                    self._loop()
                except BaseException:
                    self.launcher.stop()  # the segments checkpoint and stop; `run` again continues them
                    raise
        finally:
            self.launcher.close()
            self._restore_signal_handlers(previous)
            self.paths.driver_info.unlink(missing_ok=True)
            lock.release()
        return self._result()

    def _loop(self) -> None:
        self.waiting: dict[int, TrialRun] = {}  # trials whose folder another process writes: waited for
        self.failures: dict[int, int] = {}
        self.restarts: dict[int, int] = {}
        self.seconds: dict[int, float] = {}
        self.durations: list[tuple[int, float]] = []  # (epochs trained, seconds) of each ended segment
        self.in_flight: dict[int, TrialRun] = {}
        self.said_waiting: set[int] = set()
        next_wait_check = 0.0
        while True:
            if self._stop_requests:
                self.launcher.stop(kill=self._stop_requests > 1)
                for number, run in list(self.in_flight.items()):  # left running (SLURM): not waited for
                    if run.name not in self.launcher.active():
                        del self.in_flight[number]
            for end in self.launcher.ended():
                self._segment_ended(end)
            if self.waiting and time.monotonic() >= next_wait_check:
                next_wait_check = time.monotonic() + WAIT_CHECK_SECONDS
                for number in list(self.waiting):
                    if self._stop_requests:
                        self.waiting.clear()
                        break
                    del self.waiting[number]
                    self._advance(number)
            while not self._stop_requests and len(self.in_flight) + len(self.waiting) < self.launcher.slots:
                number = self._next_running_trial()
                if number is None and len(self.study.trials()) < self.budget:
                    number = self._draw()
                if number is None:
                    break
                self._advance(number)
            self._update()
            if (
                not self.in_flight
                and not self.waiting
                and (self._stop_requests or self._next_running_trial() is None)
                and (self._stop_requests or len(self.study.trials()) >= self.budget)
            ):
                return
            time.sleep(self.poll_seconds)

    def _next_running_trial(self) -> int | None:
        busy = set(self.in_flight) | set(self.waiting)
        for trial in self.study.trials():
            if trial.state == TrialState.RUNNING and trial.number not in busy:
                return trial.number
        return None

    # --- one trial -----------------------------------------------------------------------------------------

    def _draw(self) -> int:
        """Draw the next trial's parameters (a pure function of the seed, its number and the study), record
        the trial in one line, and write its config file."""
        number = len(self.study.trials())
        distributions = {name: d.distribution() for name, d in self.search.space.items()}
        drawn = self.study.sample(self.search.build_sampler(number), distributions)
        created = self.study.create_trial(drawn)
        if created != number:  # only this driver writes the study (it holds the driver lock)
            raise SearchError(f"{self.paths.study}: trial {created} was created, {number} expected")
        self.progress.event(f"trial {number} drawn: {self._describe_params(drawn.params)}")
        return number

    def _advance(self, number: int) -> None:
        """Take trial `number` as far as it goes without training: decide, prune, complete, or start (or wait
        for) the segment that trains it to its next decision epoch."""
        while True:
            trial = self.study.trial(number)
            if trial.state != TrialState.RUNNING:
                return
            decisions = self.study.decisions(trial)
            last = max(decisions, default=0)
            if decisions and decisions[last]["prune"]:
                self._prune(number, decisions[last])
                return
            if last >= self.n_epochs:
                self._complete(number, decisions[last])
                return
            target = next(e for e in self.prepared.decision_epochs if e > last)
            run = self._run(trial, target)
            state = plan_run(run, self.experiment.root, claims=None)
            if state.action == REFUSE:
                self._fail(number, "its run folder cannot be used: " + "; ".join(state.reasons))
                return
            if state.action == BUSY:
                if number not in self.said_waiting:
                    self.said_waiting.add(number)
                    self.progress.event(f"trial {number} is {state.reasons[0]}: waiting for it")
                self.waiting[number] = run
                return
            status = run_status(state.meta) if state.meta else "missing"
            if status == fmt.FINISHED and self._epochs(run) >= target:
                self._decide(number, target)
                continue
            if status == fmt.DIVERGED:
                self._fail(number, f"its run diverged ({self._error(state.meta)})")
                return
            if status == fmt.PRUNED:
                self._fail(number, "its run folder says pruned, but the study never pruned it")
                return
            verb = "continuing" if state.meta else "starting"
            self.progress.event(f"{verb} trial {number} to epoch {target}")
            self.launcher.start(run)
            self.in_flight[number] = run
            return

    def _decide(self, number: int, epoch: int) -> None:
        """Report the trial's epochs up to `epoch`, record the pruner's decision (one line), apply it."""
        run = self._run(self.study.trial(number), epoch)
        values = metric_values(run.save_dir, self.search.metric)
        if self.search.metric.startswith("test_"):  # measured once, at the end (no pruner: prepare checked)
            test = (read_summary(run.save_dir) or {}).get("test") or {}
            values = {epoch: float(test.get(self.search.metric, math.nan))}
        elif epoch not in values:
            logged = sorted({key for row in _history(run) for key in row} - {"epoch", "step", "time"})
            raise SearchError(
                f"The search's metric {self.search.metric!r} is not in trial {number}'s history "
                f"({run.save_dir / fmt.HISTORY} logs {', '.join(logged) or 'nothing'} after each epoch). Set "
                f"Search(metric=...) in main.py to one of those, then `prepare` again: trial {number} keeps "
                f"what "
                f"it trained."
            )
        values = {e: v for e, v in values.items() if e <= epoch}
        self.study.report(number, values)
        if self.search.pruner_spec is None:
            prune, attrs = False, {}
        else:
            prune, attrs = self.study.decide(self.search.build_pruner(self.n_epochs), number)
        value = values[epoch]
        self.study.record_decision(number, epoch, prune, attrs, value)
        self.study.apply_decision(number, {"attrs": attrs})
        metric = f"{self.search.metric} {value:.4g}"
        if prune:
            self.progress.event(f"trial {number} pruned after epoch {epoch}: {metric}")
        elif epoch < self.n_epochs:
            self.progress.event(f"trial {number} promoted after epoch {epoch}: {metric}")

    def _prune(self, number: int, decision: dict) -> None:
        run = self._run(self.study.trial(number), decision["epoch"])
        folder = RunFolder(run.save_dir)
        try:
            folder.acquire()
        except RunFolderError:  # a bin/train.py holds it (a killed driver's segment finishing): wait for it
            self.waiting[number] = run
            return
        try:
            folder.mark_pruned(
                f"Pruned by the search {self.experiment.name} after epoch {decision['epoch']} "
                f"({self.search.metric} {decision['value']:.4g}, pruner {self.search.pruner_name}). Its "
                f"checkpoints and history are kept; continue it by hand with bin/train.py {run.save_dir} -b "
                f"training_loop.reload=True -b training_loop.n_epochs={self.n_epochs}"
            )
        finally:
            folder.release()
        self.study.finish(number, TrialState.PRUNED, decision["value"])

    def _complete(self, number: int, decision: dict) -> None:
        value = decision["value"]
        if not math.isfinite(value):
            self._fail(number, f"its {self.search.metric} is {value} after the last epoch")
            return
        self.study.finish(number, TrialState.COMPLETE, value)
        best = self.study.study.best_trial
        note = (
            " (best so far)" if best.number == number else f" (best: trial {best.number}, {best.value:.4g})"
        )
        self.progress.event(f"trial {number} complete: {self.search.metric} {value:.4g}{note}")

    def _fail(self, number: int, why: str) -> None:
        self.study.finish(number, TrialState.FAIL, why=why)
        self.progress.event(
            f"FAILED trial {number}: {why}; log: {self.paths.logs / (trial_name(number) + '.log')}"
        )

    def _segment_ended(self, end: SegmentEnd) -> None:
        number = end.run.index
        self.in_flight.pop(number, None)
        self.seconds[number] = self.seconds.get(number, 0.0) + end.seconds
        record = {"trial": number, "to_epoch": end.run.n_epochs, "seconds": round(end.seconds, 3),
                  "code": end.code, "time": datetime.now(UTC).isoformat(timespec="seconds")}  # fmt: skip
        append_line(self.paths.segments, json.dumps(record))
        meta = _read_meta(end.run.save_dir)
        finished = (
            meta is not None
            and meta.get("status") == fmt.FINISHED
            and self._epochs(end.run) >= (end.run.n_epochs)
        )
        if end.code == ExitCode.FINISHED and finished:
            self.durations.append((end.run.n_epochs, end.seconds))
            self._advance(number)
        elif self._stop_requests:
            return  # the trial stays RUNNING: `run` again continues it from its checkpoint
        elif end.code == ExitCode.DIVERGED:
            self._fail(number, describe_exit(end.code, meta))
        elif end.code == ExitCode.USAGE:
            state = plan_run(end.run, self.experiment.root, claims=None)
            if state.action == BUSY:
                self.waiting[number] = end.run
            else:
                self._fail(number, describe_exit(end.code, meta, end.printed))
        elif end.code == ExitCode.FAILED or end.code == ExitCode.FINISHED:
            self.failures[number] = self.failures.get(number, 0) + 1
            if self.failures[number] > self.retries:
                self._fail(number, describe_exit(ExitCode.FAILED, meta))
            else:
                self.progress.event(f"trial {number} {describe_exit(end.code, meta)}: retrying")
                self._advance(number)
        else:  # killed or interrupted from outside: it continues from its newest checkpoint
            self.restarts[number] = self.restarts.get(number, 0) + 1
            if self.restarts[number] > RESTARTS:
                self._fail(number, f"{describe_exit(end.code, meta)} {RESTARTS + 1} times")
            else:
                self.progress.event(f"trial {number} {describe_exit(end.code, meta)}: continuing it")
                self._advance(number)

    # --- helpers -------------------------------------------------------------------------------------------

    def _run(self, trial, n_epochs: int) -> TrialRun:
        """The trial's segment up to `n_epochs`; its config file is written first when missing (the same text
        every time: the values come from the study)."""
        values = {name: self.search.space[name].gin_value(value) for name, value in trial.params.items()}
        run = trial_run(self.paths, self.prepared.configs, trial.number, values, n_epochs)
        config = self.paths.configs / f"{run.name}.gin"
        text = trial_config(self.experiment.name, trial.number, self.prepared.bindings, values)
        if not config.is_file() or config.read_text() != text:
            self.paths.configs.mkdir(parents=True, exist_ok=True)
            atomic_write_text(config, text)
        return run

    @staticmethod
    def _epochs(run: TrialRun) -> int:
        summary = read_summary(run.save_dir) or {}
        epochs = summary.get("epochs")
        return epochs if isinstance(epochs, int) else 0

    @staticmethod
    def _error(meta: dict | None) -> str:
        error = (meta or {}).get("error") or {}
        return f"{error.get('type', '')}: {error.get('message', '')}".strip(": ")

    def _describe_params(self, params: dict) -> str:
        return ", ".join(f"{name.rsplit('.', 1)[-1]}={self.search.space[name].gin_value(value)}"
                         for name, value in params.items())  # fmt: skip

    def _other_driver(self) -> str:
        try:
            info = json.loads(self.paths.driver_info.read_text())
        except (OSError, ValueError):
            info = {}
        return (
            f"Another `run` drives the search {self.experiment.name} (pid {info.get('pid', '?')} on host "
            f"{info.get('host', '?')}, since {info.get('since', '?')}): one driver at a time keeps the "
            f"trials' "
            f"order and decisions. Wait for it, or stop it (Ctrl-C); `status` shows the search meanwhile."
        )

    def _result(self) -> DriverResult:
        counts: dict[str, int] = {}
        failed = []
        for trial in self.study.trials():
            counts[trial.state.name.lower()] = counts.get(trial.state.name.lower(), 0) + 1
            if trial.state == TrialState.FAIL:
                failed.append(f"trial {trial.number}: {trial.system_attrs.get('ginlab:failure', '')}")
        counts["left"] = max(self.budget - len(self.study.trials()), 0)
        return DriverResult(counts, self._stop_requests > 0, failed)

    def _update(self) -> None:
        states = [t.state for t in self.study.trials()]
        counts = Counts(
            done=states.count(TrialState.COMPLETE),
            running=len(self.in_flight) + len(self.waiting),
            failed=states.count(TrialState.FAIL),
            left=max(self.budget - len(states), 0),
            pruned=states.count(TrialState.PRUNED),
        )
        self.progress.update(counts, self._eta(counts))

    def _eta(self, counts: Counts) -> float | None:
        """Seconds to the end: the mean seconds per epoch so far, times the epochs the trials still need (the
        mean epochs of the ended trials for the ones not drawn yet), spread over the slots."""
        epochs = sum(e for e, _ in self.durations)
        if not epochs:
            return None
        per_epoch = sum(s for _, s in self.durations) / epochs
        ended = [len(t.intermediate_values) for t in self.study.trials() if t.state.is_finished()]
        mean_epochs = sum(ended) / len(ended) if ended else self.n_epochs
        running = sum(max(run.n_epochs - self._epochs(run), 0) for run in self.in_flight.values())
        return (running + counts.left * mean_epochs) * per_epoch / self.launcher.slots

    # --- the driver's own signals --------------------------------------------------------------------------

    @property
    def stopped(self) -> bool:
        return self._stop_requests > 0

    def _install_signal_handlers(self):
        def request_stop(signum, frame):
            self._stop_requests += 1
            if self._stop_requests == 1:
                self.progress.event(
                    "stopping: running segments write a checkpoint and exit; `run` again continues the "
                    "search (Ctrl-C again: kill them)"
                )

        previous = {}
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread
                previous[signum] = signal.signal(signum, request_stop)
        return previous

    @staticmethod
    def _restore_signal_handlers(previous) -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _read_meta(save_dir) -> dict | None:
    try:
        return read_meta(save_dir)
    except RunFolderError:
        return None


def _history(run: TrialRun) -> list[dict]:
    return read_history(run.save_dir)
