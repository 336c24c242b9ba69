"""Tests for keystore.sqlite_store.SqliteKeyStore (real SQLite files in tmp_path)."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vfido.keystore import kdf, sqlite_store
from vfido.keystore.credential_id import seal, unseal
from vfido.keystore.sqlite_errors import map_sqlite_error
from vfido.keystore.sqlite_store import (
    DB_NAME,
    FORMAT_VERSION,
    LOCK_NAME,
    SqliteKeyStore,
)
from vfido.keystore.store import (
    CredentialRecord,
    KeyStore,
    KeystoreCorrupt,
    KeystoreError,
    KeystoreFull,
    KeystoreLocked,
    KeystoreUnavailable,
    WrongPassphrase,
)

PASS = "correct horse battery staple"


def rp_hash(rp_id: str) -> bytes:
    return hashlib.sha256(rp_id.encode()).digest()


def make_record(
    rp_id: str = "example.com",
    user_id: bytes = b"user-1",
    *,
    created: int = 1_700_000_000,
    credential_id: bytes | None = None,
    user_name: str | None = "alice",
) -> CredentialRecord:
    if credential_id is None:
        credential_id = os.urandom(48)
    return CredentialRecord(
        credential_id=credential_id,
        rp_id=rp_id,
        rp_id_hash=rp_hash(rp_id),
        user_id=user_id,
        algorithm=-7,
        private_key=os.urandom(32),
        created=created,
        rp_name="Example",
        user_name=user_name,
        user_display_name="Alice A.",
        cred_protect=2,
        cred_random_uv=os.urandom(32),
        cred_random_no_uv=os.urandom(32),
        cred_blob=b"blob",
        large_blob_key=os.urandom(32),
        backup_eligible=False,
        backup_state=False,
    )


def create(directory: Path, passphrase: str = PASS, **kw: object) -> SqliteKeyStore:
    return SqliteKeyStore.create(
        directory,
        passphrase,
        kdf_params=kdf.insecure_test_params(),
        **kw,  # type: ignore[arg-type]
    )


@pytest.fixture
def ks_dir(tmp_path: Path) -> Path:
    return tmp_path / "keystore"


@pytest.fixture
def store(ks_dir: Path) -> Iterator[SqliteKeyStore]:
    s = create(ks_dir)
    yield s
    s.close()


def raw_db(directory: Path) -> sqlite3.Connection:
    """A plain sqlite3 connection for tampering (the store must be closed)."""
    return sqlite3.connect(directory / DB_NAME, isolation_level=None)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --------------------------------------------------------------------------
# basics and persistence


def test_satisfies_protocol(store: SqliteKeyStore) -> None:
    ks: KeyStore = store  # checked by mypy
    assert ks.count_credentials() == 0


def test_create_reopen_keeps_everything(ks_dir: Path) -> None:
    aaguid = bytes(range(16))
    s = create(ks_dir, aaguid=aaguid)
    ident = s.identity()
    assert ident.aaguid == aaguid
    rec = make_record()
    s.put_credential(rec)
    server_side_id = os.urandom(70)
    for _ in range(3):
        s.increment_counter(server_side_id)
    s.increment_counter(rec.credential_id, 5)
    s.put_state({"pin_hash": b"\x01" * 16, "retries": b"\x08"})
    s.close()

    with SqliteKeyStore.open(ks_dir, PASS) as t:
        assert t.identity() == ident
        assert t.get_credential(rec.credential_id) == rec
        assert t.find_credentials(rec.rp_id_hash) == [rec]
        assert t.get_counter(server_side_id) == 3
        assert t.get_counter(rec.credential_id) == 5
        assert t.get_state("pin_hash") == b"\x01" * 16
        assert t.get_state("retries") == b"\x08"
        assert sorted(t.state_keys()) == ["pin_hash", "retries"]
        summaries = t.list_credentials()
        assert [(x.record, x.sign_count) for x in summaries] == [(rec, 5)]
        assert t.directory == ks_dir


def test_exists_and_create_twice(ks_dir: Path) -> None:
    assert not SqliteKeyStore.exists(ks_dir)
    create(ks_dir).close()
    assert SqliteKeyStore.exists(ks_dir)
    with pytest.raises(KeystoreError, match="already exists"):
        create(ks_dir)
    # The existing keystore is untouched.
    SqliteKeyStore.open(ks_dir, PASS).close()


def test_open_missing(tmp_path: Path) -> None:
    with pytest.raises(KeystoreError, match="no vfido keystore"):
        SqliteKeyStore.open(tmp_path / "nothing", PASS)


def test_stale_temporary_file_from_interrupted_create(ks_dir: Path) -> None:
    ks_dir.mkdir(mode=0o700)
    stale = ks_dir / (DB_NAME + ".new")
    stale.write_bytes(b"half written")
    stale.chmod(0o600)
    assert not SqliteKeyStore.exists(ks_dir)
    create(ks_dir).close()
    assert not stale.exists()
    SqliteKeyStore.open(ks_dir, PASS).close()


def test_wrong_passphrase(ks_dir: Path) -> None:
    s = create(ks_dir)
    rec = make_record()
    s.put_credential(rec)
    s.close()
    before = (ks_dir / DB_NAME).read_bytes()
    with pytest.raises(WrongPassphrase) as info:
        SqliteKeyStore.open(ks_dir, "wrong passphrase")
    assert "wrong passphrase" in str(info.value)
    assert PASS not in str(info.value)
    # Never a new keystore: the data is still there under the right passphrase.
    assert (ks_dir / DB_NAME).read_bytes() == before
    with SqliteKeyStore.open(ks_dir, PASS) as t:
        assert t.get_credential(rec.credential_id) == rec


def test_passphrase_unicode_normalization(ks_dir: Path) -> None:
    create(ks_dir, "caf\u00e9").close()  # precomposed
    SqliteKeyStore.open(ks_dir, "cafe\u0301").close()  # decomposed: same after NFC


def test_context_manager_releases_lock(ks_dir: Path) -> None:
    with create(ks_dir) as s:
        assert not s.closed
    assert s.closed
    with pytest.raises(KeystoreUnavailable):
        s.count_credentials()
    s.close()  # idempotent
    SqliteKeyStore.open(ks_dir, PASS).close()


def test_no_secrets_in_repr(store: SqliteKeyStore) -> None:
    text = repr(store)
    assert "keystore" in text
    assert store._master_key.hex() not in text
    for secret in (store._keys.record_key, store._keys.index_key, store._master_key):
        assert secret.hex() not in repr(store._keys)
        assert repr(secret) not in repr(store._keys)
    rec = make_record()
    assert repr(rec.private_key) not in repr(rec)


def test_nothing_sensitive_stored_in_clear(ks_dir: Path) -> None:
    s = create(ks_dir)
    rec = make_record(rp_id="very-unique-rp.example", user_id=b"unique-user-handle-xyz")
    server_side_id = b"server-side-credential-id-" + os.urandom(16)
    s.put_credential(rec)
    s.increment_counter(server_side_id)
    s.put_state({"unique-state-key": b"unique-state-value"})
    ident = s.identity()
    s.close()
    data = b"".join(p.read_bytes() for p in ks_dir.iterdir() if p.is_file())
    for secret in (
        rec.credential_id,
        rec.rp_id.encode(),
        rec.rp_id_hash,
        rec.user_id,
        rec.private_key,
        server_side_id,
        b"unique-state-key",
        b"unique-state-value",
        ident.credential_key,
        ident.attestation_key[-32:],
        PASS.encode(),
    ):
        assert secret not in data


# --------------------------------------------------------------------------
# tampering


def test_tampered_credential_ciphertext(ks_dir: Path) -> None:
    s = create(ks_dir)
    rec = make_record()
    s.put_credential(rec)
    s.close()
    with raw_db(ks_dir) as db:
        (blob,) = db.execute("SELECT blob FROM credentials").fetchone()
        bad = bytearray(blob)
        bad[len(bad) // 2] ^= 0x01
        db.execute("UPDATE credentials SET blob = ?", (bytes(bad),))
    db.close()
    with SqliteKeyStore.open(ks_dir, PASS) as t:
        with pytest.raises(KeystoreCorrupt):
            t.get_credential(rec.credential_id)
        with pytest.raises(KeystoreCorrupt):
            t.find_credentials(rec.rp_id_hash)
        with pytest.raises(KeystoreCorrupt):
            t.list_credentials()
        with pytest.raises(KeystoreCorrupt):
            t.update_user(rec.credential_id, "x", "y")


def test_tampered_identity_detected_on_open(ks_dir: Path) -> None:
    create(ks_dir).close()
    with raw_db(ks_dir) as db:
        (blob,) = db.execute("SELECT blob FROM identity").fetchone()
        db.execute("UPDATE identity SET blob = ?", (blob[:-1] + bytes([blob[-1] ^ 0x80]),))
    db.close()
    with pytest.raises(KeystoreCorrupt):
        SqliteKeyStore.open(ks_dir, PASS)


def two_credentials(directory: Path) -> tuple[CredentialRecord, CredentialRecord]:
    """A keystore at ``directory`` holding a credential for a.example and one for b.example,
    closed again (for a test to tamper with the file)."""
    a, b = make_record("a.example", b"ua"), make_record("b.example", b"ub")
    with create(directory) as s:
        s.put_credential(a)
        s.put_credential(b)
    return a, b


def test_swapped_credential_ciphertexts(ks_dir: Path) -> None:
    a, b = two_credentials(ks_dir)
    with raw_db(ks_dir) as db:
        rows = db.execute("SELECT seq, blob FROM credentials ORDER BY seq").fetchall()
        assert len(rows) == 2
        (s1, b1), (s2, b2) = rows
        db.execute("UPDATE credentials SET blob = ? WHERE seq = ?", (b2, s1))
        db.execute("UPDATE credentials SET blob = ? WHERE seq = ?", (b1, s2))
    db.close()
    with SqliteKeyStore.open(ks_dir, PASS) as t:
        with pytest.raises(KeystoreCorrupt):
            t.get_credential(a.credential_id)
        with pytest.raises(KeystoreCorrupt):
            t.get_credential(b.credential_id)
        with pytest.raises(KeystoreCorrupt):
            t.find_credentials(a.rp_id_hash)


def test_swapped_index_column_detected(ks_dir: Path) -> None:
    """Moving a credential to another RP's index (rp_tag) is detected."""
    _, b = two_credentials(ks_dir)
    with raw_db(ks_dir) as db:
        rows = db.execute("SELECT seq, rp_tag FROM credentials ORDER BY seq").fetchall()
        db.execute("UPDATE credentials SET rp_tag = ? WHERE seq = ?", (rows[1][1], rows[0][0]))
    db.close()
    with SqliteKeyStore.open(ks_dir, PASS) as t, pytest.raises(KeystoreCorrupt):
        t.find_credentials(b.rp_id_hash)


