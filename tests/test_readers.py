"""The readers ginlab has one of each: JSON-lines files (ginlab.runfolder.jsonlines) and gin text
(ginlab.config.reader).

Every test writes small real files in tmp_path and reads them through each place that uses the reader.
"""

import json
from datetime import UTC, datetime

import pytest
from conftest import ROOT, train, tree_snapshot

from ginlab.analysis import RunFolderError as ReadError
from ginlab.analysis import UnreadableRunsWarning, jsonl, load_C, load_H, load_histories, load_runs
from ginlab.config.reader import read_gin
from ginlab.errors import RunFolderError
from ginlab.experiments.backends.plan import plan_run
from ginlab.experiments.backends.slurm import SlurmBackend, SlurmOptions
from ginlab.experiments.experiment import ExperimentError, Run
from ginlab.experiments.status import epochs_done
from ginlab.runfolder import RunFolder, jsonlines

# -- JSON-lines: a cut or garbled last line is dropped, a damaged line before it is an error ---------------

ROWS = [
    {"epoch": e, "step": 10 * (e + 1), "time": 1.5 * (e + 1), "train_loss": 1 / (e + 1)} for e in range(3)
]
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
def test_a_damaged_line_before_the_last_is_an_error_naming_the_file_the_line_and_the_fix(
    tmp_path, line, problem
):
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
        "format_version": 2, "status": status, "started": now, "ended": None, "heartbeat": now,
        "host": "here", "pid": 1, "command": [], "reloads": [], "error": None, "exit_code": None,
    }))  # fmt: skip
    run.config_json.write_text(json.dumps({"training_loop.n_epochs": 5}))
    run.history.write_text(history)
    return run


def test_loaders_list_a_run_with_a_damaged_history_line_and_load_the_others(tmp_path):
    write_run(tmp_path / "runs" / "good", WHOLE + '{"epoch": 3, "st')
    lines = WHOLE.splitlines()
    bad = write_run(
        tmp_path / "runs" / "bad", "\n".join([*lines[:2], lines[2][:12], ""]) + '{"epoch": 3, "st'
    )
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
        run.record_reload(["bin/train.py"], None, [], from_step=0)
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
    with pytest.raises(
        ExperimentError, match=r"submissions.jsonl line 1 is not valid JSON.*cancel that array"
    ):
        backend.last_jobs()


# -- gin text: one reader, two modes ---------------------------------------------------------------------

CONFIG = """# What this config is: a full-line comment.
import ginlab.models                       # imports name code, not values
LR = 3e-3                                  # a macro
STEPS = %LR
training_loop.optimizer = @torch.optim.Adam  # the optimizer class itself
training_loop.model = @CNN()
training_loop.callbacks = [
    "lr_monitor",   # a comment inside a multi-line value
    "swa",
]
torch.optim.Adam.lr = %LR
torch.optim.Adam.betas = (0.9,
                          0.999)
train/torch.optim.Adam.eps = 1e-8
eval/CNN.dropout = 0.0
schedule.warmup = %STEPS
schedule.unknown = %NOT_BOUND
schedule.fn = \\
    @train/warmup()
data.name = "digits # not a comment"
data.tag = 'a#b'
data.sizes = {"train": (100, 20), 'val': [@x, %LR], "none": None}
data.single = (1,)
data.empty = ()
data.flag = True
cnn:
    channels = [8, 16]
    width = 2
"""

CONFIG_VALUES = {
    "training_loop.optimizer": "@torch.optim.Adam",
    "training_loop.model": "@CNN()",
    "training_loop.callbacks": ["lr_monitor", "swa"],
    "torch.optim.Adam.lr": 0.003,
    "torch.optim.Adam.betas": [0.9, 0.999],
    "train/torch.optim.Adam.eps": 1e-8,
    "eval/CNN.dropout": 0.0,
    "schedule.warmup": 0.003,
    "schedule.unknown": "%NOT_BOUND",
    "schedule.fn": "@train/warmup()",
    "data.name": "digits # not a comment",
    "data.tag": "a#b",
    "data.sizes": {"train": [100, 20], "val": ["@x", 0.003], "none": None},
    "data.single": [1],
    "data.empty": [],
    "data.flag": True,
    "cnn.channels": [8, 16],
    "cnn.width": 2,
}

