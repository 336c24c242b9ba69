"""The control socket of a running key, client side: :class:`ControlClient` (one connection,
JSON lines), finding a running key (:func:`find_key`), and :class:`KeyController`, the Python
API over every command (``vfido ctl`` is its command line).

Before it sends anything (a private key, an approval) the client checks that the socket's
directory is the user's own and private -- without ``$XDG_RUNTIME_DIR``, another user could
have made ``/tmp/vfido-<uid>`` first -- and that the process serving the socket is the
user's (``SO_PEERCRED``; root is trusted either way).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import stat
from pathlib import Path
from typing import Any, TypeVar

from vfido.authenticator.behaviours import b64url
from vfido.control import server
from vfido.control.server import ControlError, NotRunningError, _alive, _read_lines
from vfido.transports.sockets import peer_uid

#: The longest answer read from a key: a keystore's every credential (100,000 of them) or a
#: page of trace records fits; a key's answers are trusted no further than that.
MAX_ANSWER = 256 * 1024 * 1024

_T = TypeVar("_T")


def _check_client_dir(directory: Path, socket: Path | None = None) -> None:
    """The directory of a control socket a client is about to use must be the user's own
    and private, as the server makes it (:func:`_private_dir`). Raises ControlError, which
    names the ``socket`` (as the user gave it) first: the user named the socket, not its
    directory (`--socket /tmp` said only "/ is accessible by other users")."""
    said = f"control socket {socket}: " if socket is not None else ""
    try:
        st = os.lstat(directory)
    except FileNotFoundError:
        return  # nothing there: connecting finds no key
    except OSError as exc:
        raise ControlError(f"{said}cannot inspect {directory}: {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise ControlError(f"{said}{directory} is not a directory")
    if st.st_uid not in (os.getuid(), 0):
        raise ControlError(
            f"{said}{directory} belongs to another user (uid {st.st_uid}): refusing to use "
            "its control sockets (remove it)"
        )
    if stat.S_IMODE(st.st_mode) & 0o077:
        raise ControlError(
            f"{said}{directory} is accessible by other users (mode "
            f"{stat.S_IMODE(st.st_mode):03o}): refusing to use its control sockets"
        )


class ControlClient:
    """One connection to a key's control socket."""

    def __init__(self, path: Path, timeout: float = 10.0) -> None:
        """Connect to ``path``, after checking its directory and before sending anything,
        that the key is served by this user (or root). Raises ControlError."""
        self.path = path
        if os.path.isdir(path):  # e.g. the directory of the sockets (it has none of its own)
            raise ControlError(f"{path} is a directory, not a control socket")
        directory = Path(os.path.abspath(path)).parent
        if not os.path.lexists(path) and os.path.isdir(directory):
            # Nothing to connect to, whoever owns the directory: say that, not what would be
            # wrong with the directory if there were (a newcomer got "/ is accessible by other
            # users" for a mistyped --socket).
            raise NotRunningError(f"no vfido key answers on {path}: start one with `vfido run`")
        _check_client_dir(directory, path)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        self._sock.settimeout(timeout)
        try:
            self._sock.connect(str(path))
            uid = peer_uid(self._sock)
        except OSError as exc:
            self._sock.close()
            if exc.errno in (errno.ENOENT, errno.ECONNREFUSED):
                raise NotRunningError(
                    f"no vfido key answers on {path}: start one with `vfido run`"
                ) from None
            raise ControlError(f"cannot connect to {path}: {exc.strerror or exc}") from None
        if uid not in (os.getuid(), 0):
            self._sock.close()
            raise ControlError(
                f"the control socket {path} is served by another user (uid {uid}): "
                "refusing to talk to it"
            )
        self._lines = _read_lines(self._sock, MAX_ANSWER, "the key's answer")
        #: Why this connection can no longer be used (an answer over the limit leaves the
        #: stream mid-line), if it cannot.
        self._broken: str | None = None

    def call(self, cmd: str, timeout: float | None = None, **args: Any) -> dict[str, Any]:
        """Send one command; the answer without ``ok``. Raises ControlError if not ok."""
        return self.request(cmd, args, timeout)

    def request(
        self, cmd: str, args: dict[str, Any], timeout: float | None = None
    ) -> dict[str, Any]:
        """:meth:`call` with the arguments as a mapping (any names, ``timeout`` included:
        `vfido ctl call` passes what the user wrote). Raises ControlError if not ok."""
        if "cmd" in args:
            raise ControlError('"cmd" is the command itself, not an argument')
        request = json.dumps({"cmd": cmd, **args}).encode() + b"\n"
        if len(request) > server.MAX_LINE:  # the key would hang up on it
            raise ControlError(f"the request is longer than {server.MAX_LINE} bytes")
        if self._broken is not None:
            raise ControlError(f"control socket {self.path}: {self._broken}: connect again")
        if timeout is not None:
            self._sock.settimeout(timeout)
        try:
            try:
                self._sock.sendall(request)
            except (BrokenPipeError, ConnectionResetError):
                # The key answered before we sent (a refusal: too many connections) and
                # closed: its line is still there to read, and says why.
                line = next(self._lines, None)
                if line is None:
                    raise
            else:
                line = next(self._lines, None)
        except TimeoutError:
            # A late answer would put the next one out of step (and the reader is spent).
            self._broken = f"closed after the key did not answer {cmd!r} in time"
            self._sock.close()
            raise ControlError(f"the key did not answer {cmd!r} in time") from None
        except (OSError, ValueError) as exc:
            self._broken = f"closed after an error ({exc})"
            self._sock.close()
            raise ControlError(f"control socket {self.path}: {exc}") from None
        if line is None:
            raise ControlError(f"the key closed the control connection ({self.path})")
        try:
            answer = json.loads(line)
        except (ValueError, RecursionError):
            answer = None
        if not isinstance(answer, dict):
            raise ControlError("malformed answer from the key")
        if not answer.pop("ok", False):
            error = ControlError(str(answer.get("error", "the key refused the command")))
            code = answer.get("webdriver_error")
            error.webdriver_error = code if isinstance(code, str) else None
            raise error
        return answer

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _search_dirs(directory: Path | None) -> list[Path]:
    """``directory``, else the default one and, if it is another, the fallback
    (:func:`vfido.control.server.fallback_socket_dir`) when it exists."""
    if directory is not None:
        return [directory]
    found = [server.socket_dir()]
    fallback = server.fallback_socket_dir()
    if fallback is not None and fallback not in found and fallback.is_dir():
        found.append(fallback)
    return found


