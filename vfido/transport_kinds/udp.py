"""``udp``: CTAPHID reports in UDP datagrams (every local user can reach the key)."""

from __future__ import annotations

import os
from typing import Any

from vfido.keystore.store import KeyStore
from vfido.transport_kinds.base import (
    Transport,
    TransportKind,
    TransportOptions,
    Wiring,
)


class UdpKind(TransportKind):
    name = "udp"
    served = True
    in_process = False

    def open(self, wiring: Wiring) -> Transport:
        from vfido.transports.udp import UdpTransport

        options, handler = wiring.options, wiring.handler
        udp = UdpTransport(
            handler,
            host=options.udp_host,
            port=options.udp_port,
            peer_host=options.udp_host,
            peer_port=options.udp_peer_port,
        )
        udp.runner.packet_observer = wiring.packet_observer
        return udp

    def status(self, options: TransportOptions, transport: Transport) -> dict[str, Any]:
        return {
            "udp": {
                "host": options.udp_host,
                "port": getattr(transport, "port", options.udp_port),
                "peer_port": options.udp_peer_port,
            }
        }

    def describe(self, status: dict[str, Any]) -> list[str]:
        udp = status.get("udp") or {}
        where = f"{udp.get('host')}:{udp.get('port')} -> {udp.get('peer_port')}"
        return [f"transport:     udp {where}"]

    def announcement(self, options: TransportOptions, transport: Transport) -> str:
        port = getattr(transport, "port", options.udp_port)
        return (
            f"vfido: listening on udp {options.udp_host}:{port}, replies to port "
            f"{options.udp_peer_port}"
        )

    def control_name(self, options: TransportOptions, store: KeyStore) -> str:
        if options.udp_port == 0:  # any free port: not known yet, and not unique by itself
            return f"udp-any-{os.getpid()}"
        return f"udp-{options.udp_port}"


KIND = UdpKind()
