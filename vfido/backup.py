"""Backups: `vfido export FILE` / `vfido import FILE` move a key to another machine.

A bundle holds everything that makes the key: the device identity (AAGUID, the credential
key that seals every credential ID, the attestation key and certificates), every
discoverable credential with its signature counter, the persistent state (PIN, settings,
large blobs), and the largest signature counter of the keystore. Restored, it answers for
every credential it answered for before: discoverable ones from their records, server-side
ones because their IDs unseal with the same credential key. Counters never go backwards:
discoverable credentials keep theirs, and every other counter starts above the largest one
exported (the keystore's counter floor), since a server-side credential's ID is known only to
its relying party.

File layout (mode 0600)::

    MAGIC "VFIDO-BACKUP-1\\n" || header length (4 bytes, big-endian) || header (JSON: format,
    Argon2id parameters, nonce; older bundles' also carry the AAGUID and creation time,
    ignored) || AES-256-GCM ciphertext of the CBOR payload

The key is Argon2id (``keystore.kdf``, production parameters) of the bundle's own passphrase;
the associated data is everything before the ciphertext, so a changed header, a wrong
passphrase and a damaged ciphertext are all "cannot be decrypted".

Backup eligibility (WebAuthn's BE flag) is fixed when a credential is created, so it is a
choice made when the keystore is created (`vfido init --backup-eligible`: a device identity
from :func:`backup_eligible_identity`; it survives authenticatorReset): such a keystore's
credentials carry BE=1, and BS=1 once a bundle holding them was written. Exporting a
keystore made without the choice is refused unless forced, because its credentials told
relying parties they are bound to one device; forced, the flags stay 0 on both machines.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import hmac
import json
import os
import stat
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO

import cbor2
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from vfido.authenticator.authdata import (
    BACKUP_DONE_STATE,
    forget_backup_state,
    keystore_backup_eligible,
)
from vfido.authenticator.cose import ALGORITHM_NAMES, CredentialKey, UnsupportedAlgorithm
from vfido.keystore import kdf
from vfido.keystore.files import (
    DB_NAME,
    LOCK_NAME,
    fsync_path,
    keystore_files,
    link_into_place,
    prepare_new_directory,
)
from vfido.keystore.identity import identity_from_bytes, identity_to_bytes, new_identity
from vfido.keystore.integrity import MAX_COUNTER
from vfido.keystore.lock import DirectoryLock
from vfido.keystore.records import decode_record, encode_record
from vfido.keystore.sqlite_store import SqliteKeyStore
from vfido.keystore.store import (
    CredentialRecord,
    DeviceIdentity,
    KeystoreCorrupt,
    KeystoreError,
    KeystoreLocked,
)

MAGIC = b"VFIDO-BACKUP-1\n"
FORMAT = 1
NONCE_SIZE = 12
MAX_HEADER = 4096
MAX_BUNDLE = 256 * 1024 * 1024
#: State keys a bundle does not carry (they describe this keystore's own backups).
_LOCAL_STATE = frozenset({BACKUP_DONE_STATE, "counter.floor"})
_RECORD_FIELDS = {f.name: f for f in dataclasses.fields(CredentialRecord)}
#: The last second a creation time may name (9999-12-31T23:59:59Z: what datetime shows).
_LAST_TIMESTAMP = 253402300799


class BackupError(Exception):
    """A backup problem, in one line without secrets."""


@dataclass(frozen=True)
class Bundle:
    """The decrypted content of a bundle."""

    identity: DeviceIdentity = field(repr=False)
    credentials: tuple[tuple[CredentialRecord, int], ...] = field(repr=False)
    state: Mapping[str, bytes] = field(repr=False)
    counter_floor: int
    created: int

    @property
    def backup_eligible(self) -> bool:
        return self.identity.backup_eligible


# --- backup eligibility ------------------------------------------------------------------------


def backup_eligible_identity(aaguid: bytes | None = None) -> DeviceIdentity:
    """A new device identity whose credentials are backup eligible: pass it to
    ``SqliteKeyStore.create(..., identity=...)`` (`vfido init --backup-eligible`)."""
    return replace(new_identity(aaguid), backup_eligible=True)


# --- the bundle --------------------------------------------------------------------------------


def _record_to_cbor(record: CredentialRecord, counter: int) -> dict[str, Any]:
    data = {k: v for k, v in dataclasses.asdict(record).items() if v is not None}
    data["counter"] = counter
    return data


def _record_from_cbor(item: Any) -> tuple[CredentialRecord, int]:
    if not isinstance(item, dict):
        raise BackupError("the bundle's credentials are malformed")
    counter = item.pop("counter", 0)
    unknown = set(item) - set(_RECORD_FIELDS)
    if unknown or type(counter) is not int or not 0 <= counter <= MAX_COUNTER:
        raise BackupError("the bundle's credentials are malformed")
    try:
        record = CredentialRecord(**item)
        # Every field of the type the keystore reads back (a name of another type imported,
        # then failed every listing and every sign-in to its site: a review).
        decode_record(encode_record(record))  # CBORError: a cycle cbor2 would not write
    except (TypeError, ValueError, cbor2.CBORError, KeystoreCorrupt):
        raise BackupError("the bundle's credentials are malformed") from None
    if (
        record.cred_protect not in (1, 2, 3)
        or record.algorithm not in ALGORITHM_NAMES
        or not 0 <= record.created <= _LAST_TIMESTAMP
    ):
        raise BackupError("the bundle's credentials are malformed")
    try:  # a key of its algorithm (an ML-DSA one on a runtime without ML-DSA is kept)
        CredentialKey.from_private_bytes(record.algorithm, record.private_key)
    except UnsupportedAlgorithm:
        pass
    except ValueError:
        raise BackupError("the bundle's credentials are malformed") from None
    # The record is looked up by rp_id_hash and shown (and signed for) by rp_id: the two
    # must name the same relying party.
    if not hmac.compare_digest(hashlib.sha256(record.rp_id.encode()).digest(), record.rp_id_hash):
        raise BackupError("a credential in the bundle does not match its relying party (rpIdHash)")
    return record, counter


def _encode_payload(bundle: Bundle) -> bytes:
    payload = {
        "format": FORMAT,
        "identity": identity_to_bytes(bundle.identity),
        "credentials": [_record_to_cbor(r, n) for r, n in bundle.credentials],
        "state": dict(bundle.state),
        "counter_floor": bundle.counter_floor,
        "created": bundle.created,
    }
    return bytes(cbor2.dumps(payload, canonical=True))


def _decode_payload(data: bytes) -> Bundle:
    try:
        m = cbor2.loads(data)
    except Exception:  # cbor2 raises several types
        raise BackupError("the bundle's content is malformed") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise BackupError("the bundle's content is malformed or of an unknown format")
    try:
        identity = identity_from_bytes(m["identity"])
    except (KeyError, ValueError, TypeError):
        raise BackupError("the bundle's device identity is malformed") from None
    credentials, state = m.get("credentials"), m.get("state")
    floor, created = m.get("counter_floor"), m.get("created")
    if (
        not isinstance(credentials, list)
        or not isinstance(state, dict)
        or not all(isinstance(k, str) and isinstance(v, bytes) for k, v in state.items())
        or type(floor) is not int
        or not 0 <= floor <= MAX_COUNTER
        or type(created) is not int
    ):
        raise BackupError("the bundle's content is malformed")
    records = tuple(_record_from_cbor(item) for item in credentials)
    # One record per credential ID and per (relying party, user): a second one was merged
    # into the first or replaced it, silently (a review).
    if len({r.credential_id for r, _ in records}) < len(records) or len(
        {(r.rp_id_hash, r.user_id) for r, _ in records}
    ) < len(records):
        raise BackupError("the bundle holds a credential twice")
    return Bundle(
        identity=identity,
        credentials=records,
        state=state,
        counter_floor=floor,
        created=created,
    )


def seal_bundle(bundle: Bundle, passphrase: str, params: kdf.KdfParams | None = None) -> bytes:
    """The bundle file's bytes. ``params``: Argon2id parameters (tests pass cheap ones)."""
    params = params if params is not None else kdf.new_params()
    params.check_untrusted()  # what open_bundle runs: a bundle asking more would never open
    nonce = os.urandom(NONCE_SIZE)
    header = json.dumps(
        {
            "format": FORMAT,
            "kdf": json.loads(params.to_json()),
            "nonce": nonce.hex(),
            # Nothing of the key itself: the header is readable without the passphrase, and
            # the AAGUID (unique per keystore) would link the file to the key's
            # registrations (a review); it is in the encrypted payload.
        },
        sort_keys=True,
    ).encode()
    prefix = MAGIC + len(header).to_bytes(4, "big") + header
    key = kdf.derive_key(passphrase, params)
    return prefix + AESGCM(key).encrypt(nonce, _encode_payload(bundle), prefix)


