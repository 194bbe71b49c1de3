"""The readers ginlab has one of each: JSON-lines files (ginlab.jsonlines) and gin text (ginlab.gin_reader).

Every test writes small real files in tmp_path and reads them through each place that uses the reader.
"""

import json
from datetime import UTC, datetime

import pytest
from conftest import ROOT, train, tree_snapshot

from ginlab import jsonlines
from ginlab.analysis import RunFolderError as ReadError
from ginlab.analysis import UnreadableRunsWarning, jsonl, load_H, load_histories, load_runs
from ginlab.experiments.cli import epochs_done
from ginlab.experiments.experiment import ExperimentError
from ginlab.experiments.slurm import SlurmBackend, SlurmOptions
from ginlab.run_folder import RunFolder, RunFolderError

# -- JSON-lines: a cut or garbled last line is dropped, a damaged line before it is an error ---------------

ROWS = [{"epoch": e, "step": 10 * (e + 1), "time": 1.5 * (e + 1), "train_loss": 1 / (e + 1)} for e in range(3)]
WHOLE = "".join(json.dumps(row) + "\n" for row in ROWS)


def with_line_2_cut(last: str = "") -> str:
    """WHOLE with its second line cut short: damage no crash can cause (only a last line is ever cut)."""
    lines = WHOLE.splitlines(keepends=True)
    return lines[0] + lines[1][:15] + "\n" + lines[2] + last

DROPPED_LAST_LINES = {
    "cut mid-number": '{"epoch": 3, "step": 40, "time": 6.0, "train_loss": 0',
    "whole object without its newline": '{"epoch": 3, "step": 40, "time": 6.0, "train_loss": 0.25}',
    "garbled, with its newline": '{"epoch": 3, "st\x00\x00\x00\n',
    "JSON but not an object": "3\n",
    "blank lines only": "\n  \n",
}


@pytest.mark.parametrize("last", DROPPED_LAST_LINES.values(), ids=DROPPED_LAST_LINES)
def test_a_cut_or_garbled_last_line_is_dropped_by_every_reader(tmp_path, last):
    path = tmp_path / "history.jsonl"
    path.write_text(WHOLE + last)
    assert jsonlines.read_records(path) == ROWS
    assert RunFolder(tmp_path).history_rows() == ROWS  # the writer side (reload, summary)
    tables = jsonl.read_tables([str(path)])  # the analysis fast path
    assert tables.counts == [3] and not tables.errors
    assert tables.table.to_pylist() == ROWS
    assert jsonl.read_last_record(path) == ROWS[-1]
    assert epochs_done(tmp_path) == "3"  # experiments' status table


def test_a_missing_or_empty_file_has_no_rows(tmp_path):
    assert jsonlines.read_records(tmp_path / "history.jsonl") == []
    assert RunFolder(tmp_path).history_rows() == []
    assert jsonl.read_last_record(tmp_path / "history.jsonl") is None
    assert epochs_done(tmp_path) == ""
    (tmp_path / "history.jsonl").write_text('{"epoch": 0, "st')
    assert jsonlines.read_records(tmp_path / "history.jsonl") == []
    assert jsonl.read_last_record(tmp_path / "history.jsonl") is None


@pytest.mark.parametrize(
    "line, problem",
    [('{"epoch": 1, "step": 2', "is not valid JSON"), ("[1, 2]", "is not a JSON object")],
    ids=["cut", "not an object"],
)
def test_a_damaged_line_before_the_last_is_an_error_naming_the_file_the_line_and_the_fix(tmp_path, line, problem):
    path = tmp_path / "history.jsonl"
    lines = WHOLE.splitlines()
    lines[1] = line
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(jsonlines.JsonLinesError) as raised:
        jsonlines.read_records(path)
    message = str(raised.value)
    assert message.startswith(f"{path} line 2 {problem}")
    assert "Expected one JSON object per line" in message
    assert "Restore it from a copy, or repair line 2" in message
    with pytest.raises(jsonlines.JsonLinesError, match="line 2"):
        RunFolder(tmp_path).history_rows()
    tables = jsonl.read_tables([str(path)])
    assert tables.counts == [0] and tables.errors == {str(path): message}


def test_only_one_last_line_is_dropped_a_garbled_line_before_a_cut_one_is_an_error(tmp_path, monkeypatch):
    path = tmp_path / "history.jsonl"
    path.write_text(WHOLE + "garbled\n" + '{"epoch": 4, "st')
    with pytest.raises(jsonlines.JsonLinesError, match=r"line 4 is not valid JSON"):
        jsonlines.read_records(path)
    monkeypatch.setattr(jsonl, "TAIL_BYTES", 16)  # the tail alone shows the damage; the message has the line
    with pytest.raises(jsonlines.JsonLinesError, match=r"line 4 is not valid JSON"):
        jsonl.read_last_record(path)
    assert epochs_done(tmp_path) == "4"  # a display: it counts the kept lines without parsing them


