"""CTAP2 canonical CBOR: a strict decoder for requests and an encoder for responses.

CTAP 2.1 section 8 ("Message Encoding") requires every message to be in the
*CTAP2 canonical CBOR encoding form*:

* integers, lengths and counts use the shortest encoding;
* indefinite-length items are not allowed;
* map keys are sorted: lower major type first, then shorter encoding first,
  then byte-wise lexical order of the encoded key (so duplicates are impossible);
* tags are not allowed.

The spec also limits nesting of maps and arrays to four levels.

The decoder here is a small hand-written parser (CTAP requests only use major
types 0-5 and the simple values false/true/null), so every deviation from the
canonical form is seen and rejected with ``CTAP2_ERR_INVALID_CBOR``.
Floating-point numbers, ``undefined`` and other simple values never occur in
CTAP messages and are rejected as well.

The encoder produces exactly what python-fido2 (``fido2.cbor.encode``) and
platforms check responses against.
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Mapping, Sequence
from typing import Any, TypeGuard

from vfido.authenticator.errors import CtapError, CtapStatus

#: Maximum nesting of maps/arrays (CTAP 2.1 section 8: "at most four levels").
MAX_DEPTH = 4

_UINT = 0
_NINT = 1
_BYTES = 2
_TEXT = 3
_ARRAY = 4
_MAP = 5
_TAG = 6
_SIMPLE = 7

_FALSE = 20
_TRUE = 21
_NULL = 22


def _invalid(detail: str) -> CtapError:
    return CtapError(CtapStatus.INVALID_CBOR, detail)


#: Additional information 24-27: (argument size in bytes, smallest value that needs it).
_WIDE_ARGUMENT = {24: (1, 24), 25: (2, 0x100), 26: (4, 0x10000), 27: (8, 0x100000000)}


def _item(data: bytes, pos: int, depth: int) -> tuple[Any, int]:
    """Decode the item starting at ``data[pos]``: (value, position after it).

    One plain function over (bytes, position) rather than a decoder object: requests are
    small, and attribute lookups and method calls were most of the decoding time.
    """
    size = len(data)
    if pos >= size:
        raise _invalid("truncated")
    start = data[pos]
    pos += 1
    major, arg = start >> 5, start & 0x1F
    if major >= _TAG:
        if major == _TAG:
            raise _invalid("tags are not allowed")
        if arg == _FALSE:
            return False, pos
        if arg == _TRUE:
            return True, pos
        if arg == _NULL:
            return None, pos
        raise _invalid("unsupported simple value or float")
    if arg >= 24:
        # 28-30 are reserved, 31 is indefinite length: neither is canonical.
        if arg > 27:
            raise _invalid("indefinite length or reserved additional information")
        width, smallest = _WIDE_ARGUMENT[arg]
        end = pos + width
        if end > size:
            raise _invalid("truncated")
        arg = int.from_bytes(data[pos:end], "big")
        pos = end
        if arg < smallest:
            raise _invalid("non-shortest integer encoding")
    if major == _UINT:
        return arg, pos
    if major == _NINT:
        return -1 - arg, pos
    if major <= _TEXT:
        end = pos + arg
        if end > size:
            raise _invalid("truncated")
        raw = data[pos:end]
        if major == _BYTES:
            return raw, end
        try:
            return raw.decode("utf-8"), end
        except UnicodeDecodeError:
            raise _invalid("text string is not UTF-8") from None
    # Arrays and maps.
    if depth >= MAX_DEPTH:
        raise _invalid("nesting too deep")
    # Every element takes at least one byte: cheap early rejection (and no huge
    # allocations or loops).
    if arg > size - pos:
        raise _invalid("truncated")
    depth += 1
    if major == _ARRAY:
        items = []
        for _ in range(arg):
            value, pos = _item(data, pos, depth)
            items.append(value)
        return items, pos
    result: dict[Any, Any] = {}
    previous = b""  # sorts before every encoded key
    for _ in range(arg):
        key_start = pos
        key, pos = _item(data, pos, depth)
        # The canonical order (major type, then encoded length, then bytes) is the
        # byte-wise order of the encoded keys: the first byte holds the major type and,
        # for a shortest encoding, the length class; no encoded item is a prefix of another.
        raw_key = data[key_start:pos]
        if raw_key <= previous:
            raise _invalid("duplicate map key" if raw_key == previous else "map keys not in order")
        previous = raw_key
        kind = type(key)
        if kind is not int and kind is not str and kind is not bytes:
            raise CtapError(CtapStatus.CBOR_UNEXPECTED_TYPE, "unsupported map key type")
        result[key], pos = _item(data, pos, depth)
    return result, pos


def is_unsigned(value: object) -> TypeGuard[int]:
    """Whether a decoded value is a CBOR unsigned integer (major type 0): the type CTAP gives
    subCommand, pinUvAuthProtocol, permissions and other counts. A negative integer (major
    type 1) is another CBOR type, and ``bool`` is not an integer here."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def unsigned(value: object, what: str) -> int:
    """``value`` as an "Unsigned Integer" parameter: CTAP2_ERR_CBOR_UNEXPECTED_TYPE (naming
    ``what``) if it is another CBOR type, a negative integer included."""
    if not is_unsigned(value):
        raise CtapError(CtapStatus.CBOR_UNEXPECTED_TYPE, what)
    return int(value)


