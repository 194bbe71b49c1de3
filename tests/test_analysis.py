"""Tests of ginlab.analysis on run folders written here exactly as docs/run-folder.md describes them."""

import json
import os
import subprocess
import sys
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ginlab.analysis import (
    RunFolderError,
    UnreadableRunsWarning,
    effective_status,
    jsonl,
    load_C,
    load_H,
    load_HC,
    load_histories,
    load_runs,
)
from ginlab.analysis.cache import FILE_NAME, FOLDER_NAME

NOW = datetime.now(UTC)


def iso(time: datetime) -> str:
    return time.isoformat(timespec="seconds")


def history_record(epoch: int, lr: float = 0.001) -> dict:
    """A deterministic history line: val_acc rises, losses fall."""
    return {
        "epoch": epoch,
        "step": 28 * (epoch + 1),
        "time": round(3.25 * (epoch + 1), 2),
        "train_loss": round(2.0 / (epoch + 1), 6),
        "val_loss": round(1.0 / (epoch + 1), 6),
        "val_acc": round(0.5 + 0.04 * epoch, 6),
        "lr": lr,
    }


def write_run(
    folder,
    *,
    status: str = "finished",
    n_epochs: int = 5,
    epochs: int | None = None,
    lr: float = 0.001,
    heartbeat_age: float = 10.0,
    partial_line: str | None = None,
    format_version: int | None = 1,
    evaluations: bool = True,
    extra_config: dict | None = None,
) -> Path:
    """Write a run folder per docs/run-folder.md (format version 1).

    Args:
        status: meta.json's status; a finished run also gets summary.json.
        epochs: epochs finished (history lines); default n_epochs when finished, else n_epochs // 2 + 1.
        heartbeat_age: seconds since the last heartbeat.
        partial_line: text appended to history.jsonl without a newline (a write cut by a crash).
        format_version: None leaves it out of meta.json.
    """
    folder = Path(folder)
    folder.mkdir(parents=True)
    if epochs is None:
        epochs = n_epochs if status == "finished" else n_epochs // 2 + 1
    # Times are relative to the moment of writing, not to NOW (import time): in a long test session a "fresh"
    # run written minutes after import would otherwise read as stale.
    now = datetime.now(UTC)
    started = now - timedelta(seconds=3600)
    beat = now - timedelta(seconds=heartbeat_age)
    ended = None if status == "running" else beat
    meta = {
        "format_version": format_version,
        "status": status,
        "started": iso(started),
        "ended": iso(ended) if ended else None,
        "heartbeat": iso(beat),
        "host": "node12",
        "pid": 4242,
        "command": ["bin/train.py", str(folder), "configs/cnn.gin"],
        "cwd": "/home/me/ginlab",
        "versions": {"python": "3.11.7", "ginlab": "0.1.0"},
        "git": {"commit": "3f2c", "branch": "main", "dirty": False, "diff": None},
        "error": {"type": "ValueError", "message": "loss is nan", "traceback": "..."}
        if status == "failed"
        else None,
        "exit_code": 1 if status == "failed" else (0 if status == "finished" else None),
        "reloads": [],
    }
    if format_version is None:
        del meta["format_version"]
    config = {
        "training_loop.n_epochs": n_epochs,
        "Adam.lr": lr,
        "CNN.channels": [16, 32],
        "data.name": "digits",
    }
    config.update(extra_config or {})
    (folder / "meta.json").write_text(json.dumps(meta, indent=2))
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "config.gin").write_text(
        "# Parameters for Adam:\n"
        f"Adam.lr = {lr!r}\n\n"
        "# Parameters for CNN:\n"
        "CNN.channels = [16, 32]\n\n"
        f"data.name = 'digits'\n"
        f"training_loop.n_epochs = {n_epochs}\n"
    )
    (folder / "configs").mkdir()
    lines = "".join(json.dumps(history_record(epoch, lr)) + "\n" for epoch in range(epochs))
    (folder / "history.jsonl").write_text(lines + (partial_line or ""))
    (folder / "steps.jsonl").write_text(
        json.dumps({"step": 50, "epoch": 1, "time": 1.9, "train_loss": 0.5}) + "\n"
    )
    if status == "finished":
        best = max(range(epochs), key=lambda epoch: history_record(epoch)["val_acc"])
        last = history_record(epochs - 1, lr)
        summary = {
            "status": "finished",
            "epochs": epochs,
            "steps": last["step"],
            "time": last["time"],
            "monitor": {"metric": "val_acc", "mode": "max"},
            "final": {key: last[key] for key in ("epoch", "step", "train_loss", "val_loss", "val_acc")},
            "best": {"epoch": best, "step": 28 * (best + 1), "val_acc": history_record(best)["val_acc"],
                     "checkpoint": "checkpoints/best.ckpt"},
            "test": {"test_loss": 0.04, "test_acc": 0.983, "checkpoint": "checkpoints/best.ckpt"},
        }  # fmt: skip
        (folder / "summary.json").write_text(json.dumps(summary))
        if evaluations:
            (folder / "evaluations").mkdir()
            evaluation = {
                "checkpoint": "best",
                "split": "test",
                "metrics": {"test_acc": 0.981},
                "time": iso(NOW),
            }
            (folder / "evaluations" / "best-test.json").write_text(json.dumps(evaluation))
            (folder / "evaluations" / "best-test.predictions.csv").write_text(
                "index,label,prediction\n0,1,1\n"
            )
    return folder


