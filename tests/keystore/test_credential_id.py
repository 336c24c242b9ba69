"""Tests for keystore.credential_id sealing."""

from __future__ import annotations

import hashlib
import os

import pytest

from vfido.keystore.credential_id import SEAL_OVERHEAD, VERSION, seal, unseal

KEY = bytes(range(32))
RP = hashlib.sha256(b"example.com").digest()
OTHER_RP = hashlib.sha256(b"example.org").digest()
PLAINTEXT = b"\xa2\x01\x26\x02\x58\x20" + bytes(32)


def test_round_trip_and_layout() -> None:
    cid = seal(KEY, RP, PLAINTEXT)
    assert len(cid) == len(PLAINTEXT) + SEAL_OVERHEAD
    assert SEAL_OVERHEAD == 29
    assert cid[0] == VERSION == 0x01
    assert unseal(KEY, RP, cid) == PLAINTEXT


def test_fresh_nonce_each_seal() -> None:
    a, b = seal(KEY, RP, PLAINTEXT), seal(KEY, RP, PLAINTEXT)
    assert a != b
    assert a[1:13] != b[1:13]
    assert unseal(KEY, RP, a) == unseal(KEY, RP, b) == PLAINTEXT


def test_empty_plaintext() -> None:
    cid = seal(KEY, RP, b"")
    assert len(cid) == SEAL_OVERHEAD
    assert unseal(KEY, RP, cid) == b""


def test_other_rp_rejected() -> None:
    assert unseal(KEY, OTHER_RP, seal(KEY, RP, PLAINTEXT)) is None


def test_other_key_rejected() -> None:
    other = os.urandom(32)
    assert unseal(other, RP, seal(KEY, RP, PLAINTEXT)) is None


def test_every_bit_flip_rejected() -> None:
    cid = seal(KEY, RP, PLAINTEXT)
    for i in range(len(cid) * 8):
        mutated = bytearray(cid)
        mutated[i // 8] ^= 1 << (i % 8)
        assert unseal(KEY, RP, bytes(mutated)) is None, f"bit {i} accepted"


def test_truncated_and_extended_rejected() -> None:
    cid = seal(KEY, RP, PLAINTEXT)
    for n in range(len(cid)):
        assert unseal(KEY, RP, cid[:n]) is None
    assert unseal(KEY, RP, cid + b"\x00") is None


def test_wrong_version_rejected() -> None:
    cid = seal(KEY, RP, PLAINTEXT)
    for v in (0x00, 0x02, 0xFF):
        assert unseal(KEY, RP, bytes([v]) + cid[1:]) is None


def test_garbage_and_wrong_key_length() -> None:
    assert unseal(KEY, RP, os.urandom(64)) is None
    assert unseal(KEY[:16], RP, seal(KEY, RP, PLAINTEXT)) is None
    with pytest.raises(ValueError):
        seal(KEY[:16], RP, PLAINTEXT)
