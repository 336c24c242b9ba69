"""Host-side tests of transports.uhid that need no kernel UHID (the VM tests cover the rest)."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from vfido.transports import uhid


def test_event_size_matches_the_kernel_struct() -> None:
    # sizeof(struct uhid_event) on x86-64 (checked with gcc against linux/uhid.h): 4380.
    assert uhid.UHID_EVENT_SIZE == 4380
    assert len(uhid._event(uhid.UhidEventType.DESTROY)) == 4380


def test_create2_layout() -> None:
    event = uhid.encode_create2(
        name="n", phys="p", uniq="serial-1", vendor_id=0x1209, product_id=0x0001
    )
    assert len(event) == uhid.UHID_EVENT_SIZE
    assert struct.unpack_from("<I", event)[0] == 11  # UHID_CREATE2
    body = event[4:]
    assert body[:128].rstrip(b"\0") == b"n"
    assert body[128:192].rstrip(b"\0") == b"p"
    assert body[192:256].rstrip(b"\0") == b"serial-1"
    rd_size, bus, vendor, product, version, country = struct.unpack_from("<HHIIII", body, 256)
    assert (bus, vendor, product, version, country) == (0x03, 0x1209, 0x0001, 0, 0)
    descriptor = body[276 : 276 + rd_size]
    assert descriptor == uhid.FIDO_REPORT_DESCRIPTOR
    # FIDO usage page 0xF1D0, usage CTAPHID, 64-byte input and output reports.
    assert descriptor[:5] == bytes([0x06, 0xD0, 0xF1, 0x09, 0x01])
    assert descriptor.count(bytes([0x95, 64])) == 2


def test_input2_layout() -> None:
    report = bytes(range(64))
    event = uhid.encode_input2(report)
    assert struct.unpack_from("<IH", event) == (12, 64)
    assert event[6:70] == report
    assert event[70:] == bytes(len(event) - 70)


def test_output_report_id_byte_is_stripped() -> None:
    packet = bytes(range(1, 65))
    body = (b"\0" + packet).ljust(uhid.UHID_DATA_MAX, b"\0") + struct.pack("<HB", 65, 1)
    data, rtype = uhid.decode_output(body)
    assert rtype == 1
    assert uhid.output_to_packet(data) == packet
    assert uhid.output_to_packet(packet) == packet
    assert uhid.output_to_packet(b"\x01" + packet) is None  # 65 bytes with a report id != 0
    assert uhid.output_to_packet(b"\0" * 100) is None
    # A short write: its report id (0x00) goes, as usbhid drops it for a USB key.
    short = bytes([0x12, 0x34, 0x56, 0x78, 0x81, 0, 1, 0x99])
    assert uhid.output_to_packet(b"\0" + short) == short.ljust(64, b"\0")


@pytest.mark.parametrize("serial", ["", "has space", "é", "x" * 64])
def test_bad_serials_rejected(serial: str) -> None:
    with pytest.raises(ValueError):
        uhid.validate_serial(serial)


def test_find_hidraw_matches_hid_uniq(tmp_path: Path) -> None:
    for index, serial in enumerate(["vfido-a", "vfido-ab"]):
        device = tmp_path / f"0003:1209:0001.000{index + 1}"
        (device / "hidraw" / f"hidraw{index + 3}").mkdir(parents=True)
        (device / "uevent").write_text(
            f"DRIVER=hid-generic\nHID_ID=0003:00001209:00000001\nHID_UNIQ={serial}\n"
        )
    assert uhid.find_hidraw("vfido-ab", tmp_path) == "/dev/hidraw4"
    assert uhid.find_hidraw("vfido-a", tmp_path) == "/dev/hidraw3"
    assert uhid.find_hidraw("vfido", tmp_path) is None
    assert uhid.find_hidraw("vfido-a", tmp_path / "missing") is None


class NullHandler:
    def handle_cbor(self, request: bytes, transaction: object) -> bytes:
        return b"\x01"

    def handle_msg(self, apdu: bytes, transaction: object) -> bytes:
        return b"\x6d\x00"

    def wink(self) -> None:
        pass

    def power_cycle(self) -> None:
        pass


def test_missing_uhid_says_what_to_do(tmp_path: Path) -> None:
    transport = uhid.UhidTransport(NullHandler(), serial="t-1", path=str(tmp_path / "uhid"))
    with pytest.raises(uhid.UhidUnavailableError, match="modprobe uhid"):
        transport.start()
    assert transport.hidraw_path() is None
    transport.stop()


def test_permission_denied_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Root ignores file modes, so EACCES is injected at the one syscall that would return it.
    def denied(path: str, flags: int, mode: int = 0o777) -> int:
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(uhid.os, "open", denied)
    transport = uhid.UhidTransport(NullHandler(), serial="t-2", path=str(tmp_path / "uhid"))
    with pytest.raises(uhid.UhidUnavailableError, match="vfido install-udev"):
        transport.start()
    transport.stop()


def test_other_open_errors_are_reported(tmp_path: Path) -> None:
    transport = uhid.UhidTransport(NullHandler(), serial="t-3", path=str(tmp_path))
    with pytest.raises(uhid.UhidUnavailableError, match="cannot open"):
        transport.start()
    transport.stop()


def test_device_phys_names_the_creating_uid(tmp_path: Path) -> None:
    """udev/70-vfido.rules gives the hidraw node to the uid in the HID "phys" (issue #15, low 5):
    the transport writes ``vfido-uid/<its uid>`` there, never anything the caller chooses."""
    fake = tmp_path / "uhid"
    fake.touch()
    transport = uhid.UhidTransport(
        _NoHandler(), serial="vfido-phys-1", path=str(fake), name="some name"
    )
    transport._create()
    try:
        event = fake.read_bytes()
    finally:
        transport.stop()
    assert struct.unpack_from("<I", event)[0] == uhid.UhidEventType.CREATE2
    body = event[4:]
    assert body[128:192].rstrip(b"\0") == f"vfido-uid/{os.getuid()}".encode()
    assert body[192:256].rstrip(b"\0") == b"vfido-phys-1"


def test_udev_rule_matches_only_the_phys_vfido_writes() -> None:
    """The rule's phys pattern and the uid extraction fit what the transport writes."""
    rules = (Path(__file__).resolve().parents[2] / "udev" / "70-vfido.rules").read_text()
    active = [line for line in rules.splitlines() if line and not line.startswith("#")]
    assert 'DEVPATH!="/devices/virtual/misc/uhid/*", GOTO="vfido_end"' in active
    assert f'ENV{{HID_PHYS}}!="{uhid.OWNER_PHYS_PREFIX}?*", GOTO="vfido_end"' in active
    owner = [line for line in active if "OWNER=" in line]
    assert owner == ['OWNER="$env{VFIDO_OWNER_UID}", GROUP="root", MODE="0600"']
    # No hidraw rule hands the node to a group any more, and no rule matches by vid:pid alone.
    assert not [line for line in active if 'GROUP="vfido"' in line and "uhid" not in line]
    assert not [line for line in active if "1209:0001" in line]


class _NoHandler:
    def handle_cbor(self, request: bytes, transaction: object) -> bytes:
        raise AssertionError("not called")

    def handle_msg(self, apdu: bytes, transaction: object) -> bytes:
        raise AssertionError("not called")

    def wink(self) -> None:
        pass

    def power_cycle(self) -> None:
        pass
