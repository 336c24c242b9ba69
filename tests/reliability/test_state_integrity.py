"""Issue #15, medium 2: the set of state rows is authenticated (keystore format 3).

Each state row (PIN hash, PIN retries, settings, the large-blob array...) is AES-GCM
bound to its own tag, but before format 3 nothing bound the rows together: deleting all
of them offline opened cleanly with the credentials kept and the PIN gone (then anyone
sets a PIN and uses credProtect-3 credentials); deleting only the PIN-retries row gave 8
retries again; an older ciphertext of a row put back was taken. Each attack below edits
the database file as an offline attacker without the passphrase would, and must now be
refused as tampering, in one line, without the file being written.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fido2.ctap import CtapError
from fido2.ctap2.pin import ClientPin, PinProtocolV2

from tests.ctap2_helpers import make_key
from tests.service_helpers import PASSPHRASE, vfido
from vfido.keystore import kdf, schema
from vfido.keystore.sqlite_store import DB_NAME, FORMAT_VERSION, SqliteKeyStore
from vfido.keystore.store import KeystoreCorrupt, KeystoreError

DATA = Path(__file__).parent / "data"
PIN = "246810"
RETRIES = "pin.retries"


@contextmanager
def _raw(directory: Path) -> Iterator[sqlite3.Connection]:
    """The database file opened directly, as an offline attacker edits it (autocommit);
    closed when the block ends."""
    db = sqlite3.connect(directory / DB_NAME, isolation_level=None)
    try:
        yield db
    finally:
        db.close()


def _create(directory: Path) -> SqliteKeyStore:
    """A new keystore at ``directory`` (a fast, insecure KDF: tests only)."""
    return SqliteKeyStore.create(directory, PASSPHRASE, kdf_params=kdf.insecure_test_params())


def _wrong_pin(store: SqliteKeyStore, times: int) -> int:
    """Spend ``times`` PIN retries through the authenticator; the retries left."""
    key = make_key(store=store)
    client_pin = ClientPin(key.ctap2(), PinProtocolV2())
    for _ in range(times):
        with pytest.raises(CtapError):
            client_pin.get_pin_token("000000")
    retries: int = client_pin.get_pin_retries()[0]
    return retries


@pytest.fixture()
def keystore(tmp_path: Path) -> Iterator[tuple[Path, bytes]]:
    """A keystore with a discoverable credential and a PIN (3 retries spent); also the
    blinded tag of the PIN-retries row, as an attacker finds it (the row that changes)."""
    directory = tmp_path / "ks"
    with _create(directory) as store:
        key = make_key(store=store)
        key.ctap2().make_credential(
            os.urandom(32),
            {"id": "example.com", "name": "Example"},
            {"id": b"alice", "name": "alice"},
            [{"type": "public-key", "alg": -7}],
            options={"rk": True},
            extensions={"credProtect": 3},
        )
        ClientPin(key.ctap2(), PinProtocolV2()).set_pin(PIN)
        assert _wrong_pin(store, 3) == 5
        retries_tag = store._state_tag(RETRIES)
    yield directory, retries_tag


def _refused(directory: Path) -> None:
    """The keystore is refused as tampering: by the store, and by `vfido` in one line
    with exit status 1, the file left as it was."""
    before = (directory / DB_NAME).read_bytes()
    with pytest.raises(KeystoreCorrupt, match="device state") as info:
        SqliteKeyStore.open(directory, PASSPHRASE)
    assert "\n" not in str(info.value)
    result = vfido(["info", "--keystore", str(directory)])
    assert result.returncode == 1, result
    assert result.stderr.count("\n") == 1 and "modified" in result.stderr, result.stderr
    assert (directory / DB_NAME).read_bytes() == before


def test_deleting_every_state_row_is_tampering_not_a_key_without_pin(
    keystore: tuple[Path, bytes],
) -> None:
    directory, _ = keystore
    with _raw(directory) as db:
        # The attack: every state row (the attacker cannot tell them apart, nor needs to).
        db.execute("DELETE FROM state")
    _refused(directory)


def test_deleting_every_state_row_but_the_index_is_tampering(
    keystore: tuple[Path, bytes],
) -> None:
    directory, _ = keystore
    with _raw(directory) as db:
        db.execute("DELETE FROM state WHERE key_tag != x''")
    _refused(directory)


def test_deleting_the_pin_retries_row_is_tampering_not_eight_retries(
    keystore: tuple[Path, bytes],
) -> None:
    directory, retries_tag = keystore
    with _raw(directory) as db:
        assert db.execute("DELETE FROM state WHERE key_tag = ?", (retries_tag,)).rowcount == 1
    _refused(directory)


def test_an_older_retries_row_put_back_is_tampering(tmp_path: Path) -> None:
    """Rollback of one row: the ciphertext of 8 retries, saved before the guesses."""
    directory = tmp_path / "ks"
    with _create(directory) as store:
        key = make_key(store=store)
        ClientPin(key.ctap2(), PinProtocolV2()).set_pin(PIN)
        tag = store._state_tag(RETRIES)
    with _raw(directory) as db:
        (saved,) = db.execute("SELECT blob FROM state WHERE key_tag = ?", (tag,)).fetchone()
    with SqliteKeyStore.open(directory, PASSPHRASE) as store:
        assert _wrong_pin(store, 3) == 5  # three per power-up
    with _raw(directory) as db:
        db.execute("UPDATE state SET blob = ? WHERE key_tag = ?", (saved, tag))
    _refused(directory)


def test_a_deleted_row_put_back_is_tampering(tmp_path: Path) -> None:
    directory = tmp_path / "ks"
    with _create(directory) as store:
        store.put_state({"pin.force_change": b"\x00\x00\x00\x01", "other": b"x"})
        tag = store._state_tag("pin.force_change")
    with _raw(directory) as db:
        (saved,) = db.execute("SELECT blob FROM state WHERE key_tag = ?", (tag,)).fetchone()
    with SqliteKeyStore.open(directory, PASSPHRASE) as store:
        store.put_state({"pin.force_change": None})
    with _raw(directory) as db:
        db.execute("INSERT INTO state (key_tag, blob) VALUES (?, ?)", (tag, saved))
    _refused(directory)


def test_a_row_deleted_while_open_is_noticed_on_read(keystore: tuple[Path, bytes]) -> None:
    directory, retries_tag = keystore
    with SqliteKeyStore.open(directory, PASSPHRASE) as store:
        assert store.get_state(RETRIES) is not None
        conn = store._conn
        assert conn is not None
        conn.execute("DELETE FROM state WHERE key_tag = ?", (retries_tag,))
        with pytest.raises(KeystoreCorrupt, match="vanished"):
            store.get_state(RETRIES)


def test_an_older_row_put_back_while_open_is_noticed_after_a_read(tmp_path: Path) -> None:
    """get_state decodes a row once, by the digest of its blob, but still reads the row
    each time: an older ciphertext put back under the open store is refused, not served
    from what was decoded before."""
    directory = tmp_path / "ks"
    with _create(directory) as store:
        store.put_state({RETRIES: b"\x08"})
        tag = store._state_tag(RETRIES)
        conn = store._conn
        assert conn is not None
        (saved,) = conn.execute("SELECT blob FROM state WHERE key_tag = ?", (tag,)).fetchone()
        store.put_state({RETRIES: b"\x05"})
        assert store.get_state(RETRIES) == b"\x05"
        assert store.get_state(RETRIES) == b"\x05"  # the second read: decoded before
        conn.execute("UPDATE state SET blob = ? WHERE key_tag = ?", (saved, tag))
        with pytest.raises(KeystoreCorrupt, match="not the one written"):
            store.get_state(RETRIES)


def test_legitimate_state_changes_keep_opening(tmp_path: Path) -> None:
    """The other side: writes, deletions and a reset keep the set MAC current."""
    directory = tmp_path / "ks"
    with _create(directory) as store:
        store.put_state({"a": b"1", "b": b"2"})
    with SqliteKeyStore.open(directory, PASSPHRASE) as store:
        store.put_state({"a": None, "c": b"3"})
        assert list(store.state_keys()) == ["b", "c"]
    with SqliteKeyStore.open(directory, PASSPHRASE) as store:
        assert list(store.state_keys()) == ["b", "c"]
        store.reset()
    with SqliteKeyStore.open(directory, PASSPHRASE) as store:
        assert list(store.state_keys()) == []
        store.put_state({"d": b"4"})
    with SqliteKeyStore.open(directory, PASSPHRASE) as store:
        assert store.get_state("d") == b"4"


# --- format 2 -> 3 -------------------------------------------------------------

V2_PASSPHRASE = "vfido format 2 fixture"


def _fixture(tmp_path: Path, name: str) -> Path:
    directory = tmp_path / "ks"
    directory.mkdir(mode=0o700)
    shutil.copy(DATA / name, directory / DB_NAME)
    os.chmod(directory / DB_NAME, 0o600)
    return directory


def test_format_2_fixture_migrates_to_authenticated_state(tmp_path: Path) -> None:
    """keystore-v2.db (written by format 2: one discoverable credential with counter 7, a
    PIN with one retry spent) opens, keeps everything, and is protected from then on."""
    directory = _fixture(tmp_path, "keystore-v2.db")
    with SqliteKeyStore.open(directory, V2_PASSPHRASE) as store:
        assert store.identity().aaguid.hex() == "766669646f0040008000000000000002"
        (summary,) = store.list_credentials()
        assert (summary.record.rp_id, summary.record.user_id) == ("v2.example", b"v2-user")
        assert summary.sign_count == 7
        assert list(store.state_keys()) == ["pin.hash", "pin.length", "pin.retries"]
        assert store.get_state(RETRIES) == (7).to_bytes(4, "big")
        retries_tag = store._state_tag(RETRIES)
    with _raw(directory) as db:
        assert db.execute("SELECT value FROM meta WHERE name = 'format_version'").fetchone() == (
            FORMAT_VERSION,
        )
        db.execute("DELETE FROM state WHERE key_tag = ?", (retries_tag,))
    with pytest.raises(KeystoreCorrupt, match="device state"):
        SqliteKeyStore.open(directory, V2_PASSPHRASE)


def test_format_1_fixture_migrates_through_2_to_3(tmp_path: Path) -> None:
    directory = _fixture(tmp_path, "keystore-v1.db")
    with SqliteKeyStore.open(directory, "vfido format 1 fixture") as store:
        assert store.get_state(RETRIES) == b"\x08"
    with SqliteKeyStore.open(directory, "vfido format 1 fixture") as store:
        assert list(store.state_keys()) == [RETRIES]
    with _raw(directory) as db:
        db.execute("DELETE FROM state WHERE key_tag != x''")
    with pytest.raises(KeystoreCorrupt, match="device state"):
        SqliteKeyStore.open(directory, "vfido format 1 fixture")


# --- format 3 -> 4: the format version is authenticated ------------------------------------

V3_PASSPHRASE = "vfido format 3 fixture"
V4_PASSPHRASE = "vfido format 4 fixture"


@pytest.mark.parametrize("version", [3, 4])
def test_a_fixture_migrates_with_everything_kept(tmp_path: Path, version: int) -> None:
    """keystore-v3.db and keystore-v4.db (written by formats 3 and 4: one discoverable
    credential with counter 5, a server-side counter at 41, pinRetries 8) open under the
    current format with everything kept, and go on counting after the migration."""
    passphrase = {3: V3_PASSPHRASE, 4: V4_PASSPHRASE}[version]
    directory = _fixture(tmp_path, f"keystore-v{version}.db")
    with SqliteKeyStore.open(directory, passphrase) as store:
        assert store.identity().aaguid.hex() == f"766669646f004000800000000000000{version}"
        (summary,) = store.list_credentials()
        assert (summary.record.rp_id, summary.sign_count) == (f"v{version}.example", 5)
        assert store.increment_counter(b"server-side-id") == 42
        assert store.get_state("pin.retries") == (8).to_bytes(4, "big")
    with _raw(directory) as db:
        assert db.execute("SELECT value FROM meta WHERE name = 'format_version'").fetchone() == (
            FORMAT_VERSION,
        )
    with SqliteKeyStore.open(directory, passphrase) as store:
        assert store.increment_counter(b"server-side-id") == 43


def test_a_format_4_fixture_migrated_to_5_notices_a_deleted_counter(tmp_path: Path) -> None:
    """After the migration, the counters' index covers the rows: one deleted (its number
    forged to match) is noticed."""
    directory = _fixture(tmp_path, "keystore-v4.db")
    with SqliteKeyStore.open(directory, V4_PASSPHRASE) as store:
        server_side = store._cred_tag(b"server-side-id")
    with _raw(directory) as db:
        db.execute("DELETE FROM counters WHERE cred_tag = ?", (server_side,))
        db.execute("UPDATE counters SET value = value - 1 WHERE cred_tag = x''")
    with pytest.raises(KeystoreCorrupt, match="counter index"):
        SqliteKeyStore.open(directory, V4_PASSPHRASE)


def test_the_migration_to_5_checks_the_format_4_index_first(tmp_path: Path) -> None:
    """The step to format 5 writes a new index over the rows it finds: a format-4 file with
    a counter row deleted is refused, not re-sealed without it, and left as it was."""
    directory = _fixture(tmp_path, "keystore-v4.db")
    with _raw(directory) as db:
        db.execute("DELETE FROM counters WHERE cred_tag IN (SELECT max(cred_tag) FROM counters)")
    before = (directory / DB_NAME).read_bytes()
    with pytest.raises(KeystoreCorrupt, match="counter index"):
        SqliteKeyStore.open(directory, V4_PASSPHRASE)
    assert (directory / DB_NAME).read_bytes() == before


@pytest.mark.parametrize("claimed", [1, 2, 3, 4])
def test_a_lowered_format_version_is_refused_not_migrated(tmp_path: Path, claimed: int) -> None:
    """An offline edit that lowers meta.format_version and then rewrites what the newer
    format protects (counters to 0, the PIN's state rows deleted) must not be taken in: the
    migrations from the claimed version would re-seal whatever they find. (An outside review
    rolled a counter at 1000 back to 1 and removed the PIN this way, with no passphrase.)"""
    directory = tmp_path / "ks"
    with SqliteKeyStore.create(directory, PASSPHRASE, kdf_params=kdf.insecure_test_params()) as s:
        s.increment_counter(b"server-side-id", 1000)
        s.put_state({"pin.retries": b"\x08"})
    with _raw(directory) as db:
        db.execute("UPDATE meta SET value = ? WHERE name = 'format_version'", (claimed,))
        if claimed == 1:  # as format 1 had them: no MACs, no row count, no state index
            tags = [t for (t,) in db.execute("SELECT cred_tag FROM counters WHERE cred_tag != x''")]
            db.execute("DROP TABLE counters")
            db.execute(schema.COUNTERS_TABLE_V1)  # else the schema check refuses it first
            db.executemany("INSERT INTO counters VALUES (?, 0)", [(t,) for t in tags])
            db.execute("DELETE FROM state")
    with pytest.raises(KeystoreCorrupt, match=f"says format version {claimed} but was written"):
        SqliteKeyStore.open(directory, PASSPHRASE)
    with _raw(directory) as db:  # not migrated: the file is as the attacker left it
        assert db.execute("SELECT value FROM meta WHERE name = 'format_version'").fetchone() == (
            claimed,
        )


def test_kdf_costs_in_the_file_are_bounded_before_the_passphrase_check(tmp_path: Path) -> None:
    """meta.kdf is read before anything can be authenticated: a file asking for 4 GiB and
    64 passes is refused at once, as a backup bundle's header is, not derived."""
    directory = tmp_path / "ks"
    SqliteKeyStore.create(directory, PASSPHRASE, kdf_params=kdf.insecure_test_params()).close()
    hostile = kdf.KdfParams(4 * 1024 * 1024, 64, 64, b"s" * 16)
    with _raw(directory) as db:
        db.execute("UPDATE meta SET value = ? WHERE name = 'kdf'", (hostile.to_json(),))
    with pytest.raises(KeystoreError, match="Argon2id costs too high") as refused:
        SqliteKeyStore.open(directory, PASSPHRASE)
    assert not isinstance(refused.value, KeystoreCorrupt)  # maybe made so through the API
    # ... which writes no more than it opens (a diff review made one it could not reopen).
    for write in (
        lambda: SqliteKeyStore.create(tmp_path / "other", PASSPHRASE, kdf_params=hostile),
        lambda: SqliteKeyStore.create(tmp_path / "other", PASSPHRASE, kdf_memory_kib=1 << 20),
    ):
        with pytest.raises(ValueError, match="costs too high"):
            write()
    assert not (tmp_path / "other").exists()


# --- format 4: the number of credentials is authenticated ----------------------------------


@pytest.mark.parametrize("edit", ["a deleted credential put back", "every credential deleted"])
def test_credential_rows_are_counted(tmp_path: Path, edit: str) -> None:
    """Each credential row is sealed on its own, but the set was not: a deleted credential's
    old row put back with raw SQL came back to life, its counter restarting at 1 (its counter
    row went with the deletion); DELETE FROM credentials went unnoticed (an outside review
    did both, with no passphrase)."""
    from tests.keystore.test_keystore import make_record

    directory = tmp_path / "ks"
    kept, gone = make_record(user_id=b"kept"), make_record(user_id=b"gone")
    with SqliteKeyStore.create(directory, PASSPHRASE, kdf_params=kdf.insecure_test_params()) as s:
        s.put_credential(kept)
        s.put_credential(gone)
        s.increment_counter(gone.credential_id, 100)
        with _raw(directory) as db:
            old_row = db.execute(
                "SELECT cred_tag, rp_tag, user_tag, blob FROM credentials WHERE cred_tag != ?",
                (s._cred_tag(kept.credential_id),),
            ).fetchone()
        s.delete_credential(gone.credential_id)
    with _raw(directory) as db:
        if edit == "a deleted credential put back":
            db.execute(
                "INSERT INTO credentials (cred_tag, rp_tag, user_tag, blob) VALUES (?, ?, ?, ?)",
                old_row,
            )
        else:
            db.execute("DELETE FROM credentials")
    with pytest.raises(KeystoreCorrupt, match="credentials where 1 were written"):
        SqliteKeyStore.open(directory, PASSPHRASE)


def test_credential_rows_follow_every_write(tmp_path: Path) -> None:
    """Registering, replacing (the same user again), deleting and reset keep the recorded
    number right: the keystore reopens after each."""
    from tests.keystore.test_keystore import make_record

    directory = tmp_path / "ks"
    SqliteKeyStore.create(directory, PASSPHRASE, kdf_params=kdf.insecure_test_params()).close()
    steps = [
        lambda s: s.put_credential(make_record(user_id=b"a")),
        lambda s: s.put_credential(make_record(user_id=b"b")),
        lambda s: s.put_credential(make_record(user_id=b"a")),  # replaces a's
        lambda s: s.delete_credential(s.list_credentials()[0].record.credential_id),
        lambda s: s.reset(),
        lambda s: s.put_credential(make_record(user_id=b"c")),
    ]
    for count, step in zip([1, 2, 2, 1, 0, 1], steps, strict=True):
        with SqliteKeyStore.open(directory, PASSPHRASE) as store:
            step(store)
        with SqliteKeyStore.open(directory, PASSPHRASE) as store:
            assert store.count_credentials() == count


@pytest.mark.parametrize(
    "planted",
    [
        # Puts back every counter's old value and MAC after each update: every MAC checks
        # out, and each session signs the same counters again (a review ran it end to end).
        "CREATE TRIGGER keep AFTER UPDATE ON counters WHEN new.cred_tag != x'' BEGIN"
        " UPDATE counters SET value = old.value, mac = old.mac"
        " WHERE cred_tag = new.cred_tag; END",
        # Undoes `vfido reset`'s new credential key: old credential IDs would sign again.
        "CREATE TRIGGER keep AFTER UPDATE ON identity BEGIN"
        " UPDATE identity SET blob = old.blob; END",
        "CREATE TRIGGER keep BEFORE DELETE ON credentials BEGIN SELECT RAISE(IGNORE); END",
        "CREATE VIEW extra AS SELECT * FROM counters",
        "CREATE INDEX extra ON counters (value)",
        "CREATE TABLE extra (x)",
    ],
)
def test_a_keystore_with_objects_vfido_did_not_create_is_refused(
    tmp_path: Path, planted: str
) -> None:
    """Whoever can write vfido.db once, without the passphrase, must not be able to plant
    SQL that runs inside vfido's own statements from then on: the keystore holds exactly
    the tables and indexes vfido creates, or it is refused, untouched."""
    directory = tmp_path / "ks"
    with _create(directory) as store:
        assert store.increment_counter(b"server-side-id", 100) == 100
    with _raw(directory) as db:
        db.execute(planted)
    before = (directory / DB_NAME).read_bytes()
    with pytest.raises(KeystoreCorrupt, match="tables were changed"):
        SqliteKeyStore.open(directory, PASSPHRASE)
    assert (directory / DB_NAME).read_bytes() == before


def test_a_changed_table_definition_is_refused(tmp_path: Path) -> None:
    """The same for a table vfido created, defined again by the attacker (here without
    its NOT NULL), and for format 1's counters table in a file that says format 4."""
    directory = tmp_path / "ks"
    _create(directory).close()
    with _raw(directory) as db:
        db.execute("PRAGMA writable_schema = ON")
        db.execute(
            "UPDATE sqlite_schema SET sql = replace(sql, 'blob BLOB NOT NULL', 'blob BLOB')"
            " WHERE name = 'identity'"
        )
    with pytest.raises(KeystoreCorrupt, match="tables were changed"):
        SqliteKeyStore.open(directory, PASSPHRASE)
    assert schema.expected_objects(1) != schema.expected_objects(FORMAT_VERSION)


def test_the_format_2_migration_refuses_a_state_row_that_does_not_decrypt(tmp_path: Path) -> None:
    """SECURITY.md: "The 2 -> 3 migration trusts the rows present at that moment (each must
    still decrypt) and seals them": a damaged row is refused at open, in one error, and the
    file is not written (a session 20 mutation sampling found the check unpinned: without
    it the damaged row was sealed into format 5 and failed only when read)."""
    directory = _fixture(tmp_path, "keystore-v2.db")
    with _raw(directory) as db:
        tag, blob = db.execute("SELECT key_tag, blob FROM state ORDER BY key_tag").fetchone()
        db.execute(
            "UPDATE state SET blob = ? WHERE key_tag = ?", (blob[:-1] + bytes([blob[-1] ^ 1]), tag)
        )
    before = (directory / DB_NAME).read_bytes()
    with pytest.raises(KeystoreCorrupt):
        SqliteKeyStore.open(directory, V2_PASSPHRASE)
    assert (directory / DB_NAME).read_bytes() == before
