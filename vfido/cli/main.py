"""The `vfido` command line: the parser, and running the command it chose.

Every command group is a module of this package with ``register(sub)`` functions; the
parser is :data:`COMMANDS` in order. Building it imports only those modules, which import
what their commands need when they run: `vfido run` loads neither the dashboard nor the
trace decoder, backup, doctor or the WebDriver intermediary.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import TextIO, cast

from vfido import __version__
from vfido.cli import (
    backup,
    ctl,
    dashboard,
    keystore,
    metadata,
    personas,
    pin,
    run,
    system,
    trace,
    webdriver,
)
from vfido.cli.common import (
    CliError,
    Parser,
    Subparsers,
    parse_command_line,
    refuse_empty_paths,
)

#: Every `vfido` command, in the order `vfido --help` lists them.
COMMANDS: tuple[Callable[[Subparsers], None], ...] = (
    keystore.register_init,
    run.register,
    ctl.register_aliases,  # status, approve, deny: `vfido ctl status | approve | deny`
    system.register_doctor,
    system.register_install_udev,
    keystore.register_info,
    keystore.register_credentials,
    keystore.register_passphrase,
    pin.register,
    dashboard.register,
    trace.register,
    backup.register,
    metadata.register,
    ctl.register,
    webdriver.register,
    personas.register,
    keystore.register_reset,
)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="vfido", description="A virtual FIDO2 security key.")
    parser.add_argument("--version", action="version", version=f"vfido {__version__}")
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="log each CTAPHID command and CTAP status to stderr",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in COMMANDS:
        register(sub)
    refuse_empty_paths(parser)
    return parser


def _open_standard_streams() -> None:
    """Descriptors 0-2 closed at start (`vfido run >&-`, a launcher that closes them) are
    opened on /dev/null. Otherwise the next file vfido opens, the keystore's database
    included, would take such a number, and whatever writes there (a child process's
    output) would land in it. Python has no stream for a closed descriptor either: one on
    /dev/null stands in, so a command runs as with its output sent to /dev/null."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)  # the lowest free number: fd itself
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
    if sys.stdin is None:
        sys.stdin = open(os.devnull, encoding="utf-8")  # noqa: SIM115 (lives as long as we do)
    if sys.stdout is None:
        sys.stdout = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115
    if sys.stderr is None:
        sys.stderr = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115


def main(argv: Sequence[str] | None = None) -> int:
    _open_standard_streams()
    try:  # Ctrl-C while the parser is built (its commands' modules load): as later
        from vfido.safetext import VisibleStream

        args = parse_command_line(build_parser(), argv)
    except KeyboardInterrupt:
        return 130
    except OSError as exc:  # --help, --version, a usage error: written while parsing
        return _parse_output_failed(exc)
    out, err = sys.stdout, sys.stderr
    # Whatever a command prints back (paths, names, IDs: the user's, a file's, a host's) is
    # shown escaped, never as control sequences: one place for every command's output.
    sys.stdout, sys.stderr = cast(TextIO, VisibleStream(out)), cast(TextIO, VisibleStream(err))
    try:
        result = _main(args)
        try:
            sys.stdout.flush()  # here, not at exit, where a closed pipe could not be caught
        except OSError as exc:
            if isinstance(exc, BrokenPipeError):
                raise
            _silence_stdout()
            print(f"vfido: error: cannot write the output: {exc.strerror}", file=err)
            return 1
        return result
    except BrokenPipeError:  # `vfido ... | head`: the reader has what it wanted
        _silence_stdout()
        return 0
    except KeyboardInterrupt:  # Ctrl-C before a command handles it (a key starting up)
        return 130
    finally:
        sys.stdout, sys.stderr = out, err


def _parse_output_failed(exc: OSError) -> int:
    """What the parser printed (--help, --version, a usage error) could not be written: a
    reader gone (`| head`, which has what it wanted: 0), or a full disk (one line, 1)."""
    _silence_stdout()
    if isinstance(exc, BrokenPipeError):
        return 0
    with contextlib.suppress(OSError):  # stderr may be the file that failed
        print(f"vfido: error: cannot write the output: {exc.strerror}", file=sys.stderr)
    return 1


def _silence_stdout() -> None:
    """Standard output on /dev/null: what is still buffered for a reader that is gone or a
    full disk raises no second error when Python flushes at exit."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _main(args: argparse.Namespace) -> int:
    from vfido import logsink
    from vfido.control import ControlError
    from vfido.keystore.store import KeystoreError
    from vfido.passphrase import PassphraseError
    from vfido.safetext import VisibleFormatter, visible

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
    except (CliError, KeystoreError, PassphraseError, ControlError, pin.PinCliError) as exc:
        # Paths, names and IDs in a message are the user's or a file's: escaped, never
        # control sequences for the terminal (one place for every command's error line).
        print(visible(f"vfido: error: {exc}"), file=sys.stderr)
        return 1
    except BrokenPipeError:
        raise
    except OSError as exc:
        line = f"vfido: error: {exc.strerror or exc}" + (
            f": {exc.filename}" if exc.filename else ""
        )
        print(visible(line), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
