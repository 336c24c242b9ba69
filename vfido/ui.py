"""`vfido ui`: a live dashboard for a running key, in the browser.

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
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime
import hmac
import html
import importlib
import json
import logging
import os
import re
import secrets
import signal
import tempfile
import threading
import time
import urllib.parse
import webbrowser
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any

from vfido.control import ControlClient, ControlError, NotRunningError, find_key

log = logging.getLogger(__name__)

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

ALGORITHM_NAMES = {
    -7: "ES256",
    -8: "EdDSA",
    -35: "ES384",
    -36: "ES512",
    -257: "RS256",
    -37: "PS256",
    -47: "ES256K",
    -9: "ESP256",
    -51: "ESP384",
    -52: "ESP512",
    -19: "Ed25519",
    -48: "ML-DSA-44",
    -49: "ML-DSA-65",
    -50: "ML-DSA-87",
}

CRED_PROTECT_NAMES = {
    1: "1 (optional)",
    2: "2 (optional with credential ID list)",
    3: "3 (required: user verification)",
}

#: Presence modes offered when the key does not list its own.
DEFAULT_PRESENCE_MODES = ("auto", "manual", "deny", "deny-uv")

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

#: Field names whose values are secrets: never shown, whatever the log source says.
SECRET_FIELDS = frozenset(
    {
        "pin",
        "pinhash",
        "pinhashenc",
        "newpinenc",
        "pinuvauthparam",
        "pinuvauthtoken",
        "pinauth",
        "pintoken",
        "sharedsecret",
        "shared_secret",
        "salt",
        "saltenc",
        "saltauth",
        "hmac-secret",
        "hmacsecret",
        "hmac_secret",
        "private_key",
        "privatekey",
        "credrandom",
        "largeblobkey",
        "large_blob_key",
        "credblob",
        "cred_blob",
        "token",
        "passphrase",
        "secret",
    }
)
REDACTED = "\u2039redacted\u203a"


class UiError(Exception):
    """A dashboard problem, said in one line."""


# --- talking to the key -------------------------------------------------------------------


class KeyLink:
    """Calls on one key's control socket. A thread that calls :meth:`keep_connection`
    (the dashboard's pollers) keeps one connection, reopened when the key restarts; other
    threads (HTTP requests) open one per call."""

    def __init__(self, path: Path, timeout: float = 10.0) -> None:
        self.path = path
        self.timeout = timeout
        self._local = threading.local()
        self._commands: frozenset[str] = frozenset()
        self._commands_at = 0.0
        self._lock = threading.Lock()

    def keep_connection(self) -> None:
        """Keep this thread's connection open between calls (until :meth:`close`)."""
        self._local.keep = True

    def call(self, cmd: str, timeout: float | None = None, **args: Any) -> dict[str, Any]:
        """One command; its answer. Raises ControlError (NotRunningError if the key is gone)."""
        wait = timeout if timeout else self.timeout
        if not getattr(self._local, "keep", False):
            with ControlClient(self.path, timeout=self.timeout) as once:
                return once.call(cmd, timeout=wait, **args)
        for attempt in (1, 2):
            client: ControlClient | None = getattr(self._local, "client", None)
            fresh = client is None
            if client is None:
                client = ControlClient(self.path, timeout=self.timeout)
                self._local.client = client
            try:
                return client.call(cmd, timeout=wait, **args)
            except ControlError as exc:
                if _is_refusal(exc):
                    raise
                client.close()
                self._local.client = None
                if fresh or attempt == 2:  # a new connection failed: the key is gone
                    raise
        raise AssertionError("unreachable")

    def commands(self, max_age: float = 2.0) -> frozenset[str]:
        """The commands the key offers (cached for ``max_age`` seconds). Raises
        ControlError when the key does not answer (NotRunningError when it is gone)."""
        with self._lock:
            if time.monotonic() - self._commands_at < max_age:
                return self._commands
        try:
            names = self.call("commands").get("commands", [])
            found = frozenset(str(n) for n in names) if isinstance(names, list) else frozenset()
        except ControlError as exc:
            if not _is_refusal(exc):
                raise
            found = frozenset()
        with self._lock:
            self._commands, self._commands_at = found, time.monotonic()
        return found

    def close(self) -> None:
        """Close this thread's kept connection."""
        client: ControlClient | None = getattr(self._local, "client", None)
        if client is not None:
            client.close()
            self._local.client = None


def _is_refusal(exc: ControlError) -> bool:
    """True if the key answered (``ok: false``), as opposed to a broken connection."""
    text = str(exc)
    return not (
        isinstance(exc, NotRunningError)
        or text.startswith("control socket ")
        or text.startswith("the key closed")
        or text.startswith("cannot connect")
        or text.startswith("malformed answer")
        or "did not answer" in text
    )


# --- rendering helpers ----------------------------------------------------------------------


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _attr_id(value: str) -> str:
    """A safe fragment of an HTML id."""
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in value)[:80]


