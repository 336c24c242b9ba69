"""The bounded table of connections the local servers keep (the control socket, the dashboard
and the WebDriver intermediary): at most ``limit`` at a time, and when every place is taken a
new connection takes the place of the least recently active *idle* one, so that a client
holding idle connections cannot lock the others out. A connection in a request keeps its place.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections import OrderedDict


class ConnectionTable:
    """The connections a server holds, least recently active first, each with whether it is
    in a request now and when it was last active. Thread-safe."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._connections: OrderedDict[socket.socket, tuple[bool, float]] = OrderedDict()

    def __len__(self) -> int:
        with self._lock:
            return len(self._connections)

    def all_busy(self) -> bool:
        """Whether every connection held is in a request (for tests and status)."""
        with self._lock:
            return all(busy for busy, _ in self._connections.values())

    def admit(self, conn: socket.socket, evict_after: float = 0.0) -> bool:
        """Take ``conn`` in; if every place is taken, in the place of the least recently
        active connection idle for ``evict_after`` seconds or more, which is shut down (its
        thread reads EOF and ends). False if there is none: ``conn`` is not taken."""
        now = time.monotonic()
        with self._lock:
            if len(self._connections) >= self.limit:
                idle = next(
                    (
                        c
                        for c, (busy, active) in self._connections.items()
                        if not busy and now - active >= evict_after
                    ),
                    None,
                )
                if idle is None:
                    return False
                del self._connections[idle]
                with contextlib.suppress(OSError):
                    idle.shutdown(socket.SHUT_RDWR)
            self._connections[conn] = (False, now)
            return True

    def mark(self, conn: socket.socket, busy: bool) -> bool:
        """``conn`` starts (``busy``) or ends a request: now its most recently active one.
        False if it lost its place meanwhile (then its request must not run: nobody would
        read the answer)."""
        with self._lock:
            if conn not in self._connections:
                return False
            self._connections[conn] = (busy, time.monotonic())
            self._connections.move_to_end(conn)
            return True

    def forget(self, conn: socket.socket) -> None:
        """``conn`` is closed (before its file descriptor number is freed)."""
        with self._lock:
            self._connections.pop(conn, None)