def optional_unsigned(m: Mapping[Any, Any], key: object, what: str) -> int | None:
    """The "Unsigned Integer" parameter ``m[key]``; None if it is absent (a request's maps
    hold no null: :func:`refuse_null_members`)."""
    value = m.get(key)
    return None if value is None else unsigned(value, what)


def refuse_null_members(m: object, what: str) -> None:
    """A request's parameter map (and a subCommandParams map) holds no null: no CTAP request
    member is nullable, so a null is a member of the wrong type (CTAP 2.1 section 6.1.2
    step 3.1.2: "If the values of any known members have the wrong type then return an
    error, for example CTAP2_ERR_CBOR_UNEXPECTED_TYPE"). Unknown members included: no
    version of CTAP gives a member the value null."""
    if isinstance(m, dict) and None in m.values():
        raise CtapError(CtapStatus.CBOR_UNEXPECTED_TYPE, f"a member of {what} is null")


def decode(data: bytes) -> Any:
    """Decode one CTAP2 canonical CBOR item occupying all of ``data``.

    Raises :class:`CtapError` (``INVALID_CBOR``) for anything not canonical,
    truncated, too deeply nested or followed by trailing bytes.
    """
    data = bytes(data)
    value, end = _item(data, 0, 0)
    if end != len(data):
        raise _invalid("trailing bytes")
    return value


# --- encoding ----------------------------------------------------------------


