"""The W3C WebDriver "Virtual Authenticators" model on a real vfido key.

WebAuthn Level 3 section 11 ("WebAuthn WebDriver Extensions") lets a test create
authenticators and give them credentials; browsers implement it with an in-browser fake.
This module is the same model on a vfido key, with the same names and JSON shapes:

- :class:`AuthenticatorOptions`: the Add Virtual Authenticator parameters (section 11.2,
  ``protocol``, ``transport``, ``hasResidentKey``, ``hasUserVerification``,
  ``isUserConsenting``, ``isUserVerified``, ``extensions``, ``defaultBackupEligibility``,
  ``defaultBackupState``) and what they make of a key (:meth:`AuthenticatorOptions.key_arguments`:
  ``VirtualKey`` arguments, presence mode, behaviours).
- the credential commands on a running key's :class:`vfido.control.commands.KeyParts`:
  :func:`add_credential`, :func:`get_credentials`, :func:`remove_credential`,
  :func:`remove_all_credentials`, :func:`set_user_verified`,
  :func:`set_credential_properties`, whose arguments and answers are the Credential
  Parameters JSON (section 11.7: ``credentialId``, ``isResidentCredential``, ``rpId``,
  ``privateKey`` base64url PKCS#8, ``userHandle``, ``signCount``, ``largeBlob``,
  ``backupEligibility``, ``backupState``).

Errors are :class:`WebAuthnError` with the WebDriver error code (``invalid argument``...).
The control API (``webauthn-*`` commands), :class:`vfido.control.KeyController`,
:class:`vfido.api.VirtualKey` and ``vfido webdriver`` all call these functions.

How the model maps onto vfido:

- ``protocol``: ``ctap2_1`` is the key as it is; ``ctap2`` the ``versions=FIDO_2_0``
  behaviour; ``ctap1/u2f`` the ``versions=U2F_V2`` behaviour (a U2F-only key).
- ``hasUserVerification``: built-in user verification (``vfido run --uv``).
- ``isUserConsenting`` false: presence mode ``deny``; ``isUserVerified`` false with
  ``hasUserVerification``: presence mode ``deny-uv`` (presence given, UV fails).
  Set User Verified changes only whether built-in UV succeeds: a key that is not consenting,
  or waits for ``vfido approve``, keeps doing so (between ``auto`` and ``deny-uv`` the
  mode's name follows).
- ``transport``: recorded and answered; the key itself is what its vfido transport is
  (UHID: USB HID to the browser).
- ``hasResidentKey`` false: a key without discoverable-credential storage
  (``Config.resident_keys``): getInfo says ``rk`` false, makeCredential refuses ``rk`` with
  UNSUPPORTED_OPTION, and Add Credential refuses resident credentials, as the spec says.
- ``extensions``: ``largeBlob``, ``credBlob``, ``minPinLength``, ``prf`` (hmac-secret) are
  always offered by a vfido key; others are refused.
- ``credentialId``: a vfido key seals its credential IDs; an ID chosen by the test is kept
  next to the sealed one (:mod:`vfido.authenticator.credential_source`), so the browser can
  present the test's ID. Get Credentials lists the discoverable credentials and the
  server-side ones: those added here, and, on a key made from these options
  (``Config.record_server_side_credentials``), those the browser made, whose sealed IDs the
  key records in its keystore (nothing secret in plaintext); removing one revokes it. A
  key not made from options keeps no such record: its server-side credentials live only in
  their IDs (the relying party keeps them) and are neither listed nor removable here.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import os
import struct
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import cbor2
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from vfido.authenticator import behaviours as beh
from vfido.authenticator.authdata import (
    AuthDataFlags,
    backup_flags,
    keystore_backup_eligible,
    rp_id_hash,
)
from vfido.authenticator.cose import CredentialKey, UnsupportedAlgorithm
from vfido.authenticator.credential_source import (
    IMPORTED_ID_STATE_PREFIX,
    ImportedCredentialId,
    decode_credential_id,
    imported_id_state_key,
)
from vfido.authenticator.large_blobs import EMPTY_ARRAY, MAX_SERIALIZED_LARGE_BLOB_ARRAY, STATE_KEY
from vfido.authenticator.provisioning import (
    ProvisioningError,
    forget_imported_id,
    key_from_pkcs8,
    pkcs8_of,
)
from vfido.authenticator.provisioning import add_credential as provision
from vfido.keystore.store import CredentialRecord, KeystoreError

if TYPE_CHECKING:
    from vfido.control.commands import KeyParts

#: WebDriver error codes (W3C WebDriver section 6.6) used here, with their HTTP status.
INVALID_ARGUMENT: Final = "invalid argument"
UNSUPPORTED_OPERATION: Final = "unsupported operation"
ERROR_STATUS: Final = {INVALID_ARGUMENT: 400, UNSUPPORTED_OPERATION: 500}

#: Section 11.2's protocols, transports (WebAuthn's AuthenticatorTransport) and the
#: authenticator extension capabilities (section 11.3) a vfido key offers.
PROTOCOLS: Final = ("ctap1/u2f", "ctap2", "ctap2_1")
TRANSPORTS: Final = ("usb", "nfc", "ble", "smart-card", "hybrid", "internal")
EXTENSIONS: Final = ("largeBlob", "credBlob", "minPinLength", "prf")
#: The Authenticator Configuration's names (W3C WebAuthn L3 11.2): the only ones Add Virtual
#: Authenticator takes.
OPTION_NAMES: Final = (
    "protocol",
    "transport",
    "hasResidentKey",
    "hasUserVerification",
    "isUserConsenting",
    "isUserVerified",
    "extensions",
    "uvm",
    "defaultBackupEligibility",
    "defaultBackupState",
)
#: The CTAP extension behind each (section 11.3: ``prf`` is hmac-secret).
_CTAP_EXTENSION: Final = {
    "largeBlob": "largeBlobKey",
    "credBlob": "credBlob",
    "minPinLength": "minPinLength",
    "prf": "hmac-secret",
}
#: The ``versions`` behaviour of each protocol (None: the key as it is).
PROTOCOL_VERSIONS: Final[dict[str, str | None]] = {
    "ctap1/u2f": beh.U2F_V2,
    "ctap2": beh.FIDO_2_0,
    "ctap2_1": None,
}


class WebAuthnError(Exception):
    """A WebDriver error: ``code`` (e.g. ``invalid argument``) and one line for people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code

    @property
    def http_status(self) -> int:
        return ERROR_STATUS.get(self.code, 500)


