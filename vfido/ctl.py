"""`vfido ctl`: drive a running key through its control socket, from the shell or Python.

Python::

    from vfido.ctl import KeyController

    with KeyController(name="udp-8111") as key:       # or socket=Path(...), or the only key
        cred = key.add_credential("example.com", user_id=b"alice", user_name="alice",
                                  private_key_pem=pem)  # -> dict, cred["id"] is base64url
        key.set_behaviour("counter-regression", 5)
        key.set_presence("manual")
        ...
        key.approve(wait=10)

Shell::

    vfido ctl [--name NAME | --socket PATH] COMMAND ...
    vfido ctl status | info | commands
    vfido ctl credentials list [--rp RP_ID] [--public-key] [--json]
    vfido ctl credentials add --rp RP_ID [--user-id B64URL | --user-id-text TEXT]
        [--user-name N] [--display-name N] [--key FILE.pem | --cose-key FILE.cbor]
        [--alg ES256] [--server-side] [--sign-count N] [--cred-protect 1|2|3] [--json]
    vfido ctl credentials remove ID
    vfido ctl approve|deny [--id N] [--wait S]
    vfido ctl presence [MODE] [--delay S]
    vfido ctl behaviour list | set NAME[=VALUE] | clear [NAME]
    vfido ctl power-cycle
    vfido ctl log [--limit N] [--since SEQ] [--json]
    vfido ctl webauthn options | credentials | add-credential JSON | remove-credential ID
        | remove-all-credentials | set-user-verified true|false
        | set-credential-properties ID [--backup-eligibility B] [--backup-state B]
    vfido ctl call COMMAND [JSON-ARGS]

The protocol itself (every command, argument, answer and error) is documented in
:mod:`vfido.control_api`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vfido.authenticator.behaviours import b64url, b64url_decode
from vfido.broker import clean
from vfido.control import ControlClient, ControlError, find_key
from vfido.safetext import visible


def _encode(data: bytes | str) -> str:
    return b64url(data if isinstance(data, bytes) else data.encode())


class KeyController:
    """A typed client of one running key's control socket (one connection).

    ``socket``: the control socket path; else ``name`` (``vfido run --name``, default
    ``udp-PORT`` or the uhid serial); else the only running key. Every method raises
    :class:`vfido.control.ControlError` (``NotRunningError`` when no key answers) with the
    key's one-line error. IDs are ``bytes`` in arguments and base64url strings in answers.
    """

    def __init__(
        self,
        socket: Path | str | None = None,
        *,
        name: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.path = find_key(name, Path(socket) if socket is not None else None)
        self._client = ControlClient(self.path, timeout=timeout)
        self._timeout = timeout

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> KeyController:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, command: str, timeout: float | None = None, **args: Any) -> dict[str, Any]:
        """Any command: its answer without ``ok``."""
        return self._client.call(command, timeout=timeout, **args)

    # -- the key ---------------------------------------------------------------------------

    def commands(self) -> list[str]:
        return list(self.call("commands")["commands"])

    def status(self) -> dict[str, Any]:
        return self.call("status")

    def info(self) -> dict[str, Any]:
        """getInfo as the host sees it, with CTAP names."""
        return dict(self.call("info")["info"])

    def power_cycle(self) -> None:
        self.call("power-cycle")

    # -- credentials -----------------------------------------------------------------------

    def credentials(
        self, rp_id: str | None = None, *, public_key: bool = False
    ) -> list[dict[str, Any]]:
        """The discoverable credentials (optionally of one RP, with their public keys)."""
        args: dict[str, Any] = {"public_key": public_key}
        if rp_id is not None:
            args["rp_id"] = rp_id
        return list(self.call("credentials", **args)["credentials"])

    def add_credential(
        self,
        rp_id: str,
        *,
        user_id: bytes | None = None,
        user_name: str | None = None,
        user_display_name: str | None = None,
        rp_name: str | None = None,
        discoverable: bool = True,
        private_key_pem: str | bytes | None = None,
        private_key_cose: bytes | None = None,
        algorithm: str | int | None = None,
        cred_protect: int = 1,
        sign_count: int = 0,
    ) -> dict[str, Any]:
        """Import a credential (``private_key_pem``: PEM text; ``private_key_cose``: the CBOR
        of a COSE_Key with ``d``) or create one with a new key of ``algorithm``. Returns the
        credential: ``id`` (base64url), ``public_key_cose``, ``public_key_pem``..."""
        args: dict[str, Any] = {
            "rp_id": rp_id,
            "discoverable": discoverable,
            "cred_protect": cred_protect,
            "sign_count": sign_count,
        }
        if user_id is not None:
            args["user_id"] = b64url(user_id)
        for key, value in (
            ("user_name", user_name),
            ("user_display_name", user_display_name),
            ("rp_name", rp_name),
            ("algorithm", algorithm),
        ):
            if value is not None:
                args[key] = value
        if private_key_pem is not None:
            args["private_key_pem"] = (
                private_key_pem.decode() if isinstance(private_key_pem, bytes) else private_key_pem
            )
        if private_key_cose is not None:
            args["private_key_cose"] = b64url(private_key_cose)
        return dict(self.call("credentials-add", **args)["credential"])

    def remove_credential(self, credential_id: bytes | str) -> str:
        """Delete a discoverable credential (``bytes``, or base64url / a unique prefix)."""
        text = b64url(credential_id) if isinstance(credential_id, bytes) else credential_id
        return str(self.call("credentials-remove", id=text)["removed"])

    # -- the W3C WebDriver virtual-authenticator model (vfido.virtual_authenticator) -------

    def webauthn_options(self) -> dict[str, Any]:
        """The Add Virtual Authenticator options the key behaves as."""
        return dict(self.call("webauthn-authenticator")["options"])

    def webauthn_add_credential(self, params: dict[str, Any]) -> dict[str, Any]:
        """WebDriver's Add Credential (Credential Parameters JSON); the credential."""
        return dict(self.call("webauthn-add-credential", **params)["credential"])

    def webauthn_get_credentials(self) -> list[dict[str, Any]]:
        """WebDriver's Get Credentials (private keys included)."""
        return list(self.call("webauthn-get-credentials")["credentials"])

    def webauthn_remove_credential(self, credential_id: bytes | str) -> None:
        text = b64url(credential_id) if isinstance(credential_id, bytes) else credential_id
        self.call("webauthn-remove-credential", credentialId=text)

    def webauthn_remove_all_credentials(self) -> None:
        self.call("webauthn-remove-all-credentials")

    def webauthn_set_user_verified(self, verified: bool) -> None:
        self.call("webauthn-set-user-verified", isUserVerified=verified)

    def webauthn_set_credential_properties(
        self,
        credential_id: bytes | str,
        *,
        backup_eligibility: bool | None = None,
        backup_state: bool | None = None,
    ) -> None:
        args: dict[str, Any] = {
            "credentialId": b64url(credential_id)
            if isinstance(credential_id, bytes)
            else credential_id
        }
        if backup_eligibility is not None:
            args["backupEligibility"] = backup_eligibility
        if backup_state is not None:
            args["backupState"] = backup_state
        self.call("webauthn-set-credential-properties", **args)

    # -- presence --------------------------------------------------------------------------

    def presence(self) -> dict[str, Any]:
        """``{"mode", "modes", "initial"}``."""
        return self.call("presence-mode")

    def set_presence(self, mode: str, delay: float | None = None) -> None:
        args: dict[str, Any] = {"mode": mode}
        if delay is not None:
            args["delay"] = delay
        self.call("presence-mode", **args)

    def pending(self, wait: float = 0.0) -> list[dict[str, Any]]:
        return list(self.call("pending", timeout=wait + self._timeout, wait=wait)["pending"])

    def approve(self, wait: float = 0.0, request_id: int | None = None) -> dict[str, Any]:
        """Approve the pending request (waiting up to ``wait`` s for one); returns it."""
        return self._answer("approve", wait, request_id)

    def deny(self, wait: float = 0.0, request_id: int | None = None) -> dict[str, Any]:
        return self._answer("deny", wait, request_id)

    def _answer(self, command: str, wait: float, request_id: int | None) -> dict[str, Any]:
        args: dict[str, Any] = {"wait": wait}
        if request_id is not None:
            args["id"] = request_id
        return dict(self.call(command, timeout=wait + self._timeout, **args)["request"])

    # -- behaviours ------------------------------------------------------------------------

    def behaviours(self) -> dict[str, Any]:
        """The active behaviours: name -> value (None for those without one)."""
        return dict(self.call("behaviours")["active"])

    def behaviour_catalogue(self) -> list[dict[str, Any]]:
        return list(self.call("behaviours")["behaviours"])

    def misbehaviour_root_pem(self) -> str:
        """The CA certificate of the ``attestation=untrusted|expired`` certificates."""
        return str(self.call("behaviours")["misbehaviour_root_pem"])

    def set_behaviour(self, name: str, value: str | int | float | None = None) -> dict[str, Any]:
        """Turn a behaviour on (see :mod:`vfido.authenticator.behaviours`); the active ones."""
        return dict(self.call("behaviours", name=name, value=value)["active"])

    def clear_behaviour(self, name: str | None = None) -> dict[str, Any]:
        """Turn one behaviour (None: every one) off; the active ones."""
        args: dict[str, Any] = {"clear": True}
        if name is not None:
            args["name"] = name
        return dict(self.call("behaviours", **args)["active"])

    # -- trace -----------------------------------------------------------------------------

    def log(self, limit: int | None = None, since: int | None = None) -> dict[str, Any]:
        """The transaction log, ``{"records": [...], "last": seq}`` (only when the key
        records a trace: ``vfido run --trace``; see :mod:`vfido.trace`). Poll with
        ``since`` = the previous ``last``."""
        args: dict[str, Any] = {}
        if limit is not None:
            args["limit"] = limit
        if since is not None:
            args["since"] = since
        return self.call("log", **args)


