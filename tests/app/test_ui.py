"""`vfido ui`: the dashboard's HTTP server (token, loopback only, POST-only state changes,
headers, escaping, live events) against a real control socket, and the whole thing in a
real headless Chromium driven over the DevTools protocol: a registration from python-fido2
is allowed and another denied by clicking / pressing keys on the dashboard."""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from fido2.client import ClientError, DefaultClientDataCollector, Fido2Client
from fido2.cose import CoseKey
from fido2.ctap import CtapError
from fido2.webauthn import UserVerificationRequirement

from tests.ci import unavailable
from tests.presence_helpers import REGISTER, SIGN_IN, Asking
from tests.rp import RelyingParty, challenge_of
from tests.service_helpers import env, udp_service
from vfido.authenticator.env import PresenceKind, PresenceRequest, PresenceResult
from vfido.control import ControlServer
from vfido.control.commands import add_presence_commands
from vfido.dashboard import DashboardServer, KeyLink, cose_to_pem, public_key_pem
from vfido.dashboard.common import REDACTED
from vfido.dashboard.render import redact
from vfido.presence import PresenceBroker
from vfido.testing.devtools import Browser, CdpError, Page, find_chromium
from vfido.transports.udp import open_udp_device

# --- an in-process key: a real control socket and presence broker --------------------------


@pytest.fixture
def broker() -> PresenceBroker:
    return PresenceBroker(mode="manual")


@pytest.fixture
def control(tmp_path: Path, broker: PresenceBroker) -> Iterator[ControlServer]:
    path = tmp_path / "run" / "vfido" / "k1.sock"
    server = ControlServer(path)
    server.register(
        "status",
        lambda _args: {"name": "k1", "transport": "udp", "presence": broker.mode, "pid": 1},
    )
    add_presence_commands(server, broker)
    with server:
        yield server


@pytest.fixture
def dashboard(control: ControlServer) -> Iterator[DashboardServer]:
    with DashboardServer(KeyLink(control.path)) as server:
        server.start()
        yield server


def request(
    server: DashboardServer,
    method: str,
    path: str,
    body: str | None = None,
    headers: dict[str, str] | None = None,
    *,
    host: str = "127.0.0.1",
) -> tuple[int, dict[str, str], str]:
    """One HTTP request to the dashboard; (status, headers, body)."""
    conn = http.client.HTTPConnection(host, server.port, timeout=30)
    try:
        all_headers = dict(headers or {})
        if body is not None:
            all_headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
        conn.request(method, path, body=body, headers=all_headers)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read().decode()
    finally:
        conn.close()


def base(server: DashboardServer) -> str:
    return f"/{server.token}/"


