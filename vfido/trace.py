"""Traces: every CTAPHID packet and every decoded CTAP request/response, as JSON lines.

``vfido run --trace FILE`` appends one JSON object per line to FILE (created 0600, never
followed through a symlink); ``vfido trace show FILE`` prints it readably, one transaction per
block. The running key also keeps the recent records in memory (a ring buffer), which the
control socket's ``log`` command returns (``vfido ctl log``, the dashboard).

Records (every one has ``seq``, a number increasing by one, and ``t``, unix time in seconds):

``{"type": "start", "version", "pid"}``
    the recorder started (one per ``vfido run``).
``{"type": "packet", "dir": "in"|"out", "cid": "1a2b3c4d", "size": 64, ...}``
    one CTAPHID report. An initialization packet has ``"cmd"`` (``INIT``, ``CBOR``, ``MSG``,
    ``KEEPALIVE``...) and ``"bcnt"``; a continuation packet has ``"cont"`` (its sequence
    number). Payloads are never recorded, only: the CTAP command of a CBOR/MSG request, the
    new channel of an INIT response, the status of a KEEPALIVE, the code of an ERROR.
``{"type": "request", "tx", "cid", "proto": "CBOR"|"MSG", "command", "params", "bytes"}``
    a complete request handed to the authenticator, decoded (CBOR maps with field names).
``{"type": "response", "tx", "cid", "proto", "command", "status", "result", "bytes",
"duration", "summary"}``
    its answer: the status name (``OK``, ``PIN_INVALID``...; for CTAP1 the status word), the
    decoded result (authenticator data decoded too), and a one-line ``summary``.
``{"type": "event", "event": "power_cycle"}``
    the device was power-cycled.

Byte strings appear as ``"h'<hex>'"`` only for fields that are identifiers or public data
(clientDataHash, rpIdHash, user and credential IDs, AAGUID, credential public keys,
signatures, certificates, CTAP1 challenge/application/key handle). Every other byte string
is replaced by ``"<N bytes>"``, and these secrets by ``"<redacted N bytes>"``:

* ``pinUvAuthParam`` (every command), ``pinHashEnc``, ``newPinEnc`` (clientPIN);
* ``pinUvAuthToken`` (the encrypted PIN/UV token in clientPIN responses);
* ``keyAgreement`` public keys of the ECDH exchanges (clientPIN, hmac-secret): only their
  type is shown; the shared secrets never cross the wire;
* hmac-secret / hmac-secret-mc ``saltEnc``, ``saltAuth`` and their outputs in authData;
* ``credBlob`` (the blob sent at makeCredential and returned by getAssertion);
* ``largeBlobKey`` (makeCredential, getAssertion, credentialManagement responses) and the
  large-blob array itself (``set`` in largeBlobs requests, ``config`` in responses).

Raw payloads are never written, so what is not decoded cannot leak.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import io
import json
import logging
import os
import stat
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import cbor2

from vfido.authenticator.responses import GET_INFO_MEMBERS
from vfido.safetext import visible
from vfido.transports.handler import BOTH_PROTOCOLS, CtapHandler, Transaction

log = logging.getLogger(__name__)

#: Records kept in memory for the control socket's ``log`` command.
DEFAULT_RING_SIZE = 1000

# --- names ---------------------------------------------------------------------------------

CTAPHID_COMMANDS = {
    0x01: "PING",
    0x03: "MSG",
    0x04: "LOCK",
    0x06: "INIT",
    0x08: "WINK",
    0x10: "CBOR",
    0x11: "CANCEL",
    0x3B: "KEEPALIVE",
    0x3F: "ERROR",
}
CTAPHID_ERRORS = {
    0x01: "INVALID_CMD",
    0x02: "INVALID_PAR",
    0x03: "INVALID_LEN",
    0x04: "INVALID_SEQ",
    0x05: "MSG_TIMEOUT",
    0x06: "CHANNEL_BUSY",
    0x0A: "LOCK_REQUIRED",
    0x0B: "INVALID_CHANNEL",
    0x7F: "OTHER",
}
KEEPALIVE_STATUS = {0x01: "PROCESSING", 0x02: "UPNEEDED"}

CTAP_COMMANDS = {
    0x01: "makeCredential",
    0x02: "getAssertion",
    0x04: "getInfo",
    0x06: "clientPIN",
    0x07: "reset",
    0x08: "getNextAssertion",
    0x09: "bioEnrollment",
    0x0A: "credentialManagement",
    0x0B: "selection",
    0x0C: "largeBlobs",
    0x0D: "config",
    0x40: "bioEnrollmentPreview",
    0x41: "credentialManagementPreview",
}

_CM = {
    1: "subCommand",
    2: "subCommandParams",
    3: "pinUvAuthProtocol",
    4: "pinUvAuthParam",
}
REQUEST_FIELDS: dict[int, dict[int, str]] = {
    0x01: {
        1: "clientDataHash",
        2: "rp",
        3: "user",
        4: "pubKeyCredParams",
        5: "excludeList",
        6: "extensions",
        7: "options",
        8: "pinUvAuthParam",
        9: "pinUvAuthProtocol",
        10: "enterpriseAttestation",
        11: "attestationFormatsPreference",
    },
    0x02: {
        1: "rpId",
        2: "clientDataHash",
        3: "allowList",
        4: "extensions",
        5: "options",
        6: "pinUvAuthParam",
        7: "pinUvAuthProtocol",
    },
    0x06: {
        1: "pinUvAuthProtocol",
        2: "subCommand",
        3: "keyAgreement",
        4: "pinUvAuthParam",
        5: "newPinEnc",
        6: "pinHashEnc",
        9: "permissions",
        10: "rpId",
    },
    0x09: {1: "modality", 2: "subCommand", 3: "subCommandParams", 4: "pinUvAuthProtocol"},
    0x0A: _CM,
    0x41: _CM,
    0x0C: {
        1: "get",
        2: "set",
        3: "offset",
        4: "length",
        5: "pinUvAuthParam",
        6: "pinUvAuthProtocol",
    },
    0x0D: _CM,
}
_ASSERTION = {
    1: "credential",
    2: "authData",
    3: "signature",
    4: "user",
    5: "numberOfCredentials",
    6: "userSelected",
    7: "largeBlobKey",
}
_CM_RESPONSE = {
    1: "existingResidentCredentialsCount",
    2: "maxPossibleRemainingResidentCredentialsCount",
    3: "rp",
    4: "rpIDHash",
    5: "totalRPs",
    6: "user",
    7: "credentialID",
    8: "publicKey",
    9: "totalCredentials",
    10: "credProtect",
    11: "largeBlobKey",
    12: "thirdPartyPayment",
}
RESPONSE_FIELDS: dict[int, dict[int, str]] = {
    0x01: {
        1: "fmt",
        2: "authData",
        3: "attStmt",
        4: "epAtt",
        5: "largeBlobKey",
        6: "unsignedExtensionOutputs",
    },
    0x02: _ASSERTION,
    0x08: _ASSERTION,
    0x04: GET_INFO_MEMBERS,
    0x06: {
        1: "keyAgreement",
        2: "pinUvAuthToken",
        3: "pinRetries",
        4: "powerCycleState",
        5: "uvRetries",
    },
    0x0A: _CM_RESPONSE,
    0x41: _CM_RESPONSE,
    0x0C: {1: "config"},
}
SUB_COMMANDS: dict[int, dict[int, str]] = {
    0x06: {
        1: "getPINRetries",
        2: "getKeyAgreement",
        3: "setPIN",
        4: "changePIN",
        5: "getPinToken",
        6: "getPinUvAuthTokenUsingUvWithPermissions",
        7: "getUVRetries",
        9: "getPinUvAuthTokenUsingPinWithPermissions",
    },
    0x0A: {
        1: "getCredsMetadata",
        2: "enumerateRPsBegin",
        3: "enumerateRPsGetNextRP",
        4: "enumerateCredentialsBegin",
        5: "enumerateCredentialsGetNextCredential",
        6: "deleteCredential",
        7: "updateUserInformation",
    },
    0x0D: {
        1: "enableEnterpriseAttestation",
        2: "toggleAlwaysUv",
        3: "setMinPINLength",
        0xFF: "vendorPrototype",
    },
}
SUB_COMMANDS[0x41] = SUB_COMMANDS[0x0A]
_CM_PARAMS = {1: "rpIDHash", 2: "credentialID", 3: "user"}
SUB_COMMAND_PARAMS: dict[int, dict[int, str]] = {
    0x0A: _CM_PARAMS,
    0x41: _CM_PARAMS,
    0x0D: {1: "newMinPINLength", 2: "minPinLengthRPIDs", 3: "forceChangePin"},
}
PERMISSIONS = {0x01: "mc", 0x02: "ga", 0x04: "cm", 0x08: "be", 0x10: "lbw", 0x20: "acfg"}

CTAP1_INS = {0x01: "REGISTER", 0x02: "AUTHENTICATE", 0x03: "VERSION"}
CTAP1_STATUS = {
    0x9000: "NO_ERROR",
    0x6985: "CONDITIONS_NOT_SATISFIED",
    0x6A80: "WRONG_DATA",
    0x6700: "WRONG_LENGTH",
    0x6D00: "INS_NOT_SUPPORTED",
    0x6E00: "CLA_NOT_SUPPORTED",
    0x6F00: "UNKNOWN",
}
AUTH_DATA_FLAGS = (
    (0x01, "UP"),
    (0x04, "UV"),
    (0x08, "BE"),
    (0x10, "BS"),
    (0x40, "AT"),
    (0x80, "ED"),
)


def _status_names() -> dict[int, str]:
    from vfido.authenticator.errors import CtapStatus

    return {int(s): s.name for s in CtapStatus}


CTAP_STATUS = _status_names()

#: Fields whose byte strings are secrets: replaced by "<redacted N bytes>".
SECRET_FIELDS = frozenset(
    {
        "pinUvAuthParam",
        "pinHashEnc",
        "newPinEnc",
        "pinUvAuthToken",
        "saltEnc",
        "saltAuth",
        "hmac-secret",
        "hmac-secret-mc",
        "credBlob",
        "largeBlobKey",
        "set",
        "config",
    }
)
#: Fields whose byte strings are identifiers or public data: shown in hex.
PUBLIC_BYTES_FIELDS = frozenset(
    {
        "clientDataHash",
        "rpIdHash",
        "rpIDHash",
        "id",
        "aaguid",
        "credentialId",
        "sig",
        "signature",
        "x5c",
        "challenge",
        "application",
        "keyHandle",
        "publicKey",
        "certificate",
    }
)


# --- JSON conversion with redaction ------------------------------------------------------------


def _hex(data: bytes) -> str:
    return f"h'{data.hex()}'"


def _bytes(name: str, data: bytes) -> str:
    if name in SECRET_FIELDS:
        return f"<redacted {len(data)} bytes>"
    if name in PUBLIC_BYTES_FIELDS:
        return _hex(data)
    return f"<{len(data)} bytes>"


#: COSE key type parameters by kty (RFC 9053; AKP: draft-ietf-cose-dilithium).
_COSE_KEY_PARAMS: dict[Any, dict[int, str]] = {
    1: {-1: "crv", -2: "x"},  # OKP
    2: {-1: "crv", -2: "x", -3: "y"},  # EC2
    3: {-1: "n", -2: "e"},  # RSA
    7: {-1: "pub"},  # AKP (ML-DSA)
}


def _cose_key(value: Any, *, public: bool) -> Any:
    """A COSE_Key: its parameters named; coordinates shown only for credential keys."""
    if not isinstance(value, Mapping):
        return _jsonify("", value)
    kty = value.get(1)
    names = {1: "kty", 2: "kid", 3: "alg", **_COSE_KEY_PARAMS.get(kty, {})}
    out: dict[str, Any] = {}
    for k, v in value.items():
        name = names.get(k, str(k)) if isinstance(k, int) else str(k)
        if isinstance(v, bytes):
            out[name] = _hex(v) if public else f"<{len(v)} bytes>"
        else:
            out[name] = _jsonify(name, v)
    return out


def _jsonify(name: str, value: Any) -> Any:
    """CBOR value -> JSON value; byte strings by the rules above, keyed by field ``name``."""
    if isinstance(value, bytes | bytearray):
        return _bytes(name, bytes(value))
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    if isinstance(value, list | tuple):
        return [_jsonify(name, v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _jsonify(str(k), v) for k, v in value.items()}
    return str(type(value).__name__)


def _hmac_secret_input(value: Any) -> Any:
    if not isinstance(value, Mapping):
        return _jsonify("hmac-secret", value)
    names = {1: "keyAgreement", 2: "saltEnc", 3: "saltAuth", 4: "pinUvAuthProtocol"}
    out: dict[str, Any] = {}
    for k, v in value.items():
        name = names.get(k, str(k)) if isinstance(k, int) else str(k)
        out[name] = _cose_key(v, public=False) if name == "keyAgreement" else _jsonify(name, v)
    return out


def _extensions_input(value: Any) -> Any:
    if not isinstance(value, Mapping):
        return _jsonify("extensions", value)
    out: dict[str, Any] = {}
    for k, v in value.items():
        name = str(k)
        if name in ("hmac-secret", "hmac-secret-mc") and isinstance(v, Mapping):
            out[name] = _hmac_secret_input(v)
        else:
            out[name] = _jsonify(name, v)
    return out


def decode_auth_data(data: bytes) -> dict[str, Any]:
    """Authenticator data with named parts; extension outputs redacted as documented."""
    if len(data) < 37:
        return {"malformed": f"<{len(data)} bytes>"}
    flags = data[32]
    out: dict[str, Any] = {
        "rpIdHash": _hex(data[:32]),
        "flags": [name for bit, name in AUTH_DATA_FLAGS if flags & bit],
        "signCount": struct.unpack(">I", data[33:37])[0],
    }
    stream = io.BytesIO(data[37:])
    try:
        if flags & 0x40:
            aaguid = stream.read(16)
            (length,) = struct.unpack(">H", stream.read(2))
            credential_id = stream.read(length)
            out["aaguid"] = _hex(aaguid)
            out["credentialId"] = _hex(credential_id)
            out["publicKey"] = _cose_key(cbor2.CBORDecoder(stream).decode(), public=True)
        if flags & 0x80:
            out["extensions"] = _jsonify("", cbor2.CBORDecoder(stream).decode())
    except Exception:  # a hostile or truncated authData: say so, never fail
        out["malformed"] = True
    return out


def _named(fields: Mapping[int, str], m: Mapping[Any, Any]) -> dict[str, Any]:
    return {(fields.get(k, str(k)) if isinstance(k, int) else str(k)): v for k, v in m.items()}


def decode_cbor_request(payload: bytes) -> tuple[int | None, str, dict[str, Any]]:
    """(command byte, command name, params) of a CTAPHID_CBOR request payload."""
    if not payload:
        return None, "empty", {}
    command = payload[0]
    name = CTAP_COMMANDS.get(command, f"0x{command:02x}")
    if len(payload) == 1:
        return command, name, {}
    try:
        m = cbor2.loads(payload[1:])
    except Exception:
        return command, name, {"undecodable": f"<{len(payload) - 1} bytes>"}
    if not isinstance(m, Mapping):
        return command, name, {"undecodable": f"<{len(payload) - 1} bytes>"}
    fields = _named(REQUEST_FIELDS.get(command, {}), m)
    params: dict[str, Any] = {}
    for key, value in fields.items():
        if key == "extensions":
            params[key] = _extensions_input(value)
        elif key == "keyAgreement":
            params[key] = _cose_key(value, public=False)
        elif key == "subCommand" and isinstance(value, int):
            params[key] = SUB_COMMANDS.get(command, {}).get(value, value)
        elif key == "subCommandParams" and isinstance(value, Mapping):
            sub_fields = SUB_COMMAND_PARAMS.get(command, {})
            params[key] = {k: _jsonify(k, v) for k, v in _named(sub_fields, value).items()}
        elif key == "permissions" and isinstance(value, int):
            params[key] = [n for bit, n in PERMISSIONS.items() if value & bit]
        else:
            params[key] = _jsonify(key, value)
    return command, name, params


def decode_cbor_response(command: int | None, response: bytes) -> tuple[str, dict[str, Any]]:
    """(status name, result) of a CTAPHID_CBOR response to ``command``."""
    if not response:
        return "empty", {}
    status = CTAP_STATUS.get(response[0], f"0x{response[0]:02x}")
    if len(response) == 1:
        return status, {}
    try:
        m = cbor2.loads(response[1:])
    except Exception:
        return status, {"undecodable": f"<{len(response) - 1} bytes>"}
    if not isinstance(m, Mapping):
        return status, {"undecodable": f"<{len(response) - 1} bytes>"}
    fields = _named(RESPONSE_FIELDS.get(command or -1, {}), m)
    result: dict[str, Any] = {}
    for key, value in fields.items():
        if key == "authData" and isinstance(value, bytes):
            result[key] = decode_auth_data(value)
        elif key == "keyAgreement":
            result[key] = _cose_key(value, public=False)
        elif key == "publicKey":
            result[key] = _cose_key(value, public=True)
        elif key == "attStmt" and isinstance(value, Mapping):
            result[key] = {str(k): _jsonify(str(k), v) for k, v in value.items()}
        else:
            result[key] = _jsonify(key, value)
    return status, result


def _apdu_data(apdu: bytes) -> bytes:
    if len(apdu) >= 7 and apdu[4] == 0:  # extended length
        length = int.from_bytes(apdu[5:7], "big")
        return apdu[7 : 7 + length]
    if len(apdu) > 5:
        return apdu[5 : 5 + apdu[4]]
    return b""


def decode_msg_request(apdu: bytes) -> tuple[int | None, str, dict[str, Any]]:
    """(INS, name, params) of a CTAP1/U2F APDU."""
    if len(apdu) < 4:
        return None, "malformed", {"bytes": len(apdu)}
    ins = apdu[1]
    name = CTAP1_INS.get(ins, f"INS 0x{ins:02x}")
    params: dict[str, Any] = {"cla": apdu[0], "p1": apdu[2], "p2": apdu[3]}
    data = _apdu_data(apdu)
    if ins in (0x01, 0x02) and len(data) >= 64:
        params["challenge"] = _hex(data[:32])
        params["application"] = _hex(data[32:64])
        if ins == 0x02 and len(data) >= 65:
            params["keyHandle"] = _hex(data[65 : 65 + data[64]])
    return ins, name, params


def decode_msg_response(ins: int | None, response: bytes) -> tuple[str, dict[str, Any]]:
    if len(response) < 2:
        return "malformed", {}
    sw = int.from_bytes(response[-2:], "big")
    status = CTAP1_STATUS.get(sw, f"SW 0x{sw:04x}")
    data = response[:-2]
    result: dict[str, Any] = {}
    try:
        if sw == 0x9000 and ins == 0x01 and len(data) > 67:
            length = data[66]
            result["publicKey"] = _hex(data[1:66])
            result["keyHandle"] = _hex(data[67 : 67 + length])
            result["certificateAndSignature"] = f"<{len(data) - 67 - length} bytes>"
        elif sw == 0x9000 and ins == 0x02 and len(data) >= 5:
            result["userPresence"] = data[0]
            result["counter"] = int.from_bytes(data[1:5], "big")
            result["signature"] = _hex(data[5:])
        elif sw == 0x9000 and ins == 0x03:
            result["version"] = data.decode("ascii", "replace")
    except Exception:
        result["malformed"] = True
    return status, result


# --- one-line summaries ----------------------------------------------------------------------


def _short(value: Any, width: int = 16) -> str:
    text = str(value)
    if text.startswith("h'") and len(text) > width + 3:
        return text[: width + 2] + "..'"
    return text


def _request_summary(command: str, params: Mapping[str, Any]) -> str:
    parts: list[str] = []
    if "subCommand" in params:
        parts.append(str(params["subCommand"]))
    rp, user = params.get("rp"), params.get("user")
    if isinstance(rp, Mapping) and "id" in rp:
        parts.append(f"rp={rp['id']}")
    if "rpId" in params:
        parts.append(f"rp={params['rpId']}")
    if isinstance(user, Mapping):
        parts.append(f"user={user.get('name') or _short(user.get('id'))}")
    algs = params.get("pubKeyCredParams")
    if isinstance(algs, list):
        parts.append("alg=[" + ",".join(str(a.get("alg")) for a in algs if isinstance(a, Mapping)))
        parts[-1] += "]"
    options = params.get("options")
    if isinstance(options, Mapping):
        parts.extend(f"{k}={str(v).lower()}" for k, v in options.items())
    for key in ("excludeList", "allowList"):
        if isinstance(params.get(key), list):
            parts.append(f"{key}={len(params[key])}")
    extensions = params.get("extensions")
    if isinstance(extensions, Mapping) and extensions:
        parts.append("ext=[" + ",".join(extensions) + "]")
    if isinstance(params.get("permissions"), list):
        parts.append("permissions=" + ",".join(params["permissions"]))
    if "pinUvAuthParam" in params:
        parts.append(f"pinUvAuth=v{params.get('pinUvAuthProtocol', '?')}")
    if "application" in params:
        parts.append(f"app={_short(params['application'])}")
    return " ".join([command, *parts])


def _response_summary(status: str, size: int, result: Mapping[str, Any]) -> str:
    parts = [f"-> {status}", f"{size} bytes"]
    if "fmt" in result:
        parts.append(f"fmt={result['fmt']}")
    auth = result.get("authData")
    if isinstance(auth, Mapping):
        parts.append("flags=" + ",".join(auth.get("flags", [])))
        parts.append(f"count={auth.get('signCount')}")
        if "credentialId" in auth:
            parts.append(f"cred={_short(auth['credentialId'])}")
    credential = result.get("credential")
    if isinstance(credential, Mapping) and "id" in credential:
        parts.append(f"cred={_short(credential['id'])}")
    user = result.get("user")
    if isinstance(user, Mapping):
        parts.append(f"user={user.get('name') or _short(user.get('id'))}")
    for key in ("numberOfCredentials", "pinRetries", "uvRetries", "counter", "version"):
        if key in result:
            parts.append(f"{key}={result[key]}")
    if isinstance(result.get("versions"), list):
        parts.append("versions=" + ",".join(map(str, result["versions"])))
    return " ".join(parts)


# --- the recorder ------------------------------------------------------------------------------


def open_trace_file(path: Path) -> IO[str]:
    """Open ``path`` for appending, created 0600 (an existing file is made 0600); never
    through a symlink. Raises OSError."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(f"{path} is not a regular file")
        if stat.S_IMODE(st.st_mode) != 0o600:
            os.fchmod(fd, 0o600)
        return os.fdopen(fd, "a", encoding="utf-8", buffering=1)
    except BaseException:
        os.close(fd)
        raise


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
        if report[4] & 0x80:
            command = report[4] & 0x7F
            name = CTAPHID_COMMANDS.get(command, f"0x{command:02x}")
            record["cmd"] = name
            record["bcnt"] = int.from_bytes(report[5:7], "big") if len(report) >= 7 else None
            payload = report[7:]
            if name in ("CBOR", "MSG") and direction == "in" and payload:
                if name == "CBOR":
                    record["ctap"] = CTAP_COMMANDS.get(payload[0], f"0x{payload[0]:02x}")
                elif len(payload) > 1:
                    record["ctap"] = CTAP1_INS.get(payload[1], f"INS 0x{payload[1]:02x}")
            elif name == "INIT" and direction == "out" and len(payload) >= 12:
                record["new_cid"] = payload[8:12].hex()
            elif name == "KEEPALIVE" and payload:
                record["status"] = KEEPALIVE_STATUS.get(payload[0], f"0x{payload[0]:02x}")
            elif name == "ERROR" and payload:
                record["error"] = CTAPHID_ERRORS.get(payload[0], f"0x{payload[0]:02x}")
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
                command, name, params = decode_cbor_request(payload)
            else:
                command, name, params = decode_msg_request(payload)
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
                    status, result = decode_cbor_response(tx.command, response)
                else:
                    status, result = decode_msg_response(tx.command, response)
            except Exception:
                status, result = "undecodable", {}
        size = len(response or b"")
        summary = (
            f"{tx.proto} {_request_summary(tx.name, tx.params)} "
            f"{_response_summary(status, size, result)}"
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


class TracingHandler:
    """A :class:`CtapHandler` that records what passes through it to a :class:`TraceRecorder`."""

    def __init__(self, inner: CtapHandler, recorder: TraceRecorder) -> None:
        self.inner = inner
        self._recorder = recorder

    def __repr__(self) -> str:
        return f"TracingHandler({self.inner!r})"

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

    def wink(self) -> None:
        self.inner.wink()

    def supported_protocols(self) -> frozenset[str]:
        """The inner handler's (transports.handler.ProtocolReporter), else both."""
        reporter = getattr(self.inner, "supported_protocols", None)
        return frozenset(reporter()) if callable(reporter) else BOTH_PROTOCOLS

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

    server.register("log", handler)


# --- reading a trace file ----------------------------------------------------------------------


def read_trace(path: Path) -> Iterator[dict[str, Any]]:
    """The records of a trace file (lines that are not JSON objects are skipped)."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                yield record


def _clock_text(t: Any) -> str:
    if not isinstance(t, int | float):
        return "??:??:??.???"
    moment = datetime.datetime.fromtimestamp(t)
    return moment.strftime("%H:%M:%S.") + f"{moment.microsecond // 1000:03d}"


def _cid_text(cid: Any) -> str:
    return f"cid 0x{cid}" if isinstance(cid, str) else "cid ?"


def format_trace(records: Iterable[Mapping[str, Any]], *, details: bool = False) -> Iterator[str]:
    """Readable lines: one block per transaction (request line with its response, keepalives
    counted), one line per CTAPHID control command, packets only with ``details``."""
    keepalives: dict[str, collections.Counter[str]] = {}
    pending_control: dict[tuple[str, str], Mapping[str, Any]] = {}
    for record in records:
        kind = record.get("type")
        when = _clock_text(record.get("t"))
        if kind == "start":
            yield f"{when} trace started (vfido {record.get('version')}, pid {record.get('pid')})"
        elif kind == "event":
            yield f"{when} {record.get('event')}"
        elif kind == "packet":
            cid = str(record.get("cid", "?"))
            cmd = record.get("cmd")
            if details:
                what = cmd if cmd is not None else f"cont {record.get('cont')}"
                extra = "".join(
                    f" {k}={record[k]}"
                    for k in ("bcnt", "ctap", "new_cid", "status", "error", "seconds")
                    if record.get(k) is not None
                )
                arrow = "->" if record.get("dir") == "in" else "<-"
                yield f"{when}   {arrow} {_cid_text(cid)} {what}{extra}"
            if cmd == "KEEPALIVE":
                keepalives.setdefault(cid, collections.Counter())[str(record.get("status"))] += 1
            elif cmd in ("INIT", "PING", "WINK", "CANCEL", "LOCK") and record.get("dir") == "in":
                if cmd == "CANCEL":
                    yield f"{when} {_cid_text(cid)} CANCEL"
                else:
                    pending_control[(cid, str(cmd))] = record
            elif cmd in ("INIT", "PING", "WINK", "LOCK") and record.get("dir") == "out":
                start = pending_control.pop((cid, str(cmd)), None)
                start_when = _clock_text(start.get("t")) if start else when
                result = f" -> new {_cid_text(record['new_cid'])}" if "new_cid" in record else ""
                yield f"{start_when} {_cid_text(cid)} {cmd}{result or ' -> OK'}"
            elif cmd == "ERROR":
                yield f"{when} {_cid_text(cid)} CTAPHID ERROR {record.get('error')}"
        elif kind == "request":
            if details:
                yield (
                    f"{when} {_cid_text(record.get('cid'))} {record.get('proto')} "
                    + str(record.get("command"))
                    + " (request)"
                )
        elif kind == "response":
            start_t = record.get("t")
            duration = record.get("duration")
            if isinstance(start_t, int | float) and isinstance(duration, int | float):
                start_t -= duration
            cid = str(record.get("cid", "?"))
            line = f"{_clock_text(start_t)} {_cid_text(record.get('cid'))} "
            line += str(record.get("summary", ""))
            if isinstance(duration, int | float):
                line += f" ({duration:.3f} s)"
            counts = keepalives.pop(cid, None)
            if counts:
                line += " [keepalive " + ", ".join(f"{n}x {s}" for s, n in counts.items()) + "]"
            yield line
            if details:
                yield "    request:  " + json.dumps(record.get("params", {}), sort_keys=True)
                yield "    response: " + json.dumps(record.get("result", {}), sort_keys=True)


# --- `vfido trace show` ------------------------------------------------------------------------


#: The record types `vfido run --trace` writes; a file with none of them is not a trace.
RECORD_TYPES = frozenset({"start", "event", "packet", "request", "response"})


def cmd_show(args: argparse.Namespace) -> int:
    path = Path(args.file)
    try:
        records = list(read_trace(path))
    except OSError as exc:
        print(f"vfido: error: cannot read {path}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except UnicodeDecodeError:
        print(f"vfido: error: {path} is not a vfido trace (binary data)", file=sys.stderr)
        return 1
    if not any(record.get("type") in RECORD_TYPES for record in records):
        print(
            f"vfido: error: {path} is not a vfido trace (no trace records; "
            "`vfido run --trace FILE` writes one)",
            file=sys.stderr,
        )
        return 1
    for line in format_trace(records, details=args.details):
        print(visible(line))  # RP IDs, user names, anything in the file: never raw
    return 0


def register(sub: Any) -> None:
    """Add ``vfido trace show FILE`` to the ``vfido`` parser."""
    p = sub.add_parser("trace", help="read a trace written by `vfido run --trace FILE`")
    tsub = p.add_subparsers(dest="trace_command", required=True, metavar="ACTION")
    q = tsub.add_parser("show", help="print a trace readably, one transaction per line")
    q.add_argument("file", metavar="FILE", help="the trace file (JSON lines)")
    q.add_argument(
        "--details",
        action="store_true",
        help="also print every packet and the decoded request and response of each transaction",
    )
    q.set_defaults(func=cmd_show)
