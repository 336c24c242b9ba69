"""The control socket of a running key, server side (the client: :mod:`vfido.control.client`).

A Unix stream socket at ``$XDG_RUNTIME_DIR/vfido/<name>.sock`` (without
``$XDG_RUNTIME_DIR``: ``/tmp/vfido-<uid>/<name>.sock``), in a directory of mode 0700 owned
by the user, socket mode 0600; connections from other users are refused (``SO_PEERCRED``).
The client checks the same from its side before it sends anything (a private key, an
approval): the socket's directory must be the user's own and private -- without
``$XDG_RUNTIME_DIR``, another user could have made ``/tmp/vfido-<uid>`` first -- and the
process serving the socket must be the user's (``SO_PEERCRED``; root is trusted either way).
Where another user did make ``/tmp/vfido-<uid>`` (which its owner cannot remove from the
sticky ``/tmp``), servers and clients alike use ``$XDG_CACHE_HOME/vfido/run`` (default
``~/.cache/vfido/run``) instead: the squatter can no longer keep the user from running keys.

Protocol: JSON lines. Each request is one object ``{"cmd": NAME, ...arguments}`` on one line;
each answer is one object on one line, ``{"ok": true, ...}`` or
``{"ok": false, "error": "one human line"}``. A connection may send several requests.

Commands are registered by name (:meth:`ControlServer.register`), each with the argument
names it accepts: a request naming any other is refused, naming the command's arguments,
before the handler runs (a typo such as ``credentail_id`` is an error, not an argument
ignored). A handler takes the request's arguments (a dict, without ``cmd``) and returns the
answer's fields (a dict); it raises :class:`CommandError` for an error answer (any other
exception becomes ``internal error (TYPE)``, never its text). This module registers
``commands``; every other command is registered in one place,
:func:`vfido.control.commands.register_commands`, which also documents each command, its
arguments, answer and errors.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import stat
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vfido.connections import ConnectionTable
from vfido.transports.sockets import SocketPathError, clear_stale_socket, peer_uid

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], dict[str, Any]]

#: Longest request line accepted.
MAX_LINE = 64 * 1024
#: Longest wait a client can ask for (``approve --wait``).
MAX_WAIT = 600.0
#: Connections served at once. When they are all taken, a new one takes the place of the
#: least recently active idle one (waiting for its next request): leaked clients (a test
#: suite's controllers, `approve --wait` loops) locked `vfido approve` out for a minute.
MAX_CONNECTIONS = 16
#: A connection idle for less than this keeps its place (one that just connected or just got
#: an answer is about to send: taking its place would cut off its next command).
EVICT_AFTER = 1.0
#: An idle client connection is dropped after this many seconds.
IDLE_TIMEOUT = 60.0


class ControlError(Exception):
    """A control socket problem, said in one line."""

    #: A ``webauthn-*`` command's WebDriver error code (``invalid argument``...), if any.
    webdriver_error: str | None = None


class NotRunningError(ControlError):
    """No key answers on the control socket."""


class CommandError(Exception):
    """Raised by a handler: the answer is ``{"ok": false, "error": str(exc)}`` (plus
    ``"webdriver_error": CODE`` when given)."""

    def __init__(self, message: str, *, webdriver_error: str | None = None) -> None:
        super().__init__(message)
        self.webdriver_error = webdriver_error


@dataclass(frozen=True)
class _Command:
    """A registered command: its handler and the argument names it accepts."""

    handler: Handler
    #: None: any (a command registered without a declaration, as before there were any).
    accepts: frozenset[str] | None
    #: The WebDriver error code of a refused argument (the ``webauthn-*`` commands).
    webdriver_error: str | None

    def refuse_unknown(self, name: str, args: Iterable[str]) -> CommandError | None:
        """The error answering a request for command ``name`` with an argument this
        command does not accept (it names them, and the ones it does), if it has one."""
        if self.accepts is None:
            return None
        unknown = sorted(set(args) - self.accepts)
        if not unknown:
            return None
        # The names are the client's: quoted (repr: control characters escaped) and cut.
        quoted = ", ".join(repr(arg[:40]) for arg in unknown[:5])
        quoted += ", ..." if len(unknown) > 5 else ""
        plural = "s" if len(unknown) > 1 else ""
        takes = (
            f"its arguments: {', '.join(sorted(self.accepts))}"
            if self.accepts
            else "it takes no arguments"
        )
        return CommandError(
            f"unknown argument{plural} {quoted} to {name} ({takes})",
            webdriver_error=self.webdriver_error,
        )


#: Where the control sockets go without ``$XDG_RUNTIME_DIR`` (a test points it elsewhere).
SHARED_TMP = Path("/tmp")


def runtime_dir() -> Path | None:
    """``$XDG_RUNTIME_DIR`` if it is what the XDG spec says it is: an absolute path to an
    existing directory of this user's. vfido never makes it (a missing one made with all its
    parents, 0777 minus the umask, was another user's to fill); otherwise None."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if not runtime or not os.path.isabs(runtime):
        return None
    try:
        st = os.stat(runtime)
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        return None
    return Path(runtime)


