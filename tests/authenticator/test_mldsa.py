"""Post-quantum ML-DSA-44 (COSE -48) and ML-DSA-65 (COSE -49) credentials, end to end.

python-fido2's Fido2Client drives the key over in-process CTAPHID; a Fido2Server
checks the registration (packed self attestation verified by python-fido2's
packed verifier) and every assertion with ``fido2.cose.MLDSA44/MLDSA65``. ML-DSA is
opt-in (``Config(mldsa=True)``, ``vfido run --mldsa``): Firefox cannot parse it in
getInfo (tests/authenticator/test_getinfo_platforms.py). The default, ``Config()``, leaves
ML-DSA out exactly as a runtime without it does.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from typing import Any

import cbor2
import pytest
from cryptography.exceptions import InvalidSignature
from fido2 import cose
from fido2.attestation.base import AttestationType
from fido2.attestation.packed import PackedAttestation
from fido2.client import ClientError, DefaultClientDataCollector, Fido2Client
from fido2.ctap import CtapError as Fido2CtapError
from fido2.ctap2.base import Ctap2
from fido2.ctap2.config import Config as FidoConfig
from fido2.server import Fido2Server
from fido2.webauthn import (
    AttestationObject,
    AuthenticatorData,
    PublicKeyCredentialParameters,
    PublicKeyCredentialRpEntity,
    PublicKeyCredentialType,
    PublicKeyCredentialUserEntity,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from tests.vkey import Key, running_key
from vfido.authenticator.attestation import max_make_credential_response_size
from vfido.authenticator.config import MLDSA_OFF, Config, mldsa_status
from vfido.authenticator.cose import (
    CLASSICAL_ALGORITHMS,
    MLDSA44,
    MLDSA65,
    MLDSA87,
    MLDSA_SIZES,
    CredentialKey,
    mldsa_unavailable_reason,
)
from vfido.authenticator.device import Authenticator
from vfido.authenticator.env import NullContext
from vfido.authenticator.errors import CtapStatus
from vfido.authenticator.get_info import MAX_CREDENTIAL_ID_LENGTH
from vfido.keystore.sqlite_store import SqliteKeyStore
from vfido.presence import AutoPresence
from vfido.transports import uhid
from vfido.transports.ctaphid import encode_message
from vfido.transports.udp import UdpTransport, free_ports, open_udp_device

RP_ID = "pq.example"
ORIGIN = "https://pq.example"

pytestmark = pytest.mark.skipif(
    mldsa_unavailable_reason() is not None,
    reason=f"ML-DSA unavailable here: {mldsa_unavailable_reason()}",
)

COSE_CLASSES: dict[int, Any] = {
    MLDSA44: getattr(cose, "MLDSA44", None),
    MLDSA65: getattr(cose, "MLDSA65", None),
}
ALG_IDS = {MLDSA44: "ML-DSA-44", MLDSA65: "ML-DSA-65"}
#: ML-DSA is off by default (Firefox cannot parse it in getInfo): these tests turn it on.
MLDSA_ON = Config(mldsa=True)


class SelfAttestationVerifier:
    """Fido2Server ``verify_attestation``: the packed statement must verify and be SELF."""

    def __init__(self) -> None:
        self.results: list[Any] = []

    def __call__(self, attestation_object: AttestationObject, client_data_hash: bytes) -> None:
        assert attestation_object.fmt == "packed"
        result = PackedAttestation().verify(
            attestation_object.att_stmt, attestation_object.auth_data, client_data_hash
        )
        assert result.attestation_type == AttestationType.SELF
        self.results.append(result)


def make_server(alg: int, verifier: SelfAttestationVerifier | None = None) -> Fido2Server:
    server = Fido2Server(
        PublicKeyCredentialRpEntity(name="PQ Example", id=RP_ID),
        attestation="direct",  # type: ignore[arg-type]
        verify_attestation=verifier,
    )
    server.allowed_algorithms = [
        PublicKeyCredentialParameters(type=PublicKeyCredentialType.PUBLIC_KEY, alg=alg)
    ]
    return server


@pytest.fixture(scope="module")
def key() -> Iterator[Key]:
    with running_key(config=MLDSA_ON) as k:
        yield k


def register(key: Key, server: Fido2Server, rk: bool) -> tuple[Any, Any]:
    user = PublicKeyCredentialUserEntity(id=os.urandom(16), name="pq-user")
    options, state = server.register_begin(
        user,
        resident_key_requirement=(
            ResidentKeyRequirement.REQUIRED if rk else ResidentKeyRequirement.DISCOURAGED
        ),
        user_verification=UserVerificationRequirement.DISCOURAGED,
    )
    response = key.client(ORIGIN).make_credential(options.public_key)
    auth_data = server.register_complete(state, response)
    return auth_data, response


@pytest.mark.parametrize("rk", [False, True], ids=["server-side", "discoverable"])
@pytest.mark.parametrize("alg", [MLDSA65, MLDSA44], ids=ALG_IDS.get)
def test_register_and_authenticate(key: Key, alg: int, rk: bool) -> None:
    verifier = SelfAttestationVerifier()
    server = make_server(alg, verifier)
    auth_data, response = register(key, server, rk)
    assert len(verifier.results) == 1  # the self attestation was checked

    att = response.response.attestation_object
    assert att.fmt == "packed"
    assert att.att_stmt["alg"] == alg
    assert "x5c" not in att.att_stmt
    assert len(att.att_stmt["sig"]) == MLDSA_SIZES[alg][1]

    credential = auth_data.credential_data
    public_key = credential.public_key
    assert isinstance(public_key, COSE_CLASSES[alg])
    assert public_key[1] == 7 and public_key[3] == alg and set(public_key) == {1, 3, -1}
    assert len(public_key[-1]) == MLDSA_SIZES[alg][0]
    assert len(credential.credential_id) <= MAX_CREDENTIAL_ID_LENGTH

    # The self-attestation signature verifies with the credential key as parsed by fido2.
    client_data_hash = response.response.client_data.hash
    COSE_CLASSES[alg](dict(public_key)).verify(
        bytes(att.auth_data) + client_data_hash, att.att_stmt["sig"]
    )

    for _ in range(2):
        options, state = server.authenticate_begin(
            [credential] if not rk else None,
            user_verification=UserVerificationRequirement.DISCOURAGED,
        )
        selection = key.client(ORIGIN).get_assertion(options.public_key)
        assertion = selection.get_response(0)
        # Fido2Server verifies the signature with the stored ML-DSA COSE key.
        server.authenticate_complete(state, [credential], assertion)
        raw = assertion.response
        assert len(raw.signature) == MLDSA_SIZES[alg][1]
        signed = bytes(raw.authenticator_data) + raw.client_data.hash
        public_key.verify(signed, raw.signature)
        # And a changed message does not.
        with pytest.raises(InvalidSignature):
            public_key.verify(signed + b"\x00", raw.signature)


def test_signature_by_another_key_is_rejected() -> None:
    one = CredentialKey.generate(MLDSA65)
    other = CredentialKey.generate(MLDSA65)
    message = b"authData || clientDataHash"
    one.cose_public_key().verify(message, one.sign(message))
    with pytest.raises(InvalidSignature):
        one.cose_public_key().verify(message, other.sign(message))


@pytest.mark.parametrize("alg", [MLDSA65, MLDSA44], ids=ALG_IDS.get)
def test_seed_round_trip(alg: int) -> None:
    key = CredentialKey.generate(alg)
    seed = key.private_bytes()
    assert len(seed) == 32
    loaded = CredentialKey.from_private_bytes(alg, seed)
    assert loaded.cose_public_key() == key.cose_public_key()
    message = os.urandom(64)
    key.cose_public_key().verify(message, loaded.sign(message))
    with pytest.raises(ValueError):
        CredentialKey.from_private_bytes(alg, seed[:31])
    assert "seed" not in repr(key) and seed.hex() not in repr(key)


def test_get_info_lists_mldsa_last() -> None:
    with running_key(config=MLDSA_ON) as key:
        info = Ctap2(key.device).get_info()
    algs = [a["alg"] for a in info.algorithms]
    assert algs[-3:] == [MLDSA44, MLDSA65, MLDSA87]
    assert algs[0] == -7
    assert info.max_msg_size == 7609
    assert MLDSA_ON.mldsa_unavailable is None
    assert mldsa_status(MLDSA_ON) == "ML-DSA-44, ML-DSA-65, ML-DSA-87 offered"


def _make_credential_request(alg: int) -> bytes:
    """A makeCredential request asking for every output that enlarges the response."""
    request = {
        1: hashlib.sha256(b"client data").digest(),
        2: {"id": RP_ID, "name": "PQ Example"},
        3: {"id": os.urandom(64), "name": "n" * 64, "displayName": "d" * 64},
        4: [{"type": "public-key", "alg": alg}],
        6: {
            "credProtect": 3,
            "credBlob": os.urandom(32),
            "hmac-secret": True,
            "largeBlobKey": True,
        },
        7: {"rk": True},
    }
    return b"\x01" + cbor2.dumps(request, canonical=True)


@pytest.mark.parametrize("attestation", ["packed", "self"])
@pytest.mark.parametrize("alg", [MLDSA65, MLDSA44], ids=ALG_IDS.get)
def test_largest_response_fits(alg: int, attestation: str) -> None:
    config = Config(attestation=attestation, mldsa=True)
    with running_key(config=config) as key:
        response = key.authenticator.handle_cbor(_make_credential_request(alg), NullContext())
    assert response[0] == CtapStatus.OK
    body = cbor2.loads(response[1:])
    att = AttestationObject.create(body[1], AuthenticatorData(body[2]), body[3])
    assert att.att_stmt["alg"] == alg and "x5c" not in att.att_stmt
    assert att.auth_data.extensions is not None and att.auth_data.extensions["credProtect"] == 3
    assert len(body[5]) == 32  # largeBlobKey
    assert len(response) <= max_make_credential_response_size(alg) <= config.max_msg_size


def test_mldsa_is_off_by_default() -> None:
    config = Config()
    assert config == Config(mldsa=False)
    assert MLDSA44 not in config.algorithms and MLDSA65 not in config.algorithms
    assert config.mldsa_unavailable == MLDSA_OFF
    assert mldsa_status(config) == f"unavailable: {MLDSA_OFF}"
    with running_key(config=config) as key:
        info = Ctap2(key.device).get_info()
        algs = [a["alg"] for a in info.algorithms]
        assert algs == list(CLASSICAL_ALGORITHMS)
        # The authenticator itself refuses, with the CTAP status for it.
        with pytest.raises(Fido2CtapError) as err:
            Ctap2(key.device).make_credential(
                hashlib.sha256(b"x").digest(),
                {"id": RP_ID},
                {"id": b"u", "name": "u"},
                [{"type": "public-key", "alg": MLDSA65}],
            )
        assert err.value.code == Fido2CtapError.ERR.UNSUPPORTED_ALGORITHM
        # A browser-like client gets an error too, not a credential.
        with pytest.raises(ClientError):
            register(key, make_server(MLDSA65), rk=False)
        # An RP that also accepts ES256 gets ES256.
        server = make_server(MLDSA65)
        server.allowed_algorithms.append(
            PublicKeyCredentialParameters(type=PublicKeyCredentialType.PUBLIC_KEY, alg=-7)
        )
        auth_data, _ = register(key, server, rk=False)
        assert auth_data.credential_data.public_key[3] == -7


def test_small_max_msg_size_drops_what_does_not_fit() -> None:
    needed = max_make_credential_response_size(MLDSA65)
    config = Config(max_msg_size=needed - 1, mldsa=True)
    assert MLDSA44 in config.algorithms and MLDSA65 not in config.algorithms
    assert mldsa_status(config) == (
        f"ML-DSA-44, ML-DSA-87 offered (not the rest: ML-DSA-65 needs maxMsgSize >= "
        f"{needed} (configured {needed - 1}))"
    )
    with running_key(config=config) as key:
        response = key.authenticator.handle_cbor(_make_credential_request(MLDSA65), NullContext())
        assert response == bytes([CtapStatus.UNSUPPORTED_ALGORITHM])
        response = key.authenticator.handle_cbor(_make_credential_request(MLDSA44), NullContext())
        assert response[0] == CtapStatus.OK and len(response) <= config.max_msg_size
    assert MLDSA65 in Config(max_msg_size=needed, mldsa=True).algorithms
    with pytest.raises(ValueError, match="no usable algorithm"):
        Config(algorithms=(MLDSA65,), max_msg_size=2048, mldsa=True)
    with pytest.raises(ValueError, match="no usable algorithm"):
        Config(algorithms=(MLDSA65,))  # ML-DSA only, but ML-DSA off


def test_enterprise_attestation_keeps_the_batch_certificate() -> None:
    """Enterprise attestation identifies the device, so ML-DSA credentials get packed basic
    (ES256 batch key, x5c) there; otherwise they get packed self attestation."""
    client_data_hash = hashlib.sha256(b"enterprise").digest()
    with running_key(config=Config(enterprise_attestation=2, mldsa=True)) as key:
        ctap = Ctap2(key.device)
        FidoConfig(ctap).enable_enterprise_attestation()
        for enterprise in (2, None):
            att = ctap.make_credential(
                client_data_hash,
                {"id": RP_ID},
                {"id": os.urandom(8), "name": "u"},
                [{"type": "public-key", "alg": MLDSA65}],
                enterprise_attestation=enterprise,
            )
            result = PackedAttestation().verify(att.att_stmt, att.auth_data, client_data_hash)
            assert att.auth_data.credential_data is not None
            assert att.auth_data.credential_data.public_key[3] == MLDSA65
            if enterprise:
                assert att.ep_att is True and att.att_stmt["alg"] == -7
                assert result.attestation_type == AttestationType.BASIC
                assert att.att_stmt["x5c"][0] == key.store.identity().attestation_chain[0]
            else:
                assert not att.ep_att and att.att_stmt["alg"] == MLDSA65
                assert result.attestation_type == AttestationType.SELF


def test_mldsa65_over_udp() -> None:
    """The UDP transport (one 64-byte report per datagram) carries the ~5.5 KB response."""
    store = SqliteKeyStore.ephemeral()
    peer_port = free_ports(1)[0]
    transport = UdpTransport(
        Authenticator(store, AutoPresence(), MLDSA_ON), port=0, peer_port=peer_port
    )
    transport.start()
    device = open_udp_device(port=transport.port, peer_port=peer_port, timeout=30.0)
    try:
        client = Fido2Client(device, DefaultClientDataCollector(ORIGIN))
        verifier = SelfAttestationVerifier()
        server = make_server(MLDSA65, verifier)
        user = PublicKeyCredentialUserEntity(id=os.urandom(16), name="udp-user")
        discouraged = UserVerificationRequirement.DISCOURAGED
        options, state = server.register_begin(user, user_verification=discouraged)
        response = client.make_credential(options.public_key)
        credential = server.register_complete(state, response).credential_data
        assert credential is not None and len(verifier.results) == 1
        assert isinstance(credential.public_key, COSE_CLASSES[MLDSA65])
        request, state = server.authenticate_begin([credential], user_verification=discouraged)
        assertion = client.get_assertion(request.public_key).get_response(0)
        server.authenticate_complete(state, [credential], assertion)
    finally:
        device.close()
        transport.stop()
        store.close()


def test_uhid_paces_long_messages_like_a_polled_usb_key() -> None:
    """An ML-DSA-65 response is more reports than hidraw buffers per reader (64); the UHID
    transport spaces the reports after the first 16 continuation packets by 1 ms, as a USB
    host polling a full-speed key would, so a reader that lags a little loses nothing."""
    hidraw_buffer = 64
    reports = encode_message(0x01020304, 0x10, bytes(5534))  # CTAPHID_CBOR, the largest above
    assert len(reports) == 94 > hidraw_buffer
    delays = [uhid.report_delay(r) for r in reports]
    unpaced = delays.index(uhid.REPORT_INTERVAL)
    assert unpaced == 1 + uhid.PACED_FROM_SEQ < hidraw_buffer
    assert delays[:unpaced] == [0.0] * unpaced
    assert all(d == uhid.REPORT_INTERVAL for d in delays[unpaced:])
    # Small messages are never delayed.
    assert all(uhid.report_delay(r) == 0.0 for r in encode_message(1, 0x10, bytes(1000)))


def test_credential_unusable_on_a_runtime_without_mldsa_is_skipped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A keystore moved to a runtime without ML-DSA: its ML-DSA credentials are not
    applicable (NO_CREDENTIALS, or another credential answers), never an internal error."""
    from fido2.ctap import CtapError
    from fido2.ctap2.base import Ctap2

    from vfido.authenticator import cose as cose_module
    from vfido.authenticator.credential_source import clear_credential_cache

    with running_key(config=MLDSA_ON) as k:
        ctap = Ctap2(k.device)
        cdh = os.urandom(32)
        rp = {"id": RP_ID, "name": "PQ"}
        ids = {}
        for alg in (MLDSA44, -7):
            made = ctap.make_credential(
                cdh,
                rp,
                {"id": bytes([alg & 0xFF]) * 8, "name": f"u{alg}"},
                [{"type": "public-key", "alg": alg}],
                options={"rk": True},
            )
            data = made.auth_data.credential_data
            assert data is not None
            ids[alg] = data
        # Made on a runtime with ML-DSA: it signs.
        allow_pq = [{"type": "public-key", "id": ids[MLDSA44].credential_id}]
        assert ctap.get_assertion(RP_ID, cdh, allow_pq).credential["id"] == (
            ids[MLDSA44].credential_id
        )
        monkeypatch.setattr(cose_module, "_MLDSA", None)  # now the runtime lacks ML-DSA
        cose_module.clear_key_cache()
        clear_credential_cache()
        with pytest.raises(CtapError) as refused:
            ctap.get_assertion(RP_ID, cdh, allow_pq)
        assert refused.value.code == CtapError.ERR.NO_CREDENTIALS
        # Discoverable: the ES256 credential answers alone (the ML-DSA one is not counted).
        result = ctap.get_assertion(RP_ID, cdh)
        assert result.credential["id"] == ids[-7].credential_id
        assert result.number_of_credentials is None
        ids[-7].public_key.verify(bytes(result.auth_data) + cdh, result.signature)


