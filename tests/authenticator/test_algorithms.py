"""PS256, ES256K, ML-DSA-87 and the fully-specified COSE identifiers, each through a whole
registration and sign-in that python-fido2's Fido2Server verifies (attestation included),
and what the default getInfo may advertise (Firefox's authenticator-rs must parse it)."""

from __future__ import annotations

import pytest
from fido2.webauthn import PublicKeyCredentialParameters, PublicKeyCredentialType

from tests.rp import RelyingParty, attestation_fmt, register, sign_in
from tests.vkey import running_key
from vfido.authenticator.attestation import MLDSA_SELF_ATTESTED
from vfido.authenticator.config import Config
from vfido.authenticator.cose import (
    ED25519,
    ES256K,
    ESP256,
    ESP384,
    ESP512,
    FULLY_SPECIFIED_ALGORITHMS,
    MLDSA87,
    MLDSA_ALGORITHMS,
    PS256,
    mldsa_unavailable_reason,
)

#: The COSE algorithms of mozilla/authenticator-rs's closed ``COSEAlgorithm`` enum
#: (src/crypto/mod.rs) that are signature algorithms: a getInfo naming any algorithm
#: outside the enum fails to parse and Firefox treats the key as U2F-only.
AUTHENTICATOR_RS_SIGNATURE_ALGORITHMS = frozenset(
    {-65535, -259, -258, -257, -47, -46, -39, -38, -37, -36, -35, -8, -7}
)

NAMES = {PS256: "PS256", ES256K: "ES256K", ESP256: "ESP256", ESP384: "ESP384"}
NAMES |= {ESP512: "ESP512", ED25519: "Ed25519", MLDSA87: "ML-DSA-87"}

needs_mldsa = pytest.mark.skipif(
    mldsa_unavailable_reason() is not None, reason=f"{mldsa_unavailable_reason()}"
)


@pytest.mark.parametrize(
    "alg",
    [PS256, ES256K, ESP256, ED25519, ESP384, ESP512, pytest.param(MLDSA87, marks=needs_mldsa)],
    ids=NAMES.get,
)
@pytest.mark.parametrize("rk", [False, True], ids=["server-side", "discoverable"])
def test_register_and_sign_in(alg: int, rk: bool) -> None:
    config = Config(fully_specified_algorithms=True, mldsa=alg == MLDSA87)
    with running_key(config=config) as key:
        rp = RelyingParty(root_der=key.root_der)
        rp.server.allowed_algorithms = [
            PublicKeyCredentialParameters(type=PublicKeyCredentialType.PUBLIC_KEY, alg=alg)
        ]
        client = key.client()
        response = register(client, rp, rk=rk)
        cred = rp.credentials[-1]
        assert cred.public_key[3] == alg
        assert attestation_fmt(response) == "packed"
        statement = response.response.attestation_object.att_stmt
        if alg in MLDSA_ALGORITHMS and alg in MLDSA_SELF_ATTESTED:
            assert "x5c" not in statement
        else:
            # ML-DSA-87 too: its self-attested response would not fit a CTAPHID message.
            assert "x5c" in statement and statement["alg"] == -7
        assert sign_in(client, rp) == 1
        assert sign_in(client, rp, allow=not rk) == 2


def test_default_get_info_parses_in_authenticator_rs() -> None:
    """Every default algorithm except ML-DSA (opt-in on its own switch) is in the enum;
    the fully-specified identifiers are not, so they are opt-in."""
    default = Config().algorithms
    assert PS256 in default and ES256K in default
    classical = [a for a in default if a not in MLDSA_ALGORITHMS]
    assert set(classical) <= AUTHENTICATOR_RS_SIGNATURE_ALGORITHMS
    assert not set(FULLY_SPECIFIED_ALGORITHMS) & AUTHENTICATOR_RS_SIGNATURE_ALGORITHMS
    assert not set(FULLY_SPECIFIED_ALGORITHMS) & set(default)
    assert set(FULLY_SPECIFIED_ALGORITHMS) <= set(
        Config(fully_specified_algorithms=True).algorithms
    )


def test_default_key_refuses_fully_specified() -> None:
    from fido2.ctap import CtapError

    from tests.ctap2_helpers import CLIENT_DATA_HASH, make_key, params, rp, user

    key = make_key()
    with pytest.raises(CtapError, match="UNSUPPORTED_ALGORITHM"):
        key.ctap2().make_credential(CLIENT_DATA_HASH, rp(), user(), params(ESP256))


def test_mldsa87_follows_the_mldsa_switch() -> None:
    assert MLDSA87 not in Config(mldsa=False).algorithms
    if mldsa_unavailable_reason() is None:
        assert MLDSA87 in Config(mldsa=True).algorithms


def test_only_fully_specified_is_refused_when_off() -> None:
    with pytest.raises(ValueError, match="fully_specified_algorithms"):
        Config(algorithms=(ESP256,))
    assert Config(algorithms=(ESP256,), fully_specified_algorithms=True).algorithms == (ESP256,)
