"""`vfido pin set|change|status`: manage the key's PIN with the service stopped.

The commands open the keystore and talk to an in-process authenticator over
CTAPHID with python-fido2's ClientPin, exactly as a platform would, so PIN
rules, retry counting and lockout are the authenticator's own.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vfido.cli.common import Subparsers, add_keystore_args, open_store

PIN_ENV, NEW_PIN_ENV = "VFIDO_PIN", "VFIDO_NEW_PIN"


class PinCliError(Exception):
    pass


#: The flag that names a file for each variable.
FILE_FLAGS = {PIN_ENV: "--pin-file", NEW_PIN_ENV: "--new-pin-file"}
#: CTAP 2.1 section 6.5.5.5: a PIN is at most 63 bytes of UTF-8 (padded to 64 with zeros).
MAX_PIN_BYTES = 63


def _read_pin(file: Path | None, env: str, prompt: str, confirm: bool) -> str:
    from vfido.passphrase import read_secret

    what = "new PIN" if env == NEW_PIN_ENV else "PIN"
    return read_secret(
        file, what=what, env=env, flag=FILE_FLAGS[env], prompt=prompt, confirm=confirm
    )


def check_new_pin(pin: str) -> None:
    """A PIN the key would refuse with a bare status (INVALID_PARAMETER), said in words. Too
    short ones python-fido2 explains itself ("PIN must be >= 4 characters")."""
    if "\x00" in pin:  # the key ends a PIN at its zero padding; no browser can type one
        raise PinCliError("the PIN contains a NUL character")
    size = len(pin.encode("utf-8"))
    if size > MAX_PIN_BYTES:
        raise PinCliError(
            f"the PIN is too long: at most {MAX_PIN_BYTES} bytes, this one has {size}"
        )


def _describe(code: int) -> str:
    from fido2.ctap import CtapError

    messages: dict[int, str] = {
        CtapError.ERR.PIN_INVALID: "wrong PIN",
        CtapError.ERR.PIN_BLOCKED: "the PIN is blocked: only `vfido reset --yes` helps now",
        CtapError.ERR.PIN_AUTH_BLOCKED: "too many wrong PINs: restart the key and try again",
        CtapError.ERR.PIN_POLICY_VIOLATION: "the PIN does not meet the policy (length)",
        CtapError.ERR.PIN_NOT_SET: "no PIN is set: use `vfido pin set`",
    }
    return messages.get(code, f"the key refused: CTAP error 0x{code:02x}")


def _with_client_pin(args: argparse.Namespace, action: Callable[[Any, Any], int]) -> int:
    from fido2.ctap import CtapError
    from fido2.ctap2.base import Ctap2
    from fido2.ctap2.pin import ClientPin

    from vfido.key import offline_authenticator
    from vfido.transports.inprocess import open_device

    with open_store(args) as store:
        device = open_device(offline_authenticator(store))
        try:
            ctap = Ctap2(device)
            return action(ctap, ClientPin(ctap))
        except CtapError as exc:
            raise PinCliError(_describe(exc.code)) from None
        except ValueError as exc:  # python-fido2's own checks (e.g. PIN length)
            raise PinCliError(str(exc)) from None
        finally:
            device.close()


def cmd_set(args: argparse.Namespace) -> int:
    def action(ctap: Any, client_pin: Any) -> int:
        if ctap.info.options.get("clientPin"):
            raise PinCliError("a PIN is already set: use `vfido pin change`")
        new = _read_pin(args.new_pin_file, NEW_PIN_ENV, "New PIN: ", True)
        check_new_pin(new)
        client_pin.set_pin(new)
        print("PIN set")
        return 0

    return _with_client_pin(args, action)


def cmd_change(args: argparse.Namespace) -> int:
    def action(ctap: Any, client_pin: Any) -> int:
        if not ctap.info.options.get("clientPin"):
            raise PinCliError("no PIN is set: use `vfido pin set`")
        old = _read_pin(args.pin_file, PIN_ENV, "Current PIN: ", False)
        new = _read_pin(args.new_pin_file, NEW_PIN_ENV, "New PIN: ", True)
        check_new_pin(new)
        client_pin.change_pin(old, new)
        print("PIN changed")
        return 0

    return _with_client_pin(args, action)


def cmd_status(args: argparse.Namespace) -> int:
    def action(ctap: Any, client_pin: Any) -> int:
        info = ctap.info
        if not info.options.get("clientPin"):
            print("PIN:              not set")
        else:
            retries, _ = client_pin.get_pin_retries()
            print("PIN:              set")
            print(f"retries left:     {retries}")
        print(f"minimum length:   {info.min_pin_length}")
        print(f"must change PIN:  {'yes' if info.force_pin_change else 'no'}")
        print(f"alwaysUv:         {'on' if info.options.get('alwaysUv') else 'off'}")
        return 0

    return _with_client_pin(args, action)


def register(sub: Subparsers) -> None:
    """`vfido pin set|change|status`."""
    p = sub.add_parser("pin", help="set, change or inspect the key's PIN (service stopped)")
    psub = p.add_subparsers(dest="pin_command", required=True, metavar="ACTION")

    def pin_file(q: argparse.ArgumentParser, flag: str, what: str, env: str) -> None:
        q.add_argument(flag, type=Path, metavar="FILE", help=f"{what} (else ${env}, or a prompt)")

    q = psub.add_parser("set", help="set the first PIN")
    add_keystore_args(q)
    pin_file(q, "--new-pin-file", "new PIN", NEW_PIN_ENV)
    q.set_defaults(func=cmd_set)
    q = psub.add_parser("change", help="change the PIN")
    add_keystore_args(q)
    pin_file(q, "--pin-file", "current PIN", PIN_ENV)
    pin_file(q, "--new-pin-file", "new PIN", NEW_PIN_ENV)
    q.set_defaults(func=cmd_change)
    q = psub.add_parser("status", help="whether a PIN is set, retries left, policy")
    add_keystore_args(q)
    q.set_defaults(func=cmd_status)