def test_credentials_made_with_mldsa_on_keep_signing_when_it_is_off() -> None:
    """Turning ML-DSA off (the default) only stops advertising and making it: a keystore
    that holds ML-DSA credentials from an earlier ``--mldsa`` run still signs with them."""
    store = SqliteKeyStore.ephemeral()
    try:
        with_mldsa = Authenticator(store, AutoPresence(), MLDSA_ON)
        make = {
            1: hashlib.sha256(b"earlier").digest(),
            2: {"id": RP_ID},
            3: {"id": b"user-pq", "name": "pq"},
            4: [{"type": "public-key", "alg": MLDSA65}],
        }
        response = with_mldsa.handle_cbor(
            b"\x01" + cbor2.dumps(make, canonical=True), NullContext()
        )
        assert response[0] == CtapStatus.OK
        body = cbor2.loads(response[1:])
        credential = AuthenticatorData(body[2]).credential_data
        assert credential is not None
        default = Authenticator(store, AutoPresence(), Config())
        cdh = hashlib.sha256(b"later").digest()
        request = {
            1: RP_ID,
            2: cdh,
            3: [{"type": "public-key", "id": credential.credential_id}],
        }
        answer = default.handle_cbor(b"\x02" + cbor2.dumps(request, canonical=True), NullContext())
        assert answer[0] == CtapStatus.OK
        assertion = cbor2.loads(answer[1:])
        credential.public_key.verify(assertion[2] + cdh, assertion[3])
        # ... but the default key does not make new ones.
        refused = default.handle_cbor(_make_credential_request(MLDSA65), NullContext())
        assert refused == bytes([CtapStatus.UNSUPPORTED_ALGORITHM])
    finally:
        store.close()
