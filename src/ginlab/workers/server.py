"""The warm process: imports torch, Lightning and ginlab once, then forks one child per run.

Started by `ginlab.workers.client.WarmStarter` as `python -m ginlab.workers.server`. It never runs a run
itself: each run is a child forked from this process, so it starts with everything imported and nothing
else, and ends with its process. Isolation between runs is the kernel's (a fresh copy of a process that never
trained), not a list of globals to reset: gin's config, RNGs, torch's flags and threads, logging and signal
handlers, Lightning's and MLflow's state all begin as in a fresh `bin/train.py`.

Protocol (one JSON object per line): the client writes {"id", "argv", "cwd", "env", "stdout", "stderr"} on
stdin; the server answers {"id", "pid"} once the child exists (or {"id", "stale": [files]} when ginlab's code
changed since the import: the client starts a new server), and {"pid", "status"} when it ends (the exit code,
or -signal like subprocess). EOF on stdin ends the server; its children are told by the kernel
(PR_SET_PDEATHSIG: SIGTERM, as when a runner dies).
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import shlex
import signal
import sys

import setproctitle

# What every run needs, imported once (what a run imports beyond this, its own model or data module, the
# child imports: it is gone with the child).
PRELOAD = ("torch", "pytorch_lightning", "ginlab.training.main", "ginlab.training.loop")


def loaded_sources() -> dict[str, tuple[int, int]]:
    """{source file: (mtime_ns, size)} of every ginlab module this process imported: code a run would not get
    from a fresh process once it changes on disk."""
    sources = {}
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if path and (name == "ginlab" or name.startswith("ginlab.")):
            try:
                stat = os.stat(path)
            except OSError:
                continue
            sources[path] = (stat.st_mtime_ns, stat.st_size)
    return sources


def changed(sources: dict[str, tuple[int, int]]) -> list[str]:
    out = []
    for path, seen in sources.items():
        try:
            stat = os.stat(path)
        except OSError:
            out.append(path)
            continue
        if (stat.st_mtime_ns, stat.st_size) != seen:
            out.append(path)
    return out


def run_child(request: dict) -> None:
    """In the forked child: become `bin/train.py ARGV` started by the client, run it, exit with its code."""
    code = 1
    try:
        os.setsid()  # its own session, as the runner's children always had: a terminal's Ctrl-C is the runner's
        _die_with_parent()
        for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGCHLD, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        out = os.open(request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        err = (
            os.open(request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            if request.get("stderr")
            else out
        )
        os.dup2(out, 1)
        os.dup2(err, 2)
        os.closerange(3, 1 << 16)  # the server's pipes and whatever else it had open
        sys.stdin = open(0, closefd=False)  # noqa: SIM115 (the process's own descriptors)
        sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
        # What ps, top and /proc/PID/cmdline show: the run's command, not the warm process's.
        setproctitle.setproctitle(shlex.join(request["argv"]))
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        argv = request["argv"]  # [python, bin/train.py, SAVE_DIR, CONFIG..., -b ...]
        script = os.path.abspath(argv[1])
        sys.argv = argv[1:]  # as typed: the run records its command
        sys.path[0] = os.path.dirname(script)  # as `python SCRIPT` sets it
        for path in reversed(request["env"].get("PYTHONPATH", "").split(os.pathsep)):
            if path and path not in sys.path:
                sys.path.insert(1, path)
        threads = request["env"].get("OMP_NUM_THREADS")
        if threads:  # torch read it when the server imported it: apply this run's
            import torch

            torch.set_num_threads(int(threads))
        import runpy

        # The script itself, as `python bin/train.py ...` runs it: __main__ is the script (Lightning's DDP
        # launcher starts the other processes from it and sys.argv); its imports are already here.
        runpy.run_path(script, run_name="__main__")
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        import atexit

        atexit._run_exitfuncs()  # what a fresh process does on its way out (MLflow, logging, writers)
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        os._exit(code)


def _die_with_parent() -> None:
    """Ask the kernel to send SIGTERM when the parent dies (Linux): the run checkpoints and exits 3."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def serve() -> None:
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the client stops runs; a terminal's Ctrl-C is its
    # setproctitle finds the memory of argv and the environment on its first call, while they are as the
    # kernel laid them out (a child's title is set after it replaced its environment).
    setproctitle.setproctitle(shlex.join(sys.orig_argv))
    for name in PRELOAD:
        __import__(name)
    sources = loaded_sources()
    out = sys.stdout

    def send(message: dict) -> None:
        out.write(json.dumps(message) + "\n")
        out.flush()

    send({"ready": os.getpid(), "modules": len(sources)})
    selector = selectors.DefaultSelector()
    selector.register(sys.stdin, selectors.EVENT_READ)
    children: set[int] = set()
    buffer = ""
    while True:
        for _ in selector.select(timeout=0.05):
            chunk = os.read(sys.stdin.fileno(), 1 << 16).decode()
            if not chunk:  # the client is gone: so are we (the children get SIGTERM from the kernel)
                return
            buffer += chunk
        while "\n" in buffer:
            line, buffer = buffer.split("\n", 1)
            request = json.loads(line)
            stale = changed(sources)
            if stale:
                send({"id": request["id"], "stale": stale})
                continue
            sys.stdout.flush()
            pid = os.fork()
            if pid == 0:
                run_child(request)
            children.add(pid)
            send({"id": request["id"], "pid": pid})
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                children.clear()
                break
            if pid == 0:
                break
            children.discard(pid)
            send({"pid": pid, "status": os.waitstatus_to_exitcode(status)})


if __name__ == "__main__":
    serve()