def _when(value: object) -> str:
    """A unix time (seconds) as UTC text; anything else as it is."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        moment = datetime.datetime.fromtimestamp(float(value), datetime.UTC)
        return moment.strftime("%Y-%m-%d %H:%M:%S UTC")
    return "" if value is None else str(value)


def _algorithm(value: object) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return ALGORITHM_NAMES.get(value, f"COSE {value}")
    return "" if value is None else str(value)


def _first(record: Mapping[str, Any], *names: str) -> Any:
    for name in names:
        if name in record and record[name] is not None:
            return record[name]
    return None


def redact(value: Any, depth: int = 0) -> Any:
    """``value`` with every secret-looking field replaced (recursively)."""
    if depth > 32:
        return "\u2026"
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            name = str(key).lower().replace(" ", "")
            secret = name in SECRET_FIELDS
            if (
                secret
                and isinstance(item, str | bytes | int | float)
                and not isinstance(item, bool)
            ):
                # a value (not a structure to look into, not a flag): hidden
                out[str(key)] = item if _already_redacted(item) or item == "" else REDACTED
            else:
                out[str(key)] = redact(item, depth + 1)
        return out
    if isinstance(value, list | tuple):
        return [redact(item, depth + 1) for item in value]
    return value


def _already_redacted(item: Any) -> bool:
    return isinstance(item, str) and "redact" in item.lower()


# --- the sections ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FirstSeen:
    """What a pending request shows that is fixed when the dashboard first sees it."""

    deadline: float | None
    accounts: str | None


class Renderer:
    """Renders each section of the page from the key's answers."""

    def __init__(self, link: KeyLink) -> None:
        self.link = link
        self._lock = threading.Lock()
        #: What each pending request (by id) showed when first seen.
        self._first_seen: dict[int, FirstSeen] = {}

    def render(self, name: str) -> str:
        method: Callable[[], str] = getattr(self, f"render_{name}")
        try:
            return method()
        except NotRunningError:
            return _unavailable("The key is not running. This page will update when it is back.")
        except ControlError as exc:
            return _unavailable(f"The key did not answer: {exc}")

    # -- the key --------------------------------------------------------------------------

    def render_key(self) -> str:
        status = self.link.call("status")
        rows: list[tuple[str, str]] = [("Name", str(status.get("name", self.link.path.stem)))]
        if status.get("transport") == "uhid":
            rows.append(("Transport", f"UHID, {status.get('hidraw') or 'no hidraw node yet'}"))
            rows.append(("Serial", str(status.get("serial", ""))))
        elif status.get("transport") == "unix":
            rows.append(("Transport", f"Unix socket {status.get('unix_socket')}"))
        else:
            udp = status.get("udp") or {}
            rows.append(("Transport", f"UDP {udp.get('host')}:{udp.get('port')}"))
        rows.append(("Keystore", str(status.get("keystore", ""))))
        presence = status.get("presence")
        if presence:
            rows.append(("Presence", f"{presence} (timeout {status.get('presence_timeout')} s)"))
        rows.append(("vfido", f"{status.get('version', '')} (pid {status.get('pid', '')})"))
        if "info" in self.link.commands():
            rows.extend(_info_rows(self.link))
        cells = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in rows)
        return f'<dl class="facts">{cells}</dl>'

    # -- the request in progress ----------------------------------------------------------

    def pending_items(self) -> list[dict[str, Any]]:
        items = self.link.call("pending").get("pending") or []
        return [i for i in items if isinstance(i, dict)]

    def render_pending(self, items: list[dict[str, Any]] | None = None) -> str:
        if "pending" not in self.link.commands():
            return _unavailable("This key does not report pending requests.")
        if items is None:
            items = self.pending_items()
        now = time.time()
        with self._lock:
            known = dict(self._first_seen)
        seen: dict[int, FirstSeen] = {}
        cards: list[str] = []
        for item in items:
            request_id = item.get("id")
            if not isinstance(request_id, int) or isinstance(request_id, bool):
                continue
            first = known.get(request_id) or self._first_look(item, now)
            seen[request_id] = first
            cards.append(_render_request(item, first))
        with self._lock:
            self._first_seen = seen
        if not cards:
            return '<p class="idle" data-pending-count="0">No request is waiting.</p>'
        return f'<div data-pending-count="{len(cards)}">' + "".join(cards) + "</div>"

    def _first_look(self, item: Mapping[str, Any], now: float) -> FirstSeen:
        """What a request shows that does not change while it waits: its deadline and, for
        a sign-in, the accounts this key holds for the site (looked up once)."""
        remaining = item.get("remaining")
        deadline = now + remaining if isinstance(remaining, int | float) else None
        accounts = None
        rp_id = item.get("rp_id")
        wants = item.get("kind") in ("authenticate", "excluded")
        if wants and isinstance(rp_id, str) and rp_id and "credentials" in self.link.commands():
            try:
                creds = self.link.call("credentials", rp_id=rp_id).get("credentials") or []
            except ControlError as exc:
                if not _is_refusal(exc):
                    raise
                creds = []
            names = [
                f"{c.get('user_name') or c.get('user_display_name') or c.get('user_id')} "
                f"({c.get('algorithm_name') or _algorithm(c.get('algorithm'))})"
                for c in creds
                if isinstance(c, dict)
            ]
            accounts = ", ".join(names) or (
                "none stored on this key (the site may use a credential kept in its ID)"
            )
        return FirstSeen(deadline, accounts)

    # -- credentials ----------------------------------------------------------------------

    def credentials(self) -> list[dict[str, Any]]:
        answer = self.link.call("credentials")
        items = answer.get("credentials") or []
        return [i for i in items if isinstance(i, dict)]

    def render_credentials(self) -> str:
        if "credentials" not in self.link.commands():
            return _unavailable(
                "This key does not list its credentials on the control socket "
                "(needs the `credentials` control command)."
            )
        everything = self.credentials()
        credentials = [_normalise_credential(c) for c in everything[:CREDENTIALS_LIMIT]]
        if not credentials:
            return '<p class="idle" data-credential-count="0">No discoverable credentials.</p>'
        by_site: dict[str, list[dict[str, Any]]] = {}
        for cred in credentials:
            by_site.setdefault(cred["rp_id"], []).append(cred)
        can_delete = "credentials-remove" in self.link.commands()
        parts = [f'<div data-credential-count="{len(credentials)}">']
        for number, site in enumerate(sorted(by_site), 1):
            creds = by_site[site]
            heading = f"site-{number}"
            parts.append(
                f'<section class="site" aria-labelledby="{heading}">'
                f'<h3 id="{heading}">{esc(site)} <span class="count">'
                f"({len(creds)} credential{'s' if len(creds) != 1 else ''})</span></h3>"
                '<table class="credentials"><thead><tr>'
                '<th scope="col">User</th><th scope="col">Algorithm</th>'
                '<th scope="col">Created</th><th scope="col">Counter</th>'
                '<th scope="col">credProtect</th><th scope="col">Discoverable</th>'
                '<th scope="col">Actions</th></tr></thead><tbody>'
            )
            parts.extend(_render_credential(c, can_delete) for c in creds)
            parts.append("</tbody></table></section>")
        if len(everything) > len(credentials):
            parts.append(
                f'<p class="more">Showing {len(credentials)} of {len(everything)} credentials '
                "(`vfido ctl` lists them all).</p>"
            )
        parts.append("</div>")
        return "".join(parts)

    # -- switches -------------------------------------------------------------------------

    def render_switches(self) -> str:
        commands = self.link.commands()
        parts: list[str] = []
        if "presence-mode" in commands:
            answer = self.link.call("presence-mode")
            parts.append(_render_presence_switch(answer))
        else:
            parts.append(_unavailable("Presence mode: not switchable on this key."))
        if "behaviours" in commands:
            answer = self.link.call("behaviours")
            parts.append(_render_behaviours(answer))
        else:
            parts.append(_unavailable("Scripted misbehaviours: not offered by this key."))
        if "finger" in commands:
            parts.append(_render_finger_switch(self.link.call("finger")))
        if "power-cycle" in commands:
            parts.append(
                '<form method="post" action="power-cycle" class="inline">'
                '<button type="submit">Power-cycle the key</button></form>'
            )
        return "".join(parts)

    # -- transaction log ------------------------------------------------------------------

    def log_records(self) -> list[dict[str, Any]]:
        answer = self.link.call("log", limit=LOG_LIMIT)
        records = answer.get("records") or []
        return [r for r in records if isinstance(r, dict)]

    def render_log(self) -> str:
        if "log" not in self.link.commands():
            return _unavailable(
                "This key keeps no transaction log: start it with `vfido run --trace FILE` "
                "to see each CTAP request and response here."
            )
        rows = _render_log(self.log_records())
        if not rows:
            return '<p class="idle" data-log-count="0">No transaction yet.</p>'
        return (
            '<table class="log"><thead><tr>'
            '<th scope="col">Time (UTC)</th><th scope="col">Command</th>'
            '<th scope="col">Status</th><th scope="col">Decoded (secrets redacted)</th></tr>'
            f"</thead><tbody>{rows}</tbody></table>"
        )

    # -- relying-party lint (#19) ----------------------------------------------------------

    def render_lint(self) -> str:
        if "lint" not in self.link.commands():
            return _unavailable(
                "This key does not lint: start it with `vfido run --lint` to see here what "
                "the relying party sends that WebAuthn and CTAP warn against."
            )
        findings = self.link.call("lint").get("findings") or []
        items = "".join(
            f"<li><strong>{esc(f.get('rule'))}</strong>: {esc(f.get('message'))} "
            f'<span class="idle">{esc(f.get("reference"))}</span></li>'
            for f in findings
            if isinstance(f, dict)
        )
        if not items:
            return '<p class="idle">No findings: nothing the relying party sent was flagged.</p>'
        return f'<ul class="lint">{items}</ul>'


