"""The board's data endpoints, on generated run folders, compared with ginlab.analysis on the same folders."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote, urlencode

import numpy as np
import pandas as pd
import pytest
from board_runs import BoardServer, append_epoch, write_experiment, write_run, write_sweep

from ginlab.analysis import load_C, load_histories, load_meta, load_runs

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("board") / "results"
    write_sweep(root / "sweep", lrs=(0.001, 0.003, 0.01), seeds=(0, 1, 2), widths=(32, 64))
    write_run(root / "live", status="running", lr=0.003, partial_line='{"epoch": 3, "st')
    write_run(root / "dead", status="running", lr=0.03, heartbeat_age=900)
    write_run(root / "crashed", status="failed", lr=0.1, epochs=2)
    write_run(root / "exploded", status="diverged", lr=0.3, epochs=3)
    write_run(root / "cut", status="pruned", lr=0.0003, epochs=2)
    write_experiment(root)
    return root


@pytest.fixture(scope="module")
def served(tree):
    server = BoardServer(tree)
    yield server
    server.close()


@pytest.fixture(scope="module")
def reference(tree) -> pd.DataFrame:
    """load_runs on the same folders, with the board's names (paths relative to the root)."""
    frame = load_runs(tree, on_error="ignore")
    frame["name"] = [os.path.relpath(run, tree) for run in frame["run"]]
    return frame.set_index("name", drop=False)


def all_rows(served, **params) -> tuple[int, list[dict]]:
    status, data, _ = served.get("api/runs?" + urlencode({**params, "start": 0, "end": 10_000}))
    assert status == 200, data
    return data["total"], data["rows"]


def test_runs_table_has_one_row_per_run_with_load_runs_values(served, reference):
    total, rows = all_rows(served)
    assert total == len(reference) == 24
    for row in rows:
        expected = reference.loc[row["name"]]
        assert row["status"] == expected["status"]
        assert row["epochs"] == expected["epochs"]
        assert row["Adam.lr"] == expected["Adam.lr"]
        for column in ("best/val_acc", "test/test_acc", "final/val_loss", "eval/best-test/test_acc"):
            if pd.isna(expected[column]):
                assert row[column] is None
            else:
                assert row[column] == pytest.approx(expected[column])
        assert row["CNN.channels"] == "[16, 32]"  # a list value, as its JSON text
    statuses = {row["name"]: row["status"] for row in rows}
    assert statuses["live"] == "running" and statuses["dead"] == "stale"
    assert statuses["exploded"] == "diverged" and statuses["cut"] == "pruned"


def test_meta_lists_columns_statuses_and_defaults(served):
    status, meta, _ = served.get("api/meta")
    assert status == 200
    assert meta["counts"] == {
        "finished": 19,
        "running": 1,
        "stale": 1,
        "failed": 1,
        "diverged": 1,
        "pruned": 1,
    }
    assert "Adam.lr" in meta["columns"]["config"] and "best/val_acc" in meta["columns"]["metrics"]
    assert meta["monitor"] == "val_acc"
    assert {"name", "status", "progress", "age", "Adam.lr", "CNN.width", "best/val_acc"} <= set(
        meta["default_columns"]
    )
    assert "data.name" not in meta["default_columns"]  # the same in every run
    assert meta["experiments"] == ["tune_lr"]


def test_sort_by_a_metric_puts_missing_values_last(served, reference):
    _, rows = all_rows(served, sort="best/val_acc:desc")
    expected = reference.sort_values("best/val_acc", ascending=False, na_position="last", kind="stable")
    assert [r["best/val_acc"] for r in rows] == [None if pd.isna(v) else v for v in expected["best/val_acc"]]
    _, rows = all_rows(served, sort="CNN.width:asc,best/val_acc:desc")
    widths = [r["CNN.width"] for r in rows if r["CNN.width"] is not None]
    assert widths == sorted(widths)


