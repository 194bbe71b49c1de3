"""The Notifier: events in, few messages out.

    notifier = Notifier(notify_settings())   # bin/train.py's build phase: a bad URL fails here, exit 2
    notifier.run_ended(run_folder)           # after the outcome is recorded in meta.json
    notifier.send(stale_event(...))          # the watchdog
    notifier.close_experiment(event)         # an experiment's `run` at its end, with the held events

Each event goes through the shared Outbox (ginlab.health.throttle) and out through Apprise
(ginlab.health.deliver). Nothing here raises: a notification that cannot be sent is a logged warning.
"""

from __future__ import annotations

import logging
import os

from ginlab.health.deliver import deliver
from ginlab.health.events import Event, compose, digest_body, run_ended_event
from ginlab.health.settings import NotifySettings
from ginlab.health.throttle import Outbox, state_folder
from ginlab.runfolder import read_meta, read_summary

log = logging.getLogger(__name__)


class Notifier:
    """Sends the events `settings` asks for (see ginlab.health.settings); does nothing without URLs."""

    def __init__(self, settings: NotifySettings, folder: str | os.PathLike | None = None):
        self.settings = settings
        self.outbox = Outbox(folder or state_folder(settings.urls), settings.burst, settings.window_seconds)

    @property
    def enabled(self) -> bool:
        return bool(self.settings.urls)

    def send(self, event: Event) -> None:
        """Send `event` now (with the held ones), or hold it when the window's messages are spent."""
        if not self.settings.wants(event.kind):
            return
        try:
            batch = self.outbox.admit(event)
        except Exception as error:  # the shared state is unusable (a read-only or full disk): send anyway
            log.warning("notification state in %s not usable (%s): sending without a limit",
                        self.outbox.folder, error)  # fmt: skip
            batch = [event]
        if batch is None:
            log.info("notification %r held back (more than %d in %g s): it goes out in the next digest",
                     event.title, self.settings.burst, self.settings.window_seconds)  # fmt: skip
            return
        self._deliver(*compose(batch))

    def run_ended(self, run_folder) -> None:
        """Send the event of how the run in `run_folder` ended (as meta.json records it), if one is due."""
        if not self.enabled:
            return
        try:
            event = run_ended_event(run_folder, read_meta(run_folder), read_summary(run_folder))
        except Exception as error:
            log.warning("no notification for %s: its record cannot be read (%s)", run_folder, error)
            return
        if event is not None:
            self.send(event)

    def close_experiment(self, event: Event) -> None:
        """Send the experiment's closing message, with every held event as a digest below it."""
        if not self.enabled:
            return
        try:
            held = self.outbox.drain()
        except Exception as error:
            log.warning("notification state in %s not usable (%s)", self.outbox.folder, error)
            held = []
        if not self.settings.wants(event.kind):
            if held:  # the closing message is not wanted, the held events still are
                self._deliver(*compose(held))
            return
        body = event.body + (f"\n\n{digest_body(held)}" if held else "")
        self._deliver(event.title, body)

    def _deliver(self, title: str, body: str) -> None:
        deliver(self.settings.urls, title, body, self.settings.retries, self.settings.backoff_seconds)
