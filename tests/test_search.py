"""Hyperparameter searches (ginlab.experiments.search): real Optuna, real run folders, real SIGKILLs.

The search's promise: a driver killed at any moment and started again ends with the same trials, the same
pruning decisions and the same best trial as one never killed (one slot, bitwise equal histories); with
several
slots no trial is lost or run twice, and the study agrees with the run folders; bad input is refused before
anything runs, and nothing trained is ever lost.
"""

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import ROOT, TRAIN, env, read_jsonl, train, tree_snapshot

from ginlab.experiments.search import (
    ASHA,
    TPE,
    Choice,
    Hyperband,
    IntRange,
    LogUniform,
    Median,
    Search,
    Uniform,
)
from ginlab.experiments.search.status import check_records
from ginlab.experiments.search.study import SearchStudy, optuna_quiet
from ginlab.experiments.search.trials import SearchPaths
from ginlab.runfolder import read_meta

# Toy data, 3 epochs, ASHA with rungs after epochs 1 and 2 (and the last, 3): a trial is 1 to 3 segments of
# bin/train.py, with checkpoints every 3 steps so that a kill lands mid-epoch as often as between epochs.
BINDINGS = [
    "training_loop.n_epochs = 3",
    "toy.num_samples = 512",
    "checkpointer.every_n_steps = 3",
    "history.every_n_steps = 3",
]
SPACE = {"torch.optim.Adam.lr": "LogUniform(1e-3, 3e-1)", "cnn.dropout": "Uniform(0.0, 0.5)"}
# val_loss: a continuous metric, so that ASHA's comparisons have no ties and it prunes half at each rung.
SEARCH = 'Search(space=SPACE, sampler=TPE(startup_trials=2), pruner=ASHA(min_epochs=1, reduction_factor=2), trials=4, metric="val_loss", mode="min", seed=3)'  # noqa: E501


def write_search(folder: Path, space=None, search=SEARCH, bindings=None, name="toy_search") -> Path:
    """An experiment main.py with a search (like experiments/search_cnn/main.py), results in folder/results"""
    folder.mkdir(parents=True, exist_ok=True)
    space = space if space is not None else SPACE
    bindings = bindings if bindings is not None else BINDINGS
    main = folder / "main.py"
    main.write_text(
        textwrap.dedent(f"""\
        from ginlab.experiments import Experiment, main
        from ginlab.experiments.search import *

        SPACE = {{{", ".join(f"{k!r}: {v}" for k, v in space.items())}}}
        experiment = Experiment(
            name={name!r}, configs=["configs/toy.gin"], bindings={bindings!r},
            search={search}, results_dir={str(folder / "results")!r}, root={str(ROOT)!r})
        if __name__ == "__main__":
            main(experiment)
        """)  # noqa: E501  (the generated main.py's own layout)
    )
    return main


def cli(main: Path, *args, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(main), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**env(), "COLUMNS": "250"},
        cwd=ROOT,
        check=False,
    )


def start_cli(main: Path, *args) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(main), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        env=env(),
        cwd=ROOT,
    )


def study_of(folder: Path) -> SearchStudy:
    optuna_quiet()
    return SearchStudy(journal(folder), "toy_search", "minimize")


def journal(folder: Path) -> Path:
    return folder / "results" / "search" / "study.journal"


def journal_lines(folder: Path) -> int:
    """How far the search got: every change the driver makes is one line of the study file."""
    try:
        return journal(folder).read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def without_time(value):
    """A history row or summary without what is measured rather than computed (wall times, the sys_* resource
    columns and their maxima): they differ between any two runs."""
    if isinstance(value, dict):
        return {
            k: without_time(v)
            for k, v in value.items()
            if k != "time" and not k.startswith(("sys_", "max/sys_"))
        }
    return value


def outcome(folder: Path) -> dict:
    """Everything a search decided and trained, without wall times: trials (parameters, state, value, every
    epoch's metric, every decision), and each trial's history and summary."""
    study = study_of(folder)
    trials = []
    for trial in study.trials():
        decisions = {e: d["prune"] for e, d in SearchStudy.decisions(trial).items()}
        trials.append((trial.number, trial.params, trial.state.name, trial.value, trial.intermediate_values,
                       decisions))  # fmt: skip
    runs = {}
    for run in sorted((folder / "results" / "trials").glob("trial-*")):
        history = [without_time(row) for row in read_jsonl(run / "history.jsonl")]
        summary = without_time(json.loads((run / "summary.json").read_text()))
        runs[run.name] = (history, summary, read_meta(run)["status"])
    best = study.study.best_trial
    return {"trials": trials, "runs": runs, "best": (best.number, best.value)}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """A search run once, never interrupted (one slot)."""
    folder = tmp_path_factory.mktemp("reference")
    main = write_search(folder)
    assert cli(main, "prepare").returncode == 0
    done = cli(main, "run", "--slots", "1")
    assert done.returncode == 0, done.stdout + done.stderr
    return folder


