"""Who may use the board: the rules every request is checked against (docs/board.md, "Safety").

- Bound to a loopback address (the default, 127.0.0.1), the board answers only requests whose Host is a
  loopback name (localhost, 127.0.0.1, [::1], any port: `ssh -L` keeps it so), so that a web page elsewhere
  cannot read it through a DNS name that points at 127.0.0.1.
- Bound to any other address, every request must carry the token printed at start: `?token=` (the page then
  keeps it in a cookie), the `X-Board-Token` header, or that cookie.

The standard library only: `bin/board.py` decides this and prints its URL before it imports the web server.
"""

from __future__ import annotations

import secrets
from urllib.parse import parse_qs

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
COOKIE = "ginlab_board_token"


def is_loopback(host: str) -> bool:
    return host in LOOPBACK_HOSTS or host.startswith("127.")


def refusal(headers: dict[str, str], query: str, token: str | None, loopback: bool) -> tuple[int, str] | None:
    """(HTTP status, message) when a request must be refused, else None.

    Args:
        headers: the request's headers, names in lower case.
        query: its query string.
        token: the token every request must carry (a board bound to a non-loopback address), or None.
        loopback: the board is bound to a loopback address: the Host must be a loopback name.
    """
    if loopback:
        host = headers.get("host", "")
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if not is_loopback(name):
            return 403, (
                f"this board answers only requests to localhost, not to {host!r}; open "
                "http://127.0.0.1:PORT/ (over ssh: ssh -L PORT:localhost:PORT, then the same URL)"
            )
    if token is None:
        return None
    given = (parse_qs(query).get("token") or [None])[0] or headers.get("x-board-token") or _cookie(headers)
    if given is None or not secrets.compare_digest(given.encode(), token.encode()):
        return 401, (
            "this board needs its token: open the URL with ?token=... that bin/board.py printed when it "
            "started (it is bound to a non-loopback address, so every request must carry it)"
        )
    return None


def _cookie(headers: dict[str, str]) -> str | None:
    for part in headers.get("cookie", "").split(";"):
        key, _, value = part.strip().partition("=")
        if key == COOKIE:
            return value
    return None


__all__ = ["COOKIE", "LOOPBACK_HOSTS", "is_loopback", "refusal"]
