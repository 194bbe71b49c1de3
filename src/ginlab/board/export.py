"""A self-contained static page of one view: `bin/board.py results --export view.html --view URL`.

The page is the board's own page with every asset inlined (the table component, the chart library, the
board's script and styles) and the view's data embedded: its rows (all of them, sorted and filtered as
in the view, grouped when it groups) and the curves of its selected runs or groups. It opens from a file,
offline, with no server; columns can still be sorted and the curves smoothed or put on log axes.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

from ginlab.board.assets import read_asset
from ginlab.board.paths import BoardError

if TYPE_CHECKING:
    from ginlab.board.data import Board

MAX_EXPORTED_ROWS = 20_000
# Row fields the page's cells use besides their own column (the name link, progress, group rows).
CELL_NEEDS = ("name", "status", "_key", "n", "statuses", "epochs", "progress", "training_loop.n_epochs")
SCRIPT = re.compile(r'<script src="assets/([\w.\-]+)"></script>')
STYLE = re.compile(r'<link rel="stylesheet" href="assets/([\w.\-]+)">')


def view_state(url_or_state: str) -> str:
    """The view part of a board URL: what follows '#' (or the text itself when it has no '#')."""
    text = url_or_state.strip()
    if "#" in text:
        return text.split("#", 1)[1]
    if text.startswith(("http://", "https://")):
        return urlsplit(text).query
    return text.lstrip("?#")


def export_html(board: Board, state: str) -> str:
    """The static page of the view `state` (a board URL's part after '#') of `board`.

    Raises:
        BoardError: the view cannot be computed (an unknown column, a bad expression).
    """
    params = {key: values[-1] for key, values in parse_qs(state, keep_blank_values=True).items()}
    meta = board.meta()
    result = board.runs(params, 0, MAX_EXPORTED_ROWS)
    selected = [name for name in params.get("sel", "").split(",") if name]
    try:
        groups = json.loads(params.get("gsel") or "[]")
    except ValueError:
        raise BoardError(
            f"gsel={params.get('gsel')!r} in the view is not a JSON list of group keys"
        ) from None
    metric = params.get("metric") or (meta["monitor"] or (meta["history_metrics"] or [""])[0])
    curves = None
    if selected or groups:
        curves = board.curves(params, selected, [str(g) for g in groups], metric, params.get("x") or "epoch")
    # Only the columns the view shows (and what their cells need): 20,000 runs x every column would be
    # tens of MB, a page too heavy to attach to a message.
    chosen = [c for c in params.get("cols", "").split(",") if c] or meta["default_columns"]
    group = [c for c in params.get("group", "").split(",") if c]
    kept = {*chosen, *group, *(f"{c} std" for c in chosen), *CELL_NEEDS}
    rows = [{key: value for key, value in row.items() if key in kept} for row in result["rows"]]
    payload = {
        "static": True,
        "exported": datetime.now(UTC).isoformat(timespec="seconds"),
        "state": state,
        "meta": meta,
        "rows": rows,
        "total": result["total"],
        "curves": curves,
    }
    page = read_asset("index.html").replace("{{root}}", _escape(board.root))
    page = SCRIPT.sub(
        lambda match: "<script>" + _inline_script(read_asset(match.group(1))) + "</script>", page
    )
    page = STYLE.sub(lambda match: "<style>" + read_asset(match.group(1)) + "</style>", page)
    data = json.dumps(payload, separators=(",", ":")).replace("<", "\\u003c")
    return page.replace(
        "<!--board-data-->", f'<script id="board-data" type="application/json">{data}</script>', 1
    )


def _inline_script(text: str) -> str:
    return text.replace("</script", "<\\/script")


def _escape(text: str) -> str:
    import html

    return html.escape(text)