def wait_until(check: Callable[[], Any], timeout: float = 30.0, what: str = "it") -> Any:
    """``check()`` once it is truthy; an AssertionError naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
    return value


# --- the token ------------------------------------------------------------------------------


def test_every_url_needs_the_token(dashboard: DashboardServer) -> None:
    token = dashboard.token
    assert len(token) >= 32 and dashboard.url == f"http://127.0.0.1:{dashboard.port}/{token}/"
    status, _, page = request(dashboard, "GET", base(dashboard))
    assert status == 200 and '<h2 id="pending-heading"' in page

    wrong = "A" * len(token)
    for path in (
        "/",
        "/assets/dashboard.js",
        "/events",
        f"/{wrong}/",
        f"/{token[:-1]}/",
        f"/{token}x/",
        f"/x{token}/",
        f"/{wrong}/assets/dashboard.js",
        f"/{wrong}/section/pending",
        f"/?token={token}",
    ):
        status, _, body = request(dashboard, "GET", path)
        assert status == 403, path
        assert token not in body
    status, headers, _ = request(dashboard, "GET", f"/{token}")
    assert status == 301 and headers["Location"] == f"/{token}/"
    for asset in ("dashboard.js", "dashboard.css", "favicon.svg"):
        status, _, _ = request(dashboard, "GET", f"/{token}/assets/{asset}")
        assert status == 200, asset
    status, _, _ = request(dashboard, "GET", f"/{token}/assets/../ui.py")
    assert status == 404


def test_two_dashboards_have_different_tokens(control: ControlServer) -> None:
    with (
        DashboardServer(KeyLink(control.path)) as one,
        DashboardServer(KeyLink(control.path)) as two,
    ):
        assert one.token != two.token and one.port != two.port


def test_listens_on_loopback_only(dashboard: DashboardServer) -> None:
    assert dashboard.server_address[0] == "127.0.0.1"
    # Another loopback address reaches another socket: nothing listens for it there.
    with (
        pytest.raises(ConnectionRefusedError),
        socket.create_connection(("127.0.0.2", dashboard.port), timeout=5),
    ):
        pass
    for address in _non_loopback_addresses():
        with pytest.raises(OSError), socket.create_connection((address, dashboard.port), 5):
            pass


def _non_loopback_addresses() -> list[str]:
    try:
        infos = socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)
    except OSError:
        return []
    return sorted({str(i[4][0]) for i in infos if not str(i[4][0]).startswith("127.")})


def test_host_header_must_name_the_dashboard(dashboard: DashboardServer) -> None:
    """A DNS-rebinding page reaches 127.0.0.1 under its own host name: refused."""
    for host in ("evil.example", f"evil.example:{dashboard.port}", "127.0.0.1:1"):
        status, _, _ = request(dashboard, "GET", base(dashboard), headers={"Host": host})
        assert status == 421, host
    status, _, _ = request(
        dashboard, "GET", base(dashboard), headers={"Host": f"localhost:{dashboard.port}"}
    )
    assert status == 200


def test_security_headers(dashboard: DashboardServer) -> None:
    status, headers, page = request(dashboard, "GET", base(dashboard))
    assert status == 200
    csp = headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["Referrer-Policy"] == "same-origin"  # the token never leaves the origin
    assert headers["Cache-Control"] == "no-store"
    # no third-party asset, no inline script
    assert not re.search(r"(src|href)=\"(https?:)?//", page)
    assert "<script>" not in page


def test_token_is_never_logged(
    dashboard: DashboardServer, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    request(dashboard, "GET", base(dashboard))
    request(dashboard, "GET", "/nope/")
    request(dashboard, "POST", base(dashboard) + "approve", "id=1")
    out, err = capfd.readouterr()
    assert dashboard.token not in out + err
    assert all(dashboard.token not in r.getMessage() for r in caplog.records)


# --- state changes: POST only, same origin --------------------------------------------------


def test_state_changes_are_post_only(dashboard: DashboardServer, broker: PresenceBroker) -> None:
    asking = Asking(broker, REGISTER)
    pending = wait_until(broker.pending, what="a pending request")
    request_id = pending[0].id
    for path in ("approve", "deny", f"approve?id={request_id}"):
        status, headers, _ = request(dashboard, "GET", base(dashboard) + path)
        assert status == 405 and headers["Allow"] == "POST", path
    for method in ("PUT", "DELETE", "PATCH"):
        status, _, _ = request(dashboard, method, base(dashboard) + "approve", f"id={request_id}")
        assert status == 405
    # POST without the token
    status, _, _ = request(dashboard, "POST", "/approve", f"id={request_id}")
    assert status == 403
    # POST from another site, with the token (the browser says where it comes from)
    for headers in (
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
    ):
        status, _, _ = request(
            dashboard, "POST", base(dashboard) + "approve", f"id={request_id}", headers
        )
        assert status == 403, headers
    # not a form
    status, _, _ = request(
        dashboard,
        "POST",
        base(dashboard) + "approve",
        json.dumps({"id": request_id}),
        {"Content-Type": "application/json"},
    )
    assert status == 415
    assert broker.pending() and broker.pending()[0].result is None  # nothing answered it

    # the real thing: a same-origin form post
    origin = f"http://127.0.0.1:{dashboard.port}"
    status, headers, _ = request(
        dashboard, "POST", base(dashboard) + "approve", f"id={request_id}", {"Origin": origin}
    )
    assert status == 303 and headers["Location"] == base(dashboard)
    assert asking.result() is PresenceResult.GRANTED


def test_deny_with_javascript_answer(dashboard: DashboardServer, broker: PresenceBroker) -> None:
    asking = Asking(broker, SIGN_IN)
    request_id = wait_until(broker.pending, what="a pending request")[0].id
    status, _, body = request(
        dashboard,
        "POST",
        base(dashboard) + "deny",
        f"id={request_id}",
        {"Accept": "application/json", "Sec-Fetch-Site": "same-origin"},
    )
    assert status == 200, body
    answer = json.loads(body)
    assert answer["ok"] is True and "Denied" in answer["message"]
    assert asking.result() is PresenceResult.DENIED
    # answering again: the key says why, in one line
    status, _, body = request(
        dashboard,
        "POST",
        base(dashboard) + "deny",
        f"id={request_id}",
        {"Accept": "application/json"},
    )
    assert status == 409 and json.loads(body) == {
        "ok": False,
        "message": f"no pending request {request_id}",
    }


def test_oversized_and_malformed_forms(dashboard: DashboardServer) -> None:
    status, _, _ = request(dashboard, "POST", base(dashboard) + "approve", "id=" + "1" * 20000)
    assert status == 413
    status, _, body = request(dashboard, "POST", base(dashboard) + "approve", "id=abc")
    assert status == 409 and "id must be a number" in body


# --- what the page shows --------------------------------------------------------------------


def test_pending_request_is_shown_escaped(
    dashboard: DashboardServer, broker: PresenceBroker
) -> None:
    hostile = PresenceRequest(PresenceKind.REGISTER, "<script>alert(1)</script>{{log}}", "<b>m</b>")
    asking = Asking(broker, hostile, timeout=30)
    request_id = wait_until(broker.pending, what="a pending request")[0].id
    status, _, page = request(dashboard, "GET", base(dashboard))
    assert status == 200
    assert f'data-pending-id="{request_id}"' in page
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "{{log}}" in page  # shown as text, not expanded into the log section
    assert "&lt;b&gt;m&lt;/b&gt;" in page
    assert ">Allow</button>" in page and ">Deny</button>" in page
    broker.answer(False, request_id, "test")
    assert asking.result() is PresenceResult.DENIED
    # A bidi override reordered the site or account shown (and named in the Delete dialog):
    # control and format characters are shown as escapes, as on the terminal.
    reordered = PresenceRequest(PresenceKind.REGISTER, "bank.example\u202emoc.live", "a\x1bb\x07")
    asking = Asking(broker, reordered, timeout=30)
    request_id = wait_until(broker.pending, what="a pending request")[0].id
    _, _, page = request(dashboard, "GET", base(dashboard))
    assert "\u202e" not in page and "\x1b" not in page and "\x07" not in page
    assert "bank.example\\u202emoc.live" in page and "a\\x1bb\\x07" in page
    broker.answer(False, request_id, "test")
    assert asking.result() is PresenceResult.DENIED


def test_sections_without_control_commands_say_so(dashboard: DashboardServer) -> None:
    """A key without the credential / log / behaviour commands: each section says what is
    missing instead of failing."""
    status, _, page = request(dashboard, "GET", base(dashboard))
    assert status == 200
    for name in ("credentials", "log", "switches"):
        section = re.search(rf'<div id="section-{name}">(.*?)</div>\n', page, re.S)
        assert section is not None, name
    status, _, fragment = request(dashboard, "GET", base(dashboard) + "section/pending")
    assert status == 200 and "No request is waiting" in fragment


def test_key_gone_is_shown(tmp_path: Path, broker: PresenceBroker) -> None:
    path = tmp_path / "run" / "vfido" / "gone.sock"
    server = ControlServer(path)
    server.register("status", lambda _args: {"name": "gone"})
    add_presence_commands(server, broker)
    server.start()
    with DashboardServer(KeyLink(path)) as dashboard:
        dashboard.start()
        status, _, page = request(dashboard, "GET", base(dashboard))
        assert status == 200 and "No request is waiting" in page
        server.stop()
        status, _, page = request(dashboard, "GET", base(dashboard))
        assert status == 200 and "The key is not running" in page


def test_events_stream_sections_live(dashboard: DashboardServer, broker: PresenceBroker) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", dashboard.port, timeout=30)
    conn.request("GET", base(dashboard) + "events")
    response = conn.getresponse()
    assert response.status == 200
    assert response.getheader("Content-Type", "").startswith("text/event-stream")
    events: list[dict[str, Any]] = []
    done = threading.Event()

    def read() -> None:
        with contextlib.suppress(OSError, ValueError):
            for raw in response:
                line = raw.decode().rstrip("\n")
                if line.startswith("data: "):
                    events.append(json.loads(line[len("data: ") :]))
                if done.is_set():
                    return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    wait_until(lambda: any(e["section"] == "pending" for e in events), what="a first event")
    asking = Asking(broker, REGISTER)
    shown = wait_until(
        lambda: [e for e in events if "data-pending-id" in e["html"]], what="the pending request"
    )
    assert "example.org" in shown[0]["html"] and "bob" in shown[0]["html"]
    request_id = broker.pending()[0].id
    broker.answer(True, request_id, "test")
    assert asking.result() is PresenceResult.GRANTED
    wait_until(
        lambda: (
            "No request is waiting" in [e for e in events if e["section"] == "pending"][-1]["html"]
        ),
        what="the request to go away",
    )
    done.set()
    conn.close()


# --- a whole key in-process: credentials, switches, log (no browser) -------------------------


@dataclass
class FullKey:
    control: ControlServer
    device: Any  # authenticator.device.Authenticator
    recorder: Any  # vfido.trace.TraceRecorder


@pytest.fixture
def full_key(tmp_path: Path) -> Iterator[FullKey]:
    """A real authenticator, keystore, presence broker, control API and trace recorder."""
    from vfido.authenticator.config import Config
    from vfido.authenticator.device import Authenticator
    from vfido.control.commands import KeyParts, add_key_commands
    from vfido.keystore.sqlite_store import SqliteKeyStore
    from vfido.trace import TraceRecorder, add_trace_commands

    store = SqliteKeyStore.ephemeral()
    broker = PresenceBroker(mode="manual")
    device = Authenticator(store, broker, Config())
    recorder = TraceRecorder()
    server = ControlServer(tmp_path / "run" / "vfido" / "full.sock")
    server.register("status", lambda _args: {"name": "full", "presence": broker.mode})
    add_presence_commands(server, broker)
    add_key_commands(server, KeyParts(device, store, broker))
    add_trace_commands(server, recorder)
    try:
        with server:
            yield FullKey(server, device, recorder)
    finally:
        store.close()


def _post(server: DashboardServer, path: str, body: str) -> tuple[int, str]:
    status, _, text = request(
        server, "POST", base(server) + path, body, {"Accept": "application/json"}
    )
    return status, text


def test_credentials_export_and_delete_over_http(full_key: FullKey) -> None:
    from vfido.authenticator.behaviours import b64url as _b64url

    control = full_key.control
    link = KeyLink(control.path)
    added = link.call(
        "credentials-add",
        rp_id="shop.example",
        user_id=_b64url(b"user-7"),
        user_name="zoe",
        algorithm="EdDSA",
        cred_protect=3,
        sign_count=41,
    )["credential"]
    with DashboardServer(link) as dashboard:
        dashboard.start()
        status, _, page = request(dashboard, "GET", base(dashboard))
        assert status == 200
        row = re.search(rf'<tr data-credential-id="{added["id"]}">(.*?)</tr>', page, re.S)
        assert row is not None, page
        cells = re.sub(r"<[^>]+>", "|", row.group(1))
        assert "zoe" in cells and "EdDSA" in cells and "|41|" in cells
        assert "3 (required: user verification)" in cells and "|yes|" in cells
        assert '<h3 id="site-1">shop.example' in page

        status, headers, pem = request(
            dashboard, "GET", base(dashboard) + f"credentials/{added['id']}/public-key.pem"
        )
        assert status == 200 and pem == added["public_key_pem"]
        assert headers["Content-Type"] == "application/x-pem-file"
        assert headers["Content-Disposition"].startswith("attachment; filename=")
        status, _, _ = request(
            dashboard, "GET", base(dashboard) + "credentials/nope/public-key.pem"
        )
        assert status == 404

        # delete: GET is refused, the form POST (no JavaScript) works and redirects back
        status, _, _ = request(dashboard, "GET", base(dashboard) + "credentials/delete")
        assert status == 405
        assert link.call("credentials")["credentials"]
        status, headers, _ = request(
            dashboard, "POST", base(dashboard) + "credentials/delete", f"id={added['id']}"
        )
        assert status == 303 and headers["Location"] == base(dashboard)
        assert link.call("credentials")["credentials"] == []
        status, text = _post(dashboard, "credentials/delete", f"id={added['id']}")
        assert status == 409 and "no discoverable credential" in json.loads(text)["message"]


def test_switches_over_http(full_key: FullKey) -> None:
    control = full_key.control
    link = KeyLink(control.path)
    with DashboardServer(link) as dashboard:
        dashboard.start()
        _, _, page = request(dashboard, "GET", base(dashboard))
        assert '<select id="presence-mode" name="mode">' in page
        assert "<dt>Versions</dt><dd>U2F_V2, FIDO_2_0, FIDO_2_1, FIDO_2_3</dd>" in page
        assert "<dt>Algorithms</dt><dd>ES256," in page
        assert 'id="behaviour-counter-jump"' in page and 'id="behaviour-attestation-value"' in page

        def active() -> dict[str, Any]:
            result: dict[str, Any] = link.call("behaviours")["active"]
            return result

        # a flag, a number with and without its value, a choice; then off again
        assert (
            _post(dashboard, "behaviours", "name=zero-counter&kind=bool&enabled=off&enabled=on")[0]
            == 200
        )
        assert "zero-counter" in active()
        assert (
            _post(dashboard, "behaviours", "name=counter-jump&kind=int&enabled=on&value=77")[0]
            == 200
        )
        assert active()["counter-jump"] == 77
        assert (
            _post(dashboard, "behaviours", "name=counter-jump&kind=int&enabled=on&value=")[0] == 200
        )
        assert active()["counter-jump"] == 1000  # the default
        _post(dashboard, "behaviours", "name=attestation&kind=choice&enabled=on&value=none")
        assert active()["attestation"] == "none"
        status, text = _post(
            dashboard, "behaviours", "name=counter-jump&kind=int&enabled=on&value=x"
        )
        assert status == 409 and "number" in json.loads(text)["message"]
        status, text = _post(dashboard, "behaviours", "name=no-such-thing&kind=bool&enabled=on")
        assert status == 409 and "no-such-thing" in json.loads(text)["message"]
        for name in ("zero-counter", "counter-jump", "attestation"):
            _post(dashboard, "behaviours", f"name={name}&enabled=off")
        assert active() == {}
        _, _, fragment = request(dashboard, "GET", base(dashboard) + "section/switches")
        assert 'data-state="on"' not in fragment

        assert _post(dashboard, "presence-mode", "mode=auto")[0] == 200
        assert link.call("presence-mode")["mode"] == "auto"
        status, text = _post(dashboard, "presence-mode", "mode=bogus")
        assert status == 409
        assert _post(dashboard, "power-cycle", "")[0] == 200
        # a misbehaviour that changes what the key advertises shows in the key's facts
        _post(dashboard, "behaviours", "name=versions&kind=choice&enabled=on&value=FIDO_2_0")
        _, _, fragment = request(dashboard, "GET", base(dashboard) + "section/key")
        assert "<dt>Versions</dt><dd>FIDO_2_0</dd>" in fragment


def test_log_is_decoded_and_redacted(full_key: FullKey) -> None:
    """The page shows the trace's transactions, decoded; a secret-looking field that reached
    the log anyway is still hidden by the dashboard."""
    import html

    from vfido.authenticator.env import NullContext

    with DashboardServer(KeyLink(full_key.control.path)) as dashboard:
        dashboard.start()
        _, _, fragment = request(dashboard, "GET", base(dashboard) + "section/log")
        assert "key started" in fragment and "getInfo" not in fragment
        # a real transaction through the recorder: getInfo, decoded
        device = full_key.recorder.wrap(full_key.device)
        assert device.handle_cbor(b"\x04", NullContext())[:1] == b"\x00"
        full_key.recorder.event(
            "self-test", pinUvAuthParam="h'00112233445566778899'", note="visible"
        )
        _, _, fragment = request(dashboard, "GET", base(dashboard) + "section/log")
        text = html.unescape(fragment)
        assert "CBOR getInfo" in text and "OK (" in text and "FIDO_2_1" in text
        assert "event: self-test" in text and "visible" in text
        assert "00112233445566778899" not in text and REDACTED in text


# --- secrets and public keys ----------------------------------------------------------------


def test_redact_hides_secrets_at_any_depth() -> None:
    entry = {
        "command": "clientPin",
        "request": {
            "pinUvAuthParam": "c2VjcmV0",
            "keyAgreement": {"x": "pub"},
            "nested": [{"pinHashEnc": "aaaa", "newPinEnc": "bbbb", "ok": 1}],
            "hmac-secret": {"saltEnc": "zz"},
        },
        "response": {"pinUvAuthToken": "dG9rZW4=", "retries": 8},
    }
    clean = redact(entry)
    text = json.dumps(clean)
    for secret in ("c2VjcmV0", "aaaa", "bbbb", "zz", "dG9rZW4="):
        assert secret not in text
    assert clean["request"]["pinUvAuthParam"] == REDACTED
    assert clean["request"]["keyAgreement"] == {"x": "pub"}
    assert clean["response"]["retries"] == 8
    # flags and structures under a secret name are looked into, not hidden whole
    assert redact({"hmac-secret": True}) == {"hmac-secret": True}
    assert redact({"hmac-secret": {"saltEnc": "zz", "pinUvAuthProtocol": 2}}) == {
        "hmac-secret": {"saltEnc": REDACTED, "pinUvAuthProtocol": 2}
    }
    assert redact({"pin": "<redacted 4 bytes>"}) == {"pin": "<redacted 4 bytes>"}


def test_log_rows_answered_and_in_progress() -> None:
    from vfido.dashboard.render import _render_log

    records: list[dict[str, Any]] = [
        {"seq": 1, "t": 1.0, "type": "request", "tx": 1, "proto": "CBOR", "command": "getInfo"},
        {
            "seq": 2,
            "t": 1.1,
            "type": "response",
            "tx": 1,
            "proto": "CBOR",
            "command": "getInfo",
            "status": "OK",
            "duration": 0.002,
            "summary": "CBOR getInfo -> OK",
            "result": {},
        },
        {
            "seq": 3,
            "t": 2.0,
            "type": "request",
            "tx": 2,
            "proto": "CBOR",
            "command": "makeCredential",
            "params": {"rp": {"id": "<i>evil</i>"}, "user": {"name": "bob"}},
        },
    ]
    rows = _render_log(records)
    # newest first; the answered request is one row with its response
    assert rows.index("makeCredential") < rows.index("getInfo")
    assert rows.count("<tr") == 2
    assert "OK (2 ms)" in rows and "in progress" in rows
    assert "rp=&quot;&lt;i&gt;evil&lt;/i&gt;&quot; user=bob" in rows and "<i>" not in rows


@pytest.mark.parametrize(
    ("alg", "make"),
    [
        (-7, lambda: ec.generate_private_key(ec.SECP256R1())),
        (-35, lambda: ec.generate_private_key(ec.SECP384R1())),
        (-8, lambda: ed25519.Ed25519PrivateKey.generate()),
        (-257, lambda: rsa.generate_private_key(65537, 2048)),
    ],
    ids=["ES256", "ES384", "EdDSA", "RS256"],
)
def test_public_key_export_matches_the_key(alg: int, make: Callable[[], Any]) -> None:
    private = make()
    public = private.public_key()
    cose = CoseKey.for_alg(alg).from_cryptography_key(public)
    pem = cose_to_pem(dict(cose))
    loaded = serialization.load_pem_public_key(pem)
    der = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    assert loaded.public_bytes(*der) == public.public_bytes(*der)
    import cbor2

    from vfido.authenticator.behaviours import b64url as _b64url

    assert public_key_pem(_b64url(cbor2.dumps(dict(cose)))) == pem
    assert public_key_pem(cbor2.dumps(dict(cose)).hex()) == pem
    assert public_key_pem(pem.decode()) == pem
    with pytest.raises(ValueError):
        cose_to_pem({1: 2, -1: 99})


# --- `vfido ui` as a process ----------------------------------------------------------------


@contextlib.contextmanager
def vfido_ui(args: list[str], runtime_dir: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """`vfido ui --no-open ...` as a subprocess; yields it and the URL it printed."""
    process = subprocess.Popen(
        [sys.executable, "-m", "vfido", "ui", "--no-open", *args],
        env=env(XDG_RUNTIME_DIR=str(runtime_dir)),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:\d+/[A-Za-z0-9_-]+/", line)
        if match is None:
            process.kill()
            _, err = process.communicate(timeout=20)
            raise AssertionError(f"vfido ui printed no URL: {line!r} {err!r}")
        yield process, match.group(0)
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


@pytest.mark.slow
def test_vfido_ui_serves_and_stops_on_sigterm(control: ControlServer, tmp_path: Path) -> None:
    with vfido_ui(["--socket", str(control.path)], tmp_path) as (process, url):
        assert url.startswith("http://127.0.0.1:")
        parsed = urllib.parse.urlsplit(url)
        conn = http.client.HTTPConnection("127.0.0.1", parsed.port, timeout=30)
        conn.request("GET", parsed.path)
        response = conn.getresponse()
        assert response.status == 200 and b"Request in progress" in response.read()
        conn.close()
        # a page watching the event stream does not keep it from stopping
        events = http.client.HTTPConnection("127.0.0.1", parsed.port, timeout=30)
        events.request("GET", parsed.path + "events")
        stream = events.getresponse()
        assert stream.status == 200 and stream.readline() == b"retry: 1000\n"
        process.terminate()
        assert process.wait(timeout=20) == 0
        events.close()


@pytest.mark.slow
def test_vfido_ui_opens_the_browser_without_the_token_in_its_arguments(
    control: ControlServer, tmp_path: Path
) -> None:
    """Other users see every process's arguments: the browser gets a private file that
    redirects to the dashboard, not the URL with the token."""
    record = tmp_path / "browser-args"
    fake = tmp_path / "fake-browser"
    fake.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {record}\n')
    fake.chmod(0o755)
    process = subprocess.Popen(
        [sys.executable, "-m", "vfido", "ui", "--socket", str(control.path)],
        env=env(BROWSER=f"{fake} %s", DISPLAY=":99", XDG_RUNTIME_DIR=str(tmp_path)),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().split(": ", 1)[1].strip()
        token = url.rstrip("/").rsplit("/", 1)[1]
        args = wait_until(lambda: record.exists() and record.read_text(), what="the browser")
        assert token not in args
        launcher = Path(urllib.parse.urlsplit(args.strip()).path)
        assert launcher.is_file() and (launcher.stat().st_mode & 0o777) == 0o600
        assert url in launcher.read_text()
        process.terminate()
        assert process.wait(timeout=20) == 0
        assert not launcher.exists()
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=20)


@pytest.mark.slow
def test_vfido_ui_port_in_use_is_one_line(control: ControlServer, tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "vfido",
                "ui",
                "--no-open",
                "--socket",
                str(control.path),
                "--port",
                str(port),
            ],
            env=env(XDG_RUNTIME_DIR=str(tmp_path)),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 1, result
    assert result.stderr.count("\n") == 1 and f"cannot listen on 127.0.0.1:{port}" in result.stderr


@pytest.mark.slow
def test_vfido_ui_without_a_key_is_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "vfido", "ui", "--no-open"],
        env=env(XDG_RUNTIME_DIR=str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "no vfido key is running" in result.stderr


# --- the real browser -----------------------------------------------------------------------


def _chromium() -> str:
    found = find_chromium()
    if found is None:
        unavailable(
            "no Chromium (chromium / chromium-browser / google-chrome) on PATH",
            in_ci_because="the dashboard browser test needs it in CI",
        )
    return found


def _artifacts(tmp_path: Path) -> Path:
    directory = Path(os.environ.get("VFIDO_ARTIFACTS") or tmp_path / "artifacts")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def _register(port: int, peer_port: int, rp: RelyingParty, user_id: bytes, name: str) -> bytes:
    options, state = rp.begin_registration(
        user_id,
        name,
        user_verification=UserVerificationRequirement.DISCOURAGED,
        resident_key_requirement="required",
    )
    device = open_udp_device(port=port, peer_port=peer_port)
    try:
        client = Fido2Client(device, DefaultClientDataCollector(rp.origin))
        response = client.make_credential(options.public_key)
    finally:
        device.close()
    return rp.complete_registration(state, response, challenge_of(options)).credential_id


def _sign_in(port: int, peer_port: int, rp: RelyingParty) -> int:
    """A sign-in with the discoverable credential (empty allow list); the new counter."""
    options, state = rp.server.authenticate_begin(
        user_verification=UserVerificationRequirement.DISCOURAGED
    )
    device = open_udp_device(port=port, peer_port=peer_port)
    try:
        client = Fido2Client(device, DefaultClientDataCollector(rp.origin))
        response = client.get_assertion(options.public_key).get_response(0)
    finally:
        device.close()
    return rp.complete_authentication(state, response, challenge_of(options))


class Background:
    """A call on a thread; ``outcome()`` is its value or exception."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self._out: list[Any] = []

        def target() -> None:
            try:
                self._out.append(fn())
            except Exception as exc:
                self._out.append(exc)

        self._thread = threading.Thread(target=target, daemon=True)
        self._thread.start()

    def outcome(self, timeout: float = 60.0) -> Any:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the client did not finish"
        return self._out[0]


