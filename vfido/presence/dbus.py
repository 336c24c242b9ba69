"""A minimal D-Bus client over a Unix socket (enough for desktop notifications).

Implements the parts of the D-Bus specification vfido needs: addresses (``unix:path=``,
``unix:abstract=``), SASL ``EXTERNAL`` authentication, ``Hello``, method calls and replies,
errors, signals, and the wire format for the basic types (``y b n q i u x t d s o g h``),
arrays (``a``, ``a{..}`` as dicts, ``ay`` as bytes), structs and variants
(:class:`Variant`). Messages are marshalled little-endian; both byte orders are read.

A background thread reads the socket: replies go to the waiting :meth:`Connection.call`,
everything else (signals, incoming method calls) to the handlers added with
:meth:`Connection.add_handler`, which run on that thread and must not block.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import socket
import struct
import threading
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from vfido.transports.sockets import peer_uid

log = logging.getLogger("vfido.dbus")  # the name `vfido run` has always logged under

BUS_NAME = "org.freedesktop.DBus"
BUS_PATH = "/org/freedesktop/DBus"
MAX_MESSAGE = 128 * 1024 * 1024


class DBusError(Exception):
    """An error reply (``name``) or a connection problem."""

    def __init__(self, name: str, message: str = "") -> None:
        super().__init__(f"{name}: {message}" if message else name)
        self.name = name
        self.message = message


class MessageType(IntEnum):
    METHOD_CALL = 1
    METHOD_RETURN = 2
    ERROR = 3
    SIGNAL = 4


NO_REPLY_EXPECTED = 0x1

_FIELDS = {
    1: ("path", "o"),
    2: ("interface", "s"),
    3: ("member", "s"),
    4: ("error_name", "s"),
    5: ("reply_serial", "u"),
    6: ("destination", "s"),
    7: ("sender", "s"),
    8: ("signature", "g"),
    9: ("unix_fds", "u"),
}


@dataclass(frozen=True)
class Variant:
    """A D-Bus variant: a value with its own signature."""

    signature: str
    value: Any


@dataclass
class Message:
    type: MessageType
    serial: int = 0
    flags: int = 0
    path: str | None = None
    interface: str | None = None
    member: str | None = None
    error_name: str | None = None
    reply_serial: int | None = None
    destination: str | None = None
    sender: str | None = None
    signature: str = ""
    body: list[Any] = field(default_factory=list)


# --- signatures ---------------------------------------------------------------------------

_FIXED = {"y": "B", "b": "I", "n": "h", "q": "H", "i": "i", "u": "I", "x": "q", "t": "Q"}
_FIXED.update({"d": "d", "h": "I"})
_ALIGN = {"y": 1, "b": 4, "n": 2, "q": 2, "i": 4, "u": 4, "x": 8, "t": 8, "d": 8, "h": 4}
_ALIGN.update({"s": 4, "o": 4, "g": 1, "a": 4, "(": 8, "{": 8, "v": 1})


def split_signature(signature: str) -> list[str]:
    """The complete types of ``signature``: ``"sa{sv}i"`` -> ``["s", "a{sv}", "i"]``."""
    types = []
    i = 0
    while i < len(signature):
        end = _type_end(signature, i)
        types.append(signature[i:end])
        i = end
    return types


def _type_end(sig: str, i: int) -> int:
    if i >= len(sig):
        raise ValueError(f"incomplete signature {sig!r}")
    c = sig[i]
    if c == "a":
        return _type_end(sig, i + 1)
    if c in "({":
        close = ")" if c == "(" else "}"
        j = i + 1
        while j < len(sig) and sig[j] != close:
            j = _type_end(sig, j)
        if j >= len(sig):
            raise ValueError(f"unbalanced signature {sig!r}")
        return j + 1
    if c in _ALIGN:
        return i + 1
    raise ValueError(f"unsupported type {c!r} in signature {sig!r}")


# --- marshalling --------------------------------------------------------------------------


class _Writer:
    def __init__(self) -> None:
        self.buf = bytearray()

    def align(self, n: int) -> None:
        self.buf.extend(b"\0" * (-len(self.buf) % n))

    def write(self, sig: str, value: Any) -> None:
        c = sig[0]
        self.align(_ALIGN[c])
        if c in _FIXED:
            if c == "b":
                value = 1 if value else 0
            self.buf.extend(struct.pack("<" + _FIXED[c], value))
        elif c in "so":
            raw = str(value).encode()
            self.buf.extend(struct.pack("<I", len(raw)) + raw + b"\0")
        elif c == "g":
            raw = str(value).encode()
            self.buf.extend(struct.pack("<B", len(raw)) + raw + b"\0")
        elif c == "v":
            if not isinstance(value, Variant):
                raise TypeError("a 'v' value must be a Variant")
            self.write("g", value.signature)
            self.write(value.signature, value.value)
        elif c == "(":
            for sub, item in zip(split_signature(sig[1:-1]), value, strict=True):
                self.write(sub, item)
        elif c == "a":
            self._write_array(sig[1:], value)
        else:  # pragma: no cover - split_signature rejects the rest
            raise ValueError(sig)

    def _write_array(self, element: str, value: Any) -> None:
        length_at = len(self.buf)
        self.buf.extend(b"\0\0\0\0")
        self.align(_ALIGN[element[0]])
        start = len(self.buf)
        if element == "y":
            self.buf.extend(bytes(value))
        elif element[0] == "{":
            key_sig, value_sig = split_signature(element[1:-1])
            for k, v in dict(value).items():
                self.align(8)
                self.write(key_sig, k)
                self.write(value_sig, v)
        else:
            for item in value:
                self.write(element, item)
        struct.pack_into("<I", self.buf, length_at, len(self.buf) - start)


def marshal(signature: str, values: Sequence[Any]) -> bytes:
    types = split_signature(signature)
    if len(types) != len(values):
        raise ValueError(f"signature {signature!r} needs {len(types)} values, got {len(values)}")
    writer = _Writer()
    for sig, value in zip(types, values, strict=True):
        writer.write(sig, value)
    return bytes(writer.buf)


class _Reader:
    def __init__(self, data: bytes, endian: str, offset: int = 0) -> None:
        self.data = data
        self.endian = endian
        self.pos = offset

    def align(self, n: int) -> None:
        self.pos += -self.pos % n

    def _take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ValueError("truncated D-Bus message")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def read(self, sig: str) -> Any:
        c = sig[0]
        self.align(_ALIGN[c])
        if c in _FIXED:
            fmt = self.endian + _FIXED[c]
            (value,) = struct.unpack(fmt, self._take(struct.calcsize(fmt)))
            return bool(value) if c == "b" else value
        if c in "so":
            (n,) = struct.unpack(self.endian + "I", self._take(4))
            text = self._take(n + 1)[:-1].decode("utf-8", "replace")
            return text
        if c == "g":
            n = self._take(1)[0]
            return self._take(n + 1)[:-1].decode("ascii", "replace")
        if c == "v":
            inner = self.read("g")
            split_signature(inner)
            return Variant(inner, self.read(inner))
        if c == "(":
            return tuple(self.read(sub) for sub in split_signature(sig[1:-1]))
        if c == "a":
            return self._read_array(sig[1:])
        raise ValueError(sig)  # pragma: no cover

    def _read_array(self, element: str) -> Any:
        (n,) = struct.unpack(self.endian + "I", self._take(4))
        if n > MAX_MESSAGE:
            raise ValueError("array too long")
        self.align(_ALIGN[element[0]])
        end = self.pos + n
        if element == "y":
            return bytes(self._take(n))
        if element[0] == "{":
            key_sig, value_sig = split_signature(element[1:-1])
            result: dict[Any, Any] = {}
            while self.pos < end:
                self.align(8)
                key = self.read(key_sig)
                result[key] = self.read(value_sig)
            return result
        items = []
        while self.pos < end:
            items.append(self.read(element))
        return items


def unmarshal(signature: str, data: bytes, endian: str = "<") -> list[Any]:
    reader = _Reader(data, endian)
    return [reader.read(sig) for sig in split_signature(signature)]


def encode_message(msg: Message) -> bytes:
    body = marshal(msg.signature, msg.body)
    fields = []
    for code, (attr, sig) in _FIELDS.items():
        value = msg.signature if attr == "signature" else getattr(msg, attr, None)
        if attr == "unix_fds" or value in (None, ""):
            continue
        fields.append((code, Variant(sig, value)))
    header = marshal(
        "yyyyuua(yv)", [ord("l"), int(msg.type), msg.flags, 1, len(body), msg.serial, fields]
    )
    return header + b"\0" * (-len(header) % 8) + body


def _message_length(head: bytes) -> int:
    """Total length of the message whose first 16 bytes are ``head``."""
    endian = "<" if head[:1] == b"l" else ">"
    if head[:1] not in (b"l", b"B"):
        raise ValueError("bad D-Bus byte order mark")
    body_len, _serial, fields_len = struct.unpack(endian + "III", head[4:16])
    header_len = 16 + fields_len
    total: int = header_len + (-header_len % 8) + body_len
    return total


def decode_message(data: bytes) -> Message:
    endian = "<" if data[:1] == b"l" else ">"
    reader = _Reader(data, endian)
    _order, kind, flags, _version, body_len, serial, fields = (
        reader.read(s) for s in ("y", "y", "y", "y", "u", "u", "a(yv)")
    )
    msg = Message(MessageType(kind), serial=serial, flags=flags)
    for code, variant in fields:
        if code in _FIELDS:
            setattr(msg, _FIELDS[code][0], variant.value)
    reader.align(8)
    body = data[reader.pos : reader.pos + body_len]
    msg.body = unmarshal(msg.signature, body, endian) if msg.signature else []
    return msg


# --- addresses and authentication -----------------------------------------------------------


def session_bus_address() -> str | None:
    """``$DBUS_SESSION_BUS_ADDRESS``, else ``unix:path=$XDG_RUNTIME_DIR/bus`` if it exists."""
    address = os.environ.get("DBUS_SESSION_BUS_ADDRESS")
    if address:
        return address
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.exists(os.path.join(runtime, "bus")):
        return "unix:path=" + os.path.join(runtime, "bus")
    return None


def _socket_address(address: str) -> str | bytes:
    """The first usable Unix socket address of a D-Bus address string."""
    for entry in address.split(";"):
        transport, _, params = entry.partition(":")
        if transport != "unix":
            continue
        values = dict(p.split("=", 1) for p in params.split(",") if "=" in p)
        if "path" in values:
            return urllib.parse.unquote(values["path"])
        if "abstract" in values:
            return b"\0" + urllib.parse.unquote_to_bytes(values["abstract"])
    raise DBusError("vfido.Error.BadAddress", f"no unix socket in D-Bus address {address!r}")


def _readline(sock: socket.socket) -> bytes:
    line = b""
    while not line.endswith(b"\r\n"):
        chunk = sock.recv(1)
        if not chunk:
            raise DBusError("vfido.Error.AuthFailed", "the bus closed the connection")
        line += chunk
        if len(line) > 4096:
            raise DBusError("vfido.Error.AuthFailed", "authentication line too long")
    return line[:-2]


def _authenticate(sock: socket.socket) -> None:
    sock.sendall(b"\0")
    uid = str(os.geteuid()).encode().hex().encode()
    sock.sendall(b"AUTH EXTERNAL " + uid + b"\r\n")
    reply = _readline(sock)
    if not reply.startswith(b"OK "):
        raise DBusError("vfido.Error.AuthFailed", reply.decode("ascii", "replace"))
    sock.sendall(b"BEGIN\r\n")


# --- the connection ---------------------------------------------------------------------------


class _Call:
    def __init__(self) -> None:
        self.event = threading.Event()
        self.reply: Message | None = None


class Connection:
    """A connection to a message bus, authenticated and registered (``Hello``)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._send_lock = threading.Lock()
        self._serials = itertools.count(1)
        self._calls: dict[int, _Call] = {}
        self._calls_lock = threading.Lock()
        self._handlers: list[Callable[[Message], None]] = []
        self._closed = threading.Event()
        self._reader = threading.Thread(target=self._read_loop, name="dbus-reader", daemon=True)
        self.unique_name = ""

    @classmethod
    def open(cls, address: str, timeout: float = 5.0) -> Connection:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        sock.settimeout(timeout)
        try:
            sock.connect(_socket_address(address))
            uid = peer_uid(sock)
            if uid not in (os.getuid(), 0):
                # Whoever serves the bus sees every prompt and answers for the notification
                # server: another user's socket at the address (an abstract name or a path
                # in /tmp, free again once the session's bus is gone) is not our session.
                raise DBusError(
                    "vfido.Error.NoBus",
                    f"the bus at {address} is served by another user (uid {uid}): refusing it",
                )
            _authenticate(sock)
        except OSError as exc:
            sock.close()
            raise DBusError("vfido.Error.NoBus", f"cannot connect to {address}: {exc}") from None
        except DBusError:
            sock.close()
            raise
        sock.settimeout(None)
        conn = cls(sock)
        conn._reader.start()
        try:
            (conn.unique_name,) = conn.call(BUS_NAME, BUS_PATH, BUS_NAME, "Hello", timeout=timeout)
        except DBusError:
            conn.close()
            raise
        return conn

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, msg: Message) -> int:
        """Send ``msg`` with a fresh serial; returns the serial."""
        if self.closed:
            raise DBusError("org.freedesktop.DBus.Error.Disconnected", "connection closed")
        with self._send_lock:
            msg.serial = next(self._serials)
            data = encode_message(msg)
            try:
                self._sock.sendall(data)
            except OSError as exc:
                raise DBusError("org.freedesktop.DBus.Error.Disconnected", str(exc)) from None
        return msg.serial

    def call(
        self,
        destination: str,
        path: str,
        interface: str,
        member: str,
        signature: str = "",
        body: Sequence[Any] = (),
        timeout: float = 5.0,
    ) -> list[Any]:
        """Call a method and wait for its reply (its body). Raises DBusError."""
        msg = Message(
            MessageType.METHOD_CALL,
            path=path,
            interface=interface,
            member=member,
            destination=destination,
            signature=signature,
            body=list(body),
        )
        if self.closed:
            raise DBusError("org.freedesktop.DBus.Error.Disconnected", "connection closed")
        pending = _Call()
        serial = next(self._serials)
        # Register before sending: the reply may come back before send() returns.
        with self._calls_lock:
            self._calls[serial] = pending
        try:
            msg.serial = serial
            data = encode_message(msg)
            with self._send_lock:
                try:
                    self._sock.sendall(data)
                except OSError as exc:
                    raise DBusError("org.freedesktop.DBus.Error.Disconnected", str(exc)) from None
            if not pending.event.wait(timeout):
                raise DBusError("org.freedesktop.DBus.Error.NoReply", f"{member}: no reply")
        finally:
            with self._calls_lock:
                self._calls.pop(serial, None)
        reply = pending.reply
        if reply is None:
            raise DBusError("org.freedesktop.DBus.Error.Disconnected", "connection closed")
        if reply.type is MessageType.ERROR:
            text = reply.body[0] if reply.body and isinstance(reply.body[0], str) else ""
            raise DBusError(reply.error_name or "org.freedesktop.DBus.Error.Failed", text)
        return reply.body

    def add_match(self, rule: str) -> None:
        self.call(BUS_NAME, BUS_PATH, BUS_NAME, "AddMatch", "s", [rule])

    def add_handler(self, handler: Callable[[Message], None]) -> None:
        self._handlers.append(handler)

    def remove_handler(self, handler: Callable[[Message], None]) -> None:
        with contextlib.suppress(ValueError):
            self._handlers.remove(handler)

    def emit(
        self,
        path: str,
        interface: str,
        member: str,
        signature: str = "",
        body: Sequence[Any] = (),
        destination: str | None = None,
    ) -> None:
        self.send(
            Message(
                MessageType.SIGNAL,
                flags=NO_REPLY_EXPECTED,
                path=path,
                interface=interface,
                member=member,
                destination=destination,
                signature=signature,
                body=list(body),
            )
        )

    def reply(self, call: Message, signature: str = "", body: Sequence[Any] = ()) -> None:
        self.send(
            Message(
                MessageType.METHOD_RETURN,
                flags=NO_REPLY_EXPECTED,
                reply_serial=call.serial,
                destination=call.sender,
                signature=signature,
                body=list(body),
            )
        )

    def reply_error(self, call: Message, name: str, text: str) -> None:
        self.send(
            Message(
                MessageType.ERROR,
                flags=NO_REPLY_EXPECTED,
                reply_serial=call.serial,
                destination=call.sender,
                error_name=name,
                signature="s",
                body=[text],
            )
        )

    # -- reading ------------------------------------------------------------------------------

    def _recv_exact(self, n: int) -> bytes:
        chunks = []
        while n:
            chunk = self._sock.recv(min(n, 65536))
            if not chunk:
                raise EOFError
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    def _read_loop(self) -> None:
        try:
            while not self.closed:
                head = self._recv_exact(16)
                total = _message_length(head)
                if total > MAX_MESSAGE:
                    raise ValueError("D-Bus message too large")
                msg = decode_message(head + self._recv_exact(total - 16))
                self._dispatch(msg)
        except (EOFError, OSError, ValueError) as exc:
            if not self.closed:
                log.debug("D-Bus connection lost: %s", exc)
        finally:
            self._closed.set()
            with self._calls_lock:
                calls = list(self._calls.values())
            for call in calls:
                call.event.set()

    def _dispatch(self, msg: Message) -> None:
        if msg.type in (MessageType.METHOD_RETURN, MessageType.ERROR):
            with self._calls_lock:
                call = self._calls.get(msg.reply_serial or 0)
            if call is not None:
                call.reply = msg
                call.event.set()
            return
        if (
            msg.type is MessageType.METHOD_CALL
            and msg.interface == "org.freedesktop.DBus.Peer"
            and msg.member == "Ping"
        ):
            self.reply(msg)
            return
        for handler in list(self._handlers):
            try:
                handler(msg)
            except Exception as exc:
                log.warning("D-Bus handler failed: %s", exc)
