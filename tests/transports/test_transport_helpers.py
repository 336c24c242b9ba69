"""transports.sockets and transports.descriptor: the helpers the socket servers and the
client-side connections share."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from vfido.transports.descriptor import PRODUCT_ID, VENDOR_ID, simulated_descriptor
from vfido.transports.sockets import peer_uid, socket_in_use


def test_socket_in_use_tells_a_live_server_from_a_stale_file(tmp_path: Path) -> None:
    stream, packets = tmp_path / "stream", tmp_path / "packets"
    with (
        socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as a,
        socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as b,
    ):
        a.bind(str(stream))
        a.listen(1)
        b.bind(str(packets))
        b.listen(1)
        assert socket_in_use(stream, socket.SOCK_STREAM)
        assert socket_in_use(packets, socket.SOCK_SEQPACKET)
        # A live server of the other type refuses the probe with EPROTOTYPE: still live, never
        # to be replaced (a key's --unix-socket naming another key's control socket unlinked
        # it when this counted as stale).
        assert socket_in_use(stream, socket.SOCK_SEQPACKET)
        assert socket_in_use(packets, socket.SOCK_STREAM)
    # The servers are gone; their socket files stay behind (stale), of either kind.
    assert stream.exists() and packets.exists()
    assert not socket_in_use(stream, socket.SOCK_STREAM)
    assert not socket_in_use(stream, socket.SOCK_SEQPACKET)
    assert not socket_in_use(packets, socket.SOCK_STREAM)
    assert not socket_in_use(tmp_path / "missing", socket.SOCK_STREAM)


def test_peer_uid_is_ours() -> None:
    a, b = socket.socketpair(socket.AF_UNIX)
    with a, b:
        assert peer_uid(a) == os.geteuid()


def test_simulated_descriptor() -> None:
    descriptor = simulated_descriptor("udp:127.0.0.1:1", "vfido (udp)")
    assert (descriptor.vid, descriptor.pid) == (VENDOR_ID, PRODUCT_ID) == (0x1209, 0x0001)
    assert descriptor.report_size_in == descriptor.report_size_out == 64
    assert descriptor.product_name == "vfido (udp)"
    assert descriptor.serial_number is None