def test_a_search_killed_three_times_ends_as_one_never_killed(reference, tmp_path):
    main = write_search(tmp_path)
    assert cli(main, "prepare").returncode == 0
    # Three random moments spread over the whole search (however fast the machine): when the study has
    # reached a random line of the reference's, then up to 1.5 s more (drawing, training, deciding, pruning:
    # a warm-started segment of this search trains for about a second).
    moments = random.Random(7)
    marks = sorted(moments.sample(range(2, journal_lines(reference) - 6), 3))
    for mark in marks:
        driver = start_cli(main, "run", "--slots", "1")
        while journal_lines(tmp_path) < mark and driver.poll() is None:
            time.sleep(0.05)
        time.sleep(moments.uniform(0.0, 1.5))
        assert driver.poll() is None, "the search ended before it could be killed"
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    done = cli(main, "run", "--slots", "1")
    assert done.returncode == 0, done.stdout + done.stderr
    expected, got = outcome(reference), outcome(tmp_path)
    assert got["trials"] == expected["trials"]  # same parameters, order, metrics and pruning decisions
    assert got["runs"] == expected["runs"]  # bitwise equal histories and summaries of every trial
    assert got["best"] == expected["best"]
    states = [t[2] for t in got["trials"]]
    assert "PRUNED" in states and "COMPLETE" in states  # the study exercised both decisions
    assert check_records(SearchPaths(tmp_path / "results"), study_of(tmp_path).trials(), "val_loss") == []


def test_a_promoted_trial_equals_one_trained_straight_through(reference, tmp_path):
    study = study_of(reference)
    complete = next(
        t for t in study.trials() if t.state.name == "COMPLETE" and len(SearchStudy.decisions(t)) > 1
    )
    trial = reference / "results" / "trials" / f"trial-{complete.number:04d}"
    config = reference / "results" / "search" / "configs" / f"{trial.name}.gin"
    straight = tmp_path / "straight"
    # With the trial's torch threads: torch's sums (here the validation loss) depend on their number.
    threads = str(read_meta(trial)["torch_threads"])
    subprocess.run([*TRAIN, str(straight), "configs/toy.gin", str(config)], cwd=ROOT, check=True,
                   env={**env(), "OMP_NUM_THREADS": threads}, capture_output=True, timeout=600)  # fmt: skip

    def rows(run: Path, name: str = "history.jsonl") -> list[dict]:
        return [without_time(row) for row in read_jsonl(run / name)]

    assert len(read_meta(trial)["reloads"]) == len(SearchStudy.decisions(complete)) - 1  # one per promotion
    assert rows(trial) == rows(straight)
    assert rows(trial, "steps.jsonl") == rows(straight, "steps.jsonl") != []


def test_a_pruned_trial_is_an_ordinary_run_that_can_be_continued_by_hand(reference, tmp_path):
    from ginlab.analysis import load_runs

    runs = load_runs(reference / "results" / "trials")
    study = study_of(reference)
    states = {f"trial-{t.number:04d}": t.state.name for t in study.trials()}
    assert sorted(runs["name"]) == sorted(states)  # every trial is a run folder load_runs reads
    for _, row in runs.iterrows():
        assert row["status"] == {"COMPLETE": "finished", "PRUNED": "pruned"}[states[row["name"]]]
    pruned = next(reference / "results" / "trials" / n for n, s in states.items() if s == "PRUNED")
    meta = read_meta(pruned)
    assert meta["status"] == "pruned" and "Pruned by the search" in meta["error"]["message"]
    assert (pruned / "checkpoints" / "last.ckpt").is_file()
    kept = read_jsonl(pruned / "history.jsonl")
    copy = tmp_path / "continued"
    subprocess.run(["cp", "-a", str(pruned), str(copy)], check=True)
    # reload="auto" leaves it as it ended; reload=True continues it, from its checkpoint.
    assert "pruned already" in train(copy, "-b", 'training_loop.reload="auto"', check=0).stdout
    train(copy, "-b", "training_loop.reload=True", "-b", "training_loop.n_epochs=3", check=0)
    history = read_jsonl(copy / "history.jsonl")
    assert len(history) == 3 and history[: len(kept)] == kept
    assert read_meta(copy)["status"] == "finished"


