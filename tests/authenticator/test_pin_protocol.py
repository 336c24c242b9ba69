"""PIN/UV auth protocols 1 and 2 against python-fido2's client-side implementation."""

from __future__ import annotations

import os

import pytest
from fido2.cose import CoseKey
from fido2.ctap2.pin import PinProtocolV1, PinProtocolV2

from vfido.authenticator.errors import CtapError, CtapStatus
from vfido.authenticator.pin_protocol import PinProtocol, new_protocols

CLIENTS = {1: PinProtocolV1(), 2: PinProtocolV2()}


@pytest.mark.parametrize("version", [1, 2])
def test_shared_secret_and_messages_agree_with_python_fido2(version: int) -> None:
    ours: PinProtocol = new_protocols()[version]
    client = CLIENTS[version]
    key_agreement, client_secret = client.encapsulate(CoseKey(ours.get_public_key()))
    secret = ours.decapsulate(dict(key_agreement))
    assert secret == client_secret
    plaintext = os.urandom(64)
    assert ours.decrypt(secret, client.encrypt(client_secret, plaintext)) == plaintext
    assert client.decrypt(client_secret, ours.encrypt(secret, plaintext)) == plaintext
    message = os.urandom(40)
    tag = client.authenticate(client_secret, message)
    assert len(tag) == ours.auth_param_length
    assert ours.verify(secret, message, tag)
    assert not ours.verify(secret, message + b"x", tag)
    assert not ours.verify(secret, message, tag[:-1] + bytes([tag[-1] ^ 1]))
    # a pinUvAuthToken (32 bytes) used as an HMAC key
    token = os.urandom(32)
    assert ours.verify(token, message, client.authenticate(token, message))


@pytest.mark.parametrize("version", [1, 2])
def test_regenerate_changes_the_key(version: int) -> None:
    ours = new_protocols()[version]
    before = ours.get_public_key()
    ours.regenerate()
    assert ours.get_public_key() != before


@pytest.mark.parametrize(
    "bad",
    [
        "not a map",
        {1: 2, -1: 1, -2: b"\x00" * 32},  # no y
        {1: 2, -1: 2, -2: b"\x01" * 32, -3: b"\x02" * 32},  # wrong curve
        {1: 2, -1: 1, -2: b"\x01" * 32, -3: b"\x02" * 32},  # not on the curve
    ],
)
def test_bad_key_agreement_is_refused(bad: object) -> None:
    with pytest.raises(CtapError) as info:
        new_protocols()[2].decapsulate(bad)
    assert info.value.status in (CtapStatus.INVALID_PARAMETER, CtapStatus.CBOR_UNEXPECTED_TYPE)


@pytest.mark.parametrize("version,length", [(1, 15), (1, 0), (2, 16), (2, 33)])
def test_bad_ciphertext_lengths(version: int, length: int) -> None:
    with pytest.raises(CtapError):
        new_protocols()[version].decrypt(os.urandom(32), os.urandom(length))