def reference_history(run) -> pd.DataFrame:
    """history.jsonl read the plain way (json per line, a cut last line dropped): the trusted reference."""
    text = (Path(run) / "history.jsonl").read_text()
    records = [json.loads(line) for line in text.split("\n")[:-1] if line.strip()]
    return pd.DataFrame.from_records(records)


@pytest.fixture
def sweep(tmp_path):
    """A folder of runs in every state: finished, running (cut last line), stale, failed."""
    root = tmp_path / "sweep"
    write_run(root / "lr-0.001", lr=0.001)
    write_run(root / "lr-0.01", lr=0.01, n_epochs=4)
    write_run(
        root / "running", status="running", lr=0.003, heartbeat_age=5, partial_line='{"epoch": 3, "step": 1'
    )
    write_run(root / "stale", status="running", lr=0.03, heartbeat_age=900, partial_line='{"epoch": 3, "st')
    write_run(root / "failed", status="failed", lr=0.1, epochs=2)
    return root


# -- one run ---------------------------------------------------------------------------------------------


def test_load_C_returns_typed_values_keyed_by_gin_names(tmp_path):
    run = write_run(tmp_path / "run", lr=0.003)
    assert load_C(run) == {
        "training_loop.n_epochs": 5,
        "Adam.lr": 0.003,
        "CNN.channels": [16, 32],
        "data.name": "digits",
    }


def test_load_C_parses_config_gin_when_there_is_no_config_json(tmp_path):
    run = write_run(tmp_path / "run", lr=0.003)
    expected = load_C(run)
    (run / "config.json").unlink()
    assert load_C(run) == expected
    (run / "config.gin").write_text(
        "LR = 0.02\nAdam.lr = %LR\nAdam.betas = (0.9,\n    0.999)\n"
        "train/Adam.eps = 1e-8\ntraining_loop.model = @CNN()\ntraining_loop.optimizer = @Adam\n"
    )
    assert load_C(run) == {
        "Adam.lr": 0.02,
        "Adam.betas": [0.9, 0.999],
        "train/Adam.eps": 1e-8,
        "training_loop.model": "@CNN()",
        "training_loop.optimizer": "@Adam",
    }
    (run / "config.gin").unlink()
    with pytest.raises(RunFolderError, match="has neither config.json nor config.gin"):
        load_C(run)