def test_several_slots_kills_of_the_driver_and_of_trials_lose_and_repeat_nothing(tmp_path):
    main = write_search(tmp_path, search=SEARCH.replace("trials=4", "trials=6"))
    assert cli(main, "prepare").returncode == 0
    trials = tmp_path / "results" / "trials"
    moments = random.Random(11)
    killed_trials = 0
    for mark in (8, 20):  # lines of the study: two moments well inside the search
        driver = start_cli(main, "run", "--slots", "2")
        while not _train_processes(trials) and driver.poll() is None:
            time.sleep(0.05)
        time.sleep(moments.uniform(0.2, 1.0))  # within the trial's segment (about a second, warm-started)
        for pid in _train_processes(trials)[:1]:  # an individual trial, killed outright
            os.kill(pid, signal.SIGKILL)
            killed_trials += 1
        while journal_lines(tmp_path) < mark and driver.poll() is None:
            time.sleep(0.05)
        time.sleep(moments.uniform(0.0, 1.5))
        assert driver.poll() is None, "the search ended before it could be killed"
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    done = cli(main, "run", "--slots", "2")
    assert done.returncode == 0, done.stdout + done.stderr
    assert killed_trials >= 1
    study = study_of(tmp_path)
    numbers = [t.number for t in study.trials()]
    assert numbers == list(range(6))  # none lost, none drawn twice
    assert sorted(p.name for p in trials.glob("trial-*")) == [
        f"trial-{n:04d}" for n in numbers
    ]  # one folder each
    assert {t.state.name for t in study.trials()} <= {"COMPLETE", "PRUNED"}
    assert check_records(SearchPaths(tmp_path / "results"), study.trials(), "val_loss") == []
    for run in trials.glob("trial-*"):  # exactly one history row per epoch: continued, never restarted
        epochs = [row["epoch"] for row in read_jsonl(run / "history.jsonl")]
        assert epochs == list(range(len(epochs)))
    status = cli(main, "status")
    assert status.returncode == 0 and "0 running" in status.stdout and "0 left" in status.stdout


