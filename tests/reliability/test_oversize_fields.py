"""Oversize rp id / user fields and credential ids, up to the largest CTAPHID message.

Each field of makeCredential and getAssertion is made 0, 64, 65, 255, 1,024
bytes long and as long as a 7,609-byte CTAPHID message allows, and sent through
the CTAPHID core (reassembly of up to 129 reports) to the authenticator. Every
answer must be a defined CTAP status other than ERR_OTHER (what an internal
exception becomes), an OK answer a CBOR map, the key must keep working, and
whatever gets stored stays within the limits (user names truncated to 64 bytes,
user ids of at most 64 bytes).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from fido2 import cbor as fido_cbor

from tests.ctap2_helpers import (
    Key,
    descriptor,
    get_assertion_map,
    make_credential_map,
    make_key,
    rp,
    user,
)
from vfido.authenticator.errors import CtapStatus
from vfido.transports.ctaphid import (
    BROADCAST_CID,
    MAX_MESSAGE_SIZE,
    TYPE_INIT,
    Command,
    CtapHidCore,
    Request,
    encode_message,
)
from vfido.transports.runner import HidTransaction

VALID_STATUSES = {int(s) for s in CtapStatus} - {int(CtapStatus.OTHER)}
SIZES = [0, 64, 65, 255, 1024, "max"]


class Framed:
    """A CtapHidCore in front of the key's authenticator: whole messages in and out."""

    def __init__(self, key: Key) -> None:
        self.key = key
        self.core = CtapHidCore()
        out = self.core.feed(
            encode_message(BROADCAST_CID, Command.INIT, b"12345678")[0], time.monotonic()
        )
        report = out[0]
        assert isinstance(report, bytes)
        self.channel = int.from_bytes(report[15:19], "big")

    def cbor(self, command: int, params: dict[int, Any]) -> tuple[int, Any]:
        message = bytes([command]) + fido_cbor.encode(params)
        assert len(message) <= MAX_MESSAGE_SIZE, len(message)
        answer = b""
        reports: list[bytes] = []
        for report in encode_message(self.channel, Command.CBOR, message):
            for item in self.core.feed(report, time.monotonic()):
                if isinstance(item, Request):
                    transaction = HidTransaction(item.channel, item.transaction)
                    answer = self.key.authenticator.handle_cbor(item.payload, transaction)
                    reports += self.core.respond(item.transaction, answer)
                else:
                    assert isinstance(item, bytes)
                    reports.append(item)
        assert reports and all(len(r) == 64 for r in reports)
        assert reports[0][4] == TYPE_INIT | Command.CBOR, "a CTAPHID error, not a CTAP answer"
        assert len(answer) == int.from_bytes(reports[0][5:7], "big")
        status = answer[0]
        assert status in VALID_STATUSES, f"status 0x{status:02x}"
        body = fido_cbor.decode(answer[1:]) if len(answer) > 1 else None
        if status == CtapStatus.OK:
            assert isinstance(body, dict)
        return status, body


def _fill(size: int | str, base: dict[int, Any], put: Callable[[Any], None], text: bool) -> None:
    """Put a field of ``size`` bytes (or the largest that still fits) into ``base``."""
    unit: Any = "a" if text else b"\xaa"
    if size != "max":
        assert isinstance(size, int)
        put(unit * size)
        return
    low, high = 0, MAX_MESSAGE_SIZE
    while low < high:  # the largest field that keeps the message within 7609 bytes
        mid = (low + high + 1) // 2
        put(unit * mid)
        if 1 + len(fido_cbor.encode(base)) <= MAX_MESSAGE_SIZE:
            low = mid
        else:
            high = mid - 1
    put(unit * low)
    assert low > 7000


def _make_credential_fields() -> dict[str, Callable[[dict[int, Any], Any], None]]:
    def setter(*path: Any) -> Callable[[dict[int, Any], Any], None]:
        def put(m: dict[int, Any], value: Any) -> None:
            target = m
            for p in path[:-1]:
                target = target[p]
            target[path[-1]] = value

        return put

    return {
        "rp.id": setter(2, "id"),
        "rp.name": setter(2, "name"),
        "user.id": setter(3, "id"),
        "user.name": setter(3, "name"),
        "user.displayName": setter(3, "displayName"),
        "clientDataHash": setter(1),
        "excludeList id": lambda m, v: m.__setitem__(5, [descriptor(v)]),
    }


MC_FIELDS = _make_credential_fields()
TEXT_FIELDS = {"rp.id", "rp.name", "user.name", "user.displayName"}


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("field", list(MC_FIELDS))
def test_make_credential_with_an_oversize_field(field: str, size: int | str) -> None:
    key = make_key()
    host = Framed(key)
    params = make_credential_map(rp=rp(), user=user(), options={"rk": True})
    _fill(size, params, lambda v: MC_FIELDS[field](params, v), field in TEXT_FIELDS)
    status, _ = host.cbor(0x01, params)
    if field == "clientDataHash" and size != 32:
        assert status != CtapStatus.OK
    for summary in key.store.list_credentials():
        record = summary.record
        assert len(record.user_id) <= 64
        for name in (record.user_name, record.user_display_name):
            assert name is None or len(name.encode()) <= 64
    # The key still works.
    assert host.cbor(0x01, make_credential_map(user=user(b"after")))[0] == CtapStatus.OK


GA_FIELDS: dict[str, Callable[[dict[int, Any], Any], None]] = {
    "rpId": lambda m, v: m.__setitem__(1, v),
    "clientDataHash": lambda m, v: m.__setitem__(2, v),
    "allowList id": lambda m, v: m.__setitem__(3, [descriptor(v)]),
}


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("field", list(GA_FIELDS))
def test_get_assertion_with_an_oversize_field(field: str, size: int | str) -> None:
    key = make_key()
    host = Framed(key)
    status, made = host.cbor(0x01, make_credential_map())
    assert status == CtapStatus.OK
    params = get_assertion_map(allow_list=[descriptor(b"x" * 16)])
    _fill(size, params, lambda v: GA_FIELDS[field](params, v), field == "rpId")
    status, _ = host.cbor(0x02, params)
    assert status != CtapStatus.OK  # nothing of ours matches an oversize or foreign field
    # The key still works.
    auth_data = made[2]
    id_length = int.from_bytes(auth_data[53:55], "big")
    cred_id = bytes(auth_data[55 : 55 + id_length])
    assert host.cbor(0x02, get_assertion_map(allow_list=[descriptor(cred_id)]))[0] == 0