def test_filter_by_expression_text_and_status(served, reference):
    total, rows = all_rows(served, expr="Adam.lr < 0.005 and best/val_acc > 0.8")
    mask = (reference["Adam.lr"] < 0.005) & (reference["best/val_acc"] > 0.8)
    assert total == int(mask.sum()) > 0
    assert {r["name"] for r in rows} == set(reference.index[mask])
    total, rows = all_rows(served, q="width=64 seed=1")
    assert {r["name"] for r in rows} == {f"sweep/lr={lr}_width=64_seed=1" for lr in (0.001, 0.003, 0.01)}
    total, rows = all_rows(served, status="running,stale")
    assert {r["name"] for r in rows} == {"live", "dead"}
    total, _ = all_rows(served, expr="width == 64")  # the last part of a name is enough when it is unique
    assert total == int((reference["CNN.width"] == 64).sum()) == 9


def test_a_bad_expression_says_what_is_wrong(served):
    status, data, _ = served.get("api/runs?" + urlencode({"expr": "Adam.lrr < 0.01"}))
    assert status == 400 and "did you mean Adam.lr" in data["error"]
    status, data, _ = served.get("api/runs?" + urlencode({"expr": "Adam.lr <"}))
    assert status == 400 and "not a valid expression" in data["error"]
    status, data, _ = served.get("api/runs?" + urlencode({"expr": "__import__('os').system('true')"}))
    assert status == 400
    status, data, _ = served.get("api/runs?" + urlencode({"sort": "nope:desc"}))
    assert status == 400 and "no such column" in data["error"]


def test_group_gives_mean_std_and_n_over_seeds(served, reference):
    total, rows = all_rows(served, group="Adam.lr,CNN.width", status="finished", sort="best/val_acc:desc")
    finished = reference[reference["status"] == "finished"]
    expected = finished.groupby(["Adam.lr", "CNN.width"])["best/val_acc"].agg(["mean", "std", "count"])
    assert total == len(expected) == 6
    for row in rows:
        mean, std, count = expected.loc[(row["Adam.lr"], row["CNN.width"])]
        assert row["n"] == count  # 3 seeds, and the experiment's run in one of them
        assert row["best/val_acc"] == pytest.approx(mean)
        assert row["best/val_acc std"] == pytest.approx(std)
        assert row["statuses"] == f"{count:.0f} finished"
    means = [row["best/val_acc"] for row in rows]
    assert means == sorted(means, reverse=True)


def test_curves_of_runs_are_their_histories(served, tree):
    names = ["sweep/lr=0.001_width=32_seed=0", "live", "crashed"]
    status, data, _ = served.post("api/curves", {"runs": names, "metric": "val_acc", "x": "step"})
    assert status == 200, data
    histories = load_histories([tree / name for name in names])
    for series, name in zip(data["series"], names, strict=True):
        expected = histories[histories["run"] == str(tree / name)]
        assert series["name"] == name
        assert series["x"] == expected["step"].tolist()
        assert series["y"] == pytest.approx(expected["val_acc"].tolist())
    assert len(data["series"][1]["y"]) == 3  # the running run's cut last line is not a point
    assert {"val_acc", "val_loss", "train_loss", "lr"} <= set(data["metrics"])


def test_curves_of_groups_are_mean_and_std_per_epoch(served, tree):
    view = {"group": "Adam.lr", "status": "finished"}
    status, data, _ = served.post(
        "api/curves", {"view": view, "groups": ["[0.01]", "[0.001]"], "metric": "val_loss"}
    )
    assert status == 200, data
    runs = load_runs(tree, on_error="ignore")
    for series, lr in zip(data["series"], (0.01, 0.001), strict=True):
        members = runs[(runs["Adam.lr"] == lr) & (runs["status"] == "finished")]
        histories = load_histories(members)
        expected = histories.groupby("epoch")["val_loss"].agg(["mean", "std", "count"])
        assert series["kind"] == "group" and series["runs"] == len(members) >= 6
        assert series["x"] == expected.index.tolist()
        assert series["y"] == pytest.approx(expected["mean"].tolist())
        assert series["std"] == pytest.approx(expected["std"].tolist())
        assert series["n"] == expected["count"].tolist()


