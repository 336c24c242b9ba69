"""The SQLite keystore's database: its tables, opening and configuring a connection,
creating the schema, recognizing a vfido file, and the format migrations."""

from __future__ import annotations

import contextlib
import functools
import sqlite3
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from vfido.keystore.crypto import AuthenticationFailed, RecordKeys
from vfido.keystore.identity import identity_to_bytes
from vfido.keystore.integrity import (
    CREDENTIAL_ROWS,
    MAX_COUNTER,
    ROWS_TAG,
    STATE_INDEX_TAG,
    CounterIndex,
    credential_rows_value,
    state_digest,
    verify_counters,
)
from vfido.keystore.sqlite_errors import map_os_error, map_sqlite_error
from vfido.keystore.store import DeviceIdentity, KeystoreCorrupt, KeystoreError, KeystoreUnavailable

FORMAT_VERSION = 5
"""Version of the database layout. Bump it with a step in :data:`MIGRATIONS`.

1: first released layout (counters unauthenticated).
2: a MAC on every counter row and an authenticated count of the rows.
3: a MAC over the set of state rows (a deleted or rolled-back state row is noticed).
4: the wrapped master key is bound to the format version (lowering ``format_version`` by
   hand made the migrations re-seal tampered counters and state; every migration writes
   the key wrapped for the new version), and the number of credential rows is authenticated
   (a deleted credential put back, or all deleted, is noticed).
5: the counters' index row authenticates which rows it counts, not only how many (with
   the number alone, a counter row deleted beside an older index row put back went unnoticed,
   and the counter started again at 0)."""

Migration = Callable[[sqlite3.Connection, RecordKeys], None]

MIGRATIONS: dict[int, Migration] = {}
"""``MIGRATIONS[v]`` upgrades a format-``v`` database to ``v + 1`` (inside a
transaction, after the passphrase check, with the record keys;
:meth:`SqliteKeyStore.open` runs the steps and records the new version
atomically). The files tests/reliability/data/keystore-v1.db to keystore-v4.db must keep
opening."""
APPLICATION_ID = 0x7666646F  # "vfdo": marks the SQLite file as a vfido keystore

T_CREDENTIALS = "credentials"
T_STATE = "state"
T_IDENTITY = "identity"
IDENTITY_ROW = (b"\x01",)

COUNTERS_TABLE = (
    "CREATE TABLE counters ("
    " cred_tag BLOB PRIMARY KEY, value INTEGER NOT NULL, mac BLOB NOT NULL) WITHOUT ROWID"
)
UPDATE_COUNTER = "UPDATE counters SET value = ?, mac = ? WHERE cred_tag = ?"
INSERT_COUNTER = "INSERT INTO counters (cred_tag, value, mac) VALUES (?, ?, ?)"
UPSERT_STATE = (
    "INSERT INTO state (key_tag, blob) VALUES (?, ?)"
    " ON CONFLICT (key_tag) DO UPDATE SET blob = excluded.blob"
)

SCHEMA = (
    "CREATE TABLE meta (name TEXT PRIMARY KEY, value NOT NULL) WITHOUT ROWID",
    "CREATE TABLE identity (id INTEGER PRIMARY KEY CHECK (id = 1), blob BLOB NOT NULL)",
    "CREATE TABLE credentials ("
    " seq INTEGER PRIMARY KEY,"
    " cred_tag BLOB NOT NULL UNIQUE,"
    " rp_tag BLOB NOT NULL,"
    " user_tag BLOB NOT NULL UNIQUE,"
    " blob BLOB NOT NULL)",
    "CREATE INDEX credentials_by_rp ON credentials (rp_tag)",
    COUNTERS_TABLE,
    "CREATE TABLE state (key_tag BLOB PRIMARY KEY, blob BLOB NOT NULL) WITHOUT ROWID",
)


@contextlib.contextmanager
def transaction(
    conn: sqlite3.Connection, action: str, before_commit: Callable[[], None] | None = None
) -> Iterator[sqlite3.Connection]:
    """One write transaction (BEGIN IMMEDIATE ... COMMIT, durable: synchronous=FULL), rolled
    back on any exception; a SQLite error becomes the keystore error that says it could not
    ``action``. ``before_commit`` runs after the statements, before COMMIT (fault injection:
    :mod:`vfido.testing.faults`)."""
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.Error as exc:
        raise map_sqlite_error(exc, action) from exc
    try:
        yield conn
        if before_commit is not None:
            before_commit()
        conn.execute("COMMIT")
    except BaseException as exc:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        if isinstance(exc, sqlite3.Error):
            raise map_sqlite_error(exc, action) from exc
        raise


def connect(path: Path) -> sqlite3.Connection:
    """Open an existing database file read-write (never creates one)."""
    uri = "file:" + urllib.parse.quote(str(path)) + "?mode=rw"  # pathname2url on POSIX
    try:
        return sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise map_sqlite_error(exc, "open the keystore database") from exc


