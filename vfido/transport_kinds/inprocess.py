"""``inprocess``: python-fido2 talks CTAPHID to the key through queues, inside one process
(:class:`vfido.api.VirtualKey`'s default; nothing outside the process sees the key)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vfido.transport_kinds.base import (
    Transport,
    TransportKind,
    TransportOptions,
    Wiring,
    default_serial,
)

if TYPE_CHECKING:  # imported when a key is opened: `vfido run` never loads python-fido2's HID
    from fido2.hid import CtapHidDevice

    from vfido.transports.inprocess import InProcessKey
    from vfido.transports.runner import HidRunner


class InProcessTransport:
    """An :class:`InProcessKey` with the start/stop of every transport."""

    def __init__(self, key: InProcessKey, serial: str) -> None:
        self.key = key
        self.serial = serial

    @property
    def runner(self) -> HidRunner:
        return self.key.runner

    def open(self) -> CtapHidDevice:
        """A python-fido2 device on a new connection."""
        return self.key.open()

    def power_cycle(self) -> None:
        self.key.power_cycle()

    @property
    def failure(self) -> str | None:
        return None  # no I/O of its own to fail

    def start(self) -> None:
        pass  # connections open on demand

    def stop(self) -> None:
        self.key.close()


class InProcessKind(TransportKind):
    name = "inprocess"
    served = False
    in_process = True

    def open(self, wiring: Wiring) -> Transport:
        from vfido.transports.inprocess import InProcessKey

        options, handler, store = wiring.options, wiring.handler, wiring.store
        serial = options.serial or default_serial(store)
        key = InProcessKey(handler, serial=serial)
        key.runner.packet_observer = wiring.packet_observer
        return InProcessTransport(key, serial)

    def status(self, options: TransportOptions, transport: Transport) -> dict[str, Any]:
        return {"serial": getattr(transport, "serial", options.serial)}

    def describe(self, status: dict[str, Any]) -> list[str]:
        return [f"transport:     inprocess, serial {status.get('serial')}"]

    def announcement(self, options: TransportOptions, transport: Transport) -> str:
        return f"vfido: in-process key {getattr(transport, 'serial', options.serial)}"


KIND = InProcessKind()