def test_swapped_state_ciphertexts(ks_dir: Path) -> None:
    s = create(ks_dir)
    s.put_state({"pin": b"pin-value", "other": b"other-value"})
    s.close()
    with raw_db(ks_dir) as db:
        (t1, b1), (t2, b2) = db.execute(
            "SELECT key_tag, blob FROM state WHERE key_tag != x''"
        ).fetchall()
        db.execute("UPDATE state SET blob = ? WHERE key_tag = ?", (b2, t1))
        db.execute("UPDATE state SET blob = ? WHERE key_tag = ?", (b1, t2))
    db.close()
    # Format 3: the set of state rows no longer matches its MAC.
    with pytest.raises(KeystoreCorrupt, match="device state"):
        SqliteKeyStore.open(ks_dir, PASS)


def test_ciphertext_moved_across_tables(ks_dir: Path) -> None:
    s = create(ks_dir)
    s.put_state({"pin": b"pin-value"})
    s.close()
    with raw_db(ks_dir) as db:
        (blob,) = db.execute("SELECT blob FROM state WHERE key_tag != x''").fetchone()
        db.execute("UPDATE identity SET blob = ?", (blob,))
    db.close()
    with pytest.raises(KeystoreCorrupt):
        SqliteKeyStore.open(ks_dir, PASS)


