"""authenticatorLargeBlobs (0x0C), CTAP 2.1 section 6.10.

The serialized large-blob array is kept in the keystore (encrypted like every
state value) under ``large_blob``; a write becomes visible only once its last
fragment arrived and the array's SHA-256 trailer checked out.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from vfido.authenticator import cbor
from vfido.authenticator.client_pin import ClientPin
from vfido.authenticator.errors import CtapError, CtapStatus
from vfido.authenticator.pin_token import Permission, require_pin_uv_auth_param
from vfido.keystore.store import KeyStore, KeystoreFull

STATE_KEY = "large_blob"
#: The empty array: CBOR [] followed by LEFT(SHA-256(h'80'), 16).
EMPTY_ARRAY = b"\x80" + hashlib.sha256(b"\x80").digest()[:16]
MAX_SERIALIZED_LARGE_BLOB_ARRAY = 8192


def _trailer_ok(array: bytes) -> bool:
    return len(array) >= 17 and hmac.compare_digest(
        hashlib.sha256(array[:-16]).digest()[:16], array[-16:]
    )


@dataclass(frozen=True)
class LargeBlobsRequest:
    offset: int  # 0x03
    get: int | None = None  # 0x01
    set: bytes | None = field(default=None, repr=False)  # 0x02
    length: int | None = None  # 0x04
    pin_uv_auth_param: bytes | None = field(default=None, repr=False)  # 0x05
    protocol: int | None = None  # 0x06

    @classmethod
    def from_cbor_map(cls, m: Mapping[Any, Any]) -> LargeBlobsRequest:
        get, set_, offset, length = m.get(1), m.get(2), m.get(3), m.get(4)
        param, protocol = m.get(5), m.get(6)
        if offset is None:  # 6.10.2 step 1
            raise CtapError(CtapStatus.INVALID_PARAMETER, "offset missing")
        if (
            not cbor.is_unsigned(offset)
            or not (get is None or cbor.is_unsigned(get))
            or not (set_ is None or isinstance(set_, bytes))
            or not (length is None or cbor.is_unsigned(length))
            or not (param is None or isinstance(param, bytes))
            or not (protocol is None or cbor.is_unsigned(protocol))
        ):
            raise CtapError(CtapStatus.CBOR_UNEXPECTED_TYPE, "largeBlobs")
        return cls(offset, get, set_, length, param, protocol)


class LargeBlobs:
    def __init__(
        self,
        store: KeyStore,
        client_pin: ClientPin,
        max_fragment_length: int,
        max_size: int = MAX_SERIALIZED_LARGE_BLOB_ARRAY,
    ) -> None:
        self._store = store
        self._pin = client_pin
        self._max_fragment = max_fragment_length
        self.max_size = max_size
        self._buffer = bytearray()
        self._expected_length = 0
        self._expected_next_offset = 0

    def reset_pending(self) -> None:
        """Forget a partly received write (power cycle, authenticatorReset)."""
        self._buffer = bytearray()
        self._expected_length = 0
        self._expected_next_offset = 0

    def array(self) -> bytes:
        return self._store.get_state(STATE_KEY) or EMPTY_ARRAY

    def process(self, m: Mapping[Any, Any], needs_token: bool) -> dict[int, Any]:
        """``needs_token``: writes need a pinUvAuthToken (6.10.2 step 5.5: "the
        authenticator is protected by some form of user verification or the alwaysUv
        option ID is present and true")."""
        request = LargeBlobsRequest.from_cbor_map(m)
        if (request.get is None) == (request.set is None):
            raise CtapError(CtapStatus.INVALID_PARAMETER, "exactly one of get and set")
        if request.get is not None:
            return self._get(request, request.get)
        assert request.set is not None
        return self._set(request, request.set, needs_token)

    def _get(self, request: LargeBlobsRequest, count: int) -> dict[int, Any]:
        # 6.10.2 step 4 (get)
        if request.length is not None:
            raise CtapError(CtapStatus.INVALID_PARAMETER, "length with get")
        # 4.2: "If either of pinUvAuthParam or pinUvAuthProtocol are present, return
        # CTAP1_ERR_INVALID_PARAMETER."
        if request.pin_uv_auth_param is not None or request.protocol is not None:
            raise CtapError(CtapStatus.INVALID_PARAMETER, "pinUvAuth parameters with get")
        if count > self._max_fragment:
            raise CtapError(CtapStatus.INVALID_LENGTH)
        array = self.array()
        if request.offset > len(array):
            raise CtapError(CtapStatus.INVALID_PARAMETER, "offset beyond the array")
        return {0x01: array[request.offset : request.offset + count]}

    def _set(
        self, request: LargeBlobsRequest, fragment: bytes, needs_token: bool
    ) -> dict[int, Any]:
        # 6.10.2 step 5 (set)
        if len(fragment) > self._max_fragment:
            raise CtapError(CtapStatus.INVALID_LENGTH)
        if request.offset == 0:
            if request.length is None:
                raise CtapError(CtapStatus.INVALID_PARAMETER, "length missing")
            if request.length > self.max_size:
                raise CtapError(CtapStatus.LARGE_BLOB_STORAGE_FULL)
            if request.length < 17:
                raise CtapError(CtapStatus.INVALID_PARAMETER, "length too small")
            self._expected_length = request.length
            self._expected_next_offset = 0
        elif request.length is not None:
            raise CtapError(CtapStatus.INVALID_PARAMETER, "length after the first fragment")
        if request.offset != self._expected_next_offset:
            raise CtapError(CtapStatus.INVALID_SEQ)
        if needs_token:  # 5.5
            param = require_pin_uv_auth_param(request.pin_uv_auth_param, request.protocol)
            message = (
                b"\xff" * 32
                + b"\x0c\x00"
                + struct.pack("<I", request.offset)
                + hashlib.sha256(fragment).digest()
            )
            self._pin.verify_token(request.protocol, message, param, Permission.LARGE_BLOB_WRITE)
        if request.offset + len(fragment) > self._expected_length:
            raise CtapError(CtapStatus.INVALID_PARAMETER, "beyond the announced length")
        if request.offset == 0:
            self._buffer = bytearray()
        self._buffer += fragment
        self._expected_next_offset += len(fragment)
        if self._expected_next_offset == self._expected_length:
            array, self._buffer = bytes(self._buffer), bytearray()
            self._expected_next_offset = 0
            if not _trailer_ok(array):
                raise CtapError(CtapStatus.INTEGRITY_FAILURE)
            try:
                self._store.put_state({STATE_KEY: array})
            except KeystoreFull:
                raise CtapError(CtapStatus.LARGE_BLOB_STORAGE_FULL) from None
        return {}
