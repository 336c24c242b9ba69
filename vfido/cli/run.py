"""`vfido run`: serve the key until interrupted."""

from __future__ import annotations

import argparse
import dataclasses
import errno
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vfido.cli.common import (
    ATTESTATIONS,
    CliError,
    DefaultsHelpFormatter,
    Subparsers,
    add_keystore_args,
    key_name,
    keystore_dir,
    open_store,
    peer_port,
    persona_aaguid,
    port,
    seconds,
)
from vfido.cli.personas import PERSONA_HELP
from vfido.presence.modes import RUN_MODES, presence_help
from vfido.transport_choice import KINDS as TRANSPORT_KINDS
from vfido.transport_choice import UDP_INSECURE_FLAG
from vfido.transports.ports import PEER_PORT as UDP_PEER_PORT
from vfido.transports.ports import PORT as UDP_PORT

if TYPE_CHECKING:
    from vfido.authenticator.behaviours import Behaviours
    from vfido.authenticator.config import Config
    from vfido.keystore.sqlite_store import SqliteKeyStore
    from vfido.presence import PresenceBroker

log = logging.getLogger("vfido")


def presence_broker(args: argparse.Namespace) -> PresenceBroker:
    """The presence broker for ``--presence`` (:data:`vfido.presence.modes.MODES`); the
    control socket can always answer too."""
    from vfido.presence import PresenceModeError, broker_for

    try:
        return broker_for(args.presence, args.presence_delay, args.presence_timeout)
    except PresenceModeError as exc:
        raise CliError(str(exc)) from None


def _linter(args: argparse.Namespace) -> Any:
    """The relying-party lint of ``--lint`` (None without: it costs nothing when off)."""
    if not args.lint and args.lint_origin is None:
        return None
    from vfido.lint import Linter

    try:
        return Linter(origin=args.lint_origin)
    except ValueError as exc:
        raise CliError(f"--lint-origin: {exc}") from None


def seeded_store(seeded: Any, args: argparse.Namespace) -> SqliteKeyStore:
    """The ephemeral keystore of a ``--deterministic`` key (its identity from the seed; the
    AAGUID ``--persona``'s, if it has one)."""
    from vfido.keystore.sqlite_store import SqliteKeyStore
    from vfido.reproducible import build

    aaguid = persona_aaguid(args)
    return build(seeded, lambda: SqliteKeyStore.ephemeral(aaguid=aaguid))


def config(args: argparse.Namespace) -> Config:
    """The authenticator's configuration from `vfido run`'s flags."""
    from vfido.authenticator.config import Config

    if args.enterprise_rp_id and args.enterprise_attestation != 1:
        raise CliError("--enterprise-rp-id is for --enterprise-attestation 1 (only those RPs)")
    if getattr(args, "persona", None):
        from vfido.cli.personas import run_config

        return run_config(args)  # refuses --enterprise-attestation (the persona fixes it)
    if args.enterprise_attestation == 1 and not args.enterprise_rp_id:
        raise CliError(  # mode 1 with no RP: enterprise attestation for nobody
            "--enterprise-attestation 1 is for the RPs --enterprise-rp-id names: name one "
            "(or use 2: any RP)"
        )
    try:
        return Config(
            attestation=args.attestation,
            constant_zero_counter=args.zero_counter,
            presence_timeout=args.presence_timeout,
            builtin_uv=args.uv,
            enterprise_attestation=args.enterprise_attestation,
            enterprise_rp_ids=tuple(args.enterprise_rp_id),
            max_resident_credentials=args.max_resident_credentials,
            mldsa=args.mldsa,
            ctap21_pre=args.ctap21_pre,
            fingerprint=args.fingerprint,
        )
    except ValueError as exc:
        raise CliError(str(exc)) from None


def behaviours(args: argparse.Namespace) -> Behaviours:
    """The key's scripted misbehaviour from `vfido run`'s ``--behaviour`` flags."""
    from vfido.authenticator.behaviours import Behaviours

    try:
        return Behaviours.from_assignments(args.behaviour, builtin_uv=args.uv or args.fingerprint)
    except ValueError as exc:
        raise CliError(f"--behaviour: {exc}") from None