def configure(conn: sqlite3.Connection, *, journal_mode: str) -> None:
    try:
        mode = conn.execute(f"PRAGMA journal_mode={journal_mode}").fetchone()[0]
        if str(mode).lower() != journal_mode.lower():
            raise KeystoreUnavailable(f"cannot put the keystore in {journal_mode} mode")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA secure_delete=ON")
        conn.execute("PRAGMA trusted_schema=OFF")
        conn.execute("PRAGMA cell_size_check=ON")
    except sqlite3.Error as exc:
        raise map_sqlite_error(exc, "open the keystore database") from exc


def init_schema(
    conn: sqlite3.Connection,
    keys: RecordKeys,
    identity: DeviceIdentity | None,
    meta: Mapping[str, object],
) -> None:
    """Create tables, meta rows and the identity in one transaction (``identity`` None: no
    identity row, for an in-memory store, which keeps its identity in the store object)."""
    action = "create the keystore"
    try:
        conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
    except sqlite3.Error as exc:
        raise map_sqlite_error(exc, action) from exc
    with transaction(conn, action):
        for statement in SCHEMA:
            conn.execute(statement)
        rows = [
            ("format_version", FORMAT_VERSION),
            (CREDENTIAL_ROWS, credential_rows_value(keys, 0)),
            *meta.items(),
        ]
        conn.executemany("INSERT INTO meta (name, value) VALUES (?, ?)", rows)
        conn.execute(INSERT_COUNTER, (ROWS_TAG, 0, CounterIndex().mac(keys)))
        conn.execute(UPSERT_STATE, (STATE_INDEX_TAG, keys.state_mac([])))
        if identity is not None:
            blob = keys.encrypt(T_IDENTITY, IDENTITY_ROW, identity_to_bytes(identity))
            conn.execute("INSERT INTO identity (id, blob) VALUES (1, ?)", (blob,))


_SQLITE_MAGIC = b"SQLite format 3\x00"


def check_header(path: Path) -> bytes:
    """Refuse a file that is not a vfido SQLite database *before* SQLite opens it; return
    its 100-byte header (for :func:`vfido.keystore.wal.check_wal`, its page size).

    Setting the journal mode on an empty or foreign file would write to it; a
    damaged keystore must be reported, never modified.
    """
    try:
        with open(path, "rb") as f:
            header = f.read(100)
    except OSError as exc:
        raise map_os_error(exc, "read the keystore") from None
    if len(header) < 100 or not header.startswith(_SQLITE_MAGIC):
        raise KeystoreCorrupt("the keystore file is damaged or not a vfido keystore")
    if int.from_bytes(header[68:72], "big") != APPLICATION_ID:
        raise KeystoreCorrupt("the keystore file is not a vfido keystore")
    return header


