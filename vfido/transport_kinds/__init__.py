"""The transport registry: every way a vfido key can be plugged in, one module each.

A kind knows how to open its transport on a CTAP handler, the fields it adds to the control
socket's ``status``, the line that tells the user where the key is, and the default name of
the key's control socket. Adding a transport = one module here + one line in
:data:`TRANSPORT_KINDS`; ``vfido run --transport``, :class:`vfido.api.VirtualKey` and
:class:`vfido.api.ServiceKey` derive their choices from it.
"""

from __future__ import annotations

from typing import Final

from vfido.transport_kinds import inprocess, udp, uhid, unix
from vfido.transport_kinds.base import (
    Transport,
    TransportKind,
    TransportOptions,
    Wiring,
    default_serial,
)

#: name -> kind, in the order choices are shown (``vfido run``'s default, uhid, first of its).
TRANSPORT_KINDS: Final[dict[str, TransportKind]] = {
    kind.name: kind for kind in (inprocess.KIND, uhid.KIND, unix.KIND, udp.KIND)
}
#: ``vfido run --transport`` (and :class:`vfido.api.ServiceKey`): the default first.
RUN_KINDS: Final = tuple(name for name, kind in TRANSPORT_KINDS.items() if kind.served)
#: :class:`vfido.api.VirtualKey` (``transport=``): a key inside the calling process.
TOOLKIT_KINDS: Final = tuple(name for name, kind in TRANSPORT_KINDS.items() if kind.in_process)


def transport_kind(name: str) -> TransportKind:
    """The registered kind ``name``. Raises ValueError (one line)."""
    try:
        return TRANSPORT_KINDS[name]
    except KeyError:
        raise ValueError(f"unknown transport {name!r}") from None


__all__ = [
    "RUN_KINDS",
    "TOOLKIT_KINDS",
    "TRANSPORT_KINDS",
    "Transport",
    "TransportKind",
    "TransportOptions",
    "Wiring",
    "default_serial",
    "transport_kind",
]
