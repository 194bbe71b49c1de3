"""The board in a real headless Chromium: what the page shows against load_runs/load_histories.

One browser and one board for the module. Skipped without Debian's chromium and chromium-driver (or
selenium), unless GINLAB_REQUIRE_SERVICES=1 (CI), which makes that a failure. GINLAB_UPDATE_SCREENSHOTS=1
also copies the screenshots into docs/images/ (they are checked by eye, then committed for the README).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from urllib.parse import quote

import pytest
from board_runs import BoardServer, append_epoch, write_experiment, write_run, write_sweep

from ginlab.analysis import load_histories, load_runs

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_ARGUMENTS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                      "--disable-background-networking", "--disable-component-update", "--disable-sync",
                      "--window-size=1400,900", "--force-device-scale-factor=1"]  # fmt: skip
LRS = (0.0003, 0.001, 0.003, 0.01)


def require(condition: bool, message: str) -> None:
    if condition:
        return
    if os.environ.get("GINLAB_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{message}, and GINLAB_REQUIRE_SERVICES=1 requires it")
    pytest.skip(f"{message}; set GINLAB_REQUIRE_SERVICES=1 to make this a failure")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    require(
        shutil.which("chromium") is not None, "chromium is not installed (Debian: apt-get install chromium)"
    )
    require(shutil.which("chromedriver") is not None,
            "chromedriver is not installed (Debian: apt-get install chromium-driver)")  # fmt: skip
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        require(False, "selenium is not installed (pip install -r requirements.txt)")
    options = webdriver.ChromeOptions()
    for argument in [*CHROMIUM_ARGUMENTS, f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"]:
        options.add_argument(argument)
    options.binary_location = shutil.which("chromium")
    driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("browser") / "results"
    write_sweep(root / "sweep", lrs=LRS, seeds=(0, 1, 2), widths=(32, 64), n_epochs=12)
    write_run(root / "live", status="running", lr=0.003, n_epochs=12, epochs=4, heartbeat_age=0)
    write_run(root / "crashed", status="failed", lr=0.1, epochs=2)
    write_experiment(root)
    return root


@pytest.fixture(scope="module")
def served(tree):
    server = BoardServer(tree)
    yield server
    server.close()


@pytest.fixture(scope="module")
def runs(tree):
    frame = load_runs(tree, on_error="ignore")
    frame["name"] = [os.path.relpath(run, tree) for run in frame["run"]]
    return frame


def js(driver, expression: str):
    return driver.execute_script(f"return {expression}")


def wait_for(driver, expression: str, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = js(driver, expression)
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(
        f"{expression} did not become true within {timeout} s; "
        f"errors: {js(driver, 'window.board && board.errors')}"
    )


def open_view(driver, served, fragment: str = "") -> None:
    driver.get("about:blank")
    driver.get(served.url + ("#" + fragment if fragment else ""))
    wait_for(driver, "window.board && board.ready && board.rowsLoaded > 0 && board.curvesDrawn > 0")
    wait_for(driver, SHOWN)


def shown_names(driver) -> list[str]:
    """The run names in the table's rows, top to bottom, as the page shows them."""
    return js(
        driver,
        """[...document.querySelectorAll('.ag-row .run-link')]
        .map(link => [+link.closest('.ag-row').getAttribute('row-index'), link.textContent])
        .sort((a, b) => a[0] - b[0]).map(pair => pair[1])""",
    )


def cell_text(driver, row_index: int, column: str) -> str:
    return js(
        driver,
        f"""(document.querySelector('.ag-row[row-index="{row_index}"] .ag-cell[col-id="{column}"]')"""
        " || {}).textContent",
    )


def click_select(driver, row_index: int) -> None:
    """Tick the selection box of a row of the table."""
    selector = f'.ag-row[row-index="{row_index}"] input.select'
    wait_for(driver, f"document.querySelector('{selector}')")
    driver.find_element("css selector", selector).click()


def after_rows(driver, action) -> None:
    """Run `action` (a click, typing) and wait until the table answered it."""
    loaded = js(driver, "board.rowsLoaded")
    action()
    wait_for(driver, f"board.rowsLoaded > {loaded}")
    wait_for(driver, SHOWN)


# The table's first row on screen is the first row of the last answer (the grid renders after the data).
SHOWN = """board.total === 0 || (() => {
    if (!board.rows.length || !document.querySelector('.ag-row[row-index="0"]')) return false;
    const link = document.querySelector('.ag-row[row-index="0"] .run-link');
    return !link || link.textContent === board.rows[0].name; })()"""


def test_the_table_shows_every_run_as_load_runs_reads_it(browser, served, runs):
    open_view(browser, served)
    assert js(browser, "board.total") == len(runs) == 27
    names = shown_names(browser)
    assert names == sorted(runs["name"])[: len(names)] and len(names) >= 10
    row = runs.set_index("name").loc[names[0]]
    assert float(cell_text(browser, 0, "Adam.lr")) == row["Adam.lr"]
    assert cell_text(browser, 0, "status") == row["status"]
    counts = js(browser, "[...document.querySelectorAll('#counts .chip')].map(c => c.textContent)")
    assert counts == [f"{status} {count}" for status, count in runs["status"].value_counts().items()]


