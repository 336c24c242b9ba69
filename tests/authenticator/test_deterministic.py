"""Reproducible keys (#19): ``VirtualKey(seed=...)`` / ``vfido run --deterministic SEED``.

Two keys with the same seed that get the same requests answer with the same bytes: every
response of a session (getInfo, PIN protocol key agreement, a pinUvAuthToken, credentials
of every algorithm with packed attestation, assertions, getNextAssertion, U2F register and
authenticate) is compared byte for byte. The requests are pre-encoded CTAP (the platform
side uses a fixed key), sent through CTAPHID by python-fido2's ``CtapHidDevice``; every
signature is checked with python-fido2's COSE classes so the reproducible signatures
(RFC 6979 ECDSA, seeded PSS salt) are valid ones.
"""

from __future__ import annotations

import hashlib
import hmac
import subprocess
import sys
from typing import Any

import cbor2
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from fido2 import cose
from fido2.hid import CTAPHID
from fido2.webauthn import AttestationObject, AuthenticatorData

from tests.rp import RelyingParty, register, sign_in
from vfido.api import VirtualKey
from vfido.authenticator.cose import EDDSA, ES256, ES384, PS256, RS256
from vfido.authenticator.deterministic import (
    START_TIME,
    WARNING,
    SeededEnvironment,
    pss_sha256_sign,
)
from vfido.keystore import entropy
from vfido.reproducible import REFUSAL

RP_ID = "example.com"
# The platform's key agreement key: fixed, so that the requests are the same in both runs.
PLATFORM_KEY = ec.derive_private_key(0x1234567890ABCDEF, ec.SECP256R1())


def _platform_cose() -> dict[int, Any]:
    numbers = PLATFORM_KEY.public_key().public_numbers()
    return {
        1: 2,
        3: -25,
        -1: 1,
        -2: numbers.x.to_bytes(32, "big"),
        -3: numbers.y.to_bytes(32, "big"),
    }


def _shared_secret(authenticator_key: dict[int, Any]) -> tuple[bytes, bytes]:
    """PIN protocol two (CTAP 2.1 section 6.5.7): (HMAC key, AES key)."""
    peer = ec.EllipticCurvePublicNumbers(
        int.from_bytes(authenticator_key[-2], "big"),
        int.from_bytes(authenticator_key[-3], "big"),
        ec.SECP256R1(),
    ).public_key()
    z = PLATFORM_KEY.exchange(ec.ECDH(), peer)

    def hkdf(info: bytes) -> bytes:
        return HKDF(hashes.SHA256(), 32, b"\x00" * 32, info).derive(z)

    return hkdf(b"CTAP2 HMAC key"), hkdf(b"CTAP2 AES key")


def _decrypt(aes_key: bytes, data: bytes) -> bytes:
    decryptor = Cipher(algorithms.AES(aes_key), modes.CBC(data[:16])).decryptor()
    return decryptor.update(data[16:]) + decryptor.finalize()


def _cbor(command: int, parameters: dict[int, Any] | None = None) -> bytes:
    return bytes([command]) + (cbor2.dumps(parameters, canonical=True) if parameters else b"")


def _session(key: VirtualKey) -> list[bytes]:
    """One scripted session; every raw response (status byte included) in order."""
    device = key.device
    responses: list[bytes] = []

    def call(command: int, parameters: dict[int, Any] | None = None) -> dict[int, Any]:
        raw = bytes(device.call(CTAPHID.CBOR, _cbor(command, parameters)))
        responses.append(raw)
        assert raw[0] == 0, f"command 0x{command:02x} -> status 0x{raw[0]:02x}"
        return cbor2.loads(raw[1:]) if len(raw) > 1 else {}

    call(0x04)  # getInfo
    agreement = call(0x06, {1: 2, 2: 2})[1]  # clientPin getKeyAgreement
    hmac_key, aes_key = _shared_secret(agreement)
    credential_ids = []
    for number, algorithm in enumerate((ES256, EDDSA, ES384, RS256, PS256)):
        # getPinUvAuthTokenUsingUvWithPermissions (mc), one per makeCredential: it
        # clears the token's permissions (CTAP 2.1 section 6.1.2 step 13).
        token_reply = call(0x06, {1: 2, 2: 6, 3: _platform_cose(), 9: 0x01, 10: RP_ID})
        token = _decrypt(aes_key, token_reply[2])
        assert len(token) == 32 and hmac_key
        client_data_hash = hashlib.sha256(b"register %d" % number).digest()
        made = call(
            0x01,
            {
                1: client_data_hash,
                2: {"id": RP_ID},
                3: {"id": bytes([number]) * 16, "name": f"user{number}"},
                4: [{"type": "public-key", "alg": algorithm}],
                7: {"rk": True},
                8: hmac.new(token, client_data_hash, "sha256").digest(),
                9: 2,
            },
        )
        attestation = AttestationObject.create(made[1], AuthenticatorData(made[2]), made[3])
        credential = attestation.auth_data.credential_data
        assert credential is not None and credential.public_key[3] == algorithm
        _verify_packed(attestation, client_data_hash)
        credential_ids.append((credential.credential_id, credential.public_key))
    # getAssertion by allowList, then discoverable (five credentials: getNextAssertion).
    for number, (credential_id, public_key) in enumerate(credential_ids):
        client_data_hash = hashlib.sha256(b"sign %d" % number).digest()
        asserted = call(
            0x02,
            {
                1: RP_ID,
                2: client_data_hash,
                3: [{"type": "public-key", "id": credential_id}],
            },
        )
        public_key.verify(asserted[2] + client_data_hash, asserted[3])
    discoverable = call(0x02, {1: RP_ID, 2: hashlib.sha256(b"discover").digest()})
    assert discoverable[5] == len(credential_ids)
    for _ in range(len(credential_ids) - 1):
        call(0x08)
    # U2F register and authenticate (CTAP1 over CTAPHID_MSG).
    challenge, application = b"\x01" * 32, hashlib.sha256(b"https://u2f.example.com").digest()
    register = bytes(
        device.call(
            CTAPHID.MSG, b"\x00\x01\x03\x00\x00\x00\x40" + challenge + application + b"\x00\x00"
        )
    )
    responses.append(register)
    assert register[-2:] == b"\x90\x00"
    handle_length = register[66]
    handle = register[67 : 67 + handle_length]
    body = challenge + application + bytes([handle_length]) + handle
    authenticate = bytes(
        device.call(
            CTAPHID.MSG, b"\x00\x02\x03\x00\x00\x00" + bytes([len(body)]) + body + b"\x00\x00"
        )
    )
    responses.append(authenticate)
    assert authenticate[-2:] == b"\x90\x00"
    return responses


