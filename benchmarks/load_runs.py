#!/usr/bin/env python3
"""Benchmark: ginlab's run loaders against MLflow (SQLite backend) on the same generated runs.

    python benchmarks/load_runs.py                          # 2,000 runs x 100 epochs, MLflow on all 2,000
    python benchmarks/load_runs.py --runs 2000 20000        # growth to 20,000 runs (MLflow on 2,000)
    python benchmarks/load_runs.py --mlflow-runs 200        # quicker: MLflow timings extrapolated from 200

Run folders are generated per docs/run-folder.md in a temporary folder: 13 history columns (epoch, step,
time and 10 metrics), a config of 12 values, summary.json and one evaluation for finished runs; 4% of the
runs are still running (their last history line cut mid-write), 2% stale, 2% failed. The same histories,
configs and statuses are logged into MLflow with log_batch (its fastest bulk path).

Timed (median of --repeat calls, page cache warm, as in shared/notes/FACTS.md):
- load_runs(folder)                          vs mlflow.search_runs (one row per run, latest metric values)
- load_histories(folder) without a cache     vs get_metric_history for every run and metric
- load_histories(folder) with a valid cache  (same MLflow figure: it has no such cache)
- load_histories after 1% of the runs appended an epoch (the cache re-reads only those)
MLflow's get_metric_history is timed on --history-sample runs and multiplied out to all runs; when
--mlflow-runs is smaller than --runs, search_runs is timed on that many runs and scaled linearly. Both are
marked "extrapolated" in the output.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from ginlab.analysis import load_histories, load_runs
from ginlab.analysis.cache import FOLDER_NAME

METRICS = ["train_loss", "train_acc", "train_top5", "train_grad_norm", "val_loss", "val_acc", "val_top5",
           "val_f1", "val_precision", "lr"]  # fmt: skip
TARGETS_AT_2000 = {"load_runs": 0.5, "histories cold": 1.5, "histories warm": 0.2}
MLFLOW_BATCH = 1000  # MLflow's limit of metrics per log_batch call


def main() -> None:
    args = parse_arguments()
    work = Path(args.keep or tempfile.mkdtemp(prefix="ginlab-bench-"))
    print(
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} (other processes slow every timing)"
    )
    print(f"import ginlab.analysis in a fresh process: {import_seconds():.2f} s")
    results = {}
    try:
        for num_runs in args.runs:
            folder = work / f"runs-{num_runs}"
            if not folder.exists():
                started = time.perf_counter()
                generate_runs(folder, num_runs, args.epochs)
                print(
                    f"generated {num_runs} run folders x {args.epochs} epochs in "
                    f"{time.perf_counter() - started:.0f} s"
                )
            results[num_runs] = time_ginlab(folder, args.repeat)
        mlflow = None if args.no_mlflow else time_mlflow(work, args, min(args.runs))
        print_report(results, mlflow, args)
        print(f"\nload average at the end: {os.getloadavg()[0]:.1f}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def parse_arguments():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, nargs="+", default=[2000], help="numbers of runs (default 2000)")
    parser.add_argument("--epochs", type=int, default=100, help="history lines per run (default 100)")
    parser.add_argument("--mlflow-runs", type=int, default=2000,
                        help="runs logged into MLflow (default 2000; "
                             "fewer are extrapolated linearly)")  # fmt: skip
    parser.add_argument("--history-sample", type=int, default=20,
                        help="runs whose 10 metric histories are fetched from MLflow "
                             "(default 20)")  # fmt: skip
    parser.add_argument("--no-mlflow", action="store_true", help="time ginlab only")
    parser.add_argument("--repeat", type=int, default=3, help="calls per timing; the median is reported")
    parser.add_argument("--keep", metavar="DIR", help="generate into DIR and keep it (reused when run again)")
    return parser.parse_args()


# -- data ------------------------------------------------------------------------------------------------


def generate_runs(folder: Path, num_runs: int, epochs: int) -> None:
    """Write run folders as the training loop does (docs/run-folder.md, format version 1)."""
    rng = random.Random(0)
    now = datetime.now(UTC)
    for index in range(num_runs):
        run = folder / f"run-{index:05d}"
        run.mkdir(parents=True)
        kind = index % 50  # 46 finished, 2 running, 1 stale, 1 failed per 50
        status = (
            "running" if kind in (0, 1) else "stale" if kind == 2 else "failed" if kind == 3 else "finished"
        )
        done = epochs if status == "finished" else epochs // 2
        config = run_config(rng, index, epochs)
        history = [history_record(rng, epoch) for epoch in range(done)]
        beat = now - timedelta(seconds=900 if status == "stale" else 5)
        meta = {
            "format_version": 1, "status": "running" if status == "stale" else status,
            "started": (beat - timedelta(hours=1)).isoformat(timespec="seconds"),
            "ended": None if status in ("running", "stale") else beat.isoformat(timespec="seconds"),
            "heartbeat": beat.isoformat(timespec="seconds"), "host": f"node{index % 16}", "pid": 1000 + index,
            "command": ["bin/train.py", str(run), "configs/cnn.gin"], "cwd": "/home/me/ginlab",
            "versions": {"python": "3.11.7", "ginlab": "0.1.0"},
            "git": {"commit": "3f2c", "branch": "main", "dirty": False, "diff": None},
            "error": {"type": "FloatingPointError", "message": "loss is nan", "traceback": "..."}
            if status == "failed" else None,
            "exit_code": None, "reloads": [],
        }  # fmt: skip
        (run / "meta.json").write_text(json.dumps(meta, indent=2))
        (run / "config.json").write_text(json.dumps(config, indent=2))
        (run / "config.gin").write_text("".join(f"{key} = {value!r}\n" for key, value in config.items()))
        text = "".join(json.dumps(record) + "\n" for record in history)
        if status == "running":
            text += json.dumps(history_record(rng, done))[:40]  # a line cut mid-write
        (run / "history.jsonl").write_text(text)
        if status == "finished":
            best = max(history, key=lambda record: record["val_acc"])
            summary = {
                "status": "finished", "epochs": done, "steps": history[-1]["step"],
                "time": history[-1]["time"], "monitor": {"metric": "val_acc", "mode": "max"},
                "final": {key: history[-1][key]
                          for key in ("epoch", "step", "train_loss", "val_loss", "val_acc")},
                "best": {"epoch": best["epoch"], "step": best["step"], "val_acc": best["val_acc"],
                         "checkpoint": "checkpoints/best.ckpt"},
                "test": {"test_loss": rng.random(), "test_acc": rng.random(),
                         "checkpoint": "checkpoints/best.ckpt"},
            }  # fmt: skip
            (run / "summary.json").write_text(json.dumps(summary, indent=2))
            (run / "evaluations").mkdir()
            evaluation = {
                "checkpoint": "best",
                "split": "test",
                "metrics": {"test_acc": rng.random()},
                "time": "...",
            }
            (run / "evaluations" / "best-test.json").write_text(json.dumps(evaluation))


def run_config(rng: random.Random, index: int, epochs: int) -> dict:
    return {
        "training_loop.n_epochs": epochs, "training_loop.seed": index, "training_loop.batch_size": 64,
        "history.every_n_steps": 50, "Adam.lr": rng.choice([1e-4, 3e-4, 1e-3, 3e-3]),
        "Adam.weight_decay": rng.choice([0.0, 1e-4]), "CNN.width": rng.choice([32, 64, 128]),
        "CNN.depth": rng.choice([2, 3, 4]), "CNN.dropout": 0.1, "data.name": "digits",
        "data.validation_fraction": 0.1, "training_loop.optimizer": "@Adam",
    }  # fmt: skip


def history_record(rng: random.Random, epoch: int) -> dict:
    record = {"epoch": epoch, "step": 28 * (epoch + 1), "time": round(3.2 * (epoch + 1) + rng.random(), 3)}
    record.update((name, rng.random()) for name in METRICS)
    record["lr"] = 0.001
    return record


# -- timing ----------------------------------------------------------------------------------------------


def median_seconds(function, repeat: int, before=None) -> float:
    times = []
    for _ in range(repeat):
        if before:
            before()
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def time_ginlab(folder: Path, repeat: int) -> dict:
    def drop_cache():
        shutil.rmtree(folder / FOLDER_NAME, ignore_errors=True)

    results = {
        "runs": sum(1 for _ in folder.iterdir()),
        "load_runs": median_seconds(lambda: load_runs(folder), repeat),
        "histories cold": median_seconds(lambda: load_histories(folder), repeat, before=drop_cache),
    }
    load_histories(folder)
    results["histories warm"] = median_seconds(lambda: load_histories(folder), repeat)
    changed = sorted(folder.glob("run-*"))[5::100]  # 1% of the runs, all finished ones (see generate_runs)

    def append_one_epoch():
        for run in changed:
            with open(run / "history.jsonl", "a") as f:
                f.write(json.dumps(history_record(random.Random(0), 10_000)) + "\n")

    results["histories after 1% changed"] = median_seconds(
        lambda: load_histories(folder), 1, before=append_one_epoch
    )
    results["rows"] = len(load_histories(folder))
    return results


def time_mlflow(work: Path, args, num_runs: int) -> dict:
    """Log the same runs into MLflow (SQLite) and time reading them back."""
    import warnings

    warnings.filterwarnings("ignore")
    import mlflow
    from mlflow.tracking import MlflowClient

    for name in ("mlflow", "alembic"):  # after the import, which sets up mlflow's own logging
        logging.getLogger(name).setLevel(logging.ERROR)

    logged = min(args.mlflow_runs, num_runs)
    store = work / f"mlflow-{num_runs}-{logged}"
    uri = f"sqlite:///{store}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    reuse = (store / "complete").exists()  # kept from an earlier call with --keep
    if not reuse:
        shutil.rmtree(store, ignore_errors=True)
        store.mkdir()
    client = MlflowClient(tracking_uri=uri)
    if reuse:
        experiment = client.get_experiment_by_name("bench").experiment_id
        run_ids = sorted(run.info.run_id for run in client.search_runs([experiment], max_results=50_000))
        print(f"reusing the {len(run_ids)} runs logged into MLflow in {store}")
    else:
        experiment = client.create_experiment("bench", artifact_location=(store / "artifacts").as_uri())
        started = time.perf_counter()
        run_ids = log_into_mlflow(
            client, experiment, sorted((work / f"runs-{num_runs}").glob("run-*"))[:logged]
        )
        print(
            f"logged {logged} runs into MLflow {mlflow.__version__} (SQLite) in "
            f"{time.perf_counter() - started:.0f} s"
        )
        (store / "complete").touch()

    search = median_seconds(lambda: mlflow.search_runs([experiment], max_results=100_000), args.repeat)
    sample = run_ids[:: max(1, len(run_ids) // args.history_sample)][: args.history_sample]
    started = time.perf_counter()
    for run_id in sample:
        for name in METRICS:
            client.get_metric_history(run_id, name)
    per_call = (time.perf_counter() - started) / (len(sample) * len(METRICS))
    return {
        "logged": logged,
        "search": search,
        "per_call": per_call,
        "sample": len(sample),
        "source": num_runs,
    }


def log_into_mlflow(client, experiment: str, runs: list[Path]) -> list[str]:
    """Each run's config as params, status as a tag, history as metrics (step = epoch), with log_batch."""
    from mlflow.entities import Metric, Param, RunTag

    run_ids = []
    for run in runs:
        meta = json.loads((run / "meta.json").read_text())
        config = json.loads((run / "config.json").read_text())
        history = [json.loads(line) for line in (run / "history.jsonl").read_text().split("\n")[:-1]]
        start_ms = int(datetime.fromisoformat(meta["started"]).timestamp() * 1000)
        run_id = client.create_run(experiment, start_time=start_ms, run_name=run.name).info.run_id
        params = [Param(key, str(value)) for key, value in config.items()]
        client.log_batch(run_id, params=params, tags=[RunTag("status", meta["status"])])
        metrics = [Metric(name, record[name], start_ms + int(record["time"] * 1000), record["epoch"])
                   for record in history for name in METRICS]  # fmt: skip
        for first in range(0, len(metrics), MLFLOW_BATCH):
            client.log_batch(run_id, metrics=metrics[first : first + MLFLOW_BATCH])
        if meta["status"] != "running":
            client.set_terminated(run_id, "FINISHED" if meta["status"] == "finished" else "FAILED")
        run_ids.append(run_id)
    return run_ids


