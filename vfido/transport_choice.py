"""Which transport `vfido run` serves, and who can reach the key through it.

The transports `vfido run` serves (:data:`KINDS`, from the registry
:data:`vfido.transport_kinds.TRANSPORT_KINDS`), by who can use the key:

* ``uhid``: a kernel HID device; whoever may open its hidraw node (root, or the users the
  udev rule gives it to). The default wherever ``/dev/uhid`` can be opened.
* ``unix``: a Unix-domain socket (0600, in the user's private runtime directory) whose
  every connection is checked with ``SO_PEERCRED``: only the key's own user (and root).
* ``udp``: **every local user**. UDP cannot tell who sent a datagram, so any process on the
  machine can use the key, sign with its credentials, power-cycle it and reset it. Serving
  a persistent keystore over UDP therefore needs :data:`UDP_INSECURE_FLAG` and prints one
  warning line; an ``--ephemeral`` key (nothing of value in it) is served over UDP freely.

``vfido run`` without ``--transport`` serves UHID where ``/dev/uhid`` is usable; elsewhere an
ephemeral key falls back to UDP (saying so in one line) and a persistent one is refused (one
line naming the flags).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from vfido.transport_kinds import RUN_KINDS
from vfido.transport_kinds.unix import prepare_unix_socket_dir

#: Every transport `vfido run` can serve (``--transport``), the default first.
KINDS: Final = RUN_KINDS
UDP_INSECURE_FLAG: Final = "--udp-insecure-any-local-user"
UDP_WARNING: Final = (
    "vfido: warning: serving a persistent keystore over UDP: every local user can use this "
    f"key, sign with its credentials and reset it ({UDP_INSECURE_FLAG})"
)


class TransportChoiceError(ValueError):
    """The options ask for a transport that would expose the key; one line saying what to do."""


@dataclass(frozen=True)
class TransportChoice:
    kind: str
    #: One line for stderr once the key is served: the fallback taken, if any.
    notice: str | None = None
    #: One line for stderr once the key is served: the risk it runs, if any.
    warning: str | None = None


def choose_transport(
    requested: str | None,
    *,
    persistent: bool,
    udp_insecure: bool,
    uhid_unavailable: Callable[[], str | None],
) -> TransportChoice:
    """The transport to serve. ``requested``: ``--transport`` (None: not given);
    ``persistent``: a keystore directory (not ``--ephemeral``); ``udp_insecure``: the
    :data:`UDP_INSECURE_FLAG`; ``uhid_unavailable``: why UHID cannot be used here, or None.
    Raises :class:`TransportChoiceError`."""
    if requested is not None and requested not in KINDS:
        raise TransportChoiceError(f"--transport must be one of {', '.join(KINDS)}")
    if requested is None:
        reason = uhid_unavailable()
        if reason is None:
            return TransportChoice("uhid")
        if persistent:
            raise TransportChoiceError(
                f"no --transport given and UHID is not usable ({reason}): serve this keystore "
                "with --transport unix (only your user can connect), or with --transport udp "
                f"{UDP_INSECURE_FLAG} (every local user can use the key)"
            )
        return TransportChoice(
            "udp", f"vfido: UHID is not usable ({reason}): serving the ephemeral key over UDP"
        )
    if requested == "udp" and persistent:
        if not udp_insecure:
            raise TransportChoiceError(
                "UDP serves the key to every local user: for a persistent keystore use "
                f"--transport unix (only your user can connect) or uhid, or add "
                f"{UDP_INSECURE_FLAG} to accept that risk (or use --ephemeral)"
            )
        return TransportChoice("udp", warning=UDP_WARNING)
    return TransportChoice(requested)


__all__ = [
    "KINDS",
    "UDP_INSECURE_FLAG",
    "UDP_WARNING",
    "TransportChoice",
    "TransportChoiceError",
    "choose_transport",
    "prepare_unix_socket_dir",
]
