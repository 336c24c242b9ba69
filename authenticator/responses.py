"""CTAP2 response structures and their CBOR map keys (CTAP 2.1 sections 6.1-6.4)."""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass, field, fields
from typing import Any

from vfido.authenticator import cbor

# --- authenticatorMakeCredential response ---
MC_FMT = 0x01
MC_AUTH_DATA = 0x02
MC_ATT_STMT = 0x03
MC_EP_ATT = 0x04
MC_LARGE_BLOB_KEY = 0x05
MC_UNSIGNED_EXTENSION_OUTPUTS = 0x06  # CTAP 2.2 unsignedExtensionOutputs

# --- authenticatorGetAssertion / GetNextAssertion response ---
GA_CREDENTIAL = 0x01
GA_AUTH_DATA = 0x02
GA_SIGNATURE = 0x03
GA_USER = 0x04
GA_NUMBER_OF_CREDENTIALS = 0x05
GA_LARGE_BLOB_KEY = 0x07

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
INFO_MAX_SERIALIZED_LARGE_BLOB_ARRAY = 0x0B
INFO_FORCE_PIN_CHANGE = 0x0C
INFO_MIN_PIN_LENGTH = 0x0D
INFO_FIRMWARE_VERSION = 0x0E
INFO_MAX_CRED_BLOB_LENGTH = 0x0F
INFO_MAX_RPIDS_FOR_SET_MIN_PIN_LENGTH = 0x10
INFO_REMAINING_DISCOVERABLE_CREDENTIALS = 0x14
INFO_UV_MODALITY = 0x12
INFO_ATTESTATION_FORMATS = 0x16  # CTAP 2.2
INFO_UV_COUNT_SINCE_LAST_PIN_ENTRY = 0x17  # CTAP 2.2
INFO_ENC_IDENTIFIER = 0x19  # CTAP 2.2
INFO_TRANSPORTS_FOR_RESET = 0x1A  # CTAP 2.2
INFO_PIN_COMPLEXITY_POLICY = 0x1B  # CTAP 2.2
INFO_PIN_COMPLEXITY_POLICY_URL = 0x1C  # CTAP 2.2
INFO_MAX_PIN_LENGTH = 0x1D  # CTAP 2.2
INFO_ENC_CRED_STORE_STATE = 0x1E  # CTAP 2.3
INFO_AUTHENTICATOR_CONFIG_COMMANDS = 0x1F  # CTAP 2.3


@dataclass(frozen=True)
class MakeCredentialResponse:
    fmt: str
    auth_data: bytes
    att_stmt: dict[str, Any]
    ep_att: bool = False
    large_blob_key: bytes | None = field(default=None, repr=False)
    unsigned_extension_outputs: dict[str, Any] | None = None

    def to_cbor_map(self) -> dict[int, Any]:
        m: dict[int, Any] = {
            MC_FMT: self.fmt,
            MC_AUTH_DATA: self.auth_data,
            MC_ATT_STMT: self.att_stmt,
        }
        if self.ep_att:
            m[MC_EP_ATT] = True
        if self.large_blob_key is not None:
            m[MC_LARGE_BLOB_KEY] = self.large_blob_key
        if self.unsigned_extension_outputs:
            m[MC_UNSIGNED_EXTENSION_OUTPUTS] = self.unsigned_extension_outputs
        return m


@dataclass(frozen=True)
class GetAssertionResponse:
    credential: dict[str, Any]
    auth_data: bytes
    signature: bytes
    user: dict[str, Any] | None = None
    number_of_credentials: int | None = None
    large_blob_key: bytes | None = field(default=None, repr=False)

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
        if self.large_blob_key is not None:
            m[GA_LARGE_BLOB_KEY] = self.large_blob_key
        return m