# --- the command line ----------------------------------------------------------------------


class CtlError(Exception):
    """A usage error of `vfido ctl`, one line."""


def _controller(args: argparse.Namespace) -> KeyController:
    return KeyController(args.ctl_socket, name=args.ctl_name)


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True))


def _cmd_status(args: argparse.Namespace) -> int:
    with _controller(args) as key:
        _print_json(key.status())
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    with _controller(args) as key:
        _print_json(key.info())
    return 0


def _cmd_commands(args: argparse.Namespace) -> int:
    with _controller(args) as key:
        print("\n".join(key.commands()))
    return 0


def _short(text: str | None, width: int) -> str:
    text = visible(text or "-")
    return text if len(text) <= width else text[: width - 2] + ".."


def _cmd_credentials_list(args: argparse.Namespace) -> int:
    with _controller(args) as key:
        creds = key.credentials(args.rp, public_key=args.public_key)
    if args.json:
        _print_json(creds)
        return 0
    if not creds:
        print("no discoverable credentials")
        return 0
    print(f"{'id':<24} {'rp':<26} {'user':<22} {'alg':<9} {'prot':<4} {'counter':>8}")
    for c in creds:
        print(
            f"{_short(c.get('id'), 24):<24} {_short(c.get('rp_id'), 26):<26} "
            f"{_short(c.get('user_name') or c.get('user_id'), 22):<22} "
            f"{_short(c.get('algorithm_name'), 9):<9} {c.get('cred_protect')!s:<4} "
            f"{c.get('sign_count')!s:>8}"
        )
        if args.public_key and c.get("public_key_pem"):
            print(c["public_key_pem"].rstrip())
    return 0


