"""Storage faults: a full disk, a read-only keystore, damaged or missing files.

These run the real CLI and service (`vfido ...` subprocesses) on real file
systems. The disk-full and read-only cases mount a small tmpfs and need root
(they are skipped otherwise; CI runs as root). Keystores use the explicitly
insecure test KDF parameters (the files are otherwise production keystores).
The in-process mapping of SQLITE_FULL to KeystoreFull is in
tests/keystore/test_keystore.py::test_disk_full_maps_to_keystore_full_and_leaves_no_half_record.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from fido2.ctap import CtapError
from fido2.ctap2.base import Ctap2

from tests.ctap2_helpers import create_credential, sign_counter
from tests.service_helpers import PASSPHRASE, udp_service, vfido
from vfido.keystore import kdf, schema
from vfido.keystore.crypto import RecordKeys
from vfido.keystore.sqlite_store import DB_NAME, SqliteKeyStore
from vfido.keystore.store import CredentialRecord, KeystoreError
from vfido.transports.udp import open_udp_device

DATA = Path(__file__).parent / "data"


def _create(directory: Path) -> None:
    SqliteKeyStore.create(directory, PASSPHRASE, kdf_params=kdf.insecure_test_params()).close()


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs mounted for this test (root only)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "mnt"
    mnt.mkdir(mode=0o700)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(mnt)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(mnt: Path, leave: int) -> Path:
    st = os.statvfs(mnt)
    filler = mnt / "filler"
    with open(filler, "wb") as f:
        f.write(b"\0" * max(0, st.f_bavail * st.f_frsize - leave))
    return filler


@pytest.mark.slow
def test_disk_full_answers_key_store_full_keeps_serving_and_recovers(small_fs: Path) -> None:
    keystore = small_fs / "ks"
    _create(keystore)
    filler = _fill(small_fs, leave=64 * 1024)
    registered: dict[bytes, bytes] = {}
    with udp_service(["--keystore", str(keystore)]) as service:
        device = open_udp_device(service.port, service.peer_port, timeout=30)
        ctap2 = Ctap2(device)
        with pytest.raises(CtapError) as info:
            for i in range(2000):
                user = b"user-%d" % i
                registered[user] = create_credential(ctap2, "full.example", user, rk=True)
        assert info.value.code == CtapError.ERR.KEY_STORE_FULL
        # Still serving: getInfo, server-side registrations (no storage) and
        # assertions of what was stored (counter rows fit in existing pages).
        assert "FIDO_2_1" in ctap2.get_info().versions
        server_side = create_credential(ctap2, "other.example", b"nobody", rk=False)
        for cred_id in registered.values():
            sign_counter(ctap2, "full.example", cred_id)
        sign_counter(ctap2, "other.example", server_side)
        filler.unlink()  # space again: the same running key stores again
        registered[b"after"] = create_credential(ctap2, "full.example", b"after", rk=True)
        device.close()
    # Nothing half-written: exactly the acknowledged credentials, and a sound file.
    with SqliteKeyStore.open(keystore, PASSPHRASE) as store:
        stored = {s.record.user_id: s.record.credential_id for s in store.list_credentials()}
        assert stored == registered
        conn = store._conn
        assert conn is not None
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


@pytest.mark.slow
def test_disk_full_during_create_leaves_no_keystore(small_fs: Path) -> None:
    _fill(small_fs, leave=4096)
    result = vfido(["init", "--keystore", str(small_fs / "ks")])
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("vfido: error: ")
    assert not SqliteKeyStore.exists(small_fs / "ks")


@pytest.mark.slow
def test_read_only_keystore_is_one_clear_line(small_fs: Path) -> None:
    keystore = small_fs / "ks"
    _create(keystore)
    before = (keystore / DB_NAME).read_bytes()
    subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
    for args in (["info"], ["credentials", "list"]):
        result = vfido([*args, "--keystore", str(keystore)])
        assert result.returncode == 1, result
        assert result.stderr.count("\n") == 1 and result.stderr.startswith("vfido: error: ")
        assert "not writable" in result.stderr or "read-only" in result.stderr.lower()
    with (
        pytest.raises(RuntimeError, match="vfido: error: "),
        udp_service(["--keystore", str(keystore)], ready_timeout=30),
    ):
        pass
    assert (keystore / DB_NAME).read_bytes() == before


# --- damaged and missing files ----------------------------------------------


def _damaged_variants(original: bytes) -> dict[str, bytes]:
    return {
        "empty": b"",
        "truncated to 100 bytes": original[:100],
        "truncated to half": original[: len(original) // 2],
        "truncated by one page": original[:-4096],
        "header bit flipped": bytes([original[0] ^ 0x01]) + original[1:],
        "application id flipped": original[:70] + bytes([original[70] ^ 0x10]) + original[71:],
        "garbage": os.urandom(len(original)),
    }


@pytest.fixture(scope="module")
def populated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A keystore with a few credentials and state (checkpointed into vfido.db)."""
    directory = tmp_path_factory.mktemp("populated") / "ks"
    with SqliteKeyStore.create(
        directory, PASSPHRASE, kdf_params=kdf.insecure_test_params()
    ) as store:
        for i in range(20):
            store.put_credential(_record(i))
            store.increment_counter(b"cred-%d" % i)
        store.put_state({"pin.hash": os.urandom(32), "pin.retries": b"\x08"})
    return directory


