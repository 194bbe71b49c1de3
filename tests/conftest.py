"""Shared test helpers: run bin/train.py as a real process on tiny real or generated data (forked from a
warm process unless a test is about processes: see `train`).

The suite runs on pytest-xdist workers, one per core (`-n auto --dist loadgroup` in pyproject.toml). Tests
that share a module-scoped fixture go to one worker as a group (`xdist_groups`), so such a fixture is still
set up once; a run that tests on several workers compare against is trained once per session (`shared_run`).
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TRAIN = [sys.executable, str(ROOT / "bin" / "train.py")]

# A few-second configuration with everything that makes exact resume hard: shuffling, dropout,
# random augmentation, momentum, an epoch-wise LR schedule, frequent mid-epoch checkpoints.
HARD_CONFIG = """
training_loop.model = "cnn"
training_loop.datamodule = "toy"
training_loop.n_epochs = 4
training_loop.optimizer = @torch.optim.SGD
torch.optim.SGD.lr = 0.05
torch.optim.SGD.momentum = 0.9
training_loop.lr_scheduler = @torch.optim.lr_scheduler.StepLR
torch.optim.lr_scheduler.StepLR.step_size = 1
torch.optim.lr_scheduler.StepLR.gamma = 0.8
history.every_n_steps = 3
checkpointer.every_n_steps = 4
cnn.channels = (8, 16)
cnn.dropout = 0.3
toy.batch_size = 16
toy.num_samples = 512
toy.augment = "shift"
"""


def env(pythonpath=()) -> dict:
    e = dict(os.environ)
    paths = [*map(str, pythonpath), str(ROOT / "src"), *([e["PYTHONPATH"]] if e.get("PYTHONPATH") else [])]
    e["PYTHONPATH"] = os.pathsep.join(paths)
    e.setdefault("OMP_NUM_THREADS", "1")
    return e


def train(
    *args, timeout=300, check=None, pythonpath=(), fresh=False, **kwargs
) -> subprocess.CompletedProcess:
    """Run bin/train.py with `args`; return the finished process (stdout and stderr as text).

    The command is forked from this test worker's warm process (ginlab.workers: the same run folder, exit
    code and output as a fresh interpreter, proven in test_workers.py) unless `fresh` or other subprocess
    arguments are given, or GINLAB_TEST_FRESH=1: tests about processes themselves start their own."""
    starter = None if fresh or kwargs or os.environ.get("GINLAB_TEST_FRESH") == "1" else warm_starter()
    command = [*TRAIN, *map(str, args)]
    if starter is None:
        proc = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, env=env(pythonpath), cwd=ROOT, **kwargs
        )
    else:
        with tempfile.TemporaryDirectory(prefix="ginlab-train-") as folder:
            out, err = Path(folder, "stdout"), Path(folder, "stderr")
            process = starter.spawn(command, cwd=ROOT, env=env(pythonpath), stdout=out, stderr=err)
            try:
                code = process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                raise subprocess.TimeoutExpired(command, timeout, out.read_text(), err.read_text()) from None
            proc = subprocess.CompletedProcess(command, code, out.read_text(), err.read_text())
    if check is not None and proc.returncode != check:
        raise AssertionError(
            f"exit {proc.returncode}, expected {check}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return proc


_starter = None


def warm_starter():
    """This test process's warm process (started on first use, ended with the process)."""
    global _starter
    if _starter is None:
        import atexit

        from ginlab.workers import WarmStarter

        _starter = WarmStarter()
        atexit.register(_starter.close)
    return _starter


def start_train(*args) -> subprocess.Popen:
    return subprocess.Popen(
        [*TRAIN, *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env(),
        cwd=ROOT,
    )


def read_json(path) -> dict:
    return json.loads(Path(path).read_text())


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def final_state(folder):
    import torch

    return torch.load(folder / "checkpoints" / "last.ckpt", weights_only=True)


def computed(row: dict) -> dict:
    """A history row without what is measured rather than computed: its time and sys_* resource columns."""
    return {k: v for k, v in row.items() if k != "time" and not k.startswith("sys_")}


def rows_without_time(path):
    return [computed(row) for row in read_jsonl(path)]


def assert_same_run(a, b):
    """Bitwise the same final weights, optimizer and scheduler state, and the same history."""
    import torch

    sa, sb = final_state(a), final_state(b)
    assert sa["global_step"] == sb["global_step"] and sa["epoch"] == sb["epoch"]
    assert sa["state_dict"].keys() == sb["state_dict"].keys()
    for key in sa["state_dict"]:
        assert torch.equal(sa["state_dict"][key], sb["state_dict"][key]), key
    for opt_a, opt_b in zip(sa["optimizer_states"], sb["optimizer_states"], strict=False):
        for index, state in opt_a["state"].items():
            for name, value in state.items():
                other = opt_b["state"][index][name]
                assert torch.equal(value, other) if torch.is_tensor(value) else value == other, (index, name)
    assert sa["lr_schedulers"] == sb["lr_schedulers"]
    for name in ("history.jsonl", "steps.jsonl"):  # steps.jsonl: only when a row fell due within an epoch
        assert (a / name).exists() == (b / name).exists(), name
        if (a / name).exists():
            assert rows_without_time(a / name) == rows_without_time(b / name), name
    history = read_jsonl(b / "history.jsonl")
    assert [row["epoch"] for row in history] == list(range(len(history)))
    assert read_json(a / "summary.json")["test"] == read_json(b / "summary.json")["test"]


@pytest.fixture
def hard_config(tmp_path) -> Path:
    path = tmp_path / "hard.gin"
    path.write_text(HARD_CONFIG)
    return path


def tree_snapshot(folder) -> dict:
    """{relative path: (size, mtime_ns, bytes)} of every file: to prove a folder was not touched."""
    folder = Path(folder)
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns, p.read_bytes())
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# --- pytest-xdist: which tests share a worker, and in which order work is handed out ------------------------
#
# pytest-xdist's own `--dist loadgroup` cannot group with pytest 9 (it renames items through an attribute that
# pytest 9 no longer reads), so the grouping is done here: the workers, which see the fixtures, write which
# tests form a group; the controller's scheduler (a LoadGroupScheduling that reads it) hands each group to
# one worker.