def _read_file(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CtlError(f"cannot read {what} {path}: {exc.strerror}") from None


def _cmd_credentials_add(args: argparse.Namespace) -> int:
    if args.user_id is not None and args.user_id_text is not None:
        raise CtlError("give --user-id or --user-id-text, not both")
    user_id: bytes | None = None
    if args.user_id is not None:
        try:
            user_id = b64url_decode(args.user_id)
        except ValueError:
            raise CtlError("--user-id must be base64url") from None
    elif args.user_id_text is not None:
        user_id = args.user_id_text.encode()
    pem = _read_file(args.key, "key file") if args.key else None
    cose = _read_file(args.cose_key, "COSE key file") if args.cose_key else None
    with _controller(args) as key:
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
        _print_json(cred)
    else:
        kind = "discoverable" if cred.get("discoverable") else "server-side"
        print(f"added {kind} credential {cred['id']} for {visible(str(cred.get('rp_id')))}")
    return 0


def _cmd_credentials_remove(args: argparse.Namespace) -> int:
    with _controller(args) as key:
        removed = key.remove_credential(args.id)
    print(f"removed {removed}")
    return 0


def _cmd_answer(args: argparse.Namespace) -> int:
    granted = args.ctl_command == "approve"
    with _controller(args) as key:
        method = key.approve if granted else key.deny
        request = method(wait=args.wait, request_id=args.id)
    verb = "approved" if granted else "denied"
    print(f"{verb} request {request.get('id')}: {visible(str(request.get('question')))}")
    return 0


def _cmd_presence(args: argparse.Namespace) -> int:
    with _controller(args) as key:
        if args.mode is not None:
            key.set_presence(args.mode, args.delay)
        answer = key.presence()
    print(f"presence: {answer.get('mode')} (modes: {', '.join(answer.get('modes') or [])})")
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


def _cmd_behaviour(args: argparse.Namespace) -> int:
    with _controller(args) as key:
        if args.behaviour_action == "list":
            if args.all:
                for item in key.behaviour_catalogue():
                    mark = "*" if item.get("enabled") else " "
                    value = f"={item['value_help']}" if item.get("value_help") else ""
                    print(f"{mark} {item['name']}{value}: {item['description']}")
                return 0
            _print_behaviours(key.behaviours())
        elif args.behaviour_action == "set":
            name, sep, value = args.assignment.partition("=")
            _print_behaviours(key.set_behaviour(name.strip(), value if sep else None))
        else:
            _print_behaviours(key.clear_behaviour(args.name))
    return 0


def _cmd_finger(args: argparse.Namespace) -> int:
    with _controller(args) as key:
        if args.finger is None:
            answer = key.call("finger")
        else:
            answer = key.call("finger", finger=None if args.finger == "auto" else args.finger)
    placed = answer.get("finger")
    print(f"finger: {clean(placed) if placed else 'auto'}")
    for t in answer.get("enrolled", []):
        print(f"  {t['id']}  {clean(t['finger'])}  {clean(t['name'])}")
    return 0


def _cmd_power_cycle(args: argparse.Namespace) -> int:
    with _controller(args) as key:
        key.power_cycle()
    print("power-cycled")
    return 0


def _cmd_log(args: argparse.Namespace) -> int:
    with _controller(args) as key:
        answer = key.log(args.limit, args.since)
    entries = answer.get("records")
    if args.json or not isinstance(entries, list):
        _print_json(answer)
    else:
        for entry in entries:
            print(json.dumps(entry, sort_keys=True))
    return 0


def _cmd_lint(args: argparse.Namespace) -> int:
    from vfido.lint import Finding, format_findings

    with _controller(args) as key:
        answer = key.call("lint", clear=args.clear)
    if args.json:
        _print_json(answer)
    else:
        try:
            findings = [Finding.from_json(item) for item in answer.get("findings", [])]
        except (ValueError, AttributeError) as exc:
            raise CtlError(f"the key answered an unreadable lint: {exc}") from None
        print(format_findings(findings))
    return 1 if args.strict and answer.get("findings") else 0


def _cmd_call(args: argparse.Namespace) -> int:
    try:
        call_args = json.loads(args.arguments) if args.arguments else {}
    except ValueError:
        raise CtlError("the arguments must be a JSON object") from None
    if not isinstance(call_args, dict):
        raise CtlError("the arguments must be a JSON object")
    with _controller(args) as key:
        _print_json(key.call(args.command, **call_args))
    return 0


def _json_object(text: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
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


def _cmd_webauthn(args: argparse.Namespace) -> int:
    action = args.webauthn_action
    with _controller(args) as key:
        if action == "options":
            _print_json(key.webauthn_options())
        elif action == "credentials":
            _print_json(key.webauthn_get_credentials())
        elif action == "add-credential":
            _print_json(key.webauthn_add_credential(_json_object(args.params, "the credential")))
        elif action == "remove-credential":
            key.webauthn_remove_credential(args.id)
        elif action == "remove-all-credentials":
            key.webauthn_remove_all_credentials()
        elif action == "set-user-verified":
            key.webauthn_set_user_verified(args.verified)
        else:
            key.webauthn_set_credential_properties(
                args.id, backup_eligibility=args.backup_eligibility, backup_state=args.backup_state
            )
    return 0


def _run(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Errors as one line and exit status 1 (ControlError is already handled by the CLI,
    CtlError is ours)."""

    def wrapped(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except CtlError as exc:
            print(f"vfido: error: {exc}", file=sys.stderr)
            return 1
        except ControlError as exc:
            print(f"vfido: error: {exc}", file=sys.stderr)
            return 1

    return wrapped


def register(sub: Any, add_keystore_args: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add `vfido ctl ...` to the `vfido` parser (``add_keystore_args`` is unused: the
    commands talk to a running key, not to a keystore)."""
    p = sub.add_parser("ctl", help="control a running key: credentials, presence, behaviours...")
    p.add_argument("--name", dest="ctl_name", help="which running key (default: the only one)")
    p.add_argument("--socket", dest="ctl_socket", metavar="PATH", help="the key's control socket")
    csub = p.add_subparsers(dest="ctl_command", required=True, metavar="COMMAND")

    q = csub.add_parser("status", help="the key's status as JSON")
    q.set_defaults(func=_run(_cmd_status))
    q = csub.add_parser("info", help="authenticatorGetInfo as the host sees it, as JSON")
    q.set_defaults(func=_run(_cmd_info))
    q = csub.add_parser("commands", help="the control commands the key offers")
    q.set_defaults(func=_run(_cmd_commands))

    q = csub.add_parser("credentials", help="list, add (import) or remove credentials")
    qsub = q.add_subparsers(dest="credentials_action", required=True, metavar="ACTION")
    r = qsub.add_parser("list", help="the discoverable credentials")
    r.add_argument("--rp", help="only this RP ID")
    r.add_argument("--public-key", action="store_true", help="with the public keys (PEM)")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=_run(_cmd_credentials_list))
    r = qsub.add_parser("add", help="import a credential (or create one with a new key)")
    r.add_argument("--rp", required=True, help="RP ID, e.g. example.com")
    r.add_argument("--rp-name")
    r.add_argument("--user-id", help="user handle, base64url")
    r.add_argument("--user-id-text", help="user handle as UTF-8 text")
    r.add_argument("--user-name")
    r.add_argument("--display-name")
    r.add_argument("--key", type=Path, metavar="FILE", help="private key, unencrypted PEM")
    r.add_argument("--cose-key", type=Path, metavar="FILE", help="private COSE_Key, CBOR")
    r.add_argument("--alg", help="algorithm of a new key (ES256, EdDSA, ES384, ES512, RS256)")
    r.add_argument("--server-side", action="store_true", help="not discoverable")
    r.add_argument("--sign-count", type=int, default=0, help="starting signature counter")
    r.add_argument("--cred-protect", type=int, choices=[1, 2, 3], default=1)
    r.add_argument("--json", action="store_true", help="print the credential as JSON")
    r.set_defaults(func=_run(_cmd_credentials_add))
    r = qsub.add_parser("remove", help="delete a discoverable credential")
    r.add_argument("id", help="base64url credential id, or a unique prefix")
    r.set_defaults(func=_run(_cmd_credentials_remove))

    for name in ("approve", "deny"):
        q = csub.add_parser(name, help=f"{name} the request waiting for user presence")
        q.add_argument("--id", type=int, help="only this request")
        q.add_argument("--wait", type=float, default=0.0, metavar="SECONDS")
        q.set_defaults(func=_run(_cmd_answer))

    q = csub.add_parser("presence", help="show or switch the presence mode")
    q.add_argument("mode", nargs="?", help="auto, deny, deny-uv, manual, notify, or the start mode")
    q.add_argument("--delay", type=float, metavar="SECONDS", help="with auto: approve after")
    q.set_defaults(func=_run(_cmd_presence))

    q = csub.add_parser("behaviour", help="scripted misbehaviour: list, set, clear")
    bsub = q.add_subparsers(dest="behaviour_action", required=True, metavar="ACTION")
    r = bsub.add_parser("list", help="the active behaviours (--all: every one)")
    r.add_argument("--all", action="store_true", help="every behaviour, * marks active ones")
    r = bsub.add_parser("set", help="turn a behaviour on: NAME or NAME=VALUE")
    r.add_argument("assignment", metavar="NAME[=VALUE]")
    r = bsub.add_parser("clear", help="turn a behaviour (default: every one) off")
    r.add_argument("name", nargs="?")
    q.set_defaults(func=_run(_cmd_behaviour))

    q = csub.add_parser("finger", help="the finger on the fingerprint sensor (--fingerprint key)")
    q.add_argument(
        "finger", nargs="?", help="a finger's name, 'unknown' (never enrolled) or 'auto'"
    )
    q.set_defaults(func=_run(_cmd_finger))

    q = csub.add_parser("power-cycle", help="unplug and replug the key")
    q.set_defaults(func=_run(_cmd_power_cycle))

    q = csub.add_parser("log", help="the transaction log (a key run with --trace)")
    q.add_argument("--limit", type=int, help="at most this many records (default: 100)")
    q.add_argument("--since", type=int, help="only records after this sequence number")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=_run(_cmd_log))

    q = csub.add_parser("lint", help="the relying-party lint's findings (a key run with --lint)")
    q.add_argument("--clear", action="store_true", help="then forget them")
    q.add_argument("--json", action="store_true")
    q.add_argument("--strict", action="store_true", help="exit status 1 if there are findings")
    q.set_defaults(func=_run(_cmd_lint))

    q = csub.add_parser(
        "webauthn", help="the W3C WebDriver virtual-authenticator commands, same JSON shapes"
    )
    wsub = q.add_subparsers(dest="webauthn_action", required=True, metavar="ACTION")
    wsub.add_parser("options", help="the Add Virtual Authenticator options the key behaves as")
    wsub.add_parser("credentials", help="Get Credentials (with private keys), as JSON")
    r = wsub.add_parser("add-credential", help="Add Credential: Credential Parameters JSON")
    r.add_argument("params", metavar="JSON", help='{"credentialId": ..., "rpId": ..., ...}')
    r = wsub.add_parser("remove-credential", help="Remove Credential")
    r.add_argument("id", metavar="CREDENTIAL_ID", help="base64url")
    wsub.add_parser("remove-all-credentials", help="Remove All Credentials")
    r = wsub.add_parser("set-user-verified", help="Set User Verified: UV succeeds or fails")
    r.add_argument("verified", type=_truth, metavar="true|false")
    r = wsub.add_parser("set-credential-properties", help="a credential's backup flags")
    r.add_argument("id", metavar="CREDENTIAL_ID", help="base64url")
    r.add_argument("--backup-eligibility", type=_truth, metavar="true|false")
    r.add_argument("--backup-state", type=_truth, metavar="true|false")
    q.set_defaults(func=_run(_cmd_webauthn))

    q = csub.add_parser("call", help="send any control command (JSON arguments)")
    q.add_argument("command")
    q.add_argument("arguments", nargs="?", help="a JSON object, e.g. '{\"wait\": 5}'")
    q.set_defaults(func=_run(_cmd_call))
