"""Where notifications go and which events send one: the `notify.*` gin settings, or an environment variable.

    notify.urls = ["json://hooks.example.org/ginlab", "mailtos://me:password@smtp.example.org?to=me@example.org"]
    export GINLAB_NOTIFY_URLS="slack://T000/B000/XXXX discord://1234/abcd"   # when notify.urls is not bound

The URLs are Apprise URLs (the notification library ginlab uses; every service and its URL form:
https://github.com/caronc/apprise/wiki): e-mail (mailto://, mailtos://), webhooks (json://, form://, xml://),
Slack, Matrix, Discord, Telegram, ntfy, Microsoft Teams and about 100 more. A URL whose scheme Apprise does
not know, or which it cannot read, is a configuration error before anything is written (exit 2).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os

import gin

from ginlab.config import bad_value, check_int, check_number, locate, sources
from ginlab.errors import ConfigError
from ginlab.runfolder.format import STALE_AFTER_SECONDS

# The events a notification can be sent for. "stale": a running run whose heartbeat stopped or whose process
# died without recording how it ended (ginlab.runfolder.run_status).
RUN_EVENTS = ("finished", "failed", "diverged", "stale")
EVENTS = (*RUN_EVENTS, "experiment_finished")
URLS_VARIABLE = "GINLAB_NOTIFY_URLS"
EXAMPLES = (
    "'json://host:port/path' (a webhook that receives JSON), 'mailtos://user:password@smtp.example.org?"
    "to=you@example.org', 'slack://TokenA/TokenB/TokenC', 'matrixs://user:password@matrix.org/#room', "
    "'discord://webhook_id/webhook_token'"
)


@dataclasses.dataclass(frozen=True)
class NotifySettings:
    """What notify.* says (see notify_settings for each field); no URLs means notifications are off."""

    urls: tuple[str, ...] = ()
    events: tuple[str, ...] = EVENTS
    stale_after: float = STALE_AFTER_SECONDS
    retries: int = 3
    backoff_seconds: float = 1.0
    burst: int = 3
    window_seconds: float = 600.0

    def wants(self, kind: str) -> bool:
        """Whether an event of this kind sends a notification."""
        return bool(self.urls) and kind in self.events

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> NotifySettings:
        values = json.loads(text)
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


@gin.configurable(
    "notify",
    allowlist=["urls", "events", "stale_after", "retries", "backoff_seconds", "burst", "window_seconds"],
)
def notify_settings(
    urls: list[str] | None = None,
    events=EVENTS,
    stale_after: float = STALE_AFTER_SECONDS,
    retries: int = 3,
    backoff_seconds: float = 1.0,
    burst: int = 3,
    window_seconds: float = 600.0,
) -> NotifySettings:
    """The notification settings of this run, checked (from gin: notify.<name>).

    Args:
        urls: Apprise URLs to send to; None: the space-separated URLs of $GINLAB_NOTIFY_URLS, if any.
        events: which of "finished", "failed", "diverged", "stale", "experiment_finished" send a message.
        stale_after: seconds without heartbeat (its process alive) after which the watchdog reports the run
            stale (the status rule's 300 s by default).
        retries, backoff_seconds: a failed delivery is tried again this often, after backoff_seconds, then
            twice as long each time.
        burst, window_seconds: at most `burst` messages per `window_seconds`; events beyond that wait and go
            out together as one digest (never a storm).

    Raises:
        ConfigError: a URL Apprise cannot use, an unknown event, a value out of range (nothing is written).
    """
    return build_settings(urls, events, stale_after, retries, backoff_seconds, burst, window_seconds)


def build_settings(
    urls=None,
    events=EVENTS,
    stale_after=STALE_AFTER_SECONDS,
    retries=3,
    backoff_seconds=1.0,
    burst=3,
    window_seconds=600.0,
    where: str = "notify",
) -> NotifySettings:
    """NotifySettings from plain values, checked (see notify_settings); `where` names them in errors."""
    if urls is None:
        listed = os.environ.get(URLS_VARIABLE, "").split()
        check_urls(listed, f"${URLS_VARIABLE}")
    else:
        if isinstance(urls, str) or not isinstance(urls, (list, tuple)):
            raise bad_value(
                f"{where}.urls", urls, 'a list of Apprise URLs, e.g. ["json://localhost:8080/hook"]'
            )
        listed = list(urls)
        check_urls(listed, f"{where}.urls")
    if isinstance(events, str) or not isinstance(events, (list, tuple)):
        raise bad_value(f"{where}.events", events, f"a list of events out of {list(EVENTS)}")
    for event in events:
        if event not in EVENTS:
            close = difflib.get_close_matches(str(event), EVENTS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise bad_value(
                f"{where}.events", events, f"events out of {list(EVENTS)}; {event!r} is none{hint}"
            )
    check_number(f"{where}.stale_after", stale_after, 0, exclusive=True, example=300)
    check_int(f"{where}.retries", retries, minimum=0, example=3)
    check_number(f"{where}.backoff_seconds", backoff_seconds, 0, example=1.0)
    check_int(f"{where}.burst", burst, minimum=1, example=3)
    check_number(f"{where}.window_seconds", window_seconds, 0, example=600)
    return NotifySettings(
        tuple(listed), tuple(events), float(stale_after), retries, float(backoff_seconds), burst,
        float(window_seconds),
    )  # fmt: skip


def check_urls(urls: list, where: str) -> None:
    """Raise ConfigError naming the first URL Apprise cannot use, why, and what would be valid."""
    if not urls:
        return
    import apprise
    from apprise.manager_plugins import NotificationManager

    schemes = NotificationManager().schemas()
    origin = "" if where.startswith("$") else f" ({locate(where, *sources())})"
    for index, url in enumerate(urls):
        name = f"{where}[{index}]" if where.endswith(".urls") else f"{where} entry {index + 1}"
        if not isinstance(url, str) or "://" not in url:
            raise ConfigError(
                f"{name} = {url!r}{origin} is not a notification URL: expected an Apprise URL, "
                f"scheme://..., e.g. {EXAMPLES}. Nothing was written."
            )
        scheme = url.split("://", 1)[0].lower()
        if scheme not in schemes:
            close = difflib.get_close_matches(scheme, schemes, n=3)
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            raise ConfigError(
                f"{name} = {url!r}{origin}: '{scheme}://' is not a notification service Apprise knows."
                f"{hint} Expected an Apprise URL, e.g. {EXAMPLES}; every service and its URL form: "
                f"https://github.com/caronc/apprise/wiki. Nothing was written."
            )
        if apprise.Apprise.instantiate(url) is None:
            raise ConfigError(
                f"{name} = {url!r}{origin}: Apprise knows '{scheme}://' but cannot read this URL (a "
                f"host, a token or a user is missing?). Its form for {scheme}:// is on "
                f"https://github.com/caronc/apprise/wiki. Nothing was written."
            )
