"""What every transport kind provides (:class:`TransportKind`) and the options they read."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from vfido.keystore.store import KeyStore
from vfido.transports import ports
from vfido.transports.handler import CtapHandler

#: Called with ("in"|"out", report) for every CTAPHID report (``vfido run --trace``).
PacketObserver = Callable[[str, bytes], None]


class Transport(Protocol):
    def start(self) -> None: ...

    def stop(self) -> None: ...

    @property
    def failure(self) -> str | None:
        """Why the started transport stopped serving by itself (its I/O failed), else
        None: ``vfido run`` then stops with that reason and a non-zero exit."""
        ...


@dataclass(frozen=True)
class TransportOptions:
    kind: str = "udp"  # a name in vfido.transport_kinds.TRANSPORT_KINDS
    udp_host: str = "127.0.0.1"
    udp_port: int = ports.PORT
    udp_peer_port: int = ports.PEER_PORT
    serial: str | None = None
    name: str = "vfido virtual FIDO2 key"
    unix_socket: str | None = None  # kind "unix": the socket's path (its directory private)


def default_serial(store: KeyStore) -> str:
    """A printable-ASCII serial derived from the AAGUID (stable per keystore)."""
    return "vfido-" + store.identity().aaguid.hex()[:12]


@dataclass(frozen=True)
class Wiring:
    """What a transport is opened on: the options, the CTAP handler it feeds, the keystore
    (for a default serial) and the observer of every CTAPHID report (``--trace``)."""

    options: TransportOptions
    handler: CtapHandler
    store: KeyStore
    packet_observer: PacketObserver | None = None


class TransportKind:
    """One way of plugging a key in (one module of :mod:`vfido.transport_kinds`)."""

    #: ``--transport`` / ``VirtualKey(transport=...)`` name; ``status``'s ``transport``.
    name: str
    #: ``vfido run`` can serve it (to other processes).
    served: bool
    #: :class:`vfido.api.VirtualKey` can run it inside the calling process.
    in_process: bool

    def open(self, wiring: Wiring) -> Transport:
        """The transport, not yet started."""
        raise NotImplementedError

    def status(self, options: TransportOptions, transport: Transport) -> dict[str, Any]:
        """The fields this transport adds to the control socket's ``status``."""
        raise NotImplementedError

    def announcement(self, options: TransportOptions, transport: Transport) -> str:
        """The line on stderr that says where the (started) key is; harnesses wait for it."""
        raise NotImplementedError

    def describe(self, status: dict[str, Any]) -> list[str]:
        """``vfido ctl status``'s lines for this transport's fields of a ``status`` answer
        (which came over the control socket: the caller escapes the text it prints)."""
        return [f"transport:     {self.name}"]

    def control_name(self, options: TransportOptions, store: KeyStore) -> str:
        """The default name of the key's control socket: the key's serial."""
        return options.serial or default_serial(store)
