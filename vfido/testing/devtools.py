"""Drive headless Chromium with the DevTools protocol over a pipe, standard library only.

For relying-party tests that want a real browser without WebDriver, Selenium or Playwright::

    from vfido.testing.devtools import Browser

    with Browser(log=Path("chromium.log")) as browser:  # headless, its own profile
        page = browser.open_page("http://localhost:5000/")  # returns once it has loaded
        result = page.evaluate('register("alice")')  # awaits the promise; its JSON value
        print(page.console)  # what the page logged, e.g. "error: NotAllowedError: ..."

``chromium --remote-debugging-pipe`` reads protocol commands on its file descriptor 3 and
writes answers and events on descriptor 4, each message a JSON object followed by a NUL
byte: no port is opened, so nothing else on the machine can reach the browser. A reader
thread per :class:`Browser` hands each answer to the :meth:`Browser.send` waiting for it and
handles the events: console messages go to :attr:`Page.console`, and JavaScript dialogs
(``alert``, ``confirm``) are accepted, as a user clicking OK would, and kept in
:attr:`Browser.dialogs`.

The browser runs in its own process group with a fresh profile and a minimal environment;
:meth:`Browser.close` asks it to quit, kills the whole group if it does not, and removes the
profile. Every failure (an error answer, a JavaScript exception, no answer in time, a browser
that went away) is a :class:`CdpError` whose message says which.
"""

from __future__ import annotations

import base64
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
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Final

#: Executable names tried, in order, by :func:`find_chromium`.
CHROMIUM_NAMES: Final = (
    "chromium",
    "chromium-browser",
    "google-chrome",
    "google-chrome-stable",
    "chrome",
)

#: A headless browser for tests: no first-run UI, no background traffic, no GPU.
#: ``--no-sandbox`` because test runners are often root or in containers.
HEADLESS_FLAGS: Final = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-quic",
    "--disable-sync",
    "--disable-extensions",
    "--window-size=1280,1000",
)

#: The only environment variables the browser inherits from the caller.
BROWSER_ENVIRONMENT: Final = ("PATH", "HOME", "LANG", "TMPDIR", "XDG_RUNTIME_DIR")

# Puts the two pipe ends on descriptors 3 and 4, then becomes the browser. Popen cannot map
# descriptors, a preexec_fn is unsafe in a threaded process, and dash redirects only 0-9.
# Both ends first go above 9 (close-on-exec), so neither can be overwritten by the other.
_TRAMPOLINE = """
import fcntl, os, sys
ends = [int(sys.argv[1]), int(sys.argv[2])]
high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in ends]
for fd in ends:
    os.close(fd)
os.dup2(high[0], 3)
os.dup2(high[1], 4)
os.execv(sys.argv[3], sys.argv[3:])
"""


class CdpError(RuntimeError):
    """The browser answered with an error, did not answer in time, or went away."""


def find_chromium() -> str | None:
    """The path of the Chromium (or Chrome) executable, None if there is none.

    ``$VFIDO_CHROMIUM`` (a name on PATH or a path) chooses it; if that is set but names no
    executable, :class:`FileNotFoundError` rather than another browser. Otherwise the first
    of :data:`CHROMIUM_NAMES` found on PATH.
    """
    chosen = os.environ.get("VFIDO_CHROMIUM")
    if chosen:
        found = shutil.which(chosen)
        if found is None:
            raise FileNotFoundError(f"VFIDO_CHROMIUM={chosen!r} is not an executable")
        return found
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found is not None:
            return found
    return None


def _encode(message: Mapping[str, Any]) -> bytes:
    """One message as sent on the pipe. JSON escapes NUL inside strings, so the only NUL
    byte is the terminator."""
    return json.dumps(message, separators=(",", ":")).encode() + b"\0"


