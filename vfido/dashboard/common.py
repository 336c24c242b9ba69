"""The dashboard's settings and its one error type."""

from __future__ import annotations

import logging

from vfido.presence.modes import RUNTIME_MODES

log = logging.getLogger("vfido.ui")


HOST = "127.0.0.1"


#: Bytes of randomness in the URL token.
TOKEN_BYTES = 24


#: Largest form body accepted.
MAX_BODY = 16 * 1024


#: Server-sent events: a comment line this often keeps the connection open.
KEEPALIVE = 15.0


#: How often the pending request is looked at while one is shown (seconds).
PENDING_POLL = 0.2


#: How long one control-socket call waits for a request to appear (seconds; also how long
#: stopping the dashboard may take).
PENDING_WAIT = 1


#: How often the other sections are refreshed (seconds).
REFRESH = 1.0


#: How often the credentials are listed again without a reason (seconds).
CREDENTIALS_REFRESH = 5.0


#: Credentials shown at most (the rest is counted).
CREDENTIALS_LIMIT = 500


#: Log entries shown (newest first).
LOG_LIMIT = 100


ASSETS = {
    "dashboard.css": "text/css; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}


SECTIONS = ("key", "pending", "credentials", "switches", "log", "lint")


CRED_PROTECT_NAMES = {
    1: "1 (optional)",
    2: "2 (optional with credential ID list)",
    3: "3 (required: user verification)",
}


#: Presence modes offered when the key does not list its own (the registry's run-time modes).
DEFAULT_PRESENCE_MODES = RUNTIME_MODES


SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",  # no-referrer would make form posts say Origin: null
    "Cache-Control": "no-store",
    "Cross-Origin-Resource-Policy": "same-origin",
}


REDACTED = "\u2039redacted\u203a"


class UiError(Exception):
    """A dashboard problem, said in one line."""
