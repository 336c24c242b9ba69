"""The strict CTAP2 canonical CBOR decoder and the canonical encoder."""

from __future__ import annotations

from typing import Any

import cbor2
import pytest
from fido2 import cbor as fido_cbor
from hypothesis import given, settings
from hypothesis import strategies as st

from vfido.authenticator import cbor
from vfido.authenticator.errors import CtapError, CtapStatus


def _invalid(data: bytes) -> None:
    with pytest.raises(CtapError) as info:
        cbor.decode(data)
    assert info.value.status == CtapStatus.INVALID_CBOR


# --- what CTAP messages contain --------------------------------------------

_keys = st.one_of(
    st.integers(min_value=-(2**64), max_value=2**64 - 1),
    st.text(max_size=30),
)
_scalars = st.one_of(
    st.integers(min_value=-(2**64), max_value=2**64 - 1),
    st.binary(max_size=40),
    st.text(max_size=40),
    st.booleans(),
)
# Three levels of containers inside a top-level map: exactly the allowed depth of 4.
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(_keys, inner, max_size=4)),
    max_leaves=12,
)


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_keys, _values, max_size=6))
def test_encoding_matches_python_fido2_and_round_trips(value: dict[Any, Any]) -> None:
    encoded = cbor.encode(value)
    assert encoded == fido_cbor.encode(value)
    if _depth(value) <= cbor.MAX_DEPTH:
        assert cbor.decode(encoded) == value
    else:
        _invalid(encoded)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.one_of(st.integers(0, 40), st.integers(0, 2**64 - 1)),
        st.integers(-(2**63), 2**63),
        min_size=1,
    )
)
def test_unsigned_keys_take_the_numeric_order_fast_path(value: dict[int, int]) -> None:
    # getInfo's keys run to 0x1F: the encoder sorts unsigned keys numerically, which must
    # be the byte-wise order of their encodings (1-, 2-, 3-, 5- and 9-byte heads).
    assert cbor.encode(value) == fido_cbor.encode(value) == cbor2.dumps(value, canonical=True)


def test_encoder_key_order_is_ctap2_canonical() -> None:
    # Major type first, then encoded length, then bytes: 1000 (3 bytes) before "a" (2 bytes).
    assert list(cbor.decode(cbor.encode({"a": 1, 1000: 2, -1: 3, 5: 4, "bb": 5}))) == [
        5,
        1000,
        -1,
        "a",
        "bb",
    ]
    # cbor2's canonical mode agrees for the maps CTAP responses contain.
    sample = {1: "packed", 2: b"\x01" * 40, 3: {"alg": -7, "sig": b"x", "x5c": [b"c"]}}
    assert cbor.encode(sample) == cbor2.dumps(sample, canonical=True)


_map_keys = st.one_of(
    st.integers(min_value=-(2**64), max_value=2**64 - 1),
    st.text(max_size=30),
    st.binary(max_size=30),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_map_keys, min_size=2, max_size=6, unique_by=lambda k: (type(k), k)), st.randoms())
def test_decoder_accepts_exactly_the_ctap2_key_order(keys: list[Any], random: Any) -> None:
    """CTAP 2.1 section 8: "If the major types are different, the one with the lower value
    in numerical order sorts earlier. If two keys have different lengths, the shorter one
    sorts earlier; If two keys have the same length, the one with the lower value in
    (byte-wise) lexical order sorts earlier." The decoder compares the encoded keys
    byte-wise; this holds it to the rule as written, for maps in any order."""
    random.shuffle(keys)
    encoded = [(cbor2.dumps(k), cbor2.dumps(i)) for i, k in enumerate(keys)]
    data = bytes([0xA0 | len(keys)]) + b"".join(k + v for k, v in encoded)
    raw = [k for k, _ in encoded]
    ordered = sorted(raw, key=lambda k: (k[0] >> 5, len(k), k))  # the rule as written
    if raw == ordered:
        assert list(cbor.decode(data)) == keys
    else:
        _invalid(data)