def _invalid(message: str) -> WebAuthnError:
    return WebAuthnError(INVALID_ARGUMENT, message)


def b64url_decode(name: str, text: object) -> bytes:
    """Base64url with or without padding (Selenium pads). Raises WebAuthnError."""
    if not isinstance(text, str):
        raise _invalid(f"{name} must be a base64url string")
    stripped = text.rstrip("=")
    if any(c not in _B64URL for c in stripped):
        raise _invalid(f"{name} is not base64url")
    try:
        return base64.urlsafe_b64decode(stripped + "=" * (-len(stripped) % 4))
    except (binascii.Error, ValueError):
        raise _invalid(f"{name} is not base64url") from None


_B64URL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def _bool(params: Mapping[str, Any], name: str, default: bool | None) -> bool | None:
    """``params[name]``, a boolean, or ``default`` when absent (JSON null counts as absent
    only where ``default`` is None: "leave as it is")."""
    value = params.get(name, default)
    if value is None and default is not None:
        raise _invalid(f"{name} must be a boolean")  # null is no default: Chrome says so too
    if value is not None and not isinstance(value, bool):
        raise _invalid(f"{name} must be a boolean")
    return value


#: Extensions of CTAP 2.1 (its authenticatorLargeBlobs, credBlob and minPinLength): a
#: ``ctap2`` (CTAP 2.0) or ``ctap1/u2f`` authenticator cannot have them.
CTAP21_EXTENSIONS: Final = ("largeBlob", "credBlob", "minPinLength")


