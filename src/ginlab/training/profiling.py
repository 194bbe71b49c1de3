"""Lightning's profiler for a run: off by default (at less cost than Lightning's own "off"), or on by name.

Lightning wraps every hook call in `trainer.profiler.profile(name)`, about 45 times per training step. Its
default PassThroughProfiler still builds a generator-based context manager each time; NoProfiler hands back
one shared no-op context, which takes 20-30 us off every step (measured in benchmarks/train_overhead.py).

    -b 'trainer.profiler="simple"'    # per-hook wall time, written to the run folder's profile/ on exit
"""

import contextlib
from pathlib import Path

from pytorch_lightning.profilers import AdvancedProfiler, PassThroughProfiler, PyTorchProfiler, SimpleProfiler

from ginlab.config import bad_value

PROFILERS = {"simple": SimpleProfiler, "advanced": AdvancedProfiler, "pytorch": PyTorchProfiler}


class NoProfiler(PassThroughProfiler):
    _nothing = contextlib.nullcontext()  # reusable: entering it has no state

    def profile(self, action_name: str):
        return self._nothing


def build_profiler(name: str | None, run_path: Path):
    """NoProfiler for None; otherwise Lightning's profiler of that name, reporting into run_path/profile/."""
    if name is None:
        return NoProfiler()
    if name not in PROFILERS:
        raise bad_value(
            "trainer.profiler", name, f"None (off) or one of {', '.join(map(repr, sorted(PROFILERS)))}"
        )
    return PROFILERS[name](dirpath=str(Path(run_path) / "profile"), filename="profile")
