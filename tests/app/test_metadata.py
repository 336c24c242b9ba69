"""`vfido metadata` (vfido.metadata): the statement parses as MDS3, describes the key's real
getInfo, and a relying party that trusts only what the statement says verifies this key's
attestation (python-fido2's MdsAttestationVerifier, py_webauthn with the statement's root)
and refuses another keystore's."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import webauthn
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from fido2.attestation import UntrustedAttestation
from fido2.mds3 import MdsAttestationVerifier, MetadataBlobPayload, MetadataStatement
from fido2.server import Fido2Server
from fido2.webauthn import (
    PublicKeyCredentialRpEntity,
    PublicKeyCredentialUserEntity,
    UserVerificationRequirement,
)
from webauthn.helpers.exceptions import InvalidRegistrationResponse
from webauthn.helpers.structs import AttestationFormat

from tests.rp import ORIGIN, RP_ID, challenge_of
from tests.service_helpers import vfido
from tests.vkey import Key, running_key
from vfido import personas
from vfido.authenticator.config import Config
from vfido.authenticator.cose import can_sign
from vfido.backup import backup_eligible_identity
from vfido.key import get_info
from vfido.keystore import kdf
from vfido.keystore.sqlite_store import SqliteKeyStore
from vfido.keystore.store import KeyStore
from vfido.metadata import metadata_statement


@pytest.fixture(scope="module")
def key() -> Iterator[Key]:
    with running_key() as k:
        yield k


def blob_with(statement: dict[str, Any]) -> MetadataBlobPayload:
    """A local MDS BLOB payload holding one entry: this statement."""
    return MetadataBlobPayload.from_dict(
        {
            "legalHeader": "local",
            "no": 1,
            "nextUpdate": "2099-01-01",
            "entries": [
                {
                    "aaguid": statement["aaguid"],
                    "metadataStatement": statement,
                    "statusReports": [{"status": "NOT_FIDO_CERTIFIED"}],
                    "timeOfLastStatusChange": "2026-01-01",
                }
            ],
        }
    )


def register(key: Key, server: Fido2Server) -> tuple[Any, Any, Any]:
    options, state = server.register_begin(
        PublicKeyCredentialUserEntity(id=b"user-1", name="alice", display_name="Alice"),
        user_verification=UserVerificationRequirement.DISCOURAGED,
    )
    response = key.client().make_credential(options.public_key)
    return options, state, response


def server_trusting(statement: dict[str, Any]) -> Fido2Server:
    return Fido2Server(
        PublicKeyCredentialRpEntity(name="Example", id=RP_ID),
        attestation="direct",
        verify_attestation=MdsAttestationVerifier(blob_with(statement)),
    )


def pem_roots(statement: dict[str, Any]) -> dict[AttestationFormat, list[bytes]]:
    roots = [
        x509.load_der_x509_certificate(base64.b64decode(c)).public_bytes(serialization.Encoding.PEM)
        for c in statement["attestationRootCertificates"]
    ]
    return {AttestationFormat.PACKED: roots}


def statement_of(store: KeyStore, config: Config | None = None) -> dict[str, Any]:
    """`vfido metadata`'s statement of a keystore no key serves."""
    return metadata_statement(store, config, get_info(store, config))


def test_statement_is_mds3_and_describes_the_key(key: Key) -> None:
    statement = statement_of(key.store)
    parsed = MetadataStatement.from_dict(statement)
    identity = key.store.identity()
    assert parsed.aaguid is not None and bytes(parsed.aaguid) == identity.aaguid
    assert parsed.schema == 3 and parsed.protocol_family == "fido2"
    assert list(parsed.attestation_root_certificates) == [identity.attestation_chain[-1]]
    assert parsed.attestation_types == ["basic_full"]
    assert parsed.key_protection == ["software"] and parsed.matcher_protection == ["software"]
    assert parsed.attachment_hint == ["external", "wired"]
    assert [(v.major, v.minor) for v in parsed.upv] == [(1, 3), (1, 1), (1, 0)]
    assert parsed.multi_device_credential_support == "unsupported"
    info = get_info(key.store, Config())
    got = statement["authenticatorGetInfo"]
    assert got["aaguid"] == identity.aaguid.hex()
    assert got["versions"] == info[1] and got["extensions"] == info[2]
    assert got["algorithms"] == info[10] and got["options"] == info[4]
    assert "remainingDiscoverableCredentials" not in got
    assert {e.id for e in parsed.supported_extensions or []} == set(info[2])
    names = {
        -7: "secp256r1_ecdsa_sha256_raw",
        -8: "ed25519_eddsa_sha512_raw",
        -257: "rsassa_pkcsv15_sha256_raw",
    }
    algs = [a["alg"] for a in info[10]]
    for alg, name in names.items():
        assert (name in (parsed.authentication_algorithms or [])) == (alg in algs)
    methods = [[m.user_verification_method for m in c] for c in parsed.user_verification_details]
    assert ["passcode_external", "presence_internal"] in methods
    json.dumps(statement)  # plain JSON


