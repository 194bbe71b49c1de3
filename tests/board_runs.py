"""Run folders and experiment folders for the board's tests, written per docs/run-folder.md (format 1)."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path


def iso(time: datetime) -> str:
    return time.isoformat(timespec="seconds")


def history_line(epoch: int, lr: float, seed: int) -> dict:
    """One epoch of a made-up but smooth learning curve (depends on lr and seed)."""
    progress = 1 - math.exp(-(epoch + 1) * lr * 100)
    wiggle = ((seed * 7 + epoch * 3) % 5 - 2) * 0.004 + (seed - 1) * 0.05 * (1 - progress / 2)
    return {
        "epoch": epoch,
        "step": 10 * (epoch + 1),
        "time": round(1.5 * (epoch + 1) + 0.01 * seed, 3),
        "train_loss": round(1.2 * (1 - progress) + 0.05 + wiggle, 6),
        "val_loss": round(1.3 * (1 - progress) + 0.08 + wiggle, 6),
        "val_acc": round(0.5 + 0.45 * progress + wiggle, 6),
        "lr": lr,
    }


def write_run(
    folder,
    *,
    status: str = "finished",
    n_epochs: int = 6,
    epochs: int | None = None,
    lr: float = 0.001,
    seed: int = 0,
    width: int = 32,
    heartbeat_age: float = 5.0,
    partial_line: str | None = None,
    log: str = "epoch 1/6 | train_loss 0.9\n",
    evaluations: bool = True,
) -> Path:
    """A run folder; a finished run has summary.json and one evaluation, a running one a fresh heartbeat."""
    folder = Path(folder)
    folder.mkdir(parents=True)
    if epochs is None:
        epochs = n_epochs if status == "finished" else n_epochs // 2
    now = datetime.now(UTC)
    beat = now - timedelta(seconds=heartbeat_age)
    meta = {
        "format_version": 1,
        "status": status,
        "started": iso(now - timedelta(seconds=3600)),
        "ended": None if status == "running" else iso(beat),
        "heartbeat": iso(beat),
        "host": "node3",
        "pid": 4242,
        "command": ["bin/train.py", str(folder), "configs/cnn.gin", "-b", f"Adam.lr={lr}"],
        "cwd": "/home/me/ginlab",
        "versions": {"python": "3.11.7", "torch": "2.13.0", "ginlab": "0.1.0"},
        "git": {"commit": "3f2c0aa", "branch": "main", "dirty": True, "diff": "git.diff"},
        "error": {"type": "FloatingPointError", "message": "loss is nan", "traceback": "Traceback ..."}
        if status == "failed"
        else None,
        "exit_code": None,
        "reloads": [],
    }
    config = {
        "training_loop.n_epochs": n_epochs,
        "training_loop.seed": seed,
        "Adam.lr": lr,
        "CNN.width": width,
        "CNN.channels": [16, 32],
        "data.name": "digits",
    }
    (folder / "meta.json").write_text(json.dumps(meta, indent=2))
    (folder / "config.json").write_text(json.dumps(config))
    history = [history_line(epoch, lr, seed) for epoch in range(epochs)]
    text = "".join(json.dumps(line) + "\n" for line in history)
    (folder / "history.jsonl").write_text(text + (partial_line or ""))
    (folder / "log.txt").write_text(log)
    if status == "finished":
        best = max(history, key=lambda line: line["val_acc"])
        summary = {
            "status": "finished", "epochs": epochs, "steps": history[-1]["step"], "time": history[-1]["time"],
            "monitor": {"metric": "val_acc", "mode": "max"},
            "final": {k: history[-1][k] for k in ("epoch", "step", "train_loss", "val_loss", "val_acc")},
            "best": {"epoch": best["epoch"], "step": best["step"], "val_acc": best["val_acc"],
                     "checkpoint": "checkpoints/best.ckpt"},
            "test": {"test_loss": round(1 - best["val_acc"], 6), "test_acc": round(best["val_acc"] - 0.01, 6),
                     "checkpoint": "checkpoints/best.ckpt"},
        }  # fmt: skip
        (folder / "summary.json").write_text(json.dumps(summary, indent=2))
        if evaluations:
            (folder / "evaluations").mkdir()
            record = {
                "checkpoint": "best",
                "split": "test",
                "metrics": {"test_acc": summary["test"]["test_acc"]},
            }
            (folder / "evaluations" / "best-test.json").write_text(json.dumps(record))
    return folder


def append_epoch(folder, lr: float = 0.001, seed: int = 0) -> dict:
    """Append the next epoch to a run's history.jsonl (as a running run does) and beat its heart."""
    folder = Path(folder)
    lines = [line for line in (folder / "history.jsonl").read_text().splitlines() if line.endswith("}")]
    line = history_line(len(lines), lr, seed)
    with open(folder / "history.jsonl", "a") as f:
        f.write(json.dumps(line) + "\n")
    meta = json.loads((folder / "meta.json").read_text())
    meta["heartbeat"] = iso(datetime.now(UTC))
    (folder / "meta.json").write_text(json.dumps(meta, indent=2))
    return line