def _trace_supported() -> bool:
    """Whether `vfido run` takes --trace (the key then answers the control command `log`)."""
    from vfido.cli import build_parser

    try:
        build_parser().parse_args(["run", "--trace", "trace.jsonl"])
    except SystemExit:
        return False
    return True


#: Basic accessibility checks on the live DOM: labelled controls, named buttons and links,
#: unique ids, a language, headings that do not skip a level.
A11Y_PROBLEMS = """(() => {
  const problems = [];
  if (!document.documentElement.lang) problems.push('no lang on <html>');
  for (const el of document.querySelectorAll('input:not([type=hidden]), select, textarea')) {
    const named = el.labels.length || el.getAttribute('aria-label')
      || el.getAttribute('aria-labelledby');
    if (!named) problems.push('unlabelled ' + el.outerHTML.slice(0, 80));
  }
  for (const el of document.querySelectorAll('button, a[href]')) {
    if (!(el.textContent.trim() || el.getAttribute('aria-label')))
      problems.push('nameless ' + el.outerHTML.slice(0, 80));
  }
  const ids = new Set();
  for (const el of document.querySelectorAll('[id]')) {
    if (ids.has(el.id)) problems.push('duplicate id ' + el.id);
    ids.add(el.id);
  }
  let level = 0;
  for (const h of document.querySelectorAll('h1, h2, h3, h4, h5, h6')) {
    const n = Number(h.tagName[1]);
    if (n > level + 1) problems.push('heading skips to ' + h.tagName + ': ' + h.textContent);
    level = n;
  }
  return problems;
})()"""


