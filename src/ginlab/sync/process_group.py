"""Run a command in a process group of its own, and never leave any of that group behind.

rsync starts the remote shell (ssh, or `--rsh`) as its child. Stopping only rsync (subprocess.run
kills just the process it started) left that child running, adopted by init: a hanging ssh stayed
forever, and held rsync's output pipe open, so that even after rsync's own --timeout the sync waited
for it. Here the command leads a new session and process group; when it is stopped (Ctrl-C, SIGTERM
turned into KeyboardInterrupt) or has ended with members of its group still running, the whole group
gets SIGTERM, then, after a short grace, SIGKILL.

A new session also means no controlling terminal: ssh cannot ask for a password or a host-key
confirmation (docs/sync.md, "Remote over ssh"). A daemon that leaves the group on purpose (ssh's
ControlPersist master calls setsid) is not touched.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

# Seconds between SIGTERM and SIGKILL: rsync removes its temporary file and exits in milliseconds.
GRACE = 2.0


def run_in_own_group(
    command: list[str], env: dict[str, str] | None = None, grace: float = GRACE
) -> subprocess.CompletedProcess:
    """Run `command` as the leader of a new process group; return it finished, with its output as text.

    When it returns or raises (KeyboardInterrupt included), nothing of the group is left (`stop_group`).

    Args:
        command: the program and its arguments.
        env: its environment (default: ours).
        grace: seconds between SIGTERM and SIGKILL when the group has to be stopped.
    """
    # Output goes to files, not pipes: a pipe stays open as long as any process holds it, and the
    # wait would end with the last of them instead of with the leader.
    with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr, env=env, start_new_session=True
        )
        try:
            process.wait()
        except BaseException:
            stop_group(process, grace)
            raise
        if group_members(process.pid):
            # The leader is done, but something it started is not (a remote shell that never connected).
            stop_group(process, grace)
        output = []
        for file in (stdout, stderr):
            file.seek(0)
            output.append(file.read().decode("utf-8", errors="replace"))
    return subprocess.CompletedProcess(command, process.returncode, *output)


def stop_group(process: subprocess.Popen, grace: float = GRACE) -> None:
    """SIGTERM the process group that `process` leads, wait up to `grace` s, SIGKILL what is left.

    Returns once the leader is reaped and no live member is left. A second Ctrl-C during the wait
    skips the rest of the grace: the SIGKILL is still sent.
    """
    group = process.pid
    try:
        _signal_group(group, signal.SIGTERM)
        deadline = time.monotonic() + grace
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=grace)
        while group_members(group) and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        if group_members(group):
            _signal_group(group, signal.SIGKILL)
        process.wait()
        # SIGKILL cannot be ignored, but a process takes a moment to die.
        deadline = time.monotonic() + 1.0
        while group_members(group) and time.monotonic() < deadline:
            time.sleep(0.01)


def group_members(group: int) -> list[int]:
    """The live processes of process group `group` (zombies, already dead, are not counted).

    From /proc where there is one; elsewhere `killpg(group, 0)` tells whether any process, zombies
    included, is left, and the answer is [group].
    """
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return []
    except PermissionError:
        pass
    proc = Path("/proc")
    if not proc.is_dir():
        return [group]
    members = []
    for stat in proc.glob("[0-9]*/stat"):
        try:
            # "pid (command) state ppid pgrp ...": the command may hold spaces and parentheses.
            state, _, process_group = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, ValueError, IndexError):
            continue
        if int(process_group) == group and state != "Z":
            members.append(int(stat.parent.name))
    return members


def _signal_group(group: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signum)
