"""The board's safety rules: paths stay inside the results root, the token, the Host check, damaged run
folders never break the page, and the board never writes inside a run folder."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote, urlencode

import pytest
from board_runs import BoardServer, request, write_run, write_sweep
from conftest import tree_snapshot

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("safety")
    outside = base / "outside"
    write_run(outside / "foreign", lr=0.5)  # a run folder outside the root
    (outside / "secret.png").write_bytes(b"\x89PNG secret")
    root = base / "results"
    write_sweep(root / "sweep", lrs=(0.001, 0.01), seeds=(0, 1))
    (root / "sweep" / "report").mkdir()
    (root / "sweep" / "report" / "fig.png").write_bytes(b"\x89PNG fig")
    os.symlink(outside / "foreign", root / "linked-run")  # a symbolic link out of the root
    os.symlink(outside / "secret.png", root / "sweep" / "report" / "linked.png")
    # Run folders caught mid-write, damaged or half deleted:
    write_run(root / "writing", status="running", lr=0.003, partial_line='{"epoch": 3, "val_a')
    damaged = write_run(root / "damaged-history", lr=0.02)
    lines = (damaged / "history.jsonl").read_text().splitlines()
    lines[1] = lines[1][:15]
    (damaged / "history.jsonl").write_text("\n".join(lines) + "\n")
    write_run(root / "damaged-meta", lr=0.03)
    (root / "damaged-meta" / "meta.json").write_text('{"format_version": 1, "status": "runn')
    half = write_run(root / "half-deleted", lr=0.04)
    (half / "meta.json").unlink()
    newer = write_run(root / "newer-format", lr=0.05)
    meta = json.loads((newer / "meta.json").read_text())
    meta["format_version"] = 99
    (newer / "meta.json").write_text(json.dumps(meta))
    (root / "just-created").mkdir()
    (root / "just-created" / "meta.json").write_text(json.dumps({"format_version": 1, "status": "running"}))
    return root


@pytest.fixture(scope="module")
def served(tree):
    before = tree_snapshot(tree)
    server = BoardServer(tree)
    yield server
    server.close()
    server.board.table.save()
    after = tree_snapshot(tree)
    written = {path for path in after if path not in before or after[path] != before[path]}
    assert all(path.startswith(".ginlab-cache/") for path in written), written


@pytest.mark.parametrize(
    "path",
    [
        "api/run?name=" + quote("../outside/foreign"),
        "api/run?name=" + quote("sweep/../../outside/foreign"),
        "api/run?name=" + quote("/etc"),
        "api/log?name=" + quote("../../../etc"),
        "api/log?name=" + quote("linked-run"),
        "api/file?path=" + quote("../outside/secret.png"),
        "api/file?path=" + quote("/etc/passwd"),
        "api/file?path=" + quote("sweep/report/linked.png"),
        "api/file?path=" + quote("sweep/report/../../../outside/secret.png"),
        "api/file?path=" + quote("..\\outside\\secret.png"),
    ],
)
def test_paths_cannot_leave_the_results_root(served, path):
    status, data, _ = served.get(path)
    assert status == 403, data
    assert "root" in data["error"]


def test_files_inside_the_root_are_served_and_links_out_are_not_listed(served):
    status, body, _ = served.get("api/file?path=" + quote("sweep/report/fig.png"))
    assert status == 200 and "PNG fig" in body
    status, data, _ = served.get("api/runs?end=1000")
    names = {row["name"] for row in data["rows"]}
    assert "linked-run" not in names
    status, data, _ = served.get("api/file?path=" + quote("sweep/lr=0.001_width=32_seed=0/meta.json"))
    assert status == 400 and "not a report file" in data["error"]  # run files are read through the API only


def test_damaged_and_half_written_runs_show_as_such(served):
    status, data, _ = served.get("api/runs?end=1000")
    assert status == 200
    rows = {row["name"]: row for row in data["rows"]}
    assert rows["writing"]["status"] == "running" and rows["writing"]["epochs"] == 3
    for name, reason in [
        ("damaged-meta", "meta.json is not valid JSON"),
        ("half-deleted", "meta.json is missing"),
        ("newer-format", "format_version 99 is newer"),
    ]:
        assert rows[name]["status"] == "unreadable", rows[name]
        assert reason in rows[name]["error"]
    assert rows["damaged-history"]["status"] == "finished"  # its summary is fine; its history is not
    assert rows["just-created"]["status"] in ("running", "stale")


def test_damaged_runs_never_break_the_endpoints(served):
    names = ["writing", "damaged-history", "damaged-meta", "half-deleted", "newer-format", "just-created"]
    status, curves, _ = served.post("api/curves", {"runs": names, "metric": "val_acc"})
    assert status == 200, curves
    by_name = {series["name"]: series for series in curves["series"]}
    assert len(by_name["writing"]["y"]) == 3  # the cut line is not read as a point
    assert by_name["damaged-history"]["y"] == []  # unreadable history: no curve, no error
    for name in names:
        status, page, _ = served.get("api/run?name=" + quote(name))
        assert status == 200, (name, page)
        status, log, _ = served.get("api/log?name=" + quote(name))
        assert status == 200
    status, page, _ = served.get("api/run?name=damaged-meta")
    assert any("meta.json is not valid JSON" in problem for problem in page["problems"])
    for params in ({"group": "Adam.lr"}, {"sort": "best/val_acc:desc"}, {"expr": "best/val_acc > 0.5"}):
        status, data, _ = served.get("api/runs?" + urlencode(params))
        assert status == 200, data
    status, meta, _ = served.get("api/meta")
    assert status == 200 and meta["counts"]["unreadable"] == 3


def test_a_loopback_board_refuses_other_host_names(served):
    status, data, _ = served.get("api/meta", headers={"Host": "evil.example:8765"})
    assert status == 403 and "only requests to localhost" in data["error"]
    status, _, _ = served.get("api/meta", headers={"Host": "localhost:9000"})  # ssh -L to another port
    assert status == 200


def test_a_token_is_required_on_every_request(tree):
    server = BoardServer(tree, token="s3cret-token", loopback=False)
    try:
        for path in ("", "api/meta", "api/runs", "assets/board.js", "api/run?name=writing"):
            status, data, _ = server.get(path)
            assert status == 401 and "needs its token" in data["error"], path
            status, _, _ = server.get(path + ("&" if "?" in path else "?") + "token=wrong")
            assert status == 401
        status, page, headers = server.get("?token=s3cret-token")
        assert status == 200 and "ginlab_board_token=s3cret-token" in headers["set-cookie"]
        assert "httponly" in headers["set-cookie"].lower()
        assert server.get("api/meta", headers={"Cookie": "ginlab_board_token=s3cret-token"})[0] == 200
        assert server.get("api/meta", headers={"X-Board-Token": "s3cret-token"})[0] == 200
    finally:
        server.close()


def test_binding_another_address_prints_a_token_url(tree):
    command = [sys.executable, str(ROOT / "bin" / "board.py"), str(tree), "--host", "0.0.0.0", "--port", "0"]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = process.stdout.readline()
        match = re.search(r"http://[^:]+:(\d+)/\?token=([\w-]+)", line)
        assert match, line + process.stderr.read() if process.poll() is not None else line
        port, token = match.groups()
        time.sleep(0.5)
        status, data, _ = request(f"http://127.0.0.1:{port}/api/meta")
        assert status == 401
        status, data, _ = request(f"http://127.0.0.1:{port}/api/meta?token={token}")
        assert status == 200 and data["root"] == str(tree.resolve())
    finally:
        process.terminate()
        process.wait(timeout=20)