def _credential_limit(text: str) -> int:
    """``--max-resident-credentials``: 1 to 2^32 - 1 (getInfo carries it as a CBOR uint)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 1 <= value <= 0xFFFFFFFF:
        raise argparse.ArgumentTypeError(f"{value} is not from 1 to 4294967295")
    return value


def _rp_id(text: str) -> str:
    """``--enterprise-rp-id``: an RP ID (a domain): never empty, printable, no spaces."""
    from vfido.authenticator.provisioning import is_rp_id

    if not text:
        raise argparse.ArgumentTypeError("an RP ID cannot be empty")
    if not is_rp_id(text):
        # Compared with the request's RP ID as it is: a URL or a host:port never matches.
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an RP ID (a domain, e.g. corp.example: no scheme, port or path)"
        )
    return text


def _serial(text: str) -> str:
    """``--serial``: checked when given, whatever the transport (it names the control socket
    of a unix key, and is shown in lines and lists)."""
    from vfido.transports.uhid import validate_serial

    try:
        return validate_serial(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def cmd_run(args: argparse.Namespace) -> int:
    from vfido.control import socket_path
    from vfido.service import KeyStoppedServing, TransportOptions, control_name, run
    from vfido.testing import faults
    from vfido.transport_choice import TransportChoiceError, choose_transport
    from vfido.transports.uhid import UhidUnavailableError, uhid_unavailable
    from vfido.transports.unix import UnixTransportError

    if args.presence_timeout <= 0:
        raise CliError(  # a key that refuses every request at once is no key
            "--presence-timeout must be more than 0 seconds (up to 86400)"
        )
    seeded = None
    if args.deterministic is not None:  # a reproducible key, for tests only (#19)
        from vfido import reproducible

        try:
            seeded = reproducible.environment(
                args.deterministic, persistent=bool(args.keystore or args.passphrase_file)
            )
        except ValueError as exc:
            raise CliError(f"--deterministic: {exc}") from None
        args.ephemeral = True
    try:
        choice = choose_transport(
            args.transport,
            persistent=not args.ephemeral,
            udp_insecure=args.udp_insecure_any_local_user,
            uhid_unavailable=uhid_unavailable,
        )
    except TransportChoiceError as exc:
        raise CliError(str(exc)) from None
    if args.unix_socket and choice.kind != "unix":
        raise CliError("--unix-socket needs --transport unix")
    udp_flags = [
        flag
        for flag, given in (
            ("--udp-port", args.udp_port is not None),
            ("--udp-peer-port", args.udp_peer_port is not None),
            ("--udp-insecure-any-local-user", args.udp_insecure_any_local_user),
        )
        if given
    ]
    if udp_flags and choice.kind != "udp":  # said, not ignored: the user meant UDP
        raise CliError(
            f"{', '.join(udp_flags)}: UDP options, and this key serves {choice.kind}: "
            "add --transport udp, or leave them out"
        )
    args.udp_port = UDP_PORT if args.udp_port is None else args.udp_port
    args.udp_peer_port = UDP_PEER_PORT if args.udp_peer_port is None else args.udp_peer_port
    if choice.kind == "udp" and args.udp_port != 0 and args.udp_port == args.udp_peer_port:
        # The key would read its own answers as requests, in a loop, at full speed.
        raise CliError(f"--udp-port and --udp-peer-port are both {args.udp_port}")
    presence = presence_broker(args)
    key_config = config(args)
    key_behaviours = behaviours(args)
    store = faults.wrap(open_store(args) if seeded is None else seeded_store(seeded, args))
    options = TransportOptions(
        kind=choice.kind,
        udp_port=args.udp_port,
        udp_peer_port=args.udp_peer_port,
        serial=args.serial,
        unix_socket=args.unix_socket,
    )
    if args.control_socket:
        control_path = Path(args.control_socket)
    else:
        name = args.name or control_name(options, store)
        try:
            control_path = socket_path(name)
        except ValueError as exc:  # --name is checked by argparse: the default from --serial
            store.close()
            raise CliError(f"the key's name {name!r} (from --serial): {exc}; give --name") from None
    if options.kind == "unix" and options.unix_socket is None:  # next to the control socket
        options = dataclasses.replace(
            options, unix_socket=str(control_path.with_suffix(".ctaphid"))
        )
    if options.unix_socket is not None and os.path.abspath(options.unix_socket) == os.path.abspath(
        control_path
    ):
        store.close()
        raise CliError(f"--unix-socket and the control socket are both {control_path}")
    info = {
        "name": control_path.stem,
        "keystore": "(ephemeral)" if args.ephemeral else str(keystore_dir(args)),
        "presence_timeout": args.presence_timeout,
    }
    if seeded is not None:
        info["deterministic"] = reproducible.WARNING
    recorder = None
    if args.trace:
        from vfido.trace.recorder import TraceRecorder

        try:
            recorder = TraceRecorder(Path(args.trace))
        except OSError as exc:
            store.close()
            raise CliError(f"--trace {args.trace}: {exc.strerror or exc}") from None
    try:
        run(
            store,
            presence,
            key_config,
            options,
            control_path=control_path,
            info=info,
            trace=recorder,
            behaviours=key_behaviours,
            seeded=seeded,
            linter=_linter(args),
            # printed once the key is served: a key that fails to start says only why
            notices=[line for line in (choice.notice, choice.warning) if line],
        )
    except (UhidUnavailableError, UnixTransportError, KeyStoppedServing) as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE or choice.kind != "udp":
            raise
        raise CliError(
            f"UDP port {args.udp_port} is already in use (another `vfido run`?): choose "
            "another with --udp-port PORT (and connect clients to it)"
        ) from None
    finally:
        if recorder is not None:
            recorder.close()
    return 0


def register(sub: Subparsers) -> None:
    p = sub.add_parser("run", help="run the key", formatter_class=DefaultsHelpFormatter)
    add_keystore_args(p, ephemeral=True)
    p.add_argument(
        "--transport",
        choices=TRANSPORT_KINDS,
        # "%(default).0s" prints nothing: it keeps the formatter from adding "(default: None)"
        help="uhid: a kernel HID device; unix: a Unix socket only your user can connect to; "
        f"udp: every local user can use the key (a persistent keystore needs {UDP_INSECURE_FLAG}) "
        "(default: uhid where /dev/uhid is usable, else udp for --ephemeral)%(default).0s",
    )
    p.add_argument(
        UDP_INSECURE_FLAG,
        action="store_true",
        help="serve a persistent keystore over UDP although every local user can then use "
        "the key, sign with its credentials and reset it",
    )
    p.add_argument(
        "--unix-socket",
        metavar="PATH",
        help="with --transport unix: the socket (default: next to the control socket, "
        "$XDG_RUNTIME_DIR/vfido/NAME.ctaphid)",
    )
    p.add_argument(
        "--presence",
        choices=RUN_MODES,
        default="auto",
        help=presence_help(),
    )
    p.add_argument(
        "--presence-delay",
        type=seconds,
        default=0.0,
        metavar="SECONDS",
        help="with --presence auto or deny-uv: wait this long before approving",
    )
    p.add_argument(
        "--presence-timeout",
        type=seconds,
        default=30.0,
        metavar="SECONDS",
        help="an unanswered request is refused after this long",
    )
    p.add_argument(
        "--name",
        type=key_name,
        help="name of the control socket (default: the serial for uhid and unix, udp-PORT for "
        "udp, udp-any-PID with --udp-port 0)",
    )
    p.add_argument(
        "--control-socket", metavar="PATH", help="control socket path (overrides --name)"
    )
    p.add_argument("--udp-port", type=port, help=f"UDP port the key binds (default: {UDP_PORT})")
    p.add_argument(
        "--udp-peer-port", type=peer_port, help=f"UDP port replies go to (default: {UDP_PEER_PORT})"
    )
    p.add_argument(
        "--serial",
        type=_serial,
        help="USB serial number (printable ASCII) for uhid (default: from the AAGUID)",
    )
    p.add_argument(
        "--attestation",
        choices=ATTESTATIONS,
        default="packed",
        help="packed: batch certificate under the keystore's root; self; none",
    )
    p.add_argument("--zero-counter", action="store_true", help="always report signature counter 0")
    p.add_argument(
        "--uv",
        action="store_true",
        help="built-in user verification: the user's approval verifies them (no PIN needed "
        "for userVerification 'required'); --presence deny-uv makes it fail",
    )
    p.add_argument(
        "--mldsa",
        action="store_true",
        help="offer post-quantum ML-DSA-44/-65 credentials (listed in getInfo); off by default "
        "because a Firefox that cannot parse them there treats the key as U2F-only",
    )
    p.add_argument(
        "--fingerprint",
        action="store_true",
        help="a simulated fingerprint sensor (bio enrollment; implies --uv): user "
        "verification is a touch by an enrolled finger, chosen with `vfido ctl finger`",
    )
    p.add_argument(
        "--ctap21-pre",
        action="store_true",
        help="CTAP 2.1-PRE compatibility for older Windows and libfido2 clients: "
        "FIDO_2_1_PRE in versions, credentialMgmtPreview (command 0x41)",
    )
    p.add_argument(
        "--lint",
        action="store_true",
        help="check what relying parties send (reused challenges, PII in user.id...): "
        "`vfido ctl lint` shows the findings",
    )
    p.add_argument(
        "--lint-origin",
        metavar="ORIGIN",
        help="with --lint (implied): the origin the RP serves, to check its RP ID against",
    )
    p.add_argument(
        "--deterministic",
        metavar="SEED",
        help="FOR TESTS ONLY: every random value and the clock follow from SEED, so the same "
        "requests get byte-identical answers (golden files); implies --ephemeral",
    )
    p.add_argument(
        "--enterprise-attestation",
        type=int,
        choices=[0, 1, 2],
        default=0,
        help="offer enterprise attestation (1: only for --enterprise-rp-id, 2: any RP); "
        "a platform enables it with authenticatorConfig",
    )
    p.add_argument(
        "--enterprise-rp-id",
        type=_rp_id,
        action="append",
        default=[],
        metavar="RP_ID",
        help="an RP ID allowed enterprise attestation mode 1 (repeatable)",
    )
    p.add_argument(
        "--max-resident-credentials",
        type=_credential_limit,
        default=100_000,
        metavar="N",
        help="discoverable credentials the key accepts",
    )
    p.add_argument("--persona", metavar="NAME", help=PERSONA_HELP)
    p.add_argument(
        "--trace",
        metavar="FILE",
        help="append every CTAPHID packet and decoded CTAP request/response to FILE as JSON "
        "lines (secrets redacted; file 0600); read it with `vfido trace show FILE`",
    )
    p.add_argument(
        "--behaviour",
        action="append",
        default=[],
        metavar="NAME[=VALUE]",
        help="scripted misbehaviour for testing relying parties (repeatable; "
        "`vfido ctl behaviour list --all` lists them; change at run time with `vfido ctl`)",
    )
    p.set_defaults(func=cmd_run)
