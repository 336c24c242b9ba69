"""The dashboard's link to the key: its control socket, one call at a time, and which
commands the key offers."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from vfido.control import ControlClient, ControlError, NotRunningError


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