def test_not_a_database(ks_dir: Path) -> None:
    create(ks_dir).close()
    (ks_dir / DB_NAME).write_bytes(os.urandom(8192))
    with pytest.raises(KeystoreCorrupt):
        SqliteKeyStore.open(ks_dir, PASS)


def test_foreign_sqlite_database(ks_dir: Path) -> None:
    ks_dir.mkdir(mode=0o700)
    fd = os.open(ks_dir / DB_NAME, os.O_CREAT | os.O_WRONLY, 0o600)
    os.close(fd)
    with raw_db(ks_dir) as db:
        db.execute("CREATE TABLE t (x)")
    db.close()
    with pytest.raises(KeystoreCorrupt, match="not a vfido keystore"):
        SqliteKeyStore.open(ks_dir, PASS)


def test_newer_format_version_refused(ks_dir: Path) -> None:
    create(ks_dir).close()
    newer = FORMAT_VERSION + 1
    with raw_db(ks_dir) as db:
        db.execute("UPDATE meta SET value = ? WHERE name = 'format_version'", (newer,))
    db.close()
    with pytest.raises(KeystoreError, match=f"format version {newer}") as info:
        SqliteKeyStore.open(ks_dir, PASS)
    assert not isinstance(info.value, WrongPassphrase | KeystoreCorrupt)


# --------------------------------------------------------------------------
# locking and permissions


def test_second_opener_refused(ks_dir: Path) -> None:
    first = create(ks_dir)
    with pytest.raises(KeystoreLocked):
        SqliteKeyStore.open(ks_dir, PASS)
    with pytest.raises(KeystoreLocked):
        SqliteKeyStore.open(ks_dir, "even with a wrong passphrase")
    first.put_state({"k": b"v"})  # the first opener is unaffected
    first.close()
    with SqliteKeyStore.open(ks_dir, PASS) as second:
        assert second.get_state("k") == b"v"


