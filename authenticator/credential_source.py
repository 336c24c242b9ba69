"""What a credential ID carries: the sealed private key and the few facts bound to it.

Every credential ID this key issues (CTAP2 server-side and discoverable ones,
and CTAP1 key handles) is ``keystore.credential_id.seal`` of the canonical CBOR
encoding of a :class:`SealedCredential`, bound to the rpIdHash (for U2F: the
application parameter). An ID that does not unseal is simply not ours.

For discoverable credentials the keystore additionally holds a
``CredentialRecord`` (user entity, rp name...); an ID whose ``discoverable``
flag is set but has no record was deleted and is treated as unknown.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field

import cbor2

from vfido.authenticator.requests import MAX_USER_ID_LENGTH
from vfido.keystore import credential_id
from vfido.keystore.store import KeyStore

# CBOR map keys of the sealed plaintext.
_ALG = 1
_KEY = 2
_CRED_PROTECT = 3
_FLAGS = 4
_CRED_BLOB = 5

_FLAG_DISCOVERABLE = 0x01
_FLAG_HMAC_SECRET = 0x02
_FLAG_U2F = 0x04
_FLAG_THIRD_PARTY_PAYMENT = 0x08


@dataclass(frozen=True)
class SealedCredential:
    algorithm: int
    private_key: bytes = field(repr=False)  # CredentialKey.private_bytes()
    cred_protect: int = 1
    discoverable: bool = False
    hmac_secret: bool = False
    u2f: bool = False  # created by CTAP1 REGISTER
    cred_blob: bytes | None = field(default=None, repr=False)
    third_party_payment: bool = False  # CTAP 2.2 thirdPartyPayment extension

    def to_bytes(self) -> bytes:
        flags = (
            (_FLAG_DISCOVERABLE if self.discoverable else 0)
            | (_FLAG_HMAC_SECRET if self.hmac_secret else 0)
            | (_FLAG_U2F if self.u2f else 0)
            | (_FLAG_THIRD_PARTY_PAYMENT if self.third_party_payment else 0)
        )
        data: dict[int, object] = {_ALG: self.algorithm, _KEY: self.private_key}
        if self.cred_protect != 1:
            data[_CRED_PROTECT] = self.cred_protect
        if flags:
            data[_FLAGS] = flags
        if self.cred_blob is not None:
            data[_CRED_BLOB] = self.cred_blob
        return cbor2.dumps(data, canonical=True)

    @classmethod
    def from_bytes(cls, data: bytes) -> SealedCredential:
        """Parse a plaintext we sealed ourselves. Raises ValueError if malformed."""
        try:
            m = cbor2.loads(data)
        except Exception as exc:  # cbor2 raises several types
            raise ValueError("malformed sealed credential") from exc
        if not isinstance(m, dict):
            raise ValueError("malformed sealed credential")
        alg, key = m.get(_ALG), m.get(_KEY)
        flags = m.get(_FLAGS, 0)
        cred_protect = m.get(_CRED_PROTECT, 1)
        blob = m.get(_CRED_BLOB)
        if (
            not isinstance(alg, int)
            or not isinstance(key, bytes)
            or not isinstance(flags, int)
            or not isinstance(cred_protect, int)
            or not (blob is None or isinstance(blob, bytes))
        ):
            raise ValueError("malformed sealed credential")
        return cls(
            algorithm=alg,
            private_key=key,
            cred_protect=cred_protect,
            discoverable=bool(flags & _FLAG_DISCOVERABLE),
            hmac_secret=bool(flags & _FLAG_HMAC_SECRET),
            u2f=bool(flags & _FLAG_U2F),
            cred_blob=blob,
            third_party_payment=bool(flags & _FLAG_THIRD_PARTY_PAYMENT),
        )


def encode_credential_id(key: bytes, rp_id_hash: bytes, source: SealedCredential) -> bytes:
    """Seal ``source`` into a credential ID bound to ``rp_id_hash``."""
    return credential_id.seal(key, rp_id_hash, source.to_bytes())


def decode_credential_id(key: bytes, rp_id_hash: bytes, cred_id: bytes) -> SealedCredential | None:
    """The sealed credential, or None if ``cred_id`` is not one of ours for this RP."""
    return _decode_cached(bytes(key), bytes(rp_id_hash), bytes(cred_id))


def clear_credential_cache() -> None:
    """Forget every unsealed credential ID (authenticatorReset: the old ones are dead)."""
    _decode_cached.cache_clear()


#: Unsealing is a pure function of (credential key, rpIdHash, ID): the same ID always gives
#: the same credential under the same key, so results can never be stale (a reset changes
#: the key). Cached because the same credential is used again and again, and AES-GCM plus
#: the CBOR parse was a tenth of an assertion. Holds decoded private keys, like the key
#: cache in authenticator.cose (SECURITY.md).
@functools.lru_cache(maxsize=256)
def _decode_cached(key: bytes, rp_id_hash: bytes, cred_id: bytes) -> SealedCredential | None:
    plaintext = credential_id.unseal(key, rp_id_hash, cred_id)
    if plaintext is None:
        return None
    try:
        return SealedCredential.from_bytes(plaintext)
    except ValueError:
        return None


# --- credential IDs chosen outside the key (WebDriver "Add Credential") ------------------
#
# The W3C WebDriver extension lets a test give a credential its ID (WebAuthn Level 3 section
# 11.6, credentialId). Such an ID is not sealed by this key, so the key keeps, as an
# encrypted state value keyed by a hash of (rpIdHash, ID), the sealed ID it would have
# issued plus the credential's backup flags; resolve_credential_id() falls back to it when
# an ID does not unseal. authenticatorReset erases it with every other state value.

#: Prefix of the state keys of imported credential IDs.
IMPORTED_ID_STATE_PREFIX = "imported-credential-id."


@dataclass(frozen=True)
class ImportedCredentialId:
    """What the key keeps for a credential ID chosen outside it."""

    sealed_id: bytes
    backup_eligible: bool = False
    backup_state: bool = False
    #: The ID it is known by and its RP (so the key can list what was imported).
    credential_id: bytes = b""
    rp_id: str = ""
    #: The user handle given with a server-side credential (WebDriver Add Credential's
    #: ``userHandle``): returned in its assertions, as the W3C credential source's.
    user_handle: bytes | None = None

    def to_bytes(self) -> bytes:
        fields: dict[int, object] = {
            1: self.sealed_id,
            2: self.backup_eligible,
            3: self.backup_state,
            4: self.credential_id,
            5: self.rp_id,
        }
        if self.user_handle is not None:
            fields[6] = self.user_handle
        return cbor2.dumps(fields, canonical=True)

    @classmethod
    def from_bytes(cls, data: bytes) -> ImportedCredentialId | None:
        try:
            m = cbor2.loads(data)
        except Exception:  # cbor2 raises several types
            return None
        if (
            not isinstance(m, dict)
            or not isinstance(m.get(1), bytes)
            or not isinstance(m.get(4, b""), bytes)
            or not isinstance(m.get(5, ""), str)
            or not (
                m.get(6) is None
                or (isinstance(m[6], bytes) and 1 <= len(m[6]) <= MAX_USER_ID_LENGTH)
            )
        ):
            return None
        return cls(m[1], m.get(2) is True, m.get(3) is True, m.get(4, b""), m.get(5, ""), m.get(6))


def imported_id_state_key(rp_id_hash: bytes, cred_id: bytes) -> str:
    """The state key of an imported credential ID (a hash: IDs are binary and long)."""
    digest = hashlib.sha256(bytes(rp_id_hash) + b"\x00" + bytes(cred_id)).hexdigest()
    return IMPORTED_ID_STATE_PREFIX + digest


def record_server_side(
    store: KeyStore,
    rp_id: str,
    rp_id_hash: bytes,
    cred_id: bytes,
    backup_eligible: bool,
    backup_state: bool,
) -> None:
    """Keep a record of a server-side credential this key made (Config.
    record_server_side_credentials): the same state value as an imported ID, whose ID is the
    key's own sealed one. Nothing in it is secret in plaintext: the private key stays sealed."""
    kept = ImportedCredentialId(cred_id, backup_eligible, backup_state, cred_id, rp_id)
    store.put_state({imported_id_state_key(rp_id_hash, cred_id): kept.to_bytes()})


def resolve_credential_id(
    store: KeyStore, rp_id_hash: bytes, cred_id: bytes, *, recorded: bool = False
) -> tuple[SealedCredential, ImportedCredentialId | None] | None:
    """The credential behind ``cred_id`` for this RP: sealed by this key, or imported with an
    ID of its own (then also what was kept for it); None if it is not one of ours.
    ``recorded``: the key records its server-side credentials, so one without its record was
    removed (WebDriver Remove Credential) and is not one of ours any more. A U2F registration
    has no record (U2F names no RP ID to list it under): its key handle stays ours."""
    key = store.identity().credential_key
    sealed = decode_credential_id(key, rp_id_hash, cred_id)
    if sealed is not None and (sealed.discoverable or sealed.u2f or not recorded):
        return sealed, None
    raw = store.get_state(imported_id_state_key(rp_id_hash, cred_id))
    if raw is None:
        return None
    imported = ImportedCredentialId.from_bytes(raw)
    if imported is None:
        return None
    if sealed is None:
        sealed = decode_credential_id(key, rp_id_hash, imported.sealed_id)
    return None if sealed is None else (sealed, imported)
