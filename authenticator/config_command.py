"""authenticatorConfig (0x0D), CTAP 2.1 section 6.11, and the settings it changes.

Persistent keystore state (erased by authenticatorReset):

    config.ep           enterprise attestation enabled (1)
    config.always_uv    alwaysUv (1)
    pin.min_length_rpids  canonical CBOR list of RP IDs allowed to read minPinLength
"""

from __future__ import annotations

import contextlib
import functools
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from vfido.authenticator import cbor
from vfido.authenticator.client_pin import ClientPin
from vfido.authenticator.errors import CtapError, CtapStatus
from vfido.authenticator.pin_token import Permission, require_pin_uv_auth_param
from vfido.keystore.store import KeyStore, KeystoreFull

_EP, _ALWAYS_UV, _MIN_LENGTH_RPIDS = "config.ep", "config.always_uv", "pin.min_length_rpids"
#: maxRPIDsForSetMinPINLength advertised in getInfo (0x10).
MAX_RPIDS_FOR_SET_MIN_PIN_LENGTH = 8


class SubCommand(IntEnum):
    ENABLE_ENTERPRISE_ATTESTATION = 0x01
    TOGGLE_ALWAYS_UV = 0x02
    SET_MIN_PIN_LENGTH = 0x03


@functools.cache  # two possible answers; getInfo asks on every call
def supported_sub_commands(enterprise_attestation_supported: bool) -> tuple[int, ...]:
    """The subcommands this key answers, in order: what authenticatorConfig accepts and what
    getInfo's authenticatorConfigCommands (0x1F, CTAP 2.3) lists. 6.11.1:
    enableEnterpriseAttestation "is only implemented if the enterprise attestation feature is
    supported"."""
    return tuple(
        int(s)
        for s in SubCommand
        if s != SubCommand.ENABLE_ENTERPRISE_ATTESTATION or enterprise_attestation_supported
    )


#: Settings values read from each store (a keyed hash, a query and a decryption per read
#: otherwise, on every getAssertion for alwaysUv). Shared by every Settings of one store;
#: dropped by Settings.put and by Settings.forget (authenticatorReset).
_CACHE: weakref.WeakKeyDictionary[Any, dict[str, bytes | None]] = weakref.WeakKeyDictionary()


class Settings:
    """Read access to what authenticatorConfig persists."""

    def __init__(self, store: KeyStore) -> None:
        self._store = store
        self._cache: dict[str, bytes | None] | None
        try:
            self._cache = _CACHE.setdefault(store, {})
        except TypeError:  # a store that cannot be weakly referenced: no cache
            self._cache = None

    @staticmethod
    def forget(store: KeyStore) -> None:
        """Drop the cached values of ``store`` (after anything but :meth:`put` changed them)."""
        with contextlib.suppress(TypeError):
            cache = _CACHE.get(store)
            if cache is not None:
                cache.clear()  # in place: every Settings of the store holds this dict

    def _get(self, key: str) -> bytes | None:
        cache = self._cache
        if cache is None:
            return self._store.get_state(key)
        try:  # not `key in cache` first: forget() may clear it between the two lookups
            return cache[key]
        except KeyError:
            value = cache[key] = self._store.get_state(key)
            return value

    def _flag(self, key: str) -> bool:
        return self._get(key) == b"\x01"

    @property
    def enterprise_attestation(self) -> bool:
        return self._flag(_EP)

    @property
    def always_uv(self) -> bool:
        return self._flag(_ALWAYS_UV)

    @property
    def min_pin_length_rp_ids(self) -> list[str]:
        raw = self._get(_MIN_LENGTH_RPIDS)
        if raw is None:
            return []
        value = cbor.decode(raw)
        return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []

    def put(self, updates: Mapping[str, bytes | None]) -> None:
        self.forget(self._store)
        try:
            self._store.put_state(updates)
        except KeystoreFull:
            raise CtapError(CtapStatus.KEY_STORE_FULL) from None
        finally:
            self.forget(self._store)


@dataclass(frozen=True)
class ConfigRequest:
    sub_command: int  # 0x01
    params: Mapping[Any, Any] | None  # 0x02 subCommandParams
    protocol: int | None  # 0x03
    pin_uv_auth_param: bytes | None = field(repr=False)  # 0x04

    @classmethod
    def from_cbor_map(cls, m: Mapping[Any, Any]) -> ConfigRequest:
        sub, params, protocol, param = m.get(1), m.get(2), m.get(3), m.get(4)
        cbor.refuse_null_members(params, "subCommandParams")
        if sub is None:
            raise CtapError(CtapStatus.MISSING_PARAMETER, "subCommand")
        if (
            not cbor.is_unsigned(sub)
            or not (params is None or isinstance(params, dict))
            or not (protocol is None or cbor.is_unsigned(protocol))
            or not (param is None or isinstance(param, bytes))
        ):
            raise CtapError(CtapStatus.CBOR_UNEXPECTED_TYPE, "authenticatorConfig")
        return cls(sub, params, protocol, param)