def test_attestation_verifies_against_the_statement_root(key: Key) -> None:
    statement = statement_of(key.store)
    server = server_trusting(statement)
    options, state, response = register(key, server)
    auth_data = server.register_complete(state, response)
    assert auth_data.credential_data is not None
    assert bytes(auth_data.credential_data.aaguid) == key.store.identity().aaguid
    verified = webauthn.verify_registration_response(
        credential=json.dumps(dict(response)),
        expected_challenge=challenge_of(options),
        expected_rp_id=RP_ID,
        expected_origin=ORIGIN,
        pem_root_certs_bytes_by_fmt=pem_roots(statement),
    )
    assert verified.fmt == AttestationFormat.PACKED
    assert verified.aaguid == str(statement["aaguid"])


def test_another_keystores_statement_does_not_trust_this_key(key: Key) -> None:
    """Same AAGUID, other root: the attestation must not verify (so the test above can fail)."""
    with SqliteKeyStore.ephemeral(aaguid=key.store.identity().aaguid) as other:
        statement = statement_of(other)
    server = server_trusting(statement)
    options, state, response = register(key, server)
    with pytest.raises(UntrustedAttestation):
        server.register_complete(state, response)
    with pytest.raises(InvalidRegistrationResponse):
        webauthn.verify_registration_response(
            credential=json.dumps(dict(response)),
            expected_challenge=challenge_of(options),
            expected_rp_id=RP_ID,
            expected_origin=ORIGIN,
            pem_root_certs_bytes_by_fmt=pem_roots(statement),
        )


def test_backup_eligible_keystore_says_explicit(tmp_path: Path) -> None:
    with SqliteKeyStore.create(
        tmp_path / "ks",
        "pass",
        kdf_params=kdf.insecure_test_params(),
        identity=backup_eligible_identity(),
    ) as store:
        assert statement_of(store)["multiDeviceCredentialSupport"] == "explicit"
        assert statement_of(store, Config(attestation="self"))["attestationTypes"] == [
            "basic_surrogate",
            "basic_full",  # its U2F registrations
        ]


def test_cli_prints_the_statement(tmp_path: Path) -> None:
    directory = tmp_path / "ks"
    assert vfido(["init", "--keystore", str(directory)]).returncode == 0
    result = vfido(["metadata", "--keystore", str(directory)])
    assert result.returncode == 0, result.stderr
    statement = json.loads(result.stdout)
    with SqliteKeyStore.open(directory, "correct horse battery staple") as store:
        identity = store.identity()
    assert statement["aaguid"].replace("-", "") == identity.aaguid.hex()
    assert (
        base64.b64decode(statement["attestationRootCertificates"][0])
        == (identity.attestation_chain[-1])
    )
    assert MetadataStatement.from_dict(statement).description.startswith("vfido")


# --- what a relying party's metadata check compares (session 16's review) ------------------

#: FIDO Registry name -> the COSE algorithms it names, as a relying party's metadata check
#: maps them (SimpleWebAuthn's verifyAttestationWithMetadata refuses a credential whose
#: algorithm no name in authenticationAlgorithms covers). Written from the Registry, not
#: from vfido.metadata.
REGISTRY_NAMES = {
    "secp256r1_ecdsa_sha256_raw": {-7, -9},
    "ed25519_eddsa_sha512_raw": {-8, -19},
    "secp384r1_ecdsa_sha384_raw": {-35, -51},
    "secp521r1_ecdsa_sha512_raw": {-36, -52},
    "rsassa_pss_sha256_raw": {-37},
    "rsassa_pkcsv15_sha256_raw": {-257},
    "secp256k1_ecdsa_sha256_raw": {-47},
}


def _covered(statement: dict[str, Any]) -> set[int]:
    names = statement["authenticationAlgorithms"]
    assert set(names) <= set(REGISTRY_NAMES), names
    assert len(set(names)) == len(names), names  # each once (MDS3: a set of names)
    return set().union(*(REGISTRY_NAMES[n] for n in names))


def test_every_algorithm_the_key_makes_credentials_with_is_named() -> None:
    """Every credential a default key makes has its algorithm in authenticationAlgorithms
    (PS256 and ES256K were left out), registered for real, each alone in the request."""
    with running_key() as key:
        statement = statement_of(key.store)
        for alg in [a["alg"] for a in get_info(key.store, Config())[10]]:
            if alg in (-48, -49, -50):
                continue  # ML-DSA: no Registry name yet (the module docstring says so)
            server = Fido2Server(PublicKeyCredentialRpEntity(name="Example", id=RP_ID))
            options, state = server.register_begin(
                PublicKeyCredentialUserEntity(id=b"user-1", name="alice"),
                user_verification=UserVerificationRequirement.DISCOURAGED,
            )
            public_key = dict(options.public_key)
            public_key["pubKeyCredParams"] = [{"type": "public-key", "alg": alg}]
            response = key.client().make_credential(public_key)
            auth_data = server.register_complete(state, response)
            assert auth_data.credential_data is not None
            assert auth_data.credential_data.public_key[3] in _covered(statement), alg