def _protocol_has(protocol: str, extension: str) -> bool:
    """Whether an authenticator of ``protocol`` can have ``extension``: a U2F key none, a
    CTAP 2.0 key none of CTAP 2.1's (Chrome: "Specified options require a CTAP 2.1
    authenticator")."""
    if protocol == "ctap1/u2f":
        return False
    return protocol == "ctap2_1" or extension not in CTAP21_EXTENSIONS


def _check_backup_flags(eligible: bool | None, backed_up: bool | None) -> None:
    """WebAuthn L3 section 6.1.3: BE 0 with BS 1 "is not allowed"."""
    if backed_up and not eligible:
        raise _invalid("backupState needs backupEligibility (BS without BE is not allowed)")


@dataclass(frozen=True)
class AuthenticatorOptions:
    """Add Virtual Authenticator's parameters (WebAuthn L3 section 11.2), defaults as there."""

    protocol: str
    transport: str
    has_resident_key: bool = False
    has_user_verification: bool = False
    is_user_consenting: bool = True
    is_user_verified: bool = False
    extensions: tuple[str, ...] = ()
    default_backup_eligibility: bool = False
    default_backup_state: bool = False

    @classmethod
    def from_json(cls, params: Mapping[str, Any]) -> AuthenticatorOptions:
        """Validate the parameters as section 11.4 says. Raises WebAuthnError."""
        if not isinstance(params, Mapping):
            raise _invalid("the parameters must be an object")
        protocol = params.get("protocol")
        if protocol not in PROTOCOLS:
            raise _invalid(f"protocol must be one of {', '.join(PROTOCOLS)}")
        transport = params.get("transport")
        if transport not in TRANSPORTS:
            raise _invalid(f"transport must be one of {', '.join(TRANSPORTS)}")
        extensions = params.get("extensions", [])
        if not isinstance(extensions, list) or not all(isinstance(e, str) for e in extensions):
            raise _invalid("extensions must be an array of strings")
        # Every value is checked (invalid argument) before the extensions are (unsupported
        # operation), in the order of W3C WebAuthn L3 11.3 (Add Virtual Authenticator).
        unknown = sorted(str(name) for name in params if name not in OPTION_NAMES)
        if unknown:
            # W3C WebAuthn L3 11.3, Add Virtual Authenticator: a parameter that is not in the
            # Authenticator Configuration is "invalid argument" (a misspelt option would
            # otherwise make a key with the default).
            raise _invalid(
                f"unknown option {unknown[0][:40]!r} (the options: {', '.join(OPTION_NAMES)})"
            )
        # uvm (WebAuthn L2 11.2): UvmEntries, "Up to 3 User Verification Method entries", which
        # have "no effect if the Virtual Authenticator does not support the User Verification
        # Method extension", as a vfido key does not.
        if not isinstance(params.get("uvm", []), list):
            raise _invalid("uvm must be an array of User Verification Method entries")
        flags = {
            name: _bool(params, key, default)
            for name, key, default in (
                ("has_resident_key", "hasResidentKey", False),
                ("has_user_verification", "hasUserVerification", False),
                ("is_user_consenting", "isUserConsenting", True),
                ("is_user_verified", "isUserVerified", False),
                ("default_backup_eligibility", "defaultBackupEligibility", False),
                ("default_backup_state", "defaultBackupState", False),
            )
        }
        _check_backup_flags(flags["default_backup_eligibility"], flags["default_backup_state"])
        for extension in extensions:
            if extension not in EXTENSIONS:
                raise WebAuthnError(
                    UNSUPPORTED_OPERATION, f"extension {extension[:40]!r} is not supported"
                )
        needs_21 = [e for e in extensions if not _protocol_has(protocol, e)]
        if needs_21:
            raise _invalid(f"extension {needs_21[0]} needs a ctap2_1 authenticator, not {protocol}")
        return cls(protocol=protocol, transport=transport, extensions=tuple(extensions), **flags)  # type: ignore[arg-type]

    def to_json(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol,
            "transport": self.transport,
            "hasResidentKey": self.has_resident_key,
            "hasUserVerification": self.has_user_verification,
            "isUserConsenting": self.is_user_consenting,
            "isUserVerified": self.is_user_verified,
            "extensions": list(self.extensions),
            "defaultBackupEligibility": self.default_backup_eligibility,
            "defaultBackupState": self.default_backup_state,
        }

    @property
    def presence(self) -> str:
        """The presence mode that behaves as these options say."""
        if not self.is_user_consenting:
            return "deny"
        if self.has_user_verification and not self.is_user_verified:
            return "deny-uv"
        return "auto"

    def key_arguments(self) -> dict[str, Any]:
        """:class:`vfido.api.VirtualKey` keyword arguments for a key with these options
        (check the backup defaults with :func:`check_backup_defaults` once it runs)."""
        versions = PROTOCOL_VERSIONS[self.protocol]
        return {
            "uv": self.has_user_verification,
            "presence": self.presence,
            "behaviours": {"versions": versions} if versions is not None else {},
        }


