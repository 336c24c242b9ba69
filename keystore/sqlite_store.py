"""The SQLite keystore: one encrypted database file in a private directory.

Layout of a keystore directory (mode 0700, files 0600, owned by the user)::

    vfido.db         SQLite database (WAL mode, synchronous=FULL)
    vfido.db-wal     SQLite write-ahead log / shared memory (transient)
    vfido.db-shm
    vfido.lock       flock(2)ed while a process has the keystore open

Encryption (see :mod:`vfido.keystore.crypto`): a random 32-byte master key is
wrapped with AES-256-GCM under an Argon2id key derived from the passphrase
(parameters in the ``meta`` table). Every record (credential, state value,
identity) is AES-256-GCM encrypted under a key derived from the master key, with
a fresh nonce per write and the table name plus the row's index columns as
associated data. Lookup columns hold HMAC-SHA256 blinded values, so neither
credential IDs nor rpIdHashes are stored in the clear.

Signature counters (format 2) are integers keyed by the blinded credential ID
(no credential ID is stored), each row with a MAC (keyed BLAKE2s-128 under the
counter key) over the row's tag and value; the number of
counter rows is kept, with its own MAC, in a row of the same table under the
empty tag (it sorts first, and a new counter usually shares its page). Since format 5
that MAC also covers which rows: the XOR of a keyed hash of every tag
(:class:`vfido.keystore.integrity.CounterIndex`), so an older index row put back does not
hide a deleted counter. Opening a
keystore checks every counter row (MAC, strictly ascending tags, the count), so
a changed, swapped, duplicated or vanished counter is reported as corruption,
never taken as a lower value. While the store is open (the directory lock
excludes other writers) verified values are cached, and an assertion's counter
write is one ``UPDATE`` of one row in its own durable transaction.

State rows (format 3: PIN hash and retries, settings, the large-blob array...) are
authenticated as a set: a row of the state table under the empty tag holds a MAC
(keyed BLAKE2s-128 under the counter key, its own domain) over every other row's tag
and the SHA-256 of its ciphertext. Each row is already AES-GCM bound to its tag, so a
row changed in place fails to decrypt; the set MAC also catches a row deleted (all
of them: the PIN gone with the credentials kept; the retries row: 8 retries again),
added, or rolled back alone to an older ciphertext of its own. Opening checks it, and
while the store is open each read is checked against the digests verified then.

An ephemeral keystore (``:memory:``, nothing survives ``close``) keeps its device identity
in the store object, as it keeps its master key, not in an identity row: nothing is ever
read back from its database, and its attestation material is made on first use
(:func:`vfido.keystore.identity.new_identity`), which a row would force at creation.
It has no durability to buy with that ``UPDATE`` either: its counters are written back.
An advanced counter lives in the cache and a dirty set, and every dirty counter is written
(with its MAC; a new one inserted, with the row count) before any other statement runs, so
every query, listing and export sees the current values. Its database has no other
connection, so what only this object writes is also answered from memory: every counter
(its cache is never trimmed, so a credential absent from it has no counter yet: a new
credential's first assertion runs no statement), the decoded state rows, and the number of
discoverable credentials.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import cbor2

from vfido.keystore import kdf, schema
from vfido.keystore.crypto import (
    AuthenticationFailed,
    RecordKeys,
    clear,
    new_master_key,
    unwrap_master_key,
    wrap_master_key,
)
from vfido.keystore.files import (
    DB_NAME,
    DIR_MODE,
    FILE_MODE,
    LOCK_NAME,
    check_private,
    fsync_path,
    keystore_files,
    link_into_place,
    prepare_new_directory,
)
from vfido.keystore.identity import (
    identity_from_bytes,
    identity_to_bytes,
    new_identity,
    rotate_credential_key,
)
from vfido.keystore.integrity import (
    CREDENTIAL_ROWS,
    MAX_COUNTER,
    ROWS_TAG,
    STATE_INDEX_TAG,
    CounterIndex,
    checked_counter,
    checked_state_blob,
    credential_rows_value,
    state_digest,
    verify_counters,
    verify_credential_rows,
    verify_state,
)
from vfido.keystore.lock import DirectoryLock
from vfido.keystore.records import decode_record, encode_record
from vfido.keystore.schema import (
    APPLICATION_ID,
    FORMAT_VERSION,
    IDENTITY_ROW,
    INSERT_COUNTER,
    MIGRATIONS,
    T_CREDENTIALS,
    T_IDENTITY,
    T_STATE,
    UPDATE_COUNTER,
    UPSERT_STATE,
    Migration,
    check_header,
    configure,
    connect,
    init_schema,
    migrate,
    read_meta,
    transaction,
)
from vfido.keystore.sqlite_errors import map_os_error, map_sqlite_error
from vfido.keystore.store import (
    CredentialRecord,
    CredentialSummary,
    DeviceIdentity,
    KeystoreCorrupt,
    KeystoreError,
    KeystoreFull,
    KeystoreUnavailable,
    WrongPassphrase,
)
from vfido.keystore.wal import check_wal

__all__ = [  # the SQLite store, and what callers and tests use of its layout
    "APPLICATION_ID",
    "DB_NAME",
    "DIR_MODE",
    "FILE_MODE",
    "FORMAT_VERSION",
    "LOCK_NAME",
    "MIGRATIONS",
    "Migration",
    "SqliteKeyStore",
]

_COUNTER_FLOOR = "counter.floor"  # state key: raise_counter_floor()
_CACHE_SIZE = 4096  # verified counters (file stores) / credential-id tags / state rows kept
_K = TypeVar("_K")
_V = TypeVar("_V")


def _remember(cache: dict[_K, _V], key: _K, value: _V) -> None:
    """Put ``key`` in one of the store's bounded caches, evicting the oldest entry when
    it is full."""
    if key not in cache and len(cache) >= _CACHE_SIZE:
        cache.pop(next(iter(cache)), None)
    cache[key] = value


# --------------------------------------------------------------------------
# the store


def _writable_costs(params: kdf.KdfParams) -> None:
    """Refuse to write key derivation costs that :meth:`SqliteKeyStore.open` would refuse to
    run (``KdfParams.check_untrusted``): the keystore would never open again."""
    try:
        params.check_untrusted()
    except kdf.KdfParamsError as exc:
        raise ValueError(f"a keystore could not be opened with these costs: {exc}") from None


def _unwrap(kek: bytearray, wrapped: bytes, version: int) -> bytearray:
    """The master key of a format-``version`` file. A wrapped key bound to a newer format
    than the file says means its version was lowered by hand: corrupt, not a wrong passphrase
    (a migration from the lower version would re-seal whatever it found)."""
    try:
        return unwrap_master_key(kek, wrapped, format_version=version)
    except AuthenticationFailed:
        pass
    for newer in range(version + 1, schema.FORMAT_VERSION + 1):
        try:
            clear(unwrap_master_key(kek, wrapped, format_version=newer))
        except AuthenticationFailed:
            continue
        raise KeystoreCorrupt(
            f"the keystore says format version {version} but was written by format {newer} "
            "(the keystore was modified)"
        )
    raise WrongPassphrase("wrong passphrase for this keystore")


class SqliteKeyStore:
    """:class:`vfido.keystore.store.KeyStore` on an encrypted SQLite database.

    Thread-safe (one internal lock); one process at a time per directory.
    """

    def __init__(
        self,
        conn: sqlite3.Connection,
        keys: RecordKeys,
        master_key: bytearray,
        *,
        directory: Path | None,
        lock: DirectoryLock | None,
        max_credentials: int | None,
        identity: DeviceIdentity | None = None,
    ) -> None:
        """Internal: use :meth:`create`, :meth:`open` or :meth:`ephemeral` (``identity``:
        an in-memory store's, which has no identity row; None: read it from the row)."""
        self._conn: sqlite3.Connection | None = conn
        self._keys = keys
        self._master_key = master_key
        self._directory = directory
        self._lock = lock
        self._mutex = threading.RLock()
        if max_credentials is not None and max_credentials < 0:
            raise ValueError("max_credentials must be >= 0")
        self._max_credentials = max_credentials
        # Fault injection (vfido.testing.faults): called inside every write transaction
        # after its statements and before COMMIT. None in normal operation.
        self.before_commit: Callable[[], None] | None = None
        # Counter values verified (or written) since open, by cred_tag; the
        # directory lock means no other writer can change them meanwhile.
        self._counters: dict[bytes, int] = {}
        # Write-back (memory-only stores): counters advanced but not yet in the table.
        self._write_back = directory is None
        self._dirty: dict[bytes, int] = {}
        self._new_counters: set[bytes] = set()  # dirty counters that have no row yet
        self._credential_count: int | None = None  # write-back stores: count_credentials()
        self._tags: dict[bytes, bytes] = {}  # credential id -> cred_tag (a pure function)
        self._floor: int | None = None  # counter_floor(), once read
        self._identity_in_row = identity is None
        self._identity = self._load_identity() if identity is None else identity
        self._counter_index = self._verify_counters()
        self._credential_rows = self._verify_credential_rows()
        # SHA-256 of each state row's blob by key_tag, as verified at open (or written).
        self._state_digests = self._verify_state()
        # State key -> key_tag (a pure function), and a row's decoded (key, value) by the
        # SHA-256 of its blob: a file store's get_state still reads the row and checks its
        # digest (a row changed or deleted under the open store is still noticed), but
        # decrypts and decodes a given blob only once; a memory-only store answers from here.
        self._state_tags: dict[str, bytes] = {}
        self._state_plain: dict[bytes, tuple[str, bytes]] = {}

    # --- constructors ----------------------------------------------------

    @staticmethod
    def exists(directory: Path) -> bool:
        """True if ``directory`` holds a keystore database."""
        return (Path(directory) / DB_NAME).exists()

    @classmethod
    def create(
        cls,
        directory: Path,
        passphrase: str,
        *,
        aaguid: bytes | None = None,
        kdf_memory_kib: int = kdf.DEFAULT_MEMORY_KIB,
        kdf_params: kdf.KdfParams | None = None,
        max_credentials: int | None = None,
        identity: DeviceIdentity | None = None,
    ) -> SqliteKeyStore:
        """Create a new keystore in ``directory`` (made with mode 0700 if missing).

        ``identity`` (a restored backup) replaces the new random device identity.

        ``kdf_params`` overrides the Argon2id parameters; it exists so tests can
        pass :func:`vfido.keystore.kdf.insecure_test_params`. Otherwise production
        parameters with ``kdf_memory_kib`` (at least 64 MiB) are used.
        Raises :class:`KeystoreError` if a keystore already exists there.
        """
        directory = Path(directory)
        params = kdf_params if kdf_params is not None else kdf.new_params(kdf_memory_kib)
        _writable_costs(params)
        prepare_new_directory(directory)
        lock = DirectoryLock(directory / LOCK_NAME)
        try:
            for path in keystore_files(directory):
                check_private(path, directory=False)
            db = directory / DB_NAME
            if db.exists():
                raise KeystoreError(f"a keystore already exists in {directory}")
            for log_file in (db.with_name(DB_NAME + "-wal"), db.with_name(DB_NAME + "-journal")):
                if log_file.exists() or log_file.is_symlink():
                    # SQLite would replay another database's log into the new one (and then
                    # delete it): the keystore would not open, and the log's changes, which
                    # may be the newest of a keystore moved away, would be gone (a review).
                    raise KeystoreError(
                        f"{log_file} is left from another keystore (its newest changes may be "
                        f"in it): move it back beside its {DB_NAME}, or aside, before `vfido "
                        "init` here"
                    )
            master_key = new_master_key()
            keys = RecordKeys.derive(master_key)
            kek = kdf.derive_key(passphrase, params)
            try:
                wrapped = wrap_master_key(kek, master_key, format_version=schema.FORMAT_VERSION)
            finally:
                clear(kek)
            if identity is None:
                identity = new_identity(aaguid)
            cls._build_file(directory, keys, identity, params, wrapped)
            lock.hold_too(db)
            conn = connect(db)
            try:
                configure(conn, journal_mode="WAL")
                return cls(
                    conn,
                    keys,
                    master_key,
                    directory=directory,
                    lock=lock,
                    max_credentials=max_credentials,
                )
            except BaseException:
                conn.close()
                raise
        except BaseException:
            lock.release()
            raise

    @staticmethod
    def _build_file(
        directory: Path,
        keys: RecordKeys,
        identity: DeviceIdentity,
        params: kdf.KdfParams,
        wrapped: bytes,
    ) -> None:
        """Write the initial database under a temporary name, then rename it into place,
        so a crash never leaves a half-made ``vfido.db``."""
        tmp = directory / (DB_NAME + ".new")
        try:
            for stale in (tmp, tmp.with_name(tmp.name + "-journal")):
                stale.unlink(missing_ok=True)
            fd = os.open(
                tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE
            )
            os.close(fd)
        except OSError as exc:
            raise map_os_error(exc, "create the keystore file") from None
        try:
            conn = connect(tmp)
            try:
                # Rollback journal while building: committing leaves one complete file.
                configure(conn, journal_mode="DELETE")
                meta = {"kdf": params.to_json(), "wrapped_master_key": wrapped}
                init_schema(conn, keys, identity, meta)
                conn.execute("PRAGMA journal_mode=WAL")  # persistent in the file header
            except sqlite3.Error as exc:
                raise map_sqlite_error(exc, "create the keystore") from exc
            finally:
                conn.close()
            fsync_path(tmp, directory=False)
            # Never a rename over vfido.db: one that appeared meanwhile (a `vfido backup
            # import` into the same directory, which does not take this lock) is kept.
            try:
                link_into_place(tmp, directory / DB_NAME)
            except FileExistsError:
                raise KeystoreError(
                    f"a keystore appeared in {directory} meanwhile: refusing to replace it"
                ) from None
            tmp.unlink(missing_ok=True)
            fsync_path(directory, directory=True)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise map_os_error(exc, "create the keystore") from None
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    @classmethod
    def open(
        cls, directory: Path, passphrase: str, *, max_credentials: int | None = None
    ) -> SqliteKeyStore:
        """Open an existing keystore. Raises :class:`WrongPassphrase`,
        :class:`KeystoreLocked` (open elsewhere), :class:`KeystoreCorrupt`, or
        :class:`KeystoreError` (missing, unsafe permissions, newer format)."""
        directory = Path(directory)
        if not directory.is_dir() or not cls.exists(directory):
            raise KeystoreError(f"no vfido keystore in {directory}")
        check_private(directory, directory=True)
        lock = DirectoryLock(directory / LOCK_NAME)
        try:
            for path in keystore_files(directory):
                check_private(path, directory=False)
            # Held before any other descriptor of the file is opened (and closed): see
            # DirectoryLock.hold_too.
            lock.hold_too(directory / DB_NAME)
            header = check_header(directory / DB_NAME)
            # Before SQLite reads the log (and deletes it).
            check_wal(directory / DB_NAME, header)
            conn = connect(directory / DB_NAME)
            try:
                configure(conn, journal_mode="WAL")
                meta = read_meta(conn)
                version = int(meta["format_version"])
                try:
                    params = kdf.KdfParams.from_json(str(meta["kdf"]))
                except (KeyError, kdf.KdfParamsError):
                    raise KeystoreCorrupt("the keystore's key derivation data is damaged") from None
                try:
                    # Nothing has authenticated these costs yet: a file edited to ask for
                    # gigabytes must not take the machine down before the passphrase check.
                    params.check_untrusted()
                except kdf.KdfParamsError as exc:
                    raise KeystoreError(
                        f"the keystore asks for more key derivation work than vfido runs "
                        f"before its passphrase is checked: {exc}. vfido writes no more (since "
                        "format 4); a file asking more was modified, or made with costs given "
                        "by hand through the API"
                    ) from None
                wrapped = meta.get("wrapped_master_key")
                if not isinstance(wrapped, bytes):
                    raise KeystoreCorrupt("the keystore's wrapped key is missing")
                kek = kdf.derive_key(passphrase, params)
                try:
                    master_key = _unwrap(kek, wrapped, version)
                    keys = RecordKeys.derive(master_key)
                    try:
                        # A migration re-seals what it finds, so it writes the master key
                        # wrapped for the new version in its own transaction
                        # (crypto._wrap_aad): kek is needed until then.
                        migrate(
                            conn,
                            version,
                            keys,
                            lambda new: wrap_master_key(kek, master_key, format_version=new),
                        )
                    except BaseException:
                        keys.clear()
                        clear(master_key)
                        raise
                finally:
                    clear(kek)
                try:
                    return cls(
                        conn,
                        keys,
                        master_key,
                        directory=directory,
                        lock=lock,
                        max_credentials=max_credentials,
                    )
                except BaseException:
                    keys.clear()
                    clear(master_key)
                    raise
            except BaseException:
                conn.close()
                raise
        except BaseException:
            lock.release()
            raise

    @classmethod
    def ephemeral(
        cls,
        *,
        aaguid: bytes | None = None,
        max_credentials: int | None = None,
        identity: DeviceIdentity | None = None,
    ) -> SqliteKeyStore:
        """An in-memory keystore with a random master key (gone when closed); ``identity``
        replaces the new random device identity (e.g. a backup-eligible one). The new
        identity's attestation material is made on first use."""
        try:
            conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise map_sqlite_error(exc, "create an in-memory keystore") from exc
        try:
            configure(conn, journal_mode="MEMORY")
            master_key = new_master_key()
            keys = RecordKeys.derive(master_key)
            if identity is None:
                identity = new_identity(aaguid, attestation_on_first_use=True)
            init_schema(conn, keys, None, {})
            return cls(
                conn,
                keys,
                master_key,
                directory=None,
                lock=None,
                max_credentials=max_credentials,
                identity=identity,
            )
        except BaseException:
            conn.close()
            raise

    # --- housekeeping ----------------------------------------------------

    @property
    def directory(self) -> Path | None:
        """The keystore directory (None for an ephemeral keystore)."""
        return self._directory

    @property
    def max_credentials(self) -> int | None:
        """The configured limit on discoverable credentials (None: no limit)."""
        return self._max_credentials

    @property
    def closed(self) -> bool:
        return self._conn is None

    def __repr__(self) -> str:
        where = "ephemeral" if self._directory is None else str(self._directory)
        return f"SqliteKeyStore({where}{', closed' if self._conn is None else ''})"

    def __enter__(self) -> SqliteKeyStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the database and release the directory lock (idempotent)."""
        with self._mutex:
            conn, self._conn = self._conn, None
            if conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
                # Zero what Python lets us zero (SECURITY.md: what it cannot).
                self._keys.clear()
                clear(self._master_key)
                self._counters.clear()
                self._dirty.clear()
                self._new_counters.clear()
                self._tags.clear()
                self._state_plain.clear()
            if self._lock is not None:
                self._lock.release()
                self._lock = None

    def change_passphrase(self, new: str, *, kdf_params: kdf.KdfParams | None = None) -> None:
        """Re-wrap the master key under ``new`` (fresh salt; unless ``kdf_params`` is given,
        the same costs, each raised to the current default where it is lower). Records are
        not re-encrypted."""
        if self._directory is None:
            raise KeystoreError("an ephemeral keystore has no passphrase")
        if kdf_params is None:
            with self._read("read the keystore") as conn:
                row = conn.execute("SELECT value FROM meta WHERE name = 'kdf'").fetchone()
            if row is None:
                raise KeystoreCorrupt("the keystore's key derivation data is missing")
            try:
                kdf_params = kdf.KdfParams.from_json(str(row[0])).at_least_defaults()
            except kdf.KdfParamsError:
                raise KeystoreCorrupt("the keystore's key derivation data is damaged") from None
        _writable_costs(kdf_params)
        # The slow derivation runs without holding the store lock. Each pair of
        # (parameters, wrapped key) is written together in one transaction.
        kek = kdf.derive_key(new, kdf_params)
        try:
            with self._mutex:
                self._require_open()
                wrapped = wrap_master_key(
                    kek, self._master_key, format_version=schema.FORMAT_VERSION
                )
        finally:
            clear(kek)
        with self._tx("change the passphrase") as c:
            c.execute("UPDATE meta SET value = ? WHERE name = 'kdf'", (kdf_params.to_json(),))
            c.execute("UPDATE meta SET value = ? WHERE name = 'wrapped_master_key'", (wrapped,))

    # --- internals -------------------------------------------------------

    def _require_open(self) -> sqlite3.Connection:
        if self._conn is None:
            raise KeystoreUnavailable("the keystore is closed")
        return self._conn

    @contextlib.contextmanager
    def _tx(self, action: str) -> Iterator[sqlite3.Connection]:
        """One write transaction: committed (durably) on success, rolled back otherwise."""
        with self._mutex:
            conn = self._require_open()
            if self._dirty:
                try:
                    self._write_dirty_counters(conn)
                except sqlite3.Error as exc:
                    raise map_sqlite_error(exc, action) from exc
            with transaction(conn, action, self.before_commit):
                yield conn

    @contextlib.contextmanager
    def _read(self, action: str) -> Iterator[sqlite3.Connection]:
        """Reads under the store lock, with sqlite errors mapped."""
        with self._mutex:
            conn = self._require_open()
            try:
                if self._dirty:
                    self._write_dirty_counters(conn)
                yield conn
            except sqlite3.Error as exc:
                raise map_sqlite_error(exc, action) from exc

    def _write_dirty_counters(self, conn: sqlite3.Connection) -> None:
        """Write-back stores: put every advanced counter into the table (one transaction).

        Never inside another transaction: ``_tx`` writes the counters back before its
        BEGIN and holds the store lock until its COMMIT, so nothing becomes dirty in
        between (and a rolled-back outer transaction could not lose them)."""
        assert not conn.in_transaction, "dirty counters inside a transaction"
        mac = self._keys.counter_mac
        new = self._new_counters
        rows = [(value, mac(tag, value), tag) for tag, value in self._dirty.items()]
        index = self._counter_index
        for tag in new:
            index = index.with_row(self._keys, tag, present=True)
        conn.execute("BEGIN IMMEDIATE")
        try:
            if new:
                conn.executemany(
                    INSERT_COUNTER, [(tag, value, m) for value, m, tag in rows if tag in new]
                )
                self._write_index(conn, index)
            conn.executemany(UPDATE_COUNTER, [r for r in rows if r[2] not in new])
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        self._counter_index = index
        self._dirty.clear()
        new.clear()

    def _decrypt(self, table: str, row: tuple[bytes, ...], blob: object) -> bytes:
        if not isinstance(blob, bytes):
            raise KeystoreCorrupt(f"a record in {table} is malformed")
        try:
            return self._keys.decrypt(table, row, blob)
        except AuthenticationFailed:
            raise KeystoreCorrupt(
                f"a record in {table} failed authentication (the keystore was modified)"
            ) from None

    def _load_identity(self) -> DeviceIdentity:
        with self._read("read the device identity") as conn:
            row = conn.execute("SELECT blob FROM identity WHERE id = 1").fetchone()
        if row is None:
            raise KeystoreCorrupt("the keystore has no device identity")
        try:
            return identity_from_bytes(self._decrypt(T_IDENTITY, IDENTITY_ROW, row[0]))
        except ValueError:
            raise KeystoreCorrupt("the stored device identity is malformed") from None

    def _cred_tag(self, credential_id: bytes) -> bytes:
        tag = self._tags.get(credential_id)
        if tag is None:
            tag = self._keys.blind("cred", credential_id)
            with self._mutex:  # callers outside the lock: evict and insert atomically
                _remember(self._tags, credential_id, tag)
        return tag

    def _remember_counter(self, tag: bytes, value: int) -> None:
        if self._write_back:
            self._counters[tag] = value  # every counter (see the module's docstring)
        else:
            _remember(self._counters, tag, value)

    def _checked_counter(self, tag: bytes, value: object, mac: object) -> int:
        return checked_counter(self._keys, tag, value, mac)

    def _verify_counters(self) -> CounterIndex:
        """Check every counter row and the set of them (once per open); return the index."""
        with self._read("check the signature counters") as conn:
            return verify_counters(
                self._keys,
                conn.execute("SELECT cred_tag, value, mac FROM counters ORDER BY cred_tag"),
            )

    def _verify_credential_rows(self) -> int:
        """Check the number of credential rows against its authenticated record (once per
        open); return it."""
        with self._read("check the credentials") as conn:
            (present,) = conn.execute("SELECT count(*) FROM credentials").fetchone()
            row = conn.execute("SELECT value FROM meta WHERE name = ?", (CREDENTIAL_ROWS,))
            found = row.fetchone()
        return verify_credential_rows(self._keys, found[0] if found else None, int(present))

    def _write_credential_rows(self, c: sqlite3.Connection, rows: int) -> None:
        """Record ``rows`` credential rows (inside the transaction that makes it so)."""
        c.execute(
            "UPDATE meta SET value = ? WHERE name = ?",
            (credential_rows_value(self._keys, rows), CREDENTIAL_ROWS),
        )

    def _state_tag(self, key: str) -> bytes:
        tag = self._state_tags.get(key)
        if tag is None:
            tag = self._keys.blind("state", key.encode("utf-8"))
            _remember(self._state_tags, key, tag)
        return tag

    def _verify_state(self) -> dict[bytes, bytes]:
        """Check the set of state rows against its MAC; return each row's digest."""
        with self._read("check the device state") as conn:
            return verify_state(
                self._keys, conn.execute("SELECT key_tag, blob FROM state ORDER BY key_tag")
            )

    def _checked_state_blob(self, tag: bytes, blob: object) -> bytes:
        return checked_state_blob(self._state_digests, tag, blob)

    def _credential_from_row(
        self, cred_tag: Any, rp_tag: Any, user_tag: Any, blob: Any
    ) -> CredentialRecord:
        if not all(isinstance(t, bytes) for t in (cred_tag, rp_tag, user_tag)):
            raise KeystoreCorrupt("a record in credentials is malformed")
        record = decode_record(self._decrypt(T_CREDENTIALS, (cred_tag, rp_tag, user_tag), blob))
        # The tags are bound by the AAD; checking them against the record as well
        # costs three HMACs and catches a record stored under the wrong index.
        if (
            self._cred_tag(record.credential_id) != cred_tag
            or self._keys.blind("rp", record.rp_id_hash) != rp_tag
            or self._keys.blind("user", record.rp_id_hash, record.user_id) != user_tag
        ):
            raise KeystoreCorrupt("a record in credentials does not match its index")
        return record

    # --- KeyStore: identity ----------------------------------------------

    def identity(self) -> DeviceIdentity:
        self._require_open()
        return self._identity

    # --- KeyStore: discoverable credentials -----------------------------

    def put_credential(self, record: CredentialRecord) -> None:
        cred_tag = self._cred_tag(record.credential_id)
        rp_tag = self._keys.blind("rp", record.rp_id_hash)
        user_tag = self._keys.blind("user", record.rp_id_hash, record.user_id)
        blob = self._keys.encrypt(
            T_CREDENTIALS, (cred_tag, rp_tag, user_tag), encode_record(record)
        )
        with self._mutex:  # the row count and the caches change with the commit
            self._credential_count = None
            with self._tx("store the credential") as c:
                replaced = [
                    r[0]
                    for r in c.execute(
                        "SELECT cred_tag FROM credentials WHERE user_tag = ? OR cred_tag = ?",
                        (user_tag, cred_tag),
                    )
                ]
                if not replaced and self._max_credentials is not None:
                    (count,) = c.execute("SELECT count(*) FROM credentials").fetchone()
                    if count >= self._max_credentials:
                        raise KeystoreFull("the keystore's credential limit is reached")
                c.execute(
                    "DELETE FROM credentials WHERE user_tag = ? OR cred_tag = ?",
                    (user_tag, cred_tag),
                )
                dropped = [old for old in replaced if old != cred_tag]
                index = self._delete_counters(c, dropped)
                c.execute(
                    "INSERT INTO credentials (cred_tag, rp_tag, user_tag, blob)"
                    " VALUES (?, ?, ?, ?)",
                    (cred_tag, rp_tag, user_tag, blob),
                )
                credential_rows = self._credential_rows - len(replaced) + 1
                self._write_credential_rows(c, credential_rows)
            self._credential_rows = credential_rows
            self._counters_deleted(dropped, index)
        if dropped:
            self._scrub_log()

    def _scrub_log(self) -> None:
        """Push deletions out of the write-ahead log: a deleted credential's old row (its
        sealed private key) otherwise stays in ``vfido.db-wal`` until the next checkpoint
        (secure_delete zeroes it in the database only). Best effort: the deletion itself is
        already committed."""
        self._checkpoint()

    def _delete_counters(self, c: sqlite3.Connection, tags: list[bytes]) -> CounterIndex:
        """Delete the counter rows of ``tags`` (inside a transaction); the new index."""
        index = self._counter_index
        for tag in tags:
            if c.execute("DELETE FROM counters WHERE cred_tag = ?", (tag,)).rowcount:
                index = index.with_row(self._keys, tag, present=False)
        if index != self._counter_index:
            self._write_index(c, index)
        return index

    def _write_index(self, c: sqlite3.Connection, index: CounterIndex) -> None:
        c.execute(UPDATE_COUNTER, (index.rows, index.mac(self._keys), ROWS_TAG))

    def _counters_deleted(self, tags: list[bytes], index: CounterIndex) -> None:
        """After the commit of :meth:`_delete_counters`."""
        for tag in tags:
            self._counters.pop(tag, None)
        self._counter_index = index

    def find_credentials(self, rp_id_hash: bytes) -> list[CredentialRecord]:
        rp_tag = self._keys.blind("rp", rp_id_hash)
        with self._read("look up credentials") as conn:
            rows = conn.execute(
                "SELECT seq, cred_tag, rp_tag, user_tag, blob FROM credentials WHERE rp_tag = ?",
                (rp_tag,),
            ).fetchall()
        found: list[tuple[int, int, CredentialRecord]] = []
        for seq, cred_tag, row_rp_tag, user_tag, blob in rows:
            record = self._credential_from_row(cred_tag, row_rp_tag, user_tag, blob)
            found.append((record.created, int(seq), record))
        found.sort(key=lambda t: (t[0], t[1]), reverse=True)
        return [r for _, _, r in found]

    def get_credential(self, credential_id: bytes) -> CredentialRecord | None:
        cred_tag = self._cred_tag(credential_id)
        with self._read("look up a credential") as conn:
            row = conn.execute(
                "SELECT cred_tag, rp_tag, user_tag, blob FROM credentials WHERE cred_tag = ?",
                (cred_tag,),
            ).fetchone()
        if row is None:
            return None
        return self._credential_from_row(*row)

    def list_credentials(self) -> list[CredentialSummary]:
        with self._read("list credentials") as conn:
            rows = conn.execute(
                "SELECT c.seq, c.cred_tag, c.rp_tag, c.user_tag, c.blob, n.value, n.mac"
                " FROM credentials AS c LEFT JOIN counters AS n ON n.cred_tag = c.cred_tag"
                " ORDER BY c.seq"
            ).fetchall()
        return [
            CredentialSummary(
                self._credential_from_row(t, rp, u, b),
                0 if value is None and mac is None else self._checked_counter(t, value, mac),
            )
            for _, t, rp, u, b, value, mac in rows
        ]

    def delete_credential(self, credential_id: bytes) -> bool:
        cred_tag = self._cred_tag(credential_id)
        with self._mutex:  # the row count and the caches change with the commit
            self._credential_count = None
            index = self._counter_index
            with self._tx("delete the credential") as c:
                deleted = c.execute(
                    "DELETE FROM credentials WHERE cred_tag = ?", (cred_tag,)
                ).rowcount
                if deleted:
                    index = self._delete_counters(c, [cred_tag])
                    self._write_credential_rows(c, self._credential_rows - deleted)
            if deleted:
                self._credential_rows -= deleted
                self._counters_deleted([cred_tag], index)
        if deleted:
            self._scrub_log()
        return bool(deleted)

    def update_user(self, credential_id: bytes, name: str | None, display_name: str | None) -> bool:
        cred_tag = self._cred_tag(credential_id)
        with self._tx("update the credential") as c:
            row = c.execute(
                "SELECT cred_tag, rp_tag, user_tag, blob FROM credentials WHERE cred_tag = ?",
                (cred_tag,),
            ).fetchone()
            if row is None:
                return False
            record = self._credential_from_row(*row)
            updated = replace(record, user_name=name, user_display_name=display_name)
            blob = self._keys.encrypt(T_CREDENTIALS, tuple(row[:3]), encode_record(updated))
            c.execute("UPDATE credentials SET blob = ? WHERE cred_tag = ?", (blob, cred_tag))
        return True

    def count_credentials(self) -> int:
        with self._mutex:
            if self._credential_count is not None:
                self._require_open()
                return self._credential_count
            with self._read("count credentials") as conn:
                (count,) = conn.execute("SELECT count(*) FROM credentials").fetchone()
            if self._write_back:
                self._credential_count = int(count)
            return int(count)

    # --- KeyStore: signature counters ------------------------------------

    def increment_counter(self, credential_id: bytes, step: int = 1) -> int:
        if step < 0:
            raise ValueError("counter step must not be negative")
        try:
            return self._increment_counter(credential_id, step)
        except KeystoreFull:
            # A full disk: the write-ahead log could not grow. A checkpoint moves its pages
            # into the database file (which mostly has them already) and empties it; then
            # once more, so that sign-ins go on while registrations are refused.
            if not self._checkpoint():
                raise
            return self._increment_counter(credential_id, step)

    def _checkpoint(self) -> bool:
        """Move the write-ahead log into the database file and truncate it; whether that
        was done."""
        with self._mutex, contextlib.suppress(sqlite3.Error, KeystoreError):
            (busy, _, _) = (
                self._require_open().execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            )
            return bool(busy == 0)
        return False

    def _increment_counter(self, credential_id: bytes, step: int) -> int:
        with self._mutex:
            conn = self._require_open()
            tag = self._tags.get(credential_id) or self._cred_tag(credential_id)
            current = self._counters.get(tag)
            if self._write_back:
                # Memory-only store: every counter is in the cache (a credential missing
                # from it has none yet); written back before the next statement.
                value = self._next_counter(
                    self.counter_floor() if current is None else current, step
                )
                if self.before_commit is not None:
                    self.before_commit()
                if current is None:
                    self._new_counters.add(tag)
                self._dirty[tag] = value
                self._counters[tag] = value
                return value
            if current is not None:
                # The common case: a counter verified or written since open. One
                # UPDATE of one row is its own transaction, committed (durably:
                # synchronous=FULL) before execute() returns.
                value = self._next_counter(current, step)
                try:
                    if self.before_commit is not None:
                        self.before_commit()  # before the statement = before its commit
                    changed = conn.execute(
                        UPDATE_COUNTER, (value, self._keys.counter_mac(tag, value), tag)
                    ).rowcount
                except sqlite3.Error as exc:
                    raise map_sqlite_error(exc, "update the signature counter") from exc
                if changed != 1:
                    raise KeystoreCorrupt("a signature counter vanished from the keystore")
                self._counters[tag] = value
                return value
            index = self._counter_index
            with self._tx("update the signature counter") as c:
                row = c.execute(
                    "SELECT value, mac FROM counters WHERE cred_tag = ?", (tag,)
                ).fetchone()
                if row is None:
                    value = self._next_counter(self.counter_floor(), step)
                    c.execute(INSERT_COUNTER, (tag, value, self._keys.counter_mac(tag, value)))
                    index = index.with_row(self._keys, tag, present=True)
                    self._write_index(c, index)
                else:
                    value = self._next_counter(self._checked_counter(tag, *row), step)
                    c.execute(UPDATE_COUNTER, (value, self._keys.counter_mac(tag, value), tag))
            self._counter_index = index
            self._remember_counter(tag, value)
            return value

    @staticmethod
    def _next_counter(current: int, step: int) -> int:
        value = current + step
        if value > MAX_COUNTER:
            raise KeystoreError("the signature counter cannot advance any further")
        return value

    def get_counter(self, credential_id: bytes) -> int:
        with self._mutex:
            tag = self._cred_tag(credential_id)
            value = self._counters.get(tag)
            if value is not None:
                self._require_open()
                return value
            with self._read("read the signature counter") as conn:
                row = conn.execute(
                    "SELECT value, mac FROM counters WHERE cred_tag = ?", (tag,)
                ).fetchone()
            if row is None:
                return self.counter_floor()
            value = self._checked_counter(tag, *row)
            self._remember_counter(tag, value)
            return value

    # --- counter floor (restored backups) ----------------------------------

    def counter_floor(self) -> int:
        """Where the counter of a credential without one starts (0 unless raised)."""
        with self._mutex:
            if self._floor is None:
                raw = self.get_state(_COUNTER_FLOOR)
                self._floor = int.from_bytes(raw, "big") if raw and len(raw) <= 8 else 0
            return self._floor

    def raise_counter_floor(self, floor: int) -> None:
        """Make every counter not stored yet start at ``floor`` (at least): a restored
        backup cannot list the server-side credentials whose counters it must carry over.
        Kept in the (authenticated) state, so erased by :meth:`reset`."""
        if not 0 <= floor <= MAX_COUNTER:
            raise ValueError("counter floor out of range")
        with self._mutex:
            if floor > self.counter_floor():
                self.put_state({_COUNTER_FLOOR: floor.to_bytes(8, "big")})
                self._floor = floor

    def max_counter(self) -> int:
        """The largest signature counter stored (or the floor), every row authenticated."""
        with self._mutex:
            with self._read("read the signature counters") as conn:
                rows = conn.execute(
                    "SELECT cred_tag, value, mac FROM counters WHERE cred_tag != ?", (ROWS_TAG,)
                ).fetchall()
            values = [self._checked_counter(tag, value, mac) for tag, value, mac in rows]
            return max([self.counter_floor(), *values])

    # --- KeyStore: other persistent state --------------------------------

    def get_state(self, key: str) -> bytes | None:
        tag = self._state_tag(key)
        if self._write_back:
            # Memory-only: no other connection, the rows are the ones put_state wrote.
            with self._mutex:
                self._require_open()
                digest = self._state_digests.get(tag)
                if digest is None:
                    return None
                known = self._state_plain.get(digest)
            if known is not None and known[0] == key:
                return known[1]
        with self._read("read device state") as conn:
            row = conn.execute("SELECT blob FROM state WHERE key_tag = ?", (tag,)).fetchone()
        if row is None:
            if tag in self._state_digests:
                raise KeystoreCorrupt("a record in state vanished (the keystore was modified)")
            return None
        blob = self._checked_state_blob(tag, row[0])
        digest = self._state_digests[tag]  # the blob's, checked just above
        decoded = self._state_plain.get(digest)
        if decoded is None:
            decoded = self._decode_state(tag, blob)
            _remember(self._state_plain, digest, decoded)
        stored_key, value = decoded
        if stored_key != key:
            raise KeystoreCorrupt("a record in state does not match its key")
        return value

    def _decode_state(self, tag: bytes, blob: object) -> tuple[str, bytes]:
        try:
            item = cbor2.loads(self._decrypt(T_STATE, (tag,), blob))
        except KeystoreCorrupt:
            raise
        except Exception:  # cbor2 raises several types
            raise KeystoreCorrupt("a record in state is malformed") from None
        if (
            not isinstance(item, list)
            or len(item) != 2
            or not isinstance(item[0], str)
            or not isinstance(item[1], bytes)
        ):
            raise KeystoreCorrupt("a record in state is malformed")
        return item[0], item[1]

    def put_state(self, updates: Mapping[str, bytes | None]) -> None:
        rows: list[tuple[bytes, bytes | None]] = []
        values: list[bytes | None] = []
        for key, value in updates.items():
            tag = self._state_tag(key)
            if value is None:
                rows.append((tag, None))
                values.append(None)
            elif isinstance(value, bytes | bytearray | memoryview):
                data = bytes(value)
                plain = bytes(cbor2.dumps([key, data], canonical=True))
                rows.append((tag, self._keys.encrypt(T_STATE, (tag,), plain)))
                values.append(data)
            else:
                raise TypeError("state values must be bytes or None")
        with self._mutex:  # the digests change with the commit
            digests = dict(self._state_digests)
            with self._tx("store device state") as c:
                for tag, blob in rows:
                    if blob is None:
                        c.execute("DELETE FROM state WHERE key_tag = ?", (tag,))
                        digests.pop(tag, None)
                    else:
                        c.execute(UPSERT_STATE, (tag, blob))
                        digests[tag] = state_digest(blob)
                self._write_state_index(c, digests)
            old, self._state_digests = self._state_digests, digests
            for (tag, _), key, stored in zip(rows, updates, values, strict=True):
                replaced = old.get(tag)  # a new blob (fresh nonce) has a new digest
                if replaced is not None:
                    self._state_plain.pop(replaced, None)  # no stale PIN hash kept decoded
                if stored is not None:
                    _remember(self._state_plain, digests[tag], (key, stored))

    def _write_state_index(self, c: sqlite3.Connection, digests: Mapping[bytes, bytes]) -> None:
        mac = self._keys.state_mac(sorted(digests.items()))
        c.execute(UPSERT_STATE, (STATE_INDEX_TAG, mac))

    def state_keys(self) -> Iterable[str]:
        with self._read("list device state") as conn:
            rows = conn.execute(
                "SELECT key_tag, blob FROM state WHERE key_tag != ?", (STATE_INDEX_TAG,)
            ).fetchall()
        if len(rows) != len(self._state_digests):
            raise KeystoreCorrupt("the keystore's device state changed (the keystore was modified)")
        keys = []
        for tag, blob in rows:
            if not isinstance(tag, bytes):
                raise KeystoreCorrupt("a record in state is malformed")
            key, _ = self._decode_state(tag, self._checked_state_blob(tag, blob))
            keys.append(key)
        return sorted(keys)

    # --- KeyStore: reset -------------------------------------------------

    def reset(self) -> None:
        with self._mutex:
            new = rotate_credential_key(self._identity)
            blob = None
            if self._identity_in_row:
                blob = self._keys.encrypt(T_IDENTITY, IDENTITY_ROW, identity_to_bytes(new))
            self._credential_count = None
            with self._tx("reset the keystore") as c:
                c.execute("DELETE FROM credentials")
                self._write_credential_rows(c, 0)
                c.execute("DELETE FROM counters WHERE cred_tag != ?", (ROWS_TAG,))
                self._write_index(c, CounterIndex())
                c.execute("DELETE FROM state")
                self._write_state_index(c, {})
                if blob is not None:
                    c.execute("UPDATE identity SET blob = ? WHERE id = 1", (blob,))
            self._identity = new
            self._state_digests = {}
            self._state_plain.clear()
            self._counters.clear()
            self._counter_index = CounterIndex()
            self._credential_rows = 0
            self._floor = None  # the floor was state: erased with it
            self._scrub_log()