CONFIG_TEXTS = {
    "LR": "0.003",
    "STEPS": "%LR",
    "training_loop.optimizer": "@torch.optim.Adam",
    "training_loop.model": "@CNN()",
    "training_loop.callbacks": "['lr_monitor', 'swa']",
    "torch.optim.Adam.lr": "%LR",
    "torch.optim.Adam.betas": "(0.9, 0.999)",
    "train/torch.optim.Adam.eps": "1e-08",
    "eval/CNN.dropout": "0.0",
    "schedule.warmup": "%STEPS",
    "schedule.unknown": "%NOT_BOUND",
    "schedule.fn": "@train/warmup()",
    "data.name": "'digits # not a comment'",
    "data.tag": "'a#b'",
    "data.sizes": "{'train': (100, 20), 'val': [@x, %LR], 'none': None}",
    "data.single": "(1,)",
    "data.empty": "()",
    "data.flag": "True",
    "cnn.channels": "[8, 16]",
    "cnn.width": "2",
}


def test_values_mode_gives_typed_values_with_macros_resolved():
    values = read_gin(CONFIG, "x.gin")
    assert values == CONFIG_VALUES
    assert list(values) == list(CONFIG_VALUES)  # in the order of the file


def test_text_mode_gives_one_text_per_value_with_macros_kept():
    assert read_gin(CONFIG, "x.gin", mode="text") == CONFIG_TEXTS


def test_text_mode_ignores_comments_layout_quotes_and_number_spelling():
    other = """LR = 0.003
STEPS = %LR
training_loop.optimizer = @torch.optim.Adam
training_loop.model = @CNN()
training_loop.callbacks = ['lr_monitor', 'swa']
torch.optim.Adam.lr = %LR
torch.optim.Adam.betas = (0.9, 0.999)
train/torch.optim.Adam.eps = 0.00000001
eval/CNN.dropout = 0.
schedule.warmup = %STEPS
schedule.unknown = %NOT_BOUND
schedule.fn = @train/warmup()  # where the warm-up comes from
data.name = 'digits # not a comment'
data.tag = "a#b"
data.sizes = {'train': (100, 20), "val": [@x, %LR], 'none': None}
data.single = (1,)
data.empty = ()
data.flag = True
cnn.channels = [8,
                16]
cnn.width = 2
"""
    assert read_gin(other, mode="text") == CONFIG_TEXTS


def test_a_later_binding_wins_in_both_modes():
    text = "a.x = 1\nLR = 1\na.y = %LR\na.x = 2\nLR = 5\n"
    assert read_gin(text) == {"a.x": 2, "a.y": 5}
    assert read_gin(text, mode="text") == {"a.x": "2", "LR": "5", "a.y": "%LR"}


def test_macros_that_refer_to_each_other_in_a_cycle_stay_unresolved():
    assert read_gin("A = %B\nB = %A\nf.x = %A\n") == {"f.x": "%A"}


def test_includes_are_followed_relative_to_root_only_when_root_is_given(tmp_path):
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "base.gin").write_text(
        'include "configs/more.gin"\ninclude "configs/gone.gin"\nLR = 0.1\nf.lr = %LR\nf.n = 1\n'
    )
    (tmp_path / "configs" / "more.gin").write_text('include "configs/base.gin"  # a cycle\nf.m = @g\n')
    top = 'include "configs/base.gin"\nf.n = 2\n'
    assert read_gin(top, mode="text", root=tmp_path) == {
        "include configs/base.gin": "included",
        "f.m": "@g",
        "include configs/gone.gin": "missing",
        "LR": "0.1",
        "f.lr": "%LR",
        "f.n": "2",
    }
    assert read_gin(top, root=tmp_path) == {
        "include configs/base.gin": "included",
        "f.m": "@g",
        "include configs/gone.gin": "missing",
        "f.lr": 0.1,
        "f.n": 2,
    }
    assert read_gin(top) == read_gin(top, mode="values") == {"f.n": 2}  # no root: includes skipped
    assert read_gin(top, mode="text") == {"f.n": "2"}


@pytest.mark.parametrize("mode", ["values", "text"])
@pytest.mark.parametrize(
    "text, where",
    [
        ("a.x = 1\na.y = = 2\n", "line 2: Unable to parse value: 'a.y = = 2'"),
        ("a.x = 1\na.y 2\n", "line 2: Couldn't parse statement"),
        ("a.x = [1,\n  2\n", "line 3: EOF in multi-line statement (a bracket or string left open)"),
    ],
    ids=["value", "statement", "open bracket"],
)
def test_invalid_gin_names_the_file_the_line_and_what_gin_expects(text, where, mode):
    with pytest.raises(ValueError) as raised:
        read_gin(text, "configs/x.gin", mode=mode)
    message = str(raised.value)
    assert message.startswith(f"configs/x.gin is not valid gin: {where}")
    assert message.endswith(
        "Expected gin statements such as `configurable.param = value`; correct that line."
    )


