"""A CBOR null where a request member belongs is a member of the wrong type, for every command.

CTAP 2.1 section 6.1.2 step 3.1.2: "If the values of any known members have the wrong type then
return an error, for example CTAP2_ERR_CBOR_UNEXPECTED_TYPE." No CTAP request member is
nullable. One rule in dispatch (``_parameters``) answers it for every command; before it, the
same null was CBOR_UNEXPECTED_TYPE in makeCredential and getAssertion, read as absent by
clientPIN and credentialManagement, MISSING_PARAMETER in clientPIN's subCommand and
INVALID_PARAMETER in largeBlobs' offset. No platform sends null (python-fido2's encoder refuses
None; libfido2, Chromium and authenticator-rs put only present members in their maps).
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from tests.ctap2_helpers import Key, make_key, params, rp, user
from vfido.authenticator import cbor
from vfido.authenticator.config import Config
from vfido.authenticator.credential_management import CredentialManagementRequest
from vfido.authenticator.errors import CtapError, CtapStatus
from vfido.presence import AutoPresence

CDH = os.urandom(32)

REQUESTS: dict[str, tuple[int, dict[int, Any]]] = {
    "makeCredential excludeList": (0x01, {1: CDH, 2: rp(), 3: user(), 4: params(), 5: None}),
    "getAssertion allowList": (0x02, {1: "example.com", 2: CDH, 3: None}),
    "clientPIN pinUvAuthProtocol": (0x06, {1: None, 2: 1}),
    "clientPIN subCommand": (0x06, {1: 2, 2: None}),
    "credentialManagement subCommandParams": (0x0A, {1: 2, 2: None}),
    "largeBlobs offset": (0x0C, {1: 10, 3: None}),
    "authenticatorConfig subCommandParams": (0x0D, {1: 3, 2: None}),
    "bioEnrollment modality": (0x09, {1: None}),
}


def any_key() -> Key:
    """A key that has every command above (bioEnrollment: a fingerprint sensor)."""
    return make_key(Config(fingerprint=True), AutoPresence())


@pytest.mark.parametrize("name", sorted(REQUESTS))
def test_a_null_member_has_the_wrong_type(name: str) -> None:
    command, members = REQUESTS[name]
    status, _ = any_key().raw(command, cbor.encode(members))
    assert status == CtapStatus.CBOR_UNEXPECTED_TYPE, name


def test_the_same_requests_without_the_null_are_not_refused_for_their_type() -> None:
    """The cases above differ from a request the key takes in the null alone."""
    key = any_key()
    for name, (command, members) in REQUESTS.items():
        without = {k: v for k, v in members.items() if v is not None}
        status, _ = key.raw(command, cbor.encode(without))
        assert status != CtapStatus.CBOR_UNEXPECTED_TYPE, name


def test_a_null_subcommand_parameter_has_the_wrong_type_too() -> None:
    request = CredentialManagementRequest.from_cbor_map({1: 4, 2: {1: None}})
    with pytest.raises(CtapError) as null:
        request.param(1, bytes)
    assert null.value.status == CtapStatus.CBOR_UNEXPECTED_TYPE
    with pytest.raises(CtapError) as absent:
        request.param(2, dict)
    assert absent.value.status == CtapStatus.MISSING_PARAMETER
