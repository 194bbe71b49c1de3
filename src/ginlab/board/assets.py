"""The browser assets: the board's own page (static/) and the npm packages it uses (node_modules/).

The npm packages are pinned in the repository's package.json and package-lock.json and installed with
`npm ci` (e.sh does it on first use, .ci/run always): nothing is fetched from a CDN, the board works
offline. GINLAB_BOARD_NODE_MODULES points at another node_modules folder.
"""

from __future__ import annotations

import os
from pathlib import Path

from ginlab.board.paths import BoardError

STATIC = Path(__file__).parent / "static"
REPOSITORY = Path(__file__).resolve().parents[3]
# URL name -> file inside node_modules
VENDOR = {
    "ag-grid-community.min.js": "ag-grid-community/dist/ag-grid-community.min.js",
    "uPlot.iife.min.js": "uplot/dist/uPlot.iife.min.js",
    "uPlot.min.css": "uplot/dist/uPlot.min.css",
    "ag-grid.min.css": "ag-grid-community/styles/ag-grid.min.css",
    "ag-theme-quartz-no-font.min.css": "ag-grid-community/styles/ag-theme-quartz-no-font.min.css",
}
OWN = {"board.js": "board.js", "board.css": "board.css", "index.html": "index.html"}


def node_modules() -> Path:
    return Path(os.environ.get("GINLAB_BOARD_NODE_MODULES") or REPOSITORY / "node_modules")


def check_assets() -> None:
    """Raise BoardError naming the install command when an asset is missing."""
    missing = [
        str(node_modules() / path) for path in VENDOR.values() if not (node_modules() / path).is_file()
    ]
    if missing:
        raise BoardError(
            f"the board's browser assets are not installed ({missing[0]} is missing). Install them from "
            f"the repository with `cd {REPOSITORY} && npm ci` (needs Node.js and npm; `source e.sh` runs "
            "it on first use), or point GINLAB_BOARD_NODE_MODULES at a node_modules folder that has them."
        )


def asset_path(name: str) -> Path | None:
    """The file behind /assets/<name>, or None for a name that is not an asset."""
    if name in OWN:
        return STATIC / OWN[name]
    if name in VENDOR:
        return node_modules() / VENDOR[name]
    return None


def read_asset(name: str) -> str:
    path = asset_path(name)
    if path is None:
        raise BoardError(f"{name!r} is not an asset of the board")
    return path.read_text(encoding="utf-8")