def test_load_H_reads_one_row_per_epoch(tmp_path):
    run = write_run(tmp_path / "run", n_epochs=6, lr=0.01)
    H = load_H(run)
    assert list(H.columns) == ["epoch", "step", "time", "train_loss", "val_loss", "val_acc", "lr"]
    assert H["epoch"].tolist() == list(range(6))
    assert H["epoch"].dtype == np.int64 and H["val_acc"].dtype == np.float64
    assert H.loc[5, "val_acc"] == pytest.approx(0.7)
    assert H.loc[2, "step"] == 84 and (H["lr"] == 0.01).all()
    pd.testing.assert_frame_equal(H, reference_history(run))


@pytest.mark.parametrize(
    "tail",
    [
        '{"epoch": 3, "step": 112, "time": 13.0, "train_loss": 0',  # cut mid-number: would read as 0
        '{"epoch": 3, "step": 11',
        '{"epoch": 3, "step": 112, "time": 13.0, "train_loss": 0.5, "val_lo\n',  # newline but no end
        "\n\n",
    ],
)
def test_load_H_drops_an_incomplete_last_line(tmp_path, tail):
    run = write_run(tmp_path / "run", status="running", epochs=3, partial_line=tail)
    H = load_H(run)
    assert H["epoch"].tolist() == [0, 1, 2]
    assert H["train_loss"].tolist() == [2.0, 1.0, pytest.approx(0.666667)]


def test_load_H_keeps_metrics_that_appear_later_and_nan_values(tmp_path):
    run = write_run(tmp_path / "run", epochs=2)
    with open(run / "history.jsonl", "a") as f:
        f.write(json.dumps({**history_record(2), "val_f1": 0.5, "train_loss": float("nan")}) + "\n")
    H = load_H(run)
    assert H["val_f1"].isna().tolist() == [True, True, False]
    assert np.isnan(H.loc[2, "train_loss"]) and H.loc[2, "val_f1"] == 0.5


def test_load_H_of_a_run_without_a_finished_epoch_is_empty(tmp_path):
    run = write_run(tmp_path / "run", status="running", epochs=0)
    (run / "history.jsonl").unlink()
    H = load_H(run)
    assert H.empty and list(H.columns) == ["epoch", "step", "time"]


def test_load_H_names_a_damaged_line_before_the_last(tmp_path):
    run = write_run(tmp_path / "run", epochs=4)
    lines = (run / "history.jsonl").read_text().split("\n")
    lines[1] = lines[1][:20]
    (run / "history.jsonl").write_text("\n".join(lines))
    with pytest.raises(RunFolderError, match=r"history.jsonl line 2 is not valid JSON"):
        load_H(run)


def test_load_HC_returns_history_and_config(tmp_path):
    run = write_run(tmp_path / "run")
    H, C = load_HC(run)
    pd.testing.assert_frame_equal(H, load_H(run))
    assert load_C(run) == C


def test_not_a_run_folder_says_what_is_missing(tmp_path):
    with pytest.raises(RunFolderError, match="no such run folder"):
        load_H(tmp_path / "nowhere")
    run = write_run(tmp_path / "runs" / "a")
    (run / "meta.json").unlink()
    with pytest.raises(
        RunFolderError, match=r"meta.json is missing \(it has config.json, config.gin, history"
    ):
        load_C(run)
    write_run(tmp_path / "runs" / "b")
    with pytest.raises(RunFolderError, match=r"holds 1 run folders \(b\): use load_runs\(\)"):
        load_H(tmp_path / "runs")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunFolderError, match="empty is not a run folder: meta.json is missing"):
        load_C(tmp_path / "empty")


def test_format_versions_newer_or_missing_are_refused_naming_the_versions(tmp_path):
    newer = write_run(tmp_path / "newer", format_version=3)
    with pytest.raises(
        RunFolderError, match=r"format_version 3 is newer than this ginlab reads \(1, 2\); upgrade"
    ):
        load_H(newer)
    older = write_run(tmp_path / "older", format_version=None)
    with pytest.raises(RunFolderError, match="meta.json has no format_version.*reads format_version 1, 2"):
        load_C(older)


