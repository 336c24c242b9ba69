"""``unix``: CTAPHID over a Unix-domain socket that only the key's own user can connect to."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from vfido.transport_kinds.base import (
    Transport,
    TransportKind,
    TransportOptions,
    Wiring,
)


def prepare_unix_socket_dir(path: Path) -> None:
    """Check (or create) the directory of the ``unix`` transport's socket ``path``.

    The default place, the control socket's directory (or a directory that does not exist
    yet), is made private as the control socket's is (ours, 0700). A directory given with
    ``--unix-socket`` that exists must be ours (or root's) and writable by nobody else, so
    that no other user can replace the socket; it is not chmod'ed behind the user's back.
    Raises :class:`vfido.control.ControlError` (one line)."""
    from vfido.control.server import ControlError, _private_dir, socket_dir

    directory = path.parent
    if directory == socket_dir() or not directory.exists():
        _private_dir(directory)
        return
    st = directory.lstat()
    if not stat.S_ISDIR(st.st_mode):
        raise ControlError(f"{directory} is not a directory")
    if st.st_uid not in (os.getuid(), 0):
        raise ControlError(f"{directory} belongs to another user (uid {st.st_uid})")
    if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
        raise ControlError(
            f"{directory} is writable by other users: put the --unix-socket in a private "
            "directory (default: $XDG_RUNTIME_DIR/vfido)"
        )


class UnixKind(TransportKind):
    name = "unix"
    served = True
    in_process = True

    def open(self, wiring: Wiring) -> Transport:
        from vfido.transports.unix import UnixTransport

        options, handler = wiring.options, wiring.handler
        if options.unix_socket is None:
            raise ValueError("the unix transport needs unix_socket")
        path = Path(options.unix_socket)
        prepare_unix_socket_dir(path)
        unix = UnixTransport(handler, path)
        unix.runner.packet_observer = wiring.packet_observer
        return unix

    def status(self, options: TransportOptions, transport: Transport) -> dict[str, Any]:
        return {"unix_socket": str(getattr(transport, "path", options.unix_socket))}

    def describe(self, status: dict[str, Any]) -> list[str]:
        return [f"transport:     unix {status.get('unix_socket')}"]

    def announcement(self, options: TransportOptions, transport: Transport) -> str:
        return f"vfido: listening on unix {getattr(transport, 'path', options.unix_socket)}"


KIND = UnixKind()