def _record(i: int) -> CredentialRecord:
    return CredentialRecord(
        credential_id=b"cred-%d" % i,
        rp_id="example.com",
        rp_id_hash=hashlib.sha256(b"example.com").digest(),
        user_id=b"user-%d" % i,
        algorithm=-7,
        private_key=os.urandom(32),
        created=1_700_000_000 + i,
        user_name=f"user {i}",
    )


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("damage", list(_damaged_variants(b"x" * 8192)))
def test_damaged_database_is_reported_in_one_line_and_never_written(
    populated: Path, tmp_path: Path, damage: str
) -> None:
    keystore = _copy(populated, tmp_path / "ks")
    db = keystore / DB_NAME
    damaged = _damaged_variants(db.read_bytes())[damage]
    db.write_bytes(damaged)
    run = ["run", "--transport", "udp", "--udp-port", "0", "--udp-peer-port", "9"]
    run.append("--udp-insecure-any-local-user")  # a persistent keystore over UDP
    for args in (["info"], ["credentials", "list"], ["reset", "--yes"], run):
        result = vfido([*args, "--keystore", str(keystore)])
        assert result.returncode == 1, (damage, args, result)
        assert result.stderr.count("\n") == 1, result.stderr
        assert result.stderr.startswith("vfido: error: ")
        assert "damaged" in result.stderr or "not a vfido keystore" in result.stderr
        assert db.read_bytes() == damaged, f"{damage}: {args} modified the damaged file"
    assert sorted(p.name for p in keystore.iterdir()) == ["vfido.db", "vfido.lock"]


def test_random_bit_flips_are_detected_or_harmless(populated: Path, tmp_path: Path) -> None:
    """Each flipped bit: credentials and state either read back intact or the
    read fails with one clear error (in-process, so many flips are cheap; the CLI
    path is covered above). Since format 2 this includes the signature counters
    (format 1 let about 1 flip in 100 change one silently)."""
    original = (populated / DB_NAME).read_bytes()
    rng = random.Random(1234)
    outcomes = {"detected": 0, "harmless": 0, "counter changed": 0}
    for n in range(300):
        keystore = _copy(populated, tmp_path / f"ks{n}")
        db = keystore / DB_NAME
        offset = rng.randrange(len(original))
        db.write_bytes(
            original[:offset]
            + bytes([original[offset] ^ (1 << rng.randrange(8))])
            + original[offset + 1 :]
        )
        flipped = db.read_bytes()
        try:
            with SqliteKeyStore.open(keystore, PASSPHRASE) as store:
                summaries = store.list_credentials()
                assert len(summaries) == 20
                for s in summaries:
                    i = int(s.record.user_id.removeprefix(b"user-"))
                    assert s.record.credential_id == b"cred-%d" % i
                    assert s.record.user_name == f"user {i}"
                counters_ok = all(s.sign_count == 1 for s in summaries)
                assert store.get_state("pin.retries") == b"\x08"
                conn = store._conn
                assert conn is not None
                ok = conn.execute("PRAGMA quick_check").fetchall() == [("ok",)]
            outcome = "harmless" if ok else "detected"
            outcomes[outcome if counters_ok else "counter changed"] += 1
        except KeystoreError as exc:
            assert "\n" not in str(exc)
            assert db.read_bytes() == flipped, f"offset {offset}: a damaged file was modified"
            outcomes["detected"] += 1
        shutil.rmtree(keystore)
    print(f"\nbit flips: {outcomes}")
    assert outcomes["detected"] > 0
    assert outcomes["counter changed"] == 0


