"""Drive headless Chromium with the DevTools protocol over a pipe, using only the standard library.

``chromium --remote-debugging-pipe`` reads protocol commands from its file descriptor 3 and
writes answers and events to descriptor 4, each a JSON object followed by a NUL byte; no
WebDriver, websocket library or open port is needed. Only what a WebAuthn page test uses is
here: open a page, wait for it, evaluate JavaScript (awaiting promises).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, BinaryIO

#: Flags for a headless browser in a test: no first-run UI, no background traffic, its own
#: profile. ``--no-sandbox`` because test runners are often root or in containers.
HEADLESS_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
)


_TRAMPOLINE = """
import fcntl, os, sys
read_end, write_end = int(sys.argv[1]), int(sys.argv[2])
high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (read_end, write_end)]
for fd in (read_end, write_end):
    os.close(fd)
os.dup2(high[0], 3)
os.dup2(high[1], 4)
os.execv(sys.argv[3], sys.argv[3:])
"""


class CdpError(RuntimeError):
    """The browser answered a command with an error, or went away."""


def find_chromium() -> str | None:
    """The Chromium (or Chrome) executable: ``$CHROMIUM``, else the usual names on PATH."""
    if os.environ.get("CHROMIUM"):
        return os.environ["CHROMIUM"]
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class Browser:
    """One headless Chromium process; ``with Browser(path, log) as browser:``."""

    def __init__(self, executable: str, log: BinaryIO | None = None) -> None:
        self._profile = tempfile.mkdtemp(prefix="vfido-chromium-")
        to_browser_r, to_browser_w = os.pipe()
        from_browser_r, from_browser_w = os.pipe()
        # A tiny Python trampoline puts our pipe ends on descriptors 3 and 4, then becomes
        # Chromium (a shell cannot: dash only redirects descriptors 0-9).
        argv = [
            sys.executable,
            "-I",
            "-S",
            "-c",
            _TRAMPOLINE,
            str(to_browser_r),
            str(from_browser_w),
            executable,
            *HEADLESS_FLAGS,
            "--remote-debugging-pipe",
            f"--user-data-dir={self._profile}",
            "about:blank",
        ]
        # A small environment: a browser inherits nothing surprising from the test runner.
        keep = ("PATH", "HOME", "LANG", "TMPDIR", "XDG_RUNTIME_DIR")
        env = {k: v for k, v in os.environ.items() if k in keep}
        self.process = subprocess.Popen(
            argv,
            pass_fds=(to_browser_r, from_browser_w),
            stdin=subprocess.DEVNULL,
            stdout=log or subprocess.DEVNULL,
            stderr=log or subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._writer = os.fdopen(to_browser_w, "wb", buffering=0)
        self._reader = os.fdopen(from_browser_r, "rb", buffering=0)
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._waiting: dict[int, queue.Queue[dict[str, Any]]] = {}
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._read_loop, daemon=True)
        self._thread.start()

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read_loop(self) -> None:
        buffer = b""
        try:
            while True:
                chunk = self._reader.read(65536)
                if not chunk:
                    break
                buffer += chunk
                while b"\0" in buffer:
                    raw, buffer = buffer.split(b"\0", 1)
                    message = json.loads(raw)
                    with self._lock:
                        waiter = self._waiting.pop(message.get("id", -1), None)
                    if waiter is not None:
                        waiter.put(message)
                    # Events (no "id") are not needed by these tests.
        finally:
            self._closed.set()
            with self._lock:
                waiters, self._waiting = list(self._waiting.values()), {}
            for waiter in waiters:
                waiter.put({"error": {"message": "the browser closed the pipe"}})

    def send(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        session: str | None = None,
        timeout: float = 60.0,
    ) -> dict[str, Any]:
        """One protocol command; returns its ``result``."""
        if self._closed.is_set():
            raise CdpError("the browser is gone")
        message: dict[str, Any] = {"id": next(self._ids), "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        answer: queue.Queue[dict[str, Any]] = queue.Queue()
        with self._lock:
            self._waiting[message["id"]] = answer
        self._writer.write(json.dumps(message).encode() + b"\0")
        try:
            reply = answer.get(timeout=timeout)
        except queue.Empty:
            raise CdpError(f"{method}: no answer within {timeout:.0f} s") from None
        if "error" in reply:
            raise CdpError(f"{method}: {reply['error'].get('message')}")
        result: dict[str, Any] = reply.get("result", {})
        return result

    def open_page(self, url: str, timeout: float = 60.0) -> Page:
        """A new tab showing ``url``, once its document has loaded."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})
        page = Page(self, session["sessionId"])
        page.navigate(url, timeout)
        return page

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.send("Browser.close", timeout=10)
                self.process.wait(timeout=10)
            except (CdpError, OSError, subprocess.TimeoutExpired):
                pass
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        for stream in (self._writer, self._reader):
            with contextlib.suppress(OSError):
                stream.close()
        shutil.rmtree(self._profile, ignore_errors=True)


class Page:
    """One tab (a flattened DevTools session)."""

    def __init__(self, browser: Browser, session: str) -> None:
        self.browser = browser
        self.session = session

    def navigate(self, url: str, timeout: float = 60.0) -> None:
        self.browser.send("Page.navigate", {"url": url}, session=self.session, timeout=timeout)
        loaded = "document.readyState === 'complete' && document.URL !== 'about:blank'"
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.evaluate(loaded, timeout=timeout):
                    return
            except CdpError:  # the old document went away while we asked
                pass
            if time.monotonic() > deadline:
                raise CdpError(f"{url} did not finish loading within {timeout:.0f} s")
            time.sleep(0.1)

    def evaluate(self, expression: str, timeout: float = 60.0) -> Any:
        """Evaluate ``expression`` in the page, awaiting a promise; returns its JSON value.
        A JavaScript exception becomes :class:`CdpError` with its text."""
        result = self.browser.send(
            "Runtime.evaluate",
            {
                "expression": expression,
                "awaitPromise": True,
                "returnByValue": True,
                "userGesture": True,
            },
            session=self.session,
            timeout=timeout,
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise CdpError(f"{expression}: {text}")
        return result["result"].get("value")


def log_file(directory: Path, name: str = "chromium.log") -> BinaryIO:
    """Where to keep the browser's own output (Chromium's WebAuthn log lines go there)."""
    directory.mkdir(parents=True, exist_ok=True)
    return (directory / name).open("wb")
