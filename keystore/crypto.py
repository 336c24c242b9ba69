"""Record encryption helpers for the SQLite keystore.

* The master key (32 random bytes) is wrapped with AES-256-GCM under the
  passphrase-derived key.
* Two subkeys are derived from it with HKDF-SHA256: the *record key*
  (AES-256-GCM for every stored record) and the *index key* (HMAC-SHA256 for
  the blinded lookup columns).
* Each record is ``nonce(12) || AES-GCM(record_key, plaintext, aad)`` with a
  fresh nonce per write. The associated data names the table and the row
  (its blinded index columns), so moving a ciphertext to another row or table
  fails authentication.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

KEY_SIZE = 32
NONCE_SIZE = 12

_WRAP_AAD = b"vfido keystore master key v1"
_RECORD_INFO = b"vfido keystore record key v1"
_INDEX_INFO = b"vfido keystore index key v1"


class AuthenticationFailed(Exception):
    """A ciphertext did not authenticate (message carries no secrets)."""


def new_master_key() -> bytes:
    return os.urandom(KEY_SIZE)


def wrap_master_key(kek: bytes, master_key: bytes) -> bytes:
    nonce = os.urandom(NONCE_SIZE)
    return nonce + AESGCM(kek).encrypt(nonce, master_key, _WRAP_AAD)


def unwrap_master_key(kek: bytes, wrapped: bytes) -> bytes:
    """Raises :class:`AuthenticationFailed` for a wrong key or damaged blob."""
    if len(wrapped) != NONCE_SIZE + KEY_SIZE + 16:
        raise AuthenticationFailed("wrapped master key has the wrong size")
    try:
        return AESGCM(kek).decrypt(wrapped[:NONCE_SIZE], wrapped[NONCE_SIZE:], _WRAP_AAD)
    except InvalidTag as exc:
        raise AuthenticationFailed("master key did not unwrap") from exc


def _lp(*parts: bytes) -> bytes:
    """Unambiguous concatenation: each part prefixed by its 4-byte length."""
    return b"".join(struct.pack(">I", len(p)) + p for p in parts)


@dataclass(frozen=True)
class RecordKeys:
    """Subkeys derived from the master key."""

    record_key: bytes = field(repr=False)
    index_key: bytes = field(repr=False)

    @classmethod
    def derive(cls, master_key: bytes) -> RecordKeys:
        def hkdf(info: bytes) -> bytes:
            return HKDF(hashes.SHA256(), KEY_SIZE, salt=None, info=info).derive(master_key)

        return cls(record_key=hkdf(_RECORD_INFO), index_key=hkdf(_INDEX_INFO))

    def blind(self, domain: str, *parts: bytes) -> bytes:
        """Keyed hash for a lookup column: HMAC-SHA256(index_key, domain || parts)."""
        return hmac.new(
            self.index_key, _lp(domain.encode("ascii"), *parts), hashlib.sha256
        ).digest()

    def encrypt(self, table: str, row: tuple[bytes, ...], plaintext: bytes) -> bytes:
        nonce = os.urandom(NONCE_SIZE)
        aad = _lp(table.encode("ascii"), *row)
        return nonce + AESGCM(self.record_key).encrypt(nonce, plaintext, aad)

    def decrypt(self, table: str, row: tuple[bytes, ...], blob: bytes) -> bytes:
        """Raises :class:`AuthenticationFailed` if ``blob`` is not this row's record."""
        if len(blob) < NONCE_SIZE + 16:
            raise AuthenticationFailed(f"record in {table} is truncated")
        aad = _lp(table.encode("ascii"), *row)
        try:
            return AESGCM(self.record_key).decrypt(blob[:NONCE_SIZE], blob[NONCE_SIZE:], aad)
        except InvalidTag as exc:
            raise AuthenticationFailed(f"record in {table} failed authentication") from exc
