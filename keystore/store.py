"""The keystore interface: what the authenticator may ask of storage.

Every mutating method is one atomic, durable transaction: when it returns, the
change is on disk (fsync'd); when the process dies before it returns, the
change is either wholly there or wholly absent.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
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


#: Length of an AAGUID (CTAP 2.1 section 6.4, authenticatorGetInfo).
AAGUID_SIZE = 16

#: What makes attestation material: (batch key PKCS#8 DER, DER chain batch first, root last).
AttestationMaker = Callable[[], tuple[bytes, tuple[bytes, ...]]]


class AttestationMaterial:
    """The batch key and certificate chain a key attests with (packed, fido-u2f).

    Either fixed bytes (``AttestationMaterial(key, chain)``: read from a keystore file,
    restored from a backup, or made at once), or made on first use
    (:meth:`on_first_use`): the maker runs when :attr:`key` or :attr:`chain` is first
    read, exactly once however many threads ask at the same moment, and the same bytes
    answer from then on. An ephemeral key makes its certificates this way, so a key that
    never attests never pays for X.509 (about 2 MB of an idle ``vfido run``'s memory).
    If the maker raises, nothing is kept and the next read tries again.
    """

    __slots__ = ("_lock", "_make", "_value")

    def __init__(self, key: bytes, chain: tuple[bytes, ...]) -> None:
        self._value: tuple[bytes, tuple[bytes, ...]] | None = (key, tuple(chain))
        self._make: AttestationMaker | None = None
        self._lock = threading.Lock()

    @classmethod
    def on_first_use(cls, make: AttestationMaker) -> AttestationMaterial:
        """Material that ``make()`` makes when it is first read."""
        material = cls(b"", ())
        material._value = None
        material._make = make
        return material

    @property
    def made(self) -> bool:
        """True once the key and chain exist (always, for fixed material)."""
        return self._value is not None

    def _get(self) -> tuple[bytes, tuple[bytes, ...]]:
        value = self._value
        if value is None:
            with self._lock:
                value = self._value
                if value is None:
                    assert self._make is not None
                    key, chain = self._make()
                    value = self._value = (key, tuple(chain))
                    self._make = None
        return value

    @property
    def key(self) -> bytes:
        """PKCS#8 DER of the batch key (P-256)."""
        return self._get()[0]

    @property
    def chain(self) -> tuple[bytes, ...]:
        """DER certificates: the batch certificate first, the root last."""
        return self._get()[1]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AttestationMaterial):
            return NotImplemented
        return self is other or self._get() == other._get()

    def __hash__(self) -> int:
        return hash(self._get())

    def __repr__(self) -> str:  # never the key, never a reason to make it
        return f"AttestationMaterial({'made' if self.made else 'made on first use'})"


@dataclass(frozen=True)
class DeviceIdentity:
    """Per-keystore device secrets and attestation material.

    ``credential_key`` seals server-side credential IDs; it is replaced on reset.
    The attestation material survives a reset, and so does ``backup_eligible``: chosen
    when the keystore is created, it makes every credential backup eligible (WebAuthn BE).
    ``attestation_key`` and ``attestation_chain`` read :attr:`attestation` (and make it,
    if it is made on first use).
    """

    aaguid: bytes  # AAGUID_SIZE bytes
    credential_key: bytes = field(repr=False)  # 32-byte AES-256-GCM key
    attestation: AttestationMaterial
    backup_eligible: bool = False

    @property
    def attestation_key(self) -> bytes:
        """PKCS#8 DER of the batch key (P-256)."""
        return self.attestation.key

    @property
    def attestation_chain(self) -> tuple[bytes, ...]:
        """DER certificates: the batch certificate first, the root last."""
        return self.attestation.chain


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
