"""The board: a local web page to compare thousands of runs, read straight from their run folders.

    bin/board.py results/                  # http://127.0.0.1:8765/

Modules, in the order data flows: scan (find run folders, notice changes) -> table (load_runs, kept current;
table_cache on disk) -> query and expression (filter, sort, group) and histories (curves) -> run_page and
experiments -> data (what each endpoint answers) -> server (routes, access rules) -> serve (start) and
export (a static page of a view). assets finds the page's files. Nothing here imports torch or Lightning.
"""

from ginlab.board.paths import BoardError
from ginlab.board.serve import export_view, serve

__all__ = ["BoardError", "export_view", "serve"]
