"""What a simulated vfido key calls itself to a python-fido2 client: one HID descriptor for
every client-side connection (in-process, UDP, Unix socket), as a USB key has one; and the
one error a client-side connection raises when no key is there.

The ids are pid.codes' open-source vendor id and its test product id (the UHID device
announces the same by default, :mod:`vfido.transports.uhid`); reports are CTAPHID's 64
bytes each way.
"""

from __future__ import annotations

from fido2.hid.base import HidDescriptor

from vfido.transports.ctaphid import REPORT_SIZE

VENDOR_ID = 0x1209  # pid.codes
PRODUCT_ID = 0x0001
PRODUCT_NAME = "vfido"


class NoKeyError(ConnectionError):
    """No key answers where a client-side connection looks (nothing listens there, or it
    does not speak CTAPHID): the message names the place and what would serve it."""


def simulated_descriptor(
    path: str, product_name: str = PRODUCT_NAME, serial_number: str | None = None
) -> HidDescriptor:
    """The descriptor of a simulated key reached at ``path`` (e.g. ``udp:127.0.0.1:8111``)."""
    return HidDescriptor(
        path=path,
        vid=VENDOR_ID,
        pid=PRODUCT_ID,
        report_size_in=REPORT_SIZE,
        report_size_out=REPORT_SIZE,
        product_name=product_name,
        serial_number=serial_number,
    )
