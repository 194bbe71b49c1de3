#!/usr/bin/env python3
"""Benchmark: the hyperparameter search on the digits CNN: exact after kills, worth its epochs, light.

    python benchmarks/search.py                      # all three, about 15-25 minutes on 2 busy cores
    python benchmarks/search.py exactness            # or: value, overhead (any of them)

- exactness: the same search (digits CNN, TPE + ASHA, one slot) run once straight and once with its driver
  SIGKILLed 3 times at random moments and started again: trials, parameters, pruning decisions, best trial
  and value, and every trial's history (bitwise, without the time column) side by side.
- value: experiments/tune_lr's grid (15 runs x 8 epochs) against experiments/search_cnn (TPE + ASHA on
  val_loss, the same budget of 15 trials): the best accuracy each reaches and the epochs each trained. The
  goal: the search within 0.005 of the grid's best configuration for at most 1/3 of the grid's epochs.
- overhead: the makespan of the uninterrupted one-slot search against the sum of its trials' segment times
  (each bin/train.py's wall time, start-up included, as the driver measured it) / slots; the goal is < 2 %.

Everything runs as researchers run it (main.py prepare / run), in a temporary results folder.
"""

import argparse
import json
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from ginlab.experiments.search.study import SearchStudy, optuna_quiet  # noqa: E402

EXACTNESS = """\
from ginlab.experiments import Experiment, main
from ginlab.experiments.search import ASHA, TPE, LogUniform, Search, Uniform

experiment = Experiment(
    name="bench_search", configs=["configs/cnn.gin"], root={root!r}, results_dir={results!r},
    bindings=["training_loop.n_epochs = 4", "checkpointer.every_n_steps = 10"],
    search=Search(space={{"torch.optim.Adam.lr": LogUniform(1e-4, 1e-2), "cnn.dropout": Uniform(0.0, 0.5)}},
                  sampler=TPE(startup_trials=3), pruner=ASHA(min_epochs=1, reduction_factor=2), trials=6,
                  metric="val_acc", mode="max", seed=1))
if __name__ == "__main__":
    main(experiment)
"""


def run_main(main: Path, *args, timeout=3600) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, str(main), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, check=False)  # fmt: skip
    if done.returncode != 0:
        sys.exit(
            f"{main} {' '.join(args)} exited {done.returncode}:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
        )
    return done


def outcome(results: Path, name: str, direction: str = "maximize") -> dict:
    optuna_quiet()
    study = SearchStudy(results / "search" / "study.journal", name, direction)
    trials = [
        (t.number, t.params, t.state.name, t.value, t.intermediate_values,
         {e: d["prune"] for e, d in SearchStudy.decisions(t).items()})
        for t in study.trials()
    ]  # fmt: skip
    histories = {}
    for run in sorted((results / "trials").glob("trial-*")):
        lines = (run / "history.jsonl").read_text().splitlines()
        histories[run.name] = [{k: v for k, v in json.loads(line).items() if k != "time"} for line in lines]
    best = study.study.best_trial
    return {"trials": trials, "histories": histories, "best": (best.number, best.value)}


