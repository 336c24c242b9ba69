"""Typed, validated CTAP2 requests.

Each command's CBOR parameter map is turned into a frozen dataclass by
``from_cbor_map``; handlers only ever see these. Errors:

* a required parameter is absent: ``CTAP2_ERR_MISSING_PARAMETER``;
* a parameter has the wrong CBOR type, or a structure inside one (rp, user, a
  pubKeyCredParams entry, a credential descriptor) lacks a required member or has one of
  the wrong type: ``CTAP2_ERR_CBOR_UNEXPECTED_TYPE`` (section 8, :func:`_member`);
* a value has the right type but is not acceptable: ``CTAP1_ERR_INVALID_PARAMETER``.

Unknown map keys, unknown option keys and unknown members of entities are
ignored, as CTAP 2.1 requires for forward compatibility. Parsing never touches
the keystore.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from vfido.authenticator import cbor
from vfido.authenticator.errors import CtapError, CtapStatus

# --- authenticatorMakeCredential (0x01) parameter keys, CTAP 2.1 section 6.1 ---
MC_CLIENT_DATA_HASH = 0x01
MC_RP = 0x02
MC_USER = 0x03
MC_PUB_KEY_CRED_PARAMS = 0x04
MC_EXCLUDE_LIST = 0x05
MC_EXTENSIONS = 0x06
MC_OPTIONS = 0x07
MC_PIN_UV_AUTH_PARAM = 0x08
MC_PIN_UV_AUTH_PROTOCOL = 0x09
MC_ENTERPRISE_ATTESTATION = 0x0A
MC_ATTESTATION_FORMATS_PREFERENCE = 0x0B  # CTAP 2.2

# --- authenticatorGetAssertion (0x02) parameter keys, CTAP 2.1 section 6.2 ---
GA_RP_ID = 0x01
GA_CLIENT_DATA_HASH = 0x02
GA_ALLOW_LIST = 0x03
GA_EXTENSIONS = 0x04
GA_OPTIONS = 0x05
GA_PIN_UV_AUTH_PARAM = 0x06
GA_PIN_UV_AUTH_PROTOCOL = 0x07

#: Length of clientDataHash (SHA-256).
CLIENT_DATA_HASH_SIZE = 32
#: Maximum user handle length (WebAuthn: "a maximum size of 64 bytes").
MAX_USER_ID_LENGTH = 64
#: Authenticators may truncate user/rp names to 64 bytes (CTAP 2.1 section 6.1, "rp"/"user").
MAX_NAME_BYTES = 64

PUBLIC_KEY = "public-key"

T = TypeVar("T")


def _missing(what: str) -> CtapError:
    return CtapError(CtapStatus.MISSING_PARAMETER, what)


def _type_error(what: str) -> CtapError:
    return CtapError(CtapStatus.CBOR_UNEXPECTED_TYPE, what)


def _typed(value: object, kind: type[T], what: str) -> T:
    # bool is an int subclass: never accept it where an integer is expected.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise _type_error(what)
    return value


def _required(m: Mapping[Any, Any], key: object, kind: type[T], what: str) -> T:
    if key not in m:
        raise _missing(what)
    return _typed(m[key], kind, what)


def _member(m: Mapping[Any, Any], key: object, kind: type[T], what: str) -> T:
    """A required member of a structure inside a parameter (rp, user, a pubKeyCredParams
    entry, a credential descriptor): missing is a wrong type, not a missing parameter.
    CTAP 2.1 section 8 (kept in 2.3): "If structures in messages from the host are missing
    required members, or the values of those members have the wrong type, then the
    authenticator SHOULD return CTAP2_ERR_CBOR_UNEXPECTED_TYPE." A missing parameter of the
    command itself stays CTAP2_ERR_MISSING_PARAMETER (:func:`_required`)."""
    if key not in m:
        raise _type_error(what)
    return _typed(m[key], kind, what)


def _optional(m: Mapping[Any, Any], key: object, kind: type[T], what: str) -> T | None:
    if key not in m:
        return None
    return _typed(m[key], kind, what)


def _unsigned(m: Mapping[Any, Any], key: object, what: str) -> int | None:
    """An optional "Unsigned Integer" parameter: a negative integer is another CBOR type."""
    return cbor.unsigned(m[key], what) if key in m else None


def _truncate(text: str | None) -> str | None:
    """Cut to at most MAX_NAME_BYTES of UTF-8 without splitting a character."""
    if text is None:
        return None
    raw = text.encode("utf-8")
    if len(raw) <= MAX_NAME_BYTES:
        return text
    return raw[:MAX_NAME_BYTES].decode("utf-8", errors="ignore")


def _client_data_hash(m: Mapping[Any, Any], key: int) -> bytes:
    value = _required(m, key, bytes, "clientDataHash")
    if len(value) != CLIENT_DATA_HASH_SIZE:
        raise CtapError(CtapStatus.INVALID_PARAMETER, "clientDataHash must be 32 bytes")
    return value


@dataclass(frozen=True)
class RpEntity:
    id: str
    name: str | None = None

    @classmethod
    def from_cbor(cls, value: object) -> RpEntity:
        m = _typed(value, dict, "rp")
        return cls(
            id=_member(m, "id", str, "rp.id"),
            name=_truncate(_optional(m, "name", str, "rp.name")),
        )


@dataclass(frozen=True)
class UserEntity:
    id: bytes
    name: str | None = None
    display_name: str | None = None

    @classmethod
    def from_cbor(cls, value: object) -> UserEntity:
        m = _typed(value, dict, "user")
        user_id = _member(m, "id", bytes, "user.id")
        if not 1 <= len(user_id) <= MAX_USER_ID_LENGTH:
            raise CtapError(CtapStatus.INVALID_PARAMETER, "user.id must be 1..64 bytes")
        return cls(
            id=user_id,
            name=_truncate(_optional(m, "name", str, "user.name")),
            display_name=_truncate(_optional(m, "displayName", str, "user.displayName")),
        )


@dataclass(frozen=True)
class CredentialParameters:
    """One PublicKeyCredentialParameters entry."""

    type: str
    alg: int

    @classmethod
    def from_cbor(cls, value: object) -> CredentialParameters:
        # CTAP 2.1 section 6.1.2 step 3.1.1: "If the element is missing required members,
        # including members that are mandatory only for the specific type, then return an
        # error, for example CTAP2_ERR_INVALID_CBOR": an example, not a rule; vfido answers
        # what section 8 says of any structure (see _member).
        m = _typed(value, dict, "pubKeyCredParams entry")
        return cls(
            type=_member(m, "type", str, "pubKeyCredParams.type"),
            alg=_member(m, "alg", int, "pubKeyCredParams.alg"),
        )


@dataclass(frozen=True)
class CredentialDescriptor:
    """A PublicKeyCredentialDescriptor (allowList/excludeList entry)."""

    type: str
    id: bytes

    @classmethod
    def from_cbor(cls, value: object) -> CredentialDescriptor:
        m = _typed(value, dict, "credential descriptor")
        descriptor = cls(
            type=_member(m, "type", str, "descriptor.type"),
            id=_member(m, "id", bytes, "descriptor.id"),
        )
        if "transports" in m:
            transports = _typed(m["transports"], list, "descriptor.transports")
            for t in transports:
                _typed(t, str, "descriptor.transports entry")
        return descriptor

    def to_cbor(self) -> dict[str, Any]:
        return {"type": self.type, "id": self.id}


def _descriptor_list(m: Mapping[Any, Any], key: int, what: str) -> tuple[CredentialDescriptor, ...]:
    entries = _optional(m, key, list, what)
    if entries is None:
        return ()
    return tuple(CredentialDescriptor.from_cbor(e) for e in entries)


@dataclass(frozen=True)
class Options:
    """The options map; ``None`` = absent (each command applies its own default)."""

    rk: bool | None = None
    up: bool | None = None
    uv: bool | None = None

    @classmethod
    def from_cbor(cls, value: object) -> Options:
        m = _typed(value, dict, "options")
        for k in m:
            _typed(k, str, "option key")
        # Unknown option keys are treated as absent (section 6.1.2 step 5).
        return cls(
            rk=_optional(m, "rk", bool, "options.rk"),
            up=_optional(m, "up", bool, "options.up"),
            uv=_optional(m, "uv", bool, "options.uv"),
        )


def _extensions(m: Mapping[Any, Any], key: int) -> dict[str, Any]:
    ext = _optional(m, key, dict, "extensions")
    if ext is None:
        return {}
    for k in ext:
        _typed(k, str, "extension identifier")
    return ext


def _string_list(m: Mapping[Any, Any], key: int, what: str) -> tuple[str, ...] | None:
    entries = _optional(m, key, list, what)
    if entries is None:
        return None
    return tuple(_typed(e, str, f"{what} entry") for e in entries)


#: The options map absent (immutable, so one instance serves every request).
_NO_OPTIONS = Options()


def _options(m: Mapping[Any, Any], key: int) -> Options:
    return Options.from_cbor(m[key]) if key in m else _NO_OPTIONS


def _top_level(m: object) -> dict[Any, Any]:
    return _typed(m, dict, "request parameters")


@dataclass(frozen=True)
class MakeCredentialRequest:
    client_data_hash: bytes
    rp: RpEntity
    user: UserEntity
    pub_key_cred_params: tuple[CredentialParameters, ...]
    exclude_list: tuple[CredentialDescriptor, ...] = ()
    extensions: dict[str, Any] = field(default_factory=dict)
    options: Options = Options()
    pin_uv_auth_param: bytes | None = field(default=None, repr=False)
    pin_uv_auth_protocol: int | None = None
    enterprise_attestation: int | None = None
    attestation_formats_preference: tuple[str, ...] | None = None

    @classmethod
    def from_cbor_map(cls, value: object) -> MakeCredentialRequest:
        m = _top_level(value)
        client_data_hash = _client_data_hash(m, MC_CLIENT_DATA_HASH)
        if MC_RP not in m:
            raise _missing("rp")
        rp = RpEntity.from_cbor(m[MC_RP])
        if MC_USER not in m:
            raise _missing("user")
        user = UserEntity.from_cbor(m[MC_USER])
        params = _required(m, MC_PUB_KEY_CRED_PARAMS, list, "pubKeyCredParams")
        return cls(
            client_data_hash=client_data_hash,
            rp=rp,
            user=user,
            pub_key_cred_params=tuple(CredentialParameters.from_cbor(p) for p in params),
            exclude_list=_descriptor_list(m, MC_EXCLUDE_LIST, "excludeList"),
            extensions=_extensions(m, MC_EXTENSIONS),
            options=_options(m, MC_OPTIONS),
            pin_uv_auth_param=_optional(m, MC_PIN_UV_AUTH_PARAM, bytes, "pinUvAuthParam"),
            pin_uv_auth_protocol=_unsigned(m, MC_PIN_UV_AUTH_PROTOCOL, "pinUvAuthProtocol"),
            enterprise_attestation=_unsigned(m, MC_ENTERPRISE_ATTESTATION, "enterpriseAttestation"),
            attestation_formats_preference=_string_list(
                m, MC_ATTESTATION_FORMATS_PREFERENCE, "attestationFormatsPreference"
            ),
        )


@dataclass(frozen=True)
class GetAssertionRequest:
    rp_id: str
    client_data_hash: bytes
    allow_list: tuple[CredentialDescriptor, ...] = ()
    extensions: dict[str, Any] = field(default_factory=dict)
    options: Options = Options()
    pin_uv_auth_param: bytes | None = field(default=None, repr=False)
    pin_uv_auth_protocol: int | None = None

    @classmethod
    def from_cbor_map(cls, value: object) -> GetAssertionRequest:
        m = _top_level(value)
        return cls(
            rp_id=_required(m, GA_RP_ID, str, "rpId"),
            client_data_hash=_client_data_hash(m, GA_CLIENT_DATA_HASH),
            allow_list=_descriptor_list(m, GA_ALLOW_LIST, "allowList"),
            extensions=_extensions(m, GA_EXTENSIONS),
            options=_options(m, GA_OPTIONS),
            pin_uv_auth_param=_optional(m, GA_PIN_UV_AUTH_PARAM, bytes, "pinUvAuthParam"),
            pin_uv_auth_protocol=_unsigned(m, GA_PIN_UV_AUTH_PROTOCOL, "pinUvAuthProtocol"),
        )
