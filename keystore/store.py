"""The keystore interface: what the authenticator may ask of storage.

Every mutating method is one atomic, durable transaction: when it returns, the
change is on disk (fsync'd); when the process dies before it returns, the
change is either wholly there or wholly absent.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol


class KeystoreError(Exception):
    """Base class. Messages are one line, for the user, and never contain secrets."""


class WrongPassphrase(KeystoreError):
    pass


class KeystoreCorrupt(KeystoreError):
    """Authentication of stored data failed or the file is not a vfido keystore."""


class KeystoreLocked(KeystoreError):
    """Another process has this keystore open."""


class KeystoreFull(KeystoreError):
    """The write failed for lack of space (ENOSPC) or a configured credential limit."""


class KeystoreUnavailable(KeystoreError):
    """The keystore cannot be written (read-only directory, I/O error...)."""


@dataclass(frozen=True)
class DeviceIdentity:
    """Per-keystore device secrets and attestation material.

    ``credential_key`` seals server-side credential IDs; it is replaced on reset.
    The attestation material survives a reset, and so does ``backup_eligible``: chosen
    when the keystore is created, it makes every credential backup eligible (WebAuthn BE).
    """

    aaguid: bytes  # 16 bytes
    credential_key: bytes = field(repr=False)  # 32-byte AES-256-GCM key
    attestation_key: bytes = field(repr=False)  # PKCS#8 DER of the batch key (P-256)
    attestation_chain: tuple[bytes, ...]  # DER certificates: batch cert first, root last
    backup_eligible: bool = False


@dataclass(frozen=True)
class CredentialRecord:
    """A discoverable (resident) credential as stored.

    Field meanings follow CTAP 2.1. ``private_key`` is the authenticator's compact
    private-key encoding (``authenticator.cose.CredentialKey.private_bytes()``);
    the keystore treats it as an opaque secret.
    """

    credential_id: bytes
    rp_id: str
    rp_id_hash: bytes
    user_id: bytes
    algorithm: int
    private_key: bytes = field(repr=False)
    created: int  # unix seconds
    rp_name: str | None = None
    user_name: str | None = None
    user_display_name: str | None = None
    cred_protect: int = 1
    cred_random_uv: bytes | None = field(default=None, repr=False)  # hmac-secret
    cred_random_no_uv: bytes | None = field(default=None, repr=False)
    cred_blob: bytes | None = field(default=None, repr=False)
    large_blob_key: bytes | None = field(default=None, repr=False)
    backup_eligible: bool = False
    backup_state: bool = False


@dataclass(frozen=True)
class CredentialSummary:
    """What listing needs: the record plus its current signature counter."""

    record: CredentialRecord
    sign_count: int


class KeyStore(Protocol):
    """Storage as seen by the authenticator."""

    # --- identity -------------------------------------------------------
    def identity(self) -> DeviceIdentity: ...

    # --- discoverable credentials ---------------------------------------
    def put_credential(self, record: CredentialRecord) -> None:
        """Store ``record``, atomically replacing any credential with the same
        (rp_id_hash, user_id) as CTAP 2.1 makeCredential step 17 requires.

        Raises :class:`KeystoreFull` when it cannot be stored.
        """
        ...

    def find_credentials(self, rp_id_hash: bytes) -> list[CredentialRecord]:
        """Discoverable credentials for one RP, newest first. Cost independent of store size."""
        ...

    def get_credential(self, credential_id: bytes) -> CredentialRecord | None: ...

    def list_credentials(self) -> list[CredentialSummary]: ...

    def delete_credential(self, credential_id: bytes) -> bool:
        """True if a credential was deleted."""
        ...

    def update_user(
        self, credential_id: bytes, name: str | None, display_name: str | None
    ) -> bool: ...

    def count_credentials(self) -> int: ...

    # --- signature counters ---------------------------------------------
    def increment_counter(self, credential_id: bytes, step: int = 1) -> int:
        """Add ``step`` to the credential's counter, persist it, return the new value.

        Works for any credential id (server-side ones included: only a keyed
        hash of the id and the counter are stored). Unknown ids start at 0.
        """
        ...

    def get_counter(self, credential_id: bytes) -> int: ...

    # --- other persistent state (PIN, settings, large blob...) ------------
    def get_state(self, key: str) -> bytes | None: ...

    def put_state(self, updates: Mapping[str, bytes | None]) -> None:
        """Set (or, for ``None``, delete) several keys in one transaction."""
        ...

    def state_keys(self) -> Iterable[str]: ...

    # --- reset ------------------------------------------------------------
    def reset(self) -> None:
        """authenticatorReset: delete every credential, counter and state key,
        and replace ``credential_key`` so every earlier credential id is dead.
        Attestation material and the AAGUID are kept."""
        ...

    def close(self) -> None: ...
