"""What every command group of the `vfido` command line shares: the one user-facing error,
the keystore and running-key arguments, opening the keystore, and argument types.

Kept light: `vfido run` imports this module and every group module to build the parser,
so what a command needs (the keystore, the control client...) is imported when it runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeAlias, overload

if TYPE_CHECKING:
    from _typeshed import SupportsWrite

    from vfido.keystore.sqlite_store import SqliteKeyStore

#: The ``sub`` of ``parser.add_subparsers()``: what each group's ``register`` adds to.
Subparsers: TypeAlias = "argparse._SubParsersAction[Parser]"
#: A command: the parsed arguments in, the exit status out.
Command: TypeAlias = Callable[[argparse.Namespace], int]


#: The attestation formats `vfido run --attestation` offers (and `vfido metadata` describes:
#: :data:`vfido.metadata.ATTESTATION_TYPES` maps each to its MDS type).
ATTESTATIONS = ("packed", "self", "none")


class CliError(Exception):
    """A user-facing error: printed as one line, exit status 1."""


class Parser(argparse.ArgumentParser):
    """Usage errors (a bad flag value...) in one line, pointing at ``--help``."""

    def error(self, message: str) -> NoReturn:
        from vfido.safetext import visible  # the argument shown back may hold escape codes

        self.exit(2, visible(f"{self.prog}: error: {message} (see `{self.prog} --help`)") + "\n")

    def _print_message(self, message: str, file: SupportsWrite[str] | None = None) -> None:
        """argparse's, without its ``except OSError: pass`` for standard output: ``vfido
        --help > /dev/full`` exited 0 with nothing written. A failed write of --help or
        --version raises (main() says it in one line). A usage error, on standard error,
        still exits 2 when it cannot be written: there is nowhere to say more (a diff
        review: a closed stderr turned it into 0)."""
        if not message:
            return
        out = file or sys.stderr
        try:
            out.write(message)
            flush = getattr(out, "flush", None)
            if flush is not None:
                flush()
        except OSError:
            if out is not sys.stdout:
                return
            raise


def parse_command_line(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None
) -> argparse.Namespace:
    """``parser.parse_args(argv)``, except that an option of a command group given after
    one of its commands (``vfido status -v``, ``vfido ctl status --name K``), which argparse
    only calls unrecognized, is a usage error saying where it goes: each option is taken
    where its group is named (``vfido -v status``, ``vfido ctl --name K status``), for
    every command alike."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args, extras = parser.parse_known_args(argv)
    if extras:
        said, command = _unrecognized(parser, argv, extras)
        command.error(said)
    return args


def _option(group: argparse.ArgumentParser, token: str) -> argparse.Action | None:
    """The option ``token`` names in ``group`` (``--opt=value`` too), or a unique prefix of
    one (``--sock`` for ``--socket``), as argparse reads it; None if none or several."""
    name = token.partition("=")[0]
    actions = group._option_string_actions
    if name in actions:
        return actions[name]
    if not name.startswith("--") or not group.allow_abbrev:
        return None
    matches = {actions[o] for o in actions if o.startswith(name)}
    return matches.pop() if len(matches) == 1 else None


def _commands(group: argparse.ArgumentParser) -> argparse._SubParsersAction[Any] | None:
    """The commands of ``group`` (None: it is a command itself)."""
    return next((a for a in group._actions if isinstance(a, argparse._SubParsersAction)), None)