def test_sorting_by_a_header_click(browser, served, runs):
    open_view(browser, served)
    header = browser.find_element(
        "css selector", '.ag-header-cell[col-id="best/val_acc"] .ag-header-cell-label'
    )
    after_rows(browser, header.click)  # ascending
    after_rows(browser, header.click)  # descending
    expected = runs.sort_values("best/val_acc", ascending=False, na_position="last", kind="stable")["name"]
    names = shown_names(browser)
    assert names == list(expected[: len(names)]) and len(names) >= 10
    assert "sort=best%2Fval_acc%3Adesc" in browser.current_url


def test_filtering_by_expression_and_status(browser, served, runs):
    open_view(browser, served)
    field = browser.find_element("css selector", "#expr")
    after_rows(browser, lambda: field.send_keys("Adam.lr < 0.005 and best/val_acc > 0.8"))
    mask = (runs["Adam.lr"] < 0.005) & (runs["best/val_acc"] > 0.8)
    assert js(browser, "board.total") == int(mask.sum()) > 0
    assert set(shown_names(browser)) <= set(runs["name"][mask])
    after_rows(browser, lambda: field.send_keys(" and nope > 1"))
    assert "did you mean" in js(
        browser, "document.getElementById('error').textContent"
    ) or "not a column" in js(browser, "document.getElementById('error').textContent")
    open_view(browser, served)
    chip = browser.find_element("css selector", '#counts .chip[data-status="running"]')
    after_rows(browser, chip.click)
    assert shown_names(browser) == ["live"]


def test_grouping_gives_mean_std_and_n_and_group_curves(browser, served, tree, runs):
    open_view(browser, served, "status=finished")
    browser.find_element("css selector", "#group-picker summary").click()
    box = browser.find_element("css selector", '#group-picker input[value="Adam.lr"]')
    after_rows(browser, box.click)
    browser.find_element("css selector", "#group-picker summary").click()
    finished = runs[runs["status"] == "finished"]
    expected = finished.groupby("Adam.lr")["best/val_acc"].agg(["mean", "std", "count"])
    rows = js(browser, "board.rows")
    assert len(rows) == len(expected) == 4
    for row in rows:
        assert row["n"] == expected.loc[row["Adam.lr"], "count"]
        assert row["best/val_acc"] == pytest.approx(expected.loc[row["Adam.lr"], "mean"])
    assert "±" in cell_text(browser, 0, "best/val_acc")
    drawn = js(browser, "board.curvesDrawn")
    for index in (0, 1):
        click_select(browser, index)
    wait_for(browser, f"board.curvesDrawn >= {drawn + 2} && board.curves.series.length == 2")
    histories = load_histories(finished, metrics="val_acc").merge(finished[["run", "Adam.lr"]], on="run")
    for series in js(browser, "board.curves.series"):
        lr = json.loads(series["name"])[0]
        curve = histories[histories["Adam.lr"] == lr].groupby("epoch")["val_acc"].agg(["mean", "std"])
        assert series["y"] == pytest.approx(curve["mean"].tolist())
        assert series["std"] == pytest.approx(curve["std"].tolist())
    assert "group=Adam.lr" in browser.current_url and "gsel=" in browser.current_url


def test_selected_runs_draw_their_histories(browser, served, tree):
    open_view(browser, served, "sort=name:asc")
    drawn = js(browser, "board.curvesDrawn")
    for index in (0, 1, 2):
        click_select(browser, index)
    wait_for(browser, f"board.curvesDrawn >= {drawn + 3} && board.drawn.series.length == 3")
    selected = js(browser, "board.state.sel")
    histories = load_histories([tree / name for name in selected], metrics="val_acc")
    for series, name in zip(js(browser, "board.drawn.series"), selected, strict=True):
        expected = histories[histories["run"] == str(tree / name)]
        assert series["x"] == expected["epoch"].tolist()
        assert series["y"] == pytest.approx(expected["val_acc"].tolist())
    assert js(browser, "document.querySelectorAll('#chart canvas').length") == 1


def test_a_shared_url_restores_the_view(browser, served, tree):
    view = (
        "group=Adam.lr&sort=best/val_acc:desc&gsel="
        + quote(json.dumps(["[0.01]"]))
        + "&metric=val_loss&x=time&logy=1"
    )
    open_view(browser, served, view)
    wait_for(browser, "board.drawn.series.length == 1")
    state = js(browser, "board.state")
    assert (
        state["group"] == ["Adam.lr"]
        and state["metric"] == "val_loss"
        and state["x"] == "time"
        and state["logy"]
    )
    assert js(browser, "board.rows.map(r => r['Adam.lr'])")[0] == 0.01  # best first
    assert js(browser, "board.drawn.metric") == "val_loss"


