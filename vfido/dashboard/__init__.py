"""The dashboard (`vfido ui`): a live dashboard for a running key, in the browser.

A small HTTP server (standard library only) on 127.0.0.1 that talks to the key through its
control socket (:mod:`vfido.control`). Every URL starts with a random token
(``http://127.0.0.1:PORT/TOKEN/``); a request without it is refused (constant-time
comparison). The page is rendered on the server; a little JavaScript (no framework, no
build step, no third-party file: it works offline) keeps it live through server-sent events
(``TOKEN/events``) and sends the forms without reloading. Without JavaScript the forms
still work (POST, then a redirect back to the page).

What it shows, each section only when the key offers the control commands it needs:

* the request waiting for the user (site, register or sign in, user) with Allow / Deny
  (``pending``, ``approve``, ``deny``);
* the credentials grouped by site, with delete and public-key export (``credentials``);
* the transaction log, each CTAP request and response decoded, secrets redacted (``log``);
* the relying-party lint's findings (``lint``: a key run with ``--lint``);
* switches for the presence mode and the scripted misbehaviours, applied at once.

Security: the server binds 127.0.0.1 only; the ``Host`` header must name it (no DNS
rebinding); state changes are POST only, carry the token in their URL and are refused when
the browser says they come from another origin; responses forbid framing and every
third-party source (Content-Security-Policy). The token is never logged.

The package: :mod:`~vfido.dashboard.link` (the control socket), :mod:`~vfido.dashboard.render`
(HTML), :mod:`~vfido.dashboard.keys` (COSE -> PEM), :mod:`~vfido.dashboard.hub` (server-sent
events), :mod:`~vfido.dashboard.server` (HTTP, :func:`serve`); the command line is
:mod:`vfido.cli.dashboard`.
"""

from vfido.dashboard.common import UiError
from vfido.dashboard.keys import cose_to_pem, public_key_pem
from vfido.dashboard.link import KeyLink
from vfido.dashboard.server import DashboardServer, has_display, serve

__all__ = [
    "DashboardServer",
    "KeyLink",
    "UiError",
    "cose_to_pem",
    "has_display",
    "public_key_pem",
    "serve",
]