def _unrecognized(
    parser: argparse.ArgumentParser, argv: list[str], extras: list[str]
) -> tuple[str, argparse.ArgumentParser]:
    """The usage error for ``extras``: where each option that belongs before a command
    goes, then the arguments nobody takes; and the parser to say it, whose ``--help`` the
    error points to: the command's own when only arguments nobody takes are in it (`vfido
    credentials list --json` pointed at `vfido --help`, a newcomer review), else the top
    one, which shows where the options go."""
    # The parsers the command line went through, each with the name that chose it: read
    # from argv, as argparse does (a command's own argument may share a group's dest).
    chain: list[tuple[str, argparse.ArgumentParser]] = [(parser.prog, parser)]
    complete = False  # the walk reached a command (a parser without commands)
    tokens = iter(argv)
    for token in tokens:
        commands = _commands(chain[-1][1])
        if commands is None:
            complete = True
            break
        if token == "--":
            break
        if token.startswith("-"):
            # This group's option, or an outer group's given here (a hint of its own).
            known = next(
                (a for _, g in reversed(chain) if (a := _option(g, token)) is not None), None
            )
            if known is None:
                break  # an option no group knows: no hint can be sure
            if known.nargs is None and "=" not in token:
                next(tokens, None)  # its value
            continue
        if token not in commands.choices:
            break
        chain.append((token, commands.choices[token]))
    else:
        complete = _commands(chain[-1][1]) is None
    # After "--" nothing is an option, wherever argparse put it.
    literal = set(argv[argv.index("--") + 1 :]) if "--" in argv else set()
    hints: list[str] = []
    unknown: list[str] = []
    values = 0  # of the misplaced option just seen, still to pass over
    for extra in extras:
        if not complete or extra in literal or extra == "--":
            unknown.append(extra)
            continue
        if values:
            values -= 1
            if not extra.startswith("-"):
                continue  # the misplaced option's value
        option, equals, _ = extra.partition("=")
        for depth in range(len(chain) - 2, -1, -1):  # the nearest group first
            group = chain[depth][1]
            action = _option(group, option) if extra.startswith("-") else None
            if action is None:
                continue
            takes_value = action.nargs != 0
            values = 1 if takes_value and action.nargs is None and not equals else 0
            shown = f"{option} {action.metavar or action.dest.upper()}" if takes_value else option
            rest = " ".join(name for name, _ in chain[depth + 1 :])
            if isinstance(action, argparse._VersionAction):
                rest = ""  # it runs no command
            hints.append(f"{option} goes before the command: {group.prog} {shown} {rest}".strip())
            break
        else:
            unknown.append(extra)
    teller = chain[-1][1] if complete and not hints else parser
    if unknown:
        hints.append(f"unrecognized arguments: {' '.join(unknown)}")
    return "; ".join(hints), teller


def read_file(path: Path, what: str, limit: int) -> bytes:
    """The bytes of ``path`` (``what``: "key file"...), refused as one line if the file is
    longer than ``limit`` (so /dev/zero or a file named by mistake is never read into
    memory; a pipe still works). Raises :class:`CliError`."""
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as exc:
        raise CliError(f"cannot read {what} {path}: {exc.strerror}") from None
    if len(data) > limit:
        raise CliError(f"{what} {path} is longer than {limit} bytes")
    return data


#: The metavars of arguments that name a file system path (FILE, DIR, PATH): such an argument
#: given as an empty string is refused by :func:`refuse_empty_paths`.
PATH_METAVARS = frozenset({"FILE", "DIR", "PATH"})


def _non_empty(convert: Callable[[str], Any] | None) -> Callable[[str], Any]:
    def check(value: str) -> Any:
        if value == "":
            raise argparse.ArgumentTypeError("an empty string names no file")
        return value if convert is None else convert(value)

    check.__name__ = getattr(convert, "__name__", "path")  # argparse's "invalid X value"
    return check


