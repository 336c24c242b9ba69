"""`vfido init | info | credentials | passphrase | reset`: the keystore, with the key stopped
(`info` asks a running key when there is one)."""

from __future__ import annotations

import argparse
import datetime
from pathlib import Path

from vfido.authenticator.behaviours import b64url
from vfido.cli.common import (
    CliError,
    Subparsers,
    add_keystore_args,
    add_running_key_args,
    keystore_dir,
    open_store,
    running_key,
)

#: Width of the label column of `vfido info`.
_LABEL = 33


def cmd_init(args: argparse.Namespace) -> int:
    from vfido import backup
    from vfido.keystore.sqlite_store import SqliteKeyStore
    from vfido.passphrase import get_passphrase

    directory = keystore_dir(args)
    if SqliteKeyStore.exists(directory):
        raise CliError(f"a keystore already exists in {directory}")
    try:
        aaguid = bytes.fromhex(args.aaguid.replace("-", "")) if args.aaguid else None
    except ValueError:
        aaguid = b""
    if aaguid is not None and len(aaguid) != 16:
        raise CliError("--aaguid must be 16 bytes (32 hex digits)")
    passphrase = get_passphrase(args.passphrase_file, confirm=True)
    identity = backup.backup_eligible_identity(aaguid) if args.backup_eligible else None
    with SqliteKeyStore.create(directory, passphrase, aaguid=aaguid, identity=identity) as store:
        print(f"created keystore {directory} (AAGUID {store.identity().aaguid.hex()})")
    return 0


def _algorithms(value: list[dict[str, int]]) -> str:
    from vfido.authenticator.cose import ALGORITHM_NAMES

    return ", ".join(ALGORITHM_NAMES.get(a["alg"], str(a["alg"])) for a in value)


def cmd_info(args: argparse.Namespace) -> int:
    from vfido.authenticator.config import Config, mldsa_status
    from vfido.authenticator.responses import GET_INFO_MEMBERS
    from vfido.key import get_info

    path = running_key(args)
    if path is not None:
        return _info_of_running_key(path)
    with open_store(args) as store:
        identity = store.identity()
        where = "(ephemeral)" if args.ephemeral else keystore_dir(args)
        print(f"{'keystore:':<{_LABEL}} {where}")
        print(f"{'aaguid:':<{_LABEL}} {identity.aaguid.hex()}")
        print(f"{'credentials:':<{_LABEL}} {store.count_credentials()} discoverable")
        info = get_info(store, Config())
        shown = (1, 2, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 20, 22)  # aaguid printed above
        for key in shown:
            name = GET_INFO_MEMBERS[key]
            if key in info:
                value = _algorithms(info[key]) if key == 10 else info[key]
                print(f"{name + ':':<{_LABEL}} {value}")
        print(f"{'ML-DSA (post-quantum):':<{_LABEL}} {mldsa_status(Config())}")
    return 0


def _info_of_running_key(path: Path) -> int:
    """`vfido info` through a running key's control socket (its keystore is in use)."""
    from vfido.control import ControlClient

    with ControlClient(path) as client:
        status = client.call("status")
        answer = client.call("metadata")
    statement = answer["statement"]
    print(f"{'key:':<{_LABEL}} {status.get('name', path.stem)} (running, pid {status.get('pid')})")
    print(f"{'keystore:':<{_LABEL}} {status.get('keystore')}")
    print(f"{'aaguid:':<{_LABEL}} {answer['aaguid']}")
    print(f"{'credentials:':<{_LABEL}} {answer['credentials']} discoverable")
    if statement is None:  # a key that answers U2F only has no getInfo
        print(f"{'versions:':<{_LABEL}} ['U2F_V2'] (U2F only: no authenticatorGetInfo)")
        return 0
    for name, value in statement["authenticatorGetInfo"].items():
        if name == "aaguid":
            continue
        print(f"{name + ':':<{_LABEL}} {_algorithms(value) if name == 'algorithms' else value}")
    return 0


