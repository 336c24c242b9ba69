"""End to end: python-fido2's Fido2Client drives the key through CTAPHID; two RP verifiers check.

These are the WebAuthn ceremonies a browser performs, for every algorithm, for
discoverable and server-side credentials, and for each attestation mode.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from fido2.client import ClientError
from fido2.ctap import CtapError
from fido2.ctap2.base import Ctap2
from fido2.webauthn import (
    PublicKeyCredentialDescriptor,
    PublicKeyCredentialParameters,
    PublicKeyCredentialType,
    RegistrationResponse,
    UserVerificationRequirement,
)

from tests.rp import (
    RP_ID,
    RelyingParty,
    assertion,
    attestation_fmt,
    random_user,
    register,
    sign_in,
)
from tests.vkey import Key, running_key
from vfido.authenticator.config import Config
from vfido.presence import DenyPresence

ALGORITHMS = {"ES256": -7, "EdDSA": -8, "ES384": -35, "ES512": -36, "RS256": -257}


@pytest.fixture(scope="module")
def key() -> Iterator[Key]:
    with running_key() as k:
        yield k


def register_alg(
    key: Key, rp: RelyingParty, alg: int, rk: bool
) -> tuple[bytes, RegistrationResponse]:
    """Register a random user with ``rp`` offering only ``alg``; (user ID, response)."""
    rp.server.allowed_algorithms = [
        PublicKeyCredentialParameters(type=PublicKeyCredentialType.PUBLIC_KEY, alg=alg)
    ]
    user = random_user()
    response = register(key.client(), rp, rk=rk, user=user)
    assert rp.credentials[-1].public_key[3] == alg
    return user[0], response


@pytest.mark.parametrize("rk", [False, True], ids=["server-side", "discoverable"])
@pytest.mark.parametrize("alg_name", list(ALGORITHMS))
def test_register_and_authenticate(key: Key, alg_name: str, rk: bool) -> None:
    rp = RelyingParty(root_der=key.root_der)
    user_id, response = register_alg(key, rp, ALGORITHMS[alg_name], rk)
    assert attestation_fmt(response) == "packed"
    first = sign_in(key.client(), rp)
    second = sign_in(key.client(), rp)
    assert second > first >= 1
    if rk:
        # A discoverable credential also answers an empty allowList, with its user handle.
        state, answer, challenge = assertion(key.client(), rp, allow=False)
        assert rp.complete_authentication(state, answer, challenge) > second
        assert answer.response.user_handle == user_id


def test_counters_are_per_credential_and_small(key: Key) -> None:
    rp_a, rp_b = RelyingParty(root_der=key.root_der), RelyingParty(root_der=key.root_der)
    register_alg(key, rp_a, -7, False)
    register_alg(key, rp_b, -7, False)
    counts_a = [sign_in(key.client(), rp_a) for _ in range(3)]
    counts_b = [sign_in(key.client(), rp_b) for _ in range(2)]
    assert counts_a == [1, 2, 3]
    assert counts_b == [1, 2]


@pytest.mark.parametrize("mode", ["self", "none"])
def test_attestation_modes(mode: str) -> None:
    with running_key(config=Config(attestation=mode)) as k:
        rp = RelyingParty(root_der=None, attestation="direct" if mode == "self" else "none")
        _, response = register_alg(k, rp, -7, False)
        assert attestation_fmt(response) == ("packed" if mode == "self" else "none")
        statement = response.response.attestation_object.att_stmt
        assert "x5c" not in statement
        sign_in(k.client(), rp)


def test_zero_counter_mode() -> None:
    with running_key(config=Config(constant_zero_counter=True)) as k:
        rp = RelyingParty(root_der=k.root_der)
        register_alg(k, rp, -7, True)
        assert [sign_in(k.client(), rp) for _ in range(3)] == [0, 0, 0]


def test_exclude_credentials_refuses_a_second_registration(key: Key) -> None:
    rp = RelyingParty(root_der=key.root_der)
    register_alg(key, rp, -7, False)
    with pytest.raises(ClientError) as info:
        register_alg(key, rp, -7, False)  # Fido2Server lists rp.credentials in excludeCredentials
    assert info.value.code == ClientError.ERR.DEVICE_INELIGIBLE
    assert info.value.cause.code == CtapError.ERR.CREDENTIAL_EXCLUDED


def test_unknown_credential_is_not_found(key: Key) -> None:
    rp = RelyingParty(root_der=key.root_der)
    register_alg(key, rp, -7, False)
    cred = rp.credentials[0]
    forged = bytearray(cred.credential_id)
    forged[-1] ^= 1
    options, _ = rp.server.authenticate_begin(
        [PublicKeyCredentialDescriptor(type=PublicKeyCredentialType.PUBLIC_KEY, id=bytes(forged))],
        user_verification=UserVerificationRequirement.DISCOURAGED,
    )
    with pytest.raises(ClientError) as info:
        key.client().get_assertion(options.public_key)
    assert info.value.code == ClientError.ERR.DEVICE_INELIGIBLE
    # the client probed silently; the key itself answers NO_CREDENTIALS
    with pytest.raises(CtapError) as err:
        Ctap2(key.device).get_assertion(
            RP_ID, os.urandom(32), [{"type": "public-key", "id": bytes(forged)}]
        )
    assert err.value.code == CtapError.ERR.NO_CREDENTIALS


def test_credential_from_another_rp_is_not_found(key: Key) -> None:
    rp = RelyingParty(root_der=key.root_der)
    register_alg(key, rp, -8, False)
    cred = rp.credentials[0]
    other = RelyingParty(root_der=key.root_der, rp_id="example.org", origin="https://example.org")
    options, _ = other.server.authenticate_begin(
        rp.credentials, user_verification=UserVerificationRequirement.DISCOURAGED
    )
    with pytest.raises(ClientError) as info:
        key.client(origin="https://example.org").get_assertion(options.public_key)
    assert info.value.code == ClientError.ERR.DEVICE_INELIGIBLE
    with pytest.raises(CtapError) as err:
        Ctap2(key.device).get_assertion(
            "example.org", os.urandom(32), [{"type": "public-key", "id": cred.credential_id}]
        )
    assert err.value.code == CtapError.ERR.NO_CREDENTIALS


def test_user_denies_presence() -> None:
    with running_key(presence=DenyPresence()) as k:
        rp = RelyingParty(root_der=k.root_der)
        with pytest.raises(ClientError) as info:
            register_alg(k, rp, -7, False)
        assert info.value.cause.code == CtapError.ERR.OPERATION_DENIED