def test_read_last_record_reaches_back_past_a_garbled_last_line(tmp_path, monkeypatch):
    monkeypatch.setattr(jsonl, "TAIL_BYTES", 16)
    path = tmp_path / "history.jsonl"
    path.write_text(WHOLE + '{"epoch": 3, "step": 40, "time": 6.0, "tr\x00\x00\n')
    assert jsonl.read_last_record(path) == ROWS[-1]


def write_run(folder, history: str, status: str = "running") -> RunFolder:
    """A run folder as the writer leaves it mid-run: meta.json, config.json and the given history."""
    run = RunFolder(folder)
    folder.mkdir(parents=True)
    now = datetime.now(UTC).isoformat(timespec="seconds")
    run.meta.write_text(json.dumps({
        "format_version": 1, "status": status, "started": now, "ended": None, "heartbeat": now, "host": "here",
        "pid": 1, "command": [], "reloads": [], "error": None, "exit_code": None,
    }))  # fmt: skip
    run.config_json.write_text(json.dumps({"training_loop.n_epochs": 5}))
    run.history.write_text(history)
    return run


def test_loaders_list_a_run_with_a_damaged_history_line_and_load_the_others(tmp_path):
    write_run(tmp_path / "runs" / "good", WHOLE + '{"epoch": 3, "st')
    lines = WHOLE.splitlines()
    bad = write_run(tmp_path / "runs" / "bad", "\n".join([*lines[:2], lines[2][:12], ""]) + '{"epoch": 3, "st')
    with pytest.warns(UnreadableRunsWarning, match=r"bad/history.jsonl line 3 is not valid JSON"):
        runs = load_runs(tmp_path / "runs")
    assert runs["name"].tolist() == ["good"] and runs["epochs"].tolist() == [3]
    with pytest.warns(UnreadableRunsWarning, match=r"bad/history.jsonl line 3 is not valid JSON"):
        histories = load_histories(tmp_path / "runs", cache=False)
    assert histories["epoch"].tolist() == [0, 1, 2]
    with pytest.raises(ReadError, match=r"history.jsonl line 3 is not valid JSON.*Restore it from a copy"):
        load_H(bad.path)


def test_a_reload_rewrites_a_log_whose_garbled_last_line_it_dropped(tmp_path):
    """Else the next epoch's line would follow the garbled one, which readers then refuse as damage."""
    run = RunFolder(tmp_path)
    run.history.write_text(WHOLE + '{"epoch": 3, "st\x00\x00\n')
    run.cut_history(3, 0)
    assert run.history.read_text() == WHOLE
    assert not run.steps.exists()  # nothing to cut, nothing created
    run.append_history({"epoch": 3})
    assert run.history_rows() == [*ROWS, {"epoch": 3}]
    run.cut_history(2, 0)  # back to an earlier checkpoint
    assert run.history_rows() == ROWS[:2]


@pytest.mark.parametrize("damaged", ["history", "steps"])
def test_a_reload_refuses_a_damaged_log_before_changing_anything(tmp_path, damaged):
    run = write_run(tmp_path / "run", WHOLE, status="interrupted")
    run.steps.write_text(WHOLE)
    path = getattr(run, damaged)
    path.write_text(with_line_2_cut())
    before = tree_snapshot(run.path)
    with pytest.raises(RunFolderError) as raised:
        run.record_reload(["bin/train.py"], None, [])
    message = str(raised.value)
    assert message.startswith(f"Cannot reload {run.path}: {path} line 2 is not valid JSON")
    assert message.endswith("Nothing was changed.") and "Restore it from a copy" in message
    assert tree_snapshot(run.path) == before


def test_bin_train_refuses_to_reload_a_run_whose_history_is_damaged_and_writes_nothing(tmp_path):
    run = write_run(tmp_path / "run", with_line_2_cut('{"epoch": 3, "st'), status="interrupted")
    before = tree_snapshot(run.path)
    proc = train(run.path, "-b", "training_loop.reload=True", check=2)
    assert f"error: Cannot reload {run.path}: {run.history} line 2 is not valid JSON" in proc.stderr
    assert "Restore it from a copy, or repair line 2 by hand" in proc.stderr
    assert tree_snapshot(run.path) == before


def test_experiments_name_a_damaged_slurm_submissions_line(tmp_path):
    backend = SlurmBackend("exp", ROOT, tmp_path, SlurmOptions())
    entry = {"array_id": "17", "indices": [0, 1], "names": ["a", "b"]}
    jsonlines.append_line(backend.submissions, json.dumps(entry))
    jsonlines.append_line(backend.submissions, json.dumps({"array_id": "18", "indices": [1], "names": ["b"]}))
    assert backend.last_jobs() == {"a": "17_0", "b": "18_1"}
    backend.submissions.write_text('{"array_id": "17", "ind\n' + json.dumps(entry) + "\n")
    with pytest.raises(ExperimentError, match=r"submissions.jsonl line 1 is not valid JSON.*cancel that array"):
        backend.last_jobs()