def test_second_process_refused(ks_dir: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from vfido.keystore.sqlite_store import SqliteKeyStore\n"
        "from vfido.keystore.store import KeystoreLocked\n"
        "try:\n"
        "    SqliteKeyStore.open(Path(sys.argv[1]), sys.argv[2]).close()\n"
        "except KeystoreLocked:\n"
        "    sys.exit(3)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(root)}
    argv = [sys.executable, "-c", code, str(ks_dir), PASS]
    with create(ks_dir):
        assert subprocess.run(argv, env=env, check=False).returncode == 3
    assert subprocess.run(argv, env=env, check=False).returncode == 0


def test_permissions_private_even_with_permissive_umask(ks_dir: Path) -> None:
    old = os.umask(0)
    try:
        s = create(ks_dir)
        s.increment_counter(b"id")  # make sure the WAL and shm files exist
        assert mode(ks_dir) == 0o700
        names = {p.name for p in ks_dir.iterdir()}
        assert {DB_NAME, LOCK_NAME, DB_NAME + "-wal", DB_NAME + "-shm"} <= names
        for p in ks_dir.iterdir():
            assert mode(p) == 0o600, p.name
        s.close()
        with SqliteKeyStore.open(ks_dir, PASS) as t:
            t.increment_counter(b"id")
            for p in ks_dir.iterdir():
                assert mode(p) == 0o600, p.name
    finally:
        os.umask(old)


def test_missing_parents_are_made_private_too(tmp_path: Path) -> None:
    """Parents made for a keystore are 0700 whatever the umask: with mkdir -p's 0777 another
    user could move the keystore aside (as XDG says of ~/.local/share: "create it with
    permission 0700")."""
    old = os.umask(0)
    try:
        create(tmp_path / "a" / "b" / "ks").close()
    finally:
        os.umask(old)
    assert [mode(tmp_path / "a"), mode(tmp_path / "a" / "b")] == [0o700, 0o700]


@pytest.mark.parametrize("name", [DB_NAME, LOCK_NAME, DB_NAME + "-wal", DB_NAME + "-shm"])
def test_group_readable_file_refused(ks_dir: Path, name: str) -> None:
    create(ks_dir).close()
    if not (ks_dir / name).exists():  # closing removes the WAL and shm files
        (ks_dir / name).touch(mode=0o600)
    (ks_dir / name).chmod(0o640)
    with pytest.raises(KeystoreError, match="accessible by other users"):
        SqliteKeyStore.open(ks_dir, PASS)
    (ks_dir / name).chmod(0o600)
    SqliteKeyStore.open(ks_dir, PASS).close()


def test_world_readable_directory_refused(ks_dir: Path) -> None:
    create(ks_dir).close()
    ks_dir.chmod(0o755)
    with pytest.raises(KeystoreError, match="accessible by other users"):
        SqliteKeyStore.open(ks_dir, PASS)


def test_create_in_existing_directories(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir(mode=0o755)
    empty.chmod(0o755)
    create(empty).close()  # an empty directory of ours is tightened
    assert mode(empty) == 0o700
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o755)
    (shared / "other-file").write_text("x")
    with pytest.raises(KeystoreError, match="accessible by other users"):
        create(shared)
    assert mode(shared) == 0o755
    assert not SqliteKeyStore.exists(shared)


def test_symlinked_database_refused(ks_dir: Path, tmp_path: Path) -> None:
    create(ks_dir).close()
    real = tmp_path / "elsewhere.db"
    (ks_dir / DB_NAME).rename(real)
    (ks_dir / DB_NAME).symlink_to(real)
    with pytest.raises(KeystoreError, match="not a regular file"):
        SqliteKeyStore.open(ks_dir, PASS)


# --------------------------------------------------------------------------
# credentials


def test_put_replaces_same_rp_and_user(store: SqliteKeyStore) -> None:
    old = make_record("example.com", b"user-1", created=1)
    store.put_credential(old)
    store.increment_counter(old.credential_id, 7)
    other_user = make_record("example.com", b"user-2", created=2)
    other_rp = make_record("example.org", b"user-1", created=3)
    store.put_credential(other_user)
    store.put_credential(other_rp)
    assert store.count_credentials() == 3

    new = make_record("example.com", b"user-1", created=4)
    store.put_credential(new)
    assert store.count_credentials() == 3
    assert store.get_credential(old.credential_id) is None
    assert store.get_counter(old.credential_id) == 0  # the dead credential's counter went too
    assert store.get_credential(new.credential_id) == new
    assert store.find_credentials(rp_hash("example.com")) == [new, other_user]
    assert store.find_credentials(rp_hash("example.org")) == [other_rp]


def test_put_same_credential_id_again_keeps_counter(store: SqliteKeyStore) -> None:
    rec = make_record()
    store.put_credential(rec)
    store.increment_counter(rec.credential_id, 3)
    updated = make_record(credential_id=rec.credential_id, user_name="renamed")
    store.put_credential(updated)
    assert store.count_credentials() == 1
    assert store.get_credential(rec.credential_id) == updated
    assert store.get_counter(rec.credential_id) == 3


def test_find_credentials_by_rp_newest_first(store: SqliteKeyStore) -> None:
    recs = [make_record("example.com", f"u{i}".encode(), created=100 + i) for i in range(5)]
    for r in (recs[2], recs[0], recs[4], recs[1], recs[3]):
        store.put_credential(r)
    store.put_credential(make_record("other.example", b"u0"))
    assert store.find_credentials(rp_hash("example.com")) == list(reversed(recs))
    assert store.find_credentials(rp_hash("unknown.example")) == []
    # Same creation second: the later insertion comes first.
    x = make_record("same.example", b"x", created=5)
    y = make_record("same.example", b"y", created=5)
    store.put_credential(x)
    store.put_credential(y)
    assert store.find_credentials(rp_hash("same.example")) == [y, x]


def test_delete_credential(store: SqliteKeyStore) -> None:
    a, b = make_record(user_id=b"a"), make_record(user_id=b"b")
    store.put_credential(a)
    store.put_credential(b)
    store.increment_counter(a.credential_id)
    assert store.delete_credential(a.credential_id) is True
    assert store.delete_credential(a.credential_id) is False
    assert store.delete_credential(os.urandom(40)) is False
    assert store.get_credential(a.credential_id) is None
    assert store.get_counter(a.credential_id) == 0
    assert store.find_credentials(a.rp_id_hash) == [b]
    assert store.count_credentials() == 1


def test_update_user(ks_dir: Path) -> None:
    s = create(ks_dir)
    rec = make_record()
    s.put_credential(rec)
    assert s.update_user(rec.credential_id, "bob", "Bob B.") is True
    assert s.update_user(os.urandom(40), "x", "y") is False
    got = s.get_credential(rec.credential_id)
    assert got is not None
    assert (got.user_name, got.user_display_name) == ("bob", "Bob B.")
    assert got.private_key == rec.private_key and got.user_id == rec.user_id
    assert s.update_user(rec.credential_id, None, None)
    s.close()
    with SqliteKeyStore.open(ks_dir, PASS) as t:
        got = t.get_credential(rec.credential_id)
        assert got is not None
        assert got.user_name is None and got.user_display_name is None


def test_minimal_record_round_trip(store: SqliteKeyStore) -> None:
    rec = CredentialRecord(
        credential_id=b"\x01" * 40,
        rp_id="x.example",
        rp_id_hash=rp_hash("x.example"),
        user_id=b"\x00",
        algorithm=-8,
        private_key=b"\x02" * 32,
        created=0,
        backup_eligible=True,
        backup_state=True,
    )
    store.put_credential(rec)
    assert store.get_credential(rec.credential_id) == rec


def test_credential_limit(ks_dir: Path) -> None:
    s = create(ks_dir, max_credentials=2)
    a, b = make_record(user_id=b"a"), make_record(user_id=b"b")
    s.put_credential(a)
    s.put_credential(b)
    with pytest.raises(KeystoreFull):
        s.put_credential(make_record(user_id=b"c"))
    s.put_credential(make_record(user_id=b"a"))  # replacing is allowed at the limit
    assert s.count_credentials() == 2
    assert s.max_credentials == 2


# --------------------------------------------------------------------------
# counters and state


def test_counters_monotonic_and_persisted(ks_dir: Path) -> None:
    s = create(ks_dir)
    cid = os.urandom(64)
    assert s.get_counter(cid) == 0
    values = [s.increment_counter(cid) for _ in range(10)]
    assert values == list(range(1, 11))
    assert s.increment_counter(cid, 5) == 15
    assert s.increment_counter(cid, 0) == 15
    with pytest.raises(ValueError):
        s.increment_counter(cid, -1)
    other = os.urandom(64)
    assert s.increment_counter(other) == 1
    s.close()
    with SqliteKeyStore.open(ks_dir, PASS) as t:
        assert t.get_counter(cid) == 15
        assert t.increment_counter(cid) == 16
        assert t.get_counter(other) == 1
    with SqliteKeyStore.open(ks_dir, PASS) as t:
        assert t.get_counter(cid) == 16


def test_key_material_is_zeroed_on_close(ks_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The passphrase-derived key is zeroed right after use; the master key and the
    subkeys when the store closes (SECURITY.md: what cannot be zeroed)."""
    create(ks_dir).close()
    derived: list[bytearray] = []
    real_derive = kdf.derive_key

    def spy(passphrase: str, params: kdf.KdfParams) -> bytearray:
        key = real_derive(passphrase, params)
        derived.append(key)
        return key

    monkeypatch.setattr(kdf, "derive_key", spy)
    store = SqliteKeyStore.open(ks_dir, PASS)
    (kek,) = derived
    assert len(kek) == 32 and not any(kek)  # zeroed as soon as the master key unwrapped
    secrets = [
        store._master_key,
        store._keys.record_key,
        store._keys.index_key,
        store._keys.counter_key,
    ]
    assert all(isinstance(k, bytearray) and len(k) == 32 and any(k) for k in secrets)
    store.increment_counter(b"cred")
    store.close()
    assert not any(any(k) for k in secrets)
    with SqliteKeyStore.open(ks_dir, PASS) as again:  # the file is unharmed
        assert again.get_counter(b"cred") == 1
    # A wrong passphrase: the derived key is zeroed too.
    with pytest.raises(WrongPassphrase):
        SqliteKeyStore.open(ks_dir, "wrong")
    assert not any(derived[-1])


def test_increment_writes_one_row(store: SqliteKeyStore) -> None:
    for i in range(20):
        store.put_credential(make_record(user_id=bytes([i])))
    conn = store._conn
    assert conn is not None
    before = conn.total_changes
    store.increment_counter(b"some id")
    # A new counter: its row and the authenticated row count.
    assert conn.total_changes - before == 2
    for _ in range(3):
        before = conn.total_changes
        store.increment_counter(b"some id")
        assert conn.total_changes - before == 1  # then one row per assertion


def test_counter_concurrent_increments(store: SqliteKeyStore) -> None:
    cid = b"shared"
    results: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(20):
            v = store.increment_counter(cid)
            with lock:
                results.append(v)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == list(range(1, 81))
    assert store.get_counter(cid) == 80


def test_state(store: SqliteKeyStore) -> None:
    assert store.get_state("pin") is None
    assert list(store.state_keys()) == []
    store.put_state({"pin": b"1", "retries": b"\x08", "empty": b""})
    assert store.get_state("pin") == b"1"
    assert store.get_state("empty") == b""
    store.put_state({"pin": b"2", "retries": None, "missing": None})
    assert store.get_state("pin") == b"2"
    assert store.get_state("retries") is None
    assert sorted(store.state_keys()) == ["empty", "pin"]


def test_put_state_is_atomic(store: SqliteKeyStore) -> None:
    store.put_state({"a": b"1"})
    with pytest.raises(TypeError):
        store.put_state({"a": b"2", "b": 3})  # type: ignore[dict-item]
    conn = store._conn
    assert conn is not None
    (pages,) = conn.execute("PRAGMA page_count").fetchone()
    conn.execute(f"PRAGMA max_page_count = {pages + 2}")
    # The first update fits, the second does not: neither may remain.
    with pytest.raises(KeystoreFull):
        store.put_state({"a": b"2", "big": os.urandom(1 << 20)})
    assert store.get_state("a") == b"1"
    assert store.get_state("b") is None
    assert store.get_state("big") is None
    assert list(store.state_keys()) == ["a"]


# --------------------------------------------------------------------------
# passphrase change and reset


def test_change_passphrase(ks_dir: Path) -> None:
    s = create(ks_dir)
    rec = make_record()
    s.put_credential(rec)
    with raw_db(ks_dir) as db:
        (blob_before,) = db.execute("SELECT blob FROM credentials").fetchone()
    db.close()
    s.change_passphrase("new passphrase")
    s.close()
    with pytest.raises(WrongPassphrase):
        SqliteKeyStore.open(ks_dir, PASS)
    with SqliteKeyStore.open(ks_dir, "new passphrase") as t:
        assert t.get_credential(rec.credential_id) == rec
    with raw_db(ks_dir) as db:
        (blob_after,) = db.execute("SELECT blob FROM credentials").fetchone()
        params = json.loads(db.execute("SELECT value FROM meta WHERE name='kdf'").fetchone()[0])
    db.close()
    assert blob_after == blob_before  # only the master key was re-wrapped
    # The test parameters were weak: the new passphrase gets the current defaults
    # (tests/app/test_security_backup.py::test_passphrase_change_upgrades_weak_kdf_parameters).
    assert params["memory_kib"] == kdf.DEFAULT_MEMORY_KIB


def test_ephemeral_has_no_passphrase() -> None:
    with SqliteKeyStore.ephemeral() as e, pytest.raises(KeystoreError):
        e.change_passphrase("x")


def test_reset(ks_dir: Path) -> None:
    s = create(ks_dir)
    before = s.identity()
    rec = make_record()
    s.put_credential(rec)
    rp = rec.rp_id_hash
    server_side = seal(before.credential_key, rp, b"sealed payload")
    s.increment_counter(server_side, 4)
    s.put_state({"pin": b"x"})
    s.reset()
    after = s.identity()
    assert after.credential_key != before.credential_key
    assert after.aaguid == before.aaguid
    assert after.attestation_key == before.attestation_key
    assert after.attestation_chain == before.attestation_chain
    assert unseal(after.credential_key, rp, server_side) is None
    assert s.count_credentials() == 0
    assert s.get_credential(rec.credential_id) is None
    assert s.get_counter(server_side) == 0
    assert list(s.state_keys()) == []
    s.close()
    with SqliteKeyStore.open(ks_dir, PASS) as t:
        assert t.identity() == after
        assert t.count_credentials() == 0
        assert t.get_counter(server_side) == 0


# --------------------------------------------------------------------------
# errors


def test_disk_full_maps_to_keystore_full_and_leaves_no_half_record(store: SqliteKeyStore) -> None:
    first = make_record(user_id=b"first")
    store.put_credential(first)
    conn = store._conn
    assert conn is not None
    (pages,) = conn.execute("PRAGMA page_count").fetchone()
    conn.execute(f"PRAGMA max_page_count = {pages}")  # a real SQLITE_FULL from SQLite
    big = [make_record(user_id=bytes([i]) * 40) for i in range(200)]
    with pytest.raises(KeystoreFull):
        for rec in big:
            store.put_credential(rec)
    stored = store.count_credentials()
    assert stored < 201
    assert [s.record for s in store.list_credentials()][:1] == [first]
    conn.execute("PRAGMA max_page_count = 1073741823")
    store.put_credential(make_record(user_id=b"after"))
    assert store.count_credentials() == stored + 1


def test_read_only_error_maps_to_unavailable(ks_dir: Path) -> None:
    create(ks_dir).close()
    uri = (ks_dir / DB_NAME).as_uri() + "?mode=ro"
    db = sqlite3.connect(uri, uri=True)
    try:
        with pytest.raises(sqlite3.Error) as info:
            db.execute("DELETE FROM state")
    finally:
        db.close()
    mapped = map_sqlite_error(info.value, "write")
    assert isinstance(mapped, KeystoreUnavailable)


def test_closed_store_unavailable() -> None:
    e = SqliteKeyStore.ephemeral()
    e.close()
    with pytest.raises(KeystoreUnavailable):
        e.put_state({"a": b"b"})
    with pytest.raises(KeystoreUnavailable):
        e.identity()


# --------------------------------------------------------------------------
# KDF


def test_real_default_kdf_parameters(ks_dir: Path) -> None:
    s = SqliteKeyStore.create(ks_dir, PASS)
    s.close()
    with raw_db(ks_dir) as db:
        params = json.loads(db.execute("SELECT value FROM meta WHERE name='kdf'").fetchone()[0])
    db.close()
    assert params["alg"] == "argon2id"
    assert params["memory_kib"] >= 65536
    assert params["iterations"] >= 1 and params["lanes"] >= 1
    assert len(bytes.fromhex(params["salt"])) >= 16
    with pytest.raises(WrongPassphrase):
        SqliteKeyStore.open(ks_dir, PASS + "!")
    SqliteKeyStore.open(ks_dir, PASS).close()


def test_cheap_kdf_only_explicitly(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        SqliteKeyStore.create(tmp_path / "k", PASS, kdf_memory_kib=1024)
    assert not SqliteKeyStore.exists(tmp_path / "k")
    with pytest.raises(ValueError):
        kdf.new_params(memory_kib=65535)


def test_kdf_params_stored_are_used(ks_dir: Path) -> None:
    """Changing the stored parameters (without the passphrase) breaks unwrapping."""
    create(ks_dir).close()
    with raw_db(ks_dir) as db:
        params = json.loads(db.execute("SELECT value FROM meta WHERE name='kdf'").fetchone()[0])
        params["iterations"] += 1
        db.execute("UPDATE meta SET value = ? WHERE name = 'kdf'", (json.dumps(params),))
    db.close()
    with pytest.raises(WrongPassphrase):
        SqliteKeyStore.open(ks_dir, PASS)


# --------------------------------------------------------------------------
# ephemeral and scale


def test_ephemeral_store() -> None:
    aaguid = os.urandom(16)
    with SqliteKeyStore.ephemeral(aaguid=aaguid) as e:
        assert e.directory is None
        assert e.identity().aaguid == aaguid
        rec = make_record()
        e.put_credential(rec)
        assert e.find_credentials(rec.rp_id_hash) == [rec]
        assert e.increment_counter(rec.credential_id) == 1
        old_key = e.identity().credential_key
        e.reset()
        assert e.identity().credential_key != old_key
        assert e.count_credentials() == 0
    a, b = SqliteKeyStore.ephemeral(), SqliteKeyStore.ephemeral()
    assert a.identity().credential_key != b.identity().credential_key
    a.close()
    b.close()


def test_scale_and_indexed_lookups() -> None:
    with SqliteKeyStore.ephemeral() as e:
        records = [make_record(f"rp{i % 100}.example", f"user{i}".encode()) for i in range(2000)]
        for r in records:
            e.put_credential(r)
        assert e.count_credentials() == 2000
        found = e.find_credentials(rp_hash("rp7.example"))
        assert len(found) == 20
        assert {r.rp_id for r in found} == {"rp7.example"}
        assert e.get_credential(records[1234].credential_id) == records[1234]
        assert e.increment_counter(records[5].credential_id) == 1
        # Every lookup is an index search, never a table scan.
        conn = e._conn
        assert conn is not None
        queries = [
            "SELECT blob FROM credentials WHERE rp_tag = ?",
            "SELECT blob FROM credentials WHERE cred_tag = ?",
            "SELECT cred_tag FROM credentials WHERE user_tag = ? OR cred_tag = ?",
            "SELECT value FROM counters WHERE cred_tag = ?",
            "SELECT blob FROM state WHERE key_tag = ?",
        ]
        for q in queries:
            args = (b"x",) * q.count("?")
            plan = " ".join(str(row[-1]) for row in conn.execute("EXPLAIN QUERY PLAN " + q, args))
            assert "SEARCH" in plan and "SCAN" not in plan, (q, plan)


_opt_text = st.none() | st.text(max_size=64)
_opt_bytes = st.none() | st.binary(max_size=64)


@settings(max_examples=60, deadline=None)
@given(
    rec=st.builds(
        CredentialRecord,
        credential_id=st.binary(min_size=1, max_size=200),
        rp_id=st.text(max_size=64),
        rp_id_hash=st.binary(min_size=32, max_size=32),
        user_id=st.binary(min_size=1, max_size=64),
        algorithm=st.integers(-(2**31), 2**31),
        private_key=st.binary(max_size=200),
        created=st.integers(0, 2**40),
        rp_name=_opt_text,
        user_name=_opt_text,
        user_display_name=_opt_text,
        cred_protect=st.integers(1, 3),
        cred_random_uv=_opt_bytes,
        cred_random_no_uv=_opt_bytes,
        cred_blob=_opt_bytes,
        large_blob_key=_opt_bytes,
        backup_eligible=st.booleans(),
        backup_state=st.booleans(),
    ),
    state=st.dictionaries(st.text(max_size=20), st.binary(max_size=100), max_size=5),
)
def test_round_trip_property(rec: CredentialRecord, state: dict[str, bytes]) -> None:
    with SqliteKeyStore.ephemeral() as e:
        e.put_credential(rec)
        assert e.get_credential(rec.credential_id) == rec
        assert e.find_credentials(rec.rp_id_hash) == [rec]
        e.put_state(state)
        assert sorted(e.state_keys()) == sorted(state)
        for k, v in state.items():
            assert e.get_state(k) == v


def test_counters_stay_exact_beyond_the_in_memory_cache(
    ks_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Verified counters and credential tags are cached (bounded); evicted ones are read
    back from the file and checked again."""
    monkeypatch.setattr(sqlite_store, "_CACHE_SIZE", 8)
    with create(ks_dir) as s:
        for round_ in range(1, 4):
            for i in range(40):
                assert s.increment_counter(b"id%d" % i) == round_
            assert len(s._tags) <= 8 and len(s._counters) <= 8
        assert [s.get_counter(b"id%d" % i) for i in range(40)] == [3] * 40
    with SqliteKeyStore.open(ks_dir, PASS) as s:
        assert [s.get_counter(b"id%d" % i) for i in range(40)] == [3] * 40


@pytest.mark.parametrize("change", ["delete", "replace"])
def test_counter_row_count_survives_a_concurrent_first_assertion(
    ks_dir: Path, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    """Deleting (or replacing) a discoverable credential updates the authenticated count
    of counter rows. A first assertion of another credential (which inserts a counter
    row) on another thread, e.g. while the control socket deletes a credential, must
    not interleave with that bookkeeping: a stale count would make the keystore fail
    its check at the next open."""
    store = create(ks_dir)
    doomed = make_record(user_id=b"doomed")
    store.put_credential(doomed)
    store.increment_counter(doomed.credential_id)
    fresh_id = os.urandom(48)
    original = SqliteKeyStore._counters_deleted
    done = threading.Event()

    def interleave(self: SqliteKeyStore, tags: list[bytes], rows: int) -> None:
        # Between the commit and the bookkeeping: another thread's first assertion.
        worker = threading.Thread(
            target=lambda: (store.increment_counter(fresh_id), done.set()), daemon=True
        )
        worker.start()
        done.wait(0.5)  # it must wait for the store's lock (so this times out)
        original(self, tags, rows)

    monkeypatch.setattr(SqliteKeyStore, "_counters_deleted", interleave)
    if change == "delete":
        assert store.delete_credential(doomed.credential_id)
    else:  # the same user again: the old credential and its counter are replaced
        store.put_credential(make_record(user_id=b"doomed"))
    assert done.wait(5)
    monkeypatch.setattr(SqliteKeyStore, "_counters_deleted", original)
    store.close()
    reopened = SqliteKeyStore.open(ks_dir, PASS)  # checks every counter row and their count
    assert reopened.get_counter(fresh_id) == 1
    reopened.close()


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_a_deleted_credential_leaves_nothing_in_the_write_ahead_log(ks_dir: Path, how: str) -> None:
    """secure_delete zeroes a deleted row in the database file, but the write-ahead log kept
    the row's earlier frames (its sealed private key) until the next checkpoint, while the
    key ran or after a crash (an outside review decrypted one there)."""
    with create(ks_dir) as store:
        old = make_record(user_id=b"alice")
        store.put_credential(old)
        db = sqlite3.connect(ks_dir / DB_NAME)
        try:
            (blob,) = db.execute("SELECT blob FROM credentials").fetchone()
        finally:
            db.close()
        for n in range(5):  # more writes after it, as a running key makes
            store.increment_counter(b"server-side-%d" % n)
        if how == "deleted":
            assert store.delete_credential(old.credential_id)
        else:  # the same user registers again: the old credential is dropped
            store.put_credential(make_record(user_id=b"alice"))
        for name in (DB_NAME, DB_NAME + "-wal"):
            path = ks_dir / name
            assert not path.exists() or blob not in path.read_bytes(), name


def test_a_read_only_keystore_file_is_refused_at_open(ks_dir: Path) -> None:
    """A database its owner cannot write (chmod 400) opened, and the key then failed every
    registration with CTAP2_ERR_OTHER and a log line naming KeystoreUnavailable (a newcomer
    trial, as a user; root writes anyway, so the mode is what is checked)."""
    create(ks_dir).close()
    (ks_dir / DB_NAME).chmod(0o400)
    with pytest.raises(KeystoreUnavailable, match=r"mode 400\): chmod 600 it"):
        SqliteKeyStore.open(ks_dir, PASS)
    assert not (ks_dir / (DB_NAME + "-wal")).exists()  # refused before SQLite made its files


def test_create_never_replaces_a_keystore_that_appears_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`vfido init` renamed its new database over vfido.db: a `vfido backup import` into the
    same directory that finished during init's key derivation (import builds aside, then
    links its database in) was replaced by an empty keystore. Now it is kept."""
    directory = tmp_path / "ks"
    real_derive = kdf.derive_key

    def derive_while_an_import_finishes(passphrase: str, params: kdf.KdfParams) -> bytes:
        (directory / "vfido.db").write_bytes(b"the imported keystore")
        return real_derive(passphrase, params)

    monkeypatch.setattr(sqlite_store.kdf, "derive_key", derive_while_an_import_finishes)
    with pytest.raises(KeystoreError, match=r"appeared in .* meanwhile: refusing to replace it"):
        create(directory)
    assert (directory / "vfido.db").read_bytes() == b"the imported keystore"
    assert sorted(p.name for p in directory.iterdir()) == ["vfido.db", "vfido.lock"]


def test_link_into_place_without_hard_links_renames_only_onto_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from vfido.keystore.files import link_into_place

    def no_links(source: object, target: object) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    (tmp_path / "a").write_bytes(b"a")
    link_into_place(tmp_path / "a", tmp_path / "b")
    assert (tmp_path / "b").read_bytes() == b"a" and not (tmp_path / "a").exists()
    (tmp_path / "c").write_bytes(b"c")
    with pytest.raises(FileExistsError):
        link_into_place(tmp_path / "c", tmp_path / "b")
    assert (tmp_path / "b").read_bytes() == b"a" and (tmp_path / "c").read_bytes() == b"c"


@pytest.mark.parametrize("leftover", ["vfido.db-wal", "vfido.db-journal"])
def test_create_refuses_a_log_left_from_another_keystore(tmp_path: Path, leftover: str) -> None:
    """A keystore's vfido.db moved away (its newest changes still in vfido.db-wal after a
    kill), then `vfido init` in that directory: SQLite replayed the old log into the new
    database, which then failed to open, and deleted the log, so the moved database lost
    those changes (an outside review). Now nothing is made and the log stays."""
    directory = tmp_path / "ks"
    directory.mkdir(mode=0o700)
    log = directory / leftover
    log.write_bytes(b"the newest changes of another keystore")
    log.chmod(0o600)
    with pytest.raises(KeystoreError, match=f"{leftover} is left from another keystore"):
        create(directory)
    assert log.read_bytes() == b"the newest changes of another keystore"
    assert not (directory / "vfido.db").exists()


def test_a_removed_lock_file_does_not_let_a_second_opener_in(store: SqliteKeyStore) -> None:
    """With vfido.lock removed (taken for a stale lock file), a second `vfido run` opened
    the keystore beside the first, and the two handed out the same counters (a review saw
    5 and 6 each returned twice). The database itself is locked too now."""
    directory = store.directory
    assert directory is not None
    store.count_credentials()
    assert _sqlite_shared_lock_holder(directory / "vfido.db") == os.getpid()
    (directory / "vfido.lock").unlink()
    with pytest.raises(KeystoreLocked, match=r"lock file vfido\.lock was removed or replaced"):
        SqliteKeyStore.open(directory, PASS)
    # The refused open closed no descriptor of vfido.db: that would have dropped the first
    # connection's POSIX locks, which SQLite never takes again (a review).
    assert _sqlite_shared_lock_holder(directory / "vfido.db") == os.getpid()
    store.close()
    with SqliteKeyStore.open(directory, PASS) as again:  # free once the first one closed
        assert again.count_credentials() == 0


def _sqlite_shared_lock_holder(database: Path) -> int | None:
    """The pid holding a POSIX lock on SQLite's SHARED byte range of ``database``, asked from
    another process (F_GETLK: a process never sees its own locks as conflicts)."""
    probe = (
        "import fcntl, os, struct, sys\n"
        "fd = os.open(sys.argv[1], os.O_RDWR)\n"
        "lock = struct.pack('hhqqi', fcntl.F_WRLCK, 0, 0x40000002, 510, 0)\n"
        "kind, _, _, _, pid = struct.unpack('hhqqi', fcntl.fcntl(fd, fcntl.F_GETLK, lock))\n"
        "print(pid if kind != fcntl.F_UNLCK else 0)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, str(database)], capture_output=True, text=True, check=True
    )
    return int(out.stdout) or None


def test_a_database_replaced_by_a_held_one_before_it_is_opened_is_not_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """hold_too checks the file by its path, then opens it: were the path to name a database
    this process holds by then, the refused descriptor must stay open (closing it would drop
    the holder's SQLite locks; a diff review)."""
    from vfido.keystore import lock as lock_module

    held = create(tmp_path / "held")
    held.count_credentials()
    assert _sqlite_shared_lock_holder(tmp_path / "held" / "vfido.db") == os.getpid()
    create(tmp_path / "other").close()
    other_lock = lock_module.DirectoryLock(tmp_path / "other" / "vfido.lock")
    real_open = os.open

    def open_the_held_one(path: object, flags: int, *args: int) -> int:
        if str(path).endswith("other/vfido.db"):
            path = tmp_path / "held" / "vfido.db"  # replaced meanwhile
        return real_open(path, flags, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(lock_module.os, "open", open_the_held_one)
    with pytest.raises(KeystoreLocked, match="open in this process already"):
        other_lock.hold_too(tmp_path / "other" / "vfido.db")
    monkeypatch.undo()
    other_lock.release()
    assert _sqlite_shared_lock_holder(tmp_path / "held" / "vfido.db") == os.getpid()
    held.close()


def test_a_removed_lock_file_does_not_let_another_process_in(tmp_path: Path) -> None:
    """The same across processes: one keeps the keystore open, its vfido.lock is removed,
    and another process's open is refused by the lock on vfido.db."""
    create(tmp_path / "ks").close()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path\n"
            "from vfido.keystore.sqlite_store import SqliteKeyStore\n"
            f"store = SqliteKeyStore.open(Path({str(tmp_path / 'ks')!r}), {PASS!r})\n"
            "print('open', flush=True); sys.stdin.readline(); store.close()\n",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "open\n"
        (tmp_path / "ks" / "vfido.lock").unlink()
        with pytest.raises(KeystoreLocked, match=r"in use by another process \(whose lock file"):
            SqliteKeyStore.open(tmp_path / "ks", PASS)
    finally:
        holder.communicate("\n", timeout=30)
    with SqliteKeyStore.open(tmp_path / "ks", PASS):
        pass


# --- rules a session 20 mutation sampling found unpinned ---------------------------------------


def test_every_connection_commits_durably(ks_dir: Path) -> None:
    """SECURITY.md: "Every keystore write is one SQLite transaction (WAL, synchronous=FULL)
    committed before the authenticator answers", and the write-ahead log's damage check
    relies on it. A crash test kills the process, which the page cache survives, so only the
    setting itself tells FULL (2) from NORMAL (1)."""
    with create(ks_dir) as s:
        assert s._conn.execute("PRAGMA synchronous").fetchone() == (2,)
    with SqliteKeyStore.open(ks_dir, PASS) as s:
        assert s._conn.execute("PRAGMA synchronous").fetchone() == (2,)
        assert s._conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_listing_state_notices_a_row_deleted_while_open(ks_dir: Path) -> None:
    """SECURITY.md: "a row deleted while the keystore is open is noticed on the next read",
    state_keys() included (backup export lists the state with it: a PIN hash deleted under
    the open store would be left out of a bundle without a word)."""
    with create(ks_dir) as s:
        s.put_state({"pin.hash": b"h" * 32, "pin.retries": b"\x00\x00\x00\x08"})
        assert list(s.state_keys()) == ["pin.hash", "pin.retries"]
        tag = s._state_tag("pin.hash")
        s._conn.execute("DELETE FROM state WHERE key_tag = ?", (tag,))
        with pytest.raises(KeystoreCorrupt):
            s.state_keys()


def test_the_counter_floor_only_rises(store: SqliteKeyStore) -> None:
    """raise_counter_floor: counters not stored yet start "at floor (at least)": a lower
    floor later (a second, older backup) changes nothing."""
    store.raise_counter_floor(1000)
    store.raise_counter_floor(5)
    assert store.counter_floor() == 1000
    assert store.increment_counter(b"new credential") == 1001


def test_a_counter_reaches_max_counter_and_no_further(store: SqliteKeyStore) -> None:
    """A backup bundle may carry a counter up to MAX_COUNTER (vfido.backup validates so);
    importing it must work, and only the step past it is refused."""
    from vfido.keystore.integrity import MAX_COUNTER

    assert store.increment_counter(b"credential", MAX_COUNTER) == MAX_COUNTER
    with pytest.raises(KeystoreError, match="cannot advance"):
        store.increment_counter(b"credential")
    assert store.get_counter(b"credential") == MAX_COUNTER
