"""keystore.wal: the write-ahead log checked before SQLite reads it (a session 18 review: one
flipped byte in vfido.db-wal made the keystore silently older, and the next open deleted the
log). The logs here are SQLite's own, written by real transactions."""

from __future__ import annotations

import itertools
import os
import random
import shutil
import sqlite3
import struct
from pathlib import Path

import pytest

from tests.keystore.test_keystore import PASS, create, make_record
from vfido.keystore import wal
from vfido.keystore.sqlite_store import SqliteKeyStore
from vfido.keystore.store import KeystoreCorrupt


def _reference_checksum(data: bytes, big_endian: bool, s0: int = 0, s1: int = 0) -> tuple[int, int]:
    """SQLite's walChecksumBytes, word by word, as the file format page gives it."""
    words = struct.unpack(f"{'>' if big_endian else '<'}{len(data) // 4}I", data)
    for x0, x1 in zip(words[0::2], words[1::2], strict=True):
        s0 = (s0 + x0 + s1) & 0xFFFFFFFF
        s1 = (s1 + x1 + s0) & 0xFFFFFFFF
    return s0, s1


@pytest.mark.parametrize("size", [8, 24, 4104, 65544])
@pytest.mark.parametrize("big_endian", [False, True])
def test_the_checksum_is_sqlites(size: int, big_endian: bool) -> None:
    rng = random.Random(size)
    data = rng.randbytes(size)
    start = (rng.getrandbits(32), rng.getrandbits(32))
    assert wal.checksum(data, big_endian, *start) == _reference_checksum(data, big_endian, *start)


@pytest.fixture
def live_log(tmp_path: Path) -> Path:
    """A database in WAL mode with 12 committed transactions still in its log (the files
    copied while the connection is open: what a SIGKILL leaves)."""
    return _log_of(
        tmp_path, "", [("INSERT INTO t VALUES (?, ?)", (n, os.urandom(300))) for n in range(11)]
    )


