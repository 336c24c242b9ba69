"""The dashboard's HTTP server: the token-guarded pages, assets, event stream and form
actions, and :func:`serve` (what `vfido ui` runs)."""

from __future__ import annotations

import contextlib
import hmac
import json
import os
import re
import secrets
import signal
import tempfile
import threading
import urllib.parse
import webbrowser
from collections.abc import Callable, Mapping
from http import HTTPStatus
from importlib import resources
from pathlib import Path
from typing import Any

from vfido.control import ControlError
from vfido.dashboard.common import (
    ASSETS,
    HOST,
    KEEPALIVE,
    MAX_BODY,
    SECTIONS,
    SECURITY_HEADERS,
    TOKEN_BYTES,
    UiError,
    log,
)
from vfido.dashboard.hub import Hub
from vfido.dashboard.keys import public_key_pem
from vfido.dashboard.link import KeyLink
from vfido.dashboard.render import Renderer, _attr_id, _first, esc
from vfido.local_http import BoundedHandler, BoundedHTTPServer


def _asset(name: str) -> bytes:
    return (resources.files("vfido") / "ui_assets" / name).read_bytes()


class DashboardServer(BoundedHTTPServer):
    """The dashboard's HTTP server, on 127.0.0.1 only."""

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


class DashboardHandler(BoundedHandler):
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
            if open_browser and has_display():
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


def has_display() -> bool:
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
