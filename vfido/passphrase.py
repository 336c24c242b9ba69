"""Where the keystore passphrase comes from: environment, a file, or a prompt."""

from __future__ import annotations

import getpass
import os
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
            text = file.read_text(encoding="utf-8")
        except OSError as exc:
            raise PassphraseError(f"cannot read {what} file {file}: {exc.strerror}") from None
        value = text.rstrip("\r\n")
        if not value:
            raise PassphraseError(f"{what} file {file} is empty")
        return value
    from_env = os.environ.get(env)
    if from_env:
        return from_env
    if not sys.stdin.isatty():
        raise PassphraseError(f"no {what}: set {env}, pass {flag} FILE, or run in a terminal")
    first = getpass.getpass(prompt)
    if not first:
        raise PassphraseError(f"empty {what}")
    if confirm and getpass.getpass("Repeat: ") != first:
        raise PassphraseError(f"the {what.split()[-1]}s do not match")
    return first


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