GROUPS_FILE = "ginlab_xdist_groups"  # key in each worker's workerinput: the folder for the group files

# The order in which work is handed out: these modules' tests first (longest work first), the rest after, each
# module in file order. A worker that is given a long test last would otherwise run it alone at the end.
LONGEST_FIRST = [
    "test_experiments.py",
    "test_resume.py",
    "test_mlflow.py",
    "test_slurm.py",
    "test_accuracy.py",
    "test_evaluate.py",
    "test_train.py",
]


def xdist_groups(items) -> dict[str, str]:
    """{nodeid: group} for the tests that must run on one worker, in file order.

    Tests that use the same module-scoped fixture (a trained run, a running server, a whole experiment story)
    form a group: the fixture is then set up once, and tests that build on each other's state
    (test_experiments' flow, test_slurm's requeue) run in order. A test marked
    @pytest.mark.xdist_group("name") joins "name". Tests sharing nothing are handed out one by one.
    """
    parent = {}

    def find(key):
        while parent.setdefault(key, key) != key:
            key = parent[key]
        return key

    uses = {}
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        keys = [
            f"{item.module.__name__}::{name}"
            for name, defs in (info.name2fixturedefs if info else {}).items()
            if defs and defs[-1].scope in ("module", "package")
        ]
        keys += [
            f"mark::{mark.args[0] if mark.args else mark.kwargs.get('name', 'default')}"
            for mark in item.iter_markers("xdist_group")
        ]
        uses[item.nodeid] = sorted(keys)
        for key in uses[item.nodeid][1:]:
            parent[find(key)] = find(uses[item.nodeid][0])
    return {nodeid: find(keys[0]) for nodeid, keys in uses.items() if keys}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """On an xdist worker: hand out the longest work first,
    and tell the controller which tests form groups."""
    folder = getattr(config, "workerinput", {}).get(GROUPS_FILE)
    if folder is None:
        return  # serial (-n 0), or another --dist: the file order stays
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: file order within a module
    target = Path(folder) / f"{config.workerinput['workerid']}.json"
    tmp = target.with_suffix(".tmp")
    tmp.write_text(json.dumps(xdist_groups(items)))
    os.replace(tmp, target)  # the controller reads it after every worker finished collecting


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    """Controller, with --dist loadgroup: where this worker writes its groups."""
    if node.config.getvalue("dist") == "loadgroup":
        node.workerinput[GROUPS_FILE] = str(_groups_folder(node.config))


def _groups_folder(config) -> Path:
    if not hasattr(config, "_ginlab_groups_folder"):
        import tempfile

        folder = Path(tempfile.mkdtemp(prefix="ginlab-xdist-groups-"))
        config.add_cleanup(lambda: shutil.rmtree(folder, ignore_errors=True))
        config._ginlab_groups_folder = folder
    return config._ginlab_groups_folder


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_make_scheduler(config, log):
    """Controller, with --dist loadgroup: a LoadGroupScheduling
    that takes the groups from the workers' files."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadGroupScheduling

    folder = _groups_folder(config)

    class Scheduling(LoadGroupScheduling):
        groups = None

        def _split_scope(self, nodeid):
            if self.groups is None:  # first called once every worker has collected (and written its file)
                self.groups = {}
                for path in sorted(folder.glob("*.json")):
                    self.groups.update(json.loads(path.read_text()))
            return self.groups.get(nodeid) or super()._split_scope(nodeid)

    config.option.loadscopereorder = False  # hand out in the workers' order: LONGEST_FIRST
    return Scheduling(config, log)


def shared_folder(tmp_path_factory) -> Path:
    """A folder of this pytest session that every xdist worker sees
    (the workers' temporary folders' parent)."""
    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    folder = root / "shared"
    folder.mkdir(exist_ok=True)
    return folder


def shared_run(tmp_path_factory, name: str, *args, **kwargs) -> Path:
    """bin/train.py into <shared folder>/<name> with `args`, once per session whichever worker asks first.

    Later callers, also on other workers, wait for it and get the same finished run folder. An attempt that
    did not finish (the worker died) is started over.
    """
    from filelock import FileLock

    shared = shared_folder(tmp_path_factory)
    folder, done = shared / name, shared / f"{name}.done"
    with FileLock(str(shared / f"{name}.lock")):
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            train(folder, *args, check=0, **kwargs)
            done.write_text("finished\n")
    return folder


def train_here(*args, capsys) -> tuple[int, str, str]:
    """bin/train.py's workflow in this process, for what ends before training (configuration errors): the exit
    code, stdout and stderr. Fast (no interpreter start); anything about processes uses `train`."""
    import signal

    from ginlab.training.main import main

    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)}
    save_dir, *rest = [str(a) for a in args]
    configs, bindings, i = [], [], 0
    while i < len(rest):
        if rest[i] == "-b":
            bindings.append(rest[i + 1])
            i += 2
        else:
            configs.append(rest[i])
            i += 1
    try:
        code = main(save_dir, configs, bindings, ["bin/train.py", *map(str, args)])
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
    out = capsys.readouterr()
    return code, out.out, out.err