def bundle_header(data: bytes) -> dict[str, Any]:
    """The unencrypted header of a bundle (not authenticated until opened), its Argon2id
    costs bounded (:meth:`vfido.keystore.kdf.KdfParams.check_untrusted`): a hostile header must not
    make the import allocate gigabytes before the passphrase can even be checked."""
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + 4:
        raise BackupError("not a vfido backup bundle")
    length = int.from_bytes(data[len(MAGIC) : len(MAGIC) + 4], "big")
    if length > MAX_HEADER or len(data) < len(MAGIC) + 4 + length:
        raise BackupError("the bundle is damaged (header)")
    try:
        header = json.loads(data[len(MAGIC) + 4 : len(MAGIC) + 4 + length])
    except (ValueError, RecursionError):
        raise BackupError("the bundle is damaged (header)") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise BackupError("the bundle has an unknown format")
    _header_kdf(header)
    return header


def _header_kdf(header: Mapping[str, Any]) -> tuple[kdf.KdfParams, bytes]:
    """The header's Argon2id parameters (bounded) and nonce."""
    try:
        params = kdf.KdfParams.from_json(json.dumps(header["kdf"]))
        nonce = bytes.fromhex(header["nonce"])
    except (KeyError, ValueError, TypeError, kdf.KdfParamsError):
        raise BackupError("the bundle is damaged (header)") from None
    if len(nonce) != NONCE_SIZE:
        raise BackupError("the bundle is damaged (header)")
    try:
        params.check_untrusted()
    except kdf.KdfParamsError as exc:
        raise BackupError(f"the bundle's header sets {exc}; refusing to run them") from None
    return params, nonce


