"""Device identity: AAGUID, credential-sealing key and packed attestation material.

:func:`new_identity` makes a fresh identity: a random AAGUID (unless given), a random
credential key, and the attestation material (``AttestationMaterial`` in
:mod:`vfido.keystore.store`: a batch key and its certificate chain, made by
:mod:`vfido.keystore.certificates`).

The material is made at once, or, with ``attestation_on_first_use`` (what an ephemeral
keystore asks for), when it is first read: the first packed makeCredential, U2F register,
``vfido metadata`` or backup. ``vfido run --ephemeral`` then starts without importing
``cryptography.x509`` (about 2 MB of its idle memory), and a key that never attests never
makes a certificate. Either way the material is made once and is the same for the key's
life.
A seeded (reproducible) entropy source always makes it at once, in the order of draws
it always had, so the same seed gives the same certificates.

A keystore file stores the identity, attestation material included, as one encrypted
row (:func:`identity_to_bytes`; serializing material made on first use makes it).
"""

from __future__ import annotations

import functools
from dataclasses import replace

import cbor2

from vfido.keystore import entropy
from vfido.keystore.store import AAGUID_SIZE, AttestationMaterial, DeviceIdentity

__all__ = [
    "AAGUID_SIZE",
    "CREDENTIAL_KEY_SIZE",
    "identity_from_bytes",
    "identity_to_bytes",
    "new_identity",
    "rotate_credential_key",
]

CREDENTIAL_KEY_SIZE = 32


def _make_material(aaguid: bytes, source: entropy.Entropy) -> tuple[bytes, tuple[bytes, ...]]:
    """(batch key, (batch certificate, root certificate)) drawn from ``source``."""
    from vfido.keystore.certificates import make_chain  # imports cryptography.x509

    with entropy.using(source):
        attestation_key, batch_cert, root_cert = make_chain(aaguid)
    return attestation_key, (batch_cert, root_cert)


def new_identity(
    aaguid: bytes | None = None, *, attestation_on_first_use: bool = False
) -> DeviceIdentity:
    """A fresh device identity (random AAGUID unless given).

    ``attestation_on_first_use``: make the attestation material when it is first read
    (from the entropy source in force now) instead of now; ignored under a seeded source.
    """
    if aaguid is None:
        aaguid = entropy.random_bytes(AAGUID_SIZE)
    if len(aaguid) != AAGUID_SIZE:
        raise ValueError("AAGUID must be 16 bytes")
    source = entropy.current()
    if attestation_on_first_use and not source.deterministic:
        attestation = AttestationMaterial.on_first_use(
            functools.partial(_make_material, aaguid, source)
        )
    else:
        attestation = AttestationMaterial(*_make_material(aaguid, source))
    return DeviceIdentity(
        aaguid=aaguid,
        credential_key=entropy.random_bytes(CREDENTIAL_KEY_SIZE),
        attestation=attestation,
    )


def rotate_credential_key(identity: DeviceIdentity) -> DeviceIdentity:
    """The same identity with a new random credential key (for authenticatorReset)."""
    return replace(identity, credential_key=entropy.random_bytes(CREDENTIAL_KEY_SIZE))


# --- serialization (used by the keystore to store the identity) -------------

_F_AAGUID = 1
_F_CREDENTIAL_KEY = 2
_F_ATTESTATION_KEY = 3
_F_CHAIN = 4
_F_BACKUP_ELIGIBLE = 5  # present only when true


def identity_to_bytes(identity: DeviceIdentity) -> bytes:
    """Canonical CBOR encoding of ``identity`` (contains secrets: encrypt before storing)."""
    data: dict[int, object] = {
        _F_AAGUID: identity.aaguid,
        _F_CREDENTIAL_KEY: identity.credential_key,
        _F_ATTESTATION_KEY: identity.attestation_key,
        _F_CHAIN: list(identity.attestation_chain),
    }
    if identity.backup_eligible:
        data[_F_BACKUP_ELIGIBLE] = True
    return bytes(cbor2.dumps(data, canonical=True))


def identity_from_bytes(data: bytes) -> DeviceIdentity:
    """Inverse of :func:`identity_to_bytes`. Raises ValueError if malformed."""
    try:
        m = cbor2.loads(data)
    except Exception as exc:  # cbor2 raises several types
        raise ValueError("malformed device identity") from exc
    if not isinstance(m, dict):
        raise ValueError("malformed device identity")
    aaguid = m.get(_F_AAGUID)
    cred_key = m.get(_F_CREDENTIAL_KEY)
    att_key = m.get(_F_ATTESTATION_KEY)
    chain = m.get(_F_CHAIN)
    backup_eligible = m.get(_F_BACKUP_ELIGIBLE, False)
    if (
        not isinstance(aaguid, bytes)
        or len(aaguid) != AAGUID_SIZE
        or not isinstance(cred_key, bytes)
        or len(cred_key) != CREDENTIAL_KEY_SIZE
        or not isinstance(att_key, bytes)
        or not isinstance(chain, list)
        or not chain
        or not all(isinstance(c, bytes) for c in chain)
        or type(backup_eligible) is not bool
    ):
        raise ValueError("malformed device identity")
    return DeviceIdentity(
        aaguid=aaguid,
        credential_key=cred_key,
        attestation=AttestationMaterial(att_key, tuple(chain)),
        backup_eligible=backup_eligible,
    )
