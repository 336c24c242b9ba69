"""`vfido webdriver` (vfido.testing.webdriver) without a browser: a fake upstream driver
records what reaches it. Every other command is forwarded byte for byte; the virtual-authenticator
commands are served here by real vfido keys (in-process or over a Unix socket on this host,
UHID in the guest), which python-fido2 drives and fido2.server verifies."""

from __future__ import annotations

import base64
import http.client
import json
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fido2 import cose
from fido2.client import DefaultClientDataCollector, Fido2Client, UserInteraction
from fido2.server import Fido2Server
from fido2.webauthn import (
    AttestedCredentialData,
    PublicKeyCredentialRpEntity,
    PublicKeyCredentialUserEntity,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from tests.rp import ORIGIN, RP_ID
from tests.service_helpers import env as service_env
from vfido.testing.webdriver import WebDriverProxy
from vfido.transports.unix import open_unix_device

SESSION = "f00dfeed"


@dataclass
class Recorded:
    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes


@dataclass
class FakeUpstream:
    """A tiny HTTP server standing in for chromedriver: records each request and answers
    from ``answers`` (path -> (status, headers, body)), else 200 ``{"value": null}``."""

    server: ThreadingHTTPServer
    requests: list[Recorded] = field(default_factory=list)
    answers: dict[str, tuple[int, list[tuple[str, str]], bytes]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"


@contextmanager
def fake_upstream() -> Iterator[FakeUpstream]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _any(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            upstream.requests.append(Recorded(self.command, self.path, self.headers.items(), body))
            default = (200, [("Content-Type", "application/json")], b'{"value": null}')
            if self.command == "POST" and self.path == "/session":
                new_session = {
                    "value": {"sessionId": SESSION, "capabilities": {"browserName": "chrome"}}
                }
                default = (
                    200,
                    [("Content-Type", "application/json")],
                    json.dumps(new_session).encode(),
                )
            status, headers, data = upstream.answers.get(self.path, default)
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_DELETE = do_PUT = _any

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    upstream = FakeUpstream(server)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield upstream
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def rig(key_transport: str = "inprocess") -> Iterator[tuple[FakeUpstream, WebDriverProxy]]:
    with (
        fake_upstream() as upstream,
        WebDriverProxy(upstream.url, key_transport=key_transport) as proxy,
    ):
        # A session started through the intermediary, as a WebDriver client does, and one
        # the upstream driver confirmed: keys are only made for sessions the driver has.
        assert request(proxy.url, "POST", "/session", b"{}")[0] == 200
        proxy.session_started("other")
        upstream.requests.clear()
        yield upstream, proxy


def request(
    proxy_url: str,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, str, dict[str, str], bytes]:
    port = int(proxy_url.rsplit(":", 1)[1])
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.reason, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def command(proxy: WebDriverProxy, method: str, path: str, params: Any = None) -> Any:
    """A W3C command: (status, value)."""
    body = json.dumps(params).encode() if params is not None else None
    status, _, headers, data = request(
        proxy.url, method, path, body, {"Content-Type": "application/json"}
    )
    assert headers["Content-Type"].startswith("application/json")
    return status, json.loads(data)["value"]


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def pkcs8(key: Any) -> bytes:
    der: bytes = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return der


# --- forwarding ----------------------------------------------------------------------------


def test_every_other_command_is_forwarded_byte_for_byte() -> None:
    with rig() as (upstream, proxy):
        odd_body = b'{"url": "https://example.com/\xc3\xa9"}\x00\xff'
        upstream.answers["/session/abc/url?x=1&y=%2F"] = (
            418,
            [("Content-Type", "application/x-odd"), ("X-Upstream", "yes; q=1")],
            b"\x00\x01binary answer\xff",
        )
        status, _reason, headers, data = request(
            proxy.url,
            "POST",
            "/session/abc/url?x=1&y=%2F",
            odd_body,
            {"Content-Type": "application/json", "X-Test": "kept", "Connection": "keep-alive"},
        )
        (seen,) = upstream.requests
        assert (seen.method, seen.path, seen.body) == (
            "POST",
            "/session/abc/url?x=1&y=%2F",
            odd_body,
        )
        # One Host header, naming the upstream (chromedriver refuses two).
        hosts = [v for k, v in seen.headers if k.lower() == "host"]
        assert hosts == [upstream.url.removeprefix("http://")]
        sent = dict(seen.headers)
        assert sent["X-Test"] == "kept" and sent["Content-Type"] == "application/json"
        assert sent["Content-Length"] == str(len(odd_body))
        assert "Connection" not in sent or sent["Connection"] != "keep-alive"  # hop-by-hop
        assert (status, data) == (418, b"\x00\x01binary answer\xff")
        assert (
            headers["X-Upstream"] == "yes; q=1" and headers["Content-Type"] == "application/x-odd"
        )
        # GET and DELETE without bodies, and an error status, come back as they are.
        upstream.answers["/session/abc/element/7"] = (
            404,
            [("Content-Type", "application/json")],
            b'{"value": {"error": "no such element", "message": "x", "stacktrace": ""}}',
        )
        status, _, _, data = request(proxy.url, "GET", "/session/abc/element/7")
        assert status == 404 and b"no such element" in data
        assert upstream.requests[-1].method == "GET" and upstream.requests[-1].body == b""
        status, _, _, data = request(proxy.url, "DELETE", "/session/abc/window")
        assert (status, data) == (200, b'{"value": null}')
        assert [r.method for r in upstream.requests] == ["POST", "GET", "DELETE"]


def test_an_upstream_that_does_not_answer_is_a_webdriver_error() -> None:
    with fake_upstream() as upstream:
        url = upstream.url
    with WebDriverProxy(url, key_transport="inprocess") as proxy:
        status, value = command(proxy, "GET", "/status")
        assert status == 500 and value["error"] == "unknown error"
        assert "upstream driver" in value["message"]


# --- the virtual-authenticator commands ----------------------------------------------------


def test_virtual_authenticator_commands_are_served_by_a_real_key() -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    public = cose.ES256.from_cryptography_key(private.public_key())
    base = f"/session/{SESSION}/webauthn/authenticator"
    with rig() as (upstream, proxy):
        status, aid = command(
            proxy,
            "POST",
            base,
            {
                "protocol": "ctap2",
                "transport": "usb",
                "hasResidentKey": True,
                "hasUserVerification": True,
                "isUserConsenting": True,
                "isUserVerified": True,
            },
        )
        assert status == 200 and isinstance(aid, str)
        credential = {
            "authenticatorId": aid,  # Selenium sends it in the body too
            "credentialId": base64.urlsafe_b64encode(b"\x01\x02\x03\x04").decode(),
            "isResidentCredential": False,
            "rpId": RP_ID,
            "privateKey": base64.urlsafe_b64encode(pkcs8(private)).decode(),
            "signCount": 0,
        }
        assert command(proxy, "POST", f"{base}/{aid}/credential", credential) == (200, None)
        # The key signs with the given private key; the RP verifies with its public key.
        key = proxy.authenticators[aid].key
        stored = [AttestedCredentialData.create(bytes(16), b"\x01\x02\x03\x04", public)]
        server = Fido2Server(PublicKeyCredentialRpEntity(name="Example", id=RP_ID))
        options, state = server.authenticate_begin(stored)
        response = key.client(ORIGIN).get_assertion(options.public_key).get_response(0)
        server.authenticate_complete(state, stored, response)
        status, listed = command(proxy, "GET", f"{base}/{aid}/credentials")
        assert status == 200 and len(listed) == 1
        assert listed[0]["credentialId"] == "AQIDBA" and listed[0]["signCount"] == 1
        assert command(proxy, "POST", f"{base}/{aid}/uv", {"isUserVerified": False}) == (200, None)
        assert key.presence.mode == "deny-uv"
        props = {"backupEligibility": True, "backupState": True}
        assert command(proxy, "POST", f"{base}/{aid}/credentials/AQIDBA/props", props) == (
            200,
            None,
        )
        assert command(proxy, "GET", f"{base}/{aid}/credentials")[1][0]["backupState"] is True
        assert command(proxy, "DELETE", f"{base}/{aid}/credentials/AQIDBA") == (200, None)
        assert command(proxy, "GET", f"{base}/{aid}/credentials") == (200, [])
        assert command(proxy, "DELETE", f"{base}/{aid}/credentials") == (200, None)
        assert command(proxy, "DELETE", f"{base}/{aid}") == (200, None)
        assert proxy.authenticators == {}
        assert upstream.requests == []  # none of this reached the upstream driver


def test_webdriver_errors_have_the_w3c_shape() -> None:
    base = f"/session/{SESSION}/webauthn/authenticator"
    with rig() as (upstream, proxy):
        status, value = command(proxy, "POST", base, {"transport": "usb"})
        assert status == 400 and value["error"] == "invalid argument"
        assert set(value) == {"error", "message", "stacktrace"}
        status, value = command(
            proxy, "POST", base, {"protocol": "ctap2", "transport": "usb", "extensions": ["x"]}
        )
        assert status == 500 and value["error"] == "unsupported operation"
        # Values before extensions (W3C WebAuthn L3 11.3): a bad value is invalid argument
        # even beside an unknown extension (it was unsupported operation: a session 16 review).
        bad = {
            "protocol": "ctap2",
            "transport": "usb",
            "hasResidentKey": "yes",
            "extensions": ["x"],
        }
        status, value = command(proxy, "POST", base, bad)
        assert status == 400 and value["error"] == "invalid argument"
        status, value = command(proxy, "GET", f"{base}/nope/credentials")
        assert status == 400 and value["error"] == "invalid argument"
        _, aid = command(proxy, "POST", base, {"protocol": "ctap2_1", "transport": "internal"})
        # Another session does not see this session's authenticator.
        status, value = command(
            proxy, "GET", f"/session/other/webauthn/authenticator/{aid}/credentials"
        )
        assert status == 400 and value["error"] == "invalid argument"
        status, value = command(proxy, "GET", f"{base}/{aid}/frobnicate")
        assert status == 404 and value["error"] == "unknown command"
        # A command's path with another method is unknown method, 405 (it was 404).
        for method, path in (("GET", "credential"), ("POST", "credentials"), ("GET", "uv")):
            status, value = command(proxy, method, f"{base}/{aid}/{path}")
            assert (status, value["error"]) == (405, "unknown method"), (method, path)
        status, value = command(proxy, "GET", f"{base}/{aid}/credentials/AAAA")
        assert (status, value["error"]) == (405, "unknown method")
        status, _, _, data = request(proxy.url, "POST", f"{base}/{aid}/credential", b"{not json")
        assert status == 400 and json.loads(data)["value"]["error"] == "invalid argument"
        status, value = command(proxy, "DELETE", f"{base}/{aid}/credentials/AAAA")
        assert status == 400 and "no credential" in value["message"]
        # hasResidentKey is false by default: no resident credentials (section 11.7).
        resident = {
            "credentialId": "AQ",
            "isResidentCredential": True,
            "rpId": RP_ID,
            "privateKey": b64(pkcs8(ec.generate_private_key(ec.SECP256R1()))),
            "userHandle": "dQ",
        }
        status, value = command(proxy, "POST", f"{base}/{aid}/credential", resident)
        assert status == 400 and value["error"] == "invalid argument"
        assert upstream.requests == []


def test_ending_the_session_unplugs_its_keys() -> None:
    with rig() as (upstream, proxy):
        _, first = command(
            proxy,
            "POST",
            f"/session/{SESSION}/webauthn/authenticator",
            {"protocol": "ctap2", "transport": "usb"},
        )
        _, other = command(
            proxy,
            "POST",
            "/session/other/webauthn/authenticator",
            {"protocol": "ctap2", "transport": "usb"},
        )
        key = proxy.authenticators[first].key
        status, _, _, _ = request(proxy.url, "DELETE", f"/session/{SESSION}")
        assert status == 200 and upstream.requests[-1].path == f"/session/{SESSION}"
        assert list(proxy.authenticators) == [other]
        with pytest.raises(Exception, match="not running"):
            key.webauthn_get_credentials()


def test_a_session_the_driver_does_not_have_is_invalid_session_id() -> None:
    """W3C WebDriver: a command of a session that does not exist is "invalid session id"
    (404), as chromedriver answers it. A key plugged in for a made-up session stayed until
    the intermediary stopped."""
    unknown = {"error": "invalid session id", "message": "invalid session id"}
    options = {"protocol": "ctap2", "transport": "usb"}
    with rig() as (upstream, proxy):
        upstream.answers["/session/deadbeef/timeouts"] = (
            404,
            [("Content-Type", "application/json")],
            json.dumps({"value": unknown}).encode(),
        )
        status, value = command(proxy, "POST", "/session/deadbeef/webauthn/authenticator", options)
        assert (status, value["error"]) == (404, "invalid session id")
        assert proxy.authenticators == {}
        assert [(r.method, r.path) for r in upstream.requests] == [
            ("GET", "/session/deadbeef/timeouts")
        ]
        # A session the driver confirms is asked about once.
        upstream.requests.clear()
        for _ in range(2):
            status, _ = command(proxy, "POST", "/session/confirmed/webauthn/authenticator", options)
            assert status == 200
        assert [r.path for r in upstream.requests] == ["/session/confirmed/timeouts"]
        # An ended session is unknown again.
        request(proxy.url, "DELETE", f"/session/{SESSION}")
        upstream.answers[f"/session/{SESSION}/timeouts"] = upstream.answers[
            "/session/deadbeef/timeouts"
        ]
        status, value = command(
            proxy, "POST", f"/session/{SESSION}/webauthn/authenticator", options
        )
        assert (status, value["error"]) == (404, "invalid session id")


# --- Selenium's own client -----------------------------------------------------------------


def test_selenium_virtual_authenticator_calls_reach_the_key() -> None:
    """Selenium's driver methods, unmodified, against the intermediary (the browser side is
    the fake upstream here; the guest test has Chromium)."""
    # selenium is a test extra: the run on the lowest declared runtime dependencies lacks it.
    pytest.importorskip("selenium", reason="selenium (a test extra) is not installed")
    from selenium import webdriver
    from selenium.webdriver.common.virtual_authenticator import (
        Credential,
        Protocol,
        Transport,
        VirtualAuthenticatorOptions,
    )

    private = ec.generate_private_key(ec.SECP256R1())
    with rig() as (upstream, proxy):
        driver = webdriver.Remote(command_executor=proxy.url, options=webdriver.ChromeOptions())
        try:
            options = VirtualAuthenticatorOptions()
            options.protocol = Protocol.CTAP2
            options.transport = Transport.USB
            options.has_resident_key = True
            options.has_user_verification = True
            options.is_user_verified = True
            driver.add_virtual_authenticator(options)
            aid = driver.virtual_authenticator_id
            assert aid in proxy.authenticators
            driver.add_credential(
                Credential.create_resident_credential(
                    bytearray(b"\x05\x06\x07\x08"), RP_ID, bytearray(b"alice"), pkcs8(private), 3
                )
            )
            (cred,) = driver.get_credentials()
            assert cred.id == base64.urlsafe_b64encode(b"\x05\x06\x07\x08").decode()
            assert cred.user_handle == base64.urlsafe_b64encode(b"alice").decode()
            assert cred.sign_count == 3 and cred.is_resident_credential
            key = proxy.authenticators[aid].key
            assert [c.user_id for c in key.credentials()] == [b"alice"]
            driver.set_user_verified(False)
            assert key.presence.mode == "deny-uv"
            driver.remove_credential(bytearray(b"\x05\x06\x07\x08"))
            assert driver.get_credentials() == []
            driver.remove_all_credentials()
            driver.remove_virtual_authenticator()
            assert proxy.authenticators == {}
        finally:
            driver.quit()
        paths = [(r.method, r.path) for r in upstream.requests]
        assert paths == [("POST", "/session"), ("DELETE", f"/session/{SESSION}")]


# --- `vfido webdriver` ---------------------------------------------------------------------


def _vfido_webdriver(upstream: str, *args: str) -> subprocess.Popen[str]:
    """`vfido webdriver --upstream UPSTREAM --port 0 ARGS...`, its stderr a pipe to read. Its
    SIGINT is the default one even when pytest runs as a background job (``&``, nohup),
    which ignores SIGINT and passes that on: the tests stop it with Ctrl-C's signal."""
    command = ["webdriver", "--upstream", upstream, "--port", "0", *args]
    return subprocess.Popen(
        [sys.executable, "-c", _WITH_CTRL_C, *command],
        env=service_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


#: `python -m vfido ARGS` with Python's own SIGINT handler (KeyboardInterrupt) in place, even
#: if SIGINT was ignored when it started (no preexec_fn: unsafe in a process with threads).
_WITH_CTRL_C = (
    "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "sys.argv[0] = 'vfido'; runpy.run_module('vfido', run_name='__main__', alter_sys=True)"
)


def _interrupt(process: subprocess.Popen[str]) -> None:
    """Ctrl-C to ``process`` and wait for it; killed if it does not end (never left behind)."""
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_vfido_webdriver_command_serves_keys_the_browser_side_can_use(stop: int) -> None:
    """The real command, keys on Unix sockets (UHID in the guest): a registration through
    the key the intermediary plugged in. Stopped by Ctrl-C or SIGTERM, it closes the keys
    and removes their sockets' directories (SIGTERM left them: a session 15 newcomer)."""
    with fake_upstream() as upstream:
        process = _vfido_webdriver(upstream.url, "--key-transport", "unix")
        try:
            assert process.stderr is not None
            line = process.stderr.readline()
            match = re.search(r"listening on (http://127\.0\.0\.1:\d+)", line)
            assert match, line
            url = match.group(1)

            class Proxy:
                pass

            proxy: Any = Proxy()
            proxy.url = url
            status, aid = command(
                proxy,
                "POST",
                f"/session/{SESSION}/webauthn/authenticator",
                {"protocol": "ctap2_1", "transport": "usb", "hasResidentKey": True},
            )
            assert status == 200
            _, listed = command(proxy, "GET", "/vfido/authenticators")
            (described,) = listed
            assert described["authenticatorId"] == aid and described["transport"] == "unix"
            device = open_unix_device(described["unixSocket"])
            try:
                client = Fido2Client(device, DefaultClientDataCollector(ORIGIN), UserInteraction())
                server = Fido2Server(PublicKeyCredentialRpEntity(name="Example", id=RP_ID))
                options, state = server.register_begin(
                    PublicKeyCredentialUserEntity(id=b"erin", name="erin"),
                    resident_key_requirement=ResidentKeyRequirement.REQUIRED,
                    user_verification=UserVerificationRequirement.DISCOURAGED,
                )
                server.register_complete(state, client.make_credential(options.public_key))
            finally:
                device.close()
            _, creds = command(
                proxy, "GET", f"/session/{SESSION}/webauthn/authenticator/{aid}/credentials"
            )
            assert [c["userHandle"] for c in creds] == [b64(b"erin")]
            # Only the check that the driver has this session reached it, once.
            assert [r.path for r in upstream.requests] == [f"/session/{SESSION}/timeouts"]
            # A body nested deeper than the interpreter's stack: invalid argument, not a 500.
            deep = b"[" * 30_000 + b"]" * 30_000
            status, _, _, data = request(
                url, "POST", f"/session/{SESSION}/webauthn/authenticator", deep, {}
            )
            assert status == 400 and json.loads(data)["value"]["error"] == "invalid argument"
        finally:
            process.send_signal(stop)
            process.wait(timeout=20)
    assert process.returncode == 0
    assert not Path(described["unixSocket"]).parent.exists()


def test_vfido_webdriver_says_at_once_when_no_key_can_be_plugged_in() -> None:
    """Keys over UHID (the default) on a machine without it: said when it starts, not only
    at each Add Virtual Authenticator (a session 15 newcomer's trial)."""
    from vfido.transports.uhid import uhid_unavailable

    process = _vfido_webdriver("http://127.0.0.1:9")
    try:
        assert process.stderr is not None
        assert "listening on" in process.stderr.readline()
        # The line after it, read with a deadline (a missing warning must fail, not hang).
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.append(process.stderr.readline()))
        reader.daemon = True
        reader.start()
        reader.join(10)
        if uhid_unavailable() is not None:
            assert lines and lines[0].startswith(
                "vfido webdriver: warning: no key can be plugged in: "
            ), lines
            assert "--key-transport unix" in lines[0]
        else:  # nothing to warn of: nothing said
            assert not lines or "warning" not in lines[0], lines
    finally:
        _interrupt(process)
    assert process.returncode == 0


@pytest.mark.parametrize(("host", "warned"), [("0.0.0.0", True), ("127.0.0.1", False)])
def test_vfido_webdriver_warns_when_other_machines_can_reach_it(host: str, warned: bool) -> None:
    """Whoever reaches the port reads the keys' private keys and drives the browser, and
    its Host check takes any address: --host 0.0.0.0 was accepted without a word (a
    security review). Now said when it starts; the default (loopback) says nothing."""
    process = _vfido_webdriver("http://127.0.0.1:9", "--host", host, "--key-transport", "unix")
    try:
        assert process.stderr is not None
        assert f"listening on http://{host}:" in process.stderr.readline()
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.append(process.stderr.readline()))
        reader.daemon = True
        reader.start()
        reader.join(10 if warned else 3)
        if warned:
            assert lines and lines[0].startswith(
                "vfido webdriver: warning: listening on 0.0.0.0, which other machines can "
                "reach: whoever does can read the keys' private keys"
            ), lines
        else:
            assert not lines or "warning" not in lines[0], lines
    finally:
        _interrupt(process)
    assert process.returncode == 0


def test_vfido_webdriver_bad_arguments_are_one_line() -> None:
    for argv, needle in (
        (["--upstream", "ftp://x"], "http://"),
        (["--upstream", "http://127.0.0.1:1", "--port", "99999"], "0-65535"),
    ):
        result = subprocess.run(
            [sys.executable, "-m", "vfido", "webdriver", *argv],
            env=service_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 2 and needle in result.stderr
        assert "Traceback" not in result.stderr


# --- who may talk to it --------------------------------------------------------------------


def test_web_pages_and_rebound_names_are_refused() -> None:
    """The keys' private keys (Get Credentials) and the browser are behind this port. A web
    page in the user's browser reached it: a cross-site POST (no preflight for text/plain)
    plugged in keys, and a name re-pointed at 127.0.0.1 (DNS rebinding) read the
    credentials back (found by a security review). Only WebDriver clients get through."""
    with rig() as (upstream, proxy):
        new_key = json.dumps({"protocol": "ctap2", "transport": "usb"}).encode()
        path = f"/session/{SESSION}/webauthn/authenticator"
        port = proxy.port
        for headers in (
            {"Host": f"attacker.example:{port}"},  # DNS rebinding
            {"Host": "attacker.example"},
            {"Host": f"127.0.0.1:{port}", "Origin": "http://evil.example"},
            {"Host": f"127.0.0.1:{port}", "Sec-Fetch-Site": "cross-site"},
        ):
            for method, target, body in (
                ("POST", path, new_key),
                ("GET", "/vfido/authenticators", None),
                ("POST", "/session/abc/url", b"{}"),  # forwarded ones too
            ):
                status, _, _, data = request(proxy.url, method, target, body, headers)
                assert status == 403, (headers, target)
                assert "refused" in data.decode() or "Host header" in data.decode()
        assert proxy.describe() == [] and upstream.requests == []
        # A WebDriver client: an address or localhost (any case, a trailing dot, any port: a
        # port forward changes it), no Origin.
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", "LOCALHOST.:5555", "[::1]:1"):
            status, _, _, _ = request(
                proxy.url, "GET", "/vfido/authenticators", None, {"Host": host}
            )
            assert status == 200, host
    # A name the user allows (a docker-compose service, the machine's name).
    with (
        fake_upstream() as upstream,
        WebDriverProxy(
            upstream.url, key_transport="inprocess", allowed_hosts=("Selenium-Hub",)
        ) as proxy,
    ):
        for host, expected in (("selenium-hub:4444", 200), ("other-hub:4444", 403)):
            status, _, _, _ = request(
                proxy.url, "GET", "/vfido/authenticators", None, {"Host": host}
            )
            assert status == expected, host


def test_a_body_over_the_limit_is_refused_before_it_is_read() -> None:
    with rig() as (_, proxy):
        connection = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
        try:
            connection.putrequest("POST", "/session/abc/url")
            connection.putheader("Content-Length", str(1 << 40))  # never sent
            connection.endheaders()
            response = connection.getresponse()
            assert response.status == 400 and b"too large" in response.read()
        finally:
            connection.close()
