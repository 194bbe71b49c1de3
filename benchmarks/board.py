#!/usr/bin/env python3
"""Benchmark: bin/board.py against MLflow's UI, in a real headless Chromium, on the same generated runs.

    python benchmarks/board.py                                  # 20,000 runs x 100 epochs; MLflow on 2,000
    python benchmarks/board.py --keep /tmp/board-bench          # reuse generated runs and the MLflow import
    python benchmarks/board.py --runs 2000 --no-mlflow          # quicker

Runs are generated as benchmarks/load_runs.py does (13 history columns, 12 config values, 4% running, 2%
stale, 2% failed). The board is started as a program (bin/board.py) and timed in Debian's Chromium:
- first useful paint of the runs table: from starting bin/board.py to the first rows on screen, on a tree
  never seen (no .ginlab-cache, an empty XDG cache) and again on the same tree (the board's cache on disk),
  --repeat starts of each; also from the page's navigation start, and until every run was compared with its
  files ("checked");
- sort (a header click), filter (an expression, timed from the end of the page's 200 ms typing pause),
  group (a group-by box): from the action to the answer's rows on screen;
- curves of 50 selected runs: from the selection to the chart drawn;
- the server's memory: resident (VmRSS) after all of that, and its peak (VmHWM).
MLflow (`mlflow server`, SQLite backend) gets the same runs' first --mlflow-runs (default 2,000, as
load_runs.py logs them; importing 20,000 takes about an hour): its runs list (first rows on screen), the list
sorted and filtered (the page loaded with the order or filter in its URL), and its compare view of 50 runs.
Timings are medians of --repeat; the targets are printed beside them and never asserted.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "src"))

from load_runs import generate_runs, log_into_mlflow  # noqa: E402

TARGETS = {
    "paint warm": 1.0,
    "paint cold": 5.0,
    "sort": 0.2,
    "filter": 0.2,
    "group": 0.2,
    "curves of 50": 0.3,
}
CHROMIUM_ARGUMENTS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                      "--disable-background-networking", "--disable-component-update", "--disable-sync",
                      "--window-size=1400,900"]  # fmt: skip


def main() -> None:
    args = parse_arguments()
    work = Path(args.keep or tempfile.mkdtemp(prefix="ginlab-board-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    print(
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} (other processes slow every timing)"
    )
    folder = work / f"runs-{args.runs}"
    if not folder.exists():
        started = time.perf_counter()
        generate_runs(folder, args.runs, args.epochs)
        print(
            f"generated {args.runs} run folders x {args.epochs} epochs "
            f"in {time.perf_counter() - started:.0f} s"
        )
    driver = start_chromium(work)
    try:
        board = time_board(driver, folder, work, args.repeat)
        mlflow = None if args.no_mlflow else time_mlflow(driver, folder, work, args)
    finally:
        driver.quit()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print_report(board, mlflow, args)
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f}")


def parse_arguments():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=20_000, help="generated runs (default 20000)")
    parser.add_argument("--epochs", type=int, default=100, help="history lines per run (default 100)")
    parser.add_argument(
        "--mlflow-runs", type=int, default=2000, help="runs imported into MLflow (default 2000)"
    )
    parser.add_argument("--no-mlflow", action="store_true", help="time the board only")
    parser.add_argument("--repeat", type=int, default=3, help="timings per measure; the median is reported")
    parser.add_argument("--keep", metavar="DIR", help="work in DIR and keep it (runs and MLflow reused)")
    return parser.parse_args()


# -- the browser -----------------------------------------------------------------------------------------


def start_chromium(work: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    profile = work / "chromium-profile"
    shutil.rmtree(profile, ignore_errors=True)
    for argument in [*CHROMIUM_ARGUMENTS, f"--user-data-dir={profile}"]:
        options.add_argument(argument)
    options.binary_location = shutil.which("chromium")
    return webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))


def js(driver, expression: str):
    return driver.execute_script(f"return {expression}")


def wait_for(driver, expression: str, timeout: float = 120.0, poll: float = 0.01):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = js(driver, expression)
        except Exception:  # the page is still loading
            value = None
        if value:
            return value
        time.sleep(poll)
    raise TimeoutError(f"{expression} did not become true within {timeout} s")


# -- the board ---------------------------------------------------------------------------------------------

FIRST_ROW = "document.querySelector('.ag-row[row-index=\"0\"] .run-link')"


def start_board(folder: Path, cache_home: Path, port: int) -> tuple[subprocess.Popen, str, float]:
    """bin/board.py on `folder`; (process, URL, perf_counter at its start)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "XDG_CACHE_HOME": str(cache_home)}
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "bin" / "board.py"), str(folder), "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    line = process.stdout.readline()
    match = re.search(r"(http://\S+/)", line)
    if not match:
        process.kill()
        raise RuntimeError(f"bin/board.py did not print its URL: {line!r} {process.stderr.read()}")
    return process, match.group(1), started