# -- report ----------------------------------------------------------------------------------------------


def print_report(results: dict, mlflow: dict | None, args) -> None:
    print()
    for num_runs, result in results.items():
        scale = num_runs / 2000
        print(
            f"ginlab, {num_runs} runs x {args.epochs} epochs ({result['rows']} history rows), "
            f"median of {args.repeat}:"
        )
        for name in ("load_runs", "histories cold", "histories warm", "histories after 1% changed"):
            seconds = result[name]
            line = f"  {name:28s} {seconds:7.3f} s  ({seconds / num_runs * 1e6:5.0f} us per run)"
            if name in TARGETS_AT_2000:
                target = TARGETS_AT_2000[name] * scale
                line += f"   target <= {target:.2f} s{' (scaled linearly)' if scale != 1 else ''}: "
                line += "met" if seconds <= target else "MISSED"
            print(line)
    if len(results) > 1:
        sizes = sorted(results)
        print(
            f"growth from {sizes[0]} to {sizes[-1]} runs (x{sizes[-1] / sizes[0]:.0f}); "
            f"linear means equal cost per run:"
        )
        for name in ("load_runs", "histories cold", "histories warm"):
            small, large = (results[size][name] / size for size in (sizes[0], sizes[-1]))
            print(f"  {name:28s} cost per run x{large / small:.2f}")
    if mlflow is None:
        return
    num_runs = mlflow["source"]
    result = results[num_runs]
    factor = num_runs / mlflow["logged"]
    search = mlflow["search"] * factor
    histories = mlflow["per_call"] * num_runs * len(METRICS)
    note = f" (timed on {mlflow['logged']} runs, scaled x{factor:.1f})" if factor != 1 else ""
    print(f"\nMLflow {num_runs} runs, SQLite backend:")
    print(f"  search_runs                  {search:7.3f} s{note}, latest metric values only")
    print(f"  get_metric_history           {mlflow['per_call'] * 1000:7.1f} ms per call "
          f"(timed on {mlflow['sample']} runs x {len(METRICS)} metrics); "
          f"x {num_runs * len(METRICS)} calls = {histories:.1f} s (extrapolated)")  # fmt: skip
    print("\nratios (MLflow time / ginlab time):")
    print(f"  load_runs      vs search_runs        {search / result['load_runs']:6.1f}x")
    print(f"  histories cold vs get_metric_history {histories / result['histories cold']:6.0f}x")
    print(f"  histories warm vs get_metric_history {histories / result['histories warm']:6.0f}x")


def import_seconds() -> float:
    code = "import time; t = time.perf_counter(); import ginlab.analysis; print(time.perf_counter() - t)"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    return float(
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
        ).stdout
    )


if __name__ == "__main__":
    main()