def refuse_empty_paths(parser: argparse.ArgumentParser) -> None:
    """Make every path argument of ``parser`` and its subcommands (those whose metavar is in
    :data:`PATH_METAVARS`) refuse an empty value with a usage error. ``--keystore ""`` would
    otherwise mean the default keystore to ``args.keystore or default`` (`vfido reset
    --keystore ""` erased it), and the current directory to ``Path("")``."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for subparser in set(action.choices.values()):
                refuse_empty_paths(subparser)
        elif action.metavar in PATH_METAVARS and action.nargs in (None, "?"):
            action.type = _non_empty(action.type)  # type: ignore[arg-type]


class LazyChoices(Sequence[str]):
    """Choices computed the first time argparse looks (usage, help, a check), so that building
    the parser does not import the module that defines them. Set ``action.choices`` after
    ``add_argument`` (which formats the choices once to check the metavar)."""

    def __init__(self, load: Callable[[], Sequence[str]]) -> None:
        self._load = load
        self._values: Sequence[str] | None = None

    def _get(self) -> Sequence[str]:
        if self._values is None:
            self._values = tuple(self._load())
        return self._values

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[str]: ...

    def __getitem__(self, index: int | slice) -> str | Sequence[str]:
        return self._get()[index]

    def __len__(self) -> int:
        return len(self._get())

    def __iter__(self) -> Iterator[str]:
        return iter(self._get())

    def __contains__(self, value: object) -> bool:
        return value in self._get()


# --- argument types -----------------------------------------------------------------------


def port(text: str) -> int:
    """A UDP port flag: 0 (any free port) to 65535."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port (0 to 65535)")
    return value


def peer_port(text: str) -> int:
    """A port replies are sent to: 1 to 65535 (nothing can be sent to port 0)."""
    value = port(text)
    if value == 0:
        raise argparse.ArgumentTypeError("0 is not a port replies can go to (1 to 65535)")
    return value