def test_run_page_shows_config_meta_summary_evaluations_and_commands(served, tree):
    name = "sweep/lr=0.01_width=64_seed=2"
    status, page, _ = served.get(
        f"api/run?name={quote(name)}&compare={quote('sweep/lr=0.001_width=64_seed=2')}"
    )
    assert status == 200, page
    assert page["config"] == load_C(tree / name)
    assert page["meta"] == load_meta(tree / name)
    assert (
        page["summary"]["best"]["val_acc"]
        == json.loads((tree / name / "summary.json").read_text())["best"]["val_acc"]
    )
    assert page["evaluations"]["best-test"]["metrics"]["test_acc"] > 0
    assert page["compare"]["Adam.lr"] == 0.001 and page["config"]["Adam.lr"] == 0.01
    assert page["commands"]["reload"].endswith(f"bin/train.py {tree / name} -b training_loop.reload=True")
    assert page["row"]["status"] == "finished" and page["problems"] == []


def test_log_tail_follows_appended_output(served, tree):
    status, log, _ = served.get("api/log?name=live")
    assert status == 200 and log["text"] == "epoch 1/6 | train_loss 0.9\n"
    with open(tree / "live" / "log.txt", "a") as f:
        f.write("epoch 2/6 | train_loss 0.7\n")
    status, more, _ = served.get(f"api/log?name=live&offset={log['offset']}")
    assert more["text"] == "epoch 2/6 | train_loss 0.7\n" and not more["cut"]


def test_experiments_show_grid_statuses_and_report(served):
    status, experiments, _ = served.get("api/experiments")
    assert status == 200
    (experiment,) = experiments
    assert experiment["grid"] == {"torch.optim.Adam.lr": [0.001, 0.01], "training_loop.seed": [0, 1]}
    assert experiment["runs"] == 4 and experiment["counts"] == {"not started": 3, "finished": 1}
    assert experiment["report"]["figures"] == ["tune_lr/report/curves.png"]
    status, png, headers = served.get("api/file?path=tune_lr/report/curves.png")
    assert status == 200 and headers["content-type"] == "image/png"
    total, rows = all_rows(served, exp="tune_lr")
    assert [row["name"] for row in rows] == ["tune_lr/runs/lr=0.001_seed=0"]


def test_live_runs_show_new_epochs_and_turn_stale(tmp_path):
    root = tmp_path / "results"
    running = write_run(root / "running", status="running", lr=0.01, epochs=2, heartbeat_age=0)
    write_run(root / "done", lr=0.01)
    server = BoardServer(root, stale_after=6.0)
    try:
        _, rows = all_rows(server, q="running")
        assert rows[0]["epochs"] == 2 and rows[0]["status"] == "running"
        version = server.get("api/changes?since=0")[1]["version"]
        append_epoch(running, lr=0.01)
        started = time.monotonic()
        while time.monotonic() - started < 5:
            _, rows = all_rows(server, q="running")
            if rows[0]["epochs"] == 3:
                break
            time.sleep(0.1)
        assert rows[0]["epochs"] == 3, "the new epoch did not appear within 5 s"
        changes = server.get(f"api/changes?since={version}")[1]
        assert "running" in changes["changed"]
        _, curves, _ = server.post("api/curves", {"runs": ["running"], "metric": "val_acc"})
        assert curves["series"][0]["x"] == [0, 1, 2]
        while time.monotonic() - started < 15:  # no heartbeat for stale_after (6 s): stale
            _, rows = all_rows(server, q="running")
            if rows[0]["status"] == "stale":
                break
            time.sleep(0.2)
        assert rows[0]["status"] == "stale"
    finally:
        server.close()


def test_a_tree_seen_before_starts_from_the_cache_and_rereads_what_changed(tmp_path):
    from ginlab.board.data import Board

    root = tmp_path / "results"
    write_sweep(root, lrs=(0.001, 0.01), seeds=(0, 1))
    running = write_run(root / "running", status="running", lr=0.003)
    first = Board(str(root))
    first.table.refresh()
    first.table.save()
    assert (root / ".ginlab-cache" / "board-runs.parquet").is_file()
    write_run(root / "new", lr=0.1)
    meta = json.loads((root / "lr=0.01_width=32_seed=1" / "meta.json").read_text())
    meta["status"] = "interrupted"
    (root / "lr=0.01_width=32_seed=1" / "meta.json").write_text(json.dumps(meta))
    append_epoch(running, lr=0.003)  # a running run (no end time) read again beside ended ones

    second = Board(str(root))  # before any check: the cached rows, as they were
    assert len(second.table.frame) == 5 and not second.table.checked
    assert second.table.frame.loc["lr=0.01_width=32_seed=1", "status"] == "finished"
    changed = second.table.refresh()
    assert changed == {"new", "lr=0.01_width=32_seed=1", "running"}
    time.sleep(0.01)
    append_epoch(running, lr=0.003)
    assert second.table.refresh(second.table.live_names()) == {"running"}  # only a run without an end time
    assert str(second.table.frame["end"].dtype).startswith("datetime64")
    assert second.table.frame.loc["running", "epochs"] == 5
    assert second.table.frame.loc["lr=0.01_width=32_seed=1", "status"] == "interrupted"
    expected = load_runs(root)
    assert sorted(second.table.frame["name"]) == sorted(os.path.relpath(r, root) for r in expected["run"])
    columns = ["best/val_acc", "test/test_acc", "Adam.lr"]
    board = second.table.frame.set_index("run").loc[expected["run"], columns].astype(float)
    assert np.allclose(board.to_numpy(), expected[columns].to_numpy(float), equal_nan=True)