def options_of(parts: KeyParts) -> AuthenticatorOptions:
    """The options a running key behaves as (a key not made from options: as it is)."""
    if parts.webauthn_options is not None:
        return parts.webauthn_options
    versions = parts.device.behaviours.current().versions
    protocol = next((p for p, v in PROTOCOL_VERSIONS.items() if v == versions), "ctap2_1")
    extensions: tuple[str, ...] = EXTENSIONS
    model = parts.device.config.model  # a persona: its protocol and its extensions only
    if model is not None:
        if not model.ctap2:
            protocol = "ctap1/u2f"
        elif not model.ctap21 and protocol == "ctap2_1":
            protocol = "ctap2"
        extensions = tuple(e for e in EXTENSIONS if _CTAP_EXTENSION[e] in model.extensions)
    # as Add Virtual Authenticator would take them back
    extensions = tuple(e for e in extensions if _protocol_has(protocol, e))
    mode = getattr(parts.presence, "mode", "auto")
    uv_fails = bool(getattr(parts.presence, "uv_fails", False))
    builtin_uv = parts.device.config.builtin_uv
    eligible = keystore_backup_eligible(parts.store)
    return AuthenticatorOptions(
        protocol=protocol,
        transport="usb",
        has_resident_key=parts.device.config.resident_keys and protocol != "ctap1/u2f",
        has_user_verification=builtin_uv and protocol != "ctap1/u2f",
        is_user_consenting=mode != "deny",
        is_user_verified=builtin_uv and not uv_fails,
        extensions=extensions,
        default_backup_eligibility=eligible,
        # What a credential made now reports: the one rule for BS (authdata.backup_flags).
        default_backup_state=bool(
            backup_flags(parts.store, None, parts.device.config.default_backup_state)
            & AuthDataFlags.BS
        ),
    )


def check_backup_defaults(parts: KeyParts, options: AuthenticatorOptions) -> None:
    """defaultBackupEligibility must be what the keystore is (vfido's credentials are backup
    eligible when the keystore is, see :mod:`vfido.authenticator.authdata`). Raises
    WebAuthnError when the keystore cannot. defaultBackupState ("This value MUST be
    reflected by the BS authenticator data flag when performing an
    authenticatorMakeCredential operation with this virtual authenticator") is the key's
    ``Config.default_backup_state`` (:meth:`vfido.api.VirtualKey.from_webauthn_options` sets
    it): never written to the keystore, so it holds across authenticatorReset and ends with
    the key."""
    eligible = keystore_backup_eligible(parts.store)
    if options.default_backup_eligibility != eligible:
        raise WebAuthnError(
            UNSUPPORTED_OPERATION,
            f"this keystore's credentials are {'' if eligible else 'not '}backup eligible "
            "(vfido init --backup-eligible)",
        )


# --- credentials ---------------------------------------------------------------------------


def _record_json(parts: KeyParts, record: CredentialRecord, sign_count: int) -> dict[str, Any]:
    result: dict[str, Any] = {
        "credentialId": beh.b64url(record.credential_id),
        "isResidentCredential": True,
        "rpId": record.rp_id,
        "privateKey": _private_key_json(record.algorithm, record.private_key),
        "userHandle": beh.b64url(record.user_id),
        "signCount": sign_count,
        "backupEligibility": record.backup_eligible,
        "backupState": record.backup_state,
    }
    blob = _read_large_blob(parts, record.large_blob_key)
    if blob is not None:
        result["largeBlob"] = beh.b64url(blob)
    return result