def _info_rows(link: KeyLink) -> list[tuple[str, str]]:
    """What the key advertises (getInfo, as scripted misbehaviour changes it)."""
    try:
        info = link.call("info").get("info") or {}
    except ControlError as exc:
        if not _is_refusal(exc):
            raise
        return [("getInfo", f"refused: {exc}")]
    rows: list[tuple[str, str]] = []
    versions = info.get("versions")
    if isinstance(versions, list):
        rows.append(("Versions", ", ".join(str(v) for v in versions)))
    algorithms = info.get("algorithms")
    if isinstance(algorithms, list):
        names = [_algorithm(a.get("alg")) if isinstance(a, dict) else str(a) for a in algorithms]
        rows.append(("Algorithms", ", ".join(names)))
    options = info.get("options")
    if isinstance(options, dict):
        rows.append(("Options", ", ".join(f"{k}={str(v).lower()}" for k, v in options.items())))
    if info.get("aaguid"):
        rows.append(("AAGUID", str(info["aaguid"])))
    return rows


def _unavailable(text: str) -> str:
    return f'<p class="unavailable">{esc(text)}</p>'


def _render_request(item: Mapping[str, Any], first: FirstSeen | None = None) -> str:
    """One pending request. The HTML depends only on the request (deadline and accounts
    are fixed when it is first seen), so the live page re-renders it only on a change."""
    deadline = first.deadline if first else None
    request_id = item.get("id")
    if not isinstance(request_id, int) or isinstance(request_id, bool):
        return ""
    kind = str(item.get("kind", ""))
    action = str(item.get("action") or kind)
    site = item.get("rp_id") or "(site not known: a U2F request)"
    user = item.get("user_name")
    if not user:
        user = "any account this key holds for the site" if kind == "authenticate" else "-"
    facts = [("Site", site), ("Action", action), ("User", user)]
    if first is not None and first.accounts is not None:
        facts.append(("Accounts here", first.accounts))
    dl = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in facts)
    heading = f"request-{request_id}"
    remaining_html = ""
    if deadline is not None:
        moment = datetime.datetime.fromtimestamp(deadline, datetime.UTC)
        remaining_html = (
            f'<p class="remaining">Answer by <time datetime="{moment.isoformat()}">'
            f"{moment:%H:%M:%S}</time> UTC"
            f'<span class="countdown" data-deadline="{int(deadline * 1000)}" '
            'aria-hidden="true"></span></p>'
        )
    question = item.get("question") or f"{action} {site}?"
    return (
        f'<article class="request" data-pending-id="{request_id}" data-kind="{esc(kind)}" '
        f'aria-labelledby="{heading}">'
        f'<h3 id="{heading}">{esc(question)}</h3><dl class="facts">{dl}</dl>{remaining_html}'
        f'<form method="post" action="approve" class="answer">'
        f'<input type="hidden" name="id" value="{request_id}">'
        f'<button type="submit" class="allow" data-key="allow-{request_id}">Allow</button> '
        f'<button type="submit" class="deny" formaction="deny" data-key="deny-{request_id}">'
        "Deny</button>"
        "</form></article>"
    )


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _normalise_credential(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The fields the table shows, from a control API CRED (see :mod:`vfido.control_api`)."""
    return {
        "id": str(raw.get("id") or ""),
        "rp_id": str(raw.get("rp_id") or "(unknown site)"),
        "user": _first(raw, "user_name", "user_display_name", "user_id") or "-",
        "user_display_name": raw.get("user_display_name"),
        "algorithm": raw.get("algorithm_name") or _algorithm(raw.get("algorithm")),
        "created": _when(raw.get("created")),
        "counter": raw.get("sign_count"),
        "cred_protect": raw.get("cred_protect"),
        "discoverable": bool(raw.get("discoverable", True)),
    }


def _render_credential(cred: Mapping[str, Any], can_delete: bool) -> str:
    cred_id = cred["id"]
    user = str(cred["user"])
    display = cred.get("user_display_name")
    user_html = esc(user) + (
        f' <span class="display-name">({esc(display)})</span>'
        if display and display != user
        else ""
    )
    protect = cred.get("cred_protect")
    protect_text = CRED_PROTECT_NAMES.get(protect, str(protect)) if protect is not None else "-"
    counter = cred.get("counter")
    label = f"{user} at {cred['rp_id']}"
    actions: list[str] = []
    if cred_id:
        quoted = urllib.parse.quote(cred_id, safe="")
        actions.append(
            f'<a href="credentials/{quoted}/public-key.pem" download data-key="pem-{esc(cred_id)}" '
            f'aria-label="Export the public key of {esc(label)} (PEM)">Public key (PEM)</a>'
        )
    if cred_id and can_delete:
        actions.append(
            '<form method="post" action="credentials/delete" class="inline" '
            f'data-confirm="Delete the credential of {esc(label)}?">'
            f'<input type="hidden" name="id" value="{esc(cred_id)}">'
            f'<button type="submit" class="danger" data-key="delete-{esc(cred_id)}" '
            f'aria-label="Delete the credential of '
            f'{esc(label)}">Delete</button></form>'
        )
    return (
        f'<tr data-credential-id="{esc(cred_id)}"><th scope="row">{user_html}</th>'
        f"<td>{esc(cred['algorithm'])}</td><td>{esc(cred['created'])}</td>"
        f"<td>{esc('-' if counter is None else counter)}</td><td>{esc(protect_text)}</td>"
        f"<td>{'yes' if cred['discoverable'] else 'no'}</td>"
        f'<td class="actions">{" ".join(actions) or "-"}</td></tr>'
    )


def _render_presence_switch(answer: Mapping[str, Any]) -> str:
    mode = str(answer.get("mode", ""))
    modes = answer.get("modes")
    choices = [str(m) for m in modes] if isinstance(modes, list) else list(DEFAULT_PRESENCE_MODES)
    if mode and mode not in choices:
        choices.insert(0, mode)
    options = "".join(
        f'<option value="{esc(m)}"{" selected" if m == mode else ""}>{esc(m)}</option>'
        for m in choices
    )
    return (
        '<form method="post" action="presence-mode" class="switch" data-autosubmit>'
        '<label for="presence-mode">Presence mode</label> '
        f'<select id="presence-mode" name="mode">{options}</select> '
        '<button type="submit" class="apply">Apply</button></form>'
    )


def _render_finger_switch(answer: Mapping[str, Any]) -> str:
    """Which finger touches the simulated fingerprint sensor (a ``--fingerprint`` key)."""
    placed = answer.get("finger")
    current = placed if isinstance(placed, str) else "auto"
    enrolled = answer.get("enrolled")
    choices = [("auto", "auto (the first enrolled finger)"), ("unknown", "an unknown finger")]
    for template in enrolled if isinstance(enrolled, list) else []:
        if isinstance(template, dict) and isinstance(template.get("finger"), str):
            name = template.get("name") or ""
            label = template["finger"] + (f" ({name})" if name else "")
            choices.append((template["finger"], label))
    if current not in [value for value, _ in choices]:
        choices.append((current, current))
    options = "".join(
        f'<option value="{esc(v)}"{" selected" if v == current else ""}>{esc(text)}</option>'
        for v, text in choices
    )
    return (
        '<form method="post" action="finger" class="switch">'
        '<label for="finger">Finger on the sensor</label> '
        f'<select id="finger" name="finger">{options}</select> '
        '<label for="finger-other">or a new finger</label> '
        '<input id="finger-other" name="other" maxlength="64"> '
        '<button type="submit" class="apply">Place</button></form>'
    )


def _render_behaviours(answer: Mapping[str, Any]) -> str:
    raw = answer.get("behaviours")
    items = [b for b in raw if isinstance(b, dict)] if isinstance(raw, list) else []
    if not items:
        return _unavailable("Scripted misbehaviours: none offered.")
    rows = "".join(_render_behaviour(item) for item in items if item.get("name"))
    active = answer.get("active")
    summary = ""
    if isinstance(active, dict):
        names = ", ".join(sorted(str(k) for k in active)) or "none"
        summary = f'<p class="active-behaviours">Active: <span>{esc(names)}</span></p>'
    return (
        '<fieldset class="behaviours"><legend>Scripted misbehaviours</legend>'
        f'{summary}<ul class="switches">{rows}</ul></fieldset>'
    )


def _render_behaviour(item: Mapping[str, Any]) -> str:
    """One behaviour: an on/off checkbox and, when it takes one, its value; a change
    applies at once (with JavaScript), else with the Apply button."""
    name = str(item["name"])
    kind = str(item.get("type") or "bool")
    enabled = bool(item.get("enabled"))
    value = item.get("value")
    field_id = f"behaviour-{_attr_id(name)}"
    help_id = f"{field_id}-help"
    description = str(item.get("description") or "")
    if item.get("needs_builtin_uv"):
        description += " (needs a key with built-in UV: vfido run --uv)"
    checked = " checked" if enabled else ""
    parts = [
        f'<input type="hidden" name="name" value="{esc(name)}">',
        f'<input type="hidden" name="kind" value="{esc(kind)}">',
        '<input type="hidden" name="enabled" value="off">',
        f'<input type="checkbox" id="{field_id}" name="enabled" value="on"{checked} '
        f'aria-describedby="{help_id}" data-key="{field_id}"> ',
        f'<label for="{field_id}" class="behaviour-name">{esc(name)}</label>',
    ]
    value_help = str(item.get("value_help") or "")
    if kind != "bool":
        value_id = f"{field_id}-value"
        shown = "" if value is None or value is True else value
        if isinstance(shown, list):
            shown = ",".join(str(v) for v in shown)
        label = f'<label for="{value_id}" class="visually-hidden">{esc(name)} value</label>'
        if kind == "choice":
            choices = [str(c) for c in item.get("choices") or []]
            options = "".join(
                f'<option value="{esc(c)}"{" selected" if str(shown) == c else ""}>{esc(c)}'
                "</option>"
                for c in choices
            )
            control = (
                f'<select id="{value_id}" name="value" data-key="{value_id}">{options}</select>'
            )
        else:
            input_type = "number" if kind in ("int", "number") else "text"
            step = ' step="1" min="0"' if kind == "int" else ' step="any" min="0"'
            control = (
                f'<input type="{input_type}"{step if input_type == "number" else ""} '
                f'id="{value_id}" name="value" value="{esc(shown)}" '
                f'placeholder="{esc(value_help)}" data-key="{value_id}" size="14">'
            )
        parts.append(f" {label}{control}")
    parts.append(
        f' <button type="submit" class="apply" data-key="{field_id}-apply">Apply</button>'
        f' <span class="help" id="{help_id}">{esc(description)}</span>'
    )
    state = "on" if enabled else "off"
    return (
        f'<li data-behaviour="{esc(name)}" data-state="{state}">'
        f'<form method="post" action="behaviours" class="switch" data-autosubmit>'
        f"{''.join(parts)}</form></li>"
    )


def _render_log(records: list[dict[str, Any]]) -> str:
    """Transactions newest first: each response with its request; a request without its
    response yet (waiting for the user) is shown in progress."""
    answered = {r.get("tx") for r in records if r.get("type") == "response"}
    rows: list[str] = []
    for record in reversed(records):
        kind = record.get("type")
        if kind == "response":
            rows.append(_render_transaction(record))
        elif kind == "request" and record.get("tx") not in answered:
            rows.append(_render_transaction(record, in_progress=True))
        elif kind == "event":
            fields = redact(
                {k: v for k, v in record.items() if k not in ("seq", "t", "type", "event")}
            )
            extra = (
                " " + json.dumps(fields, sort_keys=True, default=str, ensure_ascii=False)
                if fields
                else ""
            )
            rows.append(
                f'<tr class="event"><td>{esc(_clock(record.get("t")))}</td>'
                f'<td colspan="3">event: {esc(record.get("event", ""))}{esc(extra)}</td></tr>'
            )
        elif kind == "packet" and record.get("cmd"):
            what = f"CTAPHID {record.get('cmd')} {record.get('dir', '')}"
            extra = record.get("error") or record.get("new_cid") or ""
            rows.append(
                f'<tr class="packet"><td>{esc(_clock(record.get("t")))}</td>'
                f'<td colspan="3">{esc(what)} {esc(extra)}</td></tr>'
            )
        elif kind == "start":
            rows.append(
                f'<tr class="event"><td>{esc(_clock(record.get("t")))}</td>'
                f'<td colspan="3">key started (vfido {esc(record.get("version", ""))})</td>'
                "</tr>"
            )
    return "".join(rows)


def _clock(value: object) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        moment = datetime.datetime.fromtimestamp(float(value), datetime.UTC)
        return moment.strftime("%H:%M:%S.") + f"{moment.microsecond // 1000:03d}"
    return ""


def _request_summary(record: Mapping[str, Any]) -> str:
    """One line for a request still waiting for its answer: command, site, user."""
    params = record.get("params")
    parts = [f"{record.get('proto', '')} {record.get('command', '')}".strip()]
    if isinstance(params, Mapping):
        rp, user = params.get("rp"), params.get("user")
        site = rp.get("id") if isinstance(rp, Mapping) else params.get("rpId")
        if site:
            parts.append(f"rp={site}")
        if isinstance(user, Mapping) and (user.get("name") or user.get("displayName")):
            parts.append(f"user={user.get('name') or user.get('displayName')}")
    return " ".join(parts)


def _render_transaction(record: Mapping[str, Any], in_progress: bool = False) -> str:
    clean = redact(record)
    command = f"{clean.get('proto', '')} {clean.get('command', '?')}".strip()
    status = "in progress" if in_progress else str(clean.get("status", ""))
    ok = status in ("OK", "SW_NO_ERROR", "9000")
    duration = clean.get("duration")
    if isinstance(duration, int | float) and not in_progress:
        status_text = f"{status} ({duration * 1000:.0f} ms)"
    else:
        status_text = status
    summary = clean.get("summary") or _request_summary(clean)
    details: list[str] = []
    for title, body in (("Request", clean.get("params")), ("Response", clean.get("result"))):
        if body not in (None, {}):
            text = json.dumps(body, indent=2, sort_keys=True, default=str, ensure_ascii=False)
            details.append(f'<p class="detail-title">{esc(title)}</p><pre>{esc(text)}</pre>')
    tx = clean.get("tx", "")
    key = f"tx-{_attr_id(str(tx))}"
    body_html = (
        f'<details data-key="{key}"><summary>{esc(summary) or "Decoded"}</summary>'
        f"{''.join(details)}</details>"
        if details
        else esc(summary) or "-"
    )
    css = "ok" if ok else ("progress" if in_progress else "error")
    return (
        f'<tr class="tx {css}" data-tx="{esc(tx)}"><td>{esc(_clock(clean.get("t")))}</td>'
        f"<td>{esc(command)}</td><td>{esc(status_text)}</td><td>{body_html}</td></tr>"
    )


# --- public keys ------------------------------------------------------------------------------


def cose_to_pem(cose_key: Mapping[int, Any]) -> bytes:
    """A COSE public key as a PEM SubjectPublicKeyInfo. Raises ValueError."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    kty = cose_key.get(1)
    public: Any
    if kty == 2:  # EC2
        curves: dict[int, ec.EllipticCurve] = {
            1: ec.SECP256R1(),
            2: ec.SECP384R1(),
            3: ec.SECP521R1(),
        }
        curve = curves.get(cose_key.get(-1))  # type: ignore[arg-type]
        if curve is None:
            raise ValueError("unknown elliptic curve")
        x, y = cose_key.get(-2), cose_key.get(-3)
        if not isinstance(x, bytes) or not isinstance(y, bytes):
            raise ValueError("malformed EC2 key")
        public = ec.EllipticCurvePublicKey.from_encoded_point(curve, b"\x04" + x + y)
    elif kty == 1 and cose_key.get(-1) == 6:  # OKP Ed25519
        x = cose_key.get(-2)
        if not isinstance(x, bytes):
            raise ValueError("malformed OKP key")
        public = ed25519.Ed25519PublicKey.from_public_bytes(x)
    elif kty == 3:  # RSA
        n, e = cose_key.get(-1), cose_key.get(-2)
        if not isinstance(n, bytes) or not isinstance(e, bytes):
            raise ValueError("malformed RSA key")
        public = rsa.RSAPublicNumbers(
            int.from_bytes(e, "big"), int.from_bytes(n, "big")
        ).public_key()
    elif kty == 7:  # AKP (ML-DSA)
        raw = cose_key.get(-1)
        if not isinstance(raw, bytes):
            raise ValueError("malformed AKP key")
        try:
            mldsa = importlib.import_module("cryptography.hazmat.primitives.asymmetric.mldsa")
        except ImportError:
            raise ValueError("ML-DSA keys need a newer cryptography") from None
        classes = {-48: "MLDSA44PublicKey", -49: "MLDSA65PublicKey"}
        name = classes.get(cose_key.get(3))  # type: ignore[arg-type]
        if name is None:
            raise ValueError("unknown ML-DSA algorithm")
        public = getattr(mldsa, name).from_public_bytes(raw)
    else:
        raise ValueError(f"unsupported COSE key type {kty!r}")
    pem: bytes = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem


def public_key_pem(value: Any) -> bytes:
    """The PEM of a public key as the control socket gives it: PEM text, or a COSE key
    (CBOR) in base64url / hex / a JSON map with integer-like keys. Raises ValueError."""
    import cbor2

    if isinstance(value, str) and value.lstrip().startswith("-----BEGIN"):
        return value.encode()
    if isinstance(value, dict):
        return cose_to_pem({int(k): _decode_bytes_field(v) for k, v in value.items()})
    if isinstance(value, str):
        raw = _decode_text_bytes(value)
        decoded = cbor2.loads(raw)
        if not isinstance(decoded, dict):
            raise ValueError("the public key is not a COSE map")
        return cose_to_pem(decoded)
    raise ValueError("no public key")


def _decode_text_bytes(text: str) -> bytes:
    with contextlib.suppress(ValueError):
        if len(text) % 2 == 0:
            return bytes.fromhex(text)
    padded = text + "=" * (-len(text) % 4)
    return base64.urlsafe_b64decode(padded.replace("+", "-").replace("/", "_"))


def _decode_bytes_field(value: Any) -> Any:
    if isinstance(value, str):
        return _decode_text_bytes(value)
    return value


# --- live updates ---------------------------------------------------------------------------


class Hub:
    """Keeps the latest HTML of each section and wakes the event streams when one changes.

    Two threads poll the key while someone watches: one for the pending request (it waits
    on the control socket for a request to appear, so Allow / Deny show at once), one for
    everything else.
    """

    def __init__(self, renderer: Renderer) -> None:
        self.renderer = renderer
        self._cond = threading.Condition()
        self._sections: dict[str, tuple[int, str]] = {}
        self._version = 0
        self._watchers = 0
        self._kicked = threading.Event()
        self.stopping = threading.Event()
        self._threads = [
            threading.Thread(target=self._pending_loop, name="ui-pending", daemon=True),
            threading.Thread(target=self._refresh_loop, name="ui-refresh", daemon=True),
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self._kicked.set()
        with self._cond:
            self._cond.notify_all()
        for thread in self._threads:
            if thread.is_alive():
                thread.join(timeout=5)

    def kick(self) -> None:
        """Refresh everything now (after an action)."""
        self._kicked.set()

    def publish(self, name: str, html_text: str) -> None:
        with self._cond:
            current = self._sections.get(name)
            if current is not None and current[1] == html_text:
                return
            self._version += 1
            self._sections[name] = (self._version, html_text)
            self._cond.notify_all()

    def snapshot(self) -> dict[str, str]:
        with self._cond:
            return {name: text for name, (_v, text) in self._sections.items()}

    def watch(self, seen: int, timeout: float) -> tuple[int, dict[str, str]]:
        """Sections changed after version ``seen`` (waiting up to ``timeout``)."""
        with self._cond:
            self._cond.wait_for(lambda: self._version > seen or self.stopping.is_set(), timeout)
            changed = {n: t for n, (v, t) in self._sections.items() if v > seen}
            return self._version, changed

    @contextlib.contextmanager
    def watcher(self) -> Iterator[None]:
        with self._cond:
            self._watchers += 1
            self._cond.notify_all()
        self.kick()
        try:
            yield
        finally:
            with self._cond:
                self._watchers -= 1
                if not self._watchers:  # nobody polls now: what is kept goes stale
                    self._sections.clear()

    def _wait_for_watchers(self) -> bool:
        with self._cond:
            self._cond.wait_for(lambda: self._watchers > 0 or self.stopping.is_set(), 1.0)
            return self._watchers > 0 and not self.stopping.is_set()

    def _pending_loop(self) -> None:
        self.renderer.link.keep_connection()
        try:
            self._watch_pending()
        finally:
            self.renderer.link.close()

    def _watch_pending(self) -> None:
        shown = False
        last_ids: list[Any] = []
        while not self.stopping.is_set():
            if not self._wait_for_watchers():
                continue
            try:
                if "pending" not in self.renderer.link.commands():
                    items: list[dict[str, Any]] = []
                else:
                    wait = 0 if shown else PENDING_WAIT
                    answer = self.renderer.link.call("pending", timeout=wait + 10, wait=wait)
                    raw = answer.get("pending") or []
                    items = [i for i in raw if isinstance(i, dict)]
                ids = [i.get("id") for i in items]
                if ids != last_ids:  # a request came or went: the log (and credentials) moved
                    self.kick()
                last_ids = ids
                shown = bool(items)
                self.publish("pending", self.renderer.render_pending(items))
            except ControlError:
                self.publish("pending", self.renderer.render("pending"))
                self.stopping.wait(1.0)
                continue
            if shown:
                self.stopping.wait(PENDING_POLL)

    def _refresh_loop(self) -> None:
        """Every REFRESH seconds: the key, switches and log; the credentials (heavier for
        the key: it reads its whole store) when kicked or every CREDENTIALS_REFRESH."""
        self.renderer.link.keep_connection()
        last_credentials = 0.0
        try:
            while not self.stopping.is_set():
                if not self._wait_for_watchers():
                    last_credentials = 0.0  # a new watcher sees fresh credentials
                    continue
                kicked = self._kicked.is_set()
                self._kicked.clear()
                for name in SECTIONS:
                    if name == "pending":
                        continue
                    if name == "credentials":
                        due = time.monotonic() - last_credentials >= CREDENTIALS_REFRESH
                        if not (kicked or due):
                            continue
                        last_credentials = time.monotonic()
                    self.publish(name, self.renderer.render(name))
                self._kicked.wait(REFRESH)
        finally:
            self.renderer.link.close()


# --- HTTP -----------------------------------------------------------------------------------


def _asset(name: str) -> bytes:
    return (resources.files("vfido") / "ui_assets" / name).read_bytes()


class DashboardServer(ThreadingHTTPServer):
    """The dashboard's HTTP server, on 127.0.0.1 only."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, link: KeyLink, port: int = 0, token: str | None = None) -> None:
        self.token = token or secrets.token_urlsafe(TOKEN_BYTES)
        self.link = link
        self.renderer = Renderer(link)
        self.hub = Hub(self.renderer)
        super().__init__((HOST, port), DashboardHandler)
        self.port: int = self.server_address[1]
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/{self.token}/"

    def start(self) -> None:
        """Serve on a background thread."""
        self.hub.start()
        self._thread = threading.Thread(target=self.serve_forever, name="ui-http", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.hub.stop()
        if self._thread is not None:
            self.shutdown()
            self._thread.join(timeout=5)
        self.server_close()
        self.link.close()

    def __enter__(self) -> DashboardServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class DashboardHandler(BaseHTTPRequestHandler):
    server: DashboardServer
    server_version = "vfido-ui"
    sys_version = ""
    protocol_version = "HTTP/1.1"

    # never log paths: they carry the token
    def log_message(self, format: str, *args: Any) -> None:
        return

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        log.debug("ui: %s %s", self.command, code)

    # -- dispatch --------------------------------------------------------------------------

    def do_GET(self) -> None:
        route = self._route()
        if route is None:
            return
        if route == "":
            self._page()
        elif route == "events":
            self._events()
        elif route.startswith("assets/") and route[len("assets/") :] in ASSETS:
            name = route[len("assets/") :]
            self._send(HTTPStatus.OK, _asset(name), ASSETS[name])
        elif route.startswith("section/") and route[len("section/") :] in SECTIONS:
            name = route[len("section/") :]
            self._send_html(self.server.renderer.render(name))
        elif route.startswith("credentials/") and route.endswith("/public-key.pem"):
            self._public_key(route[len("credentials/") : -len("/public-key.pem")])
        elif route in POST_ROUTES:
            self._send_text(HTTPStatus.METHOD_NOT_ALLOWED, "use POST", {"Allow": "POST"})
        else:
            self._send_text(HTTPStatus.NOT_FOUND, "not found")

    def do_POST(self) -> None:
        # A refused POST leaves its body unread: never reuse the connection after one.
        self.close_connection = True
        route = self._route()
        if route is None:
            return
        action = POST_ROUTES.get(route)
        if action is None:
            self._send_text(HTTPStatus.NOT_FOUND, "not found")
            return
        if not self._same_origin():
            self._send_text(HTTPStatus.FORBIDDEN, "cross-origin request refused")
            return
        form = self._form()
        if form is None:
            return
        try:
            message = action(self.server, form)
            ok = True
        except (UiError, ControlError) as exc:
            message, ok = str(exc), False
        self.server.hub.kick()
        if "application/json" in self.headers.get("Accept", ""):
            body = json.dumps({"ok": ok, "message": message}).encode()
            status = HTTPStatus.OK if ok else HTTPStatus.CONFLICT
            self._send(status, body, "application/json")
        elif ok:
            self._send(
                HTTPStatus.SEE_OTHER, b"", "text/plain", {"Location": f"/{self.server.token}/"}
            )
        else:
            page = (
                f"<!doctype html><html lang=en><meta charset=utf-8><title>vfido: error</title>"
                f'<p role=alert>{esc(message)}</p><p><a href="./">Back to the dashboard</a></p>'
            )
            self._send(HTTPStatus.CONFLICT, page.encode(), "text/html; charset=utf-8")

    def do_PUT(self) -> None:
        self._send_text(HTTPStatus.METHOD_NOT_ALLOWED, "not allowed", {"Allow": "GET, POST"})

    do_DELETE = do_PATCH = do_PUT

    # -- checks ----------------------------------------------------------------------------

    def _route(self) -> str | None:
        """The path after ``/TOKEN/``, or None once a refusal is sent."""
        if not self._host_ok():
            self._send_text(HTTPStatus.MISDIRECTED_REQUEST, "wrong host")
            return None
        path = urllib.parse.urlsplit(self.path).path
        _, _, rest = path.partition("/")
        token, slash, route = rest.partition("/")
        if not hmac.compare_digest(token.encode(), self.server.token.encode()):
            self._send_text(HTTPStatus.FORBIDDEN, "forbidden: the URL needs the dashboard's token")
            return None
        if not slash:  # /TOKEN -> /TOKEN/ so relative links resolve
            self._send(HTTPStatus.MOVED_PERMANENTLY, b"", "text/plain", {"Location": path + "/"})
            return None
        return urllib.parse.unquote(route)

    def _host_ok(self) -> bool:
        host = self.headers.get("Host", "")
        allowed = {f"{HOST}:{self.server.port}", f"localhost:{self.server.port}"}
        return host in allowed

    def _same_origin(self) -> bool:
        """Refuse what the browser says comes from another site (defence in depth: the
        token in the URL is the real CSRF protection)."""
        origin = self.headers.get("Origin")
        if origin is not None and origin not in (
            f"http://{HOST}:{self.server.port}",
            f"http://localhost:{self.server.port}",
        ):
            return False
        return self.headers.get("Sec-Fetch-Site", "same-origin") in ("same-origin", "none")

    def _form(self) -> dict[str, str] | None:
        ctype = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY:
            self._send_text(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "body too large")
            return None
        body = self.rfile.read(length) if length else b""
        if body and ctype != "application/x-www-form-urlencoded":
            self._send_text(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send a form")
            return None
        try:
            pairs = urllib.parse.parse_qsl(body.decode("utf-8"), keep_blank_values=True)
        except UnicodeDecodeError:
            self._send_text(HTTPStatus.BAD_REQUEST, "not UTF-8")
            return None
        form: dict[str, str] = {}
        for key, value in pairs:
            form[key] = value  # the last value wins (checkbox after its hidden default)
        return form

    # -- responses -------------------------------------------------------------------------

    def _send(
        self,
        status: HTTPStatus,
        body: bytes,
        content_type: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in {**SECURITY_HEADERS, **(headers or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_text(
        self, status: HTTPStatus, text: str, headers: Mapping[str, str] | None = None
    ) -> None:
        self._send(status, (text + "\n").encode(), "text/plain; charset=utf-8", headers)

    def _send_html(self, text: str) -> None:
        self._send(HTTPStatus.OK, text.encode(), "text/html; charset=utf-8")

    def _page(self) -> None:
        renderer = self.server.renderer
        sections = {name: renderer.render(name) for name in SECTIONS}
        sections["title"] = esc(renderer.link.path.stem)
        template = _asset("index.html").decode()
        # one pass: text from the key (a site name...) is never expanded again
        page = re.sub(r"\{\{(\w+)\}\}", lambda m: sections.get(m.group(1), ""), template)
        self._send_html(page)

    def _events(self) -> None:
        hub = self.server.hub
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        for name, value in SECURITY_HEADERS.items():
            self.send_header(name, value)
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        seen = 0
        with hub.watcher():
            try:
                self.wfile.write(b"retry: 1000\n\n")
                self.wfile.flush()
                while not hub.stopping.is_set():
                    version, changed = hub.watch(seen, KEEPALIVE)
                    seen = version
                    if not changed:
                        self.wfile.write(b": keepalive\n\n")
                    for name, text in changed.items():
                        data = json.dumps({"section": name, "html": text})
                        self.wfile.write(f"event: section\ndata: {data}\n\n".encode())
                    self.wfile.flush()
            except OSError:
                return

    def _public_key(self, cred_id: str) -> None:
        if "credentials" not in self.server.link.commands():
            self._send_text(HTTPStatus.NOT_FOUND, "this key does not list credentials")
            return
        try:
            answer = self.server.link.call("credentials", public_key=True)
            creds = [c for c in answer.get("credentials") or [] if isinstance(c, dict)]
        except ControlError as exc:
            self._send_text(HTTPStatus.SERVICE_UNAVAILABLE, str(exc))
            return
        for cred in creds:
            if cred.get("id") == cred_id:
                value = _first(cred, "public_key_pem", "public_key_cose")
                try:
                    pem = public_key_pem(value)
                except Exception as exc:  # any malformed key: one line, no traceback
                    self._send_text(HTTPStatus.CONFLICT, f"cannot export this key: {exc}")
                    return
                name = _attr_id(str(cred.get("rp_id") or "credential"))
                filename = f"{name}-{_attr_id(cred_id)[:16]}.pem"
                self._send(
                    HTTPStatus.OK,
                    pem,
                    "application/x-pem-file",
                    {"Content-Disposition": f'attachment; filename="{filename}"'},
                )
                return
        self._send_text(HTTPStatus.NOT_FOUND, "no such credential")


# --- actions (POST) -------------------------------------------------------------------------


def _int_field(form: Mapping[str, str], name: str) -> int:
    try:
        return int(form.get(name, ""))
    except ValueError:
        raise UiError(f"{name} must be a number") from None


def _answer(granted: bool) -> Callable[[DashboardServer, Mapping[str, str]], str]:
    def action(server: DashboardServer, form: Mapping[str, str]) -> str:
        request_id = _int_field(form, "id")
        answer = server.link.call("approve" if granted else "deny", id=request_id)
        item = answer.get("request") or {}
        verb = "Allowed" if granted else "Denied"
        return f"{verb}: {item.get('question', f'request {request_id}')}"

    return action


def _require(server: DashboardServer, *names: str) -> str:
    commands = server.link.commands(max_age=0)
    for name in names:
        if name in commands:
            return name
    raise UiError("this key does not offer that on its control socket")


def _delete_credential(server: DashboardServer, form: Mapping[str, str]) -> str:
    cred_id = form.get("id", "")
    if not cred_id:
        raise UiError("no credential given")
    answer = server.link.call(_require(server, "credentials-remove"), id=cred_id)
    return f"Credential {str(answer.get('removed', cred_id))[:16]}\u2026 deleted"


def _presence_mode(server: DashboardServer, form: Mapping[str, str]) -> str:
    mode = form.get("mode", "")
    server.link.call(_require(server, "presence-mode"), mode=mode)
    return f"Presence mode: {mode}"


def _behaviour(server: DashboardServer, form: Mapping[str, str]) -> str:
    """Turn one behaviour on (with its value, if it takes one) or off."""
    name = form.get("name", "")
    if not name:
        raise UiError("no behaviour given")
    command = _require(server, "behaviours")
    if form.get("enabled") != "on":
        server.link.call(command, name=name, value=False)
        return f"{name}: off"
    raw = form.get("value", "").strip()
    kind = form.get("kind", "bool")
    value: object = None
    if raw and kind in ("int", "number"):
        try:
            value = int(raw) if kind == "int" else float(raw)
        except ValueError:
            raise UiError(f"{name}: the value must be a number") from None
    elif raw and kind != "bool":
        value = raw  # a choice or a text value: the key checks it
    server.link.call(command, name=name, value=value)
    return f"{name}: on" + (f" ({raw})" if raw else "")


def _finger(server: DashboardServer, form: Mapping[str, str]) -> str:
    finger = form.get("other", "").strip() or form.get("finger", "auto")
    server.link.call(_require(server, "finger"), finger=None if finger == "auto" else finger)
    return f"Finger on the sensor: {finger}"


def _power_cycle(server: DashboardServer, form: Mapping[str, str]) -> str:
    server.link.call(_require(server, "power-cycle"))
    return "The key was power-cycled"


POST_ROUTES: dict[str, Callable[[DashboardServer, Mapping[str, str]], str]] = {
    "approve": _answer(True),
    "deny": _answer(False),
    "credentials/delete": _delete_credential,
    "presence-mode": _presence_mode,
    "behaviours": _behaviour,
    "finger": _finger,
    "power-cycle": _power_cycle,
}


# --- the command ----------------------------------------------------------------------------


def serve(
    path: Path,
    port: int = 0,
    *,
    open_browser: bool = True,
    ready: Callable[[str], None] = print,
    stop: threading.Event | None = None,
) -> None:
    """Serve the dashboard for the key at control socket ``path`` until interrupted
    (SIGINT, SIGTERM) or ``stop`` is set."""
    link = KeyLink(path)
    link.call("status")  # fail now, in one line, if the key is not there
    try:
        server = DashboardServer(link, port)
    except OSError as exc:
        raise UiError(f"cannot listen on {HOST}:{port}: {exc.strerror}") from None
    stop = stop or threading.Event()
    restore = _stop_on_signals(stop)
    launcher: Path | None = None
    try:
        with server:
            server.start()
            ready(server.url)
            if open_browser and _has_display():
                launcher = _launcher_file(server)
                with contextlib.suppress(webbrowser.Error):
                    webbrowser.open(launcher.as_uri())
            with contextlib.suppress(KeyboardInterrupt):
                stop.wait()
    finally:
        restore()
        if launcher is not None:
            with contextlib.suppress(OSError):
                launcher.unlink()


def _stop_on_signals(stop: threading.Event) -> Callable[[], None]:
    """SIGINT / SIGTERM set ``stop`` (main thread only); returns what undoes it."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum: int, frame: object) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore


def _launcher_file(server: DashboardServer) -> Path:
    """A private (0600, random name) page that sends the browser on to the dashboard: the
    browser is started with this file's name, so the token never shows in the process list."""
    page = (
        '<!doctype html><html lang="en"><meta charset="utf-8">'
        f'<meta http-equiv="refresh" content="0;url={esc(server.url)}">'
        f'<title>vfido ui</title><p><a href="{esc(server.url)}">Open the vfido dashboard</a></p>'
    )
    fd, name = tempfile.mkstemp(prefix="vfido-ui-", suffix=".html")  # mode 0600
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(page)
    return Path(name)


def _has_display() -> bool:
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def cmd_ui(args: argparse.Namespace) -> int:
    path = find_key(args.name, Path(args.socket) if args.socket else None)
    if not 0 <= args.port <= 65535:
        raise UiError("--port must be between 0 and 65535")

    def ready(url: str) -> None:
        print(f"vfido ui for {path.stem}: {url}", flush=True)
        if not args.no_open and not _has_display():
            print("(no display: open the URL in a browser on this machine)", flush=True)

    serve(path, args.port, open_browser=not args.no_open, ready=ready)
    return 0


def register(sub: Any, add_keystore_args: Callable[..., None]) -> None:
    """Add ``vfido ui`` to the CLI (``add_keystore_args`` unused: the key is running)."""
    p = sub.add_parser("ui", help="a live dashboard for a running key, in the browser")
    p.add_argument("--name", help="which running key (default: the only one)")
    p.add_argument("--socket", metavar="PATH", help="the key's control socket")
    p.add_argument(
        "--port", type=int, default=0, help="TCP port on 127.0.0.1 (default: a free one)"
    )
    p.add_argument("--no-open", action="store_true", help="do not start a browser")
    p.set_defaults(func=_run_cli)


def _run_cli(args: argparse.Namespace) -> int:
    try:
        return cmd_ui(args)
    except UiError as exc:
        raise ControlError(str(exc)) from None