#: authenticatorGetInfo member names by key (CTAP 2.3 section 6.4), as the spec spells them.
GET_INFO_MEMBERS: dict[int, str] = {
    1: "versions",
    2: "extensions",
    3: "aaguid",
    4: "options",
    5: "maxMsgSize",
    6: "pinUvAuthProtocols",
    7: "maxCredentialCountInList",
    8: "maxCredentialIdLength",
    9: "transports",
    10: "algorithms",
    11: "maxSerializedLargeBlobArray",
    12: "forcePINChange",
    13: "minPINLength",
    14: "firmwareVersion",
    15: "maxCredBlobLength",
    16: "maxRPIDsForSetMinPINLength",
    17: "preferredPlatformUvAttempts",
    18: "uvModality",
    19: "certifications",
    20: "remainingDiscoverableCredentials",
    21: "vendorPrototypeConfigCommands",
    22: "attestationFormats",
    23: "uvCountSinceLastPinEntry",
    24: "longTouchForReset",
    25: "encIdentifier",
    26: "transportsForReset",
    27: "pinComplexityPolicy",
    28: "pinComplexityPolicyURL",
    29: "maxPINLength",
    30: "encCredStoreState",
    31: "authenticatorConfigCommands",
}


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
    max_serialized_large_blob_array: int | None = None
    force_pin_change: bool | None = None
    min_pin_length: int | None = None
    max_cred_blob_length: int | None = None
    max_rpids_for_set_min_pin_length: int | None = None
    remaining_discoverable_credentials: int | None = None
    attestation_formats: tuple[str, ...] = ()
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
        optional: dict[int, Any] = {
            INFO_MAX_SERIALIZED_LARGE_BLOB_ARRAY: self.max_serialized_large_blob_array,
            INFO_FORCE_PIN_CHANGE: self.force_pin_change,
            INFO_MIN_PIN_LENGTH: self.min_pin_length,
            INFO_MAX_CRED_BLOB_LENGTH: self.max_cred_blob_length,
            INFO_MAX_RPIDS_FOR_SET_MIN_PIN_LENGTH: self.max_rpids_for_set_min_pin_length,
            INFO_REMAINING_DISCOVERABLE_CREDENTIALS: self.remaining_discoverable_credentials,
        }
        m.update({k: v for k, v in optional.items() if v is not None})
        if self.attestation_formats:
            m[INFO_ATTESTATION_FORMATS] = list(self.attestation_formats)
        m.update(self.extra)
        return m

    def encoded(self) -> cbor.Encoded:
        """The canonical encoding of :meth:`to_cbor_map` (what getInfo answers), joined from
        kept parts: every member but encIdentifier and encCredStoreState (a fresh IV on each
        getInfo) is encoded once per distinct response, in a small cache keyed by the
        response's own values, so an unchanged key's getInfo encodes two members."""
        extra = self.extra
        key = self._static_key()
        with _INFO_LAYOUTS_LOCK:
            layout = _INFO_LAYOUTS.get(key)
        if layout is None:
            layout = self._layout()
            with _INFO_LAYOUTS_LOCK:
                if len(_INFO_LAYOUTS) >= _INFO_LAYOUTS_MAX:
                    _INFO_LAYOUTS.pop(next(iter(_INFO_LAYOUTS)))
                _INFO_LAYOUTS[key] = layout
        head, parts = layout
        return cbor.Encoded(
            head
            + b"".join(
                [
                    part if isinstance(part, bytes) else part[0] + cbor.encode(extra[part[1]])
                    for part in parts
                ]
            )
        )

    def _static_key(self) -> tuple[object, ...]:
        """Everything :meth:`encoded` keeps, as a hashable value: the class (a model's
        response leaves members out) and every field, the fresh members' values left out;
        the values of ``options`` and ``extra`` with their types (True is not 1; the other
        fields have one type each)."""
        values: list[object] = [type(self)]
        for name in _field_names(type(self)):
            value = getattr(self, name)
            if name == "extra":
                value = tuple(
                    (k, None) if k in INFO_FRESH_MEMBERS else (k, _frozen(v))
                    for k, v in value.items()
                )
            elif type(value) is dict:  # options: their values' types too
                value = tuple((k, type(v), v) for k, v in value.items())
            values.append(value)
        return tuple(values)

    def _layout(self) -> tuple[bytes, tuple[bytes | tuple[bytes, int], ...]]:
        """The map's head and its entries in canonical (numeric) order: an entry's bytes, or
        (its key's encoding, key) for a fresh member."""
        m = self.to_encoded_map()
        parts: list[bytes | tuple[bytes, int]] = []
        for k in sorted(m):
            if k < 0:
                raise ValueError("getInfo keys are unsigned")
            key = cbor.encode(k)
            parts.append((key, k) if k in INFO_FRESH_MEMBERS else key + cbor.encode(m[k]))
        return cbor.map_head(len(m)), tuple(parts)

    def to_encoded_map(self) -> dict[int, Any]:
        """:meth:`to_cbor_map` with the members that stay the same from one getInfo to the
        next (versions, extensions, options, transports, algorithms, attestation formats)
        as kept encodings: the handler's form. Encodes to the same bytes."""
        m = self.to_cbor_map()  # a model's getInfo (--persona) leaves members out
        if INFO_VERSIONS in m:
            m[INFO_VERSIONS] = _kept_array(self.versions)
        if INFO_OPTIONS in m:
            m[INFO_OPTIONS] = _kept_options(tuple(self.options.items()))
        if INFO_TRANSPORTS in m:
            m[INFO_TRANSPORTS] = _kept_array(self.transports)
        if INFO_ALGORITHMS in m:
            m[INFO_ALGORITHMS] = _kept_algorithms(self.algorithms)
        if INFO_EXTENSIONS in m:
            m[INFO_EXTENSIONS] = _kept_array(self.extensions)
        if INFO_ATTESTATION_FORMATS in m:
            m[INFO_ATTESTATION_FORMATS] = _kept_array(self.attestation_formats)
        return m