class Encoded:
    """One data item already in canonical form, written out as it is by :func:`encode`
    (for a response member that is the same on every request: made once, encoded once).
    ``data`` is the item's canonical encoding, not checked: :func:`encoded` makes one
    from a value."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __repr__(self) -> str:
        return f"Encoded({self.data.hex()})"


def encoded(value: Any) -> Encoded:
    """``value`` encoded once, to be written out as it is."""
    return Encoded(encode(value))


_SMALL_HEADS = tuple(tuple(bytes([m << 5 | v]) for v in range(24)) for m in range(8))


def map_head(length: int) -> bytes:
    """The head of a map of ``length`` pairs (its entries follow, in canonical order)."""
    return _head(_MAP, length)


def _head(major: int, value: int) -> bytes:
    if value < 24:
        return _SMALL_HEADS[major][value]
    if value <= 0xFF:
        return bytes([major << 5 | 24, value])
    if value <= 0xFFFF:
        return bytes([major << 5 | 25]) + struct.pack(">H", value)
    if value <= 0xFFFFFFFF:
        return bytes([major << 5 | 26]) + struct.pack(">I", value)
    if value <= 0xFFFFFFFFFFFFFFFF:
        return bytes([major << 5 | 27]) + struct.pack(">Q", value)
    raise ValueError("integer too large for CBOR")


_INT_ONLY = {int}
_TEXT_ONLY = {str}


def _encode_map(value: Mapping[Any, Any]) -> bytes:
    head = _head(_MAP, len(value))
    kinds = set(map(type, value))
    if kinds == _INT_ONLY:
        keys = sorted(value)
        if keys[0] >= 0:
            # Every CTAP response map: unsigned keys, whose encodings sort byte-wise in
            # numeric order (a longer head starts with a larger initial byte).
            if keys[-1] < 24:
                heads = _SMALL_HEADS[_UINT]
                return head + b"".join([heads[k] + encode(value[k]) for k in keys])
            return head + b"".join([_head(_UINT, k) + encode(value[k]) for k in keys])
    elif kinds == _TEXT_ONLY:
        # Entities, descriptors, options, extensions: the canonical order is the byte-wise
        # order of the encoded keys (see _item), and the few key names are encoded once.
        keys = sorted([(_text_key(k), k) for k in value])
        return head + b"".join([e + encode(value[k]) for e, k in keys])
    # Mixed key types: the same byte-wise order of the encoded keys.
    items = sorted([(encode(k), encode(v)) for k, v in value.items()], key=_encoded_key)
    for (a, _), (b, _) in itertools.pairwise(items):
        if a == b:
            raise ValueError("duplicate map key")
    return head + b"".join([k + v for k, v in items])


#: Encoded text map keys ("id", "type", "alg", ...): responses use a handful of names.
_TEXT_KEYS: dict[str, bytes] = {}
_TEXT_KEYS_MAX = 256


def _text_key(key: str) -> bytes:
    encoded = _TEXT_KEYS.get(key)
    if encoded is None:
        raw = key.encode("utf-8")
        encoded = _head(_TEXT, len(raw)) + raw
        if len(_TEXT_KEYS) < _TEXT_KEYS_MAX and len(raw) <= 32:
            _TEXT_KEYS[key] = encoded
    return encoded


def _encoded_key(item: tuple[bytes, bytes]) -> bytes:
    return item[0]


def encode(value: Any) -> bytes:
    """Encode ``value`` in CTAP2 canonical form.

    Supports bool, None, int, bytes, str, mappings and sequences (not str/bytes).
    """
    kind = type(value)
    # Fast paths for the exact built-in types (the ABC checks below are slow).
    if kind is bytes:
        data: bytes = value
        return _head(_BYTES, len(data)) + data
    if kind is int:
        return _head(_NINT, -1 - value) if value < 0 else _head(_UINT, value)
    if kind is str:
        text: bytes = value.encode("utf-8")
        return _head(_TEXT, len(text)) + text
    if kind is list or kind is tuple:
        return _head(_ARRAY, len(value)) + b"".join([encode(v) for v in value])
    if kind is dict:
        return _encode_map(value)
    if kind is Encoded:
        return value.data  # type: ignore[no-any-return]
    if value is None:
        return b"\xf6"
    if isinstance(value, bool):
        return b"\xf5" if value else b"\xf4"
    if isinstance(value, int):
        if value < 0:
            return _head(_NINT, -1 - value)
        return _head(_UINT, value)
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        return _head(_BYTES, len(raw)) + raw
    if isinstance(value, str):
        raw = value.encode("utf-8")
        return _head(_TEXT, len(raw)) + raw
    if isinstance(value, Mapping):
        return _encode_map(value)
    if isinstance(value, Sequence):
        return _head(_ARRAY, len(value)) + b"".join(encode(v) for v in value)
    raise TypeError(f"cannot CBOR-encode {type(value).__name__}")