def socket_dir() -> Path:
    """``$XDG_RUNTIME_DIR/vfido``, else ``/tmp/vfido-<uid>``, unless another user made that
    (or it is not a directory): then a directory of the user's own (see the module
    docstring)."""
    runtime = runtime_dir()
    if runtime is not None:
        return runtime / "vfido"
    shared = SHARED_TMP / f"vfido-{os.getuid()}"
    try:
        st = os.lstat(shared)
    except OSError:
        return shared  # not there yet: ours to make
    if stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid():
        return shared
    return fallback_socket_dir() or shared  # nowhere else: its check says whose it is


def fallback_socket_dir() -> Path | None:
    """Where control sockets go when ``/tmp/vfido-<uid>`` is another user's (None with
    ``$XDG_RUNTIME_DIR``, or without a home). Clients look here too: a key started while the
    directory was squatted stays here after the squatter removed it."""
    if runtime_dir() is not None:
        return None
    cache = os.environ.get("XDG_CACHE_HOME")
    if cache and os.path.isabs(cache):
        return Path(cache) / "vfido" / "run"
    home = os.path.expanduser("~")
    return Path(home) / ".cache" / "vfido" / "run" if os.path.isabs(home) else None


def check_key_name(name: str) -> str:
    """``name`` if it can name a key (its control socket ``NAME.sock``, shown in lines and
    lists); raises ValueError."""
    if (
        not name
        or "/" in name
        or name.startswith(".")
        or len(name) > 64
        or not (name.isascii() and name.isprintable())
    ):
        raise ValueError(
            "a key name is 1-64 printable ASCII characters, no '/', not starting with '.'"
        )
    return name


def socket_path(name: str, directory: Path | None = None) -> Path:
    """The control socket of the key ``name`` (:func:`check_key_name`; raises ValueError)."""
    return (directory or socket_dir()) / f"{check_key_name(name)}.sock"


