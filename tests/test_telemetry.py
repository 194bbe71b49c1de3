"""Resource telemetry: every epoch row of history.jsonl carries the sys_* columns, measured cheaply and right
(a memory-hungry model's recorded peak is what the kernel reports), a missing source leaves its column out,
and load_runs shows the maxima."""

import json
import os
import subprocess
import sys
import time

import pandas as pd
import pytest
from conftest import ROOT, TRAIN, env, read_json, read_jsonl, train

from ginlab.health import usage
from ginlab.health.gpu import GpuMonitor

TOY = ROOT / "configs" / "toy.gin"
ALWAYS = [
    "sys_peak_rss_mb",
    "sys_cpu_percent",
    "sys_data_wait",
    "sys_checkpoint_seconds",
    "sys_examples_per_second",
]
GPU = ["sys_gpu_peak_allocated_mb", "sys_gpu_peak_reserved_mb", "sys_gpu_util_percent"]


def test_every_epoch_row_has_the_resource_columns_and_load_runs_their_maxima(tmp_path):
    from ginlab.analysis import load_runs

    run = tmp_path / "run"
    train(run, TOY, "-b", "training_loop.n_epochs=3#checkpointer.every_n_steps=2", check=0)
    rows = read_jsonl(run / "history.jsonl")
    assert len(rows) == 3
    for row in rows:
        assert set(ALWAYS) <= set(row), row
        assert 100 < row["sys_peak_rss_mb"] < 4000  # torch and Lightning alone take a few hundred MiB
        assert 0 < row["sys_cpu_percent"] < 100 * (os.cpu_count() or 1) + 50
        assert 0 <= row["sys_data_wait"] < 1
        assert row["sys_examples_per_second"] > 0
        assert row["sys_checkpoint_seconds"] > 0  # mid-epoch checkpoints every 2 steps in every epoch
        assert not set(GPU) & set(row), "no GPU here: its columns are absent, not 0"
    # The peak so far never shrinks within a session.
    assert [r["sys_peak_rss_mb"] for r in rows] == sorted(r["sys_peak_rss_mb"] for r in rows)

    summary = read_json(run / "summary.json")
    assert summary["max"] == {k: max(r[k] for r in rows) for k in ALWAYS}
    frame = load_runs(run)
    for name in ALWAYS:
        assert frame.loc[0, f"max/{name}"] == summary["max"][name]


def test_telemetry_can_be_switched_off(tmp_path):
    train(tmp_path / "run", TOY, "-b", "training_loop.n_epochs=1#telemetry.enabled=False", check=0)
    (row,) = read_jsonl(tmp_path / "run" / "history.jsonl")
    assert not [key for key in row if key.startswith("sys_")]
    assert read_json(tmp_path / "run" / "summary.json")["max"] == {}


# A model whose every forward pass holds a ~600 MiB intermediate tensor: the run's peak resident memory is
# dominated by it, however briefly it lives.
HUNGRY_MODELS = """\
import torch
from ginlab.registry import register_model


@register_model("hungry")
class Hungry(torch.nn.Module):
    def __init__(self, input_shape, num_classes, mib=600):
        super().__init__()
        self.linear = torch.nn.Linear(64, num_classes)
        self.elements = mib * 2**20 // 4

    def forward(self, x):
        scratch = torch.ones(self.elements)  # allocated and written: resident
        return self.linear(x.flatten(1)) + scratch[:1] * 0
"""


