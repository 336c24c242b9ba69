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
from typing import Any

from authenticator.errors import CtapError, CtapStatus

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


class _Decoder:
    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def _take(self, n: int) -> bytes:
        end = self._pos + n
        if end > len(self._data):
            raise _invalid("truncated")
        chunk = self._data[self._pos : end]
        self._pos = end
        return chunk

    def _argument(self, info: int) -> int:
        """The argument of an initial byte, enforcing the shortest form."""
        if info < 24:
            return info
        if info == 24:
            value = self._take(1)[0]
            if value < 24:
                raise _invalid("non-shortest integer encoding")
            return value
        if info == 25:
            value = int(struct.unpack(">H", self._take(2))[0])
            if value <= 0xFF:
                raise _invalid("non-shortest integer encoding")
            return value
        if info == 26:
            value = int(struct.unpack(">I", self._take(4))[0])
            if value <= 0xFFFF:
                raise _invalid("non-shortest integer encoding")
            return value
        if info == 27:
            value = int(struct.unpack(">Q", self._take(8))[0])
            if value <= 0xFFFFFFFF:
                raise _invalid("non-shortest integer encoding")
            return value
        # 28-30 are reserved, 31 is indefinite length: neither is canonical.
        raise _invalid("indefinite length or reserved additional information")

    def item(self, depth: int) -> Any:
        data = self._data
        pos = self._pos
        if pos >= len(data):
            raise _invalid("truncated")
        start = data[pos]
        self._pos = pos + 1
        major, info = start >> 5, start & 0x1F
        if major >= _TAG:
            if major == _TAG:
                raise _invalid("tags are not allowed")
            if info == _FALSE:
                return False
            if info == _TRUE:
                return True
            if info == _NULL:
                return None
            raise _invalid("unsupported simple value or float")
        # Arguments below 24 live in the initial byte (the common case, inlined).
        arg = info if info < 24 else self._argument(info)
        if major == _UINT:
            return arg
        if major == _NINT:
            return -1 - arg
        if major in (_BYTES, _TEXT):
            pos = self._pos
            end = pos + arg
            if end > len(data):
                raise _invalid("truncated")
            self._pos = end
            raw = data[pos:end]
            if major == _BYTES:
                return raw
            try:
                return raw.decode("utf-8")
            except UnicodeDecodeError:
                raise _invalid("text string is not UTF-8") from None
        if major in (_ARRAY, _MAP):
            if depth >= MAX_DEPTH:
                raise _invalid("nesting too deep")
            # Every element takes at least one byte: cheap early rejection (and no
            # huge allocations / loops).
            if arg > len(data) - self._pos:
                raise _invalid("truncated")
            depth += 1
            if major == _ARRAY:
                return [self.item(depth) for _ in range(arg)]
            result: dict[Any, Any] = {}
            previous: tuple[int, int, bytes] | None = None
            for _ in range(arg):
                key_start = self._pos
                key = self.item(depth)
                raw_key = data[key_start : self._pos]
                order = (raw_key[0] >> 5, len(raw_key), raw_key)
                if previous is not None and order <= previous:
                    raise _invalid(
                        "duplicate map key" if order == previous else "map keys not in order"
                    )
                previous = order
                if not isinstance(key, int | str | bytes) or isinstance(key, bool):
                    raise CtapError(CtapStatus.CBOR_UNEXPECTED_TYPE, "unsupported map key type")
                result[key] = self.item(depth)
            return result
        raise AssertionError("unreachable: major types 0-5 are handled above")

    def done(self) -> bool:
        return self._pos == len(self._data)


def decode(data: bytes) -> Any:
    """Decode one CTAP2 canonical CBOR item occupying all of ``data``.

    Raises :class:`CtapError` (``INVALID_CBOR``) for anything not canonical,
    truncated, too deeply nested or followed by trailing bytes.
    """
    decoder = _Decoder(bytes(data))
    value = decoder.item(0)
    if not decoder.done():
        raise _invalid("trailing bytes")
    return value


# --- encoding ----------------------------------------------------------------


_SMALL_HEADS = tuple(tuple(bytes([m << 5 | v]) for v in range(24)) for m in range(8))


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


def _key_order(encoded: bytes) -> tuple[int, int, bytes]:
    return encoded[0] >> 5, len(encoded), encoded


def _encode_map(value: Mapping[Any, Any]) -> bytes:
    if all(type(k) is int and 0 <= k < 24 for k in value):
        # Every CTAP response map: one-byte keys, whose canonical order is numeric.
        heads = _SMALL_HEADS[_UINT]
        return _head(_MAP, len(value)) + b"".join(
            [heads[k] + encode(value[k]) for k in sorted(value)]
        )
    items = sorted([(encode(k), encode(v)) for k, v in value.items()], key=_item_order)
    for (a, _), (b, _) in itertools.pairwise(items):
        if a == b:
            raise ValueError("duplicate map key")
    return _head(_MAP, len(items)) + b"".join([k + v for k, v in items])


def _item_order(item: tuple[bytes, bytes]) -> tuple[int, int, bytes]:
    return _key_order(item[0])


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
