"""Starting the board: check the assets, bind, print the URL, serve until Ctrl-C; the data loads meanwhile.

What a start does before the page can be served is kept to the standard library, the web server and the
first view on disk (ginlab.board.starting): pandas and the runs table load in a thread while the browser
loads the page, so that a results tree seen before shows its rows within a second of starting.

serve("results")                               # http://127.0.0.1:8765/ (or a free port)
serve("results", host="0.0.0.0", port=8765)    # a token is printed and required
export_view("results", "view.html", "http://127.0.0.1:8765/#group=Adam.lr&sel=...")
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import sys
import time

from ginlab.board.access import is_loopback
from ginlab.board.assets import check_assets
from ginlab.board.first_view import FirstView
from ginlab.board.paths import BoardError, results_root
from ginlab.board.starting import StartingBoard

logger = logging.getLogger(__name__)

DEFAULT_PORT = 8765


def serve(root: str, host: str = "127.0.0.1", port: int | None = None, *, out=sys.stdout) -> None:
    """Serve the board of `root` until interrupted.

    Args:
        root: the results folder (a folder of run folders, an experiment folder, or one run folder).
        host: the address to bind; any but a loopback address requires a token, printed with the URL.
        port: the port; None tries 8765 and takes any free port if it is taken; 0 takes any free port.
        out: where the URL is printed.

    Raises:
        BoardError: the assets are not installed, the root does not exist, or the port is taken.
    """
    check_assets()
    started = time.monotonic()
    path = results_root(root)
    first = FirstView.load(path)
    loopback = is_loopback(host)
    token = None if loopback else secrets.token_urlsafe(24)
    sock = _bind(host, port)
    bound_port = sock.getsockname()[1]
    shown_host = host if loopback else (socket.gethostname() if host in ("0.0.0.0", "::") else host)
    if ":" in shown_host:
        shown_host = f"[{shown_host}]"
    url = f"http://{shown_host}:{bound_port}/" + (f"?token={token}" if token else "")
    print(f"ginlab board of {path}: {url}", file=out, flush=True)
    if token:
        print("  (bound to a non-loopback address: every request needs this token)", file=out, flush=True)
    if loopback and host != "localhost":
        print(
            f"  over ssh: ssh -L {bound_port}:localhost:{bound_port} THIS_HOST, then open {url}",
            file=out,
            flush=True,
        )
    # The browser can connect from here on (the socket listens); the web server is imported meanwhile.
    import uvicorn

    from ginlab.board.server import build_app

    board = StartingBoard(path, first)
    app = build_app(board, token, loopback)
    board.start()
    logger.info(
        "serving in %.2f s (%s)",
        time.monotonic() - started,
        "first rows on disk" if first else "no first view",
    )
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock])
    finally:
        board.stop()
        sock.close()


def export_view(root: str, target: str, view: str = "") -> str:
    """Write the static page of a view of `root` to `target`; returns the path written.

    Args:
        root: the results folder.
        target: the HTML file to write.
        view: a board URL (its part after '#' is the view) or that part alone; "" is the default view.

    Raises:
        BoardError: the assets are missing, the root does not exist, or the view cannot be computed.
    """
    from ginlab.board.data import Board
    from ginlab.board.export import export_html, view_state

    check_assets()
    board = Board(root)
    board.table.refresh()
    document = export_html(board, view_state(view))
    temporary = f"{target}.tmp-{os.getpid()}"
    with open(temporary, "w", encoding="utf-8") as f:
        f.write(document)
    os.replace(temporary, target)
    return target


def _bind(host: str, port: int | None) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    wanted = DEFAULT_PORT if port is None else port
    try:
        sock.bind((host, wanted))
    except OSError as error:
        if port is not None:
            sock.close()
            raise BoardError(
                f"cannot listen on {host}:{port} ({error.strerror}); choose another port with --port, "
                "or --port 0 for any free one"
            ) from None
        sock.bind((host, 0))  # the default port is taken: any free one
    sock.listen(128)
    sock.setblocking(False)
    return sock
