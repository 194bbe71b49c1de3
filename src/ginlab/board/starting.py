"""The board while it loads: the page is served at once, its first rows from the first view.

`serve` binds, prints the URL and starts the web server before the board's data layer is even imported
(pandas and pyarrow take most of a second on 2 cores). `StartingBoard` stands in for the `Board` meanwhile:
it loads the real one in a thread (once the page has its first rows, or a request needs the board, or after
LOAD_WAITS_AT_MOST_SECONDS), answers /api/meta, the default view's first block and /api/changes from the
first view on disk (ginlab.board.first_view) until then, and hands every other request to the board once it
is loaded (each waits in the server's thread pool, never in its event loop).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from ginlab.board.first_view import FirstView
from ginlab.board.paths import BoardError

if TYPE_CHECKING:
    from ginlab.board.data import Board

logger = logging.getLogger(__name__)

# With a first view, the board's load (a second of a core, and the GIL) waits until the page has its first rows,
# a request needs the board, or this many seconds passed: the page is served faster without that beside it.
LOAD_WAITS_AT_MOST_SECONDS = 2.0


class StartingBoard:
    """A `Board` that is still loading, with the same answers (see the module's docstring).

    Args:
        root: the results root (a real path to a folder).
        first: the first view of that root, or None (then every request waits for the board).
    """

    def __init__(self, root: str, first: FirstView | None):
        self.root = root
        self._first = first
        self._loaded = threading.Event()
        self._board: Board | None = None
        self._error: BaseException | None = None
        self._answered = False  # the page got its first rows from the first view
        self._go = threading.Event()  # load now: the first rows were sent, or a request needs the board
        self._stopping = False

    def start(self) -> None:
        """Load the board in a thread, which then checks every run and follows the live ones."""
        threading.Thread(target=self._load_and_follow, name="board-refresh", daemon=True).start()

    def _load_and_follow(self) -> None:
        # The thread that imports pyarrow must live as long as the process: pyarrow's memory pool (mimalloc)
        # belongs to the thread that first used it, and the next use after that thread ended crashed the
        # process (a segmentation fault, on the first /api/meta of a tree never seen). So this thread does
        # not end after loading: it becomes the board's reading thread.
        if self._first is not None:
            self._go.wait(LOAD_WAITS_AT_MOST_SECONDS)
        started = time.monotonic()
        try:
            from ginlab.board.data import Board  # pandas: the slow part of a start

            board = Board(self.root)
            if self._answered:
                board.first_answer_sent()
            self._board = board
            logger.info("board loaded in %.2f s", time.monotonic() - started)
        except BaseException as error:  # every request then says why
            logger.exception("the board could not load %s", self.root)
            self._error = error
            return
        finally:
            self._loaded.set()
        if not self._stopping:
            board.follow()

    def loaded(self, timeout: float | None = None) -> Board:
        """The board, once loaded (waits for it)."""
        self._go.set()
        if not self._loaded.wait(timeout):
            raise BoardError(f"the board of {self.root} is still loading; try again in a moment")
        if self._board is None:
            raise BoardError(f"the board could not read {self.root}: {self._error}")
        return self._board

    def stop(self) -> None:
        self._stopping = True
        if self._board is not None:
            self._board.stop()

    # -- what the first view can answer, until the board is loaded -------------------------------------

    def _early(self) -> FirstView | None:
        return self._first if not self._loaded.is_set() else None

    def meta(self) -> dict[str, Any]:
        first = self._early()
        return first.meta() if first is not None else self.loaded().meta()

    def runs(self, params, start: int = 0, end: int = 200) -> dict[str, Any]:
        first = self._early()
        answer = first.runs(params, int(start), int(end)) if first is not None else None
        if answer is None:
            return self.loaded().runs(params, start, end)
        self._answered = True
        self._go.set()
        return answer

    def changes(self, since: int) -> dict[str, Any]:
        first = self._early()
        return first.changes() if first is not None and since == 0 else self.loaded().changes(since)

    # -- everything else waits for the board ------------------------------------------------------------

    def curves(self, *args, **kwargs) -> dict[str, Any]:
        return self.loaded().curves(*args, **kwargs)

    def run_page(self, *args, **kwargs) -> dict[str, Any]:
        return self.loaded().run_page(*args, **kwargs)

    def log(self, *args, **kwargs) -> dict[str, Any]:
        return self.loaded().log(*args, **kwargs)

    def experiments(self) -> list[dict[str, Any]]:
        return self.loaded().experiments()

    def file(self, relative: str) -> str:
        return self.loaded().file(relative)


__all__ = ["StartingBoard"]