def test_fully_specified_algorithms_do_not_repeat_a_name() -> None:
    """ES256 and ESP256 (EdDSA and Ed25519, ...) are one Registry algorithm each: named once
    (a session 16 diff review found them twice)."""
    store = SqliteKeyStore.ephemeral()
    try:
        config = Config(fully_specified_algorithms=True)
        assert {-9, -19} <= set(config.algorithms)
        assert set(config.algorithms) - {-48, -49, -50} <= _covered(statement_of(store, config))
    finally:
        store.close()


def test_a_ctap20_keys_statement_names_its_algorithms() -> None:
    """A CTAP 2.0 getInfo has no "algorithms": the statement still names what the key makes
    (it was empty for the ctap20 persona)."""
    config = personas.load("ctap20").config
    store = SqliteKeyStore.ephemeral()
    try:
        covered = _covered(statement_of(store, config))
    finally:
        store.close()
    assert set(config.algorithms) <= covered and covered


def test_user_verification_details_describe_the_built_in_uv() -> None:
    """A key with built-in UV sets the UV flag without a PIN: its statement lists an internal
    method (a fingerprint key: fingerprint_internal, as its getInfo uvModality says)."""
    cases = {
        Config(): None,
        Config(builtin_uv=True): "passcode_internal",
        Config(fingerprint=True): "fingerprint_internal",
    }
    for config, internal in cases.items():
        store = SqliteKeyStore.ephemeral()
        try:
            statement = statement_of(store, config)
        finally:
            store.close()
        methods = {
            m["userVerificationMethod"]
            for combination in statement["userVerificationDetails"]
            for m in combination
        }
        assert methods - {"presence_internal", "passcode_external"} == (
            {internal} if internal else set()
        ), config


def test_changing_get_info_members_are_left_out_and_strength_is_the_weakest() -> None:
    """The getInfo copy is the model's: nothing that differs between two getInfo calls of one
    key (encIdentifier, encCredStoreState: a fresh IV) or as it is used. cryptoStrength is
    the weakest algorithm's: RSA-2048 is 112 bits (NIST SP 800-57)."""
    with running_key() as key:
        first, second = statement_of(key.store), statement_of(key.store)
        assert first["authenticatorGetInfo"] == second["authenticatorGetInfo"]
        for member in (
            "encIdentifier",
            "encCredStoreState",
            "uvCountSinceLastPinEntry",
            "remainingDiscoverableCredentials",
        ):
            assert member not in first["authenticatorGetInfo"]
        assert first["cryptoStrength"] == 112
        ecdsa_only = SqliteKeyStore.ephemeral()
        try:
            assert statement_of(ecdsa_only, Config(algorithms=(-7,)))["cryptoStrength"] == 128
        finally:
            ecdsa_only.close()


def test_ml_dsa_self_attestation_is_a_listed_attestation_type() -> None:
    """ML-DSA-44/65 credentials are self-attested (packed without x5c): the statement lists
    basic_surrogate beside basic_full."""
    if not can_sign(-48):
        pytest.skip("this runtime has no ML-DSA")
    store = SqliteKeyStore.ephemeral()
    try:
        config = Config(mldsa=True)
        types = statement_of(store, config)["attestationTypes"]
        assert types == ["basic_full", "basic_surrogate"]
        assert statement_of(store, Config())["attestationTypes"] == ["basic_full"]
    finally:
        store.close()


@pytest.mark.parametrize(
    ("config", "u2f", "types", "anchored"),
    [
        (Config(), True, ["basic_full"], True),
        (Config(attestation="self"), False, ["basic_surrogate"], False),
        (Config(attestation="none"), False, ["none"], False),
        # U2F REGISTER and enterprise attestation carry the batch chain, whatever the default.
        (Config(attestation="self"), True, ["basic_surrogate", "basic_full"], True),
        (Config(attestation="none"), True, ["none", "basic_full"], True),
        (
            Config(attestation="self", enterprise_attestation=2),
            False,
            ["basic_surrogate", "basic_full"],
            True,
        ),
    ],
)
def test_the_root_is_listed_exactly_when_an_attestation_chains_to_it(
    config: Config, u2f: bool, types: list[str], anchored: bool
) -> None:
    """MDS attestationRootCertificates: "When supporting surrogate basic attestation only
    ... no attestation trust anchor is required/used. So this array MUST be empty in that
    case." (the FIDO conformance tools' Metadata-Stmt-1 P-27 and MakeCred-Resp-1 P-06). A key
    that also speaks U2F signs every registration with the batch certificate, so a relying
    party needs the root for those. ``u2f=False``: getInfo as a key with alwaysUv on (no
    U2F_V2) reports it."""
    store = SqliteKeyStore.ephemeral()
    try:
        info = dict(get_info(store, config))
        if not u2f:
            info[1] = [v for v in info[1] if v != "U2F_V2"]
        statement = metadata_statement(store, config, info)
        assert statement["attestationTypes"] == types
        roots = [base64.b64decode(r) for r in statement["attestationRootCertificates"]]
        assert roots == ([store.identity().attestation_chain[-1]] if anchored else [])
    finally:
        store.close()
