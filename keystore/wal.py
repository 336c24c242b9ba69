"""The write-ahead log (``vfido.db-wal``) checked before SQLite reads it.

SQLite reads the log up to its first frame that does not check out (a salt of another
generation of the log, or a checksum that fails) and takes that for the end of the log, as
after a power cut in the middle of a commit; on close it folds what it read into the database
and deletes the log. So damage to frames that were committed and acknowledged (bit rot, a
torn write the disk did not report, an edit) reads as an older keystore, silently: newer
credentials gone, counters back at earlier values. :func:`check_wal` tells that from a
crash before SQLite sees the log.

The rule. With ``synchronous=FULL`` a transaction's frames are on the disk before the next
transaction writes any, so a crash leaves at most one transaction's frames unreadable: the
last one, never acknowledged. Each transaction ends with one *commit frame* (its header
gives the database size after the commit). The log is damaged when two or more
transactions of the current generation (its salts) have their commit frame at or after its
first unreadable frame (a commit padded with copies of its commit frame counts once): at
least one acknowledged transaction cannot be read. A log whose header does not check
out, or names another page size than the database's, is damaged too once it holds a
frame: SQLite would ignore all of it. What this cannot tell from a crash: the last
acknowledged transaction damaged (one commit frame after the break), and a log deleted or
cut short anywhere (what follows the cut is not in the file to be counted; SECURITY.md,
"Known limitations").

Format (https://www.sqlite.org/fileformat2.html#walformat): a 32-byte header (magic, version,
page size, checkpoint sequence, salt-1, salt-2, checksum-1, checksum-2), then frames of a
24-byte header (page number, database size after commit or 0, salt-1, salt-2, checksum-1,
checksum-2) and one page. The checksum runs over 32-bit words (big-endian if the magic's
lowest bit is set, else little-endian) two at a time, ``s0 += x0 + s1; s1 += x1 + s0`` modulo
2**32, from the header's first 24 bytes on and, cumulatively, over each frame's first 8 header
bytes and its page.
"""

from __future__ import annotations

import functools
import operator
import struct
from dataclasses import dataclass
from pathlib import Path

from vfido.keystore.sqlite_errors import map_os_error
from vfido.keystore.store import KeystoreCorrupt

MAGIC_LE = 0x377F0682
MAGIC_BE = 0x377F0683
HEADER_SIZE = 32
FRAME_HEADER_SIZE = 24
_MASK = 0xFFFFFFFF


@dataclass(frozen=True)
class WalReport:
    """What :func:`read_wal` found: ``valid_frames`` SQLite would read (up to and with the
    last commit frame before the first frame that does not check out), ``frames`` in the
    file, and ``lost_commits``: transactions of the current generation whose commit frame
    (or run of copies of it) comes after that break."""

    frames: int
    valid_frames: int
    lost_commits: int
    header_ok: bool


@functools.cache
def _coefficients(words: int) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, int, int, int]]:
    """The checksum over ``words`` 32-bit words as a linear map: (s0, s1) after them is
    ``M**n (s0, s1) + (sum(c0[i] * x[i]), sum(c1[i] * x[i]))`` modulo 2**32, with n = words / 2
    steps of ``s0' = s0 + x0 + s1, s1' = s1 + x1 + s0'``, i.e. ``M = [[1, 1], [1, 2]]`` and
    the pair (x0, x1) entering as ``(x0, x0 + x1)``. Returns (c0, c1, M**n as a, b, c, d)."""
    steps = words // 2
    c0 = [0] * words
    c1 = [0] * words
    # Walk backwards: p = M**k for the pair k steps before the end.
    a, b, c, d = 1, 0, 0, 1
    for step in range(steps - 1, -1, -1):
        # x0 enters as (1, 1), x1 as (0, 1); both then go through M**k.
        c0[2 * step] = (a + b) & _MASK
        c1[2 * step] = (c + d) & _MASK
        c0[2 * step + 1] = b
        c1[2 * step + 1] = d
        a, b, c, d = (a + c) & _MASK, (b + d) & _MASK, (a + 2 * c) & _MASK, (b + 2 * d) & _MASK
    return tuple(c0), tuple(c1), (a, b, c, d)


def checksum(data: bytes, big_endian: bool, s0: int = 0, s1: int = 0) -> tuple[int, int]:
    """SQLite's WAL checksum of ``data`` (a multiple of 8 bytes), continuing from (s0, s1)."""
    words = len(data) // 4
    values = struct.unpack(f"{'>' if big_endian else '<'}{words}I", data)
    c0, c1, (a, b, c, d) = _coefficients(words)
    return (
        (a * s0 + b * s1 + sum(map(operator.mul, c0, values))) & _MASK,
        (c * s0 + d * s1 + sum(map(operator.mul, c1, values))) & _MASK,
    )


