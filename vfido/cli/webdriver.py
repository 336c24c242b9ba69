"""`vfido webdriver`: a WebDriver intermediary whose virtual authenticators are real vfido keys
(:mod:`vfido.testing.webdriver`)."""

from __future__ import annotations

import argparse
import ipaddress
import signal
import sys
import time
from collections.abc import Sequence

from vfido.cli.common import CliError, LazyChoices, Subparsers


def _key_transports() -> Sequence[str]:
    from vfido.testing.webdriver import KEY_TRANSPORTS

    return KEY_TRANSPORTS


def _host(text: str) -> str:
    """``--host``: an address or name, given (an empty one listens on every interface)."""
    if not text or not (text.isascii() and text.isprintable()):
        raise argparse.ArgumentTypeError(
            "give an address or host name (0.0.0.0 for every interface)"
        )
    return text


def _cmd_webdriver(args: argparse.Namespace) -> int:
    from vfido.safetext import visible
    from vfido.testing.webdriver import WebDriverProxy

    try:
        proxy = WebDriverProxy(
            args.upstream,
            host=args.host,
            port=args.port,
            key_transport=args.key_transport,
            allowed_hosts=tuple(args.allowed_host),
        )
    except ValueError as exc:
        print(visible(f"vfido: error: {exc}"), file=sys.stderr)
        return 2
    except OSError as exc:
        raise CliError(
            f"cannot listen on {args.host}:{args.port} (--host, --port): {exc.strerror}"
        ) from None
    # SIGTERM and SIGHUP (not ignored: nohup) stop it as Ctrl-C does: the keys it plugged in
    # are closed and their temporary directories removed (SIGTERM used to leave them). The
    # handler only notes the signal; the main thread waits for it, the server runs beside.
    # Installed before "listening on" is said: a supervisor (or a test) that signals as soon
    # as it reads it must not find Python's default KeyboardInterrupt still in place.
    received: list[int] = []
    stopping = [
        sig
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
        if signal.getsignal(sig) is not signal.SIG_IGN  # nohup, a background job: ignored
    ]
    previous = {
        sig: signal.signal(sig, lambda signum, _: received.append(signum)) for sig in stopping
    }
    print(
        f"vfido webdriver: listening on {proxy.url} (upstream {args.upstream}, "
        f"keys over {args.key_transport})",
        file=sys.stderr,
        flush=True,
    )
    if not ipaddress.ip_address(proxy.address).is_loopback:
        print(
            f"vfido webdriver: warning: listening on {proxy.address}, which other machines "
            "can reach: whoever does can read the keys' private keys and drive the browser "
            "(the default --host 127.0.0.1 keeps it on this machine)",
            file=sys.stderr,
            flush=True,
        )
    if args.key_transport == "uhid":
        from vfido.transports.uhid import uhid_unavailable

        reason = uhid_unavailable()
        if reason is not None:  # said now, not at each Add Virtual Authenticator
            print(
                visible(
                    f"vfido webdriver: warning: no key can be plugged in: {reason} "
                    "(--key-transport unix serves keys to python-fido2 and test tools)"
                ),
                file=sys.stderr,
                flush=True,
            )
    try:
        proxy.start()
        while not received:
            time.sleep(0.2)
    finally:
        proxy.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def register(sub: Subparsers) -> None:
    """`vfido webdriver`."""
    p = sub.add_parser(
        "webdriver",
        help="a WebDriver intermediary: virtual authenticators become real vfido keys",
        description=(
            "Forward every WebDriver command to the upstream driver (e.g. chromedriver) and "
            "serve the W3C virtual-authenticator commands with real vfido keys."
        ),
    )
    p.add_argument("--upstream", required=True, metavar="URL", help="e.g. http://127.0.0.1:9515")
    p.add_argument(
        "--host",
        type=_host,
        default="127.0.0.1",
        help="address to listen on (default: %(default)s)",
    )
    p.add_argument(
        "--port", type=_port, default=4444, help="port to listen on, 0: any (default: %(default)s)"
    )
    p.add_argument(
        "--allowed-host",
        type=_host,
        action="append",
        default=[],
        metavar="NAME",
        help="a host name clients may reach it by (repeatable; an address, localhost and "
        "the --host name always work; any other name is refused, as web pages use them)",
    )
    key_transport = p.add_argument(
        "--key-transport",
        default="uhid",
        help="how the browser reaches the keys (default: %(default)s; the others for tests)",
    )
    key_transport.choices = LazyChoices(_key_transports)  # after add_argument, which lists them
    p.set_defaults(func=_cmd_webdriver)


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0-65535, not {value}")
    return value
