"""The `vfido` command line."""

from __future__ import annotations

import argparse
import base64
import dataclasses
import datetime
import errno
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from vfido import __version__, backup, ctl, logsink, metadata, pin_cli, trace, ui
from vfido.broker import PresenceBroker
from vfido.control import ControlClient, ControlError, find_key, socket_path
from vfido.keystore.sqlite_store import SqliteKeyStore
from vfido.keystore.store import KeystoreError
from vfido.passphrase import NEW_ENV_VAR, PassphraseError, get_passphrase
from vfido.safetext import VisibleFormatter, visible
from vfido.service import keystore_default_dir
from vfido.transport_choice import KINDS as TRANSPORT_KINDS
from vfido.transport_choice import UDP_INSECURE_FLAG

log = logging.getLogger("vfido")

# As authenticator.cose.ALGORITHM_NAMES, which this module does not import at start-up
# (importing it runs the ML-DSA self-test); tests/test_cli.py checks they agree.
ALG_NAMES = {-7: "ES256", -8: "EdDSA", -35: "ES384", -36: "ES512", -257: "RS256"}
ALG_NAMES.update({-37: "PS256", -47: "ES256K", -9: "ESP256", -51: "ESP384", -52: "ESP512"})
ALG_NAMES.update({-19: "Ed25519", -48: "ML-DSA-44", -49: "ML-DSA-65", -50: "ML-DSA-87"})
#: Width of the alg column of `credentials list` (the longest name, ML-DSA-65).
_ALG_WIDTH = max(len(name) for name in ALG_NAMES.values())


class CliError(Exception):
    """A user-facing error: printed as one line, exit status 1."""


class _Parser(argparse.ArgumentParser):
    """Usage errors (a bad flag value...) in one line, pointing at ``--help``."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _port(text: str) -> int:
    """A UDP port flag: 0 (any free port) to 65535."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port (0 to 65535)")
    return value


