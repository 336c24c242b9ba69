"""``uhid``: a kernel HID device (``/dev/uhid`` -> ``/dev/hidrawN``), as a USB key appears."""

from __future__ import annotations

import threading
from typing import Any

from vfido.transport_kinds.base import (
    Transport,
    TransportKind,
    TransportOptions,
    Wiring,
    default_serial,
)

#: How long the announcement waits for the kernel to create the hidraw node (50 x 0.1 s).
_NODE_POLLS = 50


class UhidKind(TransportKind):
    name = "uhid"
    served = True
    in_process = True

    def open(self, wiring: Wiring) -> Transport:
        from vfido.transports.uhid import UhidTransport

        options, handler, store = wiring.options, wiring.handler, wiring.store
        return UhidTransport(
            handler,
            name=options.name,
            serial=options.serial or default_serial(store),
            packet_observer=wiring.packet_observer,
        )

    def status(self, options: TransportOptions, transport: Transport) -> dict[str, Any]:
        hidraw_path = getattr(transport, "hidraw_path", None)
        return {
            "serial": getattr(transport, "serial", options.serial),
            "hidraw": hidraw_path() if hidraw_path is not None else None,
        }

    def describe(self, status: dict[str, Any]) -> list[str]:
        return [
            f"transport:     uhid, {status.get('hidraw') or 'no hidraw node yet'}",
            f"serial:        {status.get('serial')}",
        ]

    def announcement(self, options: TransportOptions, transport: Transport) -> str:
        path = None
        hidraw_path = getattr(transport, "hidraw_path", None)
        if hidraw_path is not None:
            for _ in range(_NODE_POLLS):  # the kernel creates the node asynchronously
                path = hidraw_path()
                if path:
                    break
                threading.Event().wait(0.1)
        return f"hidraw: {path or 'unknown'}"


KIND = UhidKind()