def _private_key_json(algorithm: int, private: bytes) -> str | None:
    try:
        return beh.b64url(pkcs8_of(CredentialKey.from_private_bytes(algorithm, private)))
    except (ValueError, UnsupportedAlgorithm, ProvisioningError):
        return None


def _imported(parts: KeyParts) -> list[ImportedCredentialId]:
    """The server-side credentials imported with an ID of their own."""
    found = []
    for state_key in list(parts.store.state_keys()):
        if not state_key.startswith(IMPORTED_ID_STATE_PREFIX):
            continue
        raw = parts.store.get_state(state_key)
        imported = ImportedCredentialId.from_bytes(raw) if raw is not None else None
        if imported is not None and imported.credential_id and imported.rp_id:
            found.append(imported)
    return found


def get_credentials(parts: KeyParts) -> list[dict[str, Any]]:
    """Get Credentials (section 11.8): every credential as Credential Parameters."""
    result = []
    try:
        resident = {s.record.credential_id: s for s in parts.store.list_credentials()}
        for summary in resident.values():
            result.append(_record_json(parts, summary.record, summary.sign_count))
        key = parts.store.identity().credential_key
        for imported in _imported(parts):
            if imported.credential_id in resident:
                continue
            sealed = decode_credential_id(key, rp_id_hash(imported.rp_id), imported.sealed_id)
            if sealed is None or sealed.discoverable:
                continue  # from before a reset, or a removed discoverable credential
            result.append(
                {
                    "credentialId": beh.b64url(imported.credential_id),
                    "isResidentCredential": False,
                    "rpId": imported.rp_id,
                    "privateKey": _private_key_json(sealed.algorithm, sealed.private_key),
                    **(
                        {"userHandle": beh.b64url(imported.user_handle)}
                        if imported.user_handle is not None
                        else {}
                    ),
                    "signCount": parts.store.get_counter(imported.credential_id),
                    "backupEligibility": imported.backup_eligible,
                    "backupState": imported.backup_state,
                }
            )
    except KeystoreError as exc:
        raise WebAuthnError(UNSUPPORTED_OPERATION, str(exc)) from None
    return result


