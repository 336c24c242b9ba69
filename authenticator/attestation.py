"""Attestation statements (WebAuthn section 8) and U2F registration signatures.

Three CTAP2 formats, chosen by ``Config.attestation``:

* ``"packed"``: full (batch) attestation. ``alg`` is ES256, ``sig`` is made by
  the batch key over ``authData || clientDataHash`` and ``x5c`` holds the batch
  certificate only (the root is the relying party's trust anchor, never sent).
  ML-DSA credentials get packed *self* attestation instead (below), unless the
  attestation is an enterprise one (see :func:`make_attestation`).
* ``"self"``: packed self attestation: no ``x5c``, signed by the new
  credential's own key, ``alg`` is the credential's algorithm.
* ``"none"``: an empty statement.

Why self attestation for ML-DSA: WebAuthn allows any attestation algorithm for
any credential algorithm (a packed basic statement with the ES256 batch
certificate over an ML-DSA credential verifies fine), but a post-quantum
credential vouched for by a classical signature is only as strong as that
signature; the credential's own ML-DSA signature is what an RP asking for ML-DSA
can rely on. The batch certificate carries no ML-DSA key (it is ES256), so "self"
is the only post-quantum statement this key can make. Enterprise attestation is
the exception: it exists to identify the device, which only the batch
certificate does, so it stays packed basic with x5c. So is ML-DSA-87: its key
plus its own signature make a response larger than the largest CTAPHID message
(7609 bytes over 64-byte reports), so its credentials get the batch statement
(:data:`MLDSA_SELF_ATTESTED` lists the ML-DSA algorithms whose self-attested
response fits).

CTAP1 REGISTER uses :func:`sign_u2f_registration` (the ``fido-u2f`` format's
signature, FIDO U2F raw message formats v1.2 section 4.3).
"""

from __future__ import annotations

import functools
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from vfido.authenticator.cose import ES256, MLDSA_ALGORITHMS, CredentialKey
from vfido.keystore import entropy
from vfido.keystore.store import DeviceIdentity

FORMATS: tuple[str, ...] = ("packed", "self", "none")

#: Length of an uncompressed P-256 point (0x04 || X || Y), the U2F public key format.
U2F_PUBLIC_KEY_SIZE = 65


