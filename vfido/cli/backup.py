"""`vfido export | import`: an encrypted backup bundle of the keystore (the service stopped).
The bundle's format and the export/import themselves are :mod:`vfido.backup`'s."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from vfido.cli.common import (
    CliError,
    Subparsers,
    add_keystore_args,
    keystore_dir,
    open_store,
    read_file,
)

#: Where the bundle passphrase comes from when no file is given.
BUNDLE_ENV = "VFIDO_BUNDLE_PASSPHRASE"


def _bundle_passphrase(file: Path | None, *, confirm: bool) -> str:
    from vfido.passphrase import read_secret

    return read_secret(
        file,
        what="bundle passphrase",
        env=BUNDLE_ENV,
        flag="--bundle-passphrase-file",
        prompt="Bundle passphrase: ",
        confirm=confirm,
    )


def _cli_errors(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def wrapper(args: argparse.Namespace) -> int:
        from vfido.backup import BackupError

        try:
            return func(args)
        except BackupError as exc:
            raise CliError(str(exc)) from None

    return wrapper


@_cli_errors
def cmd_export(args: argparse.Namespace) -> int:
    from vfido.backup import check_exportable, check_new_file, export_keystore

    path = Path(args.file)
    check_new_file(path)  # before any passphrase is asked
    with open_store(args) as store:
        check_exportable(store, args.force)
        passphrase = _bundle_passphrase(args.bundle_passphrase_file, confirm=True)
        bundle = export_keystore(store, path, passphrase, force=args.force)
    flags = "BE=1, BS=1 from now on" if bundle.backup_eligible else "not backup-eligible: BE=0"
    print(
        f"exported {len(bundle.credentials)} discoverable credential(s), the device keys and "
        f"the PIN/settings to {path} ({flags})"
    )
    return 0


@_cli_errors
def cmd_import(args: argparse.Namespace) -> int:
    from vfido.backup import MAX_BUNDLE, bundle_header, import_bundle, open_bundle
    from vfido.keystore.sqlite_store import SqliteKeyStore
    from vfido.passphrase import get_passphrase

    path = Path(args.file)
    data = read_file(path, "bundle", MAX_BUNDLE)
    bundle_header(data)
    directory = keystore_dir(args)
    if SqliteKeyStore.exists(directory):
        raise CliError(f"a keystore already exists in {directory}: refusing to overwrite it")
    bundle = open_bundle(data, _bundle_passphrase(args.bundle_passphrase_file, confirm=False))
    passphrase = get_passphrase(args.passphrase_file, confirm=True)
    with import_bundle(bundle, directory, passphrase) as store:
        aaguid = store.identity().aaguid.hex()
    print(
        f"restored keystore {directory} (AAGUID {aaguid}, {len(bundle.credentials)} "
        "discoverable credential(s)); stop using the old copy: two keys with one identity "
        "make relying parties see counter regressions"
    )
    return 0


def register(sub: Subparsers) -> None:
    """`vfido export FILE` and `vfido import FILE`."""

    def bundle_file(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--bundle-passphrase-file",
            type=Path,
            metavar="FILE",
            help=f"read the bundle passphrase from FILE (else ${BUNDLE_ENV}, else a prompt)",
        )

    p = sub.add_parser(
        "export", help="write an encrypted backup bundle of the keystore (service stopped)"
    )
    add_keystore_args(p)
    p.add_argument("file", metavar="FILE", help="the bundle to create (never overwritten)")
    bundle_file(p)
    p.add_argument(
        "--force",
        action="store_true",
        help="export a keystore that was not created backup-eligible (its flags stay BE=0)",
    )
    p.set_defaults(func=cmd_export)
    p = sub.add_parser("import", help="restore a backup bundle into a new keystore")
    add_keystore_args(p)
    p.add_argument("file", metavar="FILE", help="the bundle written by `vfido export`")
    bundle_file(p)
    p.set_defaults(func=cmd_import)
