"""A search on the real single-node SLURM cluster (`sudo bin/slurm-dev-cluster start`): its trials are jobs
that outlive a SIGKILLed driver, and a cancelled trial is continued. Skipped without the cluster, unless
GINLAB_REQUIRE_SERVICES=1 (CI): then it fails.
"""

import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import ROOT, env, read_jsonl
from test_search import SEARCH, cli, study_of, write_search
from test_slurm import cluster_problem

from ginlab.experiments.search.status import check_records
from ginlab.experiments.search.trials import SearchPaths

pytestmark = pytest.mark.slurm


@pytest.fixture(scope="module", autouse=True)
def cluster():
    problem = cluster_problem()
    if problem:
        if os.environ.get("GINLAB_REQUIRE_SERVICES") == "1":
            pytest.fail(f"GINLAB_REQUIRE_SERVICES=1 but {problem}")
        pytest.skip(problem)


def jobs(name: str) -> list[list[str]]:
    """[job id, state] of the queued or running jobs named `name`."""
    out = subprocess.run(
        ["squeue", "-h", "-r", "-n", name, "-o", "%A|%T"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    return [line.split("|") for line in out.splitlines() if line.strip()]


def test_on_slurm_a_killed_driver_and_a_cancelled_trial_lose_and_repeat_nothing(tmp_path):
    bindings = ["training_loop.n_epochs = 2", "toy.num_samples = 1024", "checkpointer.every_n_steps = 3"]
    search = SEARCH.replace("trials=4", "trials=3")
    main = write_search(tmp_path, bindings=bindings, search=search, name="toy_search")
    assert cli(main, "prepare").returncode == 0
    run = [sys.executable, str(main), "run", "--backend", "slurm", "--slots", "2", "--poll", "1",
           "--time", "00:10:00", "--cpus", "1"]  # fmt: skip
    driver = subprocess.Popen(run, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, env=env(), cwd=ROOT)
    deadline = time.monotonic() + 240
    while not any(state == "RUNNING" for _, state in jobs("toy_search")):
        assert time.monotonic() < deadline and driver.poll() is None, "no trial job started"
        time.sleep(0.5)
    driver.send_signal(signal.SIGKILL)  # the driver dies; its jobs go on
    driver.wait()
    assert jobs("toy_search"), "the jobs ended with the driver"
    time.sleep(2)  # the job's bin/train.py is training: cancel it (SIGTERM: it checkpoints, exits 3)
    cancelled = jobs("toy_search")[0][0]
    subprocess.run(["scancel", cancelled], check=True, timeout=30)
    done = cli(main, "run", "--backend", "slurm", "--slots", "2", "--poll", "1", "--time", "00:10:00",
               "--cpus", "1", timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    study = study_of(tmp_path)
    assert [t.number for t in study.trials()] == [0, 1, 2]
    assert {t.state.name for t in study.trials()} <= {"COMPLETE", "PRUNED"}
    trials = tmp_path / "results" / "trials"
    assert sorted(p.name for p in trials.glob("trial-*")) == ["trial-0000", "trial-0001", "trial-0002"]
    assert check_records(SearchPaths(tmp_path / "results"), study.trials(), "val_loss") == []
    for folder in trials.glob("trial-*"):  # one row per epoch: continued, not restarted
        epochs = [row["epoch"] for row in read_jsonl(folder / "history.jsonl")]
        assert epochs == list(range(len(epochs)))
    submissions = read_jsonl(tmp_path / "results" / "search" / "slurm" / "submissions.jsonl")
    assert len(submissions) >= 3 and not jobs("toy_search")