def running_keys(directory: Path | None = None) -> list[Path]:
    """Control sockets in ``directory`` (default: see :func:`_search_dirs`) that something
    answers on."""
    candidates: list[Path] = []
    for place in _search_dirs(directory):
        try:
            candidates += sorted(place.glob("*.sock"))
        except OSError:
            continue
    return [p for p in candidates if _alive(p)]


def find_key(
    name: str | None = None,
    path: Path | None = None,
    *,
    directory: Path | None = None,
    prefer_pending: bool = False,
) -> Path:
    """The control socket to talk to: ``path``, else ``name``, else the only running key
    (with ``prefer_pending``: the only one with a pending request). Raises ControlError."""
    if path is not None:
        return path
    if name is not None:
        paths = [server.socket_path(name, place) for place in _search_dirs(directory)]
        return next((p for p in paths if _alive(p)), paths[0])
    keys = running_keys(directory)
    if not keys:
        where = directory or server.socket_dir()
        stale: list[Path] = []
        for place in _search_dirs(directory):
            with contextlib.suppress(OSError):
                stale += [p for p in place.glob("*.sock") if p.is_socket()]
        found = (
            f"{len(stale)} control socket(s) in {where}, but no key answers on them"
            " (left by keys that were killed; the next `vfido run` reclaims its name)"
            if stale
            else f"no control socket in {where}"
        )
        raise NotRunningError(f"no vfido key is running ({found}): start one with `vfido run`")
    if len(keys) == 1:
        return keys[0]
    if prefer_pending:
        waiting = []
        for key in keys:
            with contextlib.suppress(ControlError), ControlClient(key, timeout=2) as client:
                if client.call("pending").get("pending"):
                    waiting.append(key)
        if len(waiting) == 1:
            return waiting[0]
    names = ", ".join(p.stem for p in keys)
    raise ControlError(f"several vfido keys are running ({names}): choose one with --name")


