"""CTAP 2.2 persistent pinUvAuthToken and the getInfo members encrypted under it.

The persistentPinUvAuthToken is a second token, granted only with the ``pcmr``
permission (read-only credential management), that survives power cycles: a
platform keeps it to list the key's discoverable credentials later without asking
for the PIN again. CTAP 2.2 resets it (resetPersistentPinUvAuthToken) with the PIN:
changePIN, a forced PIN change and authenticatorReset end every copy a platform kept.

Nothing secret is stored: everything is derived from the keystore's credential key
(replaced by authenticatorReset) and counters in the keystore's state rows::

    persistentPinUvAuthToken = HMAC-SHA-256(credential key, "...persistentPinUvAuthToken"
                                            || generation)      generation: ppuat.generation
    deviceIdentifier         = first 16 bytes of HMAC-SHA-256(credential key, "...deviceIdentifier")
    credStoreState           = first 16 bytes of HMAC-SHA-256(credential key, "...credStoreState"
                                            || discoverable credential count || cred.generation)

``ppuat.generation`` is advanced by every reset of the persistent token, so old
tokens stop verifying; ``cred.generation`` by every change this key makes to its
discoverable credentials (create, delete, update). The count also moves the state
when a credential is added or deleted outside CTAP (``vfido credentials delete``).

getInfo's encIdentifier (0x19) and encCredStoreState (0x1E) are
``iv || AES-128-CBC(key, iv, value)`` with a fresh random IV on every getInfo and
``key = HKDF-SHA-256(salt = 32 zero bytes, IKM = persistentPinUvAuthToken, L = 16,
info = "encIdentifier" / "encCredStoreState")``, so only a platform holding the
persistent token can read them, and two getInfo responses never look alike.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes

from vfido.keystore import entropy
from vfido.keystore.store import KeyStore

#: Keystore state rows (erased by authenticatorReset with everything else).
PPUAT_GENERATION = "ppuat.generation"
CRED_GENERATION = "cred.generation"

_TOKEN_LABEL = b"vfido persistentPinUvAuthToken\x00"
_IDENTIFIER_LABEL = b"vfido deviceIdentifier\x00"
_STORE_STATE_LABEL = b"vfido credStoreState\x00"

#: Length of deviceIdentifier and credStoreState (one AES block).
VALUE_SIZE = 16


def _counter(store: KeyStore, key: str) -> int:
    raw = store.get_state(key)
    return 0 if raw is None else int.from_bytes(raw, "big")


def _advanced(store: KeyStore, key: str) -> dict[str, bytes | None]:
    return {key: ((_counter(store, key) + 1) % 2**64).to_bytes(8, "big")}


def _mac(store: KeyStore, message: bytes) -> bytes:
    return hmac.new(store.identity().credential_key, message, hashlib.sha256).digest()


def persistent_token(store: KeyStore) -> bytes:
    """The current persistentPinUvAuthToken (32 bytes)."""
    generation = _counter(store, PPUAT_GENERATION)
    return _mac(store, _TOKEN_LABEL + generation.to_bytes(8, "big"))


def reset_updates(store: KeyStore) -> dict[str, bytes | None]:
    """The state update that performs resetPersistentPinUvAuthToken(), to be written in
    the same transaction as the PIN change that calls for it."""
    return _advanced(store, PPUAT_GENERATION)


def note_credential_change(store: KeyStore) -> None:
    """A discoverable credential was created, deleted or updated: credStoreState moves."""
    store.put_state(_advanced(store, CRED_GENERATION))


_T = TypeVar("_T")


class _Latest(Generic[_T]):
    """``function(secret)`` for the latest ``secret`` it was asked for, kept until another
    comes (a new credential key after authenticatorReset, a new persistent token): getInfo
    needs the same derived values every time. The secret is not kept, only its SHA-256 to
    recognise it (compared in constant time); the value is kept (the device identifier, or
    a cipher context holding the key derived from the token) until :meth:`clear`
    (authenticatorReset) or the next secret. Used under :attr:`lock` (a cipher context is
    not thread-safe)."""

    def __init__(self, function: Callable[[bytes], _T]) -> None:
        self._function = function
        self._digest = b""
        self._value: _T | None = None
        self.lock = threading.Lock()

    def get(self, secret: bytes) -> _T:
        """The value for ``secret`` (call with :attr:`lock` held)."""
        digest = hashlib.sha256(secret).digest()
        value = self._value
        if value is None or not hmac.compare_digest(self._digest, digest):
            value = self._value = self._function(secret)
            self._digest = digest
        return value

    def clear(self) -> None:
        with self.lock:
            self._digest, self._value = b"", None


def _identifier(credential_key: bytes) -> bytes:
    return hmac.digest(credential_key, _IDENTIFIER_LABEL, "sha256")[:VALUE_SIZE]


_IDENTIFIER = _Latest(_identifier)


def device_identifier(store: KeyStore) -> bytes:
    with _IDENTIFIER.lock:
        return _IDENTIFIER.get(store.identity().credential_key)


def cred_store_state(store: KeyStore) -> bytes:
    count = store.count_credentials()
    generation = _counter(store, CRED_GENERATION)
    message = _STORE_STATE_LABEL + count.to_bytes(8, "big") + generation.to_bytes(8, "big")
    return _mac(store, message)[:VALUE_SIZE]


def info_member_key(token: bytes, label: bytes) -> bytes:
    """``HKDF-SHA-256(salt = 32 zero bytes, IKM = token, L = 16, info = label)`` (RFC 5869;
    one HMAC for the extract, one for the single expand block)."""
    prk = hmac.digest(bytes(32), token, "sha256")
    return hmac.digest(prk, label + b"\x01", "sha256")[:16]


def _block_cipher(label: bytes) -> _Latest[CipherContext]:
    """AES-128 (one block at a time) under ``info_member_key(token, label)``."""

    def make(token: bytes) -> CipherContext:
        key = info_member_key(token, label)
        # ECB = the bare block cipher: encrypt_info_member builds the CBC block around it.
        return Cipher(algorithms.AES(key), modes.ECB()).encryptor()

    return _Latest(make)


_BLOCK_CIPHERS = {label: _block_cipher(label) for label in (b"encIdentifier", b"encCredStoreState")}


def forget_info_members() -> None:
    """Drop the kept identifier and ciphers (authenticatorReset: a new credential key)."""
    _IDENTIFIER.clear()
    for cipher in _BLOCK_CIPHERS.values():
        cipher.clear()


def encrypt_info_member(token: bytes, label: bytes, value: bytes) -> bytes:
    """``iv || AES-128-CBC`` of a 16-byte ``value`` under the key HKDF derives from
    ``token`` with ``label`` (b"encIdentifier" or b"encCredStoreState"), fresh ``iv``.

    CBC of a single block is the block cipher applied to ``iv XOR value``; the block
    cipher of the current token is kept, so a getInfo derives no key."""
    if len(value) != VALUE_SIZE:
        raise ValueError("an encrypted getInfo member is one AES block")
    iv = entropy.random_bytes(VALUE_SIZE)
    block = (int.from_bytes(iv, "big") ^ int.from_bytes(value, "big")).to_bytes(VALUE_SIZE, "big")
    cipher = _BLOCK_CIPHERS[label]
    with cipher.lock:
        return iv + cipher.get(token).update(block)


def encrypted_info_members(store: KeyStore) -> tuple[bytes, bytes]:
    """getInfo's encIdentifier (0x19) and encCredStoreState (0x1E), each under a fresh IV."""
    token = persistent_token(store)
    return (
        encrypt_info_member(token, b"encIdentifier", device_identifier(store)),
        encrypt_info_member(token, b"encCredStoreState", cred_store_state(store)),
    )
