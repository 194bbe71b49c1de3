"""Start `bin/train.py` commands as children of a warm process (server.py) instead of fresh interpreters.

    starter = WarmStarter()
    process = starter.spawn([python, "bin/train.py", SAVE_DIR, CONFIG, "-b", ...], cwd=ROOT, env=env,
                            stdout="run.log")
    process.poll()          # None while it runs, then its exit code (-N: killed by signal N), as Popen
    process.send_signal(signal.SIGTERM)
    starter.close()

Guarantees (tests/test_workers.py): a run started this way writes the same run folder as the same command
started fresh (bitwise: weights, optimizer, history, summary), whatever ran before it; it has its own pid and
session, gets the signals sent to it, and its exit code is the one bin/train.py returns. When ginlab's own
code changes on disk after the warm process imported it, the next run gets a new warm process (said once), so
a run never uses code other than what its folder's git state records. When the warm process dies, its runs
get SIGTERM from the kernel (they checkpoint and exit 3) and the next spawn starts a new one.

This module imports neither torch nor Lightning: the processes that start runs stay light.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from ginlab.processes import process_alive

log = logging.getLogger(__name__)

READY_TIMEOUT = 300.0  # importing torch and Lightning on a loaded 2-core machine can take a minute
SRC = str(Path(__file__).resolve().parents[2])  # the folder holding this ginlab package


class WarmStartError(RuntimeError):
    """The warm process could not be started (its output says why)."""


class WarmProcess:
    """A run forked by the warm process: the part of subprocess.Popen's interface the runners use."""

    def __init__(self, starter: WarmStarter, pid: int, server: subprocess.Popen):
        self.starter = starter
        self.pid = pid
        self.server = server  # the warm process that forked it: its death ends the run
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self.starter._exit_status(self)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"warm run {self.pid}", timeout)
            time.sleep(0.02)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class WarmStarter:
    """One warm process (started on the first spawn) and the runs it forked.

    Args:
        python: the interpreter of the warm process (the runs' interpreter).
        env: the warm process's environment (each run gets its own on spawn); default: this process's.
    """

    def __init__(self, python: str | None = None, env: dict | None = None):
        self.python = python or sys.executable
        self.env = dict(os.environ if env is None else env)
        self.server: subprocess.Popen | None = None
        self._ids = itertools.count()
        self._lock = threading.Condition()
        self._replies: dict[int, dict] = {}
        self._exits: dict[tuple[int, int], int] = {}  # (server pid, run pid) -> exit code
        self._ended: set[int] = set()  # warm processes whose output has ended
        self.restarts = 0
        self.broken = False  # could not start: callers use fresh processes

    # --- the warm process --------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the warm process now and wait until it has imported everything (else on the first spawn)."""
        if self.server is not None and self.server.poll() is None and self.server.pid not in self._ended:
            return
        env = dict(self.env)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (SRC, env.get("PYTHONPATH")) if p)
        server = subprocess.Popen(
            [self.python, "-m", "ginlab.workers.server"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
            start_new_session=True,
            preexec_fn=_terminate_with_parent(os.getpid()),  # noqa: PLW1509 (started from one thread)
        )
        first = server.stdout.readline()
        if not first.startswith('{"ready"'):
            server.kill()
            output = first + server.stderr.read()
            raise WarmStartError(f"the warm process could not start: {output.strip()[-2000:]}")
        threading.Thread(target=self._read, args=(server,), daemon=True, name="warm-replies").start()
        threading.Thread(target=_drain, args=(server.stderr,), daemon=True, name="warm-stderr").start()
        self.server = server

    def close(self) -> None:
        """End the warm process (runs still going get SIGTERM from the kernel: they checkpoint and stop)."""
        server, self.server = self.server, None
        if server is None:
            return
        with contextlib.suppress(OSError):
            server.stdin.close()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()

    def __enter__(self) -> WarmStarter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- runs ----------------------------------------------------------------------------------------------

    def spawn(self, argv: list[str], cwd, env: dict, stdout, stderr=None) -> WarmProcess:
        """Fork `argv` (a bin/train.py command: [python, script, args...]) with this working directory and
        environment, its output appended to the file `stdout` (and `stderr`, default: the same file)."""
        request = {
            "argv": [str(a) for a in argv],
            "cwd": str(cwd),
            "env": {str(k): str(v) for k, v in env.items()},
            "stdout": str(stdout),
            "stderr": None if stderr is None else str(stderr),
        }
        for _ in range(3):
            self.start()
            server = self.server
            reply = self._ask(server, request)
            if "pid" in reply:
                return WarmProcess(self, reply["pid"], server)
            if "stale" in reply:
                files = ", ".join(sorted(os.path.relpath(f, SRC) for f in reply["stale"])[:5])
                log.warning(
                    "ginlab's code changed since the warm process imported it (%s): starting a new one", files
                )
            self.restarts += 1
            self.close()
        raise WarmStartError(f"the warm process did not start {argv}: {reply}")

    def _ask(self, server: subprocess.Popen, request: dict) -> dict:
        request_id = next(self._ids)
        with self._lock:
            try:
                server.stdin.write(json.dumps({**request, "id": request_id}) + "\n")
                server.stdin.flush()
            except (BrokenPipeError, OSError):
                return {"dead": True}
            while request_id not in self._replies:
                if server.pid in self._ended:
                    return {"dead": True}
                self._lock.wait(timeout=1.0)
            return self._replies.pop(request_id)

    def _read(self, server: subprocess.Popen) -> None:
        for line in server.stdout:
            message = json.loads(line)
            with self._lock:
                if "id" in message:
                    self._replies[message["id"]] = message
                else:
                    self._exits[server.pid, message["pid"]] = message["status"]
                self._lock.notify_all()
        with self._lock:
            self._ended.add(server.pid)
            self._lock.notify_all()
        server.wait()

    def _exit_status(self, process: WarmProcess) -> int | None:
        with self._lock:
            code = self._exits.pop((process.server.pid, process.pid), None)
            if code is not None or process.server.pid not in self._ended:
                return code
        # Its warm process is gone, so no one reports how it ended: the kernel sent it SIGTERM (it
        # checkpoints and exits 3); its run folder says the rest once it is gone.
        return None if process_alive(process.pid) else -signal.SIGTERM


def start_command(command: list[str], cwd, env: dict, log_path, starter: WarmStarter | None):
    """Start a bin/train.py `command` with its output appended to `log_path`: forked by `starter` when there is
    one, else (or when the warm process cannot start: said once, then fresh processes) as a fresh process in
    its own session that the kernel stops with SIGTERM when this process dies. Returns a Popen or WarmProcess.
    Call from one thread (the runner's loop)."""
    if starter is not None and not starter.broken:
        try:
            return starter.spawn(command, cwd=cwd, env=env, stdout=log_path)
        except WarmStartError as error:
            starter.broken = True
            log.warning("%s; starting every run as a fresh process instead", error)
    with open(log_path, "a") as log_file:
        return subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_terminate_with_parent(os.getpid()),  # noqa: PLW1509 (started from one thread)
        )


def child_environment(threads: int) -> dict:
    """This process's environment for a bin/train.py child that computes with `threads` torch threads."""
    threads = str(threads)
    return {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "PYTHONUNBUFFERED": "1"}


def printed_error(log_path, offset: int, limit: int = 6) -> str | None:
    """What bin/train.py printed after "error:" in its output appended to `log_path` from `offset` on (a
    refusal writes nothing else): the message and up to `limit` - 1 lines after it."""
    try:
        with open(log_path, errors="replace") as f:
            f.seek(offset)
            lines = f.read().splitlines()
    except OSError:
        return None
    for i, line in enumerate(lines):
        if line.startswith("error: "):
            return "\n    ".join([line[len("error: ") :], *lines[i + 1 : i + limit]]).rstrip()
    return None


def _drain(stream) -> None:
    for line in stream:
        sys.stderr.write(f"[warm process] {line}")


def _terminate_with_parent(parent_pid: int):
    """A preexec_fn asking the kernel to send the child SIGTERM when its parent dies (Linux)."""

    def preexec():
        try:
            import ctypes

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            return
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec if sys.platform.startswith("linux") else None
