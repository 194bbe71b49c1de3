"""Running a sync: once with retries (`sync`), or bin/sync.py's whole workflow (`mirror`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from ginlab.sync.destination import check_tools
from ginlab.sync.filter import SyncFilter, build_filter
from ginlab.sync.marker import prepare_destination
from ginlab.sync.rsync import Backoff, RsyncError, SyncConfig, SyncResult, run_rsync
from ginlab.sync.watch_loop import watch
from ginlab.sync.watchman import OwnWatchman

logger = logging.getLogger(__name__)


def sync(config: SyncConfig, sync_filter: SyncFilter | None = None) -> SyncResult:
    """Sync once, retrying a failed rsync `config.retries` times with backoff.

    DEST is checked first (`prepare_destination`): `--delete` only into this source's mirror.

    Args:
        config: what to sync where.
        sync_filter: the excludes; default: `build_filter(config.source)`.

    Raises:
        RsyncError: rsync still failed after the retries, or failed in a way retrying cannot fix.
        UsageError: `.syncignore` has a line that is not a gitignore pattern, or `--delete` into a DEST
            that is not this source's mirror.
    """
    sync_filter = sync_filter or build_filter(config.source)
    backoff = Backoff(config.retry_wait, config.max_retry_wait)
    prepared = False
    while True:
        try:
            if not prepared:
                prepare_destination(config)
                prepared = True
            return run_rsync(config, sync_filter)
        except RsyncError as error:
            if not error.retryable or (config.retries is not None and backoff.failures >= config.retries):
                raise
            wait = backoff.next_wait()
            logger.warning(
                "sync to %s failed (%s); retry %d in %.3g s", config.dest, error, backoff.failures, wait
            )
            time.sleep(wait)


def mirror(
    config: SyncConfig,
    on_sync: Callable[[SyncResult], None],
    watching: bool = True,
    own_watchman: bool = False,
    on_start: Callable[[SyncConfig], None] | None = None,
) -> None:
    """What bin/sync.py does: check the tools, then sync once, or keep DEST current until Ctrl-C.

    Args:
        config: what to sync where.
        on_sync: called with the result of every successful sync.
        watching: False syncs once and returns (needs no watchman).
        own_watchman: watch with a private watchman daemon (see `OwnWatchman`) instead of the service.
        on_start: called once the tools are found, before the first sync.

    Raises:
        SyncError: a tool is missing, watchman failed, or rsync kept failing (`RsyncError`).
        UsageError: `.syncignore` has a line that is not a gitignore pattern, or `--delete` into a DEST
            that is not this source's mirror.
        KeyboardInterrupt: Ctrl-C (or a signal turned into it) stopped the sync or the watch.
    """
    check_tools(need_watchman=watching, need_ssh=config.dest.is_remote and config.rsh is None)
    if on_start is not None:
        on_start(config)
    if not watching:
        on_sync(sync(config))
    elif own_watchman:
        with OwnWatchman() as service:
            watch(config, on_sync, sockpath=service.sockpath)
    else:
        watch(config, on_sync)
