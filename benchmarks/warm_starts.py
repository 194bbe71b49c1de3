#!/usr/bin/env python3
"""Benchmark: a sweep of small runs with warm starts against a fresh process per run, side by side.

    python benchmarks/warm_starts.py                   # experiments/tune_lr's 15 runs, 2 slots, both ways
    python benchmarks/warm_starts.py --epochs 2 --repeats 2

experiments/tune_lr's grid (5 learning rates x 3 seeds of configs/cnn.gin) is prepared in a temporary folder
and run by the local backend twice per repeat, in alternating order: with warm starts (runs forked from a
process that imported torch and Lightning once, the default) and with a fresh interpreter per run
(`run --fresh-processes`). For each, the makespan (the experiment's wall time) is divided by the ideal: the
sum of the runs' own training times (summary.json "time") over the slots. Target (issue 16): warm <= 2.0.
"""

import argparse
import dataclasses
import importlib.util
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from rich.console import Console  # noqa: E402

from ginlab.experiments import prepare  # noqa: E402
from ginlab.experiments.backends.local import LocalRunner, available_cores  # noqa: E402
from ginlab.experiments.progress import Progress  # noqa: E402


def tune_lr(results_dir: str, epochs: int | None):
    """experiments/tune_lr/main.py's Experiment, with its results in `results_dir`."""
    spec = importlib.util.spec_from_file_location(
        "tune_lr_main", ROOT / "experiments" / "tune_lr" / "main.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    bindings = module.experiment.bindings + ([f"training_loop.n_epochs = {epochs}"] if epochs else [])
    return dataclasses.replace(module.experiment, results_dir=results_dir, bindings=bindings)


def sweep(warm: bool, slots: int, epochs: int | None) -> dict:
    with tempfile.TemporaryDirectory(prefix="ginlab-bench-") as folder:
        experiment = tune_lr(folder, epochs)
        runs = prepare(experiment, check=False)
        paths = experiment.paths
        runner = LocalRunner(
            ROOT,
            paths.logs,
            paths.claims,
            slots=slots,
            progress=Progress("bench", Console(quiet=True)),
            warm=warm,
        )
        started = time.monotonic()
        outcomes = runner.run(runs)
        wall = time.monotonic() - started
        failed = [
            f"{o.run.name}: {o.status} ({o.message}; log {o.log})" for o in outcomes if o.status != "finished"
        ]
        if failed:
            sys.exit("runs did not finish:\n" + "\n".join(failed))
        training = [json.loads((run.save_dir / "summary.json").read_text())["time"] for run in runs]
    ideal = sum(training) / slots
    return {"runs": len(runs), "wall": wall, "ideal": ideal, "ratio": wall / ideal}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=None, help="default: configs/cnn.gin's")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()

    results = {True: [], False: []}
    for repeat in range(args.repeats):
        for warm in (True, False) if repeat % 2 == 0 else (False, True):
            result = sweep(warm, args.slots, args.epochs)
            results[warm].append(result)
            name = "warm starts" if warm else "fresh processes"
            print(
                f"  {name:16} wall {result['wall']:6.1f} s  ideal {result['ideal']:5.1f} s  "
                f"ratio {result['ratio']:.2f}",
                flush=True,
            )
    print(
        f"experiments/tune_lr ({results[True][0]['runs']} runs), {args.slots} slots on {available_cores()} cores:"
    )
    for warm, name in ((True, "warm starts"), (False, "fresh processes")):
        ratios = [r["ratio"] for r in results[warm]]
        walls = [r["wall"] for r in results[warm]]
        print(
            f"  {name:16} makespan / ideal: median {statistics.median(ratios):.2f} "
            f"(wall median {statistics.median(walls):.1f} s)" + ("  target <= 2.0" if warm else "")
        )
    fresh, warm_wall = (
        statistics.median(r["wall"] for r in results[False]),
        statistics.median(r["wall"] for r in results[True]),
    )
    print(f"  warm / fresh wall time: {warm_wall / fresh:.2f}")


if __name__ == "__main__":
    main()