class _Splitter:
    """Cuts the byte stream from the browser into messages at each NUL."""

    def __init__(self) -> None:
        self._partial = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        """The messages that ``data`` completes, without their NUL; keeps the rest."""
        *complete, rest = data.split(b"\0")
        if complete:
            complete[0] = bytes(self._partial) + complete[0]
            self._partial = bytearray(rest)
        else:
            self._partial += rest
        return complete


def _shorten(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _left(deadline: float) -> float:
    return max(deadline - time.monotonic(), 0.01)


def _exception_text(details: Mapping[str, Any]) -> str:
    """What a thrown JavaScript value says (an Error's stack, or the value itself)."""
    exception = details.get("exception", {})
    if exception.get("description"):
        return str(exception["description"])
    if "value" in exception:
        return f"{details.get('text', 'Uncaught')} {json.dumps(exception['value'])}"
    return str(details.get("text", "unknown error"))


def _remote_text(value: Mapping[str, Any]) -> str:
    """A console argument (a Runtime.RemoteObject) as text."""
    if "value" in value:
        shown = value["value"]
        return shown if isinstance(shown, str) else json.dumps(shown)
    return str(value.get("description") or value.get("unserializableValue") or value.get("type"))


class Browser:
    """One headless Chromium and its DevTools pipe; ``with Browser() as browser:``.

    ``executable`` defaults to :func:`find_chromium` (:class:`FileNotFoundError` if there is
    none). The browser's own output (stdout and stderr, where Chromium logs) is appended to
    ``log``, or discarded. Returns once the browser answers, or raises :class:`CdpError`
    after ``timeout`` seconds (the process killed).
    """

    def __init__(
        self,
        executable: str | None = None,
        *,
        log: str | os.PathLike[str] | None = None,
        extra_flags: Sequence[str] = (),
        timeout: float = 60.0,
    ) -> None:
        log = Path(log) if log is not None else None  # a plain string too, as elsewhere
        found = find_chromium() if executable is None else shutil.which(executable)
        if found is None:
            if executable is not None:
                raise FileNotFoundError(f"{executable!r} is not an executable")
            names = ", ".join(CHROMIUM_NAMES)
            raise FileNotFoundError(f"no Chromium ({names}) on PATH; VFIDO_CHROMIUM chooses one")
        #: The messages of the JavaScript dialogs the pages opened (each one accepted).
        self.dialogs: list[str] = []
        #: The browser's temporary profile directory, removed by :meth:`close`.
        self.profile = Path(tempfile.mkdtemp(prefix="vfido-chromium-"))
        self._ids = itertools.count(1)
        self._lock = threading.Lock()  # guards _waiting, _pages and _gone's transition
        self._write_lock = threading.Lock()  # one message at a time; guards _to_browser
        self._waiting: dict[int, queue.Queue[dict[str, Any]]] = {}
        self._pages: dict[str, Page] = {}
        self._gone = threading.Event()
        self._closed = False
        browser_reads, self._to_browser = os.pipe()
        self._from_browser, browser_writes = os.pipe()
        try:
            self.process = self._spawn(found, browser_reads, browser_writes, log, extra_flags)
        except BaseException:
            os.close(self._to_browser)
            os.close(self._from_browser)
            shutil.rmtree(self.profile, ignore_errors=True)
            raise
        finally:
            os.close(browser_reads)
            os.close(browser_writes)
        self._reader = threading.Thread(target=self._read_loop, name="devtools", daemon=True)
        self._reader.start()
        try:
            #: ``Browser.getVersion``: ``product`` ("HeadlessChrome/..."), ``userAgent``...
            self.version = self.send("Browser.getVersion", timeout=timeout)
        except BaseException as exc:
            exited = self.process.poll()
            self.close(timeout=0)
            if isinstance(exc, CdpError):
                status = "running" if exited is None else f"exit status {exited}"
                output = f"its output is in {log}" if log else "pass log=PATH to keep its output"
                raise CdpError(f"{found} did not start ({exc}; {status}; {output})") from None
            raise

    def _spawn(
        self,
        executable: str,
        browser_reads: int,
        browser_writes: int,
        log: Path | None,
        extra_flags: Sequence[str],
    ) -> subprocess.Popen[bytes]:
        argv = [
            sys.executable,
            "-I",
            "-S",
            "-c",
            _TRAMPOLINE,
            str(browser_reads),
            str(browser_writes),
            executable,
            *HEADLESS_FLAGS,
            "--remote-debugging-pipe",
            f"--user-data-dir={self.profile}",
            *extra_flags,
            "about:blank",
        ]
        env = {name: os.environ[name] for name in BROWSER_ENVIRONMENT if name in os.environ}
        with contextlib.ExitStack() as stack:
            output: int | IO[bytes] = subprocess.DEVNULL
            if log is not None:
                output = stack.enter_context(log.open("ab"))
            return subprocess.Popen(
                argv,
                pass_fds=(browser_reads, browser_writes),
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=output,
                env=env,
                start_new_session=True,  # its helpers share the group that close() kills
            )

    def __enter__(self) -> Browser:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # --- the pipe ---------------------------------------------------------------------------

    def _read_loop(self) -> None:
        splitter = _Splitter()
        reason = "the browser closed the DevTools pipe"
        try:
            while chunk := os.read(self._from_browser, 1 << 16):
                for raw in splitter.feed(chunk):
                    self._dispatch(json.loads(raw))
        except (OSError, ValueError) as exc:
            reason = f"the DevTools pipe failed: {exc}"
        finally:
            with self._lock:
                self._gone.set()
                waiters = list(self._waiting.values())
                self._waiting.clear()
            for waiter in waiters:
                waiter.put({"error": {"message": reason}})

    def _dispatch(self, message: dict[str, Any]) -> None:
        if "id" in message:
            with self._lock:
                waiter = self._waiting.pop(message["id"], None)
            if waiter is not None:  # else a command sent by _post, or one that timed out
                waiter.put(message)
            return
        method = message.get("method")
        params = message.get("params", {})
        session = message.get("sessionId")
        if method == "Page.javascriptDialogOpening":
            self.dialogs.append(str(params.get("message", "")))
            self._post("Page.handleJavaScriptDialog", {"accept": True}, session=session)
            return
        with self._lock:
            page = self._pages.get(session or "")
        if page is not None:
            page._on_event(method, params)

    def _write(self, message: Mapping[str, Any]) -> None:
        data = memoryview(_encode(message))
        with self._write_lock:
            if self._to_browser < 0:
                raise BrokenPipeError("the DevTools pipe is closed")
            while data:
                data = data[os.write(self._to_browser, data) :]

    def _post(self, method: str, params: dict[str, Any], *, session: str | None) -> None:
        """A command whose answer nobody waits for (from the reader thread, which cannot)."""
        message: dict[str, Any] = {"id": next(self._ids), "method": method, "params": params}
        if session is not None:
            message["sessionId"] = session
        with contextlib.suppress(OSError):
            self._write(message)

    def send(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        session: str | None = None,
        timeout: float = 60.0,
    ) -> dict[str, Any]:
        """One protocol command (to a page's ``session``, or to the browser); its ``result``.
        Raises :class:`CdpError` for an error answer, none within ``timeout`` seconds, or a
        browser that is gone."""
        message_id = next(self._ids)
        message: dict[str, Any] = {"id": message_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        answer: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=1)
        with self._lock:
            if self._gone.is_set():
                raise CdpError(f"{method}: the browser is gone")
            self._waiting[message_id] = answer
        try:
            self._write(message)
            reply = answer.get(timeout=timeout)
        except queue.Empty:
            raise CdpError(f"{method}: no answer from the browser within {timeout:g} s") from None
        except OSError as exc:
            raise CdpError(f"{method}: the browser is gone ({exc})") from None
        finally:
            with self._lock:
                self._waiting.pop(message_id, None)
        if "error" in reply:
            error = reply["error"]
            detail = f" ({error['data']})" if error.get("data") else ""
            raise CdpError(f"{method}: {error.get('message')}{detail}")
        result: dict[str, Any] = reply.get("result", {})
        return result

    # --- pages and the end ------------------------------------------------------------------

    def open_page(self, url: str = "about:blank", *, timeout: float = 60.0) -> Page:
        """A new tab showing ``url``, returned once that document has loaded
        (see :meth:`Page.navigate`)."""
        deadline = time.monotonic() + timeout
        target = self.send("Target.createTarget", {"url": "about:blank"}, timeout=timeout)
        attached = self.send(
            "Target.attachToTarget",
            {"targetId": target["targetId"], "flatten": True},
            timeout=_left(deadline),
        )
        page = Page(self, target["targetId"], attached["sessionId"])
        with self._lock:
            self._pages[page.session] = page
        for domain in ("Page", "Runtime", "Log"):  # dialogs; console, exceptions; browser log
            page.send(f"{domain}.enable", timeout=_left(deadline))
        if url != "about:blank":
            page.navigate(url, timeout=_left(deadline))
        return page

    def close(self, timeout: float = 10.0) -> None:
        """Ask the browser to quit; ``timeout`` seconds later kill its process group (the
        browser and its helpers). Then remove the profile. Closing twice does nothing."""
        if self._closed:
            return
        self._closed = True
        deadline = time.monotonic() + timeout
        if timeout > 0 and self.process.poll() is None:
            with contextlib.suppress(CdpError):
                self.send("Browser.close", timeout=timeout)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=_left(deadline))
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        with self._write_lock:  # no thread writes to a closed (or reused) descriptor
            os.close(self._to_browser)
            self._to_browser = -1
        self._reader.join(timeout=10)
        if not self._reader.is_alive():  # never close a descriptor another thread reads
            os.close(self._from_browser)
        shutil.rmtree(self.profile, ignore_errors=True)


