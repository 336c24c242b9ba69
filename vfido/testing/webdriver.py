"""`vfido webdriver`: a WebDriver intermediary that makes virtual authenticators real keys.

A test talks to ``vfido webdriver --upstream http://127.0.0.1:9515`` as it would talk to
chromedriver. Every command goes to the upstream driver unchanged (method, path, headers,
body; the answer comes back the same way), except the W3C virtual-authenticator commands
(WebAuthn Level 3 section 11), which this process serves itself with real vfido keys:

=======  ====================================================================  ==========
POST     /session/{sid}/webauthn/authenticator                                  a new key
DELETE   /session/{sid}/webauthn/authenticator/{aid}                            unplug it
POST     /session/{sid}/webauthn/authenticator/{aid}/credential                 Add Credential
GET      /session/{sid}/webauthn/authenticator/{aid}/credentials                Get Credentials
DELETE   /session/{sid}/webauthn/authenticator/{aid}/credentials/{cid}          Remove Credential
DELETE   /session/{sid}/webauthn/authenticator/{aid}/credentials                Remove All
POST     /session/{sid}/webauthn/authenticator/{aid}/uv                         Set User Verified
POST     /session/{sid}/webauthn/authenticator/{aid}/credentials/{cid}/props    Set Properties
=======  ====================================================================  ==========

Each Add Virtual Authenticator plugs in a :class:`vfido.api.VirtualKey` made from the
options (:meth:`~vfido.api.VirtualKey.from_webauthn_options`) on ``key_transport``: ``uhid``
(the default: a kernel HID device the browser finds as a USB security key) or, for tests
without a browser, ``inprocess``/``unix``. The browser is never told about the key: it
meets it as any USB key. Ending the session (``DELETE /session/{sid}``) unplugs the
session's keys. ``GET /vfido/authenticators`` (not a WebDriver command) lists the keys:
``{"value": [{"authenticatorId", "sessionId", "transport", "hidraw", "unixSocket",
"options"}]}``.

Answers are W3C-shaped: ``{"value": ...}``, errors ``{"value": {"error", "message",
"stacktrace"}}`` with the HTTP status of the error code.
"""

from __future__ import annotations

import http.client
import itertools
import json
import logging
import re
import threading
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from vfido import virtual_authenticator as va
from vfido.api import VirtualKey, VirtualKeyError
from vfido.local_http import BoundedHandler, BoundedHTTPServer, host_allowed
from vfido.transport_kinds import TOOLKIT_KINDS

log = logging.getLogger(__name__)

#: The transports of the keys it makes (``--key-transport``): the toolkit's, the kernel's first.
KEY_TRANSPORTS: Final = ("uhid", *(kind for kind in TOOLKIT_KINDS if kind != "uhid"))
#: Headers that belong to one connection, not to the message (RFC 9110 section 7.6.1).
HOP_BY_HOP: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
#: Largest request body accepted for a local command (a credential with a large blob).
MAX_LOCAL_BODY: Final = 1 << 20
#: Largest request body forwarded to the upstream driver (an uploaded file, a long script),
#: streamed through in pieces of FORWARD_CHUNK bytes.
MAX_FORWARD_BODY: Final = 256 << 20
FORWARD_CHUNK: Final = 64 << 10
UPSTREAM_TIMEOUT: Final = 300.0

_WEBAUTHN = re.compile(
    r"^(?P<prefix>.*?)/session/(?P<sid>[^/]+)/webauthn/authenticator"
    r"(?:/(?P<aid>[^/]+)(?P<rest>/.*)?)?$"
)
_SESSION = re.compile(r"^(?P<prefix>.*?)/session/(?P<sid>[^/]+)/?$")
_NEW_SESSION = re.compile(r"^(?P<prefix>.*?)/session/?$")


class WebDriverError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code

    @property
    def http_status(self) -> int:
        return {
            "invalid argument": 400,
            "invalid session id": 404,
            "unknown command": 404,
            "unknown method": 405,
        }.get(self.code, 500)


@dataclass
class Authenticator:
    """A virtual authenticator of one session: the key behind it."""

    authenticator_id: str
    session_id: str
    #: The key (it holds private keys: kept out of reprs like every secret holder).
    key: VirtualKey = field(repr=False)

    def describe(self) -> dict[str, Any]:
        return {
            "authenticatorId": self.authenticator_id,
            "sessionId": self.session_id,
            "transport": self.key.transport,
            "hidraw": self.key.hidraw_path,
            "unixSocket": str(self.key.unix_socket) if self.key.unix_socket else None,
            "options": self.key.webauthn_options_json(),
        }