def write_sweep(
    root, lrs=(0.001, 0.003, 0.01), seeds=(0, 1, 2), widths=(32,), n_epochs: int = 6
) -> list[Path]:
    """A grid of finished runs named lr=<lr>_width=<w>_seed=<s>."""
    return [
        write_run(
            Path(root) / f"lr={lr}_width={width}_seed={seed}",
            lr=lr,
            seed=seed,
            width=width,
            n_epochs=n_epochs,
        )
        for lr in lrs
        for width in widths
        for seed in seeds
    ]


def write_figure(path: Path, lrs) -> None:
    """A small learning-curve figure, as an experiment's report has."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 2.6), dpi=80)
    for lr in lrs:
        ax.plot([history_line(epoch, lr, 0)["val_acc"] for epoch in range(12)], label=f"lr={lr}")
    ax.set(xlabel="epoch", ylabel="val_acc", title="validation accuracy")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_experiment(root, name: str = "tune_lr", lrs=(0.001, 0.01), seeds=(0, 1)) -> Path:
    """An experiment folder (experiment.json, report/) whose first run finished, the others not started."""
    base = Path(root) / name
    runs = []
    for index, (lr, seed) in enumerate((lr, seed) for lr in lrs for seed in seeds):
        run_name = f"lr={lr}_seed={seed}"
        params = {"torch.optim.Adam.lr": lr, "training_loop.seed": seed}
        save_dir, config = str(base / "runs" / run_name), f"configs/{run_name}.gin"
        runs.append(
            {
                "index": index,
                "name": run_name,
                "params": params,
                "save_dir": save_dir,
                "config_files": [config],
            }
        )
    base.mkdir(parents=True)
    (base / "experiment.json").write_text(json.dumps(
        {"name": name, "prepared": iso(datetime.now(UTC)), "root": "/repo", "configs": ["configs/cnn.gin"],
         "bindings": [], "runs": runs}))  # fmt: skip
    write_run(base / "runs" / runs[0]["name"], lr=lrs[0], seed=seeds[0])
    (base / "report").mkdir()
    write_figure(base / "report" / "curves.png", lrs)
    (base / "report" / "summary.md").write_text(f"# {name}\n\nbest: lr=0.001\n")
    return base


class BoardServer:
    """A board served by uvicorn in a thread on a free loopback port (what bin/board.py runs)."""

    def __init__(
        self, root, token: str | None = None, loopback: bool = True, stale_after: float = 300.0, board=None
    ):
        """`board`: serve this one (a StartingBoard, as bin/board.py does) instead of a checked Board."""
        import threading

        import uvicorn

        from ginlab.board.data import Board
        from ginlab.board.serve import _bind
        from ginlab.board.server import build_app

        self.board = board
        if board is None:
            self.board = Board(str(root), stale_after=stale_after)
            self.board.start()
            self.board.wait_checked(60)
        sock = _bind("127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}/"
        config = uvicorn.Config(build_app(self.board, token, loopback), log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        import time

        deadline = time.monotonic() + 20
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.02)

    def get(self, path: str, headers: dict | None = None):
        """(status, JSON or text) of a GET request."""
        return request(self.url + path.lstrip("/"), headers=headers)

    def post(self, path: str, body: dict):
        return request(self.url + path.lstrip("/"), body=body)

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.board.stop()


def request(url: str, body: dict | None = None, headers: dict | None = None):
    """(status, decoded JSON or text, response headers) of an HTTP request."""
    import urllib.error
    import urllib.request

    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        url, data=data, headers={"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            status, raw, got = response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as error:
        status, raw, got = error.code, error.read(), dict(error.headers)
    text = raw.decode("utf-8", errors="replace")
    try:
        return status, json.loads(text), got
    except ValueError:
        return status, text, got