def cmd_credentials_list(args: argparse.Namespace) -> int:
    from vfido.authenticator.cose import ALGORITHM_NAMES
    from vfido.safetext import shorten, visible

    width = max(len(name) for name in ALGORITHM_NAMES.values())  # the alg column
    with open_store(args) as store:
        summaries = store.list_credentials()
        if not summaries:
            print("no discoverable credentials")
            return 0
        print(
            f"{'id':<24} {'rp':<28} {'user':<24} {'alg':<{width}} {'prot':<4} "
            f"{'counter':>7}  created"
        )
        for s in summaries:
            r = s.record
            created = datetime.datetime.fromtimestamp(r.created, datetime.UTC)
            # A cut is shown, and an RP ID keeps its end, which says whose it is:
            # "login.microsoftonline.com.evil.example" cut at its end read as the trusted
            # site (a security review).
            user = shorten(visible(r.user_name or r.user_display_name or b64url(r.user_id)), 24)
            rp = shorten(visible(r.rp_id), 28, keep_end=True)
            print(
                f"{b64url(r.credential_id)[:22] + '..':<24} {rp:<28} {user:<24} "
                f"{ALGORITHM_NAMES.get(r.algorithm, str(r.algorithm)):<{width}} "
                f"{r.cred_protect:<4} {s.sign_count:>7}  {created:%Y-%m-%d %H:%M:%S}Z"
            )
    return 0


def cmd_credentials_delete(args: argparse.Namespace) -> int:
    from vfido.credentials import CredentialLookupError, find_credential_id

    with open_store(args) as store:
        try:
            credential_id = find_credential_id(store, args.id)
        except CredentialLookupError as exc:
            raise CliError(f"{exc} (`vfido credentials list`)") from None
        store.delete_credential(credential_id)
        print(f"deleted {b64url(credential_id)}")
    return 0


def cmd_passphrase_change(args: argparse.Namespace) -> int:
    from vfido.passphrase import NEW_ENV_VAR, get_passphrase

    with open_store(args) as store:
        new = get_passphrase(args.new_passphrase_file, confirm=True, env=NEW_ENV_VAR)
        store.change_passphrase(new)
    print("passphrase changed")
    return 0


def cmd_reset(args: argparse.Namespace) -> int:
    if not args.yes:
        raise CliError("reset erases every credential and PIN: confirm with --yes")
    with open_store(args) as store:
        store.reset()
    print("keystore reset: every credential is gone and old credential IDs are void")
    return 0


# --- the parsers ----------------------------------------------------------------------------


def register_init(sub: Subparsers) -> None:
    p = sub.add_parser("init", help="create a keystore")
    add_keystore_args(p)
    p.add_argument("--aaguid", help="AAGUID as 32 hex digits, dashes allowed (default: random)")
    p.add_argument(
        "--backup-eligible",
        action="store_true",
        help="credentials may be exported with `vfido export` (WebAuthn BE flag = 1; "
        "fixed now for every credential of this keystore)",
    )
    p.set_defaults(func=cmd_init)


def register_info(sub: Subparsers) -> None:
    p = sub.add_parser("info", help="show the keystore and what the key advertises")
    add_keystore_args(p, ephemeral=True)
    add_running_key_args(p)
    p.set_defaults(func=cmd_info)


def register_credentials(sub: Subparsers) -> None:
    p = sub.add_parser("credentials", help="list or delete discoverable credentials")
    csub = p.add_subparsers(dest="credentials_command", required=True, metavar="ACTION")
    q = csub.add_parser("list", help="list discoverable credentials")
    add_keystore_args(q)
    q.set_defaults(func=cmd_credentials_list)
    q = csub.add_parser("delete", help="delete a credential by (a prefix of) its id")
    add_keystore_args(q)
    q.add_argument("id", help="base64url credential id, or a unique prefix")
    q.set_defaults(func=cmd_credentials_delete)


def register_passphrase(sub: Subparsers) -> None:
    p = sub.add_parser("passphrase", help="change the keystore passphrase")
    psub = p.add_subparsers(dest="passphrase_command", required=True, metavar="ACTION")
    q = psub.add_parser("change", help="re-wrap the keystore under a new passphrase")
    add_keystore_args(q)
    q.add_argument(
        "--new-passphrase-file",
        type=Path,
        metavar="FILE",
        help="read the new passphrase from FILE (else $VFIDO_NEW_PASSPHRASE, else a prompt)",
    )
    q.set_defaults(func=cmd_passphrase_change)


def register_reset(sub: Subparsers) -> None:
    p = sub.add_parser("reset", help="erase every credential (like authenticatorReset)")
    add_keystore_args(p)
    p.add_argument("--yes", action="store_true", help="confirm")
    p.set_defaults(func=cmd_reset)