class WebDriverProxy:
    """The intermediary: ``start()`` serves it on ``host:port`` (0: a free port, see
    :attr:`port`), ``stop()`` ends it and unplugs every key."""

    def __init__(
        self,
        upstream: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        key_transport: str = "uhid",
        key_arguments: dict[str, Any] | None = None,
        allowed_hosts: tuple[str, ...] = (),
    ) -> None:
        parsed = urllib.parse.urlsplit(upstream)
        if parsed.scheme != "http" or not parsed.hostname:
            raise ValueError("the upstream is an http:// URL, e.g. http://127.0.0.1:9515")
        if key_transport not in KEY_TRANSPORTS:
            raise ValueError(f"key transport must be one of {', '.join(KEY_TRANSPORTS)}")
        self.upstream_host = parsed.hostname
        self.upstream_port = parsed.port or 80
        self.upstream_base = parsed.path.rstrip("/")
        self.key_transport = key_transport
        self.key_arguments = dict(key_arguments or {})
        #: Names a client may reach the intermediary by, besides an address and localhost
        #: (``--allowed-host``; the ``--host`` name too): see ``_Handler._refusal``.
        self.allowed_hosts = frozenset(
            name.rstrip(".").lower() for name in (*allowed_hosts, host) if name
        )
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self.authenticators: dict[str, Authenticator] = {}
        #: Sessions the upstream driver has (started through here, or confirmed by it).
        self._sessions: set[str] = set()
        self._server = _Server((host, port), _Handler)
        self._server.proxy = self
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def address(self) -> str:
        """The address it listens on (``0.0.0.0`` for every interface)."""
        host = self._server.server_address[0]
        return host if isinstance(host, str) else host.decode()

    @property
    def url(self) -> str:
        return f"http://{self.address}:{self.port}"

    def start(self) -> WebDriverProxy:
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="vfido-webdriver", daemon=True
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=10)
            self._thread = None
        self._server.server_close()
        with self._lock:
            gone, self.authenticators = list(self.authenticators.values()), {}
        for authenticator in gone:
            authenticator.key.close()

    def __enter__(self) -> WebDriverProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- sessions ---------------------------------------------------------------------------

    def session_started(self, session_id: str) -> None:
        with self._lock:
            self._sessions.add(session_id)

    def check_session(self, prefix: str, session_id: str) -> None:
        """A virtual-authenticator command of a session the upstream driver does not have is
        ``invalid session id`` (404), as chromedriver answers it: a key plugged in for no
        session would stay until the intermediary stops. A session not started through here
        is asked about once: ``GET .../timeouts``, which touches no page (Get Current URL
        would handle an open alert and wait for a navigation). Raises WebDriverError."""
        with self._lock:
            if session_id in self._sessions:
                return
        connection = http.client.HTTPConnection(
            self.upstream_host, self.upstream_port, timeout=UPSTREAM_TIMEOUT
        )
        try:
            connection.request("GET", f"{self.upstream_base}{prefix}/session/{session_id}/timeouts")
            data = connection.getresponse().read()
        except OSError as exc:
            raise WebDriverError("unknown error", f"upstream driver: {exc}") from None
        finally:
            connection.close()
        try:
            value = json.loads(data).get("value")
        except (ValueError, AttributeError):
            value = None
        if isinstance(value, dict) and value.get("error") == "invalid session id":
            raise WebDriverError("invalid session id", "the upstream driver has no such session")
        self.session_started(session_id)

    # -- the local commands ----------------------------------------------------------------

    def add_authenticator(self, session_id: str, params: Any) -> str:
        options = _options(params)
        try:
            key = VirtualKey.from_webauthn_options(
                options, transport=self.key_transport, **self.key_arguments
            )
            key.start()
        except VirtualKeyError as exc:
            raise WebDriverError("unsupported operation", str(exc)) from None
        authenticator_id = f"vfido-{next(self._ids)}"
        with self._lock:
            self.authenticators[authenticator_id] = Authenticator(authenticator_id, session_id, key)
        log.info(
            "webdriver: session %s: authenticator %s (%s) on %s",
            session_id[:40],
            authenticator_id,
            options.protocol,
            key.hidraw_path or key.unix_socket or self.key_transport,
        )
        return authenticator_id

    def remove_authenticator(self, session_id: str, authenticator_id: str) -> None:
        authenticator = self.authenticator(session_id, authenticator_id)
        with self._lock:
            self.authenticators.pop(authenticator_id, None)
        authenticator.key.close()
        log.info("webdriver: authenticator %s removed", authenticator_id)

    def authenticator(self, session_id: str, authenticator_id: str) -> Authenticator:
        with self._lock:
            found = self.authenticators.get(authenticator_id)
        if found is None or found.session_id != session_id:
            raise WebDriverError("invalid argument", "no such virtual authenticator")
        return found

    def describe(self) -> list[dict[str, Any]]:
        """Every key (``GET /vfido/authenticators``)."""
        with self._lock:
            authenticators = list(self.authenticators.values())
        return [a.describe() for a in authenticators]

    def session_ended(self, session_id: str) -> None:
        with self._lock:
            self._sessions.discard(session_id)
            gone = [a for a in self.authenticators.values() if a.session_id == session_id]
            for authenticator in gone:
                del self.authenticators[authenticator.authenticator_id]
        for authenticator in gone:
            authenticator.key.close()

    def serve_local(self, method: str, match: re.Match[str], body: Any) -> Any:
        """The answer ``value`` of a virtual-authenticator command. Raises WebDriverError."""
        sid, aid, rest = match["sid"], match["aid"], match["rest"] or ""
        self.check_session(match["prefix"], sid)
        if aid is None:
            if method != "POST":
                raise WebDriverError("unknown method", f"{method} on authenticator")
            return self.add_authenticator(sid, body)
        if rest == "":
            if method != "DELETE":
                raise WebDriverError("unknown method", f"{method} on an authenticator")
            self.remove_authenticator(sid, aid)
            return None
        key = self.authenticator(sid, aid).key
        parts = rest.strip("/").split("/")

        def add_credential() -> None:
            key.webauthn_add_credential(_object(body))

        routes: dict[tuple[str, ...], Callable[[], Any]] = {
            ("POST", "credential"): add_credential,
            ("GET", "credentials"): key.webauthn_get_credentials,
            ("DELETE", "credentials"): key.webauthn_remove_all_credentials,
            ("POST", "uv"): lambda: key.webauthn_set_user_verified(
                _object(body).get("isUserVerified")  # type: ignore[arg-type]
            ),
        }
        if len(parts) == 1 and (method, parts[0]) in routes:
            return routes[(method, parts[0])]()
        if len(parts) == 1 and parts[0] in {path for _, path in routes}:
            raise WebDriverError("unknown method", f"{method} on {parts[0]}")
        if len(parts) == 2 and parts[0] == "credentials":
            if method != "DELETE":
                raise WebDriverError("unknown method", f"{method} on a credential")
            key.webauthn_remove_credential(_credential_id(parts[1]))
            return None
        if len(parts) == 3 and parts[0] == "credentials" and parts[2] == "props":
            if method != "POST":
                raise WebDriverError("unknown method", f"{method} on credential properties")
            params = _object(body)
            key.webauthn_set_credential_properties(
                _credential_id(parts[1]),
                backup_eligibility=params.get("backupEligibility"),
                backup_state=params.get("backupState"),
            )
            return None
        raise WebDriverError("unknown command", f"no virtual-authenticator command {rest[:60]}")