def _log_of(
    tmp_path: Path, uri_options: str, statements: list[tuple[str, tuple[object, ...]]]
) -> Path:
    """A copy of the database and log after ``statements`` (the connection still open:
    what a SIGKILL leaves)."""
    source = tmp_path / "src"
    source.mkdir()
    sqlite3.connect(source / "x.db").close()
    conn = sqlite3.connect(f"file:{source / 'x.db'}{uri_options}", uri=True, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE t (n INTEGER PRIMARY KEY, v BLOB)")
    for sql, args in statements:
        conn.execute(sql, args)
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("x.db", "x.db-wal"):
        shutil.copyfile(source / name, copy / name)
    conn.close()
    return copy / "x.db"


def _check_wal(database: Path) -> None:
    wal.check_wal(database, database.read_bytes()[:100])


def _log(database: Path) -> Path:
    return database.with_name(database.name + "-wal")


def _frames(database: Path) -> int:
    return (_log(database).stat().st_size - wal.HEADER_SIZE) // (wal.FRAME_HEADER_SIZE + 4096)


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def _frame_offset(index: int) -> int:
    return wal.HEADER_SIZE + index * (wal.FRAME_HEADER_SIZE + 4096)


def test_a_log_sqlite_wrote_reads_whole(live_log: Path) -> None:
    report = wal.read_wal(_log(live_log).read_bytes(), 4096)
    assert report.header_ok and report.frames == _frames(live_log) >= 12
    assert report.valid_frames == report.frames and report.lost_commits == 0
    _check_wal(live_log)


def test_a_damaged_frame_with_acknowledged_commits_after_it_is_refused(live_log: Path) -> None:
    _flip(_log(live_log), _frame_offset(2) + wal.FRAME_HEADER_SIZE + 100)  # in a page
    report = wal.read_wal(_log(live_log).read_bytes(), 4096)
    assert report.valid_frames < 3 and report.lost_commits >= 2
    with pytest.raises(KeystoreCorrupt, match=r"write-ahead log \(x.db-wal\) is damaged"):
        _check_wal(live_log)


def test_a_damaged_header_is_refused(live_log: Path) -> None:
    _flip(_log(live_log), 10)  # the page size
    with pytest.raises(KeystoreCorrupt, match="its header does not check out"):
        _check_wal(live_log)
    _flip(_log(live_log), 10)
    _flip(_log(live_log), 17)  # a salt: the checksum fails
    with pytest.raises(KeystoreCorrupt, match="its header does not check out"):
        _check_wal(live_log)


def test_a_torn_last_transaction_is_a_crash_not_damage(live_log: Path) -> None:
    """A commit the disk did not finish (never acknowledged: synchronous=FULL) leaves one
    transaction unreadable at the end: SQLite's own recovery, not refused."""
    log = _log(live_log)
    frames = _frames(live_log)
    data = log.read_bytes()
    log.write_bytes(data[: _frame_offset(frames - 1) + 500])  # the last frame cut short
    _check_wal(live_log)
    log.write_bytes(data)
    _flip(log, _frame_offset(frames - 1) + wal.FRAME_HEADER_SIZE + 7)  # or garbled
    report = wal.read_wal(log.read_bytes(), 4096)
    assert report.lost_commits == 1
    _check_wal(live_log)


def test_no_log_and_an_empty_log_are_fine(live_log: Path) -> None:
    _log(live_log).write_bytes(b"")
    _check_wal(live_log)
    _log(live_log).unlink()
    _check_wal(live_log)


def test_a_keystore_with_a_damaged_log_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    """The review's case through the keystore: credentials made and counters advanced, the
    files copied as a SIGKILL leaves them (the newest writes only in the log), one byte of
    the log flipped. The open fails in one line and the files stay as they were; the same
    copy undamaged opens with everything."""
    store = create(tmp_path / "live")
    records = [make_record(f"rp{n}.example") for n in range(3)]
    for record in records:
        store.put_credential(record)
        for _ in range(3):
            store.increment_counter(record.credential_id)
    killed = tmp_path / "killed"
    killed.mkdir(mode=0o700)
    for name in ("vfido.db", "vfido.db-wal"):
        shutil.copy2(tmp_path / "live" / name, killed / name)
    store.close()
    intact = tmp_path / "intact"
    shutil.copytree(killed, intact)
    _flip(killed / "vfido.db-wal", _frame_offset(1) + wal.FRAME_HEADER_SIZE + 50)
    before = {p.name: p.read_bytes() for p in killed.iterdir()}
    with pytest.raises(KeystoreCorrupt, match=r"write-ahead log .* is damaged"):
        SqliteKeyStore.open(killed, PASS)
    after = {p.name: p.read_bytes() for p in killed.iterdir() if p.name != "vfido.lock"}
    assert after == before
    with SqliteKeyStore.open(intact, PASS) as restored:
        for record in records:
            assert restored.get_credential(record.credential_id) is not None
            assert restored.get_counter(record.credential_id) == 3


def test_one_frame_transactions_of_one_page_count_one_each(tmp_path: Path) -> None:
    """An assertion's counter update is one frame of the same page, again and again: each is
    its own acknowledged commit (not the padding copies below), so damage before them is."""
    database = _log_of(
        tmp_path,
        "",
        [("INSERT INTO t VALUES (1, ?)", (b"0",))]
        + [("UPDATE t SET v = ? WHERE n = 1", (str(k).encode(),)) for k in range(6)],
    )
    _flip(_log(database), _frame_offset(2) + wal.FRAME_HEADER_SIZE + 100)
    assert wal.read_wal(_log(database).read_bytes(), 4096).lost_commits >= 2
    with pytest.raises(KeystoreCorrupt):
        _check_wal(database)


def test_commits_padded_to_a_sector_count_once(tmp_path: Path) -> None:
    """Without powersafe overwrite (psow=0, or a libsqlite3 built so) each synced commit is
    padded with copies of its commit frame: a torn last transaction is still a crash, not
    two lost commits (a diff review refused such a log)."""
    database = _log_of(
        tmp_path,
        "?psow=0",
        [("INSERT INTO t VALUES (?, ?)", (n, os.urandom(5000))) for n in range(5)],
    )
    data = _log(database).read_bytes()
    frames = _frames(database)
    commits = [i for i in range(frames) if struct.unpack_from(">I", data, _frame_offset(i) + 4)[0]]
    assert any(b == a + 1 for a, b in itertools.pairwise(commits))  # padded
    last_start = max(c for c in commits if c + 1 not in commits and c != commits[-1]) + 1
    _flip(_log(database), _frame_offset(last_start) + wal.FRAME_HEADER_SIZE + 9)
    report = wal.read_wal(_log(database).read_bytes(), 4096)
    assert report.lost_commits == 1
    _check_wal(database)


def _padded_log(tmp_path: Path) -> tuple[bytes, list[int]]:
    """A psow=0 log of six transactions, each a commit frame and one padding copy (the last
    one: frames 23, 24), and the indexes of its commit frames."""
    database = _log_of(
        tmp_path,
        "?psow=0",
        [("INSERT INTO t VALUES (?, ?)", (n, os.urandom(5000))) for n in range(5)],
    )
    data = _log(database).read_bytes()
    commits = [
        i
        for i in range(_frames(database))
        if struct.unpack_from(">I", data, _frame_offset(i) + 4)[0]
    ]
    return data, commits


def _zeroed(data: bytes, start: int, length: int) -> bytes:
    return data[:start] + bytes(length) + data[start + length :]


@pytest.mark.parametrize("torn", ["commit frame", "padding copy", "acknowledged copy's tail"])
def test_a_torn_commit_or_copy_in_a_padded_log_is_a_crash(tmp_path: Path, torn: str) -> None:
    """SQLite syncs in the middle of a commit's last padding copy: what follows the sync
    point reaches the disk with the next transaction, and a crash can leave it stale; a
    torn write can leave the last (unacknowledged) commit frame or its copy half old. None of
    these lost an acknowledged transaction (a second diff review saw each refused)."""
    data, commits = _padded_log(tmp_path)
    last, copy = commits[-2], commits[-1]
    assert copy == last + 1
    page = wal.FRAME_HEADER_SIZE
    if torn == "commit frame":
        data = _zeroed(data, _frame_offset(last) + page + 2048, 2048)
    elif torn == "padding copy":
        data = _zeroed(data, _frame_offset(copy) + page + 2048, 2048)
        start = commits[-3] + 1  # the last transaction's first frame, torn too
        data = _zeroed(data, _frame_offset(start) + page + 100, 8)
    else:
        acknowledged_copy = commits[-3]  # the copy of the transaction before the last
        end = _frame_offset(acknowledged_copy + 1)
        data = _zeroed(data, end - 1000, 1000)
    assert wal.read_wal(data, 4096).lost_commits == 1