def read_wal(data: bytes, page_size: int) -> WalReport:
    """Walk a log's frames as SQLite's recovery does (see the module's docstring)."""
    frame_size = FRAME_HEADER_SIZE + page_size
    frames = max(0, (len(data) - HEADER_SIZE) // frame_size)
    if len(data) < HEADER_SIZE:
        return WalReport(frames, 0, 0, header_ok=True)  # a log being created: no frame
    magic, _, header_page_size, _, salt1, salt2, sum1, sum2 = struct.unpack_from(">8I", data)
    big_endian = magic == MAGIC_BE
    if magic not in (MAGIC_LE, MAGIC_BE) or header_page_size != page_size:
        return WalReport(frames, 0, 0, header_ok=False)
    s0, s1 = checksum(data[:24], big_endian)
    if (s0, s1) != (sum1, sum2):
        return WalReport(frames, 0, 0, header_ok=False)
    valid = 0
    index = 0
    while index < frames:
        offset = HEADER_SIZE + index * frame_size
        _, commit, f_salt1, f_salt2, f_sum1, f_sum2 = struct.unpack_from(">6I", data, offset)
        if (f_salt1, f_salt2) != (salt1, salt2):
            break
        page = data[offset + FRAME_HEADER_SIZE : offset + frame_size]
        s0, s1 = checksum(data[offset : offset + 8] + page, big_endian, s0, s1)
        if (s0, s1) != (f_sum1, f_sum2):
            break
        index += 1
        if commit:
            valid = index
    # Transactions, not commit frames: where the disk's sectors are not safe to overwrite
    # (psow=0, or a build without SQLITE_POWERSAFE_OVERWRITE), a synced commit is padded to
    # a sector boundary with copies of its commit frame (a review found pairs of them), and
    # the sync falls inside the last copy: a crash can leave that copy, or the commit frame
    # of the last transaction, torn (a second review). See _is_copy.
    lost = 0
    for later in range(index, frames):
        offset = HEADER_SIZE + later * frame_size
        _, commit, f_salt1, f_salt2 = struct.unpack_from(">4I", data, offset)
        if commit == 0 or (f_salt1, f_salt2) != (salt1, salt2):
            continue
        if not _is_copy(data, later, frame_size, big_endian, (salt1, salt2, sum1, sum2)):
            lost += 1
    return WalReport(frames, valid, lost, header_ok=True)


def _is_copy(
    data: bytes, index: int, frame_size: int, big_endian: bool, header: tuple[int, int, int, int]
) -> bool:
    """Whether commit frame ``index`` is a padding copy of the commit frame right before it.

    A copy repeats that frame's page number, database size, salts and page; only its
    checksum differs, continuing the chain from the frame it copies. So it is a copy when the
    first 8 header bytes are the same and either the pages are the same, or this frame's
    checksum is what a copy of the one before would carry (this one torn), or that one's
    checksum is what this frame's content gives after the frame before it (that one torn).
    Two transactions of one frame each in a row (two counter updates of one page) pass none
    of these: their pages differ, and so do the checksums over them."""
    if index == 0:
        return False
    salt1, salt2, sum1, sum2 = header

    def frame(k: int) -> tuple[bytes, bytes, tuple[int, int], tuple[int, int]]:
        offset = HEADER_SIZE + k * frame_size
        _, _, f_salt1, f_salt2, f_sum1, f_sum2 = struct.unpack_from(">6I", data, offset)
        return (
            data[offset : offset + 8],
            data[offset + FRAME_HEADER_SIZE : offset + frame_size],
            (f_salt1, f_salt2),
            (f_sum1, f_sum2),
        )

    head, page, _, stored = frame(index)
    before_head, before_page, before_salts, before_stored = frame(index - 1)
    if before_salts != (salt1, salt2) or head != before_head:
        return False  # page number and database size (a commit frame's) differ
    if page == before_page:
        return True
    if checksum(before_head + before_page, big_endian, *before_stored) == stored:
        return True  # this one torn: its checksum is a copy's
    chain = (sum1, sum2) if index == 1 else frame(index - 2)[3]
    return checksum(head + page, big_endian, *chain) == before_stored  # that one torn


def check_wal(database: Path, header: bytes) -> None:
    """Refuse (:class:`KeystoreCorrupt`) a keystore whose log lost acknowledged transactions,
    before SQLite reads it (and deletes it). ``database``: ``vfido.db``; ``header``: its
    first 100 bytes, already checked to be a SQLite database's (its page size is there)."""
    log = database.with_name(database.name + "-wal")
    raw_size = int.from_bytes(header[16:18], "big")
    try:
        with open(log, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return  # no log: a cleanly closed keystore
    except OSError as exc:
        raise map_os_error(exc, "read the keystore's write-ahead log") from None
    page_size = 65536 if raw_size == 1 else raw_size
    report = read_wal(data, page_size)
    if not report.header_ok and report.frames:
        raise KeystoreCorrupt(
            f"the keystore's write-ahead log ({log.name}) is damaged: its header does not "
            f"check out, so its {report.frames} frames would be ignored; refusing to open it "
            "(nothing was written)"
        )
    if report.lost_commits >= 2:
        raise KeystoreCorrupt(
            f"the keystore's write-ahead log ({log.name}) is damaged: {report.lost_commits} "
            f"committed transactions after its frame {report.valid_frames} cannot be read; "
            "refusing to open it (nothing was written)"
        )