# --- the Python API over every command ---------------------------------------------------


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
        return self._client.request(command, args, timeout)

    def request(self, command: str, args: dict[str, Any]) -> dict[str, Any]:
        """Any command, its arguments a mapping of any names (`vfido ctl call`)."""
        return self._client.request(command, args)

    def _member(
        self,
        kind: type[_T],
        member: str,
        command: str,
        /,
        timeout: float | None = None,
        **args: Any,
    ) -> _T:
        """The member ``member`` of ``command``'s answer, which must be a ``kind``: an answer
        without it is one ControlError, not a KeyError (whatever serves the socket)."""
        value = self.call(command, timeout, **args).get(member)
        if not isinstance(value, kind):
            raise ControlError(f"malformed answer from the key: {command!r} without {member!r}")
        return value

    # -- the key ---------------------------------------------------------------------------

    def commands(self) -> list[str]:
        return self._member(list, "commands", "commands")

    def status(self) -> dict[str, Any]:
        return self.call("status")

    def info(self) -> dict[str, Any]:
        """getInfo as the host sees it, with CTAP names."""
        return self._member(dict, "info", "info")

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
        return self._member(list, "credentials", "credentials", **args)

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
        return self._member(dict, "credential", "credentials-add", **args)

    def remove_credential(self, credential_id: bytes | str) -> str:
        """Delete a discoverable credential (``bytes``, or base64url / a unique prefix)."""
        text = b64url(credential_id) if isinstance(credential_id, bytes) else credential_id
        return self._member(str, "removed", "credentials-remove", id=text)

    # -- the W3C WebDriver virtual-authenticator model (vfido.virtual_authenticator) -------

    def webauthn_options(self) -> dict[str, Any]:
        """The Add Virtual Authenticator options the key behaves as."""
        return self._member(dict, "options", "webauthn-authenticator")

    def webauthn_add_credential(self, params: dict[str, Any]) -> dict[str, Any]:
        """WebDriver's Add Credential (Credential Parameters JSON); the credential."""
        return self._member(dict, "credential", "webauthn-add-credential", **params)

    def webauthn_get_credentials(self) -> list[dict[str, Any]]:
        """WebDriver's Get Credentials (private keys included)."""
        return self._member(list, "credentials", "webauthn-get-credentials")

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
        return self._member(list, "pending", "pending", timeout=wait + self._timeout, wait=wait)

    def approve(self, wait: float = 0.0, request_id: int | None = None) -> dict[str, Any]:
        """Approve the pending request (waiting up to ``wait`` s for one); returns it."""
        return self._answer("approve", wait, request_id)

    def deny(self, wait: float = 0.0, request_id: int | None = None) -> dict[str, Any]:
        return self._answer("deny", wait, request_id)

    def _answer(self, command: str, wait: float, request_id: int | None) -> dict[str, Any]:
        args: dict[str, Any] = {"wait": wait}
        if request_id is not None:
            args["id"] = request_id
        return self._member(dict, "request", command, timeout=wait + self._timeout, **args)

    # -- behaviours ------------------------------------------------------------------------

    def behaviours(self) -> dict[str, Any]:
        """The active behaviours: name -> value (None for those without one)."""
        return self._member(dict, "active", "behaviours")

    def behaviour_catalogue(self) -> list[dict[str, Any]]:
        return self._member(list, "behaviours", "behaviours")

    def misbehaviour_root_pem(self) -> str:
        """The CA certificate of the ``attestation=untrusted|expired`` certificates."""
        return self._member(str, "misbehaviour_root_pem", "behaviours")

    def set_behaviour(self, name: str, value: str | int | float | None = None) -> dict[str, Any]:
        """Turn a behaviour on (see :mod:`vfido.authenticator.behaviours`); the active ones."""
        return self._member(dict, "active", "behaviours", name=name, value=value)

    def clear_behaviour(self, name: str | None = None) -> dict[str, Any]:
        """Turn one behaviour (None: every one) off; the active ones."""
        args: dict[str, Any] = {"clear": True}
        if name is not None:
            args["name"] = name
        return self._member(dict, "active", "behaviours", **args)

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
