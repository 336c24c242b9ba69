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
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final

from vfido.connections import ConnectionTable

#: Connections served at once (each one is a thread); see :class:`BoundedHTTPServer` for
#: what happens to more. (A client sending a request's body a byte at a time still holds
#: its place for as long as it keeps sending.)
MAX_CONNECTIONS: Final = 32
#: Seconds a connection may idle before the server drops it (the handler's socket
#: ``timeout``: a client that opens connections and sends nothing held a thread for ever).
IDLE_TIMEOUT: Final = 60.0


class BoundedHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server with at most :data:`MAX_CONNECTIONS` connections at a time.
    When they are all taken, a new one takes the place of the least recently active *idle*
    one (one between requests, or still sending its request line and headers): a client
    holding idle connections, or sending a byte at a time, cannot lock the others out. When every
    connection is in a request (an event stream, a slow upstream), the new one is closed
    unanswered. Its handler must be a :class:`BoundedHandler`."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.connections = ConnectionTable(MAX_CONNECTIONS)
        super().__init__(*args, **kwargs)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.connections.admit(request):  # every connection is in a request
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        self.connections.forget(request)  # out of the table before its fd number is freed
        super().shutdown_request(request)


class BoundedHandler(BaseHTTPRequestHandler):
    """The request handler of a :class:`BoundedHTTPServer`: it tells the server when a
    connection is in a request, and drops one idle for :data:`IDLE_TIMEOUT`."""

    timeout = IDLE_TIMEOUT
    server: BoundedHTTPServer

    def parse_request(self) -> bool:
        whole = super().parse_request()  # the request line and the headers
        if whole:
            self.server.connections.mark(self.connection, True)
        return whole

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        finally:
            self.server.connections.mark(self.connection, False)


def host_allowed(host_header: str, names: frozenset[str] = frozenset()) -> bool:
    """Whether a request's Host header names this server by an IP address, ``localhost``
    or one of ``names`` (case and a trailing dot aside; any port: a port forward changes
    it). A web page that re-points a name of its own at 127.0.0.1 (DNS rebinding) sends
    that name: refused. A client that reached the server sends an address or ``localhost``
    (what chromedriver accepts too), or a name its user allowed."""
    host = host_header.strip()
    if host.startswith("["):  # [v6]:port
        name, bracket, rest = host[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
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
    except (OSError, ValueError):  # ValueError: a NUL in the name
        return False
    return True
