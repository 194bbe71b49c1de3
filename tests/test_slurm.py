"""The SLURM backend on a real single-node cluster (bin/slurm-dev-cluster start), with the real bin/train.py.

A two-run grid is submitted as a job array; one job gets SIGUSR1 mid-run, exactly what `--signal=B:USR1@N`
sends before a time limit: it must write a checkpoint, requeue itself, reload, and end with the same numbers
as an uninterrupted local run. Then `run` again must submit nothing. Also: a RESULTS_DIR with a space and a
"%" (every path of the job script quoted for sbatch), and sbatch's own error reported as it is.

Skipped when sbatch is missing or the cluster is not up, unless GINLAB_REQUIRE_SERVICES=1 (CI): then it fails.
"""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, env, read_json, read_jsonl
from test_experiments import cli, start_cli, wait_for, write_experiment

pytestmark = pytest.mark.slurm

BINDINGS = ["training_loop.n_epochs = 6", "toy.num_samples = 8192"]  # ~0.7 s per epoch: time to signal
GRID = {"training_loop.seed": [0, 1]}


def cluster_problem() -> str | None:
    if shutil.which("sbatch") is None:
        return "sbatch not found: install and start the dev cluster with `sudo bin/slurm-dev-cluster start`"
    try:
        result = subprocess.run(
            ["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30, check=False
        )
    except subprocess.TimeoutExpired:
        return "the SLURM controller does not answer (sinfo timed out): `sudo bin/slurm-dev-cluster start`"
    states = result.stdout.split()
    if result.returncode != 0 or not any(s.startswith(("idle", "mixed", "allocated")) for s in states):
        said = ((result.stderr or result.stdout).strip().splitlines() or ["no node is up"])[-1]
        return f"the SLURM cluster is not up ({said}): `sudo bin/slurm-dev-cluster start`"
    return None


@pytest.fixture(scope="module", autouse=True)
def cluster():
    problem = cluster_problem()
    if problem:
        if os.environ.get("GINLAB_REQUIRE_SERVICES") == "1":
            pytest.fail(f"GINLAB_REQUIRE_SERVICES=1 but {problem}")
        pytest.skip(problem)


def squeue(*args) -> list[list[str]]:
    out = subprocess.run(
        ["squeue", "-h", "-r", *args], capture_output=True, text=True, timeout=30, check=False
    ).stdout
    return [line.split("|") for line in out.splitlines() if line.strip()]


def job_of(array_id: str, index: int) -> list[str] | None:
    """[job id, state, reason] of one array element, or None when it is not in the queue."""
    for job_id, array, task, state, reason in squeue("-o", "%A|%F|%K|%T|%r"):
        if array == array_id and task == str(index):
            return [job_id, state, reason]
    return None


def history_lines(run_dir) -> int:
    try:
        return len(read_jsonl(run_dir / "history.jsonl"))
    except FileNotFoundError:
        return 0


def without_time(rows: list[dict]) -> list[dict]:
    """Without what is measured rather than computed: the time and the sys_* resource columns."""
    return [{k: v for k, v in row.items() if k != "time" and not k.startswith("sys_")} for row in rows]


@pytest.fixture(scope="module")
def requeued(tmp_path_factory):
    folder = tmp_path_factory.mktemp("slurm")
    main = write_experiment(folder, "slurm_test", GRID, BINDINGS)
    assert cli(main, "prepare", "--no-check").returncode == 0
    results = folder / "results"
    run0 = results / "runs" / "seed=0"

    runner = start_cli(main, "run", "--backend", "slurm", "--cpus", "1", "--time", "10", "--poll", "0.5")
    submissions = results / "slurm" / "submissions.jsonl"
    wait_for(submissions.exists, timeout=60, what="the submission")
    array_id = str(read_jsonl(submissions)[0]["array_id"])
    wait_for(lambda: history_lines(run0) >= 1, timeout=90, what="the first epoch of seed=0")
    job_id = job_of(array_id, 0)[0]
    # What --signal=B:USR1@N does before the time limit: signal the batch script (not only the steps).
    subprocess.run(["scancel", "--batch", "--signal=USR1", job_id], check=True, timeout=30)
    wait_for(
        lambda: (job_of(array_id, 0) or [None, None, None])[2] == "BeginTime",
        timeout=60,
        what="the job to be requeued",
    )
    # A plain requeue waits ~120 s. Releasing it within the second of its end makes slurmd refuse the
    # launch ("Job ... already killed"), so wait 2 s first.
    time.sleep(2)
    subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], check=True, timeout=30)

    # The same run, uninterrupted, on the local machine, with the same number of torch threads. It depends on
    # nothing the cluster does, so it trains while the requeued job finishes.
    reference = folder / "reference"
    environment = {**env(), "OMP_NUM_THREADS": "1"}
    local_log = folder / "reference.out"
    with open(local_log, "w") as out:
        local = subprocess.Popen(
            [
                sys.executable,
                "bin/train.py",
                str(reference),
                "configs/toy.gin",
                str(results / "configs" / "seed=0.gin"),
            ],
            cwd=ROOT,
            env=environment,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        code = runner.wait(timeout=120)
        output = runner.stdout.read()
        local.wait(timeout=120)
    finally:
        if local.poll() is None:
            local.kill()
            local.wait()
    assert local.returncode == 0, local_log.read_text()
    return {
        "main": main,
        "results": results,
        "code": code,
        "output": output,
        "array_id": array_id,
        "job_id": job_id,
        "reference": reference,
    }


def test_the_signalled_job_checkpoints_requeues_itself_and_finishes(requeued):
    assert requeued["code"] == 0, requeued["output"]
    results = requeued["results"]
    assert "2 finished" in requeued["output"]
    assert f"job {requeued['array_id']}_0 seed=0: PENDING (BeginTime)" in requeued["output"]
    meta = read_json(results / "runs" / "seed=0" / "meta.json")
    assert meta["status"] == "finished" and len(meta["reloads"]) == 1
    assert read_json(results / "runs" / "seed=1" / "meta.json")["reloads"] == []
    out = (results / "slurm" / "output" / f"{requeued['array_id']}_0.out").read_text()
    assert "bin/train.py exited with 3 after SIGUSR1" in out
    assert f"time limit near: requeueing job {requeued['job_id']}" in out
    assert ", start 1: " in out  # the second start of the same job (same command; bin/train.py continued)


def test_the_requeued_run_ends_exactly_like_an_uninterrupted_local_run(requeued):
    run = requeued["results"] / "runs" / "seed=0"
    reference = requeued["reference"]
    assert without_time(read_jsonl(run / "history.jsonl")) == without_time(
        read_jsonl(reference / "history.jsonl")
    )
    ours, theirs = read_json(run / "summary.json"), read_json(reference / "summary.json")
    for part in ("final", "best", "test"):
        assert without_time([ours[part]]) == without_time([theirs[part]])


def test_running_again_submits_nothing(requeued):
    submissions = requeued["results"] / "slurm" / "submissions.jsonl"
    before = submissions.read_text()
    result = cli(requeued["main"], "run", "--backend", "slurm", "--poll", "0.5")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 skipped" in result.stdout
    assert submissions.read_text() == before


def test_status_names_the_jobs(requeued):
    result = cli(requeued["main"], "status", "--all")
    assert result.returncode == 0
    assert result.stdout.startswith("2 finished")
    assert f"{requeued['array_id']}_0" in result.stdout and f"{requeued['array_id']}_1" in result.stdout


def test_a_cluster_that_does_not_answer_is_reported_with_the_local_alternative(tmp_path):
    conf = tmp_path / "slurm.conf"
    real = subprocess.run(
        ["scontrol", "show", "config"], capture_output=True, text=True, timeout=30, check=False
    ).stdout
    path = next(line.split("=", 1)[1].strip() for line in real.splitlines() if line.startswith("SLURM_CONF"))
    text = (
        Path(path)
        .read_text()
        .replace("SlurmctldHost=", "SlurmctldPort=6899\nMessageTimeout=1\nSlurmctldHost=", 1)
    )
    conf.write_text(text)
    main = write_experiment(tmp_path, "nocluster", GRID, BINDINGS)
    assert cli(main, "prepare", "--no-check").returncode == 0
    environment = {**env(), "SLURM_CONF": str(conf)}
    result = subprocess.run(
        [sys.executable, str(main), "run", "--backend", "slurm"],
        capture_output=True,
        text=True,
        timeout=120,
        env=environment,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 2
    assert "Unable to contact slurm controller" in result.stdout
    assert "Is the cluster up?" in result.stdout and "main.py run --backend local" in result.stdout
    assert not (tmp_path / "results" / "slurm" / "submissions.jsonl").exists()


def test_a_results_folder_with_a_space_and_a_percent_sign_runs_on_slurm(tmp_path):
    # Issue 12 case 16: `#SBATCH --output=<results>/...` was not quoted, so sbatch rejected the script
    # ("Invalid directive found in batch script") and `run` asked whether the cluster was up. sbatch reads
    # quoted values; a "%" of the path must be written "%%" (else sbatch takes it for one of its patterns).
    folder = tmp_path / "my 100% results"
    main = write_experiment(folder, "spaced", {"training_loop.seed": [0]}, ["training_loop.n_epochs = 1"])
    assert cli(main, "prepare", "--no-check").returncode == 0
    result = cli(main, "run", "--backend", "slurm", "--cpus", "1", "--time", "10", "--poll", "0.5")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 finished" in result.stdout
    results = folder / "results"
    assert read_json(results / "runs" / "seed=0" / "meta.json")["status"] == "finished"
    array_id = str(read_jsonl(results / "slurm" / "submissions.jsonl")[0]["array_id"])
    out = (results / "slurm" / "output" / f"{array_id}_0.out").read_text()  # --output was read as meant
    assert f": {results / 'runs' / 'seed=0'}" in out and "bin/train.py exited with 0" in out
    script = Path(read_jsonl(results / "slurm" / "submissions.jsonl")[0]["script"]).read_text()
    assert f'#SBATCH --output="{results / "slurm" / "output"}/%A_%a.out"'.replace("100%", "100%%") in script


def test_sbatch_s_own_error_is_reported_not_a_guess_that_the_cluster_is_down(tmp_path):
    main = write_experiment(tmp_path, "badpartition", GRID, BINDINGS)
    assert cli(main, "prepare", "--no-check").returncode == 0
    result = cli(main, "run", "--backend", "slurm", "--partition", "nosuch")
    assert result.returncode == 2
    assert "sbatch refused the job script" in result.stdout
    assert "Invalid partition name specified" in result.stdout  # sbatch's own words
    assert "Is the cluster up?" not in result.stdout
    assert not (tmp_path / "results" / "slurm" / "submissions.jsonl").exists()