def test_effective_status_turns_an_old_heartbeat_into_stale():
    def meta(status, age):
        return {"status": status, "heartbeat": iso(NOW - timedelta(seconds=age))}

    assert effective_status(meta("running", 20), NOW) == "running"
    assert effective_status(meta("running", 301), NOW) == "stale"
    assert effective_status(meta("running", 100), NOW, stale_after=60) == "stale"
    assert effective_status(meta("finished", 10_000), NOW) == "finished"
    assert effective_status(meta("failed", 10_000), NOW) == "failed"
    assert effective_status({"status": "running", "heartbeat": "2026-11-23T15:00:00"},
                            datetime(2026, 11, 23, 15, 4, tzinfo=UTC)) == "running"  # fmt: skip


# -- many runs -------------------------------------------------------------------------------------------


def test_load_runs_gives_one_row_per_run_with_status_config_and_metrics(sweep):
    frame = load_runs(sweep)
    runs = frame.set_index("name")
    assert sorted(runs.index) == ["failed", "lr-0.001", "lr-0.01", "running", "stale"]
    assert runs["status"].to_dict() == {
        "failed": "failed", "lr-0.001": "finished", "lr-0.01": "finished",
        "running": "running", "stale": "stale",
    }  # fmt: skip
    assert runs["epochs"].to_dict() == {"failed": 2, "lr-0.001": 5, "lr-0.01": 4, "running": 3, "stale": 3}
    assert runs.loc["lr-0.01", "Adam.lr"] == 0.01 and runs.loc["lr-0.01", "training_loop.n_epochs"] == 4
    assert runs.loc["lr-0.001", "CNN.channels"] == [16, 32]
    finished = runs.loc["lr-0.001"]
    assert finished["final/val_acc"] == pytest.approx(0.66) and finished["best/val_acc"] == pytest.approx(
        0.66
    )
    assert finished["best/epoch"] == 4 and finished["test/test_acc"] == 0.983
    assert finished["eval/best-test/test_acc"] == 0.981
    assert finished["monitor"] == "val_acc" and finished["mode"] == "max"
    # No summary yet: final metrics come from the last complete history line, never the cut one.
    assert runs.loc["running", "final/epoch"] == 2 and runs.loc["running", "final/val_acc"] == pytest.approx(
        0.58
    )
    assert pd.isna(runs.loc["running", "best/val_acc"])
    assert runs.loc["failed", "error"] == "ValueError: loss is nan"
    assert runs.loc["lr-0.001", "run"] == str(sweep / "lr-0.001")
    started = json.loads((Path(runs.loc["lr-0.001", "run"]) / "meta.json").read_text())["started"]
    assert runs.loc["lr-0.001", "start"] == pd.Timestamp(started)
    assert runs.loc["lr-0.001", "duration"] == pytest.approx(3590, abs=1)
    assert runs.loc["stale", "duration"] == pytest.approx(2700, abs=1)  # until the last heartbeat
    assert pd.isna(runs.loc["running", "end"]) and runs.loc["running", "duration"] >= 3594
    columns = list(frame.columns)
    assert columns[:4] == ["run", "name", "status", "epochs"]
    assert columns.index("Adam.lr") < columns.index("final/val_acc") < columns.index("test/test_acc")