@functools.lru_cache(maxsize=8)
def _load_batch_key(attestation_key: bytes) -> ec.EllipticCurvePrivateKey:
    # Parsing PKCS#8 costs far more than signing; identities are few and long-lived.
    try:
        key = serialization.load_der_private_key(attestation_key, password=None)
    except (ValueError, TypeError):
        raise ValueError("attestation key is not an unencrypted PKCS#8 key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("attestation key must be a P-256 key")
    return key


def batch_key(identity: DeviceIdentity) -> ec.EllipticCurvePrivateKey:
    """The identity's batch (attestation) private key, parsed once per key."""
    return _load_batch_key(identity.attestation_key)


def batch_certificate(identity: DeviceIdentity) -> bytes:
    """DER of the batch certificate (first in the identity's chain)."""
    if not identity.attestation_chain:
        raise ValueError("identity has no attestation certificate")
    return identity.attestation_chain[0]


def sign_with_batch_key(identity: DeviceIdentity, data: bytes) -> bytes:
    """DER ECDSA-SHA256 signature of ``data`` by the batch key."""
    return batch_key(identity).sign(data, entropy.ecdsa(hashes.SHA256()))


def make_attestation(
    fmt: str,
    identity: DeviceIdentity,
    auth_data: bytes,
    client_data_hash: bytes,
    credential_key: CredentialKey,
    *,
    force_batch: bool = False,
) -> tuple[str, dict[str, Any]]:
    """``(fmt, attStmt)`` for an authenticatorMakeCredential response.

    ``fmt`` is a ``Config.attestation`` value; the returned format is the
    WebAuthn attestation statement format identifier ("self" becomes "packed").
    "packed" over an ML-DSA credential is packed self attestation, unless
    ``force_batch`` (enterprise attestation, or a scripted misbehaviour that swaps
    the batch certificate): then the batch certificate signs, whatever the algorithm.
    Raises ValueError for an unknown format.
    """
    signed = auth_data + client_data_hash
    if fmt == "packed" and credential_key.algorithm in MLDSA_SELF_ATTESTED and not force_batch:
        fmt = "self"
    if fmt == "packed":
        return "packed", {
            "alg": ES256,
            "sig": sign_with_batch_key(identity, signed),
            "x5c": [batch_certificate(identity)],
        }
    if fmt == "self":
        return "packed", {"alg": credential_key.algorithm, "sig": credential_key.sign(signed)}
    if fmt == "none":
        return "none", {}
    raise ValueError(f"unknown attestation format {fmt!r}")


def u2f_public_key(credential_key: CredentialKey) -> bytes:
    """The 65-byte uncompressed point of an ES256 credential (U2F's public key encoding)."""
    public = credential_key.public_key()
    if credential_key.algorithm != ES256 or not isinstance(public, ec.EllipticCurvePublicKey):
        raise ValueError("U2F keys are ES256 only")
    return public.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


def u2f_registration_signed_data(
    app_param: bytes, challenge_param: bytes, key_handle: bytes, public_key: bytes
) -> bytes:
    """``0x00 || appParam || challengeParam || keyHandle || userPublicKey``."""
    if len(app_param) != 32 or len(challenge_param) != 32:
        raise ValueError("application and challenge parameters are 32 bytes")
    if len(public_key) != U2F_PUBLIC_KEY_SIZE or public_key[0] != 0x04:
        raise ValueError("public key must be a 65-byte uncompressed point")
    return b"\x00" + app_param + challenge_param + key_handle + public_key


def sign_u2f_registration(
    identity: DeviceIdentity,
    app_param: bytes,
    challenge_param: bytes,
    key_handle: bytes,
    public_key: bytes,
) -> bytes:
    """The batch key's signature in a U2F registration response (fido-u2f attestation)."""
    data = u2f_registration_signed_data(app_param, challenge_param, key_handle, public_key)
    return sign_with_batch_key(identity, data)


#: Headroom in :func:`max_make_credential_response_size` for anything not modelled
#: (a longer extension output, a future field).
RESPONSE_SIZE_MARGIN = 128
#: The largest CTAPHID message (57 + 128 * 59 bytes over 64-byte reports).
CTAPHID_MAX_MESSAGE = 7609
#: Room the batch statement's x5c takes at most (the batch certificate; ours are ~600 bytes).
BATCH_CERTIFICATE_ROOM = 1024
#: Largest DER ECDSA P-256 signature.
_MAX_ES256_SIGNATURE = 72


def _self_attested_size(algorithm: int) -> int:
    return _response_size(algorithm, {"alg": algorithm, "sig": bytes(_mldsa_signature(algorithm))})


def _mldsa_signature(algorithm: int) -> int:
    from vfido.authenticator.cose import MLDSA_SIZES

    return MLDSA_SIZES[algorithm][1]


def max_make_credential_response_size(algorithm: int) -> int:
    """Upper bound of a makeCredential response (status byte + CBOR) for an ML-DSA credential.

    Modelled as the largest response this key can build for the algorithm: the
    longest credential ID (credProtect, every flag, a full credBlob), the COSE
    public key, every extension output at its largest, packed self attestation
    (the credential's own signature; the batch statement for an algorithm not in
    :data:`MLDSA_SELF_ATTESTED`), epAtt and a largeBlobKey, plus
    :data:`RESPONSE_SIZE_MARGIN`. ``Config`` compares it with maxMsgSize and does
    not offer an algorithm whose credentials could not be returned.
    """
    if algorithm in MLDSA_SELF_ATTESTED:
        return _self_attested_size(algorithm)
    return _response_size(
        algorithm,
        {
            "alg": ES256,
            "sig": bytes(_MAX_ES256_SIGNATURE),
            "x5c": [bytes(BATCH_CERTIFICATE_ROOM)],
        },
    )


def _response_size(algorithm: int, att_stmt: dict[str, Any]) -> int:
    import cbor2

    from vfido.authenticator.cose import KTY_AKP, MLDSA_SEED_SIZE, MLDSA_SIZES
    from vfido.authenticator.credential_source import SealedCredential
    from vfido.keystore.credential_id import SEAL_OVERHEAD

    if algorithm not in MLDSA_SIZES:
        raise ValueError(f"no size model for algorithm {algorithm}")
    public_size = MLDSA_SIZES[algorithm][0]
    sealed = SealedCredential(
        algorithm=algorithm,
        private_key=bytes(MLDSA_SEED_SIZE),
        cred_protect=3,
        discoverable=True,
        hmac_secret=True,
        u2f=True,
        cred_blob=bytes(32),  # extensions.MAX_CRED_BLOB_LENGTH
    )
    credential_id_length = SEAL_OVERHEAD + len(sealed.to_bytes())
    cose_key = cbor2.dumps({1: KTY_AKP, 3: algorithm, -1: bytes(public_size)})
    extensions = cbor2.dumps(
        {
            "credProtect": 3,
            "hmac-secret": True,
            "hmac-secret-mc": bytes(16 + 64 + 32),  # iv || two outputs, with room
            "credBlob": True,
            "minPinLength": 255,
        }
    )
    auth_data_length = 32 + 1 + 4 + 16 + 2 + credential_id_length + len(cose_key) + len(extensions)
    response = cbor2.dumps(
        {
            1: "packed",
            2: bytes(auth_data_length),
            3: att_stmt,
            4: True,
            5: bytes(32),
        }
    )
    return 1 + len(response) + RESPONSE_SIZE_MARGIN


#: The ML-DSA algorithms whose credentials get packed self attestation: those whose
#: largest self-attested response fits a CTAPHID message (not ML-DSA-87).
MLDSA_SELF_ATTESTED: frozenset[int] = frozenset(
    alg for alg in MLDSA_ALGORITHMS if _self_attested_size(alg) <= CTAPHID_MAX_MESSAGE
)