def open_bundle(data: bytes, passphrase: str) -> Bundle:
    """Decrypt and parse a bundle. Raises :class:`BackupError` (wrong passphrase or damaged:
    the same message, as AES-GCM cannot tell them apart)."""
    params, nonce = _header_kdf(bundle_header(data))
    end = len(MAGIC) + 4 + int.from_bytes(data[len(MAGIC) : len(MAGIC) + 4], "big")
    key = kdf.derive_key(passphrase, params)
    try:
        payload = AESGCM(key).decrypt(nonce, data[end:], data[:end])
    except InvalidTag:
        raise BackupError(
            "the bundle cannot be decrypted: wrong bundle passphrase, or the file was changed"
        ) from None
    return _decode_payload(payload)


# --- export / import ---------------------------------------------------------------------------


def check_new_file(path: Path) -> None:
    """``path`` can become a new bundle file: nothing is there, and its directory exists (a
    missing one was named only by the hidden temporary file, after the key derivation)."""
    if path.exists() or path.is_symlink():
        raise BackupError(f"{path} exists: refusing to overwrite it")
    if not path.parent.exists():
        raise BackupError(f"{path.parent} does not exist (the bundle would be {path})")
    if not path.parent.is_dir():
        raise BackupError(f"{path.parent} is not a directory (the bundle would be {path})")


def _write_new_file(path: Path, data: bytes) -> None:
    """Write ``data`` to a new file ``path`` (0600), durably. Refuses to replace a file.

    The data goes to a file with no name yet in ``path``'s directory (``O_TMPFILE``), which is
    then linked to ``path`` (a link fails where a file is: nothing is ever replaced), so an
    export killed on the way leaves nothing behind. Where the file system has no unnamed
    files, a temporary file of a name no other file has (mkstemp: O_EXCL, 0600) takes its
    place; a kill then leaves that ``.NAME.*.tmp`` file, and no other file is ever removed
    (``FILE.tmp`` of the user's included)."""
    try:
        fd = _unnamed_file(path.parent)
        if fd is not None:
            with os.fdopen(fd, "wb") as f:
                _write_durably(f, data)
                _link_new(f"/proc/self/fd/{f.fileno()}", path, follow=True)
        else:
            fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            tmp = Path(name)
            try:
                with os.fdopen(fd, "wb") as f:
                    _write_durably(f, data)
                _link_new(tmp, path)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
    except OSError as exc:
        raise BackupError(f"cannot write {path}: {exc.strerror or exc}") from None
    with contextlib.suppress(OSError):
        fsync_path(path.parent, directory=True)


