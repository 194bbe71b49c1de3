"""The board's start on a tree seen before: the first view on disk answers while the board loads.

The first view (ginlab.board.first_view) is written beside the table cache; a StartingBoard
(ginlab.board.starting) serves the page's first requests from it, and everything else from the board
once that is loaded. Compared here with what the board itself answers from the same cache.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from board_runs import BoardServer, write_run, write_sweep

from ginlab.board.first_view import FirstView, first_view_path
from ginlab.board.paths import BoardError
from ginlab.board.starting import StartingBoard

STALE_AFTER = 300.0


def seen_tree(tmp_path: Path, silence: float = 5.0) -> str:
    """A results tree the board has read and cached (with its first view): 8 runs, one of them running
    with a heartbeat `silence` seconds old; its real path."""
    from ginlab.board.data import Board

    root = tmp_path / "results"
    write_sweep(root, lrs=(0.001, 0.01), seeds=(0, 1))
    write_run(root / "live", status="running", lr=0.003, heartbeat_age=silence)
    write_run(root / "crashed", status="failed", lr=0.1, epochs=2)
    board = Board(str(root), stale_after=STALE_AFTER)
    board.table.refresh()  # checks every run, then writes the table cache and the first view
    return board.root


def from_cache(root: str):
    """The board as it starts from that cache, before its check: what the first view stands for."""
    from ginlab.board.data import Board

    return Board(root, stale_after=STALE_AFTER)


def test_the_first_view_is_written_beside_the_table_cache(tmp_path):
    root = seen_tree(tmp_path)
    cache = os.path.join(root, ".ginlab-cache", "board-runs.parquet")
    assert first_view_path(cache) == os.path.join(root, ".ginlab-cache", "board-runs.first.json")
    document = json.loads(Path(first_view_path(cache)).read_text())
    assert document["table_cache"]["size"] == os.path.getsize(cache)
    assert sorted(document["running"]) == ["live"]
    assert not any(".ginlab-cache" in path for path in os.listdir(os.path.join(root, "live")))


def test_the_first_view_answers_what_the_board_answers_from_the_same_cache(tmp_path):
    root = seen_tree(tmp_path)
    first = FirstView.load(root)
    board = from_cache(root)
    assert first is not None and not board.table.checked

    meta, expected = first.meta(), board.meta()
    assert meta["version"] == 0 and meta["checked"] is False and meta["loading"] is None
    assert {k: v for k, v in meta.items() if k != "version"} == {
        k: v for k, v in expected.items() if k != "version"
    }
    assert meta["counts"] == {"finished": 4, "running": 1, "failed": 1}

    answer = first.runs({"start": "0", "end": "200"}, 0, 200)
    expected = board.runs({}, 0, 200)
    assert answer["total"] == expected["total"] == 6 and answer["version"] == 0
    assert [row["name"] for row in answer["rows"]] == [row["name"] for row in expected["rows"]]
    for row, other in zip(answer["rows"], expected["rows"], strict=True):
        # Ages and a running duration are computed a moment apart: equal within a few seconds.
        assert row.pop("age") == pytest.approx(other.pop("age"), abs=5)
        assert row.pop("duration") == pytest.approx(other.pop("duration"), abs=5)
        assert row == other
    assert first.changes() == {"version": 0, "changed": [], "loading": None, "checked": False, "total": 6}


def test_only_the_default_view_s_first_block_comes_from_the_first_view(tmp_path):
    first = FirstView.load(seen_tree(tmp_path))
    assert first.runs({"token": "abc"}, 0, 200)["total"] == 6  # the token does not change the rows
    assert len(first.runs({}, 0, 3)["rows"]) == 3
    assert len(first.runs({}, 0, 10_000)["rows"]) == 6  # every run is in it: any end
    for params in ({"sort": "Adam.lr:desc"}, {"q": "live"}, {"expr": "epochs > 2"}, {"status": "failed"},
                   {"group": "Adam.lr"}, {"exp": "sweep"}):  # fmt: skip
        assert first.runs(params, 0, 200) is None, params
    assert first.runs({}, 3, 200) is None  # not the first block


def test_the_clock_moves_on_in_the_first_view(tmp_path):
    root = seen_tree(tmp_path, silence=200.0)
    first = FirstView.load(root)
    saved = {row["name"]: row for row in first.runs({}, 0, 200, now=first.written)["rows"]}
    assert saved["live"]["status"] == "running"

    soon = first.written + 60  # silent for 260 s: still running, 60 s older and longer
    rows = {row["name"]: row for row in first.runs({}, 0, 200, now=soon)["rows"]}
    assert rows["live"]["status"] == "running"
    assert rows["live"]["age"] == pytest.approx(saved["live"]["age"] + 60)
    assert rows["live"]["duration"] == pytest.approx(saved["live"]["duration"] + 60)
    assert rows["crashed"]["age"] == pytest.approx(saved["crashed"]["age"] + 60)
    assert rows["crashed"]["duration"] == saved["crashed"]["duration"]  # ended: its duration is fixed
    assert first.meta(now=soon)["counts"]["running"] == 1

    later = first.written + 150  # silent for 350 s > 300 s: stale, its duration ends at its last heartbeat
    rows = {row["name"]: row for row in first.runs({}, 0, 200, now=later)["rows"]}
    assert rows["live"]["status"] == "stale"
    assert rows["live"]["duration"] == pytest.approx(3600 - 200, abs=3)  # started 1 h before writing
    assert first.meta(now=later)["counts"] == {"finished": 4, "failed": 1, "stale": 1}


def test_a_first_view_that_does_not_go_with_its_table_cache_is_not_used(tmp_path):
    root = seen_tree(tmp_path)
    cache = os.path.join(root, ".ginlab-cache", "board-runs.parquet")
    view = first_view_path(cache)
    assert FirstView.load(root) is not None

    stat = os.stat(cache)
    os.utime(cache, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # the cache rewritten since
    assert FirstView.load(root) is None
    os.utime(cache, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert FirstView.load(root) is not None

    Path(view).write_text('{"format": 1, "table_')  # damaged
    assert FirstView.load(root) is None
    os.remove(view)
    assert FirstView.load(root) is None
    shutil.rmtree(os.path.join(root, ".ginlab-cache"))
    assert FirstView.load(root) is None


def test_a_starting_board_answers_from_the_first_view_then_from_the_board(tmp_path):
    root = seen_tree(tmp_path)
    starting = StartingBoard(root, FirstView.load(root))
    # Not loaded yet: the first requests are answered, anything else would wait.
    assert starting.meta()["version"] == 0 and starting.meta()["total"] == 6
    assert [row["name"] for row in starting.runs({}, 0, 200)["rows"]][:2] == [
        "crashed",
        "live",
    ]
    assert starting.changes(0)["version"] == 0
    with pytest.raises(BoardError, match="still loading"):
        starting.loaded(timeout=0.05)

    starting.start()
    board = starting.loaded(timeout=60)
    try:
        assert starting.meta()["version"] == board.table.version >= 1
        ordered = starting.runs({"sort": "Adam.lr:desc"}, 0, 200)["rows"]
        assert [row["Adam.lr"] for row in ordered][:2] == [0.1, 0.01]
        assert starting.changes(0)["changed"] is not None  # the page asks again for its rows
        assert board.wait_checked(60)
    finally:
        starting.stop()


def test_the_server_serves_the_page_and_first_rows_before_the_board_is_loaded(tmp_path):
    root = seen_tree(tmp_path)
    starting = StartingBoard(root, FirstView.load(root))  # never started here: only the first view answers
    server = BoardServer(root, board=starting)
    try:
        status, page, _ = server.get("")
        assert status == 200 and root in page
        status, meta, _ = server.get("api/meta")
        assert status == 200 and meta["version"] == 0 and meta["total"] == 6
        status, answer, _ = server.get("api/runs?start=0&end=200")
        assert status == 200 and len(answer["rows"]) == 6
        status, changes, _ = server.get("api/changes?since=0")
        assert status == 200 and changes["checked"] is False

        starting.start()
        status, answer, _ = server.get("api/runs?start=0&end=200&sort=Adam.lr:desc")
        assert status == 200 and answer["rows"][0]["Adam.lr"] == 0.1 and answer["version"] >= 1
    finally:
        server.close()


def test_a_board_that_cannot_load_says_why_on_every_request(tmp_path):
    root = tmp_path / "results"
    root.mkdir()
    starting = StartingBoard(str(root), None)
    root.rmdir()  # gone between the start's check and the board's load
    starting.start()
    with pytest.raises(BoardError, match="could not read .*no such folder"):
        starting.loaded(timeout=60)
    with pytest.raises(BoardError, match="could not read"):
        starting.meta()


def test_bin_board_py_serves_a_tree_never_seen_then_seen_and_stops_cleanly(tmp_path):
    """The real program, twice on the same tree: the board loads in a thread of the running server. (Loading
    it in a thread that then ended crashed the process on its first /api/meta: pyarrow's memory pool belongs
    to the thread that first used it.)"""
    import signal
    import subprocess
    import sys
    import time

    from board_runs import request

    root = tmp_path / "results"
    write_sweep(root, lrs=(0.001, 0.01), seeds=(0, 1))
    write_run(root / "live", status="running", lr=0.003)
    program = Path(__file__).resolve().parents[1] / "bin" / "board.py"
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    for seen in (False, True):
        process = subprocess.Popen([sys.executable, str(program), str(root), "--port", "0", "--verbose"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip
        try:
            url = process.stdout.readline().split(": ", 1)[1].strip()
            if seen:
                status, meta, _ = request(url + "api/meta")  # at once: from the first view if not loaded yet
                assert status == 200 and meta["total"] == 5
            # The first request after the load (what crashed): from a thread the server starts only now.
            while "board loaded" not in (line := process.stderr.readline()) and line:
                pass
            time.sleep(0.2)
            deadline = time.monotonic() + 60
            while not request(url + "api/changes?since=0")[1]["checked"] and time.monotonic() < deadline:
                time.sleep(0.05)
            assert request(url + "api/meta")[1]["total"] == 5
            status, answer, _ = request(url + "api/runs?start=0&end=200&sort=Adam.lr:desc")
            assert status == 200 and answer["rows"][0]["Adam.lr"] == 0.01 and answer["version"] >= 1
            assert process.poll() is None
        finally:
            process.send_signal(signal.SIGINT)
            out, err = process.communicate(timeout=30)
        assert process.returncode == 0, err
        assert (root / ".ginlab-cache" / "board-runs.first.json").is_file()
