"""SQLite and OS errors of the SQLite keystore mapped onto the keystore's error types
(:mod:`vfido.keystore.store`): one line for the user, never a secret."""

from __future__ import annotations

import errno
import os
import sqlite3

from vfido.keystore.store import (
    KeystoreCorrupt,
    KeystoreError,
    KeystoreFull,
    KeystoreLocked,
    KeystoreUnavailable,
)

# SQLite primary result codes (the low byte of extended codes).
_SQLITE_PERM = 3
_SQLITE_BUSY = 5
_SQLITE_LOCKED = 6
_SQLITE_READONLY = 8
_SQLITE_IOERR = 10
_SQLITE_CORRUPT = 11
_SQLITE_FULL = 13
_SQLITE_CANTOPEN = 14
_SQLITE_AUTH = 23
_SQLITE_NOTADB = 26


def map_sqlite_error(exc: sqlite3.Error, action: str) -> KeystoreError:
    """Translate a sqlite3 exception into the keystore hierarchy (no secrets)."""
    code: int | None = getattr(exc, "sqlite_errorcode", None)
    name: str = getattr(exc, "sqlite_errorname", None) or type(exc).__name__
    primary = code & 0xFF if code is not None else None
    text = str(exc).lower()
    if primary == _SQLITE_FULL or "database or disk is full" in text:
        return KeystoreFull(f"cannot {action}: no space left for the keystore ({name})")
    if primary in (_SQLITE_NOTADB, _SQLITE_CORRUPT) or "not a database" in text:
        return KeystoreCorrupt(f"cannot {action}: the keystore file is damaged ({name})")
    if primary in (_SQLITE_BUSY, _SQLITE_LOCKED):
        return KeystoreLocked(f"cannot {action}: the keystore database is busy ({name})")
    if primary in (_SQLITE_READONLY, _SQLITE_IOERR, _SQLITE_CANTOPEN, _SQLITE_PERM, _SQLITE_AUTH):
        return KeystoreUnavailable(f"cannot {action}: the keystore is not writable ({name})")
    return KeystoreUnavailable(f"cannot {action}: database error ({name})")


def map_os_error(exc: OSError, action: str) -> KeystoreError:
    reason = os.strerror(exc.errno) if exc.errno else type(exc).__name__
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return KeystoreFull(f"cannot {action}: {reason}")
    return KeystoreUnavailable(f"cannot {action}: {reason}")