def _options(params: Any) -> va.AuthenticatorOptions:
    return va.AuthenticatorOptions.from_json(_object(params))


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise WebDriverError("invalid argument", "the parameters must be a JSON object")
    return body


def _credential_id(text: str) -> bytes:
    return va.b64url_decode("credentialId", urllib.parse.unquote(text))


class _Server(BoundedHTTPServer):
    proxy: WebDriverProxy


class _Handler(BoundedHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("webdriver: " + format, *args)

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_PATCH(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle()

    def do_OPTIONS(self) -> None:
        self._handle()

    def _body_size(self, limit: int) -> int:
        """The request body's length (Content-Length), refused over ``limit`` before a byte
        of it is read."""
        length = self.headers.get("Content-Length")
        if length is None:
            return 0
        try:
            size = int(length)
        except ValueError:
            size = -1
        if size < 0:
            raise WebDriverError("invalid argument", "bad Content-Length")
        if size > limit:
            raise WebDriverError("invalid argument", "the request body is too large")
        return size

    def _refusal(self) -> str | None:
        """Why this request is refused, if it is. The keys' private keys and the browser
        are behind this port, so only WebDriver clients may talk to it: a web page in any
        browser of the user's (a cross-site request, or DNS rebinding) sends an Origin or
        a Host naming its own site; a WebDriver client sends neither."""
        if not host_allowed(self.headers.get("Host", ""), self.server.proxy.allowed_hosts):
            return (
                "the Host header must name this intermediary by address, localhost or a name "
                "given with --allowed-host"
            )
        fetched_by_a_page = self.headers.get("Sec-Fetch-Site", "none") != "none"
        if self.headers.get("Origin") is not None or fetched_by_a_page:
            return "requests from web pages are refused (a WebDriver client sends no Origin)"
        return None

    def _handle(self) -> None:
        proxy = self.server.proxy
        path = urllib.parse.urlsplit(self.path).path
        match = _WEBAUTHN.match(path)
        refusal = self._refusal()
        try:
            if refusal is not None:
                log.warning("webdriver: refused a %s request: %s", self.command, refusal)
                raise WebDriverError("unknown error", refusal)
            size = self._body_size(MAX_LOCAL_BODY if match is not None else MAX_FORWARD_BODY)
        except WebDriverError as exc:
            self._answer_error(exc, 403 if refusal is not None else None)
            self.close_connection = True
            return
        if match is not None:
            self._local(match, self.rfile.read(size))
            return
        if path == "/vfido/authenticators" and self.command == "GET":
            self.rfile.read(size)
            self._answer_json(200, {"value": proxy.describe()})
            return
        session = _SESSION.match(path)
        if session is not None and self.command == "DELETE":
            proxy.session_ended(session["sid"])  # before the test hears the session ended
        self._forward(size)

    def _local(self, match: re.Match[str], raw: bytes) -> None:
        try:
            body: Any = None
            if raw.strip():
                try:
                    body = json.loads(raw)
                except ValueError:
                    raise WebDriverError("invalid argument", "the body is not JSON") from None
                except RecursionError:  # [[[[...]]]] deeper than the interpreter's stack
                    raise WebDriverError("invalid argument", "the body nests too deeply") from None
            value = self.server.proxy.serve_local(self.command, match, body)
        except va.WebAuthnError as exc:
            self._answer_error(WebDriverError(exc.code, str(exc)))
        except WebDriverError as exc:
            self._answer_error(exc)
        except Exception as exc:  # one line for the test, never a hung request
            log.error("webdriver: %s %s failed: %s", self.command, self.path, exc)
            self._answer_error(WebDriverError("unknown error", type(exc).__name__))
        else:
            self._answer_json(200, {"value": value})

    def _note_new_session(self, data: bytes) -> None:
        """A New Session answered through here: its ID is a session the driver has."""
        if _NEW_SESSION.match(urllib.parse.urlsplit(self.path).path) is None:
            return
        try:
            session_id = json.loads(data)["value"]["sessionId"]
        except (ValueError, KeyError, TypeError):
            return
        if isinstance(session_id, str) and session_id:
            self.server.proxy.session_started(session_id)

    def _answer_error(self, exc: WebDriverError, status: int | None = None) -> None:
        value = {"error": exc.code, "message": str(exc), "stacktrace": ""}
        self._answer_json(status or exc.http_status, {"value": value})

    def _answer_json(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _forward(self, size: int) -> None:
        """The request to the upstream driver, its ``size``-byte body streamed through (not
        held in memory: 32 connections of large uploads would be gigabytes), and the
        answer back."""
        proxy = self.server.proxy
        # Host names the upstream (http.client must not add a second one: chromedriver
        # refuses a request with two).
        headers = [
            (k, v) for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP | {"host"}
        ]
        connection = http.client.HTTPConnection(
            proxy.upstream_host, proxy.upstream_port, timeout=UPSTREAM_TIMEOUT
        )
        try:
            connection.putrequest(
                self.command,
                proxy.upstream_base + self.path,
                skip_host=True,
                skip_accept_encoding=True,
            )
            connection.putheader("Host", f"{proxy.upstream_host}:{proxy.upstream_port}")
            for name, value in headers:
                if name.lower() != "content-length":
                    connection.putheader(name, value)
            if size or "Content-Length" in self.headers:
                connection.putheader("Content-Length", str(size))
            connection.endheaders()
            remaining = size
            while remaining:
                chunk = self.rfile.read(min(remaining, FORWARD_CHUNK))
                if not chunk:  # the client went away mid-body
                    raise OSError("the request body ended early")
                connection.send(chunk)
                remaining -= len(chunk)
            response = connection.getresponse()
            data = response.read()
        except OSError as exc:
            self._answer_error(WebDriverError("unknown error", f"upstream driver: {exc}"))
            return
        finally:
            connection.close()
        if self.command == "POST" and response.status == 200:
            self._note_new_session(data)
        self.send_response_only(response.status, response.reason)
        for name, value in response.getheaders():
            if name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
