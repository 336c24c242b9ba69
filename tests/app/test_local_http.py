"""The HTTP servers vfido serves to local clients (`vfido.local_http`): what a connection can
cost, and the Host rule. Found by a security review (idle connections held a thread each,
without limit), then by a review of that fix (a limit that closed new connections let a
client holding idle ones lock everyone out)."""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from vfido.local_http import MAX_CONNECTIONS, BoundedHandler, BoundedHTTPServer, host_allowed


class _Handler(BoundedHandler):
    protocol_version = "HTTP/1.1"
    release = threading.Event()

    def log_message(self, format: str, *args: object) -> None:
        return

    def do_GET(self) -> None:
        if self.path == "/block":  # a request in progress (an event stream, say)
            self.release.wait(30)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")


@contextmanager
def serving() -> Iterator[int]:
    _Handler.release = threading.Event()
    server = BoundedHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        _Handler.release.set()
        server.shutdown()
        server.server_close()


def get(port: int, path: str = "/") -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path)
        return connection.getresponse().status
    finally:
        connection.close()


def settle() -> None:
    time.sleep(0.3)  # the server has accepted what was sent


def test_idle_connections_give_way_to_a_new_one() -> None:
    with serving() as port:
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(MAX_CONNECTIONS)]
        idle[1].sendall(b"GET / HT")  # half a request line, a byte at a time: idle too
        settle()
        try:
            assert get(port) == 200  # took the oldest idle connection's place
            idle[0].settimeout(10)
            assert idle[0].recv(1) == b""  # which was closed
            assert get(port) == 200
        finally:
            for connection in idle:
                connection.close()


def test_when_every_connection_is_in_a_request_a_new_one_is_closed() -> None:
    with serving() as port:
        busy = []
        for _ in range(MAX_CONNECTIONS):
            connection = socket.create_connection(("127.0.0.1", port))
            connection.sendall(b"GET /block HTTP/1.1\r\nHost: x\r\n\r\n")
            busy.append(connection)
        settle()
        try:
            extra = socket.create_connection(("127.0.0.1", port))
            extra.settimeout(10)
            assert extra.recv(1) == b""  # closed unanswered
            extra.close()
        finally:
            _Handler.release.set()
            for connection in busy:
                connection.close()


def test_the_host_rule() -> None:
    allowed = frozenset({"selenium-hub"})
    for host in (
        "127.0.0.1:4444",
        "127.0.0.1",
        "localhost:1",
        "LOCALHOST.",
        "[::1]:80",
        "selenium-hub:4444",
        "Selenium-Hub.",
    ):
        assert host_allowed(host, allowed), host
    for host in (
        "",
        ":80",
        "attacker.example:4444",
        "127.0.0.1.attacker.example",
        "127.1:80",
        "[::1",
        "[not-v6]:80",
        "localhost.attacker.example",
        "127.0.0.1\x00.evil",  # a ValueError in inet_pton: a traceback per request
    ):
        assert not host_allowed(host, allowed), host
