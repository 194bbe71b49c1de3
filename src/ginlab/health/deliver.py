"""Delivering one message to each URL through Apprise, with retries and backoff; never raising.

Each URL is tried on its own, so a service that is down is retried without sending the message twice to the
ones that took it. A delivery that still fails is a logged warning: a notification is never a reason for a
run, or an experiment, to fail.
"""

from __future__ import annotations

import logging
import time

log = logging.getLogger(__name__)


def deliver(urls, title: str, body: str, retries: int = 3, backoff_seconds: float = 1.0) -> bool:
    """Send (title, body) to every URL; True when every one of them took it.

    A failed attempt is tried again after backoff_seconds, then twice as long each time, `retries` times.
    """
    delivered = True
    for url in urls:
        try:
            delivered &= _deliver_one(url, title, body, retries, backoff_seconds)
        except Exception as error:  # a bug or a broken service plugin: still no reason to fail anything
            log.warning("notification %r not sent: %s: %s", title, type(error).__name__, error)
            delivered = False
    return delivered


def prepare(urls) -> None:
    """Load Apprise and its services now, so that a message later goes out without that wait (the watchdog
    prepares while the run is well; loading takes about a second)."""
    try:
        import apprise

        for url in urls:
            apprise.Apprise.instantiate(url)
    except Exception as error:
        log.warning("notification services could not be loaded: %s", error)


def _deliver_one(url: str, title: str, body: str, retries: int, backoff_seconds: float) -> bool:
    import apprise

    service = apprise.Apprise()
    service.add(url)
    shown = _private(url)
    for attempt in range(retries + 1):
        if service.notify(body=body, title=title):
            if attempt:
                log.info("notification %r delivered to %s at attempt %d", title, shown, attempt + 1)
            return True
        if attempt < retries:
            wait = backoff_seconds * 2**attempt
            log.warning("notification %r to %s failed (attempt %d of %d); trying again in %.3g s",
                        title, shown, attempt + 1, retries + 1, wait)  # fmt: skip
            time.sleep(wait)
    log.warning("notification %r to %s failed %d times; giving up (the run is not affected)",
                title, shown, retries + 1)  # fmt: skip
    return False


def _private(url: str) -> str:
    """The URL with its secrets hidden, for logs."""
    try:
        import apprise

        return apprise.Apprise.instantiate(url).url(privacy=True).split("?")[0]
    except Exception:
        return url.split("://")[0] + "://..."
