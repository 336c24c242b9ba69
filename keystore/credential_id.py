"""Sealing of credential IDs: AES-256-GCM bound to the RP.

Layout of a credential ID::

    version (1 byte, 0x01) || nonce (12 random bytes) || ciphertext || tag (16 bytes)

The associated data is ``version || rp_id_hash``, so an ID only unseals for the
RP (or U2F application parameter) it was made for, under the device key that
made it. :func:`unseal` returns ``None`` for anything that does not authenticate.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from vfido.keystore import entropy

VERSION = 0x01
NONCE_SIZE = 12
TAG_SIZE = 16
KEY_SIZE = 32
SEAL_OVERHEAD = 1 + NONCE_SIZE + TAG_SIZE
"""Bytes a sealed credential ID adds to its plaintext."""

_VERSION_BYTE = bytes([VERSION])


def _check_key(key: bytes) -> None:
    if len(key) != KEY_SIZE:
        raise ValueError("credential key must be 32 bytes")


def seal(key: bytes, rp_id_hash: bytes, plaintext: bytes) -> bytes:
    """Encrypt ``plaintext`` into a credential ID bound to ``rp_id_hash``."""
    _check_key(key)
    nonce = entropy.random_bytes(NONCE_SIZE)
    aad = _VERSION_BYTE + rp_id_hash
    return _VERSION_BYTE + nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def unseal(key: bytes, rp_id_hash: bytes, credential_id: bytes) -> bytes | None:
    """The plaintext sealed in ``credential_id``, or None if it is not ours for this RP."""
    if len(key) != KEY_SIZE:
        return None
    if len(credential_id) < SEAL_OVERHEAD or credential_id[0] != VERSION:
        return None
    nonce = credential_id[1 : 1 + NONCE_SIZE]
    body = credential_id[1 + NONCE_SIZE :]
    try:
        return AESGCM(key).decrypt(nonce, body, _VERSION_BYTE + rp_id_hash)
    except InvalidTag:
        return None