def _seconds(text: str) -> float:
    """A non-negative, finite number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text} is not a number of seconds >= 0")
    return value


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# --- keystore helpers -------------------------------------------------------


def _keystore_dir(args: argparse.Namespace) -> Path:
    return Path(args.keystore) if args.keystore else keystore_default_dir()


def _open_store(args: argparse.Namespace) -> SqliteKeyStore:
    if getattr(args, "ephemeral", False):
        if args.keystore or args.passphrase_file:
            given = "--keystore" if args.keystore else "--passphrase-file"
            raise CliError(f"--ephemeral and {given} exclude each other (which keystore?)")
        from vfido.personas.cli import ephemeral_aaguid

        return SqliteKeyStore.ephemeral(aaguid=ephemeral_aaguid(args))  # --persona's
    directory = _keystore_dir(args)
    if not SqliteKeyStore.exists(directory):
        raise CliError(f"no keystore in {directory}: run `vfido init` first (or use --ephemeral)")
    return SqliteKeyStore.open(directory, get_passphrase(args.passphrase_file))


def add_running_key_args(p: argparse.ArgumentParser) -> None:
    """``--name``/``--socket``: ask a running key (`info`, `metadata`)."""
    p.add_argument(
        "--name",
        help="ask this running key, through its control socket (default: the only running "
        "key when no --keystore/--ephemeral is given, else the keystore)",
    )
    p.add_argument("--socket", metavar="PATH", help="ask the running key with this control socket")


def running_key(args: argparse.Namespace) -> Path | None:
    """The control socket `info`/`metadata` ask: the key named by ``--name``/``--socket``,
    else the only running key unless a keystore is named (None: open the keystore)."""
    from vfido.control import running_keys

    if args.name or args.socket:
        return find_key(args.name, Path(args.socket) if args.socket else None)
    if args.keystore or args.ephemeral or args.passphrase_file:
        return None
    keys = running_keys()
    if len(keys) > 1:
        names = ", ".join(k.stem for k in keys)
        raise CliError(f"{len(keys)} keys are running ({names}): choose one with --name")
    return keys[0] if keys else None


# --- commands ---------------------------------------------------------------


def cmd_init(args: argparse.Namespace) -> int:
    directory = _keystore_dir(args)
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


PRESENCE_MODES = ("auto", "deny", "deny-uv", "prompt", "notify", "manual")


def _presence(args: argparse.Namespace) -> PresenceBroker:
    """The presence broker for ``--presence``; the control socket can always answer too."""
    from vfido.broker import AutoFrontEnd, DenyFrontEnd, FrontEnd
    from vfido.prompt import TerminalPrompt, terminal_available

    mode = args.presence
    front_ends: list[FrontEnd] = []
    if mode in ("auto", "deny-uv"):
        front_ends.append(AutoFrontEnd(args.presence_delay))
    elif mode == "deny":
        front_ends.append(DenyFrontEnd())
    elif mode == "prompt":
        if not terminal_available():
            raise CliError(
                "--presence prompt needs a terminal in the foreground: use --presence notify "
                "(desktop) or --presence manual (`vfido approve` / `vfido deny`)"
            )
        front_ends.append(TerminalPrompt())
    elif mode == "notify":
        from vfido.desktop import DesktopNotifier

        fallback = TerminalPrompt() if terminal_available() else None
        notifier = DesktopNotifier(fallback=fallback)
        if not notifier.available():
            where = "on the terminal" if fallback else "with `vfido approve` / `vfido deny`"
            log.warning("no desktop notification service on the session bus: asking %s", where)
        front_ends.append(notifier)
    return PresenceBroker(front_ends, mode=mode, uv_fails=mode == "deny-uv")


def _config(args: argparse.Namespace) -> object:
    from vfido.authenticator.config import Config

    if getattr(args, "persona", None):
        from vfido.personas.cli import PersonaError, run_config

        try:
            return run_config(args)
        except PersonaError as exc:
            raise CliError(str(exc)) from None
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


def cmd_run(args: argparse.Namespace) -> int:
    from vfido.service import TransportOptions, control_name, run
    from vfido.transport_choice import TransportChoiceError, choose_transport
    from vfido.transports.uhid import UhidUnavailableError, uhid_unavailable
    from vfido.transports.unix import UnixTransportError

    if args.presence_timeout <= 0:
        raise CliError("--presence-timeout must be positive")
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
    from vfido import faults
    from vfido.authenticator.behaviours import Behaviours

    presence = _presence(args)
    config = _config(args)
    try:
        behaviours = Behaviours.from_assignments(
            args.behaviour, builtin_uv=args.uv or args.fingerprint
        )
    except ValueError as exc:
        raise CliError(f"--behaviour: {exc}") from None
    store = faults.wrap(_open_store(args))
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
        try:
            control_path = socket_path(args.name or control_name(options, store))
        except ValueError as exc:
            store.close()
            raise CliError(f"--name: {exc}") from None
    if options.kind == "unix" and options.unix_socket is None:  # next to the control socket
        options = dataclasses.replace(
            options, unix_socket=str(control_path.with_suffix(".ctaphid"))
        )
    info = {
        "name": control_path.stem,
        "keystore": "(ephemeral)" if args.ephemeral else str(_keystore_dir(args)),
        "presence_timeout": args.presence_timeout,
    }
    recorder = None
    if args.trace:
        from vfido.trace import TraceRecorder

        try:
            recorder = TraceRecorder(Path(args.trace))
        except OSError as exc:
            store.close()
            raise CliError(f"--trace {args.trace}: {exc.strerror or exc}") from None
    try:
        run(
            store,
            presence,
            config,  # type: ignore[arg-type]
            options,
            control_path=control_path,
            info=info,
            trace=recorder,
            behaviours=behaviours,
            # printed once the key is served: a key that fails to start says only why
            notices=[line for line in (choice.notice, choice.warning) if line],
        )
    except (UhidUnavailableError, UnixTransportError) as exc:
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


def _control_target(args: argparse.Namespace, prefer_pending: bool = False) -> Path:
    return find_key(
        args.name,
        Path(args.socket) if args.socket else None,
        prefer_pending=prefer_pending,
    )


def _describe_pending(item: dict[str, Any]) -> str:
    question = visible(str(item.get("question")))
    return f"request {item.get('id')}: {question} ({item.get('remaining')} s left)"


def cmd_status(args: argparse.Namespace) -> int:
    path = _control_target(args)
    with ControlClient(path) as client:
        answer = client.call("status")
    if args.json:
        print(json.dumps(answer, indent=2, sort_keys=True))
        return 0
    print(f"key:           {answer.get('name', path.stem)} (pid {answer.get('pid')})")
    print(f"control:       {path}")
    if answer.get("transport") == "uhid":
        print(f"transport:     uhid, {answer.get('hidraw') or 'no hidraw node yet'}")
        print(f"serial:        {answer.get('serial')}")
    elif answer.get("transport") == "unix":
        print(f"transport:     unix {answer.get('unix_socket')}")
    else:
        udp = answer.get("udp") or {}
        print(f"transport:     udp {udp.get('host')}:{udp.get('port')} -> {udp.get('peer_port')}")
    print(f"keystore:      {answer.get('keystore')}")
    print(f"presence:      {answer.get('presence')} (timeout {answer.get('presence_timeout')} s)")
    pending = answer.get("pending") or []
    if not pending:
        print("pending:       none")
    for item in pending:
        print(f"pending:       {_describe_pending(item)}")
    return 0


def _cmd_answer(args: argparse.Namespace, granted: bool) -> int:
    path = _control_target(args, prefer_pending=True)
    wait = args.wait or 0.0
    if not 0 <= wait <= 600:
        raise CliError("--wait must be between 0 and 600 seconds")
    request: dict[str, Any] = {"wait": wait}
    if args.id is not None:
        request["id"] = args.id
    with ControlClient(path) as client:
        try:
            answer = client.call("approve" if granted else "deny", timeout=wait + 10, **request)
        except ControlError as exc:
            hint = "" if wait else " (use --wait SECONDS to wait for one)"
            text = str(exc)
            raise CliError(text + (hint if text.startswith("no request") else "")) from None
    item = answer.get("request") or {}
    verb = "approved" if granted else "denied"
    print(f"{verb} request {item.get('id')}: {visible(str(item.get('question')))}")
    return 0


def cmd_approve(args: argparse.Namespace) -> int:
    return _cmd_answer(args, True)


def cmd_deny(args: argparse.Namespace) -> int:
    return _cmd_answer(args, False)


def cmd_doctor(args: argparse.Namespace) -> int:
    from vfido.doctor import format_check, run_checks

    checks = run_checks(name=args.name)
    for check in checks:
        print(format_check(check))
    failed = sum(1 for c in checks if c.status == "FAIL")
    print(f"{failed} check(s) failed" if failed else "all checks passed")
    return 1 if failed else 0


def cmd_install_udev(args: argparse.Namespace) -> int:
    from vfido.udev_install import InstallError, install

    try:
        return install(
            prefix=Path(args.prefix) if args.prefix else None,
            dry_run=args.dry_run,
            user=args.user,
        )
    except InstallError as exc:
        raise CliError(str(exc)) from None


def cmd_info(args: argparse.Namespace) -> int:
    import cbor2

    from vfido.authenticator.config import Config, mldsa_status
    from vfido.authenticator.device import Authenticator
    from vfido.authenticator.env import NullContext
    from vfido.authenticator.responses import GET_INFO_MEMBERS
    from vfido.presence import DenyPresence

    path = running_key(args)
    if path is not None:
        return _info_of_running_key(path)
    with _open_store(args) as store:
        identity = store.identity()
        where = "(ephemeral)" if args.ephemeral else _keystore_dir(args)
        print(f"{'keystore:':<33} {where}")
        print(f"{'aaguid:':<33} {identity.aaguid.hex()}")
        print(f"{'credentials:':<33} {store.count_credentials()} discoverable")
        response = Authenticator(store, DenyPresence(), Config()).handle_cbor(
            b"\x04", NullContext()
        )
        info = cbor2.loads(response[1:])
        shown = (1, 2, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 20, 22)  # aaguid printed above
        for key in shown:
            name = GET_INFO_MEMBERS[key]
            if key in info:
                value = info[key]
                if key == 10:
                    value = ", ".join(ALG_NAMES.get(a["alg"], str(a["alg"])) for a in value)
                print(f"{name + ':':<33} {value}")
        print(f"{'ML-DSA (post-quantum):':<33} {mldsa_status(Config())}")
    return 0


def _info_of_running_key(path: Path) -> int:
    """`vfido info` through a running key's control socket (its keystore is in use)."""
    with ControlClient(path) as client:
        status = client.call("status")
        answer = client.call("metadata")
    info = answer["statement"]["authenticatorGetInfo"]
    print(f"{'key:':<33} {status.get('name', path.stem)} (running, pid {status.get('pid')})")
    print(f"{'keystore:':<33} {status.get('keystore')}")
    print(f"{'aaguid:':<33} {str(answer['statement']['aaguid']).replace('-', '')}")
    print(f"{'credentials:':<33} {answer['credentials']} discoverable")
    for name, value in info.items():
        if name == "aaguid":
            continue
        if name == "algorithms":
            value = ", ".join(ALG_NAMES.get(a["alg"], str(a["alg"])) for a in value)
        print(f"{name + ':':<33} {value}")
    return 0


