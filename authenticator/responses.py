"""CTAP2 response structures and their CBOR map keys (CTAP 2.1 sections 6.1-6.4)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# --- authenticatorMakeCredential response ---
MC_FMT = 0x01
MC_AUTH_DATA = 0x02
MC_ATT_STMT = 0x03

# --- authenticatorGetAssertion / GetNextAssertion response ---
GA_CREDENTIAL = 0x01
GA_AUTH_DATA = 0x02
GA_SIGNATURE = 0x03
GA_USER = 0x04
GA_NUMBER_OF_CREDENTIALS = 0x05

# --- authenticatorGetInfo response ---
INFO_VERSIONS = 0x01
INFO_EXTENSIONS = 0x02
INFO_AAGUID = 0x03
INFO_OPTIONS = 0x04
INFO_MAX_MSG_SIZE = 0x05
INFO_PIN_UV_AUTH_PROTOCOLS = 0x06
INFO_MAX_CREDENTIAL_COUNT_IN_LIST = 0x07
INFO_MAX_CREDENTIAL_ID_LENGTH = 0x08
INFO_TRANSPORTS = 0x09
INFO_ALGORITHMS = 0x0A
INFO_FIRMWARE_VERSION = 0x0E
INFO_REMAINING_DISCOVERABLE_CREDENTIALS = 0x14


@dataclass(frozen=True)
class MakeCredentialResponse:
    fmt: str
    auth_data: bytes
    att_stmt: dict[str, Any]

    def to_cbor_map(self) -> dict[int, Any]:
        return {MC_FMT: self.fmt, MC_AUTH_DATA: self.auth_data, MC_ATT_STMT: self.att_stmt}


@dataclass(frozen=True)
class GetAssertionResponse:
    credential: dict[str, Any]
    auth_data: bytes
    signature: bytes
    user: dict[str, Any] | None = None
    number_of_credentials: int | None = None

    def to_cbor_map(self) -> dict[int, Any]:
        m: dict[int, Any] = {
            GA_CREDENTIAL: self.credential,
            GA_AUTH_DATA: self.auth_data,
            GA_SIGNATURE: self.signature,
        }
        if self.user is not None:
            m[GA_USER] = self.user
        if self.number_of_credentials is not None:
            m[GA_NUMBER_OF_CREDENTIALS] = self.number_of_credentials
        return m


@dataclass(frozen=True)
class GetInfoResponse:
    versions: tuple[str, ...]
    aaguid: bytes
    options: dict[str, bool]
    max_msg_size: int
    max_credential_count_in_list: int
    max_credential_id_length: int
    transports: tuple[str, ...]
    algorithms: tuple[int, ...]
    firmware_version: int
    extensions: tuple[str, ...] = ()
    pin_uv_auth_protocols: tuple[int, ...] = ()
    remaining_discoverable_credentials: int | None = None
    extra: dict[int, Any] = field(default_factory=dict)  # keys added by later features

    def to_cbor_map(self) -> dict[int, Any]:
        m: dict[int, Any] = {
            INFO_VERSIONS: list(self.versions),
            INFO_AAGUID: self.aaguid,
            INFO_OPTIONS: dict(self.options),
            INFO_MAX_MSG_SIZE: self.max_msg_size,
            INFO_MAX_CREDENTIAL_COUNT_IN_LIST: self.max_credential_count_in_list,
            INFO_MAX_CREDENTIAL_ID_LENGTH: self.max_credential_id_length,
            INFO_TRANSPORTS: list(self.transports),
            INFO_ALGORITHMS: [{"type": "public-key", "alg": a} for a in self.algorithms],
            INFO_FIRMWARE_VERSION: self.firmware_version,
        }
        if self.extensions:
            m[INFO_EXTENSIONS] = list(self.extensions)
        if self.pin_uv_auth_protocols:
            m[INFO_PIN_UV_AUTH_PROTOCOLS] = list(self.pin_uv_auth_protocols)
        if self.remaining_discoverable_credentials is not None:
            m[INFO_REMAINING_DISCOVERABLE_CREDENTIALS] = self.remaining_discoverable_credentials
        m.update(self.extra)
        return m
