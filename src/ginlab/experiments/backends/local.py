"""The local backend: run the prepared runs on this machine, N at a time.

Each run is a `bin/train.py ... -b training_loop.reload="auto"` child process (the command of jobs.txt:
bin/train.py decides whether it starts, continues or has nothing to do) in its own session: a Ctrl-C in the
terminal reaches only the runner, which then asks every child to stop with SIGTERM (they finish their step,
write a checkpoint and exit 3, "interrupted"). If the runner itself dies, the kernel sends its children
SIGTERM (PR_SET_PDEATHSIG), so they stop the same way. Running again continues what was interrupted and skips
what finished.

Before starting a run the runner takes its claim (backends/claims.py): a second runner on the same experiment
leaves that run alone and waits for it, instead of starting it a second time.

Every child gets OMP_NUM_THREADS = cores // slots so that parallel runs do not fight over the cores.

A child is forked from a warm process that imported torch and Lightning once (ginlab.workers): the same
command, pid, session, signals and exit code as a fresh `bin/train.py`, without its seconds of imports. With
`warm=False` (`run --fresh-processes`) every run is a fresh interpreter.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from ginlab.errors import ExitCode, RunFolderError
from ginlab.experiments.backends.claims import RunClaim
from ginlab.experiments.backends.plan import (
    BUSY,
    REFUSE,
    RELOAD,
    SKIP,
    START,
    Outcome,
    RunState,
    count,
    describe_exit,
    plan_run,
    refusal_message,
    skipped,
)
from ginlab.experiments.experiment import Run
from ginlab.experiments.progress import Progress, estimate_seconds, format_seconds
from ginlab.runfolder import format as fmt
from ginlab.runfolder import read_meta
from ginlab.workers.client import (
    WarmProcess,
    WarmStarter,
    child_environment,
    printed_error,
    start_command,
)

log = logging.getLogger(__name__)

WAIT_CHECK_SECONDS = 1.0  # how often runs held by another process are looked at again


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover (not Linux)
        return os.cpu_count() or 1


@dataclasses.dataclass
class _Active:
    run: Run
    process: subprocess.Popen | WarmProcess
    started: float
    attempt: int
    log: Path
    log_offset: int  # where this attempt's output begins in the log
    signalled: int | None = None


class LocalRunner:
    """Run prepared runs in parallel slots, retrying failures, with live progress.

    Args:
        root: the repository root (the runs' working directory).
        logs: folder for one log per run with the output of every attempt.
        claims: the experiment's claims folder (one lock per run, held while this runner runs it).
        slots: runs at a time (default: the number of cores). Runs that another process or runner has are
            waited for without taking a slot: that process computes them.
        retries: how often a failed run is started again (it continues from its checkpoint) before it is
            reported as failed.
        python: the interpreter for bin/train.py (default: this one).
        poll_seconds: how often finished children are collected.
        progress: where events and counts are shown.
        warm: fork each run from a warm process that imported torch and Lightning once (ginlab.workers)
            instead of starting a fresh interpreter per run: the same run folders, without seconds of imports
            per run. False: a fresh process per run (`run --fresh-processes`).
    """

    def __init__(
        self,
        root: Path,
        logs: Path,
        claims: Path,
        slots: int | None = None,
        retries: int = 1,
        python: str | None = None,
        poll_seconds: float = 0.1,
        progress: Progress | None = None,
        warm: bool = True,
    ):
        self.root = Path(root)
        self.logs = Path(logs)
        self.claims = Path(claims)
        self.slots = max(1, slots or available_cores())
        self.threads = max(1, available_cores() // self.slots)
        self.retries = retries
        self.python = python or sys.executable
        self.poll_seconds = poll_seconds
        self.progress = progress or Progress("run")
        self._stop_requests = 0
        self._seconds: dict[str, float] = {}
        self.warm = warm
        self.starter: WarmStarter | None = None

    @property
    def stopped(self) -> bool:
        """True when Ctrl-C or SIGTERM stopped the last `run`."""
        return self._stop_requests > 0

    def run(self, runs: list[Run]) -> list[Outcome]:
        """Run every run that is not finished; return one Outcome per run."""
        self.outcomes: dict[str, Outcome] = {}
        self.queue: collections.deque[Run] = collections.deque()
        self.waiting: dict[str, Run] = {}  # held by another process or runner
        self.active: dict[str, _Active] = {}
        self.held: dict[str, RunClaim] = {}
        self.attempts: collections.Counter = collections.Counter()
        self.durations: list[float] = []
        for run in runs:
            self._follow_plan(run, plan_run(run, self.root, self.claims))
        self.logs.mkdir(parents=True, exist_ok=True)
        previous_handlers = self._install_signal_handlers()
        next_wait_check = 0.0
        self.starter = WarmStarter(self.python) if self.warm and self.queue else None
        try:
            with self.progress:
                self._update()
                while self.queue or self.active or self.waiting:
                    if self._stop_requests:
                        self._stop()
                        self.queue.clear()
                        self.waiting.clear()
                    while self.queue and len(self.active) < self.slots and not self._stop_requests:
                        self._claim_and_start(self.queue.popleft())
                    for name, job in list(self.active.items()):
                        code = job.process.poll()
                        if code is not None:
                            del self.active[name]
                            self._collect(job, code)
                    if self.waiting and time.monotonic() >= next_wait_check:
                        next_wait_check = time.monotonic() + WAIT_CHECK_SECONDS
                        for run in list(self.waiting.values()):
                            self._look_again(run)
                    self._update()
                    time.sleep(self.poll_seconds)
        finally:
            if self.starter is not None:
                self.starter.close()
            self._restore_signal_handlers(previous_handlers)
            for claim in self.held.values():
                claim.release()
            self.held.clear()
        for run in runs:
            self.outcomes.setdefault(
                run.name, Outcome(run, "interrupted", "not started: the runner was stopped")
            )
            self.outcomes[run.name].seconds = self._seconds.get(run.name, 0.0)
        return [self.outcomes[run.name] for run in runs]

    # --- what to do with a run -----------------------------------------------------------------------------

    def _follow_plan(self, run: Run, state: RunState, first: bool = True) -> None:
        """Queue, skip, refuse or wait for `run` as its plan says."""
        if state.action == SKIP:
            self.outcomes[run.name] = skipped(run, state)
            if not first:
                self.progress.event(f"{run.name} {state.status} meanwhile, run by another process or runner")
        elif state.action == REFUSE:
            self.outcomes[run.name] = Outcome(run, "refused", "; ".join(state.reasons))
            self.progress.event(refusal_message(run, state))
        elif state.action == BUSY:
            if run.name not in self.waiting:
                self.progress.event(f"{run.name} is {state.reasons[0]}: waiting for it")
            self.waiting[run.name] = run
        elif first:
            self.queue.append(run)
        else:  # it waited already: it goes first
            self.queue.appendleft(run)

    def _look_again(self, run: Run) -> None:
        """A run another process or runner had: still busy, or what is left to do now that it let go."""
        state = plan_run(run, self.root, self.claims)
        if state.action == BUSY:
            return
        del self.waiting[run.name]
        if state.action == SKIP and state.status == fmt.FINISHED:
            self.outcomes[run.name] = Outcome(run, "finished", "finished by another process or runner")
            self.progress.event(f"{run.name} was finished by another process or runner")
            return
        self._follow_plan(run, state, first=False)

    def _claim_and_start(self, run: Run) -> None:
        claim = self.held.get(run.name) or RunClaim(self.claims, run.name)
        if not claim.acquire():
            self._follow_plan(run, plan_run(run, self.root, self.claims), first=False)
            return
        self.held[run.name] = claim
        # The folder may have changed since the plan (another runner finished the run meanwhile): look again,
        # now that no other runner can start it.
        state = plan_run(run, self.root, claims=None)
        if state.action not in (START, RELOAD):
            self._release(run)
            self._follow_plan(run, state, first=False)
            return
        self.attempts[run.name] += 1
        self.active[run.name] = self._start(run, self.attempts[run.name], state.action == RELOAD)

    def _release(self, run: Run) -> None:
        claim = self.held.pop(run.name, None)
        if claim is not None:
            claim.release()

    # --- one child -----------------------------------------------------------------------------------------

    def _start(self, run: Run, attempt: int, continues: bool) -> _Active:
        command = run.command(python=self.python)
        log_path = self.logs / f"{run.name}.log"
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        with open(log_path, "a") as log_file:
            log_file.write(
                f"==== {stamp} attempt {attempt}{' (reload)' if continues else ''}: {' '.join(command)}\n"
            )
            log_file.flush()
            offset = log_file.tell()
        process = start_command(command, self.root, child_environment(self.threads), log_path, self.starter)
        verb = "continuing" if continues else "starting"
        self.progress.event(f"{verb} {run.name}" + (f" (attempt {attempt})" if attempt > 1 else ""))
        return _Active(run, process, time.monotonic(), attempt, log_path, offset)

    def _collect(self, job: _Active, code: int) -> None:
        """Record how a child ended: an outcome, a retry, or a wait for whoever holds the run folder now."""
        run = job.run
        elapsed = time.monotonic() - job.started
        took = format_seconds(elapsed)
        self._seconds[run.name] = self._seconds.get(run.name, 0.0) + elapsed
        meta = _read_meta_or_none(run.save_dir)
        status = (meta or {}).get("status")
        if code == ExitCode.FINISHED and status != fmt.FINISHED:
            code = ExitCode.FAILED  # the run folder is the truth: exit 0 without "finished" is no success
        if code == ExitCode.FINISHED:
            self.durations.append(elapsed)
            self._finish(job, Outcome(run, "finished", f"in {took}"), f"finished {run.name} in {took}")
        elif self._stop_requests:  # exit 3 after a checkpoint; killed if it had not started training yet
            how = "checkpoint written" if code == ExitCode.INTERRUPTED else describe_exit(code, None)
            self._finish(job, Outcome(run, "interrupted", f"stopped ({how})"), f"stopped {run.name} ({how})")
        elif code == ExitCode.DIVERGED:
            reason = describe_exit(code, meta)
            self._finish(
                job,
                Outcome(run, fmt.DIVERGED, f"{reason}; not retried: it would diverge again"),
                f"DIVERGED {run.name} after {took}: not retried, it would diverge again; log: {job.log}",
            )
        elif code == ExitCode.USAGE:
            # Refused before it wrote anything. When another process writes the folder now (a runner that was
            # killed leaves its children checkpointing for a moment), that process has the run: wait for it.
            self._release(run)
            state = plan_run(run, self.root, self.claims)
            if state.action == BUSY:
                self._follow_plan(run, state, first=False)
                return
            reason = describe_exit(code, meta, printed_error(job.log, job.log_offset))
            self._finish(
                job,
                Outcome(run, "refused", reason),
                f"REFUSED {run.name}: {reason}; log: {job.log}",
            )
        elif job.attempt <= self.retries:
            reason = describe_exit(code, meta)
            self.progress.event(f"{run.name} {reason} after {took}: retrying (log: {job.log})")
            self.queue.append(run)  # keeps its claim: no other runner takes it between the attempts
        else:
            reason = describe_exit(code, meta)
            self._finish(
                job,
                Outcome(run, "failed", reason),
                f"FAILED {run.name}: {reason} after {job.attempt} attempt(s); log: {job.log}",
            )

    def _finish(self, job: _Active, outcome: Outcome, event: str) -> None:
        outcome.log, outcome.attempts = job.log, job.attempt
        self.outcomes[job.run.name] = outcome
        self._release(job.run)
        self.progress.event(event)

    def _stop(self) -> None:
        signal_to_send = signal.SIGTERM if self._stop_requests == 1 else signal.SIGKILL
        for job in self.active.values():
            if job.signalled != signal_to_send:
                with contextlib.suppress(ProcessLookupError):
                    job.process.send_signal(signal_to_send)
                job.signalled = signal_to_send

    def _update(self) -> None:
        now = time.monotonic()
        eta = estimate_seconds(
            self.durations, [now - job.started for job in self.active.values()], len(self.queue), self.slots
        )
        running = len(self.active) + len(self.waiting)
        self.progress.update(count(self.outcomes.values(), running, len(self.queue)), eta)

    # --- the runner's own signals --------------------------------------------------------------------------

    def _install_signal_handlers(self):
        def request_stop(signum, frame):
            self._stop_requests += 1
            if self._stop_requests == 1:
                self.progress.event(
                    "stopping: every running run writes a checkpoint and exits "
                    "(press Ctrl-C again to kill them instead)"
                )
            else:
                self.progress.event("killing the running runs (they reload from their last checkpoint)")

        previous = {}
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread: the caller handles signals
                previous[signum] = signal.signal(signum, request_stop)
        return previous

    @staticmethod
    def _restore_signal_handlers(previous) -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _read_meta_or_none(save_dir: Path) -> dict | None:
    try:
        return read_meta(save_dir)
    except RunFolderError:  # not written (refused before), or damaged: the exit code says what happened
        return None