def test_a_board_on_one_run_folder_keeps_its_cache_out_of_it(tmp_path):
    from conftest import tree_snapshot

    from ginlab.board.data import Board

    run = write_run(tmp_path / "results" / "first_run", lr=0.01)
    before = tree_snapshot(run)
    board = Board(str(run))
    board.table.refresh()
    board.table.save()
    page = board.runs({}, 0, 10)
    assert [row["name"] for row in page["rows"]] == ["."] and page["rows"][0]["status"] == "finished"
    assert board.run_page(".")["config"] == load_C(run)
    assert tree_snapshot(run) == before  # nothing written inside the run folder
    assert list((tmp_path / "results" / ".ginlab-cache").glob("board-runs-*.parquet"))


def test_export_writes_a_self_contained_page_of_the_view(tree, tmp_path):
    from ginlab.board import export_view

    target = tmp_path / "view.html"
    view = "http://127.0.0.1:8765/#group=Adam.lr&status=finished&sort=best/val_acc:desc&gsel=%5B%22%5B0.01%5D%22%5D"
    export_view(str(tree), str(target), view)
    page = target.read_text()
    assert "<script src=" not in page and '<link rel="stylesheet" href=' not in page  # every asset inlined
    assert "agGrid" in page and "uPlot" in page
    data = json.loads(
        page.split('<script id="board-data" type="application/json">', 1)[1].split("</script>", 1)[0]
    )
    assert (
        data["static"]
        and data["total"] == 3
        and [row["Adam.lr"] for row in data["rows"]] == [0.01, 0.003, 0.001]
    )
    assert data["curves"]["series"][0]["runs"] == 6


def test_the_board_starts_serving_without_pandas_and_never_loads_torch():
    """What bin/board.py imports before it serves the page holds no pandas, pyarrow or numpy (they load in a
    thread meanwhile, ginlab.board.starting); the data layer imports neither torch nor Lightning."""
    code = (
        "import json, sys, ginlab.board, ginlab.board.server, ginlab.board.starting, ginlab.board.first_view\n"
        "modules = lambda names: sorted(m for m in sys.modules if m.split('.')[0] in names)\n"
        "serving = modules(('pandas', 'pyarrow', 'numpy'))\n"
        "import ginlab.board.data\n"
        "print(json.dumps([serving, modules(('torch', 'lightning', 'pytorch_lightning'))]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT / "src")})  # fmt: skip
    assert json.loads(out.stdout) == [[], []]


def board_py(*args, env=None, timeout=60) -> subprocess.CompletedProcess:
    command = [sys.executable, str(ROOT / "bin" / "board.py"), *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src"), **(env or {})})  # fmt: skip


def test_missing_assets_name_the_install_command(tree):
    result = board_py(tree, env={"GINLAB_BOARD_NODE_MODULES": "/nonexistent/node_modules"})
    assert result.returncode == 2
    assert "npm ci" in result.stderr and "ag-grid-community.min.js is missing" in result.stderr


def test_usage_errors_exit_2_with_a_reason(tmp_path):
    result = board_py(tmp_path / "nope")
    assert result.returncode == 2 and "no such folder" in result.stderr
    result = board_py(tmp_path, "--view", "x")
    assert result.returncode == 2 and "--view is for --export" in result.stderr
