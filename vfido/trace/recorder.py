"""Recording a running key's traffic: every CTAPHID packet (a ``HidRunner`` packet observer)
and every decoded request/response (a handler wrapper), to a JSON-lines file and a ring buffer
that the control socket's ``log`` command reads. The decoder is imported by the first
recorder, not by `vfido run` without ``--trace``."""

from __future__ import annotations

import collections
import errno
import json
import logging
import os
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from vfido.transports.handler import CtapHandler, Transaction, WrappedHandler

log = logging.getLogger("vfido.trace")

#: Records kept in memory for the control socket's ``log`` command.
DEFAULT_RING_SIZE = 1000


def open_trace_file(path: Path) -> IO[str]:
    """Open ``path`` for appending, created 0600 (an existing trace is made 0600); never
    through a symlink, and never a file that is not a trace already (`--trace` naming the
    keystore's database, or any other file by mistake, would get lines appended to it).
    Raises OSError."""
    try:
        fd = os.open(
            path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
        )
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # O_NOFOLLOW's answer to a symlink: say it in words
            raise OSError(f"{path} is a symbolic link: name the file itself") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(f"{path} is not a regular file")
        if st.st_uid not in _own_uids():
            # A file another user made (in /tmp, say) stays theirs to read: RP IDs, user
            # names and credential IDs of this key would go to them.
            raise OSError(
                f"{path} belongs to another user (uid {st.st_uid}): name a file of your own"
            )
        if st.st_size and not _starts_a_trace(os.pread(fd, 4096, 0)):
            raise OSError(f"{path} is not a vfido trace: refusing to append to it")
        if st.st_size and os.pread(fd, 1, st.st_size - 1) != b"\n":
            os.write(fd, b"\n")  # a run cut off mid-line: this run's records start a line
        if stat.S_IMODE(st.st_mode) != 0o600:
            os.fchmod(fd, 0o600)
        return os.fdopen(fd, "a", encoding="utf-8", buffering=1)
    except BaseException:
        os.close(fd)
        raise


def _own_uids() -> set[int]:
    """The users whose trace files this process may append to: itself, and under sudo the
    user who ran sudo (`sudo vfido run --trace ~/t.jsonl` after a run of their own)."""
    uids = {os.geteuid()}
    sudo_uid = os.environ.get("SUDO_UID", "")
    if os.geteuid() == 0 and sudo_uid.isdigit():
        uids.add(int(sudo_uid))
    return uids


def _starts_a_trace(head: bytes) -> bool:
    """Whether ``head`` (a file's first bytes) begins with the record every trace starts with."""
    first = head.split(b"\n", 1)[0]
    try:
        record = json.loads(first)
    except (ValueError, RecursionError):  # [[[[... nested too deep is no trace either
        return False
    return isinstance(record, dict) and record.get("type") == "start"


class _Tx:
    __slots__ = ("cid", "command", "id", "name", "params", "proto", "start")

    def __init__(
        self,
        tx_id: int,
        cid: int,
        proto: str,
        command: int | None,
        name: str,
        params: dict[str, Any],
        start: float,
    ) -> None:
        self.id, self.cid, self.proto, self.command = tx_id, cid, proto, command
        self.name, self.params, self.start = name, params, start