def segments(results: Path) -> list[dict]:
    path = results / "search" / "segments.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def exactness(folder: Path) -> dict:
    """Run the search straight, then with 3 SIGKILLs; print both side by side; return the straight timing."""
    mains = {}
    for kind in ("straight", "killed"):
        (folder / kind).mkdir()
        mains[kind] = folder / kind / "main.py"
        mains[kind].write_text(EXACTNESS.format(root=str(ROOT), results=str(folder / kind / "results")))
        run_main(mains[kind], "prepare")
    started = time.monotonic()
    run_main(mains["straight"], "run", "--slots", "1")
    makespan = time.monotonic() - started
    moments, kills = random.Random(2026), []
    started = time.monotonic()
    for _ in range(3):
        driver = subprocess.Popen([sys.executable, str(mains["killed"]), "run", "--slots", "1"], cwd=ROOT,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        moment = moments.uniform(3, 40)
        time.sleep(moment)
        if driver.poll() is None:
            driver.send_signal(signal.SIGKILL)
            kills.append(round(moment, 1))
        driver.wait()
    run_main(mains["killed"], "run", "--slots", "1")
    killed_time = time.monotonic() - started
    a = outcome(folder / "straight" / "results", "bench_search")
    b = outcome(folder / "killed" / "results", "bench_search")
    same_histories = sum(a["histories"][k] == b["histories"].get(k) for k in a["histories"])
    print("\n== exactness: digits CNN, TPE + ASHA, 6 trials, one slot ==")
    print(f"{'':34}{'straight':>20}{'killed 3 times':>20}")
    print(f"{'SIGKILLs of the driver (s after start)':34}{'-':>20}{str(kills):>20}")
    print(f"{'wall time':34}{makespan:>19.0f}s{killed_time:>19.0f}s")
    states = lambda o: ",".join(t[2][0] for t in o["trials"])  # noqa: E731
    print(f"{'trial states (C complete, P pruned)':34}{states(a):>20}{states(b):>20}")
    best = lambda o: f"trial {o['best'][0]}, {o['best'][1]:.4f}"  # noqa: E731
    print(f"{'best trial, val_acc':34}{best(a):>20}{best(b):>20}")
    print(f"same parameters, order and decisions: {a['trials'] == b['trials']}")
    print(f"bitwise equal histories (without time): {same_histories} of {len(a['histories'])}")
    return {"makespan": makespan, "segments": segments(folder / "straight" / "results")}


def value(folder: Path) -> None:
    """tune_lr's grid against search_cnn's search, with the same number of runs / trials, 2 slots each."""
    results = {}
    for name in ("tune_lr", "search_cnn"):
        source = (ROOT / "experiments" / name / "main.py").read_text()
        main = folder / name / "main.py"
        main.parent.mkdir()
        where = f'name="{name}", results_dir={str(folder / name / "r")!r}, root={str(ROOT)!r},'
        main.write_text(source.replace(f'name="{name}",', where))
        run_main(main, "prepare")
        started = time.monotonic()
        run_main(main, "run", "--slots", "2")
        results[name] = time.monotonic() - started
    from ginlab.analysis import load_runs

    runs = load_runs(folder / "tune_lr" / "r" / "runs")
    grid_epochs = int(runs["epochs"].sum())
    by_lr = runs.groupby("Adam.lr")["final/val_acc"].agg(["mean", "std"])
    grid_best, grid_lr = by_lr["mean"].max(), by_lr["mean"].idxmax()
    search = outcome(folder / "search_cnn" / "r", "search_cnn", direction="minimize")
    search_epochs = sum(len(h) for h in search["histories"].values())
    # The search ranks by val_loss (see experiments/search_cnn/main.py): its best trial's final val_acc.
    best_trial = f"trial-{search['best'][0]:04d}"
    best = search["histories"][best_trial][-1]["val_acc"]
    top = max(h[-1]["val_acc"] for h in search["histories"].values() if len(h) == 8)
    print("\n== value: tune_lr's grid vs search_cnn (TPE + ASHA), 15 runs / trials each, 2 slots ==")
    print(f"{'':44}{'grid (tune_lr)':>18}{'search (search_cnn)':>22}")
    print(f"{'best final val_acc (search: its best trial)':44}{grid_best:>18.4f}{best:>22.4f}")
    print(f"{'  (search: best val_acc of any full trial)':44}{'':>18}{top:>22.4f}")
    detail = f"lr {grid_lr:g}; best run {runs['final/val_acc'].max():.4f}"
    print(f"{'  (grid: best mean of 3 seeds; best run)':44}{detail:>18}")
    print(f"{'epochs trained':44}{grid_epochs:>18}{search_epochs:>22}")
    print(f"{'wall time':44}{results['tune_lr']:>17.0f}s{results['search_cnn']:>21.0f}s")
    print(f"search within 0.005 of the grid's best: {best >= grid_best - 0.005} ({best - grid_best:+.4f}); "
          f"epochs {search_epochs / grid_epochs:.2f} of the grid's (goal <= 0.33)")  # fmt: skip


def overhead(timing: dict) -> None:
    seconds = [s["seconds"] for s in timing["segments"]]
    ideal = sum(seconds) / 1
    print("\n== overhead: the uninterrupted one-slot search of `exactness` ==")
    print(f"segments (bin/train.py processes): {len(seconds)}, median {statistics.median(seconds):.1f} s")
    print(f"makespan {timing['makespan']:.1f} s; sum of segment times / slots {ideal:.1f} s; driver overhead "
          f"{(timing['makespan'] / ideal - 1) * 100:.2f} % (goal < 2 %), {timing['makespan'] - ideal:.1f} s "
          "including the driver's own start (prepare excluded)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("parts", nargs="*", help="exactness, value, overhead (default: all three)")
    args = parser.parse_args()
    args.parts = args.parts or ["exactness", "value", "overhead"]
    unknown = set(args.parts) - {"exactness", "value", "overhead"}
    if unknown:
        parser.error(f"unknown part(s) {sorted(unknown)}: choose from exactness, value, overhead")
    folder = Path(tempfile.mkdtemp(prefix="ginlab-bench-search-"))
    try:
        timing = exactness(folder) if {"exactness", "overhead"} & set(args.parts) else None
        if "value" in args.parts:
            value(folder)
        if "overhead" in args.parts:
            overhead(timing)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