def cmd_credentials_list(args: argparse.Namespace) -> int:
    with _open_store(args) as store:
        summaries = store.list_credentials()
        if not summaries:
            print("no discoverable credentials")
            return 0
        print(
            f"{'id':<24} {'rp':<28} {'user':<24} {'alg':<{_ALG_WIDTH}} {'prot':<4} "
            f"{'counter':>7}  created"
        )
        for s in summaries:
            r = s.record
            created = datetime.datetime.fromtimestamp(r.created, datetime.UTC)
            user = visible(r.user_name or r.user_display_name or _b64url(r.user_id))
            rp = visible(r.rp_id)
            print(
                f"{_b64url(r.credential_id)[:22] + '..':<24} {rp[:28]:<28} {user[:24]:<24} "
                f"{ALG_NAMES.get(r.algorithm, str(r.algorithm)):<{_ALG_WIDTH}} {r.cred_protect:<4} "
                f"{s.sign_count:>7}  {created:%Y-%m-%d %H:%M:%S}Z"
            )
    return 0


def cmd_credentials_delete(args: argparse.Namespace) -> int:
    prefix = args.id.rstrip(".")  # `credentials list` shows ids cut short with ".."
    if not prefix:
        raise CliError("give the credential's id or a unique prefix (`vfido credentials list`)")
    with _open_store(args) as store:
        matches = [
            s.record.credential_id
            for s in store.list_credentials()
            if _b64url(s.record.credential_id).startswith(prefix)
        ]
        if not matches:
            raise CliError(f"no credential with id {args.id}")
        if len(matches) > 1:
            raise CliError(f"{len(matches)} credentials start with {args.id}: give more of the id")
        store.delete_credential(matches[0])
        print(f"deleted {_b64url(matches[0])}")
    return 0