def test_missing_database_is_one_line_and_init_does_not_clobber(tmp_path: Path) -> None:
    keystore = tmp_path / "ks"
    _create(keystore)
    (keystore / DB_NAME).unlink()
    run = ["run", "--transport", "udp", "--udp-port", "0", "--udp-insecure-any-local-user"]
    for args in (["info"], run):
        result = vfido([*args, "--keystore", str(keystore)])
        assert result.returncode == 1
        assert result.stderr.count("\n") == 1 and "no keystore in" in result.stderr


# --- format versions ----------------------------------------------------------

V1_PASSPHRASE = "vfido format 1 fixture"


def test_format_1_keystore_fixture_opens(tmp_path: Path) -> None:
    """A keystore written by format version 1 (committed in tests/reliability/data)
    must keep opening (or migrating) in every later vfido."""
    keystore = tmp_path / "ks"
    keystore.mkdir(mode=0o700)
    shutil.copy(DATA / "keystore-v1.db", keystore / DB_NAME)
    os.chmod(keystore / DB_NAME, 0o600)
    with SqliteKeyStore.open(keystore, V1_PASSPHRASE) as store:
        assert store.identity().aaguid.hex() == "766669646f0040008000000000000001"
        (summary,) = store.list_credentials()
        assert summary.record.rp_id == "v1.example"
        assert summary.record.user_id == b"v1-user"
        assert summary.sign_count == 7
        assert store.get_state("pin.retries") == b"\x08"
        conn = store._conn
        assert conn is not None
        (version,) = conn.execute("SELECT value FROM meta WHERE name = 'format_version'").fetchone()
        assert version == schema.FORMAT_VERSION


def test_older_format_is_migrated_in_one_transaction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The migration mechanism: a current-format file opened by a (simulated)
    next-format vfido runs the step once and records the new version."""
    keystore = tmp_path / "ks"
    _create(keystore)
    calls: list[int] = []
    current = schema.FORMAT_VERSION

    def step(conn: sqlite3.Connection, keys: RecordKeys) -> None:
        calls.append(1)  # (a new table would need SCHEMA changed too: the file is checked)
        conn.execute("INSERT INTO meta (name, value) VALUES ('extra', 0)")

    monkeypatch.setattr(schema, "FORMAT_VERSION", current + 1)
    monkeypatch.setitem(schema.MIGRATIONS, current, step)
    SqliteKeyStore.open(keystore, PASSPHRASE).close()
    SqliteKeyStore.open(keystore, PASSPHRASE).close()
    assert calls == [1]
    db = sqlite3.connect(keystore / DB_NAME)
    try:
        assert db.execute("SELECT value FROM meta WHERE name = 'format_version'").fetchone() == (
            current + 1,
        )
        assert db.execute("SELECT value FROM meta WHERE name = 'extra'").fetchone() == (0,)
    finally:
        db.close()


def test_missing_migration_step_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    keystore = tmp_path / "ks"
    _create(keystore)
    current = schema.FORMAT_VERSION
    monkeypatch.setattr(schema, "FORMAT_VERSION", current + 2)
    monkeypatch.setitem(schema.MIGRATIONS, current + 1, lambda conn, keys: None)
    with pytest.raises(KeystoreError, match=f"format version {current}"):
        SqliteKeyStore.open(keystore, PASSPHRASE)
    db = sqlite3.connect(keystore / DB_NAME)
    try:  # left as it was
        assert db.execute("SELECT value FROM meta WHERE name = 'format_version'").fetchone() == (
            current,
        )
    finally:
        db.close()
