#!/usr/bin/env python3
"""A local web board to compare thousands of runs: table, groups over seeds, curves, run pages, live.

    bin/board.py results/                      # prints http://127.0.0.1:8765/ ; Ctrl-C stops it
    bin/board.py results/tune_lr --port 8765   # on a cluster: ssh -L 8765:localhost:8765 cluster, same URL
    bin/board.py results --host 0.0.0.0        # reachable from other machines: prints a URL with a token
    bin/board.py results --export view.html --view 'http://127.0.0.1:8765/#group=Adam.lr&sel=...'

It only reads the run folders (docs/board.md). Exit codes: 0 stopped with Ctrl-C or export written,
2 usage error (no such folder, port taken, assets not installed, bad view).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    from ginlab.board import BoardError, export_view, serve  # after the arguments: --help answers at once

    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        if args.export:
            path = export_view(args.folder, args.export, args.view or "")
            print(f"wrote {path}: a self-contained page of that view (open it in any browser)")
            return 0
        serve(args.folder, host=args.host, port=args.port)
    except BoardError as error:
        print(f"board.py: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


def parse_arguments(argv):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("folder", nargs="?", default=os.environ.get("RESULTS_DIR", "results"),
                        help="the results folder (default: $RESULTS_DIR or ./results)")  # fmt: skip
    parser.add_argument("--port", type=int, help="port (default 8765, or any free one when it is taken)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address (default 127.0.0.1; any other needs the printed token)")  # fmt: skip
    parser.add_argument(
        "--export", metavar="FILE", help="write a self-contained HTML page of a view and exit"
    )
    parser.add_argument(
        "--view", metavar="URL", help="with --export: the board URL of the view (its #... part)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the board reads")
    args = parser.parse_args(argv)
    if args.view and not args.export:
        parser.error("--view is for --export FILE")
    return args


if __name__ == "__main__":
    sys.exit(main())