def read_meta(conn: sqlite3.Connection) -> dict[str, Any]:
    """Check the file is a vfido keystore of a supported version; return meta."""
    try:
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        has_meta = conn.execute(
            "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = 'meta'"
        ).fetchone()[0]
        if app_id != APPLICATION_ID or not has_meta:
            raise KeystoreCorrupt("the keystore file is not a vfido keystore")
        meta = {str(n): v for n, v in conn.execute("SELECT name, value FROM meta")}
        objects = set(conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_schema"))
    except sqlite3.Error as exc:
        raise map_sqlite_error(exc, "read the keystore") from exc
    version = meta.get("format_version")
    if type(version) is not int or version < 1:
        raise KeystoreCorrupt("the keystore has no valid format version")
    if version > FORMAT_VERSION:
        raise KeystoreError(
            f"the keystore has format version {version}, newer than this vfido supports "
            f"({FORMAT_VERSION}); upgrade vfido to open it"
        )
    if objects != expected_objects(version):
        # A trigger planted by whoever could write the file would run inside vfido's own
        # statements: it could put back a counter's old value and MAC after every update, or
        # undo a reset or a deletion, and every MAC would still check out (a review). So the
        # file must hold what vfido creates and nothing else. Nothing of it is named here:
        # the names are the file's, not vfido's.
        raise KeystoreCorrupt(
            "the keystore's tables were changed: it holds tables, indexes, triggers, views or "
            "table definitions vfido did not write (the keystore was modified, or a tool such "
            "as `sqlite3 vfido.db ANALYZE` wrote to it)"
        )
    return meta


COUNTERS_TABLE_V1 = (
    "CREATE TABLE counters (cred_tag BLOB PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID"
)
"""The counters table of format 1 (format 2 added the MAC: :func:`_migrate_1_to_2`)."""


@functools.cache
def expected_objects(version: int) -> frozenset[tuple[str, str, str, str | None]]:
    """``sqlite_schema``'s rows (type, name, tbl_name, sql) in a format-``version`` keystore:
    those :data:`SCHEMA` makes (read from a database it made in memory, so the two cannot
    differ), with format 1's counters table in a format-1 file."""
    statements = [COUNTERS_TABLE_V1 if s == COUNTERS_TABLE and version == 1 else s for s in SCHEMA]
    conn = sqlite3.connect(":memory:")
    try:
        for statement in statements:
            conn.execute(statement)
        rows = conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_schema").fetchall()
    finally:
        conn.close()
    return frozenset(rows)


def _migrate_1_to_2(conn: sqlite3.Connection, keys: RecordKeys) -> None:
    """Format 2: a MAC on every counter row, and the authenticated row count.

    Format-1 counters carried no authentication: their values are taken as they
    are at this moment (the one point where they must be trusted) and sealed.
    """
    rows = conn.execute("SELECT cred_tag, value FROM counters").fetchall()
    conn.execute("DROP TABLE counters")
    conn.execute(COUNTERS_TABLE)
    for tag, value in rows:
        if (
            type(tag) is not bytes
            or not tag
            or type(value) is not int
            or not 0 <= value <= MAX_COUNTER
        ):
            raise KeystoreCorrupt("a signature counter in the keystore is malformed")
        conn.execute(INSERT_COUNTER, (tag, value, keys.counter_mac(tag, value)))
    conn.execute(INSERT_COUNTER, (ROWS_TAG, len(rows), keys.rows_mac_v4(len(rows))))


MIGRATIONS[1] = _migrate_1_to_2


def _migrate_2_to_3(conn: sqlite3.Connection, keys: RecordKeys) -> None:
    """Format 3: the MAC over the set of state rows.

    Format-2 state rows were each authenticated but not as a set: the rows present
    now are taken (after each is checked to decrypt under its own tag) and sealed."""
    rows = conn.execute("SELECT key_tag, blob FROM state ORDER BY key_tag").fetchall()
    digests: list[tuple[bytes, bytes]] = []
    for tag, blob in rows:
        if type(tag) is not bytes or not tag or type(blob) is not bytes:
            raise KeystoreCorrupt("a record in state is malformed")
        try:
            keys.decrypt(T_STATE, (tag,), blob)
        except AuthenticationFailed:
            raise KeystoreCorrupt(
                "a record in state failed authentication (the keystore was modified)"
            ) from None
        digests.append((tag, state_digest(blob)))
    conn.execute(UPSERT_STATE, (STATE_INDEX_TAG, keys.state_mac(digests)))


MIGRATIONS[2] = _migrate_2_to_3


def _migrate_3_to_4(conn: sqlite3.Connection, keys: RecordKeys) -> None:
    """Format 4: the authenticated number of credential rows (the rows present now are
    counted, as the earlier steps take what they find); :func:`migrate` writes the master
    key wrapped for the new version."""
    (count,) = conn.execute("SELECT count(*) FROM credentials").fetchone()
    conn.execute(
        "INSERT INTO meta (name, value) VALUES (?, ?)",
        (CREDENTIAL_ROWS, credential_rows_value(keys, int(count))),
    )


MIGRATIONS[3] = _migrate_3_to_4


def _migrate_4_to_5(conn: sqlite3.Connection, keys: RecordKeys) -> None:
    """Format 5: the counters' index authenticates the set of rows. Format 4 authenticated
    their number, and that is checked (with every row's MAC) before the new index is written
    over the rows found. What a number cannot tell stays untold: rows deleted beside a
    format-4 copy's index (and its wrapped key, the version lowered to 4) are sealed as they
    are (SECURITY.md, "Known limitations")."""
    rows = conn.execute("SELECT cred_tag, value, mac FROM counters ORDER BY cred_tag")
    index = verify_counters(keys, rows, format_4=True)
    conn.execute(UPDATE_COUNTER, (index.rows, index.mac(keys), ROWS_TAG))


MIGRATIONS[4] = _migrate_4_to_5


def migrate(
    conn: sqlite3.Connection, version: int, keys: RecordKeys, wrap: Callable[[int], bytes]
) -> None:
    """Bring a format-``version`` database to :data:`FORMAT_VERSION` in one transaction,
    writing ``wrap(FORMAT_VERSION)``, the master key wrapped for the new version."""
    if version >= FORMAT_VERSION:
        return
    steps = [MIGRATIONS.get(v) for v in range(version, FORMAT_VERSION)]
    if any(step is None for step in steps):
        raise KeystoreError(
            f"the keystore has format version {version}, which this vfido cannot migrate "
            f"to {FORMAT_VERSION}"
        )
    with transaction(conn, "migrate the keystore"):
        for step in steps:
            assert step is not None
            step(conn, keys)
        wrapped = wrap(FORMAT_VERSION)
        conn.execute("UPDATE meta SET value = ? WHERE name = 'wrapped_master_key'", (wrapped,))
        conn.execute("UPDATE meta SET value = ? WHERE name = 'format_version'", (FORMAT_VERSION,))