def _private_dir(directory: Path) -> None:
    """Create ``directory`` (0700) or check that it is ours and private. Raises ControlError.

    Only vfido's own directory (:func:`socket_dir`) is tightened to 0700 when found open to
    others. A directory the user chose (``--control-socket /some/dir/k.sock``) that exists
    already is checked, never chmod'ed: it may be shared (``/tmp``, where a chmod 0700 as
    root locks every other user out) or the user's own (their home)."""
    try:
        for parent in reversed(directory.parents):  # missing ones private too, as mkdir -p
            if not parent.exists():  # would make them 0777 minus the umask
                with contextlib.suppress(FileExistsError):
                    os.mkdir(parent, 0o700)
        with contextlib.suppress(FileExistsError):
            os.mkdir(directory, 0o700)
        st = os.lstat(directory)
    except OSError as exc:
        raise ControlError(f"cannot create {directory}: {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise ControlError(f"{directory} is not a directory: remove it")
    if st.st_uid != os.getuid():
        raise ControlError(f"{directory} belongs to another user (uid {st.st_uid}): remove it")
    if st.st_mode & 0o077:
        if directory != socket_dir():
            raise ControlError(
                f"{directory} is accessible by other users (mode "
                f"{stat.S_IMODE(st.st_mode):03o}): put the control socket in a private "
                f"directory (default: {socket_dir()}); vfido does not chmod it"
            )
        try:
            os.chmod(directory, 0o700)
        except OSError as exc:
            raise ControlError(f"{directory} is not private and chmod failed: {exc}") from None


class ControlServer:
    """Serves the control socket on background threads (one per connection)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handlers: dict[str, _Command] = {}
        self._missing: dict[str, str] = {}  # a command this key lacks -> why (the flag)
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self.connections = ConnectionTable(MAX_CONNECTIONS)
        self.register("commands", lambda _args: {"commands": sorted(self._handlers)}, accepts=())

    def register(
        self,
        name: str,
        handler: Handler,
        *,
        accepts: Iterable[str] | None = None,
        webdriver_error: str | None = None,
    ) -> None:
        """Answer ``{"cmd": name, ...}`` with ``handler(args)`` (replaces an earlier one).
        ``accepts``: the argument names the command takes (``()``: none); a request with
        any other is refused before the handler runs, with an error naming these. None
        (the default, for commands registered before declarations existed): any; every
        command vfido registers declares its own.
        ``webdriver_error``: the WebDriver error code that refusal carries (``webauthn-*``).
        Handlers run on the connection's thread, possibly several at once."""
        declared = frozenset(accepts) if accepts is not None else None
        self._handlers[name] = _Command(handler, declared, webdriver_error)

    def lacks(self, name: str, why: str) -> None:
        """This key does not offer ``name``; a request for it is answered ``why`` (e.g. the
        `vfido run` flag it needs) instead of "unknown command"."""
        self._missing[name] = why

    def start(self) -> None:
        """Bind the socket (replacing a stale one) and serve it. Raises ControlError."""
        _private_dir(self.path.parent)
        try:
            clear_stale_socket(  # only a stale socket: never a file named by mistake
                self.path,
                socket.SOCK_STREAM,
                in_use=f"another vfido key is running with control socket {self.path}: "
                "stop it or choose another --name or --control-socket",
            )
        except SocketPathError as exc:
            raise ControlError(str(exc)) from None
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        old_umask = os.umask(0o177)
        try:
            sock.bind(str(self.path))
        except OSError as exc:
            sock.close()
            raise ControlError(
                f"cannot create control socket {self.path}: {exc.strerror or exc}"
            ) from None
        finally:
            os.umask(old_umask)
        os.chmod(self.path, 0o600)
        sock.listen(socket.SOMAXCONN)  # a burst of clients waits, not EAGAIN
        sock.settimeout(0.5)
        self._sock = sock
        self._thread = threading.Thread(target=self._accept_loop, name="control", daemon=True)
        self._thread.start()
        log.debug("control socket %s", self.path)

    def stop(self) -> None:
        self._stopping.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout=5)
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    def __enter__(self) -> ControlServer:
        if self._sock is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _accept_loop(self) -> None:
        sock = self._sock
        assert sock is not None
        while not self._stopping.is_set():
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            except OSError as exc:
                if self._stopping.is_set():
                    break
                log.warning("control socket: accept failed: %s", exc)
                continue
            if not self.connections.admit(conn, EVICT_AFTER):  # all in a command, or new
                _send_line(conn, {"ok": False, "error": "too many control connections"})
                conn.close()
                continue
            threading.Thread(
                target=self._serve_connection, args=(conn,), name="control-conn", daemon=True
            ).start()

    def _serve_connection(self, conn: socket.socket) -> None:
        try:
            with conn:
                uid = peer_uid(conn)
                if uid not in (os.getuid(), 0):
                    log.warning("control socket: refused a connection from uid %d", uid)
                    _send_line(conn, {"ok": False, "error": "permission denied"})
                    return
                conn.settimeout(IDLE_TIMEOUT)
                try:
                    for line in _read_lines(conn):
                        if self._stopping.is_set():
                            return
                        if not self.connections.mark(conn, True):
                            return  # its place was taken just now: the command is not run
                        _send_line(conn, self._dispatch(line))
                        self.connections.mark(conn, False)
                except ValueError as exc:  # one line says why, then the connection ends
                    _send_line(conn, {"ok": False, "error": str(exc)})
                    raise
        except (OSError, ValueError) as exc:
            log.debug("control connection ended: %s", exc)
        finally:
            self.connections.forget(conn)

    def _dispatch(self, line: bytes) -> dict[str, Any]:
        try:
            request = json.loads(line)
        except (ValueError, RecursionError):  # RecursionError: [[[[... nested too deep
            return {"ok": False, "error": "not a JSON object"}
        if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
            return {"ok": False, "error": 'a request is {"cmd": NAME, ...}'}
        name = request.pop("cmd")
        command = self._handlers.get(name)
        if command is None:
            return {"ok": False, "error": self._missing.get(name, f"unknown command {name!r}")}
        try:
            refusal = command.refuse_unknown(name, request)
            if refusal is not None:
                raise refusal
            answer = command.handler(request)
        except CommandError as exc:
            if exc.webdriver_error is not None:
                return {"ok": False, "error": str(exc), "webdriver_error": exc.webdriver_error}
            return {"ok": False, "error": str(exc)}
        except Exception as exc:
            log.error("control command %s failed: %s", name, type(exc).__name__)
            return {"ok": False, "error": f"internal error ({type(exc).__name__})"}
        return {"ok": True, **answer}


def _read_lines(
    conn: socket.socket, limit: int = MAX_LINE, what: str = "request"
) -> Iterator[bytes]:
    """The non-empty lines ``conn`` sends, each at most ``limit`` bytes (a longer one
    raises ValueError naming ``what`` it is). Linear in the bytes read: an answer of many
    megabytes (every credential of a keystore) is searched once, not once per read."""
    buffer = bytearray()
    searched = 0  # no newline before this offset
    while True:
        newline = buffer.find(b"\n", searched)
        # The line so far: whole (a newline came) or not yet; either way held to the limit.
        if (newline if newline >= 0 else len(buffer)) > limit:
            raise ValueError(f"{what} longer than {limit} bytes")
        if newline >= 0:
            line = bytes(buffer[:newline])
            del buffer[: newline + 1]
            searched = 0
            if line.strip():
                yield line
            continue
        searched = len(buffer)
        chunk = conn.recv(65536)
        if not chunk:
            return
        buffer += chunk


def _send_line(conn: socket.socket, obj: dict[str, Any]) -> None:
    with contextlib.suppress(OSError):
        conn.sendall(json.dumps(obj, separators=(",", ":")).encode() + b"\n")


def _alive(path: Path) -> bool:
    """True if something accepts connections on the socket ``path``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as s:
        s.settimeout(2)
        try:
            s.connect(str(path))
        except OSError:
            return False
        return True
