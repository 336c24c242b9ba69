"""The floor key of the Chromium benchmark (issue #16): the least a USB security key can do.

    python3 bench/floorkey.py [-v] [--serial S] [--rp-id localhost] [--shape FILE]
    # needs /dev/uhid

One thread, one ``/dev/uhid`` file, everything answered from memory:

* a fixed P-256 key pair and a fixed credential ID (derived from constants: every run is the
  same key);
* getInfo precomputed (versions ``FIDO_2_0`` only, options ``rk``/``up``/``plat`` only, no
  PIN, no UV: Chromium makes a non-discoverable credential with no PIN and no UV);
* makeCredential precomputed per RP ID at start (``--rp-id``; attestation format ``none``:
  no attestation signature, so no key generation and no signing at all);
* getAssertion from a cache keyed by the request's bytes (which hold its clientDataHash): on
  a miss it signs once, with the fixed key, for real, then returns the cached bytes.

``--shape FILE`` (the benchmark's ``floor_sized`` key) says as many bytes as a full key, still
from memory: the JSON file (written by ``bench/chromium.py`` from vfido itself; see
:class:`Shape`) gives a getInfo response, answered verbatim, status byte included (so the
browser sees the same getInfo and sends the same requests as to that key); an attestation
certificate chain; and a credential ID length. Then the one credential ID has that length
(still derived from constants), and makeCredential answers attestation format ``packed``:
``{alg: -7, sig, x5c: the file's certificates}``, ``sig`` a real ECDSA signature by the fixed
key over authenticatorData || clientDataHash, cached by the request's bytes like getAssertion
(signed once on a miss). The statement does not verify against the certificate (whose key
is not the floor's): Chromium does not verify it when the page asks for attestation
``none`` (the benchmark's page does; the page then gets format ``none``). INIT still
announces ``NMSG`` (below), whatever versions the getInfo lists.

CTAPHID: INIT (channels), PING (echo), WINK, CBOR; MSG is refused (``NMSG`` in INIT's
capabilities: no U2F); CANCEL is ignored (nothing ever waits); no keepalives (every answer is
immediate), no MSG_TIMEOUT. Written for the benchmark, not as a key to use: it makes the same
credential for everybody and checks no presence. It shares no code with ``vfido.transports``
(it is the floor they are measured against): the UHID events and the framing are its own.

``-v`` writes one line per CTAP command to stderr (``cbor makeCredential 00 hit`` ...), which
the guest check reads to count what served the browser; SIGTERM destroys the device
(``UHID_DESTROY``) and prints the command counts.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import struct
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

# --- CTAPHID framing (sans-IO) ------------------------------------------------------------------

REPORT = 64
INIT_DATA = REPORT - 7  # payload bytes in an initialization packet
CONT_DATA = REPORT - 5  # payload bytes in a continuation packet
MAX_MESSAGE = INIT_DATA + 128 * CONT_DATA  # 7609
BROADCAST = 0xFFFFFFFF
TYPE_INIT = 0x80

PING, MSG, LOCK, INIT, WINK, CBOR, CANCEL, ERROR = 0x01, 0x03, 0x04, 0x06, 0x08, 0x10, 0x11, 0x3F
ERR_INVALID_CMD, ERR_INVALID_LEN, ERR_INVALID_SEQ, ERR_INVALID_CHANNEL = 0x01, 0x03, 0x04, 0x0B
CAPABILITIES = 0x04 | 0x08  # CBOR, NMSG (no CTAPHID_MSG: no U2F)


def frames(cid: int, command: int, data: bytes) -> list[bytes]:
    """A CTAPHID message as 64-byte reports: an initialization packet, then continuations."""
    head = cid.to_bytes(4, "big")
    out = [head + bytes([TYPE_INIT | command]) + struct.pack(">H", len(data)) + data[:INIT_DATA]]
    for seq, start in enumerate(range(INIT_DATA, len(data), CONT_DATA)):
        out.append(head + bytes([seq]) + data[start : start + CONT_DATA])
    return [r.ljust(REPORT, b"\0") for r in out]


@dataclass
class Message:
    cid: int
    command: int
    payload: bytes


class Reassembler:
    """Reports in, whole messages out; one message at a time (a browser sends one request and
    waits for its answer). A framing error comes out as an ERROR message to send back."""

    def __init__(self) -> None:
        self._cid = 0
        self._command = 0
        self._want = 0
        self._seq = 0
        self._data: bytearray | None = None

    def feed(self, report: bytes) -> Message | None:
        """The message ``report`` completes, or an ERROR to answer, or None."""
        if len(report) != REPORT:
            return None
        cid = int.from_bytes(report[:4], "big")
        if report[4] & TYPE_INIT:
            command, want = report[4] & 0x7F, (report[5] << 8) | report[6]
            if want > MAX_MESSAGE:
                self._data = None
                return Message(cid, ERROR, bytes([ERR_INVALID_LEN]))
            self._cid, self._command, self._want, self._seq = cid, command, want, 0
            self._data = bytearray(report[7 : 7 + want])
        elif self._data is None or cid != self._cid:
            return None  # a continuation of nothing we are reading
        elif report[4] != self._seq:
            self._data = None
            return Message(cid, ERROR, bytes([ERR_INVALID_SEQ]))
        else:
            self._seq += 1
            self._data += report[5 : 5 + self._want - len(self._data)]
        if len(self._data) < self._want:
            return None
        message = Message(self._cid, self._command, bytes(self._data))
        self._data = None
        return message


# --- the fixed key and its answers (sans-IO) ----------------------------------------------------

ES256 = -7
ECDSA = ec.ECDSA(hashes.SHA256())
AAGUID = hashlib.sha256(b"vfido floor key aaguid").digest()[:16]
CREDENTIAL_ID = hashlib.sha256(b"vfido floor key credential").digest()


def credential_id(length: int = len(CREDENTIAL_ID)) -> bytes:
    """The fixed credential ID, ``length`` bytes (:data:`CREDENTIAL_ID`, then SHAKE-256 of it)."""
    more = hashlib.shake_256(CREDENTIAL_ID).digest(max(0, length - len(CREDENTIAL_ID)))
    return (CREDENTIAL_ID + more)[:length]


_SECP256R1_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
PRIVATE_KEY = ec.derive_private_key(
    int.from_bytes(hashlib.sha256(b"vfido floor key private").digest(), "big")
    % (_SECP256R1_ORDER - 1)
    + 1,
    ec.SECP256R1(),
)
PUBLIC_KEY = PRIVATE_KEY.public_key()
SIGN_COUNT = 1

OK = 0x00
CTAP2_ERR_CBOR_UNEXPECTED_TYPE = 0x11
CTAP2_ERR_INVALID_CBOR = 0x12
CTAP2_ERR_MISSING_PARAMETER = 0x14
CTAP2_ERR_CREDENTIAL_EXCLUDED = 0x19
CTAP2_ERR_UNSUPPORTED_ALGORITHM = 0x26
CTAP2_ERR_NO_CREDENTIALS = 0x2E
CTAP1_ERR_INVALID_COMMAND = 0x01

MAKE_CREDENTIAL, GET_ASSERTION, GET_INFO = 0x01, 0x02, 0x04
COMMAND_NAMES = {
    MAKE_CREDENTIAL: "makeCredential",
    GET_ASSERTION: "getAssertion",
    GET_INFO: "getInfo",
}

FLAG_UP, FLAG_AT = 0x01, 0x40


def cose_public_key() -> dict[int, Any]:
    numbers = PUBLIC_KEY.public_numbers()
    return {
        1: 2,  # kty EC2
        3: ES256,
        -1: 1,  # P-256
        -2: numbers.x.to_bytes(32, "big"),
        -3: numbers.y.to_bytes(32, "big"),
    }


def _ok(body: dict[Any, Any]) -> bytes:
    return bytes([OK]) + cbor2.dumps(body, canonical=True)


def get_info_response() -> bytes:
    return _ok(
        {
            1: ["FIDO_2_0"],
            3: AAGUID,
            4: {"rk": False, "up": True, "plat": False},
            5: 1200,  # maxMsgSize
        }
    )


def _attested_auth_data(rp_id: str, cred_id: bytes) -> bytes:
    return (
        hashlib.sha256(rp_id.encode()).digest()
        + bytes([FLAG_UP | FLAG_AT])
        + struct.pack(">I", SIGN_COUNT)
        + AAGUID
        + struct.pack(">H", len(cred_id))
        + cred_id
        + cbor2.dumps(cose_public_key(), canonical=True)
    )


def make_credential_response(rp_id: str) -> bytes:
    """The one credential, attestation format ``none``, for ``rp_id``."""
    return _ok({1: "none", 2: _attested_auth_data(rp_id, CREDENTIAL_ID), 3: {}})


def packed_make_credential_response(
    rp_id: str, client_data_hash: bytes, cred_id: bytes, x5c: tuple[bytes, ...]
) -> bytes:
    """The one credential (ID ``cred_id``), attestation format ``packed`` with the
    certificates ``x5c``, signed by the fixed key (``--shape``; the cache's miss path)."""
    auth_data = _attested_auth_data(rp_id, cred_id)
    signature = PRIVATE_KEY.sign(auth_data + client_data_hash, ECDSA)
    statement = {"alg": ES256, "sig": signature, "x5c": list(x5c)}
    return _ok({1: "packed", 2: auth_data, 3: statement})


def get_assertion_response(
    rp_id: str, client_data_hash: bytes, up: bool, cred_id: bytes = CREDENTIAL_ID
) -> bytes:
    """Signs authenticatorData || clientDataHash with the fixed key (the cache's miss path)."""
    auth_data = (
        hashlib.sha256(rp_id.encode()).digest()
        + bytes([FLAG_UP if up else 0])
        + struct.pack(">I", SIGN_COUNT)
    )
    signature = PRIVATE_KEY.sign(auth_data + client_data_hash, ECDSA)
    return _ok(
        {1: {"type": "public-key", "id": cred_id}, 2: auth_data, 3: signature},
    )


class ShapeError(ValueError):
    """A shape file that cannot be used (one line: what is wrong)."""


@dataclass(frozen=True)
class Shape:
    """What a full key says, for ``--shape FILE``: a JSON object with ``get_info`` (hex: the
    whole getInfo response, status byte first), ``x5c`` (hex strings: the attestation
    certificates, leaf first) and ``credential_id_length`` (1-1023)."""

    get_info: bytes
    x5c: tuple[bytes, ...]
    credential_id_length: int

    def to_json(self) -> str:
        return json.dumps(
            {
                "get_info": self.get_info.hex(),
                "x5c": [cert.hex() for cert in self.x5c],
                "credential_id_length": self.credential_id_length,
            },
            indent=1,
        )

    @classmethod
    def from_json(cls, text: str) -> Shape:
        try:
            data = json.loads(text)
            info = bytes.fromhex(data["get_info"])
            x5c = tuple(bytes.fromhex(cert) for cert in data["x5c"])
            length = data["credential_id_length"]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ShapeError(f"not a shape file ({type(exc).__name__}: {exc})") from None
        if not info or info[0] != OK:
            raise ShapeError("get_info is not a successful getInfo response")
        if not x5c or not all(x5c):
            raise ShapeError("x5c holds no certificate")
        if not isinstance(length, int) or isinstance(length, bool) or not 1 <= length <= 1023:
            raise ShapeError(f"credential_id_length {length!r} is not in 1-1023")
        return cls(info, x5c, length)


def _error(code: int) -> bytes:
    return bytes([code])


@dataclass
class Answer:
    response: bytes
    command: str
    hit: bool
    up: bool | None = None  # getAssertion's up option (None: not a getAssertion)


@dataclass
class FloorKey:
    """CTAP2 requests (CBOR command byte + parameters) to responses, from memory."""

    rp_ids: tuple[str, ...] = ("localhost",)
    shape: Shape | None = None
    cache: dict[bytes, Answer] = field(default_factory=dict)
    _made: dict[str, bytes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.shape is None:
            self.credential_id = CREDENTIAL_ID
            self._info = get_info_response()
            self._made = {rp_id: make_credential_response(rp_id) for rp_id in self.rp_ids}
        else:
            self.credential_id = credential_id(self.shape.credential_id_length)
            self._info = self.shape.get_info

    def answer(self, request: bytes) -> Answer:
        cached = self.cache.get(request)
        if cached is not None:
            return Answer(cached.response, cached.command, True, cached.up)
        answer = self._compute(request)
        if request[:1] in (bytes([MAKE_CREDENTIAL]), bytes([GET_ASSERTION])):
            self.cache[request] = answer
        return answer

    def _compute(self, request: bytes) -> Answer:
        command = request[0] if request else -1
        name = COMMAND_NAMES.get(command, f"0x{command & 0xFF:02x}")
        if command == GET_INFO:
            return Answer(self._info, name, True)
        if command not in (MAKE_CREDENTIAL, GET_ASSERTION):
            return Answer(_error(CTAP1_ERR_INVALID_COMMAND), name, False)
        try:
            params = cbor2.loads(request[1:])
        except Exception:
            return Answer(_error(CTAP2_ERR_INVALID_CBOR), name, False)
        if not isinstance(params, dict):
            return Answer(_error(CTAP2_ERR_CBOR_UNEXPECTED_TYPE), name, False)
        if command == MAKE_CREDENTIAL:
            return Answer(self._make_credential(params), name, False)
        up = (params.get(5) or {}).get("up", True) is not False
        return Answer(self._get_assertion(params, up), name, False, up)

    def _make_credential(self, params: dict[Any, Any]) -> bytes:
        rp, algs = params.get(2), params.get(4)
        if not isinstance(rp, dict) or not isinstance(rp.get("id"), str) or not algs:
            return _error(CTAP2_ERR_MISSING_PARAMETER)
        if not any(isinstance(a, dict) and a.get("alg") == ES256 for a in algs):
            return _error(CTAP2_ERR_UNSUPPORTED_ALGORITHM)
        if self._lists_ours(params.get(5)):
            return _error(CTAP2_ERR_CREDENTIAL_EXCLUDED)
        rp_id: str = rp["id"]
        if self.shape is not None:
            client_data_hash = params.get(1)
            if not isinstance(client_data_hash, bytes):
                return _error(CTAP2_ERR_MISSING_PARAMETER)
            return packed_make_credential_response(
                rp_id, client_data_hash, self.credential_id, self.shape.x5c
            )
        made = self._made.get(rp_id)
        if made is None:
            made = self._made[rp_id] = make_credential_response(rp_id)
        return made

    def _get_assertion(self, params: dict[Any, Any], up: bool) -> bytes:
        rp_id, client_data_hash = params.get(1), params.get(2)
        if not isinstance(rp_id, str) or not isinstance(client_data_hash, bytes):
            return _error(CTAP2_ERR_MISSING_PARAMETER)
        if not self._lists_ours(params.get(3)):
            return _error(CTAP2_ERR_NO_CREDENTIALS)  # discoverable or someone else's
        return get_assertion_response(rp_id, client_data_hash, up, self.credential_id)

    def _lists_ours(self, descriptors: Any) -> bool:
        return isinstance(descriptors, list) and any(
            isinstance(d, dict) and d.get("id") == self.credential_id for d in descriptors
        )


class FloorDevice:
    """CTAPHID over the floor key: a 64-byte report in, the reports to send back out."""

    def __init__(
        self,
        key: FloorKey,
        log: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.key = key
        self.counts: Counter[str] = Counter()
        self._log = log
        self._clock = clock
        self._started = 0.0
        self._reader = Reassembler()
        self._next_cid = 1

    def receive(self, report: bytes) -> list[bytes]:
        """The reports answering ``report`` (none until it completes a message). With a log,
        each CTAP command's line ends with the time from its first report to its answer."""
        if self._log is not None and len(report) > 4 and report[4] & TYPE_INIT:
            self._started = self._clock()
        message = self._reader.feed(report)
        if message is None:
            return []
        cid, command, payload = message.cid, message.command, message.payload
        if command == ERROR:
            return frames(cid, ERROR, payload)
        if command == INIT:
            if len(payload) != 8:
                return frames(cid, ERROR, bytes([ERR_INVALID_LEN]))
            new = cid
            if cid == BROADCAST:
                new, self._next_cid = self._next_cid, self._next_cid % 0xFFFFFFFE + 1
            self.counts["INIT"] += 1
            if self._log is not None:
                self._log("ctaphid INIT")
            reply = payload + new.to_bytes(4, "big") + bytes([2, 0, 0, 1, CAPABILITIES])
            return frames(cid, INIT, reply)
        if cid in (0, BROADCAST):
            return frames(cid, ERROR, bytes([ERR_INVALID_CHANNEL]))
        if command == CANCEL:
            self.counts["CANCEL"] += 1
            return []
        if command == PING:
            return frames(cid, PING, payload)
        if command == WINK:
            return frames(cid, WINK, b"")
        if command != CBOR or not payload:
            self.counts[f"refused 0x{command:02x}"] += 1
            return frames(cid, ERROR, bytes([ERR_INVALID_CMD]))
        answer = self.key.answer(payload)
        status = answer.response[0]
        up = "" if answer.up is None else f" up={int(answer.up)}"
        line = f"cbor {answer.command} {status:02x}{up} {'hit' if answer.hit else 'miss'}"
        self.counts[line.rsplit(" ", 1)[0]] += 1
        reports = frames(cid, CBOR, answer.response)
        if self._log is not None:
            self._log(f"{line} {(self._clock() - self._started) * 1e3:.3f}ms")
        return reports


# --- /dev/uhid ----------------------------------------------------------------------------------

UHID_DESTROY, UHID_START, UHID_STOP, UHID_OPEN, UHID_CLOSE, UHID_OUTPUT = 1, 2, 3, 4, 5, 6
UHID_GET_REPORT, UHID_GET_REPORT_REPLY, UHID_CREATE2, UHID_INPUT2 = 9, 10, 11, 12
UHID_SET_REPORT, UHID_SET_REPORT_REPLY = 13, 14
UHID_EVENT_SIZE = 4380  # sizeof(struct uhid_event): u32 type + the 4376-byte union
UHID_DATA_MAX = 4096
EIO = 5

#: The FIDO HID report descriptor: usage page 0xF1D0, usage CTAPHID, 64-byte input and
#: output reports without report IDs.
REPORT_DESCRIPTOR = bytes.fromhex(
    "06d0f1"  # usage page (FIDO alliance)
    "0901"  # usage (CTAPHID)
    "a101"  # collection (application)
    "0920"
    "1500"
    "26ff00"
    "7508"
    "9540"
    "8102"  # input data: 64 bytes
    "0921"
    "1500"
    "26ff00"
    "7508"
    "9540"
    "9102"  # output data: 64 bytes
    "c0"  # end collection
)


def uhid_event(kind: int, body: bytes = b"") -> bytes:
    return struct.pack("<I", kind) + body.ljust(UHID_EVENT_SIZE - 4, b"\0")


def uhid_create2(name: str, serial: str, vendor: int = 0x1209, product: int = 0x0001) -> bytes:
    body = (
        name.encode()[:127].ljust(128, b"\0")
        + b"vfido-floorkey".ljust(64, b"\0")  # phys
        + serial.encode()[:63].ljust(64, b"\0")  # uniq
        + struct.pack("<HHIIII", len(REPORT_DESCRIPTOR), 0x03, vendor, product, 0, 0)
        + REPORT_DESCRIPTOR
    )
    return uhid_event(UHID_CREATE2, body)


def uhid_input2(report: bytes) -> bytes:
    return uhid_event(UHID_INPUT2, struct.pack("<H", len(report)) + report)


def output_report(event: bytes) -> bytes:
    """The CTAPHID report of a UHID_OUTPUT event: a hidraw write of an unnumbered report is
    the report ID 0x00 then the 64 bytes."""
    (size,) = struct.unpack_from("<H", event, 4 + UHID_DATA_MAX)
    data = event[4 : 4 + min(size, UHID_DATA_MAX)]
    return data[1:] if len(data) == REPORT + 1 else data


def find_hidraw(serial: str) -> str | None:
    for device in Path("/sys/devices/virtual/misc/uhid").glob("*"):
        try:
            uevent = (device / "uevent").read_text()
            nodes = sorted(p.name for p in (device / "hidraw").iterdir())
        except OSError:
            continue
        if f"HID_UNIQ={serial}\n" in uevent and nodes:
            return f"/dev/{nodes[0]}"
    return None


class Stop(Exception):
    pass


def _stop(signum: int, frame: FrameType | None) -> None:
    raise Stop


def serve(
    serial: str, rp_ids: tuple[str, ...], verbose: bool, shape: Shape | None = None
) -> Counter[str]:
    def log(line: str) -> None:
        sys.stderr.write(f"{time.monotonic():.6f} {line}\n")
        sys.stderr.flush()

    device = FloorDevice(FloorKey(rp_ids, shape), log if verbose else None)
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    fd = os.open("/dev/uhid", os.O_RDWR | os.O_CLOEXEC)
    try:
        os.write(fd, uhid_create2("vfido floor key", serial))
        try:
            deadline = time.monotonic() + 30
            while (path := find_hidraw(serial)) is None and time.monotonic() < deadline:
                time.sleep(0.02)
            if path is None:
                raise RuntimeError(f"no hidraw node for {serial} after 30 s")
            log(f"hidraw: {path}")
            while True:
                event = os.read(fd, UHID_EVENT_SIZE)
                kind = struct.unpack_from("<I", event)[0]
                if kind == UHID_OUTPUT:
                    for report in device.receive(output_report(event)):
                        os.write(fd, uhid_input2(report))
                elif kind == UHID_GET_REPORT:
                    request_id = event[4:8]
                    os.write(
                        fd, uhid_event(UHID_GET_REPORT_REPLY, request_id + struct.pack("<H", EIO))
                    )
                elif kind == UHID_SET_REPORT:
                    request_id = event[4:8]
                    os.write(
                        fd, uhid_event(UHID_SET_REPORT_REPLY, request_id + struct.pack("<H", EIO))
                    )
        except Stop:
            pass
        finally:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            os.write(fd, uhid_event(UHID_DESTROY))
    finally:
        os.close(fd)
    log(f"stopped; commands: {dict(sorted(device.counts.items()))}")
    return device.counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--serial", default="vfido-floor", help="the HID serial (uniq)")
    parser.add_argument(
        "--rp-id", action="append", default=[], help="RP IDs to precompute (default localhost)"
    )
    parser.add_argument(
        "--shape", metavar="FILE", help="answer with a full key's shapes (JSON, see Shape)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="one line per command")
    args = parser.parse_args(argv)
    shape = None
    if args.shape is not None:
        try:
            shape = Shape.from_json(Path(args.shape).read_text())
        except (OSError, UnicodeDecodeError, ShapeError) as exc:
            parser.error(f"--shape {args.shape}: {exc}")
    serve(args.serial, tuple(args.rp_id) or ("localhost",), args.verbose, shape)
    return 0


if __name__ == "__main__":
    sys.exit(main())
