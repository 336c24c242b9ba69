"""A CBOR null where a request member belongs is a member of the wrong type, for every command,
in the parameter map and in a subCommandParams map.

CTAP 2.1 section 6.1.2 step 3.1.2: "If the values of any known members have the wrong type then
return an error, for example CTAP2_ERR_CBOR_UNEXPECTED_TYPE." No CTAP request member is
nullable. One rule (``cbor.refuse_null_members``, applied by dispatch and by the three commands
with subCommandParams) answers it; before it, makeCredential and getAssertion answered
CBOR_UNEXPECTED_TYPE, while clientPIN, credentialManagement, authenticatorConfig and
bioEnrollment read null as absent or answered MISSING_PARAMETER, and largeBlobs
INVALID_PARAMETER. No platform sends null (python-fido2's encoder refuses None; libfido2,
Chromium and authenticator-rs put only present members in their maps).
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
    "authenticatorConfig setMinPINLength minPinLengthRPIDs": (0x0D, {1: 3, 2: {2: None}}),
    "bioEnrollment enrollBegin timeout": (0x09, {1: 1, 2: 1, 3: {3: None}}),
    "bioEnrollment setFriendlyName templateId": (0x09, {1: 1, 2: 5, 3: {1: None, 2: "x"}}),
    "credentialManagement enumerateCredentialsBegin rpIDHash": (0x0A, {1: 4, 2: {1: None}}),
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
        without = {
            k: ({kk: vv for kk, vv in v.items() if vv is not None} if isinstance(v, dict) else v)
            for k, v in members.items()
            if v is not None
        }
        status, _ = key.raw(command, cbor.encode(without))
        assert status != CtapStatus.CBOR_UNEXPECTED_TYPE, name


def test_an_absent_subcommand_parameter_is_missing_and_a_null_one_of_the_wrong_type() -> None:
    with pytest.raises(CtapError) as null:
        CredentialManagementRequest.from_cbor_map({1: 4, 2: {1: None}})
    assert null.value.status == CtapStatus.CBOR_UNEXPECTED_TYPE
    with pytest.raises(CtapError) as absent:
        CredentialManagementRequest.from_cbor_map({1: 4, 2: {}}).param(1, bytes)
    assert absent.value.status == CtapStatus.MISSING_PARAMETER