def stop_board(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGINT)  # as Ctrl-C: the board saves its cache on the way out
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()


def memory_mb(pid: int) -> tuple[float, float]:
    """(resident, peak resident) memory of a process in MB."""
    status = Path(f"/proc/{pid}/status").read_text()
    values = {key: int(re.search(rf"{key}:\s+(\d+)", status).group(1)) / 1024 for key in ("VmRSS", "VmHWM")}
    return values["VmRSS"], values["VmHWM"]


def paint(driver, folder: Path, cache_home: Path, port: int) -> dict:
    """Start the board, open its page, and time the first rows on screen and the end of the check.

    The port stays the same from start to start, as a user's does: the browser keeps the pinned npm files.
    """
    process, url, started = start_board(folder, cache_home, port)
    driver.get("about:blank")
    driver.get(url)
    wait_for(driver, FIRST_ROW)
    first_rows = time.perf_counter() - started
    in_page = js(driver, "board.timings.firstRows") / 1000
    wait_for(
        driver, "fetch('api/changes?since=0').then(r => r.json()).then(d => d.checked)", timeout=600, poll=0.2
    )
    checked = time.perf_counter() - started
    return {"process": process, "url": url, "paint": first_rows, "paint in page": in_page, "checked": checked}


def timed_action(driver, action_js: str, done_js: str, start_js: str = "t") -> float:
    """Seconds from an action in the page to its answer on screen (both measured by the page's clock)."""
    count = js(driver, done_js.split("|")[0])
    started = driver.execute_script(f"const t = performance.now(); {action_js}; return t;")
    wait_for(driver, f"{done_js.split('|')[0]} > {count}", timeout=120)
    wait_for(driver, FIRST_ROW + " || board.total === 0 || board.state.group.length", timeout=30)
    end = js(driver, done_js.split("|")[1])
    begin = js(driver, start_js) if start_js != "t" else started
    # The server's share: the last API request's time from sending it to its last byte.
    request = js(  # the action's request, not the page's once-a-second poll of /api/changes
        driver,
        "performance.getEntriesByType('resource')"
        ".filter(e => e.name.includes('/api/runs') || e.name.includes('/api/curves')).pop()",
    )
    SERVER_SHARE.append(request["responseEnd"] - request["startTime"] if request else float("nan"))
    return (end - begin) / 1000


SERVER_SHARE: list[float] = []  # ms of each timed action spent in its request (server and transfer)


def time_board(driver, folder: Path, work: Path, repeat: int) -> dict:
    cache_home = work / "xdg-cache"
    for stale in (folder / ".ginlab-cache", cache_home):
        shutil.rmtree(stale, ignore_errors=True)
    results: dict = {}
    port = free_port()
    colds = []  # each start on a tree never seen: its caches deleted first
    for attempt in range(repeat):
        for stale in (folder / ".ginlab-cache", cache_home):
            shutil.rmtree(stale, ignore_errors=True)
        cold = paint(driver, folder, cache_home, port)
        colds.append(cold)
        try:
            if attempt == repeat - 1:  # the last one stays for the sort, filter, group and curves
                results.update(interact(driver, folder, cold, repeat))
        finally:
            stop_board(cold["process"])  # as Ctrl-C: the board writes its cache
    warms = []
    for attempt in range(repeat):
        warm = paint(driver, folder, cache_home, port)
        warms.append(warm)
        try:
            if attempt == 0:
                results["memory warm"], results["memory warm peak"] = memory_mb(warm["process"].pid)
        finally:
            stop_board(warm["process"])
    for kind, starts in (("cold", colds), ("warm", warms)):
        for measure, name in (("paint", f"paint {kind}"), ("paint in page", f"paint {kind} in page"),
                              ("checked", f"checked {kind}")):  # fmt: skip
            results[name + " each"] = [start[measure] for start in starts]
            results[name] = statistics.median(results[name + " each"])
    results["runs"] = sum(1 for path in folder.iterdir() if path.name.startswith("run-"))
    return results