def _verify_packed(attestation: AttestationObject, client_data_hash: bytes) -> None:
    """The packed attestation signature verifies with the batch certificate."""
    from cryptography import x509

    assert attestation.fmt == "packed"
    certificate = x509.load_der_x509_certificate(attestation.att_stmt["x5c"][0])
    public = certificate.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    public.verify(
        attestation.att_stmt["sig"],
        bytes(attestation.auth_data) + client_data_hash,
        ec.ECDSA(hashes.SHA256()),
    )


def _run(seed: str) -> list[bytes]:
    with VirtualKey(seed=seed, uv=True) as key:
        return _session(key)


@pytest.fixture(scope="module")
def first_run() -> list[bytes]:
    return _run("golden")


def test_same_seed_same_requests_byte_identical_responses(first_run: list[bytes]) -> None:
    second = _run("golden")
    assert len(second) == len(first_run) == 24
    for number, (a, b) in enumerate(zip(first_run, second, strict=True)):
        assert a == b, f"response {number} differs"


def test_a_different_seed_gives_different_keys(first_run: list[bytes]) -> None:
    other = _run("another seed")
    assert other[0] != first_run[0]  # getInfo: the AAGUID
    # Every response carrying a key, credential ID or signature differs; getNextAssertion too.
    assert all(a != b for a, b in zip(other[1:], first_run[1:], strict=True))


def test_an_unseeded_key_is_not_reproducible() -> None:
    """The control: without a seed two runs differ (else the test above proves nothing)."""

    def info() -> bytes:
        with VirtualKey() as key:
            return bytes(key.device.call(CTAPHID.CBOR, b"\x04"))

    assert info() != info()


def test_seeded_clock_is_a_fixed_start_plus_the_request_count() -> None:
    """Both RP libraries (fido2.server, py_webauthn) accept a seeded key's registration and
    sign-in, attestation chain included; its records carry the seeded wall clock."""
    with VirtualKey(seed="clock") as key:
        assert key.seeded is not None
        before = key.seeded.requests
        key.device.call(CTAPHID.CBOR, b"\x04")
        assert key.seeded.requests == before + 1
        assert key.seeded.time() == START_TIME + before + 1
        rp = RelyingParty(root_der=key.attestation_root)
        register(key.client(), rp, rk=True)
        sign_in(key.client(), rp, allow=False)
        (record,) = key.credentials()
        # created is the seeded wall clock (2025-01-01 plus a few requests), not today's.
        assert START_TIME <= record.created.timestamp() <= START_TIME + key.seeded.requests


def test_seeded_key_warns_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    with VirtualKey(seed="loud"):
        pass
    assert WARNING in capsys.readouterr().err
    assert "FOR TESTS ONLY" in WARNING


def test_seeded_key_refuses_a_persistent_keystore(tmp_path: Any) -> None:
    with pytest.raises(ValueError, match="ephemeral keystore"):
        VirtualKey(seed="x", keystore=tmp_path, passphrase="pw", create=True)
    with pytest.raises(ValueError, match="empty"):
        VirtualKey(seed="")


