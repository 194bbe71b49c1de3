"""Resource use of a run's processes: the training process and every process it started (data-loader workers,
the other DDP processes of this node), measured from outside the training loop.

- Memory: `ProcessTree.sample()`, called every few seconds by a `Sampler` thread, adds up the resident memory
  of the processes alive at that moment and keeps the largest sum. The training process's own peak comes from
  the kernel (getrusage: exact, however briefly it lasted). `peak_rss_bytes()` is the larger of the two.
  Forked workers share pages with their parent; each process's resident memory counts them again, as SLURM's
  own per-process accounting does, so the sum errs on the safe side for a memory request.
- CPU: `cpu_seconds()` is the CPU time of the tree: this process, its children that ended (the kernel adds
  them to ours once they are waited for) and those still alive.

Cheap by construction: the tree is found through /proc/<pid>/task/<tid>/children, a few small files, instead
of scanning every process of the machine as psutil's `children()` does (that scan is the fallback where /proc
has no such files). A source that is not there gives None, never 0.
"""

from __future__ import annotations

import logging
import os
import resource
import sys
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
# getrusage's ru_maxrss is in KiB on Linux and in bytes on macOS.
_MAXRSS_UNIT = 1 if sys.platform == "darwin" else 1024


def own_peak_rss_bytes() -> int:
    """This process's peak resident memory since it started (the kernel's high-water mark, VmHWM)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * _MAXRSS_UNIT


def descendants(pid: int) -> list[int] | None:
    """Every process below `pid` (children, their children ...), or None when they cannot be listed."""
    found, todo = [], [pid]
    try:
        while todo:
            parent = todo.pop()
            for task in os.listdir(f"/proc/{parent}/task"):
                try:
                    with open(f"/proc/{parent}/task/{task}/children") as f:
                        children = [int(child) for child in f.read().split()]
                except (FileNotFoundError, ProcessLookupError):  # the thread or the process ended meanwhile
                    continue
                found += children
                todo += children
        return found
    except FileNotFoundError:
        if found or os.path.isdir(f"/proc/{pid}/task"):
            return found  # a descendant ended while it was being read
        return _descendants_psutil(pid)
    except OSError:
        return _descendants_psutil(pid)


def _descendants_psutil(pid: int) -> list[int] | None:
    try:
        import psutil

        return [child.pid for child in psutil.Process(pid).children(recursive=True)]
    except Exception:  # no psutil, no permission: the source is missing
        return None


def rss_bytes(pid: int) -> int | None:
    """The resident memory of `pid` now, or None when it cannot be read (or the process is gone)."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except (FileNotFoundError, ProcessLookupError):
        return None
    except OSError:
        try:
            import psutil

            return psutil.Process(pid).memory_info().rss
        except Exception:
            return None


def process_cpu_seconds(pid: int) -> float | None:
    """CPU seconds of a live process `pid` and of its own children that ended, or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            # The command name (field 2) may hold spaces and parentheses: split after its closing one.
            fields = f.read().rsplit(")", 1)[1].split()
        utime, stime, cutime, cstime = (int(value) for value in fields[11:15])
        return (utime + stime + cutime + cstime) / _TICKS
    except (FileNotFoundError, ProcessLookupError):
        return None
    except (OSError, IndexError, ValueError):
        try:
            import psutil

            times = psutil.Process(pid).cpu_times()
            return times.user + times.system + times.children_user + times.children_system
        except Exception:
            return None


class ProcessTree:
    """The resource use of this process and its descendants (see the module docstring).

    Args:
        exclude: pids not to count (with their descendants), e.g. a watchdog this process started.
    """

    def __init__(self, exclude: Callable[[], set[int]] = set):
        self.pid = os.getpid()
        self.exclude = exclude
        self.peak_sum = 0  # the largest sum of resident memory seen by sample()
        self.listable = descendants(self.pid) is not None

    def _others(self) -> list[int] | None:
        found = descendants(self.pid)
        if found is None:
            return None
        excluded = self.exclude()
        if excluded:
            below = set()
            for pid in excluded:
                below.add(pid)
                below.update(descendants(pid) or [])
            found = [pid for pid in found if pid not in below]
        return found

    def sample(self) -> None:
        """Add up the resident memory of the tree now; remember the largest sum."""
        others = self._others()
        if not others:  # alone: the kernel's high-water mark of this process is exact
            return
        total = rss_bytes(self.pid) or 0
        total += sum(rss_bytes(pid) or 0 for pid in others)
        self.peak_sum = max(self.peak_sum, total)

    def peak_rss_bytes(self) -> int:
        return max(own_peak_rss_bytes(), self.peak_sum)

    def cpu_seconds(self) -> float | None:
        """CPU seconds of the tree so far; None when its live descendants cannot be listed."""
        times = os.times()
        total = times.user + times.system + times.children_user + times.children_system
        others = self._others()
        if others is None:
            return None
        return total + sum(process_cpu_seconds(pid) or 0.0 for pid in others)


class Sampler:
    """Calls each function every `every_seconds` in a daemon thread until stop().

    A failing function is logged once and not called again: telemetry must never disturb training.
    """

    def __init__(self, every_seconds: float, functions: list[Callable[[], None]]):
        self.every_seconds = every_seconds
        self.functions = list(functions)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="ginlab-telemetry")

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.every_seconds):
            self.sample_now()

    def sample_now(self) -> None:
        for function in list(self.functions):
            try:
                function()
            except Exception as error:  # a source that broke: leave it out from now on
                log.warning("telemetry: %r failed (%s); it is not sampled any more", function, error)
                self.functions.remove(function)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
