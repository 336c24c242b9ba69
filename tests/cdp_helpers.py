"""A small Chrome DevTools Protocol client over ``--remote-debugging-pipe`` (stdlib only).

Chromium reads commands on its fd 3 and writes answers and events on its fd 4: JSON
messages, each ended by a NUL byte. No websocket, no third-party package. The browser runs
headless with a fresh profile and no network features, so it works offline.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import itertools
import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-dev-shm-usage",
    "--window-size=1280,1000",
)


class CdpError(Exception):
    """A protocol error or a browser that went away."""


def find_chromium() -> str | None:
    override = os.environ.get("VFIDO_CHROMIUM")
    if override:
        return override if os.access(override, os.X_OK) else None
    for name in CHROMIUM_CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


class Browser:
    """One headless Chromium and its DevTools pipe. Use :func:`launch`."""

    def __init__(self, process: subprocess.Popen[bytes], to_browser: int, from_browser: int):
        self.process = process
        self._out = to_browser
        self._in = from_browser
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._waiting: dict[int, queue.Queue[dict[str, Any]]] = {}
        self._events: queue.Queue[dict[str, Any]] = queue.Queue()
        self._closed = threading.Event()
        #: The messages of the dialogs the page opened (each accepted).
        self.dialogs: list[str] = []
        self._reader = threading.Thread(target=self._read_loop, name="cdp-reader", daemon=True)
        self._reader.start()

    # -- the pipe -----------------------------------------------------------------------

    def _read_loop(self) -> None:
        buffer = b""
        try:
            while True:
                chunk = os.read(self._in, 65536)
                if not chunk:
                    break
                buffer += chunk
                while b"\0" in buffer:
                    raw, buffer = buffer.split(b"\0", 1)
                    message = json.loads(raw)
                    message_id = message.get("id")
                    with self._lock:
                        waiter = self._waiting.pop(message_id, None)
                    if waiter is not None:
                        waiter.put(message)
                    elif message.get("method") == "Page.javascriptDialogOpening":
                        self._accept_dialog(message)
                    elif "method" in message:
                        self._events.put(message)
        except OSError:
            pass
        finally:
            self._closed.set()
            with self._lock:
                waiters = list(self._waiting.values())
                self._waiting.clear()
            for waiter in waiters:
                waiter.put({"error": {"message": "the browser closed the DevTools pipe"}})

    def _accept_dialog(self, message: dict[str, Any]) -> None:
        """Accept confirm()/alert() at once (as a user clicking OK would), from another
        thread: this one delivers the answer."""
        self.dialogs.append(str(message.get("params", {}).get("message", "")))
        session = message.get("sessionId")
        threading.Thread(
            target=lambda: self.send(
                "Page.handleJavaScriptDialog", {"accept": True}, session=session
            ),
            daemon=True,
        ).start()

    def send(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        session: str | None = None,
        timeout: float = 30.0,
    ) -> dict[str, Any]:
        """Send one command and return its ``result``. Raises CdpError."""
        if self._closed.is_set():
            raise CdpError("the browser is gone")
        message_id = next(self._ids)
        message: dict[str, Any] = {"id": message_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        answer: queue.Queue[dict[str, Any]] = queue.Queue()
        with self._lock:
            self._waiting[message_id] = answer
        os.write(self._out, json.dumps(message).encode() + b"\0")
        try:
            reply = answer.get(timeout=timeout)
        except queue.Empty:
            raise CdpError(f"{method}: no answer from the browser in {timeout} s") from None
        if "error" in reply:
            raise CdpError(f"{method}: {reply['error'].get('message')}")
        result: dict[str, Any] = reply.get("result", {})
        return result

    def close(self) -> None:
        with contextlib.suppress(CdpError, OSError):
            self.send("Browser.close", timeout=5)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for fd in (self._out, self._in):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._reader.join(timeout=5)

    # -- pages --------------------------------------------------------------------------

    def open_page(self, url: str) -> Page:
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        page = Page(self, session)
        page.send("Page.enable")
        page.send("Runtime.enable")
        page.send("Page.navigate", {"url": url})
        page.wait_for("document.readyState === 'complete'", timeout=30)
        return page


class Page:
    """One attached page (a flattened DevTools session)."""

    def __init__(self, browser: Browser, session: str) -> None:
        self.browser = browser
        self.session = session

    def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.browser.send(method, params, session=self.session)

    def evaluate(self, expression: str) -> Any:
        """The JSON value of a JavaScript expression in the page (awaits promises)."""
        result = self.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise CdpError(f"JavaScript error: {text}")
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float = 30.0, poll: float = 0.1) -> Any:
        """Evaluate ``expression`` until it is truthy; its value. Raises CdpError on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise CdpError(f"timed out waiting for {expression!r}")
            time.sleep(poll)

    def click(self, selector: str) -> None:
        """A real mouse click (pressed + released) at the centre of the element."""
        box = self.evaluate(
            f"""(() => {{
                const el = document.querySelector({json.dumps(selector)});
                if (!el) return null;
                el.scrollIntoView({{block: 'center'}});
                const r = el.getBoundingClientRect();
                return {{x: r.left + r.width / 2, y: r.top + r.height / 2}};
            }})()"""
        )
        if not box:
            raise CdpError(f"no element {selector!r} on the page")
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            params: dict[str, Any] = {"type": kind, "x": box["x"], "y": box["y"]}
            if kind != "mouseMoved":
                params.update(button="left", clickCount=1)
            self.send("Input.dispatchMouseEvent", params)

    def press(self, key: str) -> None:
        """A real key press (keyDown + keyUp) sent to the focused element."""
        codes = {"Tab": ("Tab", 9, ""), "Enter": ("Enter", 13, "\r"), " ": ("Space", 32, " ")}
        code, vk, text = codes[key]
        down: dict[str, Any] = {
            "type": "keyDown" if text else "rawKeyDown",
            "key": key,
            "code": code,
            "windowsVirtualKeyCode": vk,
        }
        if text:
            down["text"] = text
        self.send("Input.dispatchKeyEvent", down)
        self.send(
            "Input.dispatchKeyEvent",
            {"type": "keyUp", "key": key, "code": code, "windowsVirtualKeyCode": vk},
        )

    def tab_to(self, predicate: str, limit: int = 60) -> None:
        """Press Tab until ``predicate`` (a JS expression on ``document.activeElement``,
        bound to ``el``) holds. Raises CdpError if it never does."""
        visited: list[str] = []
        for _ in range(limit):
            self.press("Tab")
            if self.evaluate(f"(el => !!el && ({predicate}))(document.activeElement)"):
                return
            visited.append(
                str(self.evaluate("(document.activeElement || {}).outerHTML || ''"))[:60]
            )
        raise CdpError(
            f"no element matching {predicate!r} is reachable with Tab; visited {visited}"
        )

    def screenshot(self, path: Path) -> Path:
        data = self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
        path.write_bytes(base64.b64decode(data["data"]))
        return path


