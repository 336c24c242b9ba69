"""The HTTP servers vfido serves to local clients (the dashboard, the WebDriver intermediary):
a bounded number of connections, each dropped when it idles, and the one rule for the Host
header that keeps web pages out through DNS rebinding.

Any local user can connect to a loopback port, and so can a web page in the user's browser
(a request to ``127.0.0.1``, or to a name it re-points there): what a server gives away is
guarded by its own rules (the dashboard's token, the intermediary's refusal of browsers);
these bound what a connection can cost before any rule is checked.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from http.server import ThreadingHTTPServer
from typing import Any, Final

#: Connections served at once; more are closed at once (each one is a thread).
MAX_CONNECTIONS: Final = 32
#: Seconds a connection may idle before the server drops it (each request handler's
#: ``timeout``: a client that opens connections and sends nothing held a thread for ever).
IDLE_TIMEOUT: Final = 60.0


class BoundedHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server that serves at most :data:`MAX_CONNECTIONS` connections at a
    time (a connection over the limit is closed unanswered). Pair it with a handler whose
    ``timeout`` is :data:`IDLE_TIMEOUT`."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__(*args, **kwargs)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


def host_allowed(host_header: str, names: frozenset[str] = frozenset()) -> bool:
    """Whether a request's Host header names this server by an IP address, ``localhost``
    or one of ``names`` (case and a trailing dot aside; any port: a port forward changes
    it). A web page that re-points a name of its own at 127.0.0.1 (DNS rebinding) sends
    that name: refused. A client that reached the server sends an address or ``localhost``
    (what chromedriver accepts too), or a name its user allowed."""
    host = host_header.strip()
    if host.startswith("["):  # [v6]:port
        name, _, rest = host[1:].partition("]")
        if rest and not rest.startswith(":"):
            return False
        try:
            return ipaddress.ip_address(name).version == 6
        except ValueError:
            return False
    name = host.rpartition(":")[0] if ":" in host else host
    name = name.rstrip(".").lower()
    if not name:
        return False
    if name == "localhost" or name in names:
        return True
    try:
        socket.inet_pton(socket.AF_INET, name)
    except OSError:
        return False
    return True
