"""Record encryption helpers for the SQLite keystore.

* The master key (32 random bytes) is wrapped with AES-256-GCM under the
  passphrase-derived key.
* Three subkeys are derived from it with HKDF-SHA256: the *record key*
  (AES-256-GCM for every stored record), the *index key* (HMAC-SHA256 for
  the blinded lookup columns) and, since format 2, the *counter key*
  (keyed BLAKE2s-128, RFC 7693's MAC mode, over each signature counter row and
  over the number of rows: a third of HMAC-SHA256's cost, which matters because
  every counter row is checked when the keystore opens); since format 3 it also
  tags the set of state rows (another domain: nothing one tag covers can pass
  for the other).
* Each record is ``nonce(12) || AES-GCM(record_key, plaintext, aad)`` with a
  fresh nonce per write. The associated data names the table and the row
  (its blinded index columns), so moving a ciphertext to another row or table
  fails authentication.

Key material lives in ``bytearray``s that :meth:`RecordKeys.clear` zeroes when
the keystore closes. What cannot be cleared is said in SECURITY.md: the copies
``cryptography`` and ``hmac`` make inside their own (immutable) objects.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from vfido.keystore import entropy

KEY_SIZE = 32
NONCE_SIZE = 12

_WRAP_AAD = b"vfido keystore master key v1"
_RECORD_INFO = b"vfido keystore record key v1"
_INDEX_INFO = b"vfido keystore index key v1"
_COUNTER_INFO = b"vfido keystore counter key v2"
COUNTER_MAC_SIZE = 16
"""Bytes of the (keyed BLAKE2s) tag on each signature counter row."""
_COUNTER_PERSON = b"vfidoctr"  # BLAKE2s personalization: domain separation


class AuthenticationFailed(Exception):
    """A ciphertext did not authenticate (message carries no secrets)."""


def clear(buf: bytearray) -> None:
    """Overwrite ``buf`` with zeros in place (same length: no reallocation)."""
    buf[:] = bytes(len(buf))


class _DeriveInto(Protocol):
    def derive(self, key_material: bytes, /) -> bytes: ...


def derive_into(kdf: _DeriveInto, key_material: bytes | bytearray, out: bytearray) -> None:
    """``kdf.derive_into(key_material, out)``: the key straight into ``out`` (which the
    caller zeroes). cryptography < 47 has no ``derive_into``: there the key passes through
    one immutable ``bytes`` object (not clearable) on its way into ``out``."""
    into = getattr(kdf, "derive_into", None)
    if into is not None:
        into(key_material, out)
        return
    derived = kdf.derive(bytes(key_material))
    if len(derived) != len(out):
        raise ValueError("derived key and buffer differ in length")
    out[:] = derived


def new_master_key() -> bytearray:
    return bytearray(entropy.random_bytes(KEY_SIZE))


#: The first format whose wrapped master key is bound to its version.
_VERSION_BOUND_FROM = 4


def _wrap_aad(format_version: int) -> bytes:
    """What the wrapped master key is bound to: from format 4 on, the database's format
    version, so that lowering ``meta.format_version`` (which would make the key re-seal
    whatever it found, as a migration does) no longer unwraps. Formats 1-3 used one
    constant."""
    if format_version < _VERSION_BOUND_FROM:
        return _WRAP_AAD
    return _lp(_WRAP_AAD, b"format", struct.pack(">I", format_version))


def wrap_master_key(
    kek: bytes | bytearray, master_key: bytes | bytearray, *, format_version: int
) -> bytes:
    nonce = entropy.random_bytes(NONCE_SIZE)
    return nonce + AESGCM(kek).encrypt(nonce, bytes(master_key), _wrap_aad(format_version))


def unwrap_master_key(kek: bytes | bytearray, wrapped: bytes, *, format_version: int) -> bytearray:
    """The master key in a fresh ``bytearray`` (the caller clears it), wrapped for a
    database of ``format_version``.

    Raises :class:`AuthenticationFailed` for a wrong key, a damaged blob or another
    format version."""
    if len(wrapped) != NONCE_SIZE + KEY_SIZE + 16:
        raise AuthenticationFailed("wrapped master key has the wrong size")
    out = bytearray(KEY_SIZE)
    aead = AESGCM(kek)
    aad = _wrap_aad(format_version)
    try:
        if hasattr(aead, "decrypt_into"):
            aead.decrypt_into(wrapped[:NONCE_SIZE], wrapped[NONCE_SIZE:], aad, out)
        else:  # cryptography < 47: through one immutable bytes object, as derive_into says
            out[:] = aead.decrypt(wrapped[:NONCE_SIZE], wrapped[NONCE_SIZE:], aad)
    except InvalidTag as exc:
        raise AuthenticationFailed("master key did not unwrap") from exc
    return out


def _lp(*parts: bytes) -> bytes:
    """Unambiguous concatenation: each part prefixed by its 4-byte length."""
    return b"".join(struct.pack(">I", len(p)) + p for p in parts)


_COUNTER_DOMAIN = _lp(b"counter")
_ROWS_DOMAIN = _lp(b"counter rows")  # formats 2-4: the number of rows only
_COUNTER_INDEX_DOMAIN = _lp(b"counter rows v5")
_MEMBER_DOMAIN = _lp(b"counter row v5")
_CREDENTIAL_ROWS_DOMAIN = _lp(b"credential rows v4")
_STATE_DOMAIN = _lp(b"state rows v3")
STATE_DIGEST_SIZE = 32
"""Bytes of the per-row digest :meth:`RecordKeys.state_mac` covers (SHA-256 of the row's blob)."""


@dataclass(frozen=True)
class RecordKeys:
    """Subkeys derived from the master key (``bytearray``s, zeroed by :meth:`clear`)."""

    record_key: bytearray = field(repr=False)
    index_key: bytearray = field(repr=False)
    counter_key: bytearray = field(repr=False)
    # One AES-GCM object for every record: it holds its own copy of record_key
    # (inside cryptography, not clearable) instead of one short-lived copy per call.
    _aead: AESGCM = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_aead", AESGCM(self.record_key))

    @classmethod
    def derive(cls, master_key: bytes | bytearray) -> RecordKeys:
        def hkdf(info: bytes) -> bytearray:
            out = bytearray(KEY_SIZE)
            derive_into(HKDF(hashes.SHA256(), KEY_SIZE, salt=None, info=info), master_key, out)
            return out

        return cls(
            record_key=hkdf(_RECORD_INFO),
            index_key=hkdf(_INDEX_INFO),
            counter_key=hkdf(_COUNTER_INFO),
        )

    def clear(self) -> None:
        """Zero the subkeys (the store is closed; the object must not be used again)."""
        for key in (self.record_key, self.index_key, self.counter_key):
            clear(key)

    def blind(self, domain: str, *parts: bytes) -> bytes:
        """Keyed hash for a lookup column: HMAC-SHA256(index_key, domain || parts)."""
        return hmac.digest(self.index_key, _lp(domain.encode("ascii"), *parts), "sha256")

    def counter_mac(self, cred_tag: bytes, value: int) -> bytes:
        """Tag of one counter row: BLAKE2s-128 keyed with counter_key over
        "counter" || cred_tag || value (8 bytes). Binds the value to its row."""
        message = _COUNTER_DOMAIN + len(cred_tag).to_bytes(4, "big") + cred_tag
        message += value.to_bytes(8, "big")
        return hashlib.blake2s(
            message, digest_size=COUNTER_MAC_SIZE, key=self.counter_key, person=_COUNTER_PERSON
        ).digest()

    def check_counter(self, cred_tag: bytes, value: int, mac: bytes) -> bool:
        if not 0 <= value < 1 << 64:
            return False
        return hmac.compare_digest(self.counter_mac(cred_tag, value), mac)

    def rows_mac(self, count: int, members: int) -> bytes:
        """Tag of the counter rows as a set (format 5): their number and ``members``, the XOR
        of :meth:`counter_member` over their tags. A row that vanishes is noticed, also when
        an older index row is put back: it authenticates only the rows it was written for."""
        message = _COUNTER_INDEX_DOMAIN + count.to_bytes(8, "big")
        message += members.to_bytes(COUNTER_MAC_SIZE, "big")
        return hashlib.blake2s(
            message, digest_size=COUNTER_MAC_SIZE, key=self.counter_key, person=_COUNTER_PERSON
        ).digest()

    def counter_member(self, cred_tag: bytes) -> int:
        """One counter row's share of :meth:`rows_mac`: keyed BLAKE2s-128 of its tag. Keyed,
        so that nobody without the key can pick other rows whose shares XOR to a missing
        one's (an unkeyed hash would let linear algebra over old rows do it)."""
        return int.from_bytes(
            hashlib.blake2s(
                _MEMBER_DOMAIN + cred_tag,
                digest_size=COUNTER_MAC_SIZE,
                key=self.counter_key,
                person=_COUNTER_PERSON,
            ).digest(),
            "big",
        )

    def rows_mac_v4(self, count: int) -> bytes:
        """Formats 2-4: the tag of the number of counter rows alone (read by the migrations)."""
        message = _ROWS_DOMAIN + count.to_bytes(8, "big")
        return hashlib.blake2s(
            message, digest_size=COUNTER_MAC_SIZE, key=self.counter_key, person=_COUNTER_PERSON
        ).digest()

    def credential_rows_mac(self, count: int) -> bytes:
        """Tag of the number of credential rows (format 4): a deleted credential's old row put
        back, or every row deleted, is noticed."""
        message = _CREDENTIAL_ROWS_DOMAIN + count.to_bytes(8, "big")
        return hashlib.blake2s(
            message, digest_size=COUNTER_MAC_SIZE, key=self.counter_key, person=_COUNTER_PERSON
        ).digest()

    def state_mac(self, rows: Iterable[tuple[bytes, bytes]]) -> bytes:
        """Tag of the whole set of state rows (format 3): keyed BLAKE2s-128 over every
        (key_tag, SHA-256 of its blob), in ascending key_tag order. A row deleted, added,
        replaced or rolled back to an older ciphertext of its own changes the tag."""
        mac = hashlib.blake2s(
            _STATE_DOMAIN,
            digest_size=COUNTER_MAC_SIZE,
            key=self.counter_key,
            person=_COUNTER_PERSON,
        )
        for tag, digest in rows:
            mac.update(_lp(tag, digest))
        return mac.digest()

    def encrypt(self, table: str, row: tuple[bytes, ...], plaintext: bytes) -> bytes:
        nonce = entropy.random_bytes(NONCE_SIZE)
        aad = _lp(table.encode("ascii"), *row)
        return nonce + self._aead.encrypt(nonce, plaintext, aad)

    def decrypt(self, table: str, row: tuple[bytes, ...], blob: bytes) -> bytes:
        """Raises :class:`AuthenticationFailed` if ``blob`` is not this row's record."""
        if len(blob) < NONCE_SIZE + 16:
            raise AuthenticationFailed(f"record in {table} is truncated")
        aad = _lp(table.encode("ascii"), *row)
        try:
            return self._aead.decrypt(blob[:NONCE_SIZE], blob[NONCE_SIZE:], aad)
        except InvalidTag as exc:
            raise AuthenticationFailed(f"record in {table} failed authentication") from exc
