"""authenticatorClientPIN (0x06): PIN set/change, retries, and pinUvAuthTokens.

CTAP 2.1 section 6.5. Persistent PIN state lives in the keystore under the
keys below (all erased by authenticatorReset); the token and the consecutive
failure count are runtime state that a power cycle clears.

    pin.hash         salt(16) || PBKDF2-HMAC-SHA256(LEFT(SHA-256(PIN), 16), salt)
    pin.length       the PIN's length in code points (for setMinPINLength)
    pin.retries      remaining PIN attempts (8 after a correct PIN)
    pin.min_length   minimum PIN length in code points (default 4)
    pin.force_change forcePINChange
    uv.retries       remaining built-in UV attempts
    uv.since_pin     built-in UV operations since the last PIN entry (uvCountSinceLastPinEntry)
    pin.complexity   pinComplexityPolicy turned on by authenticatorConfig (CTAP 2.2)

changePIN and a forced PIN change also reset the persistentPinUvAuthToken
(:mod:`vfido.authenticator.persistent_token`), in the same transaction.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from vfido.authenticator import cbor
from vfido.authenticator.env import (
    Clock,
    KeepaliveStatus,
    PresenceKind,
    PresenceRequest,
    PresenceResult,
    RequestContext,
    UserVerifier,
    instant_verification,
)
from vfido.authenticator.errors import CtapError, CtapStatus
from vfido.authenticator.persistent_token import persistent_token
from vfido.authenticator.persistent_token import reset_updates as reset_persistent_token
from vfido.authenticator.pin_policy import check_pin_complexity
from vfido.authenticator.pin_protocol import PinProtocol, new_protocols
from vfido.authenticator.pin_token import Permission, PinUvAuthToken
from vfido.keystore import entropy
from vfido.keystore.store import KeyStore, KeystoreFull

log = logging.getLogger(__name__)

PIN_RETRIES_MAX = 8
UV_RETRIES_MAX = 8
#: Consecutive wrong PINs before PIN_AUTH_BLOCKED until the next power cycle.
PIN_FAILURES_BEFORE_POWER_CYCLE = 3
DEFAULT_MIN_PIN_LENGTH = 4
_PBKDF2_ITERATIONS = 10_000

#: Permission bits CTAP 2.1/2.2 define: mc ga cm be lbw acfg pcmr.
_DEFINED_PERMISSIONS = 0x7F

_HASH, _LENGTH, _RETRIES = "pin.hash", "pin.length", "pin.retries"
_MIN_LENGTH, _FORCE, _UV_RETRIES = "pin.min_length", "pin.force_change", "uv.retries"
_UV_SINCE_PIN, _COMPLEXITY = "uv.since_pin", "pin.complexity"
_PCMR = Permission.PERSISTENT_CREDENTIAL_MANAGEMENT_READ_ONLY
#: The permission bits each version defines: CTAP 2.2 adds pcmr (0x40) to 2.1's.
CTAP22_PERMISSIONS = _DEFINED_PERMISSIONS
CTAP21_PERMISSIONS = _DEFINED_PERMISSIONS & ~int(_PCMR)
#: What a key grants (be too when it has a fingerprint sensor: authenticator.device).
DEFAULT_PERMISSIONS = (
    Permission.MAKE_CREDENTIAL
    | Permission.GET_ASSERTION
    | Permission.CREDENTIAL_MANAGEMENT
    | Permission.LARGE_BLOB_WRITE
    | Permission.AUTHENTICATOR_CONFIG
    | Permission.PERSISTENT_CREDENTIAL_MANAGEMENT_READ_ONLY
)


class SubCommand(IntEnum):
    GET_PIN_RETRIES = 0x01
    GET_KEY_AGREEMENT = 0x02
    SET_PIN = 0x03
    CHANGE_PIN = 0x04
    GET_PIN_TOKEN = 0x05
    GET_PIN_UV_AUTH_TOKEN_USING_UV_WITH_PERMISSIONS = 0x06
    GET_UV_RETRIES = 0x07
    GET_PIN_UV_AUTH_TOKEN_USING_PIN_WITH_PERMISSIONS = 0x09


@dataclass(frozen=True)
class ClientPinRequest:
    """authenticatorClientPIN parameters (section 6.5.5.1), types checked."""

    sub_command: int  # 0x02
    protocol: int | None = None  # 0x01 pinUvAuthProtocol
    key_agreement: dict[Any, Any] | None = None  # 0x03
    pin_uv_auth_param: bytes | None = field(default=None, repr=False)  # 0x04
    new_pin_enc: bytes | None = field(default=None, repr=False)  # 0x05
    pin_hash_enc: bytes | None = field(default=None, repr=False)  # 0x06
    permissions: int | None = None  # 0x09
    rp_id: str | None = None  # 0x0A

    @classmethod
    def from_cbor_map(cls, m: Mapping[Any, Any]) -> ClientPinRequest:
        def get(key: int, kind: type | tuple[type, ...]) -> Any:
            value = m.get(key)
            if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
                raise CtapError(CtapStatus.CBOR_UNEXPECTED_TYPE, f"clientPin key {key}")
            return value

        def get_unsigned(key: int) -> int | None:
            # 6.5.5.1: subCommand, pinUvAuthProtocol and permissions are "Unsigned Integer".
            return cbor.optional_unsigned(m, key, f"clientPin key {key}")

        sub = get_unsigned(0x02)
        if sub is None:
            raise CtapError(CtapStatus.MISSING_PARAMETER, "subCommand")
        return cls(
            sub_command=sub,
            protocol=get_unsigned(0x01),
            key_agreement=get(0x03, dict),
            pin_uv_auth_param=get(0x04, bytes),
            new_pin_enc=get(0x05, bytes),
            pin_hash_enc=get(0x06, bytes),
            permissions=get_unsigned(0x09),
            rp_id=get(0x0A, str),
        )


def _int(value: bytes | None, default: int) -> int:
    return default if value is None else int.from_bytes(value, "big")


def _enc(value: int) -> bytes:
    return value.to_bytes(4, "big")


def pin_hash16(pin: str) -> bytes:
    """LEFT(SHA-256(PIN), 16), what the platform sends encrypted as pinHashEnc."""
    return hashlib.sha256(pin.encode()).digest()[:16]


def _salted(hash16: bytes, salt: bytes) -> bytes:
    return hashlib.pbkdf2_hmac("sha256", hash16, salt, _PBKDF2_ITERATIONS)


#: Whether a PIN is set, per store (see ClientPin.is_pin_set).
_PIN_SET: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()


class ClientPin:
    """PIN/UV state and the authenticatorClientPIN command."""

    def __init__(
        self,
        store: KeyStore,
        clock: Clock,
        *,
        user_verifier: UserVerifier | None = None,
        supported_permissions: Permission = DEFAULT_PERMISSIONS,
        defined_permissions: int = _DEFINED_PERMISSIONS,
        uv_timeout: float = 30.0,
        pin_complexity_policy: bool = False,
        pin_complexity_policy_known: bool = True,
    ) -> None:
        self._store = store
        self._clock = clock
        self._user_verifier = user_verifier
        #: The permission bits the key's version defines (CTAP 2.1's lack 2.2's pcmr, 0x40):
        #: the others are ignored, as undefined bits are.
        self._defined_permissions = defined_permissions
        self._supported_permissions = supported_permissions & Permission(defined_permissions)
        self._uv_timeout = uv_timeout
        self._pin_complexity_policy = pin_complexity_policy
        #: CTAP 2.2's pinComplexityPolicy is this key's to know (not a 2.1 model's, whose
        #: getInfo has no such member): neither turned on nor enforced where it is not.
        self.pin_complexity_policy_known = pin_complexity_policy_known
        #: What getPinToken grants: mc and ga (CTAP 2.1 section 6.5.5.7.1) ...
        self.legacy_permissions = Permission.MAKE_CREDENTIAL | Permission.GET_ASSERTION
        #: ... and on the preview commands only, what a 2.1-PRE key's Authenticator adds
        #: (cm, be: its platforms authorize credentialMgmtPreview and
        #: userVerificationMgmtPreview with that token, a review: not the 2.1 commands).
        self.legacy_preview_permissions = Permission.NONE
        self.protocols: dict[int, PinProtocol] = new_protocols()
        self.token = PinUvAuthToken(clock)
        self.consecutive_failures = 0

    def __repr__(self) -> str:
        return f"ClientPin(pin_set={self.is_pin_set})"

    # --- persistent state ------------------------------------------------
    @property
    def is_pin_set(self) -> bool:
        # Asked on every makeCredential (uv_protected); cached per store, dropped by
        # every write through _put and by power_cycle (which follows a reset).
        try:
            cached = _PIN_SET.get(self._store)
        except TypeError:  # a store that cannot be weakly referenced: no cache
            return self._store.get_state(_HASH) is not None
        if cached is None:
            cached = self._store.get_state(_HASH) is not None
            _PIN_SET[self._store] = cached
        return cached

    @property
    def pin_retries(self) -> int:
        return _int(self._store.get_state(_RETRIES), PIN_RETRIES_MAX)

    @property
    def uv_retries(self) -> int:
        return _int(self._store.get_state(_UV_RETRIES), UV_RETRIES_MAX)

    @property
    def min_pin_length(self) -> int:
        return _int(self._store.get_state(_MIN_LENGTH), DEFAULT_MIN_PIN_LENGTH)

    @property
    def pin_length(self) -> int:
        return _int(self._store.get_state(_LENGTH), 0)

    @property
    def force_pin_change(self) -> bool:
        return _int(self._store.get_state(_FORCE), 0) == 1

    @property
    def pin_complexity_policy(self) -> bool:
        """CTAP 2.2 pinComplexityPolicy: on by configuration or by authenticatorConfig (on a
        key that knows it: a 2.1 model's keystore may hold it from the full key)."""
        if not self.pin_complexity_policy_known:
            return False
        return self._pin_complexity_policy or _int(self._store.get_state(_COMPLEXITY), 0) == 1

    def defines(self, permission: Permission) -> bool:
        """Whether ``permission`` is a bit this key's version defines (pcmr: CTAP 2.2)."""
        return bool(self._defined_permissions & int(permission))

    def enable_pin_complexity_policy(self) -> None:
        """authenticatorConfig setMinPINLength with pinComplexityPolicy true (CTAP 2.2)."""
        self._put({_COMPLEXITY: _enc(1)})

    @property
    def uv_count_since_pin(self) -> int:
        """uvCountSinceLastPinEntry (CTAP 2.2 getInfo 0x17)."""
        return _int(self._store.get_state(_UV_SINCE_PIN), 0)

    @property
    def uv_blocked(self) -> bool:
        """Built-in UV is blocked: its own retries are spent, or the PIN's. CTAP 2.2 section
        6.5.2 (PIN-Entry and User Verification Retries Counters): "Once the pinRetries
        counter reaches 0, both ClientPin as well as built-in user verification are disabled
        and can only be enabled if authenticator is reset." """
        return self.uv_retries <= 0 or (self.is_pin_set and self.pin_retries <= 0)

    @property
    def has_uv(self) -> bool:
        """Built-in UV is supported and enabled (a fingerprint key: once a finger is
        enrolled, see authenticator.bio_enrollment)."""
        return self._user_verifier is not None and getattr(self._user_verifier, "enabled", True)

    def _forget_cached(self) -> None:
        with contextlib.suppress(TypeError):  # not weakly referenceable: nothing cached
            _PIN_SET.pop(self._store, None)

    def _put(self, updates: Mapping[str, bytes | None]) -> None:
        self._forget_cached()
        try:
            self._store.put_state(updates)
        except KeystoreFull:
            raise CtapError(CtapStatus.KEY_STORE_FULL) from None
        finally:
            self._forget_cached()

    def set_min_pin_length(self, length: int, force_change: bool) -> None:
        """Used by authenticatorConfig setMinPINLength (section 6.11.4)."""
        updates: dict[str, bytes | None] = {_MIN_LENGTH: _enc(length)}
        if force_change or (self.is_pin_set and self.pin_length < length):
            updates[_FORCE] = _enc(1)
            updates.update(reset_persistent_token(self._store))
        self._put(updates)
        if _FORCE in updates:
            self.token.reset()

    def power_cycle(self) -> None:
        """Power-up: new key-agreement keys and token, failure count cleared."""
        self._forget_cached()
        for protocol in self.protocols.values():
            protocol.regenerate()
        self.token.reset()
        self.consecutive_failures = 0

    # --- used by the other commands ----------------------------------------
    def protocol(self, number: int | None) -> PinProtocol:
        if number is None:
            raise CtapError(CtapStatus.MISSING_PARAMETER, "pinUvAuthProtocol")
        found = self.protocols.get(number)
        if found is None:
            raise CtapError(CtapStatus.INVALID_PARAMETER, "unsupported pinUvAuthProtocol")
        return found

    def verify_token(
        self,
        protocol_number: int | None,
        message: bytes,
        pin_uv_auth_param: bytes,
        permission: Permission,
        rp_id: str | None = None,
        *,
        preview: bool = False,
    ) -> None:
        """Check a pinUvAuthParam made with the current token, and its permission
        (``preview``: for a CTAP 2.1-PRE preview command, see ``preview_permissions``).

        PIN_AUTH_INVALID for a bad MAC, an unusable token, a missing permission or
        another permissions RP ID: CTAP 2.1 answers all of these with
        CTAP2_ERR_PIN_AUTH_INVALID (6.1.2 step 11.1, 6.2.2 step 6.1, 6.8.2-6.8.7,
        6.10.2, 6.11); UNAUTHORIZED_PERMISSION is only for requesting a permission
        the key does not support (6.5.5.7).
        When the token has no RP ID yet and ``rp_id`` is given, the token is bound to it.
        """
        protocol = self.protocol(protocol_number)
        self.token.expire_if_due()
        if not self.token.in_use:
            raise CtapError(CtapStatus.PIN_AUTH_INVALID, "no token in use")
        if not protocol.verify(self.token.value, message, pin_uv_auth_param):
            raise CtapError(CtapStatus.PIN_AUTH_INVALID)
        if not self.token.grants(permission, preview=preview):
            raise CtapError(CtapStatus.PIN_AUTH_INVALID, "permission not granted")
        if rp_id is not None:
            if self.token.rp_id is not None and not hmac.compare_digest(
                self.token.rp_id.encode(), rp_id.encode()
            ):
                raise CtapError(CtapStatus.PIN_AUTH_INVALID, "token bound to another RP")
            if self.token.rp_id is None:
                self.token.rp_id = rp_id
        self.token.mark_used()

    def verify_user_builtin(
        self, context: RequestContext, rp_id: str | None, kind: PresenceKind
    ) -> None:
        """Built-in UV for makeCredential / getAssertion with the uv option (6.1.2 step 11)."""
        if not self.has_uv:
            raise CtapError(CtapStatus.INVALID_OPTION, "no built-in user verification")
        if self.uv_blocked:
            raise CtapError(CtapStatus.UV_BLOCKED)
        self._run_uv(context, rp_id, kind)

    # --- the command -------------------------------------------------------
    def process(self, m: Mapping[Any, Any], context: RequestContext) -> dict[int, Any]:
        request = ClientPinRequest.from_cbor_map(m)
        sub = request.sub_command
        if sub == SubCommand.GET_PIN_RETRIES:
            result: dict[int, Any] = {0x03: self.pin_retries}
            if self.consecutive_failures >= PIN_FAILURES_BEFORE_POWER_CYCLE:
                result[0x04] = True  # powerCycleState
            return result
        if sub == SubCommand.GET_UV_RETRIES:
            if self._user_verifier is None:  # supported, enrolled or not
                raise CtapError(CtapStatus.INVALID_SUBCOMMAND)
            return {0x05: self.uv_retries}
        if sub == SubCommand.GET_KEY_AGREEMENT:
            return {0x01: self.protocol(request.protocol).get_public_key()}
        if sub == SubCommand.SET_PIN:
            return self._set_pin(request)
        if sub == SubCommand.CHANGE_PIN:
            return self._change_pin(request)
        if sub == SubCommand.GET_PIN_TOKEN:
            return self._get_token_with_pin(request, legacy=True)
        if sub == SubCommand.GET_PIN_UV_AUTH_TOKEN_USING_PIN_WITH_PERMISSIONS:
            return self._get_token_with_pin(request, legacy=False)
        if sub == SubCommand.GET_PIN_UV_AUTH_TOKEN_USING_UV_WITH_PERMISSIONS:
            return self._get_token_with_uv(request, context)
        raise CtapError(CtapStatus.INVALID_SUBCOMMAND)

    # --- subcommands -------------------------------------------------------
    def _shared_secret(self, request: ClientPinRequest) -> tuple[PinProtocol, bytes]:
        protocol = self.protocol(request.protocol)
        if request.key_agreement is None:
            raise CtapError(CtapStatus.MISSING_PARAMETER, "keyAgreement")
        return protocol, protocol.decapsulate(request.key_agreement)

    def _new_pin(self, protocol: PinProtocol, secret: bytes, new_pin_enc: bytes) -> str:
        """Decrypt and check newPinEnc (6.5.5.5 steps 6-8, 6.5.5.6 steps 9-11)."""
        # Step 6: "The authenticator calls decrypt(shared secret, newPinEnc) to produce
        # paddedNewPin. If an error results, it returns CTAP2_ERR_PIN_AUTH_INVALID."
        try:
            padded = protocol.decrypt(secret, new_pin_enc)
        except CtapError:
            raise CtapError(CtapStatus.PIN_AUTH_INVALID, "newPinEnc does not decrypt") from None
        # Step 7: "If paddedNewPin is NOT 64 bytes long, it returns
        # CTAP1_ERR_INVALID_PARAMETER."
        if len(padded) != 64:
            raise CtapError(CtapStatus.INVALID_PARAMETER, "paddedNewPin length")
        pin_bytes = padded.rstrip(b"\x00")
        if len(pin_bytes) > 63 or len(pin_bytes) == len(padded):
            raise CtapError(CtapStatus.PIN_POLICY_VIOLATION, "PIN too long")
        try:
            pin = pin_bytes.decode("utf-8")
        except UnicodeDecodeError:
            raise CtapError(CtapStatus.PIN_POLICY_VIOLATION, "PIN is not UTF-8") from None
        if len(pin) < self.min_pin_length:
            raise CtapError(CtapStatus.PIN_POLICY_VIOLATION, "PIN too short")
        if self.pin_complexity_policy:
            check_pin_complexity(pin)
        return pin

    def _store_pin(self, pin: str) -> None:
        salt = entropy.random_bytes(16)
        self._put(
            {
                _HASH: salt + _salted(pin_hash16(pin), salt),
                _LENGTH: _enc(len(pin)),
                _RETRIES: _enc(PIN_RETRIES_MAX),
                _FORCE: None,
                _UV_SINCE_PIN: None,
                **reset_persistent_token(self._store),
            }
        )

    def _refuse_blocked(self) -> None:
        """PIN_BLOCKED for a PIN whose retries are spent (a key without a PIN has all)."""
        if self.is_pin_set and self.pin_retries <= 0:
            raise CtapError(CtapStatus.PIN_BLOCKED)

    def _check_pin_hash(self, protocol: PinProtocol, secret: bytes, pin_hash_enc: bytes) -> None:
        """Steps shared by changePIN and getPinToken (6.5.5.6, 6.5.5.7): the retry
        counter is decremented and persisted BEFORE the PIN is compared."""
        retries = self.pin_retries
        if retries <= 0:
            raise CtapError(CtapStatus.PIN_BLOCKED)
        if self.consecutive_failures >= PIN_FAILURES_BEFORE_POWER_CYCLE:
            raise CtapError(CtapStatus.PIN_AUTH_BLOCKED)
        self._put({_RETRIES: _enc(retries - 1)})
        stored = self._store.get_state(_HASH)
        assert stored is not None
        try:
            hash16 = protocol.decrypt(secret, pin_hash_enc)
        except CtapError:
            hash16 = b""
        if len(hash16) != 16 or not hmac.compare_digest(_salted(hash16, stored[:16]), stored[16:]):
            protocol.regenerate()
            self.consecutive_failures += 1
            if retries - 1 <= 0:
                raise CtapError(CtapStatus.PIN_BLOCKED)
            if self.consecutive_failures >= PIN_FAILURES_BEFORE_POWER_CYCLE:
                raise CtapError(CtapStatus.PIN_AUTH_BLOCKED)
            raise CtapError(CtapStatus.PIN_INVALID)
        self.consecutive_failures = 0
        # A correct PIN restores pinRetries, and unlocks built-in UV as well.
        updates: dict[str, bytes | None] = {_RETRIES: _enc(PIN_RETRIES_MAX), _UV_SINCE_PIN: None}
        if self._user_verifier is not None:
            updates[_UV_RETRIES] = _enc(UV_RETRIES_MAX)
        self._put(updates)

    def _set_pin(self, request: ClientPinRequest) -> dict[int, Any]:
        # 6.5.5.5 setPIN. Step 1: mandatory parameters; step 2: the protocol.
        if (
            request.new_pin_enc is None
            or request.pin_uv_auth_param is None
            or request.key_agreement is None
        ):
            raise CtapError(CtapStatus.MISSING_PARAMETER)
        self.protocol(request.protocol)
        # Step 3: "If a PIN has already been set, authenticator returns
        # CTAP2_ERR_PIN_AUTH_INVALID error."
        if self.is_pin_set:
            raise CtapError(CtapStatus.PIN_AUTH_INVALID, "a PIN is already set")
        # Steps 4-5: the shared secret, and newPinEnc authenticated with it.
        protocol, secret = self._shared_secret(request)
        if not protocol.verify(secret, request.new_pin_enc, request.pin_uv_auth_param):
            raise CtapError(CtapStatus.PIN_AUTH_INVALID)
        self._store_pin(self._new_pin(protocol, secret, request.new_pin_enc))
        return {}

    def _change_pin(self, request: ClientPinRequest) -> dict[int, Any]:
        # 6.5.5.6 changePIN. Step 1: the mandatory parameters; step 2: the protocol.
        if (
            request.new_pin_enc is None
            or request.pin_hash_enc is None
            or request.pin_uv_auth_param is None
            or request.key_agreement is None
        ):
            raise CtapError(CtapStatus.MISSING_PARAMETER)
        self.protocol(request.protocol)
        # Step 3, before decapsulate (step 4): "If the pinRetries counter is 0, return
        # CTAP2_ERR_PIN_BLOCKED error."
        self._refuse_blocked()
        protocol, secret = self._shared_secret(request)
        if not self.is_pin_set:
            raise CtapError(CtapStatus.PIN_NOT_SET)
        message = request.new_pin_enc + request.pin_hash_enc
        if not protocol.verify(secret, message, request.pin_uv_auth_param):
            raise CtapError(CtapStatus.PIN_AUTH_INVALID)
        self._check_pin_hash(protocol, secret, request.pin_hash_enc)
        pin = self._new_pin(protocol, secret, request.new_pin_enc)
        if self.force_pin_change:
            stored = self._store.get_state(_HASH)
            assert stored is not None
            if hmac.compare_digest(_salted(pin_hash16(pin), stored[:16]), stored[16:]):
                raise CtapError(CtapStatus.PIN_POLICY_VIOLATION, "new PIN equals the old one")
        self._store_pin(pin)
        self.token.reset()
        return {}

    def _check_permissions(self, permissions: int | None) -> Permission:
        if permissions is None:
            raise CtapError(CtapStatus.MISSING_PARAMETER, "permissions")
        if permissions == 0:
            raise CtapError(CtapStatus.INVALID_PARAMETER, "no permissions")
        # Defined permissions this key does not grant (be, pcmr) are refused;
        # undefined bits are ignored (6.5.5.7.2 steps 4 and 15).
        defined = self._defined_permissions
        if permissions & defined & ~int(self._supported_permissions):
            raise CtapError(CtapStatus.UNAUTHORIZED_PERMISSION)
        # CTAP 2.2: pcmr is only ever granted alone (the persistent token can do nothing else).
        if permissions & defined & _PCMR and permissions & defined != _PCMR:
            raise CtapError(CtapStatus.UNAUTHORIZED_PERMISSION, "pcmr with other permissions")
        return Permission(permissions & int(self._supported_permissions))

    def _issue_token(
        self,
        protocol: PinProtocol,
        secret: bytes,
        permissions: Permission,
        rp_id: str | None,
        user_present: bool = False,
        preview_permissions: Permission = Permission.NONE,
    ) -> dict[int, Any]:
        if permissions == _PCMR:
            # CTAP 2.2: the persistentPinUvAuthToken; the pinUvAuthToken in use stays.
            return {0x02: protocol.encrypt(secret, persistent_token(self._store))}
        self.token.reset()  # one token serves both protocols
        self.token.begin_using(user_present, permissions, rp_id, preview_permissions)
        return {0x02: protocol.encrypt(secret, self.token.value)}

    def _get_token_with_pin(self, request: ClientPinRequest, legacy: bool) -> dict[int, Any]:
        # 6.5.5.7.1 getPinToken / 6.5.5.7.2 getPinUvAuthTokenUsingPinWithPermissions.
        # Step 1: the mandatory parameters; step 2: the protocol; then the permissions.
        if request.pin_hash_enc is None or request.key_agreement is None:
            raise CtapError(CtapStatus.MISSING_PARAMETER, "pinHashEnc, keyAgreement")
        if not legacy and request.permissions is None:
            raise CtapError(CtapStatus.MISSING_PARAMETER, "permissions")
        self.protocol(request.protocol)
        if legacy:
            if request.permissions is not None or request.rp_id is not None:
                raise CtapError(CtapStatus.INVALID_PARAMETER)
            permissions = self.legacy_permissions
        else:
            permissions = self._check_permissions(request.permissions)
        # 6.5.5.7.1 / 6.5.5.7.2 step 5, before decapsulate (step 6): "If the pinRetries
        # counter is 0, return CTAP2_ERR_PIN_BLOCKED error."
        self._refuse_blocked()
        protocol, secret = self._shared_secret(request)
        if not self.is_pin_set:
            raise CtapError(CtapStatus.PIN_NOT_SET)
        self._check_pin_hash(protocol, secret, request.pin_hash_enc)
        # After the retries were restored (the PIN was right), forcePINChange. The two
        # subcommands answer it differently. getPinToken, 6.5.5.7.1 step 11: "If the value
        # of the forcePINChange member of the authenticatorGetInfo response is true,
        # authenticator returns CTAP2_ERR_PIN_INVALID error." With permissions, 6.5.5.7.2
        # step 11: "... authenticator returns CTAP2_ERR_PIN_POLICY_VIOLATION. Platform on
        # receiving such error response SHOULD direct the user to change the PIN."
        if self.force_pin_change:
            status = CtapStatus.PIN_INVALID if legacy else CtapStatus.PIN_POLICY_VIOLATION
            raise CtapError(status, "PIN change required")
        preview = self.legacy_preview_permissions if legacy else Permission.NONE
        return self._issue_token(
            protocol, secret, permissions, request.rp_id, preview_permissions=preview
        )

    def _run_uv(
        self,
        context: RequestContext,
        rp_id: str | None,
        kind: PresenceKind,
    ) -> None:
        assert self._user_verifier is not None
        retries, since_pin = self.uv_retries, self.uv_count_since_pin
        # An attempt counts in uvCountSinceLastPinEntry (CTAP 2.2 section 6.4, 0x17: "the
        # number of internal User Verification operations since the last pin entry including
        # all failed attempts").
        counted = {_UV_SINCE_PIN: _enc(min(since_pin + 1, 2**32 - 1))}
        failed_attempt = {_UV_RETRIES: _enc(retries - 1), **counted}
        request = PresenceRequest(kind, rp_id=rp_id)
        cancelled = context.is_cancelled()
        instant = None if cancelled else instant_verification(self._user_verifier, request)
        if instant is None:
            # The user must act (fingerprint, ...). Persisted before the attempt: a retry
            # used up and the attempt counted, whatever becomes of the wait.
            self._put(failed_attempt)
            if cancelled:
                result = PresenceResult.CANCELLED
            else:
                # UPNEEDED keepalives while the user is asked.
                context.set_keepalive(KeepaliveStatus.UPNEEDED)
                try:
                    result = self._user_verifier.verify_user(request, context, self._uv_timeout)
                finally:
                    context.set_keepalive(KeepaliveStatus.PROCESSING)
        else:
            # Verified (or refused) at once (``--uv --presence auto``, ``deny-uv``): nobody
            # waits, so no UPNEEDED, and the attempt and its outcome are one write.
            result = instant
        if result is PresenceResult.GRANTED:
            restored = {_UV_RETRIES: _enc(UV_RETRIES_MAX)}
            self._put(restored if instant is None else {**restored, **counted})
            return
        if result in (PresenceResult.CANCELLED, PresenceResult.TIMEOUT):
            # No attempt was made: neither a retry used up nor an operation counted.
            if instant is None:
                self._put({_UV_RETRIES: _enc(retries), _UV_SINCE_PIN: _enc(since_pin)})
            if result is PresenceResult.CANCELLED:
                raise CtapError(CtapStatus.KEEPALIVE_CANCEL)
            raise CtapError(CtapStatus.USER_ACTION_TIMEOUT)
        if instant is not None:
            self._put(failed_attempt)
        if retries - 1 <= 0:
            raise CtapError(CtapStatus.UV_BLOCKED)
        raise CtapError(CtapStatus.UV_INVALID)

    def _get_token_with_uv(
        self, request: ClientPinRequest, context: RequestContext
    ) -> dict[int, Any]:
        # 6.5.5.7.3 getPinUvAuthTokenUsingUvWithPermissions (a key without built-in UV
        # does not have the subcommand).
        if self._user_verifier is None:
            raise CtapError(CtapStatus.INVALID_SUBCOMMAND)
        # Steps 1-2: the mandatory parameters, the protocol.
        if request.key_agreement is None or request.permissions is None:
            raise CtapError(CtapStatus.MISSING_PARAMETER, "keyAgreement, permissions")
        self.protocol(request.protocol)
        # Steps 3-4: the permissions (be and acfg: getInfo's uvBioEnroll and uvAcfg say
        # that a token from built-in UV grants them).
        permissions = self._check_permissions(request.permissions)
        # Step 5: "If a built-in user verification method is supported but not configured,
        # the authenticator returns CTAP2_ERR_NOT_ALLOWED" (a fingerprint key, no finger).
        if not self.has_uv:
            raise CtapError(CtapStatus.NOT_ALLOWED, "built-in UV is not configured")
        # Step 7, before decapsulate (step 8): "If the uvRetries counter is 0, return
        # CTAP2_ERR_UV_BLOCKED" (and built-in UV is disabled with the PIN: uv_blocked).
        if self.uv_blocked:
            raise CtapError(CtapStatus.UV_BLOCKED)
        protocol, secret = self._shared_secret(request)
        # The user is asked what the token is for: registering (mc) or signing in.
        kind = (
            PresenceKind.REGISTER
            if permissions & Permission.MAKE_CREDENTIAL
            else PresenceKind.AUTHENTICATE
        )
        self._run_uv(context, request.rp_id, kind)
        # beginUsingPinUvAuthToken(userIsPresent: true): built-in UV is also
        # evidence of user presence (6.5.5.7.3), unlike PIN entry on the platform.
        return self._issue_token(protocol, secret, permissions, request.rp_id, user_present=True)
