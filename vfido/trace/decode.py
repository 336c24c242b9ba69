"""Decoding CTAP requests and responses into JSON-able records, secrets redacted, and the
one-line summary of a transaction (see :mod:`vfido.trace` for what is shown and what not)."""

from __future__ import annotations

import io
import json
import re
import struct
from collections.abc import Mapping
from typing import Any

import cbor2

from vfido.trace.names import (
    AUTH_DATA_FLAGS,
    CTAP1_INS,
    CTAP1_STATUS,
    CTAP_COMMANDS,
    CTAP_STATUS,
    PERMISSIONS,
    PUBLIC_BYTES_FIELDS,
    REQUEST_FIELDS,
    RESPONSE_FIELDS,
    SUB_COMMAND_PARAMS,
    SUB_COMMANDS,
    is_secret,
)

# --- JSON conversion with redaction ------------------------------------------------------------


def _hex(data: bytes) -> str:
    return f"h'{data.hex()}'"


def _bytes(name: str, data: bytes) -> str:
    if is_secret(name):
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


#: What a summary's own words and values look like: host text that could pass for them is
#: quoted (a user named ``h'00'`` or ``alice -> OK 9 bytes``).
_LOOKS_OURS = re.compile(r"""^(h'|<)|[\s"=]""")


def _text(value: Any) -> str:
    """Text a host chose (an RP ID, a user name), as a summary shows it: as it is, or in JSON
    quotes when it could be read as a byte string, a redaction or more of the line."""
    text = str(value)
    return json.dumps(text, ensure_ascii=False) if _LOOKS_OURS.search(text) else text


def _user(user: Mapping[str, Any]) -> str:
    """A user entity by its name (text), else its id (a byte string)."""
    name = user.get("name")
    return _text(name) if name else _short(user.get("id"))


def request_summary(command: str, params: Mapping[str, Any]) -> str:
    """One line for a request. Every value a host chose goes through :func:`_text`."""
    parts: list[str] = []
    if "subCommand" in params:
        parts.append(_text(params["subCommand"]))
    rp, user = params.get("rp"), params.get("user")
    if isinstance(rp, Mapping) and "id" in rp:
        parts.append(f"rp={_text(rp['id'])}")
    if "rpId" in params:
        parts.append(f"rp={_text(params['rpId'])}")
    if isinstance(user, Mapping):
        parts.append(f"user={_user(user)}")
    algs = params.get("pubKeyCredParams")
    if isinstance(algs, list):
        parts.append(
            "alg=[" + ",".join(_text(a.get("alg")) for a in algs if isinstance(a, Mapping))
        )
        parts[-1] += "]"
    options = params.get("options")
    if isinstance(options, Mapping):
        parts.extend(f"{_text(k)}={_text(str(v).lower())}" for k, v in options.items())
    for key in ("excludeList", "allowList"):
        if isinstance(params.get(key), list):
            parts.append(f"{key}={len(params[key])}")
    extensions = params.get("extensions")
    if isinstance(extensions, Mapping) and extensions:
        parts.append("ext=[" + ",".join(_text(e) for e in extensions) + "]")
    if isinstance(params.get("permissions"), list):
        parts.append("permissions=" + ",".join(params["permissions"]))
    if "pinUvAuthParam" in params:
        parts.append(f"pinUvAuth=v{_text(params.get('pinUvAuthProtocol', '?'))}")
    if "application" in params:
        parts.append(f"app={_short(params['application'])}")
    return " ".join([command, *parts])


def response_summary(status: str, size: int, result: Mapping[str, Any]) -> str:
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
        parts.append(f"user={_user(user)}")
    for key in ("numberOfCredentials", "pinRetries", "uvRetries", "counter", "version"):
        if key in result:
            parts.append(f"{key}={result[key]}")
    if isinstance(result.get("versions"), list):
        parts.append("versions=" + ",".join(map(str, result["versions"])))
    return " ".join(parts)
