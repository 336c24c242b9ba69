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

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

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


def device_identifier(store: KeyStore) -> bytes:
    return _mac(store, _IDENTIFIER_LABEL)[:VALUE_SIZE]


def cred_store_state(store: KeyStore) -> bytes:
    count = store.count_credentials()
    generation = _counter(store, CRED_GENERATION)
    message = _STORE_STATE_LABEL + count.to_bytes(8, "big") + generation.to_bytes(8, "big")
    return _mac(store, message)[:VALUE_SIZE]


def encrypt_info_member(token: bytes, label: bytes, value: bytes) -> bytes:
    """``iv || AES-128-CBC`` of a 16-byte ``value`` under the key HKDF derives from
    ``token`` with ``label`` (b"encIdentifier" or b"encCredStoreState")."""
    key = HKDF(algorithm=hashes.SHA256(), length=16, salt=bytes(32), info=label).derive(token)
    iv = entropy.random_bytes(16)
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return iv + encryptor.update(value) + encryptor.finalize()


def enc_identifier(store: KeyStore) -> bytes:
    """getInfo encIdentifier (0x19)."""
    return encrypt_info_member(persistent_token(store), b"encIdentifier", device_identifier(store))


def enc_cred_store_state(store: KeyStore) -> bytes:
    """getInfo encCredStoreState (0x1E)."""
    return encrypt_info_member(
        persistent_token(store), b"encCredStoreState", cred_store_state(store)
    )