def _text(page: Page, section: str) -> str:
    text: str = page.evaluate(f"document.getElementById('section-{section}').innerText")
    return text


@pytest.mark.slow
def test_dashboard_in_chromium(tmp_path: Path) -> None:
    """The dashboard in a real browser: Allow (mouse) and Deny (keyboard only) a
    registration from python-fido2; the credential list, its public key, the log; the
    switches; delete."""
    chromium = _chromium()
    artifacts = _artifacts(tmp_path)
    runtime = tmp_path / "rt"
    runtime.mkdir()
    trace = _trace_supported()
    args = ["--ephemeral", "--presence", "manual", "--presence-timeout", "60"]
    if trace:
        args += ["--trace", str(tmp_path / "trace.jsonl")]
    rp = RelyingParty(attestation="none")
    with (
        udp_service(args, extra_env={"XDG_RUNTIME_DIR": str(runtime)}) as key,
        vfido_ui(["--name", f"udp-{key.port}"], runtime) as (_ui, url),
        Browser(chromium) as browser,
    ):
        link = KeyLink(runtime / "vfido" / f"udp-{key.port}.sock")
        page = browser.open_page(url)
        page.wait_for("document.getElementById('connection').textContent === 'Live'")
        assert page.evaluate("document.querySelectorAll('[data-pending-id]').length") == 0
        assert "No discoverable credentials" in _text(page, "credentials")

        # --- Allow, with a mouse click -------------------------------------------------------
        registering = Background(
            lambda: _register(key.port, key.peer_port, rp, b"user-alice-1", "alice")
        )
        page.wait_for("!!document.querySelector('[data-pending-id] button.allow')")
        shown = _text(page, "pending")
        assert "example.com" in shown and "register" in shown.lower() and "alice" in shown
        assert page.evaluate("document.title").startswith("(1) ")
        page.wait_for("/s left/.test(document.querySelector('.countdown').textContent)")
        if trace:  # the request waiting for the user is in the log, in progress
            page.wait_for(
                "/makeCredential\\s+in progress/.test("
                "document.getElementById('section-log').innerText)"
            )
        assert "Request waiting: Register" in page.evaluate(
            "document.getElementById('announcer').textContent"
        )
        assert page.evaluate(A11Y_PROBLEMS) == []
        page.screenshot(str(artifacts / "ui-pending-request.png"))  # a str, as Browser(log=)
        page.click("[data-pending-id] button.allow")
        credential_id = registering.outcome()
        assert isinstance(credential_id, bytes), credential_id  # verified by fido2.server
        page.wait_for("!document.querySelector('[data-pending-id]')")
        assert page.wait_for("document.getElementById('notice').textContent").startswith("Allowed")

        # --- the credential list shows it, grouped by site -------------------------------------
        from vfido.authenticator.behaviours import b64url as _b64url

        row_js = f"#section-credentials tr[data-credential-id='{_b64url(credential_id)}']"
        row = page.wait_for(
            f"(() => {{ const r = document.querySelector({json.dumps(row_js)}); "
            "return r && r.innerText; })()"
        )
        assert "alice" in row and "ES256" in row and "yes" in row  # discoverable
        assert "1 (optional)" in row  # credProtect
        heading = page.evaluate(
            f"document.querySelector({json.dumps(row_js)}).closest('section').querySelector('h3')"
            ".innerText"
        )
        assert heading.startswith("example.com")

        # its public key (PEM), as the link downloads it, is the one the RP verified
        pem = page.evaluate(
            f"fetch(document.querySelector({json.dumps(row_js + ' a[download]')}).href)"
            ".then(r => r.text())"
        )
        assert pem.encode() == cose_to_pem(dict(rp.credentials[0].public_key))

        # --- a sign-in: which site, which user; Allow; the counter moves -----------------------
        signing = Background(lambda: _sign_in(key.port, key.peer_port, rp))
        page.wait_for("!!document.querySelector('[data-pending-id][data-kind=authenticate]')")
        shown = _text(page, "pending")
        assert "Sign in to example.com" in shown and "alice" in shown
        assert "Accounts here\nalice (ES256)" in shown
        page.click("[data-pending-id] button.allow")
        assert signing.outcome() == 1  # the verified assertion's counter
        page.wait_for("!document.querySelector('[data-pending-id]')")
        page.wait_for(
            f"document.querySelector({json.dumps(row_js)}).children[3].textContent === '1'"
        )

        # --- the transaction log: the makeCredential, decoded ------------------------------------
        if trace:
            page.wait_for("/makeCredential/.test(document.getElementById('section-log').innerText)")
            log_text = _text(page, "log")
            assert "CBOR makeCredential" in log_text and "OK" in log_text
            assert "rp=example.com" in log_text

        # --- Deny, with the keyboard only ------------------------------------------------------
        other = RelyingParty(attestation="none")
        refusing = Background(
            lambda: _register(key.port, key.peer_port, other, b"user-bob-2", "bob")
        )
        page.wait_for("!!document.querySelector('[data-pending-id][data-kind=register] .deny')")
        # the skip link (first on the page) jumps to the request, then Tab to Deny
        page.evaluate("document.querySelector('a.skip').focus()")
        page.press("Enter")
        page.wait_for("document.activeElement.id === 'pending-heading'")
        page.tab_to("el.matches('[data-pending-id] button.deny')", limit=3)
        page.press("Enter")
        outcome = refusing.outcome()
        assert isinstance(outcome, ClientError), outcome
        assert isinstance(outcome.cause, CtapError)
        assert outcome.cause.code == CtapError.ERR.OPERATION_DENIED
        assert other.credentials == []
        page.wait_for("!document.querySelector('[data-pending-id]')")
        # the keyboard stays in the section whose button went away
        assert page.evaluate("document.activeElement.id") == "pending-heading"
        if trace:
            page.wait_for(
                "/OPERATION_DENIED/.test(document.getElementById('section-log').innerText)"
            )

        # --- switches: a misbehaviour (checkbox click) and the presence mode ---------------------
        page.click("#behaviour-zero-counter")
        wait_until(
            lambda: "zero-counter" in link.call("behaviours")["active"], what="zero-counter on"
        )
        page.wait_for(
            "!!document.querySelector('li[data-behaviour=\"zero-counter\"][data-state=on]')"
        )
        page.click("#behaviour-zero-counter")
        wait_until(
            lambda: "zero-counter" not in link.call("behaviours")["active"],
            what="zero-counter off",
        )
        page.evaluate(
            "(() => { const s = document.getElementById('presence-mode'); s.value = 'auto';"
            " s.dispatchEvent(new Event('change', {bubbles: true})); })()"
        )
        wait_until(lambda: link.call("presence-mode")["mode"] == "auto", what="presence auto")
        carol = RelyingParty(attestation="none", rp_id="example.org", origin="https://example.org")
        carol_id = _register(key.port, key.peer_port, carol, b"user-carol-3", "carol")
        assert page.wait_for(
            "document.getElementById('section-credentials').querySelectorAll('h3').length === 2"
        )
        assert "example.org" in _text(page, "credentials")

        # --- delete alice's credential ---------------------------------------------------------
        page.click(row_js + " button.danger")
        page.wait_for(f"!document.querySelector({json.dumps(row_js)})")
        assert browser.dialogs and "alice" in browser.dialogs[-1]
        remaining = [c["id"] for c in link.call("credentials")["credentials"]]
        assert remaining == [_b64url(carol_id)]
        assert page.evaluate(A11Y_PROBLEMS) == []
        page.screenshot(artifacts / "ui-after.png")
        link.close()
    print(f"dashboard screenshots in {artifacts}")
    assert (artifacts / "ui-pending-request.png").stat().st_size > 1000


