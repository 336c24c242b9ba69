"""Unix-domain socket helpers shared by the socket servers (the Unix transport here, the
application's control socket): who is at the other end, whether a socket path is served, and
clearing the way for a new server socket."""

from __future__ import annotations

import os
import socket
import stat
import struct
from pathlib import Path

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


class SocketPathError(Exception):
    """Why a server cannot bind its Unix socket at a path, in one line."""


def clear_stale_socket(path: Path, kind: socket.SocketKind, *, in_use: str) -> None:
    """Make way for a new server socket at ``path``: nothing is there, or a stale socket of
    this user's (nobody accepts on it: :func:`socket_in_use`, probed with ``kind``), which is
    removed. Anything else is left as it is and raises :class:`SocketPathError`: a file that
    is not a socket (a keystore or a document named by mistake), another user's socket, or a
    live server (the message ``in_use``: whose, and what to do)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise SocketPathError(f"cannot use {path}: {exc.strerror}") from None
    if not stat.S_ISSOCK(st.st_mode):
        raise SocketPathError(
            f"{path} exists and is not a socket: remove it or choose another path"
        )
    if st.st_uid != os.geteuid():
        raise SocketPathError(f"{path} belongs to another user (uid {st.st_uid})")
    if socket_in_use(path, kind):
        raise SocketPathError(in_use)
    try:
        path.unlink()  # a stale socket of a server that is gone
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise SocketPathError(f"cannot remove {path}: {exc.strerror}") from None