def test_load_runs_reports_unreadable_runs_in_one_warning_and_loads_the_rest(sweep):
    (sweep / "no-meta").mkdir()
    (sweep / "no-meta" / "history.jsonl").write_text(json.dumps(history_record(0)) + "\n")
    write_run(sweep / "newer", format_version=3)
    write_run(sweep / "broken-meta")
    (sweep / "broken-meta" / "meta.json").write_text('{"format_version": 1, "sta')
    (sweep / "notes").mkdir()  # a plain folder is neither a run nor a problem
    with pytest.warns(UnreadableRunsWarning) as caught:
        runs = load_runs(sweep)
    assert len(caught) == 1
    message = str(caught[0].message)
    assert message.startswith("3 run folder(s) could not be read and were left out:")
    assert f"{sweep / 'no-meta'}: meta.json is missing (it has history.jsonl)" in message
    assert "format_version 3 is newer than this ginlab reads (1, 2)" in message
    assert f"{sweep / 'broken-meta' / 'meta.json'} is not valid JSON" in message
    assert len(runs) == 5 and set(runs.attrs["unreadable"]) == {
        str(sweep / "no-meta"), str(sweep / "newer"), str(sweep / "broken-meta"),
    }  # fmt: skip
    with pytest.raises(RunFolderError, match="3 run folder"):
        load_runs(sweep, on_error="raise")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(load_runs(sweep, on_error="ignore")) == 5


def test_load_runs_selects_on_config_values_before_reading_the_rest(sweep):
    assert load_runs(sweep, select={"Adam.lr": 0.01})["name"].tolist() == ["lr-0.01"]
    assert load_runs(sweep, select={"Adam.lr": {0.01, 0.1}})["name"].tolist() == ["failed", "lr-0.01"]
    assert load_runs(sweep, select={"Adam.lr": lambda lr: lr > 0.02})["name"].tolist() == ["failed", "stale"]
    assert load_runs(sweep, select=lambda C: C["training_loop.n_epochs"] == 4)["name"].tolist() == ["lr-0.01"]
    with pytest.raises(KeyError, match="'Adam.lrr', which no run's config has; close names: Adam.lr"):
        load_runs(sweep, select={"Adam.lrr": 0.01})


def test_load_runs_accepts_a_run_a_glob_a_list_or_a_frame(sweep):
    assert load_runs(sweep / "running")["status"].tolist() == ["running"]
    assert load_runs(f"{sweep}/lr-*")["name"].tolist() == ["lr-0.001", "lr-0.01"]
    assert load_runs([sweep / "stale", str(sweep / "failed")])["status"].tolist() == ["stale", "failed"]
    runs = load_runs(sweep)
    assert load_runs(runs[runs["status"] == "finished"])["name"].tolist() == ["lr-0.001", "lr-0.01"]
    with pytest.raises(RunFolderError, match="no such run folder or folder of runs"):
        load_runs(sweep / "typo")
    with pytest.warns(UserWarning, match="no run folders"):
        assert load_runs(sweep / "failed" / "configs").empty


def test_load_histories_equals_each_history_read_the_plain_way(sweep):
    H = load_histories(sweep, cache=False)
    assert H["run"].cat.categories.tolist() == [
        str(sweep / name) for name in ("failed", "lr-0.001", "lr-0.01", "running", "stale")
    ]
    for run, part in H.groupby("run", observed=True):
        expected = reference_history(run)
        pd.testing.assert_frame_equal(part.drop(columns="run").reset_index(drop=True), expected)
    assert len(H) == 2 + 5 + 4 + 3 + 3


def test_load_histories_keeps_wanted_metrics_and_selected_runs(sweep):
    H = load_histories(sweep, metrics=["val_*"], select={"Adam.lr": {0.001, 0.01}})
    assert list(H.columns) == ["run", "epoch", "step", "time", "val_loss", "val_acc"]
    assert H["run"].unique().tolist() == [str(sweep / "lr-0.001"), str(sweep / "lr-0.01")]
    runs = load_runs(sweep)
    H = load_histories(runs[runs["status"] == "stale"], metrics="lr")
    assert list(H.columns) == ["run", "epoch", "step", "time", "lr"] and (H["lr"] == 0.03).all()
    with pytest.raises(
        KeyError, match="metric 'val_acc5' is in no run's history; the histories have: train_loss"
    ):
        load_histories(sweep, metrics="val_acc5")