def add_credential(
    parts: KeyParts, params: Mapping[str, Any], now: float | None = None
) -> dict[str, Any]:
    """Add Credential (section 11.7): ``params`` is the Credential Parameters JSON.
    Returns the credential as Get Credentials shows it, without its ``privateKey``: the
    caller has it, and an answer printed (`vfido ctl webauthn add-credential`, `vfido ctl
    call`) lands in a CI log (a newcomer review). The W3C command itself returns nothing."""
    if not isinstance(params, Mapping):
        raise _invalid("the parameters must be an object")
    options = options_of(parts)
    credential_id = b64url_decode("credentialId", params.get("credentialId"))
    if not credential_id:
        raise _invalid("credentialId is empty")
    resident = params.get("isResidentCredential")
    if not isinstance(resident, bool):
        raise _invalid("isResidentCredential must be a boolean")
    rp_id = params.get("rpId")
    if not isinstance(rp_id, str) or not rp_id:
        raise _invalid("rpId must be a string")
    private = b64url_decode("privateKey", params.get("privateKey"))
    user_handle = None
    if params.get("userHandle") is not None:
        user_handle = b64url_decode("userHandle", params.get("userHandle"))
    if resident and not user_handle:
        raise _invalid("a resident credential needs a userHandle")
    # "a starting value equal to the parameters' signCount or 0 if signCount is null"
    sign_count = params.get("signCount")
    if sign_count is None:
        sign_count = 0
    if not isinstance(sign_count, int) or isinstance(sign_count, bool) or sign_count < 0:
        raise _invalid("signCount must be a non-negative integer")
    large_blob = None
    if params.get("largeBlob") is not None:
        large_blob = b64url_decode("largeBlob", params.get("largeBlob"))
        if not resident:
            raise _invalid("largeBlob needs a resident credential")
        if "largeBlob" not in options.extensions:
            if parts.webauthn_options is None:  # vfido's own callers: say so
                raise _invalid("this authenticator does not support the largeBlob extension")
            # A WebDriver virtual authenticator (W3C WebAuthn L3 11.8, Add Credential): "If
            # the authenticator supports the largeBlob extension and the parameters'
            # largeBlob feature is defined: ... Otherwise: Let largeBlob be null."
            large_blob = None
    if resident and not options.has_resident_key:
        raise _invalid("this authenticator does not support resident credentials")
    eligible = _bool(params, "backupEligibility", options.default_backup_eligibility)
    backed_up = _bool(params, "backupState", options.default_backup_state)
    if params.get("backupState") is not None:  # the defaults never combine so
        _check_backup_flags(eligible, backed_up)
    if _find(parts, credential_id)[1] is not None:
        # A key holds one credential per ID (Chrome's authenticator refuses it too); adding
        # it again replaced, or hid, the one there.
        raise _invalid("a credential with that credentialId is already on this authenticator")
    try:
        key = key_from_pkcs8(private)
        made = provision(
            parts.store,
            key,
            rp_id,
            now=time.time() if now is None else now,
            discoverable=resident,
            user_id=user_handle,
            sign_count=sign_count,
            max_resident_credentials=parts.device.config.max_resident_credentials,
            credential_id=credential_id,
            backup_eligible=eligible,
            backup_state=backed_up and bool(eligible),
        )
        if large_blob is not None:
            record = parts.store.get_credential(made.credential_id)
            assert record is not None and record.large_blob_key is not None
            _write_large_blob(parts, record.large_blob_key, large_blob)
    except ProvisioningError as exc:
        raise _invalid(str(exc)) from None
    except KeystoreError as exc:
        raise WebAuthnError(UNSUPPORTED_OPERATION, str(exc)) from None
    for credential in get_credentials(parts):
        if credential["credentialId"] == beh.b64url(credential_id):
            return {name: value for name, value in credential.items() if name != "privateKey"}
    raise WebAuthnError(UNSUPPORTED_OPERATION, "the credential was not stored")


def _find(parts: KeyParts, credential_id: bytes) -> tuple[CredentialRecord | None, str | None]:
    """(its record if resident, its RP ID) of a credential the key lists, else (None, None)."""
    record = parts.store.get_credential(credential_id)
    if record is not None:
        return record, record.rp_id
    for imported in _imported(parts):
        if imported.credential_id == credential_id:
            return None, imported.rp_id
    return None, None


def remove_credential(parts: KeyParts, credential_id: bytes) -> None:
    """Remove Credential (section 11.9). Unknown: ``invalid argument``."""
    record, rp_id = _find(parts, credential_id)
    if rp_id is None:
        if not parts.device.config.record_server_side_credentials:
            raise _invalid(
                "no credential with that credentialId on this key: a key not made from "
                "WebDriver options (VirtualKey.from_webauthn_options, vfido webdriver) keeps no "
                "record of the server-side credentials it makes, so it cannot list or remove "
                "them; they live in their IDs, which the relying party keeps"
            )
        raise _invalid("no credential with that credentialId")
    if record is not None:
        parts.store.delete_credential(credential_id)
    forget_imported_id(parts.store, rp_id, credential_id)


def remove_all_credentials(parts: KeyParts) -> None:
    """Remove All Credentials (section 11.10): every credential Get Credentials lists."""
    for summary in parts.store.list_credentials():
        parts.store.delete_credential(summary.record.credential_id)
    parts.store.put_state(
        {k: None for k in list(parts.store.state_keys()) if k.startswith(IMPORTED_ID_STATE_PREFIX)}
    )


def set_user_verified(parts: KeyParts, verified: object) -> None:
    """Set User Verified (section 11.11): user verification succeeds or fails from now on."""
    if not isinstance(verified, bool):
        raise _invalid("isUserVerified must be a boolean")
    set_verified = getattr(parts.presence, "set_user_verified", None)
    if set_verified is None:
        raise WebAuthnError(UNSUPPORTED_OPERATION, "this key's presence cannot be switched")
    set_verified(verified)  # only UV: isUserConsenting and manual presence stay as they are
    if parts.webauthn_options is not None:
        parts.webauthn_options = dataclasses.replace(
            parts.webauthn_options, is_user_verified=verified
        )


