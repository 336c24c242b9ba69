"""Unix-domain socket helpers shared by the socket servers (the Unix transport here, the
application's control socket): who is at the other end, and whether a socket path is
served."""

from __future__ import annotations

import os
import socket
import struct

#: Seconds :func:`socket_in_use` waits for a server to accept.
PROBE_TIMEOUT = 2.0


def peer_uid(sock: socket.socket) -> int:
    """The uid of the process at the other end of a connected Unix socket (SO_PEERCRED)."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


def socket_in_use(path: str | os.PathLike[str], kind: socket.SocketKind) -> bool:
    """Whether a server may be live on the Unix socket ``path``, as opposed to a stale socket
    file left by one that is gone (which may then be replaced). Probed with a ``kind``
    (``SOCK_STREAM``, ``SOCK_SEQPACKET``) connection: only a refused connection (nobody
    listens) or no file means stale. A live server of the other type (EPROTOTYPE: another
    key's control socket named as this key's socket), a busy one (timeout) or one this user
    may not reach counts as live: such a socket is never replaced."""
    with socket.socket(socket.AF_UNIX, kind | socket.SOCK_CLOEXEC) as probe:
        probe.settimeout(PROBE_TIMEOUT)
        try:
            probe.connect(os.fspath(path))
        except (ConnectionRefusedError, FileNotFoundError):
            return False
        except OSError:
            return True
        return True