def key_name(text: str) -> str:
    """A ``--name`` flag: a name a running key can have (``check_key_name``)."""
    from vfido.control.server import check_key_name

    try:
        return check_key_name(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


#: The longest time a `SECONDS` argument may give (a day): a delay or timeout beyond it is a
#: typo, and 1e300 s overflows the clock where it is added to the time.
MAX_SECONDS = 86400.0


def seconds(text: str) -> float:
    """A number of seconds from 0 to :data:`MAX_SECONDS` (not nan, not inf)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 <= value <= MAX_SECONDS:  # nan fails every comparison
        raise argparse.ArgumentTypeError(
            f"{text} is not a number of seconds from 0 to {MAX_SECONDS:.0f}"
        )
    return value


# --- the keystore ---------------------------------------------------------------------------


def add_keystore_args(p: argparse.ArgumentParser, ephemeral: bool = False) -> None:
    """``--keystore``/``--passphrase-file`` (and ``--ephemeral``): the keystore a command opens."""
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
        p.set_defaults(ephemeral=None)  # falsy, and "this command has no --ephemeral"


def keystore_dir(args: argparse.Namespace) -> Path:
    """The keystore directory ``--keystore`` names, else the default one."""
    from vfido.safetext import is_utf8
    from vfido.service import keystore_default_dir

    directory = Path(args.keystore) if args.keystore else keystore_default_dir()
    if not is_utf8(str(directory)):  # SQLite takes the path as UTF-8
        raise CliError(f"the keystore path {directory} is not UTF-8: choose another")
    return directory


def persona_aaguid(args: argparse.Namespace) -> bytes | None:
    """The AAGUID of an --ephemeral keystore: ``--persona``'s, if it has one."""
    name = getattr(args, "persona", None)
    if not name:
        return None
    from vfido.personas import PersonaError, load

    try:
        return load(name).aaguid
    except PersonaError as exc:
        raise CliError(str(exc)) from None


def open_store(args: argparse.Namespace) -> SqliteKeyStore:
    """The keystore the arguments name (``--ephemeral``: a new in-memory one)."""
    from vfido.keystore.sqlite_store import SqliteKeyStore
    from vfido.passphrase import get_passphrase

    if getattr(args, "ephemeral", False):
        if args.keystore or args.passphrase_file:
            given = "--keystore" if args.keystore else "--passphrase-file"
            raise CliError(f"--ephemeral and {given} exclude each other (which keystore?)")
        return SqliteKeyStore.ephemeral(aaguid=persona_aaguid(args))
    directory = keystore_dir(args)
    if directory.exists() and not directory.is_dir():
        raise CliError(f"{directory} is not a directory: --keystore names a keystore's directory")
    if not SqliteKeyStore.exists(directory):
        # --ephemeral is an option of the commands that run a key (`vfido run`), not of
        # those that read a keystore (`vfido credentials list`): offer it only where it is.
        hint = " (or use --ephemeral)" if getattr(args, "ephemeral", None) is not None else ""
        raise CliError(f"no keystore in {directory}: run `vfido init` first{hint}")
    _refuse_if_in_use(directory)  # before the passphrase is asked for
    return SqliteKeyStore.open(directory, get_passphrase(args.passphrase_file))


def _refuse_if_in_use(directory: Path) -> None:
    """One line saying what to do when another process (a running key, most likely) has
    the keystore open: asking for the passphrase first, then refusing, helped nobody."""
    from vfido.keystore.files import check_private
    from vfido.keystore.lock import DirectoryLock
    from vfido.keystore.sqlite_store import LOCK_NAME
    from vfido.keystore.store import KeystoreLocked

    check_private(directory, directory=True)  # first, as opening does: no lock file made
    try:  # in a directory that would be refused (another user's, one open to others)
        DirectoryLock(directory / LOCK_NAME).release()
    except KeystoreLocked:
        raise CliError(
            f"keystore {directory} is in use by another process, most likely a running key: "
            "`vfido ctl ...` talks to it (`vfido ctl credentials list`); stop it to use this "
            "command"
        ) from None


# --- a running key --------------------------------------------------------------------------


def add_control_args(p: argparse.ArgumentParser, dest_prefix: str = "") -> None:
    """``--name``/``--socket``: which running key a command talks to."""
    p.add_argument(
        "--name",
        dest=f"{dest_prefix}name",
        type=key_name,
        metavar="NAME",
        help="which running key (default: the only one)",
    )
    p.add_argument(
        "--socket", dest=f"{dest_prefix}socket", metavar="PATH", help="the key's control socket"
    )


def control_target(
    name: str | None, socket: str | Path | None, *, prefer_pending: bool = False
) -> Path:
    """The control socket of the running key ``--name``/``--socket`` choose."""
    from vfido.control import find_key

    return find_key(
        name, Path(socket) if socket is not None else None, prefer_pending=prefer_pending
    )


def add_running_key_args(p: argparse.ArgumentParser) -> None:
    """``--name``/``--socket``: ask a running key (`info`, `metadata`)."""
    p.add_argument(
        "--name",
        type=key_name,
        help="ask this running key, through its control socket (default: the only running "
        "key when no --keystore/--ephemeral is given, else the keystore)",
    )
    p.add_argument("--socket", metavar="PATH", help="ask the running key with this control socket")


def running_key(args: argparse.Namespace) -> Path | None:
    """The control socket `info`/`metadata` ask: the key named by ``--name``/``--socket``,
    else the only running key unless a keystore is named (None: open the keystore)."""
    from vfido.control import running_keys

    if args.name or args.socket:
        return control_target(args.name, args.socket)
    if args.keystore or args.ephemeral or args.passphrase_file:
        return None
    keys = running_keys()
    if len(keys) > 1:
        names = ", ".join(k.stem for k in keys)
        raise CliError(f"{len(keys)} keys are running ({names}): choose one with --name")
    return keys[0] if keys else None


def print_json(value: Any) -> None:
    import json

    print(json.dumps(value, indent=2, sort_keys=True))


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default where it says something: not "(default: None)" or
    "(default: False)", and not a second time where the help already names the default."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        nothing = default is None or default is False or default == [] or default == ()
        if nothing or "default" in text.lower():
            return action.help
        return super()._get_help_string(action)