def test_an_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="mode must be 'values' or 'text', not 'typed'"):
        read_gin("a.x = 1\n", mode="typed")


def test_load_C_reads_config_gin_with_the_values_mode(tmp_path):
    run = write_run(tmp_path / "run", WHOLE)
    run.config_json.unlink()
    run.config_gin.write_text(CONFIG)
    assert load_C(run.path) == CONFIG_VALUES
    run.config_gin.write_text("a.x = [1,\n")
    with pytest.raises(ReadError, match=r"config.gin is not valid gin: line 2: EOF in multi-line statement"):
        load_C(run.path)


def prepared_run(tmp_path, saved: str, prepared: str, bindings: str = "") -> Run:
    """A finished run started with `saved` (as bin/train.py copies it into configs/, killed before config.json:
    what it was started with is the reference) and a prepared config."""
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "prepared.gin").write_text(prepared)
    folder = tmp_path / "runs" / "a"
    (folder / "configs").mkdir(parents=True)
    (folder / "configs" / "00-prepared.gin").write_text(saved)
    (folder / "configs" / "bindings.gin").write_text(bindings)
    now = datetime.now(UTC).isoformat(timespec="seconds")
    (folder / "meta.json").write_text(json.dumps({"format_version": 2, "status": "interrupted", "started": now,
                                                 "heartbeat": now, "host": "elsewhere", "pid": 1}))  # fmt: skip
    return Run(0, "a", {}, folder, ["prepared.gin"])


def test_experiments_compare_a_run_folder_with_its_prepared_config_by_value(tmp_path):
    # Comments, layout, quotes and the spelling of a number do not count; a refused difference is named.
    uncommented = (
        CONFIG.replace("# a comment inside a multi-line value", "")
        .replace("# the optimizer class itself", "")
        .replace("LR = 3e-3", "LR = 0.003")
    )
    run = prepared_run(tmp_path, CONFIG, uncommented)
    assert plan_run(run, tmp_path).action == "reload"
    run = prepared_run(tmp_path / "2", CONFIG, CONFIG.replace("data.tag = 'a#b'", "data.tag = 'c'"))
    state = plan_run(run, tmp_path / "2")
    assert state.action == "refuse" and state.reasons == ["data.tag: run folder has 'a#b', prepared 'c'"]


def test_experiments_refuse_a_run_folder_whose_saved_config_is_not_valid_gin(tmp_path):
    run = prepared_run(tmp_path, "a.x = = 1\n", "a.x = 1\n")
    state = plan_run(run, tmp_path)
    assert state.action == "refuse"
    assert any(f"{run.save_dir}/configs/00-prepared.gin is not valid gin: line 1" in r for r in state.reasons)


def test_a_reload_refuses_a_history_shorter_than_its_checkpoint_counts(tmp_path):
    """Rows lost after the checkpoint counted them (a truncated copy):
    refused, untouched, with the way out."""
    run = tmp_path / "run"
    train(run, ROOT / "configs" / "toy.gin", check=0)
    history = run / "history.jsonl"
    history.write_text("".join(history.read_text().splitlines(keepends=True)[:1]))  # 3 rows -> 1
    before = tree_snapshot(run)
    proc = train(run, "-b", "training_loop.reload=True#training_loop.n_epochs=4", check=2)
    assert (
        f"error: Cannot reload {run}: history.jsonl holds 1 rows, but the checkpoint to resume was written "
        f"after 3" in proc.stderr
    )
    assert "delete the newer step-*.ckpt files" in proc.stderr
    assert tree_snapshot(run) == before


def test_an_include_is_found_beside_the_including_file_as_bin_train_finds_it(tmp_path):
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "base.gin").write_text("f.n = 1\n")
    (tmp_path / "configs" / "main.gin").write_text('include "base.gin"\nf.m = 2\n')
    main = tmp_path / "configs" / "main.gin"
    assert read_gin(main.read_text(), str(main), mode="text", root=tmp_path / "elsewhere") == {
        "f.n": "1",
        "f.m": "2",
    }