@pytest.mark.slow
def test_dashboard_in_chromium_without_javascript(tmp_path: Path) -> None:
    """With scripts off the page is still the whole dashboard: reload to see a request,
    Allow is a plain form POST answered by a redirect back."""
    chromium = _chromium()
    runtime = tmp_path / "rt"
    runtime.mkdir()
    rp = RelyingParty(attestation="none")
    with (
        udp_service(
            ["--ephemeral", "--presence", "manual", "--presence-timeout", "60"],
            extra_env={"XDG_RUNTIME_DIR": str(runtime)},
        ) as key,
        vfido_ui(["--name", f"udp-{key.port}"], runtime) as (_ui, url),
        Browser(chromium) as browser,
    ):
        page = browser.open_page("about:blank")
        page.send("Emulation.setScriptExecutionDisabled", {"value": True})
        page.send("Page.navigate", {"url": url})
        registering = Background(
            lambda: _register(key.port, key.peer_port, rp, b"user-dan-4", "dan")
        )

        page.wait_for("location.protocol === 'http:' && document.readyState === 'complete'")

        def shows_request() -> bool:
            try:
                page.send("Page.reload")
                page.wait_for("document.readyState === 'complete'")
                found = page.evaluate("!!document.querySelector('[data-pending-id] .allow')")
            except CdpError:  # between two documents
                return False
            return bool(found)

        wait_until(shows_request, what="the request after a reload")
        assert not page.evaluate("document.documentElement.classList.contains('js')")
        page.click("[data-pending-id] button.allow")
        assert isinstance(registering.outcome(), bytes)
        page.wait_for(
            "location.pathname.endsWith('/') && document.readyState === 'complete' && "
            "/No request is waiting/.test(document.getElementById('section-pending').innerText)"
        )
        assert len(rp.credentials) == 1


