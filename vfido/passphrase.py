"""Where the keystore passphrase comes from: environment, a file, or a prompt."""

from __future__ import annotations

import getpass
import os
import stat
import sys
from pathlib import Path


class PassphraseError(Exception):
    pass


ENV_VAR = "VFIDO_PASSPHRASE"
NEW_ENV_VAR = "VFIDO_NEW_PASSPHRASE"
#: The flag that names a file for each variable (said when neither is given).
FILE_FLAGS = {ENV_VAR: "--passphrase-file", NEW_ENV_VAR: "--new-passphrase-file"}


def read_secret(
    file: Path | None, *, what: str, env: str, flag: str, prompt: str, confirm: bool = False
) -> str:
    """A secret (``what``: "passphrase", "new PIN"...) from ``file``, else ``$env``, else a
    prompt on the terminal (``confirm``: typed twice). Raises :class:`PassphraseError`."""
    if file is not None:
        try:
            # Opening another user's FIFO would wait for its writer: refused before (by its
            # name), and after (what was opened, should the name have changed meanwhile).
            _refuse_shared(os.stat(file), file, what)
            # Read at most one byte more than a secret may have: /dev/zero or a log named by
            # mistake is refused, not read into memory. A pipe (`<(pass show vfido)`) works.
            with file.open("rb") as f:
                _refuse_shared(os.fstat(f.fileno()), file, what)
                raw = f.read(MAX_SECRET_FILE + 1)
        except OSError as exc:
            raise PassphraseError(f"cannot read {what} file {file}: {exc.strerror}") from None
        if len(raw) > MAX_SECRET_FILE:
            raise PassphraseError(
                f"{what} file {file} is longer than {MAX_SECRET_FILE} bytes: not a {what} file"
            )
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise PassphraseError(f"{what} file {file} is not UTF-8 text") from None
        value = text.rstrip("\r\n")
        if not value:
            raise PassphraseError(f"{what} file {file} is empty")
        return value
    from_env = os.environ.get(env)
    if from_env:
        return _utf8(from_env, f"${env}", what)
    if not sys.stdin.isatty():
        raise PassphraseError(f"no {what}: set {env}, pass {flag} FILE, or run in a terminal")
    first = _utf8(_ask(prompt, what), "what was typed", what)
    if not first:
        raise PassphraseError(f"empty {what}")
    if confirm and _ask("Repeat: ", what) != first:
        raise PassphraseError(f"the {what.split()[-1]}s do not match")
    return first


def _refuse_shared(st: os.stat_result, file: Path, what: str) -> None:
    """A secret in a regular file or a named pipe must be the user's (or root's) and closed
    to others, as the keystore's own files are: one other users can read has given the
    secret away, and one another user owns holds a secret that user chose (a FIFO another
    user made in /tmp feeds whatever its maker writes into it). An unnamed pipe (`<(pass
    show vfido)`, `|`), a terminal or a device is read as it is: nobody else can open it."""
    if stat.S_ISFIFO(st.st_mode):
        if _unnamed_pipe(st):
            return
    elif not stat.S_ISREG(st.st_mode):
        return
    if st.st_uid not in (os.geteuid(), 0):
        raise PassphraseError(f"{what} file {file} is owned by another user; refusing it")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise PassphraseError(
            f"{what} file {file} is accessible by other users (mode {mode:03o}); "
            f"refusing it (chmod 600 it if that is intended)"
        )


def _unnamed_pipe(st: os.stat_result) -> bool:
    """Whether ``st`` is a pipe made by pipe(2) (it lives in the kernel's pipe file system, as
    every such pipe does), not a FIFO with a name in a directory."""
    read, write = os.pipe()
    try:
        return os.fstat(read).st_dev == st.st_dev
    finally:
        os.close(read)
        os.close(write)


def _ask(prompt: str, what: str) -> str:
    """What the user types at ``prompt`` (not echoed). Ctrl-D is "no answer", one line;
    Ctrl-C ends the line the prompt left open before it stops the command."""
    try:
        return getpass.getpass(prompt)
    except EOFError:
        print(file=sys.stderr)
        raise PassphraseError(f"no {what} entered (end of input)") from None
    except UnicodeDecodeError:  # a terminal in another encoding (Latin-1: "é" is one byte)
        print(file=sys.stderr)
        raise PassphraseError(f"the {what} typed is not UTF-8 text") from None
    except KeyboardInterrupt:
        print(file=sys.stderr)
        raise


#: The longest secret file :func:`read_secret` reads (a passphrase, a PIN: a line of text).
MAX_SECRET_FILE = 64 * 1024


def _utf8(value: str, source: str, what: str) -> str:
    """``value`` if it is text that UTF-8 can carry (the KDF and CTAP take UTF-8 bytes); an
    environment variable or terminal that is not UTF-8 gives undecodable bytes as surrogates."""
    from vfido.safetext import is_utf8

    if not is_utf8(value):
        raise PassphraseError(f"the {what} in {source} is not UTF-8 text")
    return value


def get_passphrase(file: Path | None, *, confirm: bool = False, env: str = ENV_VAR) -> str:
    """The keystore passphrase from ``file``, else ``$env``, else a prompt on the terminal."""
    return read_secret(
        file,
        what="new passphrase" if env == NEW_ENV_VAR else "passphrase",
        env=env,
        flag=FILE_FLAGS.get(env, "--passphrase-file"),
        prompt="New keystore passphrase: " if confirm else "Keystore passphrase: ",
        confirm=confirm,
    )
