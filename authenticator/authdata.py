"""Authenticator data (WebAuthn Level 2 section 6.1, CTAP 2.1 section 6.1 and 6.2).

Layout::

    rpIdHash (32) || flags (1) || signCount (4, big-endian)
    || [attestedCredentialData: aaguid (16) || credIdLen (2) || credId || COSE_Key]
    || [extensions: CBOR map]
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import struct
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from vfido.authenticator import cbor
from vfido.keystore.store import CredentialRecord, KeyStore


class AuthDataFlags:
    """Bits of the authData flags byte.

    Plain ``int`` constants rather than an ``IntFlag``: the flags are combined on every
    assertion, and each ``IntFlag`` operation costs a class call.
    """

    UP: Final = 0x01  # user present
    UV: Final = 0x04  # user verified
    BE: Final = 0x08  # backup eligible
    BS: Final = 0x10  # backup state
    AT: Final = 0x40  # attested credential data included
    ED: Final = 0x80  # extension data included


@dataclass(frozen=True)
class AttestedCredentialData:
    aaguid: bytes
    credential_id: bytes
    public_key: Mapping[int, Any]  # COSE_Key

    def to_bytes(self) -> bytes:
        if len(self.aaguid) != 16:
            raise ValueError("AAGUID must be 16 bytes")
        if len(self.credential_id) > 1023:
            raise ValueError("credential ID too long")
        return (
            self.aaguid
            + struct.pack(">H", len(self.credential_id))
            + self.credential_id
            + cbor.encode(dict(self.public_key))
        )


@functools.lru_cache(maxsize=256)
def rp_id_hash(rp_id: str) -> bytes:
    """SHA-256 of the RP ID (cached: a key serves few RPs, and asks on every request)."""
    return hashlib.sha256(rp_id.encode("utf-8")).digest()


def build_auth_data(
    rp_id_hash: bytes,
    flags: int,
    sign_count: int,
    attested: AttestedCredentialData | None = None,
    extensions: Mapping[str, Any] | None = None,
) -> bytes:
    """Serialize authenticator data; AT and ED are set from the presence of their parts."""
    if len(rp_id_hash) != 32:
        raise ValueError("rpIdHash must be 32 bytes")
    if not 0 <= sign_count <= 0xFFFFFFFF:
        raise ValueError("signCount out of range")
    flags &= ~(AuthDataFlags.AT | AuthDataFlags.ED) & 0xFF
    tail = b""
    if attested is not None:
        flags |= AuthDataFlags.AT
        tail += attested.to_bytes()
    if extensions:
        flags |= AuthDataFlags.ED
        tail += cbor.encode(dict(extensions))
    return rp_id_hash + bytes((flags,)) + struct.pack(">I", sign_count) + tail


# --- backup eligibility (WebAuthn Level 3 section 6.1.3, "Credential Backup State") ---------
#
# Backup eligibility is fixed when a credential is created. vfido makes it a property of the
# device identity, chosen once at `vfido init --backup-eligible` (DeviceIdentity.
# backup_eligible, which survives authenticatorReset like the AAGUID), so every credential of
# that keystore has BE=1 (and of any other keystore BE=0). BS (backed up) is set once
# `vfido export` has written a bundle: for discoverable credentials per record (the ones in
# the bundle), for server-side credentials by a keystore state flag (their keys are sealed in
# their IDs with the device key, which every bundle carries; reset erases the flag with the
# credentials). BS is never 1 without BE.

#: State key: b"\x01" once the device key was exported (`vfido export`).
BACKUP_DONE_STATE = "backup.exported"

#: Per store: (credential key the values were read under, eligible, exported). The
#: credential key changes on reset, which erases the state flag.
_BACKUP_CACHE: weakref.WeakKeyDictionary[Any, tuple[bytes, bool, bool]] = (
    weakref.WeakKeyDictionary()
)


def _keystore_backup(store: KeyStore) -> tuple[bool, bool]:
    key = store.identity().credential_key
    try:
        cached = _BACKUP_CACHE.get(store)
    except TypeError:  # not weakly referenceable: no cache
        cached = None
    if cached is not None and cached[0] == key:
        return cached[1], cached[2]
    eligible = store.identity().backup_eligible
    exported = eligible and store.get_state(BACKUP_DONE_STATE) == b"\x01"
    with contextlib.suppress(TypeError):
        _BACKUP_CACHE[store] = (key, eligible, exported)
    return eligible, exported


def forget_backup_state(store: KeyStore) -> None:
    """Drop cached backup settings of ``store`` (after writing them)."""
    with contextlib.suppress(TypeError):
        _BACKUP_CACHE.pop(store, None)


def keystore_backup_eligible(store: KeyStore) -> bool:
    """Whether credentials created now on ``store`` are backup eligible."""
    return _keystore_backup(store)[0]


def new_credential_backed_up(store: KeyStore, default_backup_state: bool | None) -> bool:
    """Whether a discoverable credential created now on ``store`` starts backed up (BS):
    only on a key whose ``Config.default_backup_state`` says so (one made after the last
    `vfido export` is in no bundle), and only where it is backup eligible."""
    return bool(default_backup_state) and _keystore_backup(store)[0]


def backup_flags(
    store: KeyStore, record: CredentialRecord | None, default_backup_state: bool | None = None
) -> int:
    """BE and BS for a credential: its ``record`` (discoverable) or the keystore (server-side:
    what the key's ``Config.default_backup_state`` says, or, without one, backed up once
    exported)."""
    if record is not None:
        eligible, backed_up = record.backup_eligible, record.backup_state
    else:
        eligible, exported = _keystore_backup(store)
        backed_up = exported if default_backup_state is None else default_backup_state
    return backup_flags_of(eligible, backed_up)


def backup_flags_of(eligible: bool, backed_up: bool) -> int:
    """The BE and BS flags (BS is never set without BE)."""
    flags = 0
    if eligible:
        flags |= AuthDataFlags.BE
        if backed_up:
            flags |= AuthDataFlags.BS
    return flags
