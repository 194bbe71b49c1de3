"""The local backend: run the prepared runs on this machine, N at a time.

Each run is a `bin/train.py` child process in its own session (a Ctrl-C in the terminal reaches only the
runner, which then asks every child to stop with SIGTERM: they finish their step, write a checkpoint and exit
3, "interrupted"). If the runner itself dies, the kernel sends its children SIGTERM (PR_SET_PDEATHSIG), so
they stop the same way. Running again reloads what was interrupted and skips what finished.

Every child gets OMP_NUM_THREADS = cores // slots so that parallel runs do not fight over the cores.
"""

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

from ginlab.experiments.backends.classify import Run, effective_status, inspect_run, read_meta
from ginlab.experiments.progress import Counts, Progress, estimate_seconds, format_seconds

log = logging.getLogger(__name__)

EXIT_FINISHED, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 3


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover (not Linux)
        return os.cpu_count() or 1


@dataclasses.dataclass
class Outcome:
    """How a run ended in this invocation of `run`."""

    run: Run
    status: str  # finished | skipped | failed | interrupted | refused | busy
    message: str = ""
    log: Path | None = None
    attempts: int = 0
    seconds: float = 0.0  # wall time of this invocation's attempts


@dataclasses.dataclass
class _Active:
    run: Run
    process: subprocess.Popen
    started: float
    attempt: int
    log: Path
    signalled: int | None = None