def test_load_histories_cache_notices_appended_rewritten_new_and_removed_runs(sweep, monkeypatch):
    first = load_histories(sweep)
    cache_file = sweep / FOLDER_NAME / FILE_NAME
    assert cache_file.is_file()
    assert [p.name for p in (sweep / FOLDER_NAME).iterdir()] == [FILE_NAME]  # no temporary file left

    read = []
    original = jsonl.read_tables
    monkeypatch.setattr(jsonl, "read_tables", lambda paths: read.extend(paths) or original(paths))
    pd.testing.assert_frame_equal(load_histories(sweep), first)
    assert read == []  # everything came from the cache

    with open(sweep / "running" / "history.jsonl", "a") as f:  # the writer finishes the cut line, adds one
        f.write('12, "time": 13.0}\n' + json.dumps(history_record(4)) + "\n")
    rows = [history_record(epoch) for epoch in range(2)]  # a reload cut lr-0.01 back to 2 epochs
    (sweep / "lr-0.01" / "history.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    write_run(sweep / "new", lr=0.5, epochs=1, status="running")
    os.rename(sweep / "failed", sweep.parent / "failed-elsewhere")
    H = load_histories(sweep)
    assert sorted(read) == sorted(
        str(sweep / name / "history.jsonl") for name in ("running", "lr-0.01", "new")
    )
    counts = H.groupby("run", observed=True).size()
    assert counts.to_dict() == {
        str(sweep / name): count
        for name, count in [("lr-0.001", 5), ("lr-0.01", 2), ("new", 1), ("running", 5), ("stale", 3)]
    }
    running = H[H["run"] == str(sweep / "running")]
    assert running["epoch"].tolist() == [0, 1, 2, 3, 4] and running["step"].tolist()[3] == 112
    for run, part in H.groupby("run", observed=True):
        pd.testing.assert_frame_equal(part.drop(columns="run").reset_index(drop=True), reference_history(run))


def test_load_histories_cache_goes_to_xdg_cache_home_when_the_folder_cannot_be_written(
    sweep, tmp_path, monkeypatch
):
    (sweep / FOLDER_NAME).write_text("a file where the cache folder would go")  # makedirs fails, even as root
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    expected = load_histories(sweep, cache=False)
    pd.testing.assert_frame_equal(load_histories(sweep), expected)
    written = list((tmp_path / "xdg" / "ginlab" / "histories").glob("*.parquet"))
    assert len(written) == 1
    read = []
    original = jsonl.read_tables
    monkeypatch.setattr(jsonl, "read_tables", lambda paths: read.extend(paths) or original(paths))
    pd.testing.assert_frame_equal(load_histories(sweep), expected)
    assert read == []


def test_load_histories_reports_a_damaged_history_and_loads_the_rest(sweep):
    path = sweep / "lr-0.01" / "history.jsonl"
    lines = path.read_text().split("\n")
    path.write_text("\n".join([lines[0], "{not json", *lines[1:]]))
    with pytest.warns(UnreadableRunsWarning, match=r"lr-0.01/history.jsonl line 2 is not valid JSON"):
        H = load_histories(sweep)
    assert str(sweep / "lr-0.01") not in H["run"].cat.categories
    assert H["run"].nunique() == 4


def test_load_histories_says_which_column_cannot_be_combined(sweep):
    load_histories(sweep)  # cached, val_acc numbers
    run = write_run(sweep / "text-metric", epochs=1)
    (run / "history.jsonl").write_text(json.dumps({**history_record(0), "val_acc": "n/a"}) + "\n")
    with pytest.raises(RunFolderError, match=r"histories under .*sweep cannot be combined: .*val_acc"):
        load_histories(sweep)


def test_fast_many_file_path_gives_the_rows_of_the_plain_reader(tmp_path, monkeypatch):
    monkeypatch.setattr(jsonl, "CHUNK_BYTES", 600)  # several chunks
    contents = {
        "plain": [history_record(epoch) for epoch in range(4)],
        "ints-then-floats": [
            {"epoch": 0, "step": 1, "time": 1, "val_acc": 1},
            {"epoch": 1, "step": 2, "time": 2.5, "val_acc": 0.5},
        ],
        "nan-and-infinity": [
            {"epoch": 0, "step": 1, "time": 1.0, "val_loss": float("nan")},
            {"epoch": 1, "step": 2, "time": 2.0, "val_loss": float("inf")},
        ],
        "new-key": [
            {"epoch": 0, "step": 1, "time": 1.0},
            {"epoch": 1, "step": 2, "time": 2.0, "val_f1": 0.3},
        ],
    }
    paths = []
    for name, records in contents.items():
        paths.append(str(tmp_path / f"{name}.jsonl"))
        Path(paths[-1]).write_text("".join(json.dumps(record) + "\n" for record in records))
    (tmp_path / "blank-line.jsonl").write_text('{"epoch": 0, "step": 1}\n\n{"epoch": 1, "step": 2}\n{"epo')
    (tmp_path / "two-on-a-line.jsonl").write_text('{"epoch": 0}{"epoch": 1}\n{"epoch": 2}\n')
    paths += [
        str(tmp_path / "blank-line.jsonl"),
        str(tmp_path / "missing.jsonl"),
        str(tmp_path / "two-on-a-line.jsonl"),
    ]
    tables = jsonl.read_tables(paths)
    assert tables.counts == [4, 2, 2, 2, 2, 0, 0]
    assert list(tables.errors) == [str(tmp_path / "two-on-a-line.jsonl")]
    frame = tables.table.to_pandas()
    position = 0
    for path, count in zip(paths, tables.counts, strict=True):
        if count:
            got = frame.iloc[position : position + count].dropna(axis=1, how="all").reset_index(drop=True)
            expected = pd.DataFrame.from_records(jsonl.read_records(path))
            pd.testing.assert_frame_equal(got, expected, check_dtype=False, obj=path)
        position += count


def test_read_last_record_reads_only_the_tail_and_skips_a_cut_line(tmp_path, monkeypatch):
    monkeypatch.setattr(jsonl, "TAIL_BYTES", 16)
    path = tmp_path / "history.jsonl"
    path.write_text(
        json.dumps(history_record(0)) + "\n" + json.dumps(history_record(1)) + "\n" + '{"epoch": 2, "s'
    )
    assert jsonl.read_last_record(path) == history_record(1)
    path.write_text(json.dumps(history_record(0)) + "\n")
    assert jsonl.read_last_record(path) == history_record(0)
    assert jsonl.read_last_record(tmp_path / "missing.jsonl") is None


def test_importing_the_loaders_does_not_import_torch_or_lightning():
    code = (
        "import sys; from ginlab import load_C, load_H, load_HC, load_runs, load_histories; "
        "print(sorted(m for m in sys.modules if "
        "m.split('.')[0] in ('torch', 'lightning', 'pytorch_lightning')))"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert result.stdout.strip() == "[]"


EXAMPLE_RUN = Path(__file__).parents[1] / "results" / "example_run"


@pytest.mark.skipif(not (EXAMPLE_RUN / "meta.json").is_file(), reason="results/example_run is not there")
def test_the_committed_example_run_written_by_the_real_writer_loads():
    from ginlab.config.reader import read_gin as parse_config_gin

    C = load_C(EXAMPLE_RUN)
    assert parse_config_gin((EXAMPLE_RUN / "config.gin").read_text()) == C  # both files say the same
    pd.testing.assert_frame_equal(load_H(EXAMPLE_RUN), reference_history(EXAMPLE_RUN))
    run = load_runs(EXAMPLE_RUN).iloc[0]
    assert run["status"] == "finished" and run["epochs"] == C["training_loop.n_epochs"]