def cmd_passphrase_change(args: argparse.Namespace) -> int:
    with _open_store(args) as store:
        new = get_passphrase(args.new_passphrase_file, confirm=True, env=NEW_ENV_VAR)
        store.change_passphrase(new)
    print("passphrase changed")
    return 0


def cmd_reset(args: argparse.Namespace) -> int:
    if not args.yes:
        raise CliError("reset erases every credential and PIN: confirm with --yes")
    with _open_store(args) as store:
        store.reset()
    print("keystore reset: every credential is gone and old credential IDs are void")
    return 0


# --- parser -----------------------------------------------------------------


def _add_keystore_args(p: argparse.ArgumentParser, ephemeral: bool = False) -> None:
    p.add_argument(
        "--keystore", metavar="DIR", help="keystore directory (default: $XDG_DATA_HOME/vfido)"
    )
    p.add_argument(
        "--passphrase-file",
        type=Path,
        metavar="FILE",
        help="read the passphrase from FILE (else $VFIDO_PASSPHRASE, else a prompt)",
    )
    if ephemeral:
        p.add_argument(
            "--ephemeral",
            action="store_true",
            help="in-memory keystore, gone when the key stops (for CI)",
        )
    else:
        p.set_defaults(ephemeral=False)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="vfido", description="A virtual FIDO2 security key.")
    parser.add_argument("--version", action="version", version=f"vfido {__version__}")
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="log each CTAPHID command and CTAP status to stderr",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("init", help="create a keystore")
    _add_keystore_args(p)
    p.add_argument("--aaguid", help="AAGUID as 32 hex digits, dashes allowed (default: random)")
    p.add_argument(
        "--backup-eligible",
        action="store_true",
        help="credentials may be exported with `vfido export` (WebAuthn BE flag = 1; "
        "fixed now for every credential of this keystore)",
    )
    p.set_defaults(func=cmd_init)

    p = sub.add_parser(
        "run", help="run the key", formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    _add_keystore_args(p, ephemeral=True)
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
        choices=PRESENCE_MODES,
        default="auto",
        help="how user presence is asked: auto (approve everything), deny, deny-uv (approve "
        "presence, fail built-in UV), prompt (terminal), notify (desktop notification, else "
        "terminal), manual (only `vfido approve`/`deny`)",
    )
    p.add_argument(
        "--presence-delay",
        type=_seconds,
        default=0.0,
        metavar="SECONDS",
        help="with --presence auto: wait this long before approving",
    )
    p.add_argument(
        "--presence-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="an unanswered request is refused after this long",
    )
    p.add_argument(
        "--name",
        help="name of the control socket (default: the serial for uhid and unix, udp-PORT for udp)",
    )
    p.add_argument(
        "--control-socket", metavar="PATH", help="control socket path (overrides --name)"
    )
    p.add_argument("--udp-port", type=_port, default=8111, help="UDP port the key binds")
    p.add_argument("--udp-peer-port", type=_port, default=7112, help="UDP port replies go to")
    p.add_argument(
        "--serial", help="USB serial number (printable ASCII) for uhid (default: from the AAGUID)"
    )
    p.add_argument(
        "--attestation",
        choices=["packed", "self", "none"],
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
        "--enterprise-attestation",
        type=int,
        choices=[0, 1, 2],
        default=0,
        help="offer enterprise attestation (1: only for --enterprise-rp-id, 2: any RP); "
        "a platform enables it with authenticatorConfig",
    )
    p.add_argument(
        "--enterprise-rp-id",
        action="append",
        default=[],
        metavar="RP_ID",
        help="an RP ID allowed enterprise attestation mode 1 (repeatable)",
    )
    p.add_argument(
        "--max-resident-credentials",
        type=int,
        default=100_000,
        metavar="N",
        help="discoverable credentials the key accepts",
    )
    from vfido.personas.cli import PERSONA_HELP, register

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

    def control_args(q: argparse.ArgumentParser) -> None:
        q.add_argument("--name", help="which running key (default: the only one)")
        q.add_argument("--socket", metavar="PATH", help="the key's control socket")

    p = sub.add_parser("status", help="show the running key and its pending request")
    control_args(p)
    p.add_argument("--json", action="store_true", help="print the raw status as JSON")
    p.set_defaults(func=cmd_status)

    for name, func, verb in (("approve", cmd_approve, "approve"), ("deny", cmd_deny, "deny")):
        p = sub.add_parser(name, help=f"{verb} the request waiting for user presence")
        control_args(p)
        p.add_argument("--id", type=int, help="only this request (see `vfido status`)")
        p.add_argument(
            "--wait",
            type=float,
            metavar="SECONDS",
            help="wait up to SECONDS for a request to arrive",
        )
        p.set_defaults(func=func)

    p = sub.add_parser("doctor", help="check that browsers can use the key (UHID, udev, hidraw)")
    p.add_argument("--name", help="which running key to check (default: every one)")
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser(
        "install-udev",
        help="install the udev rules, uhid module loading and systemd user unit (as root)",
    )
    p.add_argument("--dry-run", action="store_true", help="only print what would be done")
    p.add_argument(
        "--prefix", metavar="DIR", help="install under DIR instead of / (no system changes)"
    )
    p.add_argument(
        "--user", help="add USER to the group vfido (default: $SUDO_USER when run with sudo)"
    )
    p.set_defaults(func=cmd_install_udev)

    p = sub.add_parser("info", help="show the keystore and what the key advertises")
    _add_keystore_args(p, ephemeral=True)
    add_running_key_args(p)
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("credentials", help="list or delete discoverable credentials")
    csub = p.add_subparsers(dest="credentials_command", required=True, metavar="ACTION")
    q = csub.add_parser("list", help="list discoverable credentials")
    _add_keystore_args(q)
    q.set_defaults(func=cmd_credentials_list)
    q = csub.add_parser("delete", help="delete a credential by (a prefix of) its id")
    _add_keystore_args(q)
    q.add_argument("id", help="base64url credential id, or a unique prefix")
    q.set_defaults(func=cmd_credentials_delete)

    p = sub.add_parser("passphrase", help="change the keystore passphrase")
    psub = p.add_subparsers(dest="passphrase_command", required=True, metavar="ACTION")
    q = psub.add_parser("change", help="re-wrap the keystore under a new passphrase")
    _add_keystore_args(q)
    q.add_argument(
        "--new-passphrase-file",
        type=Path,
        metavar="FILE",
        help="read the new passphrase from FILE (else $VFIDO_NEW_PASSPHRASE, else a prompt)",
    )
    q.set_defaults(func=cmd_passphrase_change)

    pin_cli.register(sub, _add_keystore_args)
    ui.register(sub, _add_keystore_args)
    trace.register(sub)
    backup.register(sub, _add_keystore_args)
    metadata.register(sub, _add_keystore_args)
    ctl.register(sub, _add_keystore_args)
    from vfido import webdriver

    webdriver.register(sub)
    register(sub)  # vfido personas

    p = sub.add_parser("reset", help="erase every credential (like authenticatorReset)")
    _add_keystore_args(p)
    p.add_argument("--yes", action="store_true", help="confirm")
    p.set_defaults(func=cmd_reset)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = _main(args)
        sys.stdout.flush()  # here, not at exit, where a closed pipe could not be caught
        return result
    except BrokenPipeError:  # `vfido ... | head`: the reader has what it wanted
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # no second error when Python flushes at exit
        return 0


def _main(args: argparse.Namespace) -> int:
    logsink.install(  # never blocks the key on a stderr nobody reads (#16)
        sys.stderr,
        logging.DEBUG if args.verbose else logging.INFO,
        # host-sent text in a message is shown escaped, never drives the terminal (#15)
        VisibleFormatter("vfido: %(levelname)s %(name)s: %(message)s"),
    )
    if not args.verbose:
        logging.getLogger("fido2").setLevel(logging.WARNING)  # python-fido2's own INFO lines
        logging.getLogger("vfido.authenticator").setLevel(logging.WARNING)
        logging.getLogger("vfido.transports").setLevel(logging.WARNING)
    try:
        result: int = args.func(args)
        return result
    except (CliError, KeystoreError, PassphraseError, ControlError, pin_cli.PinCliError) as exc:
        print(f"vfido: error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        raise
    except OSError as exc:
        print(
            f"vfido: error: {exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""),
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        return 130
