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


def _from_file(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PassphraseError(f"cannot read passphrase file {path}: {exc.strerror}") from None
    value = text.rstrip("\r\n")
    if not value:
        raise PassphraseError(f"passphrase file {path} is empty")
    return value


def _prompt(prompt: str, confirm: bool, env: str = ENV_VAR) -> str:
    if not sys.stdin.isatty():
        what = "new passphrase" if env == NEW_ENV_VAR else "passphrase"
        flag = FILE_FLAGS.get(env, "--passphrase-file")
        raise PassphraseError(f"no {what}: set {env}, pass {flag} FILE, or run in a terminal")
    first = getpass.getpass(prompt)
    if not first:
        raise PassphraseError("empty passphrase")
    if confirm and getpass.getpass("Repeat: ") != first:
        raise PassphraseError("the passphrases do not match")
    return first


def get_passphrase(file: Path | None, *, confirm: bool = False, env: str = ENV_VAR) -> str:
    """The passphrase from ``file``, else ``$env``, else a prompt on the terminal."""
    if file is not None:
        return _from_file(file)
    value = os.environ.get(env)
    if value:
        return value
    label = "New keystore passphrase: " if confirm else "Keystore passphrase: "
    return _prompt(label, confirm, env)