#: getInfo members that differ on every getInfo (each under a fresh IV): never kept encoded.
INFO_FRESH_MEMBERS = frozenset({INFO_ENC_IDENTIFIER, INFO_ENC_CRED_STORE_STATE})
# GetInfoResponse.encoded(): layouts by response. A key's responses differ only as its PIN,
# settings and credential count change, so a few suffice (several keys may share a process).
_INFO_LAYOUTS: dict[tuple[object, ...], tuple[bytes, tuple[bytes | tuple[bytes, int], ...]]] = {}
_INFO_LAYOUTS_MAX = 32
_INFO_LAYOUTS_LOCK = threading.Lock()  # keys in other threads (one process, several keys)


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _field_names(cls: type[GetInfoResponse]) -> tuple[str, ...]:
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(f.name for f in fields(cls))
    return names


def _frozen(value: Any) -> object:
    """A hashable stand-in for a getInfo member's value, with its type (True is not 1)."""
    if isinstance(value, list | tuple):
        return (list, tuple(_frozen(v) for v in value))
    if isinstance(value, dict):
        return (dict, tuple((_frozen(k), _frozen(v)) for k, v in value.items()))
    return (type(value), value)


# A key's configuration gives a handful of distinct values for each: a small cache suffices.
@functools.lru_cache(maxsize=64)
def _kept_array(items: tuple[str, ...]) -> cbor.Encoded:
    return cbor.encoded(list(items))


@functools.lru_cache(maxsize=64)
def _kept_options(items: tuple[tuple[str, bool], ...]) -> cbor.Encoded:
    return cbor.encoded(dict(items))


@functools.lru_cache(maxsize=64)
def _kept_algorithms(algorithms: tuple[int, ...]) -> cbor.Encoded:
    return cbor.encoded([{"type": "public-key", "alg": a} for a in algorithms])
