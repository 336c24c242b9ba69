"""Live updates: one thread watches the key and pushes each section that changed to every
browser connected to the event stream (server-sent events)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

from vfido.control import ControlError
from vfido.dashboard.common import (
    CREDENTIALS_REFRESH,
    PENDING_POLL,
    PENDING_WAIT,
    REFRESH,
    SECTIONS,
)
from vfido.dashboard.render import Renderer


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