class Page:
    """One tab, attached as a flattened DevTools session. Made by :meth:`Browser.open_page`."""

    def __init__(self, browser: Browser, target_id: str, session: str) -> None:
        self.browser = browser
        self.target_id = target_id
        self.session = session
        #: What the page logged, in order, as ``"level: text"``: ``console.*`` calls
        #: (``"log: ..."``, ``"error: ..."``), uncaught exceptions (``"exception: ..."``) and
        #: the browser's own messages about the page (failed loads, security warnings).
        self.console: list[str] = []

    def _on_event(self, method: str | None, params: Mapping[str, Any]) -> None:
        if method == "Runtime.consoleAPICalled":
            text = " ".join(_remote_text(arg) for arg in params.get("args", []))
            self.console.append(f"{params.get('type', 'log')}: {text}")
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            self.console.append(f"exception: {_exception_text(details)}")
        elif method == "Log.entryAdded":
            entry = params.get("entry", {})
            self.console.append(f"{entry.get('level', 'info')}: {entry.get('text', '')}")

    def send(
        self, method: str, params: dict[str, Any] | None = None, *, timeout: float = 60.0
    ) -> dict[str, Any]:
        """One protocol command to this page (see :meth:`Browser.send`)."""
        return self.browser.send(method, params, session=self.session, timeout=timeout)

    def navigate(self, url: str, *, timeout: float = 60.0) -> None:
        """Load ``url`` and return once the new document's ``readyState`` is complete.
        A load that fails (``net::ERR_CONNECTION_REFUSED``...) or takes longer than
        ``timeout`` seconds raises :class:`CdpError`."""
        deadline = time.monotonic() + timeout
        started = self.send("Page.navigate", {"url": url}, timeout=timeout)
        if started.get("errorText"):
            raise CdpError(f"{url}: {started['errorText']}")
        loader = started.get("loaderId")  # absent when only the fragment changes
        last_error = ""
        while True:
            try:
                if self._has_loaded(loader, deadline):
                    return
            except CdpError as exc:  # typically: the old document went away while we asked
                if self.browser._gone.is_set():
                    raise
                last_error = f" (last: {exc})"
            if time.monotonic() > deadline:
                raise CdpError(f"{url} did not finish loading within {timeout:g} s{last_error}")
            time.sleep(0.05)

    def _has_loaded(self, loader: str | None, deadline: float) -> bool:
        if loader is not None:
            frame = self.send("Page.getFrameTree", timeout=_left(deadline))["frameTree"]["frame"]
            if frame.get("loaderId") != loader:  # still the previous document
                return False
        return bool(self.evaluate("document.readyState", timeout=_left(deadline)) == "complete")

    def evaluate(self, expression: str, *, timeout: float = 60.0) -> Any:
        """The JSON value of a JavaScript expression in the page, a promise awaited (None for
        undefined). It runs as if from a user gesture (a click), as some Web APIs require. A
        JavaScript exception or rejection raises :class:`CdpError` with its message."""
        result = self.send(
            "Runtime.evaluate",
            {
                "expression": expression,
                "awaitPromise": True,
                "returnByValue": True,
                "userGesture": True,
            },
            timeout=timeout,
        )
        details = result.get("exceptionDetails")
        if details is not None:
            text = _exception_text(details)
            raise CdpError(f"JavaScript error in {_shorten(expression)!r}: {text}")
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, *, timeout: float = 30.0, poll: float = 0.1) -> Any:
        """Evaluate ``expression`` every ``poll`` seconds until it is truthy; its value.
        :class:`CdpError` after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression, timeout=_left(deadline))
            if value:
                return value
            if time.monotonic() > deadline:
                raise CdpError(
                    f"timed out after {timeout:g} s waiting for {_shorten(expression)!r}"
                )
            time.sleep(poll)

    def click(self, selector: str) -> None:
        """A real mouse click (moved, pressed, released) on the centre of the first element
        matching the CSS ``selector``, scrolled into view."""
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

    #: The keys :meth:`press` knows: DOM ``code``, Windows virtual key code, text typed.
    KEYS: Final = {"Tab": ("Tab", 9, ""), "Enter": ("Enter", 13, "\r"), " ": ("Space", 32, " ")}

    def press(self, key: str) -> None:
        """A real key press (down, up) to the focused element: one of :attr:`KEYS`."""
        if key not in self.KEYS:
            raise ValueError(f"press() knows {sorted(self.KEYS)}, not {key!r}")
        code, virtual, text = self.KEYS[key]
        down: dict[str, Any] = {
            "type": "keyDown" if text else "rawKeyDown",
            "key": key,
            "code": code,
            "windowsVirtualKeyCode": virtual,
        }
        if text:
            down["text"] = text
        self.send("Input.dispatchKeyEvent", down)
        up = {"type": "keyUp", "key": key, "code": code, "windowsVirtualKeyCode": virtual}
        self.send("Input.dispatchKeyEvent", up)

    def tab_to(self, predicate: str, limit: int = 60) -> None:
        """Press Tab until ``predicate`` holds: a JavaScript expression on the focused
        element, bound to ``el``. :class:`CdpError` (naming the elements visited) if it does
        not within ``limit`` presses."""
        visited: list[str] = []
        for _ in range(limit):
            self.press("Tab")
            if self.evaluate(f"(el => !!el && ({predicate}))(document.activeElement)"):
                return
            focused = self.evaluate("(document.activeElement || {}).outerHTML || ''")
            visited.append(str(focused)[:60])
        raise CdpError(
            f"no element matching {predicate!r} is reachable with Tab; visited {visited}"
        )

    def screenshot(self, path: str | os.PathLike[str]) -> Path:
        """The whole page (beyond the viewport) as a PNG at ``path``; ``path``."""
        data = self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
        target = Path(path)
        target.write_bytes(base64.b64decode(data["data"]))
        return target
