#!/usr/bin/env python3
"""Benchmark: does the local backend keep the machine busy?

    python benchmarks/local_backend.py                 # 8 toy runs, one slot per core
    python benchmarks/local_backend.py --runs 12 --slots 2 --epochs 3

A grid of --runs short toy runs (configs/toy.gin, one seed each) is prepared in a temporary folder and run
with the local backend, in process. Reported: the experiment's wall time, the ideal time (the sum of the
runs' own wall times, each measured by the runner from start to exit, divided by the slots) and their
ratio. The target is a ratio within 1.15: the runner loses little time between runs and at the tail.
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from rich.console import Console  # noqa: E402

from ginlab.experiments import Experiment, prepare  # noqa: E402
from ginlab.experiments.backends.local import LocalRunner, available_cores  # noqa: E402
from ginlab.experiments.progress import Progress  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--slots", type=int, default=None, help="default: the number of cores")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--samples", type=int, default=1024, help="toy.num_samples")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="ginlab-bench-") as folder:
        experiment = Experiment(
            name="bench",
            configs=["configs/toy.gin"],
            root=str(ROOT),
            results_dir=folder,
            bindings=[f"training_loop.n_epochs = {args.epochs}", f"toy.num_samples = {args.samples}"],
            grid={"training_loop.seed": list(range(args.runs))},
        )
        runs = prepare(experiment, check=False)
        quiet = Console(quiet=True)
        paths = experiment.paths
        runner = LocalRunner(
            ROOT, paths.logs, paths.claims, slots=args.slots, progress=Progress("bench", quiet)
        )
        started = time.monotonic()
        outcomes = runner.run(runs)
        wall = time.monotonic() - started

    failed = [o.run.name for o in outcomes if o.status != "finished"]
    if failed:
        sys.exit(f"runs did not finish: {failed}")
    seconds = [o.seconds for o in outcomes]
    ideal = sum(seconds) / runner.slots
    print(
        f"{len(runs)} toy runs ({args.epochs} epochs, {args.samples} samples), {runner.slots} slots on "
        f"{available_cores()} cores, {runner.threads} torch thread(s) per run"
    )
    print(
        f"  run time: mean {statistics.mean(seconds):.2f} s, min {min(seconds):.2f} s, "
        f"max {max(seconds):.2f} s"
    )
    print(
        f"  wall time {wall:.2f} s; ideal (sum of run times / slots) {ideal:.2f} s; ratio {wall / ideal:.3f} "
        f"(target <= 1.15)"
    )


if __name__ == "__main__":
    main()