def set_credential_properties(
    parts: KeyParts, credential_id: bytes, params: Mapping[str, Any]
) -> None:
    """Set Credential Properties (section 11.12): ``backupEligibility``/``backupState``."""
    if not isinstance(params, Mapping):
        raise _invalid("the parameters must be an object")
    eligible = _bool(params, "backupEligibility", None)
    backed_up = _bool(params, "backupState", None)
    record, rp_id = _find(parts, credential_id)
    if rp_id is None:
        raise _invalid("no credential with that credentialId")

    def flags(now_eligible: bool, now_backed_up: bool) -> tuple[bool, bool]:
        """(BE, BS) after the change (what is not given stays), checked."""
        after = (
            now_eligible if eligible is None else eligible,
            now_backed_up if backed_up is None else backed_up,
        )
        _check_backup_flags(*after)
        return after

    if record is not None:
        be, bs = flags(record.backup_eligible, record.backup_state)
        parts.store.put_credential(dataclasses.replace(record, backup_eligible=be, backup_state=bs))
        return
    state_key = imported_id_state_key(rp_id_hash(rp_id), credential_id)
    raw = parts.store.get_state(state_key)
    imported = ImportedCredentialId.from_bytes(raw) if raw is not None else None
    assert imported is not None
    be, bs = flags(imported.backup_eligible, imported.backup_state)
    changed = dataclasses.replace(imported, backup_eligible=be, backup_state=bs)
    parts.store.put_state({state_key: changed.to_bytes()})


# --- largeBlob (CTAP 2.1 section 6.10.3: the large-blob array entries) ----------------------


def _entries(parts: KeyParts) -> list[Any]:
    array = parts.store.get_state(STATE_KEY) or EMPTY_ARRAY
    try:
        entries = cbor2.loads(array[:-16])
    except Exception:  # cbor2 raises several types
        return []
    return entries if isinstance(entries, list) else []


def _read_large_blob(parts: KeyParts, large_blob_key: bytes | None) -> bytes | None:
    """The large blob stored for a credential's largeBlobKey, if any."""
    if large_blob_key is None:
        return None
    for entry in _entries(parts):
        data = _decrypt_entry(entry, large_blob_key)
        if data is not None:
            return data
    return None


def _write_large_blob(parts: KeyParts, large_blob_key: bytes, data: bytes) -> None:
    """Add an entry for ``data`` under ``large_blob_key`` (as a platform would write it)."""
    packer = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    compressed = packer.compress(data) + packer.flush()
    nonce = os.urandom(12)
    ciphertext = AESGCM(large_blob_key).encrypt(
        nonce, compressed, b"blob" + struct.pack("<Q", len(data))
    )
    entries = [e for e in _entries(parts) if _decrypt_entry(e, large_blob_key) is None]
    entries.append({1: ciphertext, 2: nonce, 3: len(data)})
    body = cbor2.dumps(entries, canonical=True)
    array = body + hashlib.sha256(body).digest()[:16]
    if len(array) > MAX_SERIALIZED_LARGE_BLOB_ARRAY:
        raise _invalid("largeBlob does not fit the key's large-blob storage")
    parts.store.put_state({STATE_KEY: array})


def _decrypt_entry(entry: Any, large_blob_key: bytes) -> bytes | None:
    if not isinstance(entry, dict):
        return None
    ciphertext, nonce, size = entry.get(1), entry.get(2), entry.get(3)
    if not (isinstance(ciphertext, bytes) and isinstance(nonce, bytes) and isinstance(size, int)):
        return None
    try:
        compressed = AESGCM(large_blob_key).decrypt(
            nonce, ciphertext, b"blob" + struct.pack("<Q", size)
        )
        return zlib.decompress(compressed, wbits=-zlib.MAX_WBITS)
    except Exception:  # another credential's entry (InvalidTag), or bad data
        return None
