"""Remote tracking against a real MLflow server (sqlite backend, loopback): the run folder stays the source
of truth, MLflow mirrors it, and a reload continues the same MLflow run."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from conftest import ROOT, read_json, read_jsonl, start_train, train


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    mlflow = shutil.which("mlflow", path=os.path.dirname(sys.executable)) or "mlflow"  # the venv's
    with open(folder / "server.log", "w") as log:
        # Without MLflow's job runner (seven huey consumer processes, each importing mlflow, and a folder in
        # /dev/shm that is never removed): tracking does not use it.
        environment = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        proc = subprocess.Popen(
            [
                mlflow,
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
                "--backend-store-uri",
                f"sqlite:///{folder}/mlflow.db",
                "--default-artifact-root",
                str(folder / "artifacts"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=environment,
        )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        while True:
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    os.killpg(proc.pid, signal.SIGTERM)
                    pytest.fail(
                        f"mlflow server did not start:\n{(folder / 'server.log').read_text()[-2000:]}"
                    )
                time.sleep(0.5)
        yield url
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def test_mlflow_mirrors_the_run_and_a_reload_continues_it(tmp_path, mlflow_server):
    from mlflow.tracking import MlflowClient

    folder = tmp_path / "run"
    tracking = f'mlflow.tracking_uri="{mlflow_server}"#mlflow.experiment="tests"'
    proc = start_train(
        folder,
        ROOT / "configs" / "toy.gin",
        "-b",
        tracking,
        "-b",
        "training_loop.n_epochs=100#toy.num_samples=1024#history.every_n_steps=2",
    )
    for line in proc.stdout:
        if line.startswith("epoch 2/"):
            proc.send_signal(signal.SIGTERM)
            break
    proc.communicate(timeout=120)
    assert proc.returncode == 3
    run_id = read_json(folder / "meta.json")["mlflow_run_id"]
    import torch

    reached = torch.load(folder / "checkpoints" / "last.ckpt", weights_only=True)["epoch"]
    train(folder, "-b", f"training_loop.reload=True#training_loop.n_epochs={reached + 2}", check=0)
    assert read_json(folder / "meta.json")["mlflow_run_id"] == run_id

    client = MlflowClient(mlflow_server)
    run = client.get_run(run_id)
    assert run.info.run_name == "run" and run.info.status == "FINISHED"
    assert run.data.params["training_loop.n_epochs"] == "100" and run.data.params["Adam.lr"] == "0.01"
    assert run.data.tags["run_folder"] == str(folder.resolve())
    # Every config value reaches MLflow as config.json has it, an empty list included (Lightning's own flattening
    # would drop it); what the reload changed, MLflow params being immutable, is in a tag.
    config = read_json(folder / "config.json")
    assert config["training_loop.callbacks"] == [] and run.data.params["training_loop.callbacks"] == "[]"
    assert set(run.data.params) == set(config)
    changed = json.loads(run.data.tags["ginlab.config_changes"])
    assert changed["training_loop.n_epochs"] == str(reached + 2) and changed["training_loop.reload"] == "true"
    history = read_jsonl(folder / "history.jsonl")
    mirrored = sorted(client.get_metric_history(run_id, "val_acc"), key=lambda m: m.step)
    assert [m.value for m in mirrored] == pytest.approx([row["val_acc"] for row in history])
    summary = read_json(folder / "summary.json")
    assert run.data.metrics["test_acc"] == pytest.approx(summary["test"]["test_acc"])