def interact(driver, folder: Path, cold: dict, repeat: int) -> dict:
    """Sort, filter, group and curves on the board opened by `paint`, then its memory."""
    results = {}
    process = cold["process"]
    rows = "board.rowsLoaded|board.timings.rows.done"
    wait_for(driver, "document.querySelector('.ag-header-cell[col-id=\"best/val_acc\"]')", timeout=60)
    header = (
        "document.querySelector('.ag-header-cell[col-id=\"best/val_acc\"] .ag-header-cell-label').click()"
    )
    SERVER_SHARE.clear()
    results["sort"] = statistics.median(timed_action(driver, header, rows) for _ in range(repeat * 2))
    results["sort server"] = statistics.median(SERVER_SHARE) / 1000
    filters = ["final/val_acc > 0.5", "Adam.lr < 0.001 and best/val_acc > 0.9", "CNN.width == 64", ""]
    filter_times = []
    SERVER_SHARE.clear()
    for text in filters[: max(repeat, 2)] + [""]:
        set_text = (
            f"const e = document.getElementById('expr'); e.value = {json.dumps(text)};"
            " e.dispatchEvent(new Event('input'))"
        )
        filter_times.append(timed_action(driver, set_text, rows, start_js="board.timings.filterStart"))
    results["filter"] = statistics.median(filter_times)
    results["filter server"] = statistics.median(SERVER_SHARE) / 1000
    SERVER_SHARE.clear()
    box = "document.querySelector('#group-picker input[value=\"Adam.lr\"]').click()"
    results["group"] = statistics.median(timed_action(driver, box, rows) for _ in range(repeat * 2))
    results["group server"] = statistics.median(SERVER_SHARE) / 1000
    SERVER_SHARE.clear()
    names = sorted(path.name for path in folder.iterdir() if path.name.startswith("run-"))
    curve_times = []
    for attempt in range(repeat):
        chosen = names[attempt * 500 : attempt * 500 + 50 * 10 : 10]
        curve_times.append(
            timed_action(
                driver, f"board.select({json.dumps(chosen)})", "board.curvesDrawn|board.timings.curves.done"
            )
        )
    results["curves of 50"] = statistics.median(curve_times)
    results["curves of 50 server"] = statistics.median(SERVER_SHARE) / 1000
    results["curves points"] = js(driver, "board.drawn.series.reduce((n, s) => n + s.x.length, 0)")
    driver.execute_script("board.select([])")
    results["memory"], results["memory peak"] = memory_mb(process.pid)
    return results


# -- MLflow ------------------------------------------------------------------------------------------------


def time_mlflow(driver, folder: Path, work: Path, args) -> dict:
    import warnings

    warnings.filterwarnings("ignore")
    from mlflow.tracking import MlflowClient

    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.ERROR)
    store = work / f"mlflow-{args.mlflow_runs}"
    uri = f"sqlite:///{store}/mlflow.db"
    if not (store / "complete").exists():
        shutil.rmtree(store, ignore_errors=True)
        store.mkdir(parents=True)
        client = MlflowClient(tracking_uri=uri)
        experiment = client.create_experiment("board-bench", artifact_location=(store / "artifacts").as_uri())
        started = time.perf_counter()
        log_into_mlflow(client, experiment, sorted(folder.glob("run-*"))[: args.mlflow_runs])
        (store / "complete").write_text(experiment)
        print(f"logged {args.mlflow_runs} runs into MLflow in {time.perf_counter() - started:.0f} s")
    experiment = (store / "complete").read_text().strip()
    client = MlflowClient(tracking_uri=uri)
    run_ids = {
        run.info.run_name: run.info.run_id for run in client.search_runs([experiment], max_results=50_000)
    }
    port = free_port()
    command = [shutil.which("mlflow") or "mlflow", "server", "--backend-store-uri", uri,
               "--default-artifact-root", (store / "artifacts").as_uri(), "--host", "127.0.0.1",
               "--port", str(port), "--workers", "1"]  # fmt: skip
    server = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    base = f"http://127.0.0.1:{port}"
    results: dict = {"runs": len(run_ids)}
    try:
        wait_until_up(base + "/health")
        runs_list = f"{base}/#/experiments/{experiment}/runs"
        rows = r"/run-\d{5}/.test(document.body.innerText)"  # a run's name on screen: the first rows
        results["paint"] = statistics.median(page_time(driver, runs_list, rows) for _ in range(args.repeat))
        ordered = runs_list + "?orderByKey=" + urllib.request.quote("metrics.`val_acc`") + "&orderByAsc=false"
        sorted_rows = f"{rows} && document.body.innerText.includes('Sort: val_acc')"
        results["sort (page load)"] = statistics.median(
            page_time(driver, ordered, sorted_rows) for _ in range(args.repeat)
        )
        filtered = runs_list + "?searchFilter=" + urllib.request.quote("metrics.val_acc > 0.5")
        matching = f"{rows} && document.body.innerText.includes('matching runs')"
        results["filter (page load)"] = statistics.median(
            page_time(driver, filtered, matching) for _ in range(args.repeat)
        )
        chosen = sorted(run_ids)[:500:10]
        ids = [run_ids[name] for name in chosen]
        compare = (
            f"{base}/#/compare-runs?runs={urllib.request.quote(json.dumps(ids))}&experiments="
            + urllib.request.quote(json.dumps([experiment]))
        )
        last = js_string(chosen[-1])
        results["compare 50"] = statistics.median(
            page_time(driver, compare, f"document.body.innerText.includes({last})", timeout=300)
            for _ in range(args.repeat)
        )
        results["memory"] = tree_memory_mb(server.pid)
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server and its workers (a session of their own)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
    return results


