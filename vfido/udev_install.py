"""``vfido install-udev``: install vfido's ``udev/`` files, the checkout's or the wheel's (as root).

* ``udev/70-vfido.rules`` -> ``/etc/udev/rules.d/`` (``/dev/uhid`` for group ``vfido``; each
  key's hidraw node: owned by the user who started the key, uaccess, ID_SECURITY_TOKEN);
* ``udev/modules-load.d/vfido.conf`` -> ``/etc/modules-load.d/`` (load ``uhid`` at boot);
* ``udev/vfido.service`` -> ``/etc/systemd/user/`` (``systemctl --user enable --now vfido``).
  When ``vfido`` is not on the default ``PATH`` (a checkout's ``.venv``), ``ExecStart`` is
  rewritten to run this interpreter: ``<python> -m vfido run ...``.

Then, best effort, each reported on its own line: create the system group ``vfido``, add
``--user`` (default ``$SUDO_USER``) to it, ``modprobe uhid``, ``udevadm control
--reload-rules`` and ``udevadm trigger`` for the misc and hidraw subsystems.

A file already there that differs from the one installed (edited by hand, or an older
vfido's) is kept beside it as ``NAME.vfido-old`` (``.vfido-old.1``... when that is taken),
a name udev, modules-load.d and systemd do not read, and the line says so.

``--prefix DIR`` installs the files under DIR and changes nothing else (tests, packaging);
``--dry-run`` prints what would be done.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

#: The files to install: udev/ of the checkout (through the symlink vfido/udev), or of the
#: wheel (package data), so an installed vfido installs them too.
UDEV_DIR = Path(__file__).resolve().parent / "udev"
GROUP = "vfido"
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"

#: (file in udev/, destination relative to the prefix)
FILES: tuple[tuple[str, str], ...] = (
    ("70-vfido.rules", "etc/udev/rules.d/70-vfido.rules"),
    ("modules-load.d/vfido.conf", "etc/modules-load.d/vfido.conf"),
    ("vfido.service", "etc/systemd/user/vfido.service"),
)


class InstallError(Exception):
    """The files could not be installed (one line)."""


def unit_text(text: str, python: str = sys.executable) -> str:
    """The user unit, with ExecStart pointing at this interpreter if ``vfido`` is not on the
    default PATH of the systemd user manager."""
    if shutil.which("vfido", path=DEFAULT_PATH) is not None:
        return text
    return text.replace("ExecStart=/usr/bin/env vfido ", f"ExecStart={python} -m vfido ")


def system_actions(user: str | None) -> list[list[str]]:
    """The commands run after the files are installed."""
    actions: list[list[str]] = []
    try:
        grp.getgrnam(GROUP)
    except KeyError:
        actions.append(["groupadd", "--system", GROUP])
    if user:
        actions.append(["usermod", "-aG", GROUP, user])
    actions += [
        ["modprobe", "uhid"],
        ["udevadm", "control", "--reload-rules"],
        [
            "udevadm",
            "trigger",
            "--action=change",
            "--subsystem-match=misc",
            "--subsystem-match=hidraw",
        ],
    ]
    return actions


def _run(command: list[str]) -> str | None:
    """Run ``command``; None if it worked, else why not (one line)."""
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    except FileNotFoundError:
        return f"{command[0]} is not installed"
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines()
        return lines[-1] if lines else f"exit status {result.returncode}"
    return None


def _replace_file(target: Path, text: str) -> None:
    """Write ``target`` (0644) whole or not at all, through a temporary file of a new name
    (mkstemp: O_EXCL, so never through a file or symlink planted in its place; as root, a
    fixed name like ``.70-vfido.rules.tmp`` in a directory another user can write would let
    that user point the write at any file)."""
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            os.fchmod(f.fileno(), 0o644)
        os.replace(name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)
        raise


#: How an old file is opened to be read: never through a symlink, never blocking on a FIFO.
_READ_IN_PLACE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def _differs(target: Path, text: str) -> bool | None:
    """Whether what is at ``target`` is not the file ``text`` (None: nothing is there).
    Anything but a regular file differs; a regular file is read without following a
    symlink or blocking on a FIFO swapped in meanwhile (as root, in a directory another
    user might write)."""
    try:
        if not stat.S_ISREG(os.lstat(target).st_mode):
            return True  # a symlink, a FIFO, a directory...
        fd = os.open(target, _READ_IN_PLACE)
    except FileNotFoundError:
        return None
    except OSError:
        return True
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            return True
        want = text.encode("utf-8")
        return f.read(len(want) + 1) != want


def _keep_old(target: Path, text: str, *, dry_run: bool) -> Path | None:
    """If anything but the file ``text`` is at ``target``, the name it is kept under, unless
    ``dry_run``: a hard link to it (the same inode: its mode and owner, never what a symlink
    points to), or where the file system or the kernel's hard-link protection refuses one,
    a copy of the link or of the regular file with its mode. None: nothing to keep."""
    if not _differs(target, text):
        return None
    for n in range(1000):
        kept = target.with_name(f"{target.name}.vfido-old" + (f".{n}" if n else ""))
        if dry_run:
            if not os.path.lexists(kept):
                return kept
            continue
        try:
            os.link(target, kept, follow_symlinks=False)  # fails if the name is taken
            return kept
        except FileExistsError:
            continue
        except OSError as exc:
            try:
                _copy_old(target, kept)
            except FileExistsError:
                continue
            except OSError as copy_exc:
                raise InstallError(
                    f"cannot keep the old {target} as {kept.name}: "
                    f"{copy_exc.strerror or exc.strerror}"
                ) from None
            return kept
    raise InstallError(f"cannot keep the old {target}: too many .vfido-old copies")


def _copy_old(target: Path, kept: Path) -> None:
    """``kept`` made anew (O_EXCL) as a copy of the symlink or regular file ``target``."""
    mode = os.lstat(target).st_mode
    if stat.S_ISLNK(mode):
        os.symlink(os.readlink(target), kept)
        return
    if not stat.S_ISREG(mode):
        raise OSError(0, "it is neither a file nor a symlink")
    fd = os.open(target, _READ_IN_PLACE)
    with os.fdopen(fd, "rb") as source:
        data = source.read()
    with open(kept, "xb") as copy:
        os.fchmod(copy.fileno(), stat.S_IMODE(mode))
        copy.write(data)


def install(
    *,
    prefix: Path | None = None,
    dry_run: bool = False,
    user: str | None = None,
    source: Path = UDEV_DIR,
    out: Callable[[str], None] = print,
) -> int:
    """Install; returns the exit status (0: files installed, warnings printed)."""
    root = prefix or Path("/")
    system = prefix is None
    if system and not dry_run and os.geteuid() != 0:
        raise InstallError(
            "install-udev writes to /etc: run it as root (`sudo vfido install-udev`), "
            "or add --dry-run to see what it would do"
        )
    missing = [name for name, _ in FILES if not (source / name).is_file()]
    if missing:
        raise InstallError(
            f"cannot find {', '.join(missing)} in {source}: this installation of vfido is "
            "incomplete (reinstall it)"
        )
    if user is None and system:
        user = os.environ.get("SUDO_USER") or None
    if user:
        try:
            pwd.getpwnam(user)
        except KeyError:
            raise InstallError(f"no user {user!r}") from None
    verb = "would install" if dry_run else "installed"
    for name, destination in FILES:
        target = root / destination
        text = (source / name).read_text(encoding="utf-8")
        if name == "vfido.service":
            text = unit_text(text)
        try:
            kept = _keep_old(target, text, dry_run=dry_run)
            if not dry_run:
                target.parent.mkdir(parents=True, exist_ok=True)
                _replace_file(target, text)
        except OSError as exc:
            raise InstallError(f"cannot write {target}: {exc.strerror}") from None
        if kept is None:
            out(f"{verb} {target}")
        else:
            keeps = "would keep" if dry_run else "kept"
            out(f"{verb} {target} ({keeps} what was there before as {kept})")
    warnings = 0
    for command in system_actions(user):
        shown = " ".join(command)
        if not system:
            out(f"skipped (--prefix): {shown}")
        elif dry_run:
            out(f"would run: {shown}")
        else:
            problem = _run(command)
            if problem is None:
                out(f"ran: {shown}")
            else:
                warnings += 1
                out(f"warning: `{shown}` failed: {problem}")
    if system and not dry_run:
        if user:
            out(f"next: {user} logs out and in again (group {GROUP}), then runs `vfido doctor`")
        else:
            out(f"next: add users to group {GROUP} (usermod -aG {GROUP} USER), then `vfido doctor`")
        out(
            "to start the key at login: write the passphrase to ~/.config/vfido/passphrase "
            "(mode 600), then `systemctl --user daemon-reload && "
            "systemctl --user enable --now vfido`"
        )
    if warnings:
        out(f"{warnings} step(s) failed: `vfido doctor` shows what is still missing")
    return 0