class TraceRecorder:
    """Records packets (:meth:`packet`, a ``HidRunner`` packet observer) and decoded
    requests (the handler returned by :meth:`wrap`) to a JSON-lines file and a ring buffer.

    Thread-safe; never raises into the transport or the authenticator.
    """

    def __init__(
        self,
        path: Path | None = None,
        *,
        ring_size: int = DEFAULT_RING_SIZE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self._clock = clock
        self._lock = threading.Lock()
        self._seq = 0
        self._tx = 0
        self._ring: collections.deque[dict[str, Any]] = collections.deque(maxlen=ring_size)
        self._file: IO[str] | None = open_trace_file(path) if path is not None else None
        from vfido.trace import decode, names  # the decoder: loaded by a key that records

        self._decode, self._names = decode, names
        from vfido import __version__

        self._emit({"type": "start", "version": __version__, "pid": os.getpid()})

    def __repr__(self) -> str:
        return f"TraceRecorder(path={str(self.path) if self.path else None!r})"

    def close(self) -> None:
        with self._lock:
            file, self._file = self._file, None
        if file is not None:
            file.close()

    # -- recording ------------------------------------------------------------------------

    def _emit(self, record: dict[str, Any], *, ring: bool = True) -> dict[str, Any]:
        with self._lock:
            self._seq += 1
            record = {"seq": self._seq, "t": round(self._clock(), 6), **record}
            if ring:
                self._ring.append(record)
            if self._file is not None:
                try:
                    self._file.write(json.dumps(record, separators=(",", ":")) + "\n")
                except (OSError, ValueError) as exc:
                    log.warning(
                        "trace: cannot write %s (%s): tracing to the file stops", self.path, exc
                    )
                    self._file = None
        return record

    def packet(self, direction: str, report: bytes) -> None:
        """A CTAPHID report (``HidRunner.packet_observer``)."""
        try:
            self._packet(direction, bytes(report))
        except Exception:
            log.exception("trace: recording a packet failed")

    def _packet(self, direction: str, report: bytes) -> None:
        if len(report) < 5:
            self._emit({"type": "packet", "dir": direction, "size": len(report)}, ring=False)
            return
        record: dict[str, Any] = {
            "type": "packet",
            "dir": direction,
            "cid": report[:4].hex(),
            "size": len(report),
        }
        ring = False
        names = self._names
        if report[4] & 0x80:
            command = report[4] & 0x7F
            name = names.CTAPHID_COMMANDS.get(command, f"0x{command:02x}")
            record["cmd"] = name
            record["bcnt"] = int.from_bytes(report[5:7], "big") if len(report) >= 7 else None
            payload = report[7:]
            if name in ("CBOR", "MSG") and direction == "in" and payload:
                if name == "CBOR":
                    record["ctap"] = names.CTAP_COMMANDS.get(payload[0], f"0x{payload[0]:02x}")
                elif len(payload) > 1:
                    record["ctap"] = names.CTAP1_INS.get(payload[1], f"INS 0x{payload[1]:02x}")
            elif name == "INIT" and direction == "out" and len(payload) >= 12:
                record["new_cid"] = payload[8:12].hex()
            elif name == "KEEPALIVE" and payload:
                record["status"] = names.KEEPALIVE_STATUS.get(payload[0], f"0x{payload[0]:02x}")
            elif name == "ERROR" and payload:
                record["error"] = names.CTAPHID_ERRORS.get(payload[0], f"0x{payload[0]:02x}")
            elif name == "LOCK" and direction == "in" and payload:
                record["seconds"] = payload[0]
            ring = name not in ("CBOR", "MSG", "KEEPALIVE")
        else:
            record["cont"] = report[4]
        self._emit(record, ring=ring)

    def event(self, name: str, **fields: Any) -> None:
        self._emit({"type": "event", "event": name, **fields})

    def _begin(self, proto: str, cid: int, payload: bytes) -> _Tx:
        try:
            if proto == "CBOR":
                command, name, params = self._decode.decode_cbor_request(payload)
            else:
                command, name, params = self._decode.decode_msg_request(payload)
        except Exception:
            command, name, params = None, "undecodable", {}
        with self._lock:
            self._tx += 1
            tx_id = self._tx
        tx = _Tx(tx_id, cid, proto, command, name, params, self._clock())
        self._emit(
            {
                "type": "request",
                "tx": tx_id,
                "cid": f"{cid:08x}",
                "proto": proto,
                "command": name,
                "params": params,
                "bytes": len(payload),
            }
        )
        return tx

    def _end(self, tx: _Tx, response: bytes | None) -> None:
        result: dict[str, Any]
        if response is None:
            status, result = "EXCEPTION", {}
        else:
            try:
                if tx.proto == "CBOR":
                    status, result = self._decode.decode_cbor_response(tx.command, response)
                else:
                    status, result = self._decode.decode_msg_response(tx.command, response)
            except Exception:
                status, result = "undecodable", {}
        size = len(response or b"")
        summary = (
            f"{tx.proto} {self._decode.request_summary(tx.name, tx.params)} "
            f"{self._decode.response_summary(status, size, result)}"
        )
        self._emit(
            {
                "type": "response",
                "tx": tx.id,
                "cid": f"{tx.cid:08x}",
                "proto": tx.proto,
                "command": tx.name,
                "params": tx.params,
                "status": status,
                "result": result,
                "bytes": size,
                "duration": round(self._clock() - tx.start, 6),
                "summary": summary,
            }
        )

    def wrap(self, handler: CtapHandler) -> TracingHandler:
        """``handler`` with every request and response recorded."""
        return TracingHandler(handler, self)

    # -- reading --------------------------------------------------------------------------

    def recent(self, limit: int = 100, since: int = 0) -> list[dict[str, Any]]:
        """The last ``limit`` ring records with ``seq`` > ``since`` (oldest first)."""
        with self._lock:
            items = [r for r in self._ring if r["seq"] > since]
        return items[-limit:] if limit > 0 else []

    @property
    def last_seq(self) -> int:
        with self._lock:
            return self._seq


class TracingHandler(WrappedHandler):
    """A :class:`CtapHandler` that records what passes through it to a :class:`TraceRecorder`."""

    def __init__(self, inner: CtapHandler, recorder: TraceRecorder) -> None:
        super().__init__(inner)
        self._recorder = recorder

    def _call(
        self, proto: str, payload: bytes, transaction: Transaction, call: Callable[[], bytes]
    ) -> bytes:
        recorder = self._recorder
        try:
            tx: _Tx | None = recorder._begin(proto, transaction.channel, payload)
        except Exception:
            log.exception("trace: recording a request failed")
            tx = None
        response: bytes | None = None
        try:
            response = call()
            return response
        finally:
            if tx is not None:
                try:
                    recorder._end(tx, response)
                except Exception:
                    log.exception("trace: recording a response failed")

    def handle_cbor(self, request: bytes, transaction: Transaction) -> bytes:
        return self._call(
            "CBOR", request, transaction, lambda: self.inner.handle_cbor(request, transaction)
        )

    def handle_msg(self, apdu: bytes, transaction: Transaction) -> bytes:
        return self._call(
            "MSG", apdu, transaction, lambda: self.inner.handle_msg(apdu, transaction)
        )

    def power_cycle(self) -> None:
        self._recorder.event("power_cycle")
        self.inner.power_cycle()


# --- control socket ----------------------------------------------------------------------------


def add_trace_commands(server: Any, recorder: TraceRecorder) -> None:
    """Register ``log`` on a :class:`vfido.control.ControlServer`.

    ``{"cmd": "log", "limit": 100, "since": 0}`` answers ``{"records": [...], "last": seq}``:
    the most recent (at most ``limit``) requests, responses, CTAPHID control packets (INIT,
    WINK, CANCEL, LOCK, ERROR, PING) and events with ``seq`` greater than ``since``, oldest
    first, as in the trace file. Poll with ``since`` = the previous ``last``.
    """
    from vfido.control import CommandError

    def handler(args: dict[str, Any]) -> dict[str, Any]:
        limit, since = args.get("limit", 100), args.get("since", 0)
        for name, value in (("limit", limit), ("since", since)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise CommandError(f"{name} must be a non-negative integer")
        return {"records": recorder.recent(limit, since), "last": recorder.last_seq}

    server.register("log", handler, accepts=("limit", "since"))