def test_a_memory_hungry_models_recorded_peak_is_what_the_kernel_reports(tmp_path):
    (tmp_path / "hungry_models.py").write_text(HUNGRY_MODELS)
    config = tmp_path / "hungry.gin"
    config.write_text(
        'import hungry_models\ntraining_loop.model = "hungry"\ntraining_loop.datamodule = "toy"\n'
        "training_loop.n_epochs = 2\ntoy.num_samples = 128\n"
    )
    run = tmp_path / "run"
    process = subprocess.Popen([*TRAIN, str(run), str(config)], env=env([tmp_path]), cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    _, status, rusage = os.wait4(process.pid, 0)  # the kernel's account of the process: its peak RSS
    assert os.waitstatus_to_exitcode(status) == 0, process.stderr.read().decode()[-3000:]
    kernel_mib = rusage.ru_maxrss / 1024  # KiB on Linux
    recorded = max(row["sys_peak_rss_mb"] for row in read_jsonl(run / "history.jsonl"))
    assert kernel_mib > 600, "the model did not make the process hungry: the comparison would prove nothing"
    assert abs(recorded - kernel_mib) <= 0.10 * kernel_mib, (recorded, kernel_mib)


def test_the_process_tree_counts_its_children_memory_and_cpu():
    """What data-loader workers and DDP ranks are to a run: processes it started, counted with it."""
    tree = usage.ProcessTree()
    before_cpu = tree.cpu_seconds()
    child = subprocess.Popen(
        [sys.executable, "-c", "import time\nx = bytearray(300 * 2**20)\nt = time.process_time()\n"
         "while time.process_time() - t < 1.0: pass\nprint('ready', flush=True)\ntime.sleep(30)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert child.stdout.readline().strip() == "ready"
        assert child.pid in usage.descendants(os.getpid())
        tree.sample()
        own = usage.rss_bytes(os.getpid())
        assert tree.peak_sum >= own + 300 * 2**20  # the child's 300 MiB are counted with this process
        assert tree.peak_rss_bytes() >= tree.peak_sum
        assert tree.cpu_seconds() - before_cpu >= 0.9  # the child's busy second
    finally:
        child.kill()
        child.wait()


def test_a_missing_source_gives_no_value_not_zero(monkeypatch):
    monkeypatch.setattr(usage, "descendants", lambda pid: None)  # no /proc and no psutil permission
    tree = usage.ProcessTree()
    tree.sample()
    assert tree.cpu_seconds() is None  # Telemetry then leaves sys_cpu_percent out
    assert tree.peak_rss_bytes() == usage.own_peak_rss_bytes() > 0  # the kernel's own count stays
    # This machine has no NVIDIA driver: the GPU monitor is not there, rather than reporting 0 %.
    assert GpuMonitor.open("GPU-00000000-0000-0000-0000-000000000000", 0) is None


def test_a_failing_source_is_dropped_once_and_sampling_goes_on():
    from ginlab.health.usage import Sampler

    calls = []

    def broken():
        raise OSError("gone")

    sampler = Sampler(0.01, [broken, lambda: calls.append(time.monotonic())]).start()
    time.sleep(0.2)
    sampler.stop()
    assert len(calls) > 3 and broken not in sampler.functions


@pytest.mark.parametrize(
    "binding, expected",
    [("telemetry.every_seconds=0", "a number > 0"), ("telemetry.enabled=1", "True or False")],
)
def test_bad_telemetry_settings_exit_2_writing_nothing(tmp_path, binding, expected):
    result = train(tmp_path / "run", TOY, "-b", binding, check=2)
    assert binding.split("=")[0] in result.stderr and expected in result.stderr
    assert not (tmp_path / "run").exists()


def test_load_runs_takes_the_maxima_of_a_run_without_summary_from_its_history(tmp_path):
    from test_analysis import write_run

    from ginlab.analysis import load_runs

    running = write_run(tmp_path / "running", status="running")
    write_run(tmp_path / "old", status="failed")  # written by a ginlab before telemetry
    rows = [{"epoch": 0, "sys_peak_rss_mb": 500.0, "sys_data_wait": 0.5},
            {"epoch": 1, "sys_peak_rss_mb": 700.0, "sys_data_wait": 0.1},
            {"epoch": 2, "sys_peak_rss_mb": 650.0}]  # fmt: skip
    (running / "history.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    frame = load_runs(tmp_path).set_index("name")
    assert frame.loc["running", "max/sys_peak_rss_mb"] == 700.0
    assert frame.loc["running", "max/sys_data_wait"] == 0.5
    assert pd.isna(frame.loc["old", "max/sys_peak_rss_mb"])  # a history without telemetry: unknown, not 0
