"""Exclusive per-directory lock (``fcntl.flock`` on a lock file, and on the database)."""

from __future__ import annotations

import errno
import fcntl
import os
import threading
from pathlib import Path

from vfido.keystore.store import KeystoreError, KeystoreLocked, KeystoreUnavailable

FILE_MODE = 0o600

#: The files (device, inode) this process holds with :meth:`DirectoryLock.hold_too`.
_HELD: set[tuple[int, int]] = set()
_HELD_LOCK = threading.Lock()
#: Descriptors of a held file that a race had opened again: never closed (see hold_too).
_KEPT_OPEN: list[int] = []


def _after_fork_in_child() -> None:
    # A fork while another thread held the registry's lock would leave the child's copy
    # locked for good (a review). The child inherits the registry with its descriptors.
    global _HELD_LOCK
    _HELD_LOCK = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


class DirectoryLock:
    """Holds ``flock(LOCK_EX)`` on ``path`` until :meth:`release`.

    The file is created with mode 0600 (never wider: ``os.open`` applies the
    mode at creation) and not followed if it is a symlink.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise KeystoreError(f"lock file {path} is a symbolic link; refusing") from None
            raise KeystoreUnavailable(
                f"cannot open lock file {path}: {os.strerror(exc.errno or 0)}"
            ) from None
        _flock(fd, path, f"keystore {path.parent} is in use by another process")
        self._fd: int | None = fd
        self._also: list[tuple[int, tuple[int, int]]] = []  # hold_too's (fd, file)

    @property
    def fd(self) -> int:
        if self._fd is None:
            raise ValueError("lock released")
        return self._fd

    def hold_too(self, path: Path) -> None:
        """Also hold ``flock(LOCK_EX)`` on ``path`` (the database) until :meth:`release`.

        The lock file alone is one ``rm`` away from letting a second process in: a user who
        takes ``vfido.lock`` for a stale lock file and removes it would have two keys sign
        with the same counters (a review saw counters repeat). The database cannot be
        removed without removing the keystore.

        ``flock`` does not meet SQLite's own POSIX locks on that file, but closing any
        descriptor of a file drops the process's POSIX locks on it. So a database this
        process holds already is refused before a descriptor of it is opened (a second
        open in one process, whose failed attempt closed one, left the first connection
        without its SQLite lock: a review), and :meth:`release` comes after the SQLite
        connection is closed. On NFS, where Linux makes ``flock`` a POSIX lock, this
        second lock is weaker (SQLite's own unlocks open holes in it); SQLite's WAL does
        not work there anyway."""
        in_this_process = (
            f"keystore {path.parent} is open in this process already (its lock file "
            f"{self.path.name} was removed or replaced meanwhile)"
        )
        try:
            identity = _file_identity(os.stat(path, follow_symlinks=False))
        except OSError as exc:
            raise KeystoreUnavailable(
                f"cannot open {path}: {os.strerror(exc.errno or 0)}"
            ) from None
        with _HELD_LOCK:
            if identity in _HELD:
                raise KeystoreLocked(in_this_process)
            try:
                # Read-write: an exclusive flock that NFS turns into a POSIX lock needs it.
                fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
            except OSError as exc:
                raise KeystoreUnavailable(
                    f"cannot open {path}: {os.strerror(exc.errno or 0)}"
                ) from None
            opened = _file_identity(os.fstat(fd))
            if opened != identity and opened in _HELD:
                # Replaced between the stat and the open by a file this process holds:
                # closing this descriptor would drop that file's SQLite locks. Kept open.
                _KEPT_OPEN.append(fd)
                raise KeystoreLocked(in_this_process)
            _flock(
                fd,
                path,
                f"keystore {path.parent} is in use by another process (whose lock file "
                f"{self.path.name} was removed or replaced meanwhile)",
            )
            _HELD.add(opened)
            self._also.append((fd, opened))

    def release(self) -> None:
        fd, self._fd = self._fd, None
        also, self._also = self._also, []
        for held, identity in also:
            with _HELD_LOCK:
                _HELD.discard(identity)
                os.close(held)
        if fd is not None:
            # Closing the descriptor drops the flock.
            os.close(fd)


def _flock(fd: int, path: Path, in_use: str) -> None:
    """``flock(LOCK_EX)`` on ``fd`` (``path``'s), without waiting; closes ``fd`` on failure:
    :class:`KeystoreLocked` (``in_use``) if another holds it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise KeystoreLocked(in_use) from None
    except OSError as exc:
        os.close(fd)
        raise KeystoreUnavailable(f"cannot lock {path}: {os.strerror(exc.errno or 0)}") from None


def _file_identity(st: os.stat_result) -> tuple[int, int]:
    return (st.st_dev, st.st_ino)