class LocalRunner:
    """Run prepared runs in parallel slots, retrying failures, with live progress.

    Args:
        root: the repository root (the runs' working directory).
        logs: folder for one log per run with the output of every attempt.
        slots: runs at a time (default: the number of cores).
        retries: how often a failed run is reloaded before it is reported as failed.
        python: the interpreter for bin/train.py (default: this one).
        poll_seconds: how often finished children are collected.
    """

    def __init__(
        self,
        root: Path,
        logs: Path,
        slots: int | None = None,
        retries: int = 1,
        python: str | None = None,
        poll_seconds: float = 0.1,
        progress: Progress | None = None,
    ):
        self.root = Path(root)
        self.logs = Path(logs)
        self.slots = max(1, slots or available_cores())
        self.threads = max(1, available_cores() // self.slots)
        self.retries = retries
        self.python = python or sys.executable
        self.poll_seconds = poll_seconds
        self.progress = progress or Progress("run")
        self._stop_requests = 0
        self._seconds: dict[str, float] = {}

    @property
    def stopped(self) -> bool:
        """True when Ctrl-C or SIGTERM stopped the last `run`."""
        return self._stop_requests > 0

    def run(self, runs: list[Run]) -> list[Outcome]:
        """Run every run that is not finished; return one Outcome per run."""
        outcomes: dict[str, Outcome] = {}
        queue: collections.deque[Run] = collections.deque()
        busy: dict[str, Run] = {}
        for run in runs:
            state = inspect_run(run, self.root)
            if state.action == "skip":
                outcomes[run.name] = Outcome(run, "skipped", "finished before")
            elif state.action == "conflict":
                outcomes[run.name] = Outcome(run, "refused", "; ".join(state.differences))
                self.progress.event(refusal_message(run, state.differences))
            elif state.action == "busy":
                busy[run.name] = run
                self.progress.event(
                    f"{run.name} is running in another process ({describe_owner(state.meta)}): waiting for it"
                )
            else:
                queue.append(run)
        self.logs.mkdir(parents=True, exist_ok=True)
        active: dict[str, _Active] = {}
        attempts: collections.Counter = collections.Counter()
        durations: list[float] = []
        previous_handlers = self._install_signal_handlers()
        try:
            with self.progress:
                self._update(outcomes, active, busy, queue, durations)
                while queue or active or busy:
                    if self._stop_requests:
                        self._stop(active)
                        queue.clear()
                        busy.clear()
                    while queue and len(active) + len(busy) < self.slots and not self._stop_requests:
                        run = queue.popleft()
                        attempts[run.name] += 1
                        active[run.name] = self._start(run, attempts[run.name])
                    for name, job in list(active.items()):
                        code = job.process.poll()
                        if code is None:
                            continue
                        del active[name]
                        elapsed = time.monotonic() - job.started
                        retry = self._collect(job, code, elapsed, outcomes, durations)
                        if retry:
                            queue.append(job.run)
                    for name, run in list(busy.items()):
                        meta = read_meta(run.save_dir)
                        if meta is not None and effective_status(meta) == "running":
                            continue
                        del busy[name]
                        if meta is not None and meta.get("status") == "finished":
                            outcomes[name] = Outcome(run, "finished", "finished by another process")
                        else:
                            queue.appendleft(run)
                    self._update(outcomes, active, busy, queue, durations)
                    time.sleep(self.poll_seconds)
        finally:
            self._restore_signal_handlers(previous_handlers)
        for run in runs:
            outcomes.setdefault(run.name, Outcome(run, "interrupted", "not started: the runner was stopped"))
            outcomes[run.name].seconds = self._seconds.get(run.name, 0.0)
        return [outcomes[run.name] for run in runs]

    # --- one child -------------------------------------------------------------------------------------

    def _start(self, run: Run, attempt: int) -> _Active:
        reload = (run.save_dir / "meta.json").exists()
        command = run.command(python=self.python, reload=reload)
        log_path = self.logs / f"{run.name}.log"
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        with open(log_path, "a") as log_file:
            log_file.write(
                f"==== {stamp} attempt {attempt}{' (reload)' if reload else ''}: {' '.join(command)}\n"
            )
            log_file.flush()
            env = {
                **os.environ,
                "OMP_NUM_THREADS": str(self.threads),
                "MKL_NUM_THREADS": str(self.threads),
                "PYTHONUNBUFFERED": "1",
            }
            process = subprocess.Popen(
                command,
                cwd=self.root,
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                # The runner starts children from its main thread only, so preexec_fn is safe here.
                preexec_fn=_terminate_with_parent(os.getpid()),  # noqa: PLW1509
            )
        verb = "reloading" if reload else "starting"
        self.progress.event(f"{verb} {run.name}" + (f" (attempt {attempt})" if attempt > 1 else ""))
        return _Active(run, process, time.monotonic(), attempt, log_path)

    def _collect(self, job: _Active, code: int, elapsed: float, outcomes: dict, durations: list) -> bool:
        """Record how a child ended; return True to start it again (reload)."""
        run, took = job.run, format_seconds(elapsed)
        self._seconds[run.name] = self._seconds.get(run.name, 0.0) + elapsed
        meta = read_meta(run.save_dir)
        if code == EXIT_FINISHED and (meta or {}).get("status") != "finished":
            code = EXIT_FAILED  # the run folder is the truth: exit 0 without "finished" is no success
        if code == EXIT_FINISHED:
            durations.append(elapsed)
            outcomes[run.name] = Outcome(run, "finished", f"in {took}", job.log, job.attempt)
            self.progress.event(f"finished {run.name} in {took}")
            return False
        if self._stop_requests:  # exit 3 after a checkpoint; killed if it had not started training yet
            how = "checkpoint written" if code == EXIT_INTERRUPTED else f"exit {code}"
            outcomes[run.name] = Outcome(run, "interrupted", f"stopped ({how})", job.log, job.attempt)
            self.progress.event(f"stopped {run.name} ({how})")
            return False
        reason = describe_exit(code, meta)
        if code != EXIT_USAGE and job.attempt <= self.retries and not self._stop_requests:
            self.progress.event(f"{run.name} {reason} after {took}: retrying (log: {job.log})")
            return True
        outcomes[run.name] = Outcome(run, "failed", reason, job.log, job.attempt)
        self.progress.event(f"FAILED {run.name}: {reason} after {job.attempt} attempt(s); log: {job.log}")
        return False

    def _stop(self, active: dict) -> None:
        signal_to_send = signal.SIGTERM if self._stop_requests == 1 else signal.SIGKILL
        for job in active.values():
            if job.signalled != signal_to_send:
                with contextlib.suppress(ProcessLookupError):
                    job.process.send_signal(signal_to_send)
                job.signalled = signal_to_send

    def _update(self, outcomes, active, busy, queue, durations) -> None:
        done = sum(o.status in ("finished", "skipped") for o in outcomes.values())
        failed = sum(o.status == "failed" for o in outcomes.values())
        refused = sum(o.status == "refused" for o in outcomes.values())
        now = time.monotonic()
        eta = estimate_seconds(
            durations, [now - job.started for job in active.values()], len(queue), self.slots
        )
        self.progress.update(Counts(done, len(active) + len(busy), failed, len(queue), refused), eta)

    # --- the runner's own signals ------------------------------------------------------------------------

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


def _terminate_with_parent(parent_pid: int):
    """A preexec_fn asking the kernel to send the child SIGTERM when the runner dies (Linux)."""

    def preexec():
        try:
            import ctypes

            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            return
        if os.getppid() != parent_pid:  # the runner died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec if sys.platform.startswith("linux") else None


def describe_exit(code: int, meta: dict | None) -> str:
    if code < 0:
        text = f"was killed by {signal.Signals(-code).name}"
    elif code == EXIT_USAGE:
        text = "was refused by bin/train.py (exit 2: configuration or run-folder error)"
    elif code == EXIT_INTERRUPTED:
        text = "was interrupted by a signal from outside"
    else:
        text = f"failed (exit {code})"
    error = (meta or {}).get("error") or {}
    if error.get("message"):
        text += f": {error.get('type', 'Error')}: {error['message']}"
    return text


def describe_owner(meta: dict | None) -> str:
    meta = meta or {}
    return f"host {meta.get('host', '?')}, pid {meta.get('pid', '?')}, heartbeat {meta.get('heartbeat', '?')}"


def refusal_message(run: Run, differences: list[str]) -> str:
    lines = [f"REFUSED {run.name}: its run folder {run.save_dir} was made with another config:"]
    lines += [f"    {d}" for d in differences]
    lines.append("    Move that folder away (or prepare the experiment under another name) to run it again.")
    return "\n".join(lines)