def test_cli_refuses_deterministic_with_a_keystore(tmp_path: Any) -> None:
    """One clear line and a non-zero exit, nothing created."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "vfido",
            "run",
            "--deterministic",
            "s",
            "--keystore",
            str(tmp_path / "ks"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and REFUSAL in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "ks").exists()


def test_seeded_source_streams_are_reproducible_and_seed_bound() -> None:
    seed = "a secret seed"
    a, b, c = SeededEnvironment(seed), SeededEnvironment(seed), SeededEnvironment("other")
    assert a.random_bytes(5) + a.random_bytes(40) == b.random_bytes(45)
    assert SeededEnvironment(seed).random_bytes(45) != c.random_bytes(45)
    assert seed not in repr(a)


def test_deterministic_pss_verifies_as_ps256() -> None:
    """The PS256 signature a seeded key makes (its own EMSA-PSS encoding, RFC 8017 9.1.1)
    verifies with OpenSSL's PSS verifier and python-fido2's PS256 class."""
    env = SeededEnvironment("pss")
    key = env.rsa_private_key(65537, 2048)
    signature = pss_sha256_sign(key, b"message", env.random_bytes(32))
    key.public_key().verify(
        signature,
        b"message",
        padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32),
        hashes.SHA256(),
    )
    cose.PS256.from_cryptography_key(key.public_key()).verify(b"message", signature)
    with pytest.raises(InvalidSignature):
        cose.PS256.from_cryptography_key(key.public_key()).verify(b"other", signature)


def test_system_source_is_the_default_and_using_restores_it() -> None:
    assert entropy.current() is entropy.SYSTEM
    assert not entropy.deterministic()
    env = SeededEnvironment("ctx")
    with entropy.using(env):
        assert entropy.current() is env and entropy.deterministic()
    assert entropy.current() is entropy.SYSTEM


def _service_registration(seed: str) -> tuple[bytes, dict[str, Any], dict[str, Any]]:
    """`vfido run --deterministic SEED --lint` (what users run): a python-fido2 registration
    with a fixed challenge; (attestation object, status, lint answer)."""
    from fido2.client import DefaultClientDataCollector, Fido2Client, UserInteraction
    from fido2.server import Fido2Server

    server = Fido2Server({"id": "example.com", "name": "Example"})
    options, _ = server.register_begin(
        {"id": b"alice@example.com", "name": "alice"},
        user_verification="discouraged",
        challenge=b"a fixed challenge, 32 bytes long",
    )
    extra = ["--deterministic", seed, "--lint"]
    with VirtualKey.service(transport="unix", extra_args=extra) as key:
        client = Fido2Client(
            key.device,
            client_data_collector=DefaultClientDataCollector("https://example.com"),
            user_interaction=UserInteraction(),
        )
        response = client.make_credential(options["publicKey"]).response
        shown = subprocess.run(
            [sys.executable, "-m", "vfido", "status", "--socket", str(key.control_socket)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert shown.returncode == 0 and WARNING in shown.stdout, shown.stderr
        return bytes(response.attestation_object), key.control("status"), key.control("lint")


def test_vfido_run_deterministic_is_reproducible_warns_and_lints() -> None:
    first, status, lint = _service_registration("service seed")
    second, _, _ = _service_registration("service seed")
    other, _, _ = _service_registration("other seed")
    assert first == second != other
    assert status["deterministic"] == WARNING
    assert [f["rule"] for f in lint["findings"]] == ["user-handle-pii"]


@pytest.mark.parametrize(
    "curve", [ec.SECP256R1(), ec.SECP384R1(), ec.SECP521R1(), ec.SECP256K1()], ids=lambda c: c.name
)
def test_each_curve_order_is_the_curves_own(curve: ec.EllipticCurve) -> None:
    """The seeded key generation draws private scalars below these orders. P-521's had one
    byte too many (529 bits): 255 draws in 256 were out of range and a seeded key answered
    nearly every ES512 makeCredential with ERR_OTHER (a stateful fuzzer found it). OpenSSL
    is the independent judge: n - 1 is a private key of the curve, n is not."""
    from vfido.authenticator import deterministic

    order = deterministic._ORDERS[curve.name]
    assert order.bit_length() == curve.key_size
    ec.derive_private_key(order - 1, curve)
    with pytest.raises(ValueError):
        ec.derive_private_key(order, curve)


def test_a_seeded_key_makes_es512_credentials() -> None:
    from fido2.attestation import PackedAttestation
    from fido2.ctap2 import Ctap2

    with VirtualKey(seed="es512") as key:
        ctap = Ctap2(key.device)
        for i in range(8):
            client_data_hash = hashlib.sha256(bytes([i])).digest()
            response = ctap.make_credential(
                client_data_hash,
                {"id": "example.com", "name": "Example"},
                {"id": bytes([i + 1]), "name": "u"},
                [{"type": "public-key", "alg": -36}],
            )
            credential = response.auth_data.credential_data
            assert credential is not None and credential.public_key[3] == -36
            PackedAttestation().verify(response.att_stmt, response.auth_data, client_data_hash)