class AuthenticatorConfig:
    def __init__(
        self,
        store: KeyStore,
        client_pin: ClientPin,
        enterprise_attestation_supported: bool,
        uv_protected: Callable[[], bool],
    ) -> None:
        self.settings = Settings(store)
        self._pin = client_pin
        #: "protected by some form of user verification": ``Services.uv_protected`` (a PIN,
        #: built-in UV, or the ``pin-blocked`` behaviour), the key's one definition of it.
        self._uv_protected = uv_protected
        self._sub_commands = frozenset(supported_sub_commands(enterprise_attestation_supported))

    def process(self, m: Mapping[Any, Any]) -> dict[int, Any]:
        request = ConfigRequest.from_cbor_map(m)
        sub = request.sub_command
        # 6.11 step 1: "If the authenticator does not support the subcommand being invoked,
        # per subCommand's value, return CTAP1_ERR_INVALID_PARAMETER" (before any token).
        if sub not in self._sub_commands:
            raise CtapError(CtapStatus.INVALID_PARAMETER, "authenticatorConfig subCommand")
        # 6.11 steps 2-4: authenticate when a PIN or built-in UV protects the key, or when
        # alwaysUv is on. Step 2's exception: on a key that neither protects, toggleAlwaysUv
        # runs without a token, so alwaysUv, once on, can be turned off again (as OpenSK).
        if self._uv_protected() or (self.settings.always_uv and sub != SubCommand.TOGGLE_ALWAYS_UV):
            param = require_pin_uv_auth_param(request.pin_uv_auth_param, request.protocol)
            message = (
                b"\xff" * 32
                + bytes([0x0D, request.sub_command & 0xFF])
                + (cbor.encode(request.params) if request.params is not None else b"")
            )
            self._pin.verify_token(
                request.protocol, message, param, Permission.AUTHENTICATOR_CONFIG
            )
        if sub == SubCommand.ENABLE_ENTERPRISE_ATTESTATION:
            self.settings.put({_EP: b"\x01"})
            return {}
        if sub == SubCommand.TOGGLE_ALWAYS_UV:
            self.settings.put({_ALWAYS_UV: None if self.settings.always_uv else b"\x01"})
            return {}
        return self._set_min_pin_length(request.params or {})

    def _set_min_pin_length(self, params: Mapping[Any, Any]) -> dict[int, Any]:
        # 6.11.4 setMinPINLength
        new_length = params.get(0x01, self._pin.min_pin_length)
        rp_ids = params.get(0x02)
        force = params.get(0x03, False)
        if (
            not cbor.is_unsigned(new_length)
            or not isinstance(force, bool)
            or not (rp_ids is None or isinstance(rp_ids, list))
        ):
            raise CtapError(CtapStatus.CBOR_UNEXPECTED_TYPE, "setMinPINLength")
        if rp_ids is not None and not all(isinstance(r, str) for r in rp_ids):
            raise CtapError(CtapStatus.CBOR_UNEXPECTED_TYPE, "minPinLengthRPIDs")
        if new_length < self._pin.min_pin_length or new_length > 63:
            raise CtapError(CtapStatus.PIN_POLICY_VIOLATION, "minimum PIN length cannot shrink")
        if rp_ids is not None and len(rp_ids) > MAX_RPIDS_FOR_SET_MIN_PIN_LENGTH:
            raise CtapError(CtapStatus.PIN_POLICY_VIOLATION, "too many RP IDs")
        if force and not self._pin.is_pin_set:
            raise CtapError(CtapStatus.PIN_NOT_SET)
        # CTAP 2.2 pinComplexityPolicy (0x04): true turns the policy on for good (until
        # authenticatorReset); false, or absent, leaves it as it is.
        # (A parameter of CTAP 2.2, unread by a key that does not know the policy.)
        complexity = params.get(0x04, False) if self._pin.pin_complexity_policy_known else False
        if not isinstance(complexity, bool):
            raise CtapError(CtapStatus.CBOR_UNEXPECTED_TYPE, "pinComplexityPolicy")
        if rp_ids is not None:
            self.settings.put({_MIN_LENGTH_RPIDS: cbor.encode(rp_ids)})
        if complexity:
            self._pin.enable_pin_complexity_policy()
        self._pin.set_min_pin_length(new_length, force)
        return {}
