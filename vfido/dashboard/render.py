"""The dashboard's HTML: each section rendered on the server from what the key says,
escaped, secrets redacted."""

from __future__ import annotations

import datetime
import html
import json
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from vfido.authenticator.cose import ALGORITHM_NAMES
from vfido.control import ControlError, NotRunningError
from vfido.dashboard.common import (
    CRED_PROTECT_NAMES,
    CREDENTIALS_LIMIT,
    DEFAULT_PRESENCE_MODES,
    LOG_LIMIT,
    REDACTED,
)
from vfido.dashboard.link import KeyLink, _is_refusal
from vfido.presence.modes import describe_mode
from vfido.safetext import visible_lines
from vfido.trace.names import is_secret


def esc(value: object) -> str:
    """``value`` as HTML text: escaped for HTML, and with control, format and separator
    characters shown as escapes (``\u202e``), newlines kept. Much of what the dashboard
    shows a site or a host chose (RP IDs, user names): a bidi override reordered the site or
    account a Delete dialog named."""
    return html.escape(visible_lines(str(value)), quote=True)


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
            secret = is_secret(str(key))
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
            rows.append(("Presence", describe_mode(status)))
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


def _normalise_credential(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The fields the table shows, from a control API CRED (see :mod:`vfido.control.commands`)."""
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
    """One line for a request still waiting for its answer, as the trace writes a request's
    (:func:`vfido.trace.decode.request_summary`)."""
    from vfido.trace.decode import request_summary

    params = record.get("params")
    command = f"{record.get('proto', '')} {record.get('command', '')}".strip()
    return request_summary(command, params if isinstance(params, Mapping) else {})


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
