"""watchman: a private daemon of our own, and a subscription to the changes under the source."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Self

from ginlab.processes import process_alive
from ginlab.sync.destination import INSTALL_HINTS
from ginlab.sync.errors import SyncError

logger = logging.getLogger(__name__)


def _import_pywatchman():
    try:
        import pywatchman
    except ImportError as error:
        raise SyncError(
            f"the Python package pywatchman is missing ({error}); it is pinned in requirements.txt: "
            "`source e.sh` installs it, or `pip install pywatchman==4.0.0`"
        ) from error
    return pywatchman


class OwnWatchman:
    """A private watchman daemon: its socket, state, log and pid files all live in `folder`.

    Use it when no watchman service runs (CI, a cluster login node) or to keep away from it.

    Args:
        folder: where its files go; None makes a temporary folder, removed again by `stop`.
    """

    def __init__(self, folder: Path | None = None):
        self.temporary = folder is None
        self.folder = None if folder is None else Path(folder)

    @property
    def sockpath(self) -> str:
        return str(self.folder / "sock")

    @property
    def logfile(self) -> Path:
        return self.folder / "log"

    @property
    def pidfile(self) -> Path:
        return self.folder / "pid"

    def start(self) -> OwnWatchman:
        """Start the daemon (`watchman get-sockname` spawns it) and wait until it answers.

        Raises:
            SyncError: watchman is missing or did not start.
        """
        check = shutil.which("watchman")
        if check is None:
            raise SyncError(f"watchman is not installed. Install it:\n{INSTALL_HINTS['watchman']}")
        if self.temporary:
            self.folder = Path(tempfile.mkdtemp(prefix="ginlab-watchman-"))
        self.folder.mkdir(parents=True, exist_ok=True)
        if len(self.sockpath) > 100:  # unix socket paths are limited to about 104 bytes
            raise SyncError(f"the watchman socket path {self.sockpath} is too long; use a shorter folder")
        command = [
            "watchman",
            f"--sockname={self.sockpath}",
            f"--statefile={self.folder / 'state'}",
            f"--logfile={self.logfile}",
            f"--pidfile={self.pidfile}",
            "get-sockname",
        ]
        completed = subprocess.run(command, check=False, capture_output=True, text=True, timeout=30)
        if completed.returncode != 0 or not os.path.exists(self.sockpath):
            log_tail = self.logfile.read_text(errors="replace")[-2000:] if self.logfile.exists() else ""
            raise SyncError(
                f"could not start watchman in {self.folder} (exit {completed.returncode}): "
                f"{completed.stderr.strip()}\n{log_tail}".strip()
            )
        logger.info("started a private watchman (socket %s, log %s)", self.sockpath, self.logfile)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the daemon to shut down; kill it if it has not exited after `timeout` seconds."""
        pid = self.pid()
        subprocess.run(
            ["watchman", f"--sockname={self.sockpath}", "shutdown-server"],
            check=False,
            capture_output=True,
            timeout=timeout,
        )
        deadline = time.monotonic() + timeout
        while pid is not None and process_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        if pid is not None and process_alive(pid):
            logger.warning("watchman (pid %d) did not shut down in %.0f s; killing it", pid, timeout)
            os.kill(pid, 9)
        if self.temporary:
            shutil.rmtree(self.folder, ignore_errors=True)

    def pid(self) -> int | None:
        try:
            return int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            if self.temporary and self.folder is not None:
                shutil.rmtree(self.folder, ignore_errors=True)
            raise

    def __exit__(self, *exc_info) -> None:
        self.stop()


class WatchmanSubscription:
    """Changes under `source`, from watchman, as lists of paths relative to `source`.

    Leaving the `with` block unsubscribes, and removes the watch if this subscription created it (a
    watch that existed before, e.g. an editor's, is left alone).

    Args:
        source: the folder to watch.
        sockpath: the watchman socket; None uses $WATCHMAN_SOCK or the user's running service.
    """

    def __init__(self, source: Path, sockpath: str | None = None):
        self.source = Path(source)
        self.sockpath = sockpath
        self.name = f"ginlab-sync-{os.getpid()}"
        self.client = None
        self.root = None
        self.created_watch = False
        self._seen_first_result = False

    def __enter__(self) -> Self:
        pywatchman = _import_pywatchman()
        # Generous: subscribing to a big tree waits for watchman's first crawl of it.
        self.client = pywatchman.client(sockpath=self.sockpath, timeout=120.0)
        try:
            watched = set(self.client.query("watch-list")["roots"])
            response = self.client.query("watch-project", str(self.source))
            self.root = response["watch"]
            self.created_watch = self.root not in watched
            query = {
                # Only git's folder is dropped here; the precise excludes are applied in Python
                # (SyncFilter.is_excluded) with the same rules rsync gets, so the two cannot disagree.
                "expression": ["not", ["anyof", ["dirname", ".git"], ["match", ".watchman-cookie-*"]]],
                "fields": ["name", "exists", "type"],
                "empty_on_fresh_instance": True,
            }
            if response.get("relative_path"):
                query["relative_root"] = response["relative_path"]
            self.client.query("subscribe", self.root, self.name, query)
        except (pywatchman.WatchmanError, OSError) as error:
            self.close()
            raise SyncError(
                f"watchman could not watch {self.source}: {error}. Is the watchman service running and "
                "reachable ($WATCHMAN_SOCK)? `bin/sync.py --own-watchman` starts a private one instead."
            ) from error
        logger.debug("watching %s (root %s, new watch: %s)", self.source, self.root, self.created_watch)
        return self

    def wait(self, timeout: float) -> list[tuple[str, bool]] | None:
        """Wait up to `timeout` seconds for changes; returns [(path, is_dir)], or None if none came.

        A fresh-instance result (watchman lost track, e.g. after an overflow) returns [(".", True)].

        Raises:
            SyncError: the connection to watchman broke or the watch was removed.
        """
        pywatchman = _import_pywatchman()
        self.client.setTimeout(max(timeout, 0.001))
        try:
            self.client.receive()
        except pywatchman.SocketTimeout:
            pass
        except (pywatchman.WatchmanError, OSError) as error:
            raise SyncError(f"lost the connection to watchman: {error}") from error
        changes = []
        for result in self.client.getSubscription(self.name) or []:
            if result.get("canceled"):
                raise SyncError(
                    f"watchman stopped watching {self.root}: the folder was deleted or moved, or the "
                    "watch was removed (watch-del). Start bin/sync.py again."
                )
            if result.get("is_fresh_instance"):
                # The first result after subscribing always is one; a later one means watchman lost
                # track (a recrawl after an overflow): the whole tree may have changed.
                if self._seen_first_result:
                    changes.append((".", True))
                self._seen_first_result = True
                continue
            changes += [(entry["name"], entry.get("type") == "d") for entry in result.get("files", [])]
        return changes or None

    def close(self) -> None:
        if self.client is None:
            return
        # Closing the connection ends the subscription. The watch is removed over a new connection:
        # a Ctrl-C may have landed in the middle of reading a result on the old one.
        sockpath = self.client.sockpath
        self.client.close()
        self.client = None
        if self.root is None or not self.created_watch:
            return
        pywatchman = _import_pywatchman()
        try:
            with pywatchman.client(sockpath=sockpath, timeout=10.0) as client:
                client.query("watch-del", self.root)
        except (pywatchman.WatchmanError, OSError) as error:
            logger.warning("could not remove the watchman watch on %s: %s", self.root, error)

    def __exit__(self, *exc_info) -> None:
        self.close()
