"""Keep DEST current: a watchman subscription, and an rsync run after every batch of changes."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from ginlab.sync.errors import UsageError
from ginlab.sync.filter import SYNCIGNORE, build_filter
from ginlab.sync.marker import prepare_destination
from ginlab.sync.rsync import Backoff, RsyncError, SyncConfig, SyncResult, run_rsync
from ginlab.sync.watchman import WatchmanSubscription

logger = logging.getLogger(__name__)


def watch(
    config: SyncConfig,
    on_sync: Callable[[SyncResult], None],
    sockpath: str | None = None,
    stop: threading.Event | None = None,
) -> None:
    """Sync once, then after every batch of changes, until Ctrl-C (KeyboardInterrupt) or `stop` is set.

    DEST is checked before the first sync (`prepare_destination`): `--delete` only into this source's
    mirror. Failed syncs are retried with backoff (forever when `config.retries` is None) while changes
    keep being collected; the next successful sync sends all of them.

    Args:
        config: what to sync where.
        on_sync: called with the result of every successful sync, the initial one first.
        sockpath: the watchman socket; None uses $WATCHMAN_SOCK or the user's running service.
        stop: set it (from another thread) to end the watch.

    Raises:
        RsyncError: rsync failed in a way retrying cannot fix, or ran out of retries.
        SyncError: watchman failed.
        UsageError: `--delete` into a DEST that is not this source's mirror.
    """
    sync_filter = build_filter(config.source)
    with WatchmanSubscription(config.source, sockpath) as subscription:
        # Subscribed before the first sync, so nothing saved during it is missed.
        pending, next_attempt, prepared = True, 0.0, False
        backoff = Backoff(config.retry_wait, config.max_retry_wait)
        while stop is None or not stop.is_set():
            timeout = max(0.0, next_attempt - time.monotonic()) if pending else 0.5
            changes = subscription.wait(min(timeout, 0.5))
            drain_until = time.monotonic() + 0.1  # take what arrived meanwhile, but never wait long
            while changes and time.monotonic() < drain_until and (more := subscription.wait(0.005)):
                changes += more
            if changes and any(path == SYNCIGNORE for path, _ in changes):
                try:
                    sync_filter = build_filter(config.source)
                    logger.info("%s changed; reloaded the excludes", SYNCIGNORE)
                    pending = True
                except UsageError as error:
                    logger.error("%s; still using the excludes from before", error)
            if changes and any(not sync_filter.is_excluded(path, is_dir) for path, is_dir in changes):
                pending = True
            if not pending or time.monotonic() < next_attempt:
                continue
            try:
                if not prepared:
                    prepare_destination(config)
                    prepared = True
                result = run_rsync(config, sync_filter)
            except RsyncError as error:
                if not error.retryable or (config.retries is not None and backoff.failures >= config.retries):
                    raise
                wait = backoff.next_wait()
                next_attempt = time.monotonic() + wait
                logger.warning(
                    "sync to %s failed (%s); retry %d in %.3g s", config.dest, error, backoff.failures, wait
                )
                continue
            if backoff.failures:
                logger.warning(
                    "sync to %s works again after %d failed attempts", config.dest, backoff.failures
                )
            backoff.reset()
            pending = False
            on_sync(result)