def _write_durably(f: BinaryIO, data: bytes) -> None:
    f.write(data)
    f.flush()
    os.fsync(f.fileno())


def _unnamed_file(directory: Path) -> int | None:
    """A new file with no name in ``directory`` (0600, open for writing), or None where the
    kernel or file system has none (or ``/proc``, through which it gets its name)."""
    flag = getattr(os, "O_TMPFILE", None)
    if flag is None or not os.path.isdir("/proc/self/fd"):
        return None
    try:
        return os.open(directory, flag | os.O_WRONLY | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
            return None
        raise


def _link_new(source: str | Path, path: Path, *, follow: bool = False) -> None:
    """``path`` becomes ``source``'s file (with ``follow``, the file ``source``, a symlink of
    ``/proc``, stands for); :class:`BackupError` if something is there."""
    if path.exists() or path.is_symlink():
        raise BackupError(f"{path} exists: refusing to overwrite it")
    try:
        if follow:
            # linkat(AT_SYMLINK_FOLLOW), which os.link calls only given a directory fd (its
            # plain link() would link the /proc symlink itself: EXDEV).
            dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.link(source, path.name, dst_dir_fd=dir_fd, follow_symlinks=True)
            finally:
                os.close(dir_fd)
        else:
            os.link(source, path)  # fails if path appeared meanwhile: never replaces a file
    except FileExistsError:
        raise BackupError(f"{path} exists: refusing to overwrite it") from None


def check_exportable(store: SqliteKeyStore, force: bool) -> bool:
    """Whether ``store`` is backup-eligible; raises :class:`BackupError` (with the reason)
    if it is not and ``force`` is false."""
    eligible = keystore_backup_eligible(store)
    if not eligible and not force:
        raise BackupError(
            "this keystore was not created backup-eligible (`vfido init --backup-eligible`): "
            "its credentials told relying parties they never leave this device (WebAuthn "
            "BE=0, fixed at creation). Use --force to copy it anyway (the flags stay 0)"
        )
    return eligible


def export_keystore(
    store: SqliteKeyStore,
    path: Path,
    passphrase: str,
    *,
    force: bool = False,
    kdf_params: kdf.KdfParams | None = None,
    clock: Callable[[], float] = time.time,
) -> Bundle:
    """Write ``store`` to a new bundle file ``path``; afterwards its credentials report BS=1
    (backup-eligible keystores only). Refuses a keystore that is not backup-eligible unless
    ``force``."""
    eligible = check_exportable(store, force)
    check_new_file(path)
    summaries = store.list_credentials()
    credentials = tuple(
        (replace(s.record, backup_state=eligible and s.record.backup_eligible), s.sign_count)
        for s in summaries
    )
    state = {
        key: value
        for key in store.state_keys()
        if key not in _LOCAL_STATE and (value := store.get_state(key)) is not None
    }
    bundle = Bundle(
        identity=store.identity(),
        credentials=credentials,
        state=state,
        counter_floor=store.max_counter(),
        created=int(clock()),
    )
    _write_new_file(path, seal_bundle(bundle, passphrase, kdf_params))
    if eligible:
        # Backed up now: BS=1 from here on (server-side credentials: their key is sealed
        # under the exported credential key; discoverable ones: the records exported).
        try:
            for record, _ in credentials:
                if record.backup_state:
                    store.put_credential(record)
            store.put_state({BACKUP_DONE_STATE: b"\x01"})
        except KeystoreError as exc:
            # The bundle is whole: only the flags saying so are not all stored (a full disk:
            # "export failed" beside a complete bundle misled the user, a review).
            raise BackupError(
                f"{path} is written and complete, but the keystore could not record that its "
                f"credentials are backed up ({exc}): some report BS=0 until the next export"
            ) from None
        finally:
            forget_backup_state(store)
    return bundle


def import_bundle(
    bundle: Bundle,
    directory: Path,
    passphrase: str,
    *,
    kdf_params: kdf.KdfParams | None = None,
) -> SqliteKeyStore:
    """Restore ``bundle`` into a new keystore in ``directory`` (never an existing one).

    All or nothing: the keystore is built in a hidden ``.importing-*`` directory inside
    ``directory`` and its database linked into place once complete (the one step that makes
    it a keystore), so a crash or a kill never leaves a keystore with some credentials,
    counters below the bundle's or no PIN (an outside review found one). Building inside the
    target keeps a directory made for it usable (a service's state directory in a parent it
    cannot write, ``.``). What a killed import left is removed by the next import; a kill
    between the link and that directory's removal leaves it beside the complete keystore."""
    directory = Path(directory)
    if SqliteKeyStore.exists(directory):
        raise BackupError(f"a keystore already exists in {directory}: refusing to overwrite it")
    made = not directory.exists()
    leftovers: list[Path] = []
    if directory.is_dir():
        entries = list(directory.iterdir())
        leftovers = [p for p in entries if _is_leftover(p)]
        if len(leftovers) != len(entries):
            raise BackupError(f"{directory} is not empty: import into a new directory")
    # Made 0700, or checked to be the user's and private before anything in it is removed.
    prepare_new_directory(directory)
    for leftover in leftovers:
        try:
            lock = DirectoryLock(leftover / LOCK_NAME)
        except KeystoreLocked:
            raise BackupError(f"another import into {directory} is running") from None
        try:
            _remove_keystore(leftover)
        finally:
            lock.release()
    staging = directory / f"{_STAGING}{os.urandom(4).hex()}"
    linked = False
    try:
        with SqliteKeyStore.create(
            staging, passphrase, identity=bundle.identity, kdf_params=kdf_params
        ) as store:
            _fill(store, bundle)
        if (staging / (DB_NAME + "-wal")).exists():  # a clean close folds the log in
            raise BackupError("the restored keystore was not closed cleanly")
        try:
            link_into_place(staging / DB_NAME, directory / DB_NAME)
        except FileExistsError:
            raise BackupError(
                f"a keystore appeared in {directory} meanwhile (another import, or `vfido "
                "init`): refusing to replace it"
            ) from None
        linked = True
        _remove_keystore(staging)
        fsync_path(directory, directory=True)
    except BaseException as exc:
        if not linked:
            _remove_keystore(staging)
            if made:
                with contextlib.suppress(OSError):
                    directory.rmdir()
        if isinstance(exc, OSError):
            done = f"restored into {directory}, but" if linked else "cannot restore into"
            raise BackupError(f"{done} {directory}: {exc.strerror}") from None
        raise
    return SqliteKeyStore.open(directory, passphrase)


#: The name prefix of the directory an import builds the keystore in.
_STAGING = ".importing-"
#: What such a directory may hold (SqliteKeyStore.create's files).
_STAGED_FILES = frozenset(
    [p.name for p in keystore_files(Path())] + [DB_NAME + ".new", DB_NAME + ".new-journal"]
)


def _is_leftover(path: Path) -> bool:
    """Whether ``path`` is what an import left: a real directory (not a link) of this user's
    named so, holding nothing but a keystore's files."""
    try:
        st = path.lstat()
        if (
            not path.name.startswith(_STAGING)
            or not stat.S_ISDIR(st.st_mode)
            or st.st_uid != os.geteuid()
        ):
            return False
        return all(p.name in _STAGED_FILES for p in path.iterdir())
    except OSError:
        return False


def _fill(store: SqliteKeyStore, bundle: Bundle) -> None:
    """Everything of ``bundle`` into the new ``store``."""
    eligible = bundle.backup_eligible
    for record, counter in bundle.credentials:
        restored = replace(
            record,
            backup_eligible=eligible and record.backup_eligible,
            backup_state=eligible and record.backup_eligible,
        )
        store.put_credential(restored)
        if counter:
            store.increment_counter(record.credential_id, counter)
    state: dict[str, bytes | None] = dict(bundle.state)
    if eligible:
        state[BACKUP_DONE_STATE] = b"\x01"
    if state:
        store.put_state(state)
    store.raise_counter_floor(bundle.counter_floor)
    forget_backup_state(store)


def _remove_keystore(directory: Path) -> None:
    """Undo a half-done import: the files a keystore consists of, then its directory."""
    for name in sorted(_STAGED_FILES):
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            (directory / name).unlink()
    with contextlib.suppress(OSError):
        directory.rmdir()