def test_scalars_and_null() -> None:
    assert cbor.decode(b"\xf6") is None
    assert cbor.decode(b"\xf5") is True
    assert cbor.decode(b"\xf4") is False
    assert cbor.decode(b"\x3b" + b"\xff" * 8) == -(2**64)
    assert cbor.decode(b"\x1b" + b"\xff" * 8) == 2**64 - 1
    assert cbor.encode(None) == b"\xf6"


@pytest.mark.parametrize(
    "data",
    [
        b"\x18\x05",  # 5 encoded in two bytes
        b"\x19\x00\x10",  # 16 in three bytes
        b"\x1a\x00\x00\x01\x00",  # 256 in five bytes
        b"\x1b\x00\x00\x00\x00\x00\x01\x00\x00",  # 65536 in nine bytes
        b"\x38\x00",  # -1 in two bytes
        b"\x58\x01a",  # byte string length in two bytes
        b"\x78\x01a",  # text string length in two bytes
        b"\x98\x01\x01",  # array count in two bytes
        b"\xb8\x01\x01\x01",  # map count in two bytes
    ],
)
def test_non_shortest_encodings_rejected(data: bytes) -> None:
    _invalid(data)


@pytest.mark.parametrize(
    "data",
    [
        b"\x5f\x41a\xff",  # indefinite byte string
        b"\x7f\x61a\xff",  # indefinite text string
        b"\x9f\x01\xff",  # indefinite array
        b"\xbf\x01\x02\xff",  # indefinite map
        b"\x1c",  # reserved additional information
    ],
)
def test_indefinite_lengths_rejected(data: bytes) -> None:
    _invalid(data)


@pytest.mark.parametrize(
    "data",
    [
        b"\xa2\x02\x00\x01\x00",  # 2 before 1
        b"\xa2\x61b\x00\x61a\x00",  # "b" before "a"
        b"\xa2\x62aa\x00\x61b\x00",  # longer key before shorter key
        b"\xa2\x61a\x00\x01\x00",  # text key before integer key
        b"\xa2\x20\x00\x01\x00",  # negative before positive
    ],
)
def test_unsorted_map_keys_rejected(data: bytes) -> None:
    _invalid(data)


def test_duplicate_map_keys_rejected() -> None:
    _invalid(b"\xa2\x01\x00\x01\x01")
    _invalid(b"\xa2\x61a\x00\x61a\x01")


@pytest.mark.parametrize(
    "data",
    [
        b"\xc0\x61a",  # tag 0
        b"\xd8\x18\x41a",  # tag 24
        b"\xf9\x3c\x00",  # half float
        b"\xfa\x3f\x80\x00\x00",  # single float
        b"\xfb\x3f\xf0\x00\x00\x00\x00\x00\x00",  # double float
        b"\xf7",  # undefined
        b"\xf0",  # unassigned simple value
        b"\xf8\x20",  # simple value in extra byte
    ],
)
def test_tags_floats_and_other_simple_values_rejected(data: bytes) -> None:
    _invalid(data)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xa1\x01",  # map missing its value
        b"\x19\x01",  # integer missing a byte
        b"\x45abc",  # byte string shorter than announced
        b"\x83\x01\x02",  # array missing an element
        b"\x9b\x7f\xff\xff\xff\xff\xff\xff\xff",  # absurd array count
        b"\xbb\x7f\xff\xff\xff\xff\xff\xff\xff",  # absurd map count
    ],
)
def test_truncated_input_rejected(data: bytes) -> None:
    _invalid(data)


def test_trailing_bytes_rejected() -> None:
    _invalid(b"\xa0\x00")
    _invalid(b"\x01\x01")


def test_invalid_utf8_rejected() -> None:
    _invalid(b"\x62\xc3\x28")


def test_depth_four_allowed_five_rejected() -> None:
    four = {1: {2: [{3: 4}]}}
    assert cbor.decode(cbor.encode(four)) == four
    _invalid(cbor.encode({1: {2: [{3: [4]}]}}))
    _invalid(cbor.encode([[[[[]]]]]))


def test_container_map_keys_rejected() -> None:
    with pytest.raises(CtapError) as info:
        cbor.decode(b"\xa1\x80\x01")  # {[]: 1}
    assert info.value.status == CtapStatus.CBOR_UNEXPECTED_TYPE