def _train_processes(trials: Path) -> list[int]:
    """The pids of the bin/train.py processes training this search's trials (this test's driver's)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if any(b"bin/train.py" in part for part in command) and any(
                str(trials).encode() in part for part in command
            ):
                pids.append(int(entry.name))
    return pids


# --- draws and decisions: pure functions of the seed, the trial number and the study
# -------------------------


@pytest.mark.parametrize(
    ("sampler", "pruner"), [("random", "asha"), ("tpe", "hyperband"), ("grid", "median")]
)
def test_draws_and_decisions_are_the_same_when_the_study_is_reopened_between_any_two_steps(
    sampler, pruner, tmp_path
):
    """A driver restarted after a kill re-creates its sampler and pruner: what it draws and decides must not
    depend on that (Optuna's samplers start their random stream again when re-created)."""
    from optuna.trial import TrialState

    optuna_quiet()
    if sampler == "grid":
        space = {"a.width": IntRange(1, 4), "a.act": Choice(["relu", "gelu", (1, 2)])}
    else:
        space = {"a.lr": LogUniform(1e-4, 1e-1), "a.width": IntRange(8, 64), "a.p": Uniform(0.0, 0.5)}
    pruners = {"asha": ASHA(min_epochs=1, reduction_factor=3), "hyperband": Hyperband(min_epochs=1),
               "median": Median(warmup_epochs=2, interval_epochs=2, startup_trials=2)}  # fmt: skip
    search = Search(space=space, sampler=TPE(startup_trials=3) if sampler == "tpe" else sampler,
                    pruner=pruners[pruner], trials=10, seed=5)  # fmt: skip
    distributions = {name: d.distribution() for name, d in space.items()}

    def metric(params, epoch):  # a made-up learning curve that depends on every parameter
        return (sum(hash(repr(v)) % 89 for v in params.values()) % 97) / 97 * epoch / 9

    def run(path: Path, reopen: bool) -> list:
        study = SearchStudy(path, "s", "maximize", writer=True)
        out = []
        for number in range(10):
            study = SearchStudy(path, "s", "maximize", writer=True) if reopen else study
            drawn = study.sample(search.build_sampler(number), distributions)
            assert study.create_trial(drawn) == number
            for epoch in search.decision_epochs(9):
                study = SearchStudy(path, "s", "maximize", writer=True) if reopen else study
                study.report(number, {e: metric(drawn.params, e) for e in range(1, epoch + 1)})
                prune, attrs = study.decide(search.build_pruner(9), number)
                study.record_decision(number, epoch, prune, attrs, metric(drawn.params, epoch))
                study.apply_decision(number, {"attrs": attrs})
                if prune:
                    break
            study.finish(
                number, TrialState.PRUNED if prune else TrialState.COMPLETE, metric(drawn.params, epoch)
            )
            out.append((drawn.params, prune, epoch))
        return out

    once, reopened = run(tmp_path / "a.journal", False), run(tmp_path / "b.journal", True)
    assert once == reopened
    assert len({repr(params) for params, _, _ in once}) == 10  # ten different points (grid: no repeats)
    assert any(prune for _, prune, _ in once) and not all(prune for _, prune, _ in once)


# --- bad input: refused before anything runs, nothing trained lost
# -------------------------------------------


@pytest.mark.parametrize(
    ("space", "search", "message"),
    [
        ({"torch.optim.Adam.lrr": "LogUniform(1e-4, 1e-1)"}, SEARCH, "doesn't have a parameter named 'lrr'"),
        ({"torch.optim.Adam.lr": "Uniform(0.1, 0.1)"}, SEARCH, "the range [0.1, 0.1] is empty"),
        ({"torch.optim.Adam.lr": "Uniform(0.1, 0.01)"}, SEARCH, "the range [0.1, 0.01] is inverted"),
        ({"torch.optim.Adam.lr": "LogUniform(0, 0.1)"}, SEARCH, "a log range needs bounds above 0"),
        ({"cnn.dropout": "Choice([])"}, SEARCH, "the list of values is empty"),
        (SPACE, SEARCH.replace('metric="val_loss"', 'metric="val_f1"'), "metric 'val_f1' is never logged"),
        (
            SPACE,
            SEARCH.replace('metric="val_loss"', 'metric="test_acc"'),
            "needs a metric logged after every",
        ),
        (SPACE, SEARCH.replace("sampler=TPE(startup_trials=2)", 'sampler="grid"'), "'grid' needs Choice"),
    ],
)
def test_bad_input_is_refused_before_anything_is_written(tmp_path, space, search, message):
    main = write_search(tmp_path, space=space, search=search)
    refused = cli(main, "prepare")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert message in " ".join(refused.stdout.split()), refused.stdout
    assert not (tmp_path / "results").exists()


def test_a_changed_search_or_another_optuna_version_is_refused_and_nothing_is_lost(reference, tmp_path):
    subprocess.run(["cp", "-a", str(reference / "results"), str(tmp_path / "results")], check=True)
    before = tree_snapshot(tmp_path / "results")
    changed = write_search(tmp_path, space={**SPACE, "torch.optim.Adam.lr": "LogUniform(1e-4, 3e-1)"})
    for verb in ("prepare", "run"):
        refused = cli(changed, verb)
        assert refused.returncode == 2, refused.stdout
        text = " ".join(refused.stdout.split())
        assert "space.torch.optim.Adam.lr.low" in text and "0.001" in text and "0.0001" in text, text
    sampler = write_search(
        tmp_path, search=SEARCH.replace("sampler=TPE(startup_trials=2)", 'sampler="random"')
    )
    assert "sampler: the study has 'tpe', main.py has 'random'" in " ".join(
        cli(sampler, "prepare").stdout.split()
    )
    assert tree_snapshot(tmp_path / "results") == before
    # The study as another Optuna version would have written it: refused, naming both versions.
    main = write_search(tmp_path)
    journal = tmp_path / "results" / "search" / "study.journal"
    lines = journal.read_text().splitlines()
    lines = [line.replace('"optuna":"5.0.0"', '"optuna":"4.9.0"') for line in lines]
    journal.write_text("\n".join(lines) + "\n")
    before = tree_snapshot(tmp_path / "results" / "trials")
    refused = cli(main, "run")
    assert refused.returncode == 2 and "written by optuna 4.9.0" in " ".join(refused.stdout.split())
    assert tree_snapshot(tmp_path / "results" / "trials") == before
