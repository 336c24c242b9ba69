"""The files of a keystore directory and the checks on them: private (0700 directory, 0600
files, owned by the user), created safely, made durable with fsync."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from vfido.keystore.sqlite_errors import map_os_error
from vfido.keystore.store import KeystoreError, KeystoreUnavailable

DB_NAME = "vfido.db"
LOCK_NAME = "vfido.lock"
DIR_MODE = 0o700
FILE_MODE = 0o600


def check_private(path: Path, *, directory: bool) -> None:
    """Refuse files/directories other users can access or that we do not own."""
    try:
        st = path.stat() if directory else path.lstat()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise map_os_error(exc, f"inspect {path}") from None
    if directory and not stat.S_ISDIR(st.st_mode):
        raise KeystoreError(f"{path} is not a directory")
    if not directory and not stat.S_ISREG(st.st_mode):
        raise KeystoreError(f"{path} is not a regular file; refusing to use it")
    if st.st_uid != os.geteuid():
        raise KeystoreError(f"{path} is owned by another user; refusing to use it")
    perms = stat.S_IMODE(st.st_mode)
    want = "700" if directory else "600"
    if perms & 0o077:
        raise KeystoreError(
            f"{path} is accessible by other users (mode {perms:03o}); "
            f"refusing to use it (chmod {want} it if that is intended)"
        )
    need = 0o700 if directory else 0o600
    if perms & need != need:
        # A keystore is written by every request that counts: a read-only file let a key
        # start and then fail every registration with an opaque CTAP2_ERR_OTHER.
        raise KeystoreUnavailable(
            f"{path} is not {'usable' if directory else 'readable and writable'} by its owner "
            f"(mode {perms:03o}): "
            f"chmod {want} it"
        )


def keystore_files(directory: Path) -> list[Path]:
    db = directory / DB_NAME
    return [
        directory / LOCK_NAME,
        db,
        db.with_name(DB_NAME + "-wal"),
        db.with_name(DB_NAME + "-shm"),
        db.with_name(DB_NAME + "-journal"),
    ]


def prepare_new_directory(directory: Path) -> None:
    """Make ``directory`` (mode 0700) or accept an existing private (or empty) one."""
    try:
        if not directory.exists():
            existing = next(p for p in directory.parents if p.exists())
            if not existing.is_dir():  # mkdir would say only "File exists"
                raise KeystoreUnavailable(
                    f"cannot create keystore directory {directory}: {existing} is not a directory"
                )
            # The mode is applied at creation (umask can only narrow it), to the missing
            # parents too: mkdir -p would make them 0777 minus the umask, and another user
            # could then move the keystore aside (XDG: "create it with permission 0700").
            for parent in reversed(directory.parents):
                if not parent.exists():
                    parent.mkdir(mode=DIR_MODE, exist_ok=True)
            directory.mkdir(mode=DIR_MODE)
            return
        st = directory.stat()
        if (
            stat.S_ISDIR(st.st_mode)
            and st.st_uid == os.geteuid()
            and stat.S_IMODE(st.st_mode) & 0o077
            and not any(directory.iterdir())
        ):
            # An empty directory of ours: tighten it before anything goes in.
            directory.chmod(DIR_MODE)
    except OSError as exc:
        raise map_os_error(exc, f"create keystore directory {directory}") from None
    check_private(directory, directory=True)


def fsync_path(path: Path, *, directory: bool) -> None:
    flags = os.O_RDONLY | os.O_CLOEXEC | (os.O_DIRECTORY if directory else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def link_into_place(source: Path, target: Path) -> None:
    """``target`` becomes ``source``'s file, never replacing a file there (FileExistsError):
    a hard link (``source`` stays), or on a file system without them a rename after checking
    that ``target`` is free (a rename would replace a file that appeared meanwhile)."""
    try:
        os.link(source, target)
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK):
            raise
        if target.exists() or target.is_symlink():
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(target)) from None
        os.rename(source, target)