def test_finger_switch_over_http(tmp_path: Path) -> None:
    """A --fingerprint key: the dashboard chooses the finger on the simulated sensor."""
    from vfido.authenticator.bio_enrollment import Template
    from vfido.authenticator.config import Config
    from vfido.authenticator.device import Authenticator
    from vfido.control.commands import KeyParts, add_key_commands
    from vfido.keystore.sqlite_store import SqliteKeyStore

    store = SqliteKeyStore.ephemeral()
    broker = PresenceBroker(mode="manual")
    device = Authenticator(store, broker, Config(fingerprint=True))
    device.fingerprints.put([Template(b"\x01" * 8, "index", "right-index")])
    server = ControlServer(tmp_path / "run" / "vfido" / "bio.sock")
    server.register("status", lambda _args: {"name": "bio", "presence": broker.mode})
    add_key_commands(server, KeyParts(device, store, broker))
    try:
        with server, DashboardServer(KeyLink(server.path)) as dashboard:
            dashboard.start()
            _, _, page = request(dashboard, "GET", base(dashboard))
            assert '<select id="finger" name="finger">' in page
            assert '<option value="right-index">right-index (index)</option>' in page
            assert _post(dashboard, "finger", "finger=unknown&other=")[0] == 200
            assert device.sensor.finger == "unknown"
            assert _post(dashboard, "finger", "finger=auto&other=left-thumb")[0] == 200
            assert device.sensor.finger == "left-thumb"
            assert _post(dashboard, "finger", "finger=auto&other=")[0] == 200
            assert device.sensor.finger is None
    finally:
        store.close()
    # A key without the sensor offers no finger command, so no switch.
    plain = ControlServer(tmp_path / "run" / "vfido" / "plain.sock")
    other = SqliteKeyStore.ephemeral()
    try:
        add_key_commands(plain, KeyParts(Authenticator(other, broker, Config()), other, broker))
        with plain:
            assert "finger" not in KeyLink(plain.path).commands()
    finally:
        other.close()


def test_the_key_section_shows_the_presence_delay(tmp_path: Path) -> None:
    """The dashboard shows presence as `vfido status` does (one formatter): the delay while
    there is one."""
    path = tmp_path / "run" / "vfido" / "slow.sock"
    server = ControlServer(path)
    answer = {"name": "slow", "presence": "auto", "presence_timeout": 30.0, "pid": 1}
    server.register("status", lambda _args: answer)
    with server, DashboardServer(KeyLink(path)) as dashboard:
        dashboard.start()
        for delay, shown in ((0.0, "auto (timeout 30.0 s)"), (2.5, "auto (delay 2.5 s, timeout")):
            answer["presence_delay"] = delay
            _, _, fragment = request(dashboard, "GET", base(dashboard) + "section/key")
            assert f"<dt>Presence</dt><dd>{shown}" in fragment