def _high_pipe() -> tuple[int, int]:
    """A pipe whose ends are above fd 9, so the shell's ``3<&N 4>&M`` never clobbers them."""
    ends = []
    for fd in os.pipe():
        ends.append(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10))
        os.close(fd)
    return ends[0], ends[1]


@contextlib.contextmanager
def launch(executable: str, extra_flags: Sequence[str] = ()) -> Iterator[Browser]:
    """A headless Chromium with a fresh profile (removed afterwards)."""
    profile = tempfile.mkdtemp(prefix="vfido-chromium-")
    to_read, to_write = _high_pipe()  # commands: we write, the browser reads on its fd 3
    from_read, from_write = _high_pipe()  # answers: the browser writes on its fd 4
    # bash (dash takes one-digit fds only) puts the pipe ends on fds 3 and 4 and execs the
    # browser: no preexec_fn in a threaded test process.
    script = f'exec "$0" "$@" 3<&{to_read} 4>&{from_write} {to_read}<&- {from_write}>&-'
    args = [
        shutil.which("bash") or "/bin/bash",
        "-c",
        script,
        executable,
        *FLAGS,
        f"--user-data-dir={profile}",
        "--remote-debugging-pipe",
        *extra_flags,
        "about:blank",
    ]
    process = subprocess.Popen(
        args,
        pass_fds=(to_read, from_write),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(to_read)
    os.close(from_write)
    browser = Browser(process, to_write, from_read)
    try:
        browser.send("Browser.getVersion", timeout=60)
        yield browser
    finally:
        browser.close()
        shutil.rmtree(profile, ignore_errors=True)


def wait_until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
