"""`vfido metadata`: the key's FIDO MDS3 metadata statement (built by :mod:`vfido.metadata`)."""

from __future__ import annotations

import argparse
import json
import sys

from vfido.cli.common import (
    ATTESTATIONS,
    CliError,
    Subparsers,
    add_keystore_args,
    add_running_key_args,
    open_store,
    running_key,
)
from vfido.safetext import visible


def cmd_metadata(args: argparse.Namespace) -> int:
    from vfido.authenticator.config import Config
    from vfido.control import ControlClient
    from vfido.key import get_info
    from vfido.metadata import metadata_statement

    path = running_key(args)
    if path is not None:  # the running key says it all, with its own configuration
        with ControlClient(path) as client:
            status = client.call("status")
            statement = client.call("metadata")["statement"]
        if statement is None:
            raise CliError(
                "the running key answers U2F only: vfido writes metadata statements of FIDO2 "
                "keys only (protocolFamily fido2)"
            )
        # stdout is the statement alone; which key it describes goes to stderr, as `info`
        # prints it: the running key is not necessarily the keystore the user thinks of.
        print(
            f"vfido: the running key {visible(str(status.get('name', path.stem)))} "
            f"(pid {status.get('pid')}, keystore {visible(str(status.get('keystore')))}); "
            "--keystore DIR describes a keystore instead",
            file=sys.stderr,
        )
        print(json.dumps(statement, indent=2))
        return 0
    with open_store(args) as store:
        config = Config(attestation=args.attestation)
        statement = metadata_statement(store, config, get_info(store, config))
    print(json.dumps(statement, indent=2))
    return 0


def register(sub: Subparsers) -> None:
    """`vfido metadata`."""
    p = sub.add_parser(
        "metadata",
        help="print a FIDO MDS3 metadata statement (AAGUID, attestation root, algorithms)",
    )
    add_keystore_args(p, ephemeral=True)
    p.add_argument(
        "--attestation",
        choices=ATTESTATIONS,
        default="packed",
        help="the attestation `vfido run` uses (default: packed, i.e. basic_full; a running "
        "key says its own)",
    )
    add_running_key_args(p)
    p.set_defaults(func=cmd_metadata)
