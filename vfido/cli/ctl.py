"""`vfido ctl ...`: drive a running key through its control socket from the shell, and its
short forms `vfido status`, `vfido approve`, `vfido deny` (the same commands, one code path).

The Python client is :class:`vfido.control.KeyController`; the protocol is documented in
:mod:`vfido.control.commands`.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vfido.cli.common import (
    CliError,
    Subparsers,
    add_control_args,
    control_target,
    print_json,
    read_file,
    seconds,
)

if TYPE_CHECKING:
    from vfido.control import KeyController

#: A usage error of `vfido ctl`, one line (kept under its old name).
CtlError = CliError


@contextlib.contextmanager
def _controller(
    args: argparse.Namespace, *, prefer_pending: bool = False
) -> Iterator[KeyController]:
    """The running key's controller, for one command; once the command has its answers
    (the block ends), ``args.key_answered`` is set (see :func:`_reads_answer`)."""
    from vfido.control import KeyController

    path = control_target(args.ctl_name, args.ctl_socket, prefer_pending=prefer_pending)
    with KeyController(path) as key:
        yield key
    args.key_answered = True


#: What printing an answer of the wrong shape raises (a member missing or of another type).
_MALFORMED = (KeyError, TypeError, AttributeError, IndexError)


def _reads_answer(
    command: Callable[[argparse.Namespace], int],
) -> Callable[[argparse.Namespace], int]:
    """A ctl command prints what the key answered. Only the user's own processes can serve
    the socket, but any of them can: an answer of the wrong shape is one line, not a
    traceback (``KeyController`` checks the answer's top-level member; this, the rest,
    once the command has its answers: before that, such an error is a bug of vfido's own)."""

    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except _MALFORMED as exc:
            if not getattr(args, "key_answered", False):
                raise
            raise CtlError(f"malformed answer from the key ({type(exc).__name__}: {exc})") from None

    return run


def _visible(text: str) -> str:
    from vfido.safetext import visible

    return visible(text)


# --- status, approve, deny (also `vfido status | approve | deny`) ---------------------------


def _describe_pending(item: dict[str, Any]) -> str:
    question = _visible(str(item.get("question")))
    return f"request {item.get('id')}: {question} ({item.get('remaining')} s left)"


@_reads_answer
def cmd_status(args: argparse.Namespace) -> int:
    """The key's status: as JSON (`vfido ctl status`, `vfido status --json`), else readably."""
    with _controller(args) as key:
        answer = key.status()
    if args.json:
        print_json(answer)
        return 0
    path = key.path
    print(f"key:           {answer.get('name', path.stem)} (pid {answer.get('pid')})")
    if answer.get("deterministic"):  # a seeded key (#19): its keys follow from the seed
        print(_visible(str(answer["deterministic"])))
    print(f"control:       {path}")
    from vfido.transport_kinds import TRANSPORT_KINDS

    kind = TRANSPORT_KINDS.get(str(answer.get("transport")), TRANSPORT_KINDS["udp"])
    for line in kind.describe(answer):  # each transport describes its own status fields
        print(_visible(line))
    print(f"keystore:      {answer.get('keystore')}")
    from vfido.presence.modes import describe_mode

    print(f"presence:      {describe_mode(answer)}")
    pending = answer.get("pending") or []
    if not pending:
        print("pending:       none")
    for item in pending:
        print(f"pending:       {_describe_pending(item)}")
    return 0


@_reads_answer
def cmd_answer(args: argparse.Namespace) -> int:
    """Approve or deny the request waiting for user presence (``args.granted``)."""
    from vfido.control import ControlError

    wait = args.wait or 0.0
    if not 0 <= wait <= 600:
        raise CliError("--wait must be between 0 and 600 seconds")
    with _controller(args, prefer_pending=True) as key:
        answer = key.approve if args.granted else key.deny
        try:
            request = answer(wait=wait, request_id=args.id)
        except ControlError as exc:
            hint = "" if wait else " (use --wait SECONDS to wait for one)"
            text = str(exc)
            raise CliError(text + (hint if text.startswith("no request") else "")) from None
    verb = "approved" if args.granted else "denied"
    print(f"{verb} request {request.get('id')}: {_visible(str(request.get('question')))}")
    return 0


def _add_answer_args(p: argparse.ArgumentParser, granted: bool) -> None:
    p.add_argument("--id", type=int, help="only this request (see `vfido status`)")
    p.add_argument(
        "--wait", type=float, metavar="SECONDS", help="wait up to SECONDS for a request to arrive"
    )
    p.set_defaults(func=cmd_answer, granted=granted)


def register_aliases(sub: Subparsers) -> None:
    """`vfido status | approve | deny`: `vfido ctl status | approve | deny`."""
    p = sub.add_parser("status", help="show the running key and its pending request")
    add_control_args(p, "ctl_")
    p.add_argument("--json", action="store_true", help="print the raw status as JSON")
    p.set_defaults(func=cmd_status)
    for name in ("approve", "deny"):
        p = sub.add_parser(name, help=f"{name} the request waiting for user presence")
        add_control_args(p, "ctl_")
        _add_answer_args(p, granted=name == "approve")


# --- the other `vfido ctl` commands ---------------------------------------------------------


@_reads_answer
def _cmd_info(args: argparse.Namespace) -> int:
    with _controller(args) as key:
        print_json(key.info())
    return 0


@_reads_answer
def _cmd_commands(args: argparse.Namespace) -> int:
    with _controller(args) as key:
        commands = key.commands()
    print("\n".join(commands))
    return 0


def _short(text: str | None, width: int, *, site: bool = False) -> str:
    """``text`` escaped and cut to ``width``; ``site``: an RP ID, cut at its start (its end
    says whose it is), as `vfido credentials list` cuts it."""
    from vfido.safetext import shorten

    return shorten(_visible(text or "-"), width, keep_end=site)


@_reads_answer
def _cmd_credentials_list(args: argparse.Namespace) -> int:
    with _controller(args) as key:
        creds = key.credentials(args.rp, public_key=args.public_key)
    if args.json:
        print_json(creds)
        return 0
    if not creds:
        print("no discoverable credentials")
        return 0
    print(f"{'id':<24} {'rp':<26} {'user':<22} {'alg':<9} {'prot':<4} {'counter':>8}")
    for c in creds:
        print(
            f"{_short(c.get('id'), 24):<24} {_short(c.get('rp_id'), 26, site=True):<26} "
            f"{_short(c.get('user_name') or c.get('user_id'), 22):<22} "
            f"{_short(c.get('algorithm_name'), 9):<9} {c.get('cred_protect')!s:<4} "
            f"{c.get('sign_count')!s:>8}"
        )
        if args.public_key and c.get("public_key_pem"):
            print(c["public_key_pem"].rstrip())
    return 0


#: The longest key file `ctl credentials add` reads (PEM of an RSA or ML-DSA key: a few KiB).
MAX_KEY_FILE = 1024 * 1024


#: The control protocol's argument names in `credentials add`'s errors, as its flags.
_ADD_FLAGS = {
    "rp_id": "--rp",
    "user_id": "--user-id/--user-id-text",
    "user_name": "--user-name",
    "user_display_name": "--display-name",
    "rp_name": "--rp-name",
    "private_key_pem": "--key",
    "private_key_cose": "--cose-key",
    "cred_protect": "--cred-protect",
    "sign_count": "--sign-count",
}


@contextlib.contextmanager
def _in_flag_names(flags: dict[str, str]) -> Iterator[None]:
    """A key's error about an argument names the command line's flag for it (the key
    speaks the control protocol, whose names are ``user_id``, ``sign_count``...)."""
    from vfido.control import ControlError

    try:
        yield
    except ControlError as exc:
        text = str(exc)
        for name, flag in flags.items():
            text = re.sub(rf"\b{name}\b", flag, text)
        raise CtlError(text) from None


@_reads_answer
def _cmd_credentials_add(args: argparse.Namespace) -> int:
    if args.user_id is not None and args.user_id_text is not None:
        raise CtlError("give --user-id or --user-id-text, not both")
    from vfido.safetext import is_utf8

    for flag, text in (
        ("--rp", args.rp),
        ("--user-name", args.user_name),
        ("--display-name", args.display_name),
        ("--rp-name", args.rp_name),
    ):
        if text is not None and not is_utf8(text):
            raise CtlError(f"{flag} is not UTF-8 text")
    from vfido.authenticator.behaviours import b64url_decode

    user_id: bytes | None = None
    if args.user_id is not None:
        try:
            user_id = b64url_decode(args.user_id)
        except ValueError:
            raise CtlError("--user-id must be base64url") from None
    elif args.user_id_text is not None:
        if not is_utf8(args.user_id_text):
            raise CtlError("--user-id-text is not UTF-8 text: use --user-id (base64url)")
        user_id = args.user_id_text.encode()
    pem = read_file(args.key, "key file", MAX_KEY_FILE) if args.key else None
    if pem is not None and not pem.isascii():
        raise CtlError(f"key file {args.key} is not PEM (PEM is ASCII text)")
    cose = read_file(args.cose_key, "COSE key file", MAX_KEY_FILE) if args.cose_key else None
    with _controller(args) as key, _in_flag_names(_ADD_FLAGS):
        cred = key.add_credential(
            args.rp,
            user_id=user_id,
            user_name=args.user_name,
            user_display_name=args.display_name,
            rp_name=args.rp_name,
            discoverable=not args.server_side,
            private_key_pem=pem,
            private_key_cose=cose,
            algorithm=args.alg,
            cred_protect=args.cred_protect,
            sign_count=args.sign_count,
        )
    if args.json:
        print_json(cred)
    else:
        kind = "discoverable" if cred.get("discoverable") else "server-side"
        print(f"added {kind} credential {cred['id']} for {_visible(str(cred.get('rp_id')))}")
        if cred.get("public_key_pem"):  # what the relying party must store for it
            print(str(cred["public_key_pem"]).rstrip())
        if cred.get("replaced"):
            # makeCredential's rule: one discoverable credential per RP and user ID.
            print(f"it replaces credential {cred['replaced']}, the same RP's for that user ID")
    return 0


@_reads_answer
def _cmd_credentials_remove(args: argparse.Namespace) -> int:
    with _controller(args) as key:
        removed = key.remove_credential(args.id)
    print(f"removed {removed}")
    return 0


@_reads_answer
def _cmd_presence(args: argparse.Namespace) -> int:
    if args.delay is not None and args.mode is None:
        raise CtlError("--delay goes with a mode: vfido ctl presence auto --delay SECONDS")
    with _controller(args) as key:
        if args.mode is not None:
            key.set_presence(args.mode, args.delay)
        answer = key.presence()
    delay = f", delay {answer['delay']} s" if answer.get("delay") else ""
    print(f"presence: {answer.get('mode')}{delay} (modes: {', '.join(answer.get('modes') or [])})")
    return 0


def _format_value(value: Any) -> str:
    if value is None:
        return "on"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def _print_behaviours(active: dict[str, Any]) -> None:
    if not active:
        print("no behaviours active: the key behaves")
    for name, value in active.items():
        print(f"{name}: {_format_value(value)}")


@_reads_answer
def _cmd_behaviour(args: argparse.Namespace) -> int:
    catalogue: list[dict[str, Any]] | None = None
    with _controller(args) as key:
        if args.behaviour_action == "list":
            if args.all:
                catalogue = key.behaviour_catalogue()
            else:
                active = key.behaviours()
        elif args.behaviour_action == "set":
            name, sep, value = args.assignment.partition("=")
            active = key.set_behaviour(name.strip(), value if sep else None)
        else:
            active = key.clear_behaviour(args.name)
    if catalogue is not None:
        for item in catalogue:
            mark = "*" if item.get("enabled") else " "
            value = f"={item['value_help']}" if item.get("value_help") else ""
            print(f"{mark} {item['name']}{value}: {item['description']}")
        return 0
    _print_behaviours(active)
    return 0


@_reads_answer
def _cmd_finger(args: argparse.Namespace) -> int:
    with _controller(args) as key:
        if args.finger is None:
            answer = key.call("finger")
        else:
            answer = key.call("finger", finger=None if args.finger == "auto" else args.finger)
    from vfido.presence.pending import clean

    placed = answer.get("finger")
    print(f"finger: {clean(placed) if placed else 'auto'}")
    for t in answer.get("enrolled", []):
        print(f"  {t['id']}  {clean(t['finger'])}  {clean(t['name'])}")
    return 0


@_reads_answer
def _cmd_power_cycle(args: argparse.Namespace) -> int:
    with _controller(args) as key:
        key.power_cycle()
    print("power-cycled")
    return 0


@_reads_answer
def _cmd_log(args: argparse.Namespace) -> int:
    with _controller(args) as key:
        answer = key.log(args.limit, args.since)
    entries = answer.get("records")
    if args.json or not isinstance(entries, list):
        print_json(answer)
    else:
        for entry in entries:
            print(json.dumps(entry, sort_keys=True))
    return 0


@_reads_answer
def _cmd_lint(args: argparse.Namespace) -> int:
    from vfido.lint import Finding, format_findings

    with _controller(args) as key:
        answer = key.call("lint", clear=args.clear)
    if args.json:
        print_json(answer)
    else:
        try:
            findings = [Finding.from_json(item) for item in answer.get("findings", [])]
        except (ValueError, AttributeError) as exc:
            raise CtlError(f"the key answered an unreadable lint: {exc}") from None
        print(format_findings(findings))
    return 1 if args.strict and answer.get("findings") else 0


@_reads_answer
def _cmd_call(args: argparse.Namespace) -> int:
    call_args = _json_object(args.arguments, "the arguments") if args.arguments else {}
    with _controller(args) as key:
        print_json(key.request(args.command, call_args))
    return 0


#: How a JSON argument names where it is instead (``@FILE``, ``-`` for standard input): a
#: private key on the command line can be read by every local user (/proc/PID/cmdline).
JSON_ARGUMENT = "JSON|@FILE|-"


def _json_object(text: str, what: str) -> dict[str, Any]:
    """``text`` (see :data:`JSON_ARGUMENT`) as a JSON object, else one line naming ``what``."""
    if text == "@":
        raise CtlError("@ names no file: give @FILE, or - for standard input")
    if text == "-" or text.startswith("@"):
        where = Path("/dev/stdin" if text == "-" else text[1:])
        raw = read_file(where, "JSON file", MAX_KEY_FILE)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise CtlError(f"{what} must be a JSON object (UTF-8 text)") from None
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        raise CtlError(f"{what} must be a JSON object") from None
    if not isinstance(value, dict):
        raise CtlError(f"{what} must be a JSON object")
    return value


def _truth(text: str) -> bool:
    if text.lower() in ("true", "yes", "1", "on"):
        return True
    if text.lower() in ("false", "no", "0", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, not {text!r}")


@_reads_answer
def _cmd_webauthn(args: argparse.Namespace) -> int:
    action = args.webauthn_action
    with _controller(args) as key:
        if action == "options":
            print_json(key.webauthn_options())
        elif action == "credentials":
            print_json(key.webauthn_get_credentials())
        elif action == "add-credential":
            print_json(key.webauthn_add_credential(_json_object(args.params, "the credential")))
        elif action == "remove-credential":
            key.webauthn_remove_credential(args.id)
        elif action == "remove-all-credentials":
            key.webauthn_remove_all_credentials()
        elif action == "set-user-verified":
            key.webauthn_set_user_verified(args.verified)
        else:
            if args.backup_eligibility is None and args.backup_state is None:
                raise CtlError("nothing to set: give --backup-eligibility and/or --backup-state")
            key.webauthn_set_credential_properties(
                args.id, backup_eligibility=args.backup_eligibility, backup_state=args.backup_state
            )
    return 0


def register(sub: Subparsers) -> None:
    """`vfido ctl ...`."""
    p = sub.add_parser("ctl", help="control a running key: credentials, presence, behaviours...")
    add_control_args(p, "ctl_")
    csub = p.add_subparsers(dest="ctl_command", required=True, metavar="COMMAND")

    q = csub.add_parser("status", help="the key's status as JSON")
    q.set_defaults(func=cmd_status, json=True)
    q = csub.add_parser("info", help="authenticatorGetInfo as the host sees it, as JSON")
    q.set_defaults(func=_cmd_info)
    q = csub.add_parser("commands", help="the control commands the key offers")
    q.set_defaults(func=_cmd_commands)

    q = csub.add_parser("credentials", help="list, add (import) or remove credentials")
    qsub = q.add_subparsers(dest="credentials_action", required=True, metavar="ACTION")
    r = qsub.add_parser("list", help="the discoverable credentials")
    r.add_argument("--rp", help="only this RP ID")
    r.add_argument("--public-key", action="store_true", help="with the public keys (PEM)")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=_cmd_credentials_list)
    r = qsub.add_parser("add", help="import a credential (or create one with a new key)")
    r.add_argument("--rp", required=True, help="RP ID, e.g. example.com")
    r.add_argument("--rp-name")
    r.add_argument("--user-id", help="user handle, base64url")
    r.add_argument("--user-id-text", help="user handle as UTF-8 text")
    r.add_argument("--user-name")
    r.add_argument("--display-name")
    r.add_argument("--key", type=Path, metavar="FILE", help="private key, unencrypted PEM")
    r.add_argument("--cose-key", type=Path, metavar="FILE", help="private COSE_Key, CBOR")
    r.add_argument(
        "--alg",
        help="algorithm of a new key: a name (ES256, EdDSA, ES384, ES512, RS256, PS256, "
        "ES256K...) or a COSE number (-7); default ES256",
    )
    r.add_argument("--server-side", action="store_true", help="not discoverable")
    r.add_argument("--sign-count", type=int, default=0, help="starting signature counter")
    r.add_argument("--cred-protect", type=int, choices=[1, 2, 3], default=1)
    r.add_argument("--json", action="store_true", help="print the credential as JSON")
    r.set_defaults(func=_cmd_credentials_add)
    r = qsub.add_parser("remove", help="delete a discoverable credential")
    r.add_argument("id", help="base64url credential id, or a unique prefix")
    r.set_defaults(func=_cmd_credentials_remove)

    for name in ("approve", "deny"):
        q = csub.add_parser(name, help=f"{name} the request waiting for user presence")
        _add_answer_args(q, granted=name == "approve")

    q = csub.add_parser("presence", help="show or switch the presence mode")
    q.add_argument("mode", nargs="?", help="auto, deny, deny-uv, manual, notify, or the start mode")
    q.add_argument("--delay", type=seconds, metavar="SECONDS", help="with auto: approve after")
    q.set_defaults(func=_cmd_presence)

    q = csub.add_parser("behaviour", help="scripted misbehaviour: list, set, clear")
    bsub = q.add_subparsers(dest="behaviour_action", required=True, metavar="ACTION")
    r = bsub.add_parser("list", help="the active behaviours (--all: every one)")
    r.add_argument("--all", action="store_true", help="every behaviour, * marks active ones")
    r = bsub.add_parser("set", help="turn a behaviour on: NAME or NAME=VALUE")
    r.add_argument("assignment", metavar="NAME[=VALUE]")
    r = bsub.add_parser("clear", help="turn a behaviour (default: every one) off")
    r.add_argument("name", nargs="?")
    q.set_defaults(func=_cmd_behaviour)

    q = csub.add_parser("finger", help="the finger on the fingerprint sensor (--fingerprint key)")
    q.add_argument(
        "finger", nargs="?", help="a finger's name, 'unknown' (never enrolled) or 'auto'"
    )
    q.set_defaults(func=_cmd_finger)

    q = csub.add_parser("power-cycle", help="unplug and replug the key")
    q.set_defaults(func=_cmd_power_cycle)

    q = csub.add_parser("log", help="the transaction log (a key run with --trace)")
    q.add_argument("--limit", type=int, help="at most this many records (default: 100)")
    q.add_argument("--since", type=int, help="only records after this sequence number")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=_cmd_log)

    q = csub.add_parser("lint", help="the relying-party lint's findings (a key run with --lint)")
    q.add_argument("--clear", action="store_true", help="then forget them")
    q.add_argument("--json", action="store_true")
    q.add_argument("--strict", action="store_true", help="exit status 1 if there are findings")
    q.set_defaults(func=_cmd_lint)

    q = csub.add_parser(
        "webauthn",
        help="the W3C WebDriver virtual-authenticator commands, same JSON shapes",
        description="The W3C WebDriver virtual-authenticator commands, with the same JSON "
        "shapes. A `vfido run` key lists and removes its discoverable credentials and those "
        "added here; it keeps no record of the server-side credentials registrations make "
        "(they live in their IDs, which the relying party keeps), so those are neither "
        "listed nor removed.",
    )
    wsub = q.add_subparsers(dest="webauthn_action", required=True, metavar="ACTION")
    wsub.add_parser("options", help="the Add Virtual Authenticator options the key behaves as")
    wsub.add_parser("credentials", help="Get Credentials (with private keys), as JSON")
    r = wsub.add_parser("add-credential", help="Add Credential: Credential Parameters JSON")
    r.add_argument(
        "params",
        metavar=JSON_ARGUMENT,
        help='{"credentialId": ..., "rpId": ..., "privateKey": ...}, or the file that holds it '
        "(@FILE, - for standard input: other local users can read a command line)",
    )
    r = wsub.add_parser("remove-credential", help="Remove Credential")
    r.add_argument("id", metavar="CREDENTIAL_ID", help="base64url")
    wsub.add_parser("remove-all-credentials", help="Remove All Credentials")
    r = wsub.add_parser("set-user-verified", help="Set User Verified: UV succeeds or fails")
    r.add_argument("verified", type=_truth, metavar="true|false")
    r = wsub.add_parser("set-credential-properties", help="a credential's backup flags")
    r.add_argument("id", metavar="CREDENTIAL_ID", help="base64url")
    r.add_argument("--backup-eligibility", type=_truth, metavar="true|false")
    r.add_argument("--backup-state", type=_truth, metavar="true|false")
    q.set_defaults(func=_cmd_webauthn)

    q = csub.add_parser("call", help="send any control command (JSON arguments)")
    q.add_argument("command")
    q.add_argument(
        "arguments",
        nargs="?",
        metavar=JSON_ARGUMENT,
        help="a JSON object, e.g. '{\"wait\": 5}', or the file that holds it (@FILE, - for stdin)",
    )
    q.set_defaults(func=_cmd_call)