def test_a_live_run_shows_new_epochs_within_5_seconds(browser, served, tree):
    open_view(browser, served, "sel=live&q=live")
    wait_for(browser, "board.drawn.series.length == 1")
    assert len(js(browser, "board.drawn.series[0].x")) == 4
    append_epoch(tree / "live", lr=0.003)
    started = time.monotonic()
    wait_for(browser, "board.drawn.series[0].x.length == 5", timeout=5)
    wait_for(
        browser,
        """(document.querySelector('.ag-row[row-index="0"] .ag-cell[col-id="progress"]') || {})"""
        ".textContent === '5/12'",
        timeout=5,
    )
    assert time.monotonic() - started < 5


def test_a_seen_tree_shows_its_first_rows_before_the_board_is_loaded(browser, tmp_path):
    """bin/board.py's start: the page and its first rows come from the first view on disk while the board
    loads; once it is loaded the page takes the board's answers, with the same rows."""
    from ginlab.board.data import Board
    from ginlab.board.first_view import FirstView
    from ginlab.board.starting import StartingBoard

    root = tmp_path / "results"
    write_sweep(root, lrs=(0.001, 0.01), seeds=(0, 1, 2), n_epochs=12)
    write_run(root / "live", status="running", lr=0.003, n_epochs=12, epochs=4, heartbeat_age=0)
    Board(str(root)).table.refresh()  # seen: the table cache and its first view written
    runs = load_runs(root)
    names = sorted(os.path.relpath(run, root) for run in runs["run"])
    starting = StartingBoard(str(root.resolve()), FirstView.load(str(root.resolve())))
    server = BoardServer(root, board=starting)  # not started: nothing but the first view can answer
    try:
        open_view(browser, server)
        assert js(browser, "board.version") == 0 and js(browser, "board.total") == len(names) == 7
        assert shown_names(browser) == names
        assert cell_text(browser, 0, "status") == "running" and cell_text(browser, 0, "progress") == "4/12"
        wait_for(browser, "document.getElementById('live').textContent.startsWith('checking runs')")

        starting.start()  # the board loads, checks every run, and the page follows
        wait_for(browser, "board.version > 0 && document.getElementById('live').textContent === 'live'", 30)
        wait_for(browser, SHOWN)
        assert shown_names(browser) == names and not js(browser, "board.errors.length")
    finally:
        server.close()


def test_run_page_shows_config_differences_and_log(browser, served, tree):
    name = "sweep/lr=0.01_width=64_seed=1"
    open_view(browser, served, "run=" + quote(name) + "&cmp=" + quote("sweep/lr=0.001_width=64_seed=1"))
    wait_for(browser, "board.runPage && document.getElementById('log').textContent.length > 0")
    differing = js(
        browser,
        "[...document.querySelectorAll('#run-page tr.differs td:first-child')].map(td => td.textContent)",
    )
    assert differing == ["Adam.lr"]
    text = js(browser, "document.getElementById('run-page').textContent")
    assert "training_loop.reload=True" in text and "3f2c0aa" in text and "epoch 1/6" in text


def test_screenshots_of_the_main_views(browser, served, tmp_path):
    from PIL import Image

    views = {
        "board-runs": "sort=best/val_acc:desc&sel="
        + quote("sweep/lr=0.01_width=64_seed=0,sweep/lr=0.001_width=64_seed=0,live"),
        "board-groups": "group=Adam.lr,CNN.width&status=finished&sort=best/val_acc:desc&metric=val_loss"
        + "&smooth=0.3&gsel="
        + quote(json.dumps(["[0.01, 64]", "[0.001, 64]", "[0.0003, 32]"])),
        "board-run-page": "run="
        + quote("sweep/lr=0.003_width=64_seed=2")
        + "&cmp="
        + quote("sweep/lr=0.001_width=64_seed=2"),
        "board-experiments": "tab=experiments",
    }
    for name, view in views.items():
        open_view(browser, served, view)
        time.sleep(0.8)  # the run page's log and the experiments' figures load after the table
        path = tmp_path / f"{name}.png"
        browser.save_screenshot(str(path))
        image = Image.open(path)
        assert image.size == (1400, 900) or image.size[0] >= 1000
        assert len(image.convert("RGB").getcolors(1 << 20) or []) > 50  # not a blank page
        if os.environ.get("GINLAB_UPDATE_SCREENSHOTS") == "1":
            shutil.copy(path, ROOT / "docs" / "images" / f"{name}.png")


def test_an_exported_view_opens_from_a_file_without_a_server(browser, tree, tmp_path):
    from ginlab.board import export_view

    target = tmp_path / "view.html"
    export_view(
        str(tree), str(target), "#group=Adam.lr&status=finished&gsel=" + quote(json.dumps(["[0.003]"]))
    )
    browser.get(target.as_uri())
    wait_for(browser, "window.board && board.ready && board.rowsLoaded > 0 && board.curvesDrawn > 0")
    assert js(browser, "board.static") and js(browser, "board.total") == 4
    assert js(browser, "board.drawn.series.length") == 1
    assert js(browser, "board.errors") == []