def js_string(text: str) -> str:
    return json.dumps(text)


def page_time(driver, url: str, ready_js: str, timeout: float = 120.0) -> float:
    """Seconds from navigation start to `ready_js` being true (the page's own clock)."""
    driver.get("about:blank")
    driver.get(url)
    wait_for(driver, ready_js, timeout=timeout)
    return js(driver, "performance.now()") / 1000


def wait_until_up(url: str, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


def tree_memory_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants, in MB."""
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        try:
            total += memory_mb(current)[0]
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except (OSError, AttributeError):
            continue
        todo += [int(child) for child in children]
    return total


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- report ------------------------------------------------------------------------------------------------


def print_report(board: dict, mlflow: dict | None, args) -> None:
    print(f"\nginlab board, {board['runs']} runs x {args.epochs} epochs (median of {args.repeat}):")

    def line(name: str, seconds: float, target: float | None, note: str = "") -> None:
        verdict = f"   target <= {target:g} s: {'met' if seconds <= target else 'MISSED'}" if target else ""
        print(f"  {name:44s} {seconds:7.3f} s{verdict}{note}")

    def starts(name: str) -> str:  # every start's value (each start is one measurement)
        return "   (" + ", ".join(f"{value:.2f}" for value in board[name + " each"]) + ")"

    for kind, tree, checked in (("cold", "never seen", "every run read and shown"),
                                ("warm", "seen before", "every run checked against its files")):  # fmt: skip
        for name, key, target in ((f"first rows, tree {tree} (from start)", f"paint {kind}", TARGETS[f"paint {kind}"]),
                                  ("  the same, from the page's navigation", f"paint {kind} in page", None),
                                  (f"  {checked}", f"checked {kind}", None)):  # fmt: skip
            line(name, board[key], target, starts(key))
    share = lambda name: f" (its request {board[name + ' server'] * 1000:.0f} ms)"  # noqa: E731
    line("sort (header click -> rows on screen)", board["sort"], TARGETS["sort"], share("sort"))
    line("filter (expression -> rows on screen)", board["filter"], TARGETS["filter"],
         share("filter") + ", from the end of the 200 ms typing pause")  # fmt: skip
    line("group (group-by box -> groups on screen)", board["group"], TARGETS["group"], share("group"))
    line("curves of 50 selected runs", board["curves of 50"], TARGETS["curves of 50"],
         share("curves of 50") + f", {board['curves points']} points")  # fmt: skip
    print(f"  {'server memory after all that':44s} {board['memory']:7.0f} MB "
          f" (peak {board['memory peak']:.0f} MB)"
          f"   target <= 1024 MB: {'met' if board['memory peak'] <= 1024 else 'MISSED'}")  # fmt: skip
    print(
        f"  {'server memory, warm start':44s} {board['memory warm']:7.0f} MB"
        f" (peak {board['memory warm peak']:.0f} MB)"
    )
    if mlflow is None:
        return
    print(f"\nMLflow UI (mlflow server, SQLite), {mlflow['runs']} of these runs (median of {args.repeat}):")
    line("runs list: first rows (from navigation)", mlflow["paint"], None)
    line("runs list sorted by val_acc (page load)", mlflow["sort (page load)"], None)
    line("runs list filtered (page load)", mlflow["filter (page load)"], None)
    line("compare view of 50 runs (from navigation)", mlflow["compare 50"], None)
    print(f"  {'server memory':44s} {mlflow['memory']:7.0f} MB")
    print("\nside by side (board on 10x the runs):")
    print(
        f"  first rows     board {board['paint warm in page']:.3f} s (warm, in page)"
        f"   MLflow {mlflow['paint']:.3f} s"
    )
    print(
        f"  50-run curves  board {board['curves of 50']:.3f} s"
        f"                  MLflow {mlflow['compare 50']:.3f} s"
    )


if __name__ == "__main__":
    main()
