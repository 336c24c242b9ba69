"""Authenticator data (WebAuthn Level 2 section 6.1, CTAP 2.1 section 6.1 and 6.2).

Layout::

    rpIdHash (32) || flags (1) || signCount (4, big-endian)
    || [attestedCredentialData: aaguid (16) || credIdLen (2) || credId || COSE_Key]
    || [extensions: CBOR map]
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntFlag
from typing import Any

from authenticator import cbor


class AuthDataFlags(IntFlag):
    UP = 0x01  # user present
    UV = 0x04  # user verified
    BE = 0x08  # backup eligible
    BS = 0x10  # backup state
    AT = 0x40  # attested credential data included
    ED = 0x80  # extension data included


@dataclass(frozen=True)
class AttestedCredentialData:
    aaguid: bytes
    credential_id: bytes
    public_key: Mapping[int, Any]  # COSE_Key

    def to_bytes(self) -> bytes:
        if len(self.aaguid) != 16:
            raise ValueError("AAGUID must be 16 bytes")
        if len(self.credential_id) > 1023:
            raise ValueError("credential ID too long")
        return (
            self.aaguid
            + struct.pack(">H", len(self.credential_id))
            + self.credential_id
            + cbor.encode(dict(self.public_key))
        )


def rp_id_hash(rp_id: str) -> bytes:
    return hashlib.sha256(rp_id.encode("utf-8")).digest()


def build_auth_data(
    rp_id_hash: bytes,
    flags: AuthDataFlags,
    sign_count: int,
    attested: AttestedCredentialData | None = None,
    extensions: Mapping[str, Any] | None = None,
) -> bytes:
    """Serialize authenticator data; AT and ED are set from the presence of their parts."""
    if len(rp_id_hash) != 32:
        raise ValueError("rpIdHash must be 32 bytes")
    if not 0 <= sign_count <= 0xFFFFFFFF:
        raise ValueError("signCount out of range")
    flags &= ~(AuthDataFlags.AT | AuthDataFlags.ED)
    tail = b""
    if attested is not None:
        flags |= AuthDataFlags.AT
        tail += attested.to_bytes()
    if extensions:
        flags |= AuthDataFlags.ED
        tail += cbor.encode(dict(extensions))
    return rp_id_hash + bytes([int(flags)]) + struct.pack(">I", sign_count) + tail
