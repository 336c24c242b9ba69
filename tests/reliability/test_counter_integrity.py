"""Signature counters are authenticated (keystore format 2; format 5: as a set).

A counter that was changed on disk (by damage or on purpose) must be reported as
corruption when the keystore opens: never accepted with another value, never
taken as a lower one. Each counter row carries a MAC over its tag and value, and
the number of rows is kept with its own MAC (since format 5, over which rows it
counts), so a row that vanishes is noticed too. The exhaustive test below damages
the database file itself, byte by byte and bit by bit, in the pages that hold the
counters.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from tests.service_helpers import PASSPHRASE, vfido
from vfido.keystore import kdf
from vfido.keystore.sqlite_store import DB_NAME, FORMAT_VERSION, SqliteKeyStore
from vfido.keystore.store import KeystoreCorrupt, KeystoreError

DATA = Path(__file__).parent / "data"
V1_PASSPHRASE = "vfido format 1 fixture"
# Server-side credential ids (any bytes: the keystore only stores a keyed hash).
IDS = [b"server-side credential %02d" % i for i in range(12)]
COUNTS = {cid: 3 * i + 1 for i, cid in enumerate(IDS)}  # distinct values, one > 255
COUNTS[IDS[-1]] = 300


def _populate(directory: Path) -> None:
    with SqliteKeyStore.create(
        directory, PASSPHRASE, kdf_params=kdf.insecure_test_params()
    ) as store:
        for cid, count in COUNTS.items():
            store.increment_counter(cid, count)


def _counters(directory: Path) -> dict[bytes, int]:
    with SqliteKeyStore.open(directory, PASSPHRASE) as store:
        return {cid: store.get_counter(cid) for cid in IDS}


def _raw(directory: Path) -> sqlite3.Connection:
    return sqlite3.connect(directory / DB_NAME, isolation_level=None)


@pytest.fixture()
def keystore(tmp_path: Path) -> Path:
    directory = tmp_path / "ks"
    _populate(directory)
    assert _counters(directory) == COUNTS
    return directory


# --- deliberate changes -----------------------------------------------------


def _tamper(directory: Path, *statements: tuple[str, tuple[object, ...]]) -> None:
    db = _raw(directory)
    try:
        for sql, args in statements:
            db.execute(sql, args)
    finally:
        db.close()


def _first_tags(directory: Path, n: int) -> list[bytes]:
    db = _raw(directory)
    try:
        rows = db.execute(
            "SELECT cred_tag FROM counters WHERE cred_tag != x'' ORDER BY cred_tag LIMIT ?", (n,)
        ).fetchall()
    finally:
        db.close()
    return [bytes(r[0]) for r in rows]


@pytest.mark.parametrize("change", ["lower", "higher", "zero", "swap macs", "swap values"])
def test_a_changed_counter_value_is_corruption(keystore: Path, change: str) -> None:
    a, b = _first_tags(keystore, 2)
    table: dict[str, list[tuple[str, tuple[object, ...]]]] = {
        "lower": [("UPDATE counters SET value = value - 1 WHERE cred_tag = ?", (a,))],
        "higher": [("UPDATE counters SET value = value + 1000 WHERE cred_tag = ?", (a,))],
        "zero": [("UPDATE counters SET value = 0 WHERE cred_tag = ?", (a,))],
        "swap macs": [
            (
                "UPDATE counters SET mac = (SELECT mac FROM counters WHERE cred_tag = ?)"
                " WHERE cred_tag = ?",
                (b, a),
            )
        ],
        "swap values": [
            (
                "UPDATE counters SET value = (SELECT value FROM counters WHERE cred_tag = ?),"
                " mac = (SELECT mac FROM counters WHERE cred_tag = ?) WHERE cred_tag = ?",
                (b, b, a),
            )
        ],
    }
    _tamper(keystore, *table[change])
    with pytest.raises(KeystoreCorrupt, match="counter"):
        SqliteKeyStore.open(keystore, PASSPHRASE)


@pytest.mark.parametrize("change", ["delete one row", "delete all rows", "delete the count"])
def test_a_vanished_counter_is_corruption_not_a_reset_to_zero(keystore: Path, change: str) -> None:
    (a,) = _first_tags(keystore, 1)
    sql, args = {
        "delete one row": ("DELETE FROM counters WHERE cred_tag = ?", (a,)),
        "delete all rows": ("DELETE FROM counters WHERE cred_tag != x''", ()),
        "delete the count": ("DELETE FROM counters WHERE cred_tag = x''", ()),
    }[change]
    _tamper(keystore, (sql, args))
    with pytest.raises(KeystoreCorrupt, match="counter"):
        SqliteKeyStore.open(keystore, PASSPHRASE)


def _index_row(directory: Path) -> tuple[object, ...]:
    db = _raw(directory)
    try:
        return tuple(db.execute("SELECT value, mac FROM counters WHERE cred_tag = x''").fetchone())
    finally:
        db.close()


def test_an_older_index_row_does_not_hide_a_deleted_counter(keystore: Path) -> None:
    """Format 5. An outside review kept the index row of an older copy (fewer counters),
    then deleted a counter that copy also held (here the one at 300) and put that index back:
    the number matched, and the counter started again at 0. The index now authenticates
    which rows it counts."""
    old_index = _index_row(keystore)
    old_tags = _first_tags(keystore, len(IDS))
    with SqliteKeyStore.open(keystore, PASSPHRASE) as store:
        assert store.increment_counter(b"a newer server-side credential") == 1
        victim = store._cred_tag(IDS[-1])
    assert victim in old_tags
    _tamper(
        keystore,
        ("DELETE FROM counters WHERE cred_tag = ?", (victim,)),
        ("UPDATE counters SET value = ?, mac = ? WHERE cred_tag = x''", old_index),
    )
    with pytest.raises(KeystoreCorrupt, match="counter index does not authenticate"):
        SqliteKeyStore.open(keystore, PASSPHRASE)


def test_counters_made_since_an_older_copy_can_be_dropped_with_its_index(keystore: Path) -> None:
    """The limit of the above (SECURITY.md, "Known limitations": authenticated, not fresh):
    the counters made since an older copy, deleted with that copy's index put back, leave
    exactly the copy's set, which its index authenticates. Such a counter starts again at
    the floor. Pinned here so that a change of it is a decision, not an accident."""
    old_index = _index_row(keystore)
    with SqliteKeyStore.open(keystore, PASSPHRASE) as store:
        assert store.increment_counter(b"a newer server-side credential", 50) == 50
        newer = store._cred_tag(b"a newer server-side credential")
    _tamper(
        keystore,
        ("DELETE FROM counters WHERE cred_tag = ?", (newer,)),
        ("UPDATE counters SET value = ?, mac = ? WHERE cred_tag = x''", old_index),
    )
    with SqliteKeyStore.open(keystore, PASSPHRASE) as store:
        assert store.get_counter(b"a newer server-side credential") == 0
        assert store.get_counter(IDS[-1]) == 300


def test_a_forged_row_count_is_corruption(keystore: Path) -> None:
    (a,) = _first_tags(keystore, 1)
    _tamper(
        keystore,
        ("DELETE FROM counters WHERE cred_tag = ?", (a,)),
        ("UPDATE counters SET value = value - 1 WHERE cred_tag = x''", ()),
    )
    with pytest.raises(KeystoreCorrupt, match="counter index"):
        SqliteKeyStore.open(keystore, PASSPHRASE)


def test_vfido_reports_a_tampered_counter_in_one_line_and_does_not_write(keystore: Path) -> None:
    (a,) = _first_tags(keystore, 1)
    # Lowered (never a no-op: the first tag in key order may hold any of COUNTS).
    _tamper(keystore, ("UPDATE counters SET value = value - 1 WHERE cred_tag = ?", (a,)))
    before = (keystore / DB_NAME).read_bytes()
    run = ["run", "--transport", "udp", "--udp-port", "0", "--udp-peer-port", "9"]
    run.append("--udp-insecure-any-local-user")  # a persistent keystore over UDP
    for args in (["info"], ["credentials", "list"], run):
        result = vfido([*args, "--keystore", str(keystore)])
        assert result.returncode == 1, (args, result)
        assert result.stderr.count("\n") == 1, result.stderr
        assert result.stderr.startswith("vfido: error: ")
        assert "signature counter failed authentication" in result.stderr
        assert (keystore / DB_NAME).read_bytes() == before, f"{args} wrote to the file"


def test_counters_survive_reopen_deletion_and_reset(keystore: Path) -> None:
    """The bookkeeping (row count, cache) stays right through every write path."""
    with SqliteKeyStore.open(keystore, PASSPHRASE) as store:
        assert store.increment_counter(IDS[0]) == COUNTS[IDS[0]] + 1
        assert store.increment_counter(b"new") == 1
    with SqliteKeyStore.open(keystore, PASSPHRASE) as store:
        assert store.get_counter(b"new") == 1
        assert store.get_counter(IDS[0]) == COUNTS[IDS[0]] + 1
        store.reset()
        assert store.get_counter(IDS[0]) == 0
        assert store.increment_counter(IDS[1]) == 1
    assert _counters(keystore) == {cid: int(cid == IDS[1]) for cid in IDS}


# --- the file itself damaged ------------------------------------------------


def _counter_pages(db_path: Path) -> tuple[int, list[int]]:
    """(page size, page numbers of the counters b-tree) of a checkpointed file."""
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        (page_size,) = db.execute("PRAGMA page_size").fetchone()
        pages = [
            int(r[0])
            for r in db.execute("SELECT pageno FROM dbstat WHERE name = 'counters' ORDER BY 1")
        ]
    finally:
        db.close()
    return int(page_size), pages


def _outcome(directory: Path, variant: bytes) -> str:
    """'detected', 'unchanged' or 'SILENT CHANGE' for one damaged file."""
    for name in (DB_NAME + "-wal", DB_NAME + "-shm"):
        (directory / name).unlink(missing_ok=True)
    (directory / DB_NAME).write_bytes(variant)
    try:
        seen = _counters(directory)
    except KeystoreError as exc:
        assert "\n" not in str(exc)
        return "detected"
    return "unchanged" if seen == COUNTS else "SILENT CHANGE"


@pytest.mark.slow
def test_every_bit_of_a_counter_row_and_every_byte_of_the_counter_pages(
    keystore: Path, tmp_path: Path
) -> None:
    """Flip each bit of one counter row (its cell: header, tag, value, MAC) and
    invert each byte of every page of the counters b-tree: each variant either
    fails to open with one clear error or reads back every counter unchanged."""
    original = (keystore / DB_NAME).read_bytes()
    assert not (keystore / (DB_NAME + "-wal")).exists()  # all in the main file
    page_size, pages = _counter_pages(keystore / DB_NAME)
    assert pages, "no counter pages found"
    with SqliteKeyStore.open(keystore, PASSPHRASE) as store:
        tag = store._cred_tag(IDS[-1])
    row_at = original.find(tag)
    assert row_at > 0 and original.find(tag, row_at + 1) < 0
    # The cell: payload length, header (size + 3 serial types), tag, value (2 bytes
    # for 300), MAC (16 bytes).
    cell = range(row_at - 6, row_at + len(tag) + 2 + 16)
    work = tmp_path / "work"
    shutil.copytree(keystore, work)
    outcomes: dict[str, int] = {"detected": 0, "unchanged": 0, "SILENT CHANGE": 0}
    silent: list[str] = []
    buf = bytearray(original)
    variants = [(offset, 1 << bit) for offset in cell for bit in range(8)]
    for page in pages:
        start = (page - 1) * page_size
        variants += [(offset, 0xFF) for offset in range(start, start + page_size)]
    for offset, mask in variants:
        buf[offset] ^= mask
        outcome = _outcome(work, bytes(buf))
        buf[offset] ^= mask
        outcomes[outcome] += 1
        if outcome == "SILENT CHANGE":
            silent.append(f"offset {offset} ^ 0x{mask:02x}")
    print(f"\n{len(variants)} damaged variants of {len(pages)} counter page(s): {outcomes}")
    assert not silent, f"counters changed silently: {silent[:10]}"
    # Flips inside the row itself are always noticed (the test can fail: the
    # oracle sees the damage at all).
    assert outcomes["detected"] >= len(cell) * 8 - 8


def test_format_1_counters_are_migrated_with_macs(tmp_path: Path) -> None:
    """The format-1 fixture migrates to format 2: its counter keeps its value,
    gets a MAC, and tampering with it afterwards is detected."""
    directory = tmp_path / "ks"
    directory.mkdir(mode=0o700)
    shutil.copy(DATA / "keystore-v1.db", directory / DB_NAME)
    os.chmod(directory / DB_NAME, 0o600)
    with SqliteKeyStore.open(directory, V1_PASSPHRASE) as store:
        (summary,) = store.list_credentials()
        assert summary.sign_count == 7
        assert store.increment_counter(summary.record.credential_id) == 8
    db = _raw(directory)
    try:
        assert db.execute("SELECT value FROM meta WHERE name = 'format_version'").fetchone() == (
            FORMAT_VERSION,
        )
        rows = db.execute("SELECT cred_tag, value, length(mac) FROM counters ORDER BY 1").fetchall()
        assert [(len(t), v, n) for t, v, n in rows] == [(0, 1, 16), (32, 8, 16)]
        db.execute("UPDATE counters SET value = 7 WHERE value = 8")
    finally:
        db.close()
    with pytest.raises(KeystoreCorrupt, match="signature counter"):
        SqliteKeyStore.open(directory, V1_PASSPHRASE)


def test_reset_erases_the_counter_floor_in_memory_too(keystore: Path) -> None:
    with SqliteKeyStore.open(keystore, PASSPHRASE) as store:
        store.raise_counter_floor(1000)
        assert store.increment_counter(b"after floor") == 1001
        store.reset()
        assert store.counter_floor() == 0
        assert store.increment_counter(b"after reset") == 1
    with SqliteKeyStore.open(keystore, PASSPHRASE) as store:
        assert store.get_counter(b"after reset") == 1
        assert store.get_counter(b"after floor") == 0
