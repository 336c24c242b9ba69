"""authenticatorCredentialManagement (0x0A), CTAP 2.1 section 6.8.

Begin subcommands are authenticated with a pinUvAuthToken carrying the ``cm``
permission; the GetNext subcommands continue the enumeration started by the
previous command and fail once any other command came in between. GetNext
carries no pinUvAuthParam, so the enumeration is bound to what began it: the
channel (another client, which has no PIN, must not read the next entry) and
the token (a token replaced, expired or stripped of ``cm`` ends it), as
getNextAssertion's state is bound to its channel.

CTAP 2.2: the read-only subcommands (getCredsMetadata, enumerateRPsBegin,
enumerateCredentialsBegin and their GetNext) also accept the persistent
pinUvAuthToken (``pcmr``, getInfo option perCredMgmtRO); deleting and updating
need the ``cm`` token. An enumeration begun with the persistent token ends when
that token is reset. On a key with the thirdPartyPayment extension, every credential
is listed with 0x0C: true for one made with it, false for the others (as a
getAssertion asking for it answers; the FIDO conformance tools expect false).

CTAP 2.1-PRE credentialMgmtPreview (command 0x41, ``Config.ctap21_pre``) is the
same command without updateUserInformation, authenticated as 2.1-PRE platforms do
it: with the token of getPinToken, which such a key accepts there, and only there
(``PinUvAuthToken.preview_permissions``: on 0x0A that token has no ``cm``).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from vfido.authenticator import cbor
from vfido.authenticator.client_pin import ClientPin
from vfido.authenticator.cose import CredentialKey
from vfido.authenticator.credential_source import decode_credential_id
from vfido.authenticator.env import RequestContext
from vfido.authenticator.errors import CtapError, CtapStatus
from vfido.authenticator.persistent_token import note_credential_change, persistent_token
from vfido.authenticator.pin_token import Permission, require_pin_uv_auth_param
from vfido.keystore.store import CredentialRecord, KeyStore


class SubCommand(IntEnum):
    GET_CREDS_METADATA = 0x01
    ENUMERATE_RPS_BEGIN = 0x02
    ENUMERATE_RPS_GET_NEXT_RP = 0x03
    ENUMERATE_CREDENTIALS_BEGIN = 0x04
    ENUMERATE_CREDENTIALS_GET_NEXT_CREDENTIAL = 0x05
    DELETE_CREDENTIAL = 0x06
    UPDATE_USER_INFORMATION = 0x07


# subCommandParams keys (6.8.1)
_P_RP_ID_HASH, _P_CREDENTIAL_ID, _P_USER = 0x01, 0x02, 0x03


@dataclass(frozen=True)
class CredentialManagementRequest:
    sub_command: int  # 0x01
    params: Mapping[Any, Any] | None  # 0x02 subCommandParams
    params_bytes: bytes  # canonical encoding of 0x02, the signed message's tail
    protocol: int | None  # 0x03 pinUvAuthProtocol
    pin_uv_auth_param: bytes | None = field(repr=False)  # 0x04

    @classmethod
    def from_cbor_map(cls, m: Mapping[Any, Any]) -> CredentialManagementRequest:
        sub = m.get(0x01)
        if sub is None:
            raise CtapError(CtapStatus.MISSING_PARAMETER, "subCommand")
        params = m.get(0x02)
        cbor.refuse_null_members(params, "subCommandParams")
        protocol = m.get(0x03)
        param = m.get(0x04)
        if (
            not cbor.is_unsigned(sub)
            or not (params is None or isinstance(params, dict))
            or not (protocol is None or cbor.is_unsigned(protocol))
            or not (param is None or isinstance(param, bytes))
        ):
            raise CtapError(CtapStatus.CBOR_UNEXPECTED_TYPE, "credentialManagement")
        return cls(sub, params, cbor.encode(params) if params is not None else b"", protocol, param)

    def param(self, key: int, kind: type) -> Any:
        params = self.params or {}
        if key not in params:
            raise CtapError(CtapStatus.MISSING_PARAMETER, f"subCommandParams {key}")
        value = params[key]
        if not isinstance(value, kind):
            raise CtapError(CtapStatus.CBOR_UNEXPECTED_TYPE, f"subCommandParams {key}")
        return value


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _credential_id(descriptor: Mapping[Any, Any]) -> bytes:
    cred_id = descriptor.get("id")
    if descriptor.get("type") != "public-key" or not isinstance(cred_id, bytes):
        raise CtapError(CtapStatus.INVALID_PARAMETER, "credentialID descriptor")
    return cred_id


def _user_entity(record: CredentialRecord) -> dict[str, Any]:
    user: dict[str, Any] = {"id": record.user_id}
    if record.user_name is not None:
        user["name"] = record.user_name
    if record.user_display_name is not None:
        user["displayName"] = record.user_display_name
    return user


#: What the persistent pinUvAuthToken (pcmr) may do: read, never change (CTAP 2.2).
_READ_ONLY = frozenset(
    {
        SubCommand.GET_CREDS_METADATA,
        SubCommand.ENUMERATE_RPS_BEGIN,
        SubCommand.ENUMERATE_CREDENTIALS_BEGIN,
    }
)

#: Whether the token that authorized a subcommand still does (see ``_authorize``).
#: Whether the token that authorized a Begin still does, for a GetNext sent as the preview
#: command (True: 0x41) or not: a 2.1-PRE getPinToken token continues only on 0x41.
_TokenCheck = Callable[[bool], bool]


@dataclass
class _Enumeration:
    """An enumeration in progress: what continues it, who began it, what is left."""

    next_command: SubCommand  # the GetNext subcommand that continues it
    channel: int  # the channel of the Begin subcommand
    #: Whether the pinUvAuthToken that authorized the Begin subcommand still grants it
    #: (kept out of reprs like everything about tokens).
    token_still_valid: _TokenCheck = field(repr=False)
    #: One representative record per RP (enumerateRPs) or the RP's credentials.
    remaining: list[CredentialRecord] = field(repr=False)


class CredentialManagement:
    def __init__(
        self,
        store: KeyStore,
        client_pin: ClientPin,
        remaining: Callable[[], int],
        *,
        third_party_payment: bool = True,
    ) -> None:
        self._store = store
        self._pin = client_pin
        #: How many more discoverable credentials fit: getInfo's
        #: remainingDiscoverableCredentials (one count for both, behaviours included).
        self._remaining = remaining
        #: The key has the thirdPartyPayment extension (a persona may not): 0x0C listed.
        self._third_party_payment = third_party_payment
        self._pending: _Enumeration | None = None

    def reset_pending(self) -> None:
        """Any command other than the GetNext ones ends an enumeration."""
        self._pending = None

    def process(
        self, m: Mapping[Any, Any], context: RequestContext, preview: bool = False
    ) -> dict[int, Any]:
        """``preview``: the request came as credentialMgmtPreview (0x41)."""
        try:
            request = CredentialManagementRequest.from_cbor_map(m)
        except CtapError:
            self.reset_pending()  # a malformed request is another command too (a review)
            raise
        sub = request.sub_command
        if sub == SubCommand.ENUMERATE_RPS_GET_NEXT_RP:
            return self._rp_entry(
                self._next(SubCommand.ENUMERATE_RPS_GET_NEXT_RP, context, preview)
            )
        if sub == SubCommand.ENUMERATE_CREDENTIALS_GET_NEXT_CREDENTIAL:
            return self._credential_entry(
                self._next(SubCommand.ENUMERATE_CREDENTIALS_GET_NEXT_CREDENTIAL, context, preview)
            )
        self.reset_pending()
        if preview and sub == SubCommand.UPDATE_USER_INFORMATION:
            raise CtapError(CtapStatus.INVALID_SUBCOMMAND, "not in credentialMgmtPreview")
        if sub not in SubCommand.__members__.values():
            raise CtapError(CtapStatus.INVALID_SUBCOMMAND)
        # 6.8.2 - 6.8.7: every other subcommand is authenticated.
        require_pin_uv_auth_param(request.pin_uv_auth_param, request.protocol)
        message = bytes([sub]) + request.params_bytes
        if sub == SubCommand.GET_CREDS_METADATA:
            self._authorize(request, message, None, preview)
            return self._metadata()
        if sub == SubCommand.ENUMERATE_RPS_BEGIN:
            token = self._authorize(request, message, None, preview)
            return self._rps_begin(context, token)
        if sub == SubCommand.ENUMERATE_CREDENTIALS_BEGIN:
            rp_id_hash = request.param(_P_RP_ID_HASH, bytes)
            records = self._store.find_credentials(rp_id_hash)
            token = self._authorize(request, message, rp_id_hash, preview)
            return self._credentials_begin(records, context, token)
        if sub == SubCommand.DELETE_CREDENTIAL:
            cred_id = _credential_id(request.param(_P_CREDENTIAL_ID, dict))
            record = self._store.get_credential(cred_id)
            self._authorize(request, message, record.rp_id_hash if record else b"", preview)
            if record is None or not self._store.delete_credential(cred_id):
                raise CtapError(CtapStatus.NO_CREDENTIALS)
            note_credential_change(self._store)  # CTAP 2.2 credStoreState
            return {}
        # UPDATE_USER_INFORMATION
        cred_id = _credential_id(request.param(_P_CREDENTIAL_ID, dict))
        user = request.param(_P_USER, dict)
        record = self._store.get_credential(cred_id)
        self._authorize(request, message, record.rp_id_hash if record else b"", preview)
        if record is None:
            raise CtapError(CtapStatus.NO_CREDENTIALS)
        user_id = user.get("id")
        if not isinstance(user_id, bytes) or not hmac.compare_digest(user_id, record.user_id):
            raise CtapError(CtapStatus.INVALID_PARAMETER, "user id differs")
        name, display = user.get("name"), user.get("displayName")
        if not (name is None or isinstance(name, str)) or not (
            display is None or isinstance(display, str)
        ):
            raise CtapError(CtapStatus.CBOR_UNEXPECTED_TYPE, "user")
        # 6.8.6: "If a field is not present in the passed-in user details, or it is
        # present and empty, remove it."
        self._store.update_user(cred_id, name or None, display or None)
        note_credential_change(self._store)  # CTAP 2.2 credStoreState
        return {}

    def _authorize(
        self,
        request: CredentialManagementRequest,
        message: bytes,
        rp_id_hash: bytes | None,
        preview: bool,
    ) -> _TokenCheck:
        """Verify the token (cm permission). ``rp_id_hash`` None means the subcommand
        spans all RPs, so a token bound to one RP may not be used (6.8.2, 6.8.3);
        otherwise a bound token must be bound to that RP. ``b""`` (credential not
        found): any token with cm may learn NO_CREDENTIALS, as the RP cannot be
        told. Failures: PIN_AUTH_INVALID.

        A read-only subcommand authenticated with the persistent pinUvAuthToken
        (CTAP 2.2, pcmr) is allowed for every RP; any other use of it fails as an
        unknown token does. Returns whether the token that authorized the request still
        does, for an enumeration's GetNext (which carries no pinUvAuthParam).

        ``preview`` (credentialMgmtPreview, 0x41): a 2.1-PRE key's getPinToken token also
        authorizes it; on 0x0A such a token has no ``cm`` (6.5.5.7.1: mc and ga)."""
        assert request.pin_uv_auth_param is not None
        if request.sub_command in _READ_ONLY and self._pin.defines(
            Permission.PERSISTENT_CREDENTIAL_MANAGEMENT_READ_ONLY
        ):
            protocol = self._pin.protocol(request.protocol)
            persistent = persistent_token(self._store)
            if protocol.verify(persistent, message, request.pin_uv_auth_param):
                return lambda _: hmac.compare_digest(persistent_token(self._store), persistent)
        self._pin.verify_token(
            request.protocol,
            message,
            request.pin_uv_auth_param,
            Permission.CREDENTIAL_MANAGEMENT,
            preview=preview,
        )
        generation = self._pin.token.generation
        bound = self._pin.token.rp_id
        if (
            bound is not None
            and rp_id_hash != b""
            and (
                rp_id_hash is None
                or not hmac.compare_digest(
                    hashlib.sha256(bound.encode("utf-8")).digest(), rp_id_hash
                )
            )
        ):
            raise CtapError(CtapStatus.PIN_AUTH_INVALID, "token bound to another RP")
        return lambda next_preview: self._pin.token.still_grants(
            generation, Permission.CREDENTIAL_MANAGEMENT, preview=next_preview
        )

    def _metadata(self) -> dict[int, Any]:
        return {0x01: self._store.count_credentials(), 0x02: self._remaining()}

    def _begin(
        self,
        next_command: SubCommand,
        records: list[CredentialRecord],
        context: RequestContext,
        token: _TokenCheck,
    ) -> CredentialRecord:
        """Remember the rest of ``records`` for ``next_command`` on this channel and token."""
        first, rest = records[0], records[1:]
        if rest:
            self._pending = _Enumeration(next_command, context.channel, token, rest)
        return first

    def _next(self, sub: SubCommand, context: RequestContext, preview: bool) -> CredentialRecord:
        """enumerateRPsGetNextRP / enumerateCredentialsGetNextCredential: the next record of
        the enumeration this channel began with the current token; CTAP2_ERR_NOT_ALLOWED when
        there is none (6.8.3, 6.8.4: an authenticator that remembers no such enumeration
        answers NOT_ALLOWED). A request from another channel leaves the enumeration to its
        owner."""
        pending = self._pending
        if pending is None:
            raise CtapError(CtapStatus.NOT_ALLOWED, "no enumeration in progress")
        if pending.channel != context.channel:
            raise CtapError(CtapStatus.NOT_ALLOWED, "enumeration is on another channel")
        if pending.next_command != sub:
            self._pending = None  # the other GetNext is another subcommand: it ends it
            raise CtapError(CtapStatus.NOT_ALLOWED, "no such enumeration in progress")
        if not pending.token_still_valid(preview):
            self._pending = None
            raise CtapError(CtapStatus.NOT_ALLOWED, "the enumeration's token is gone")
        record = pending.remaining.pop(0)
        if not pending.remaining:
            self._pending = None
        return record

    def _rps_begin(self, context: RequestContext, token: _TokenCheck) -> dict[int, Any]:
        seen: dict[bytes, CredentialRecord] = {}
        for summary in self._store.list_credentials():
            seen.setdefault(summary.record.rp_id_hash, summary.record)
        if not seen:
            raise CtapError(CtapStatus.NO_CREDENTIALS)
        rps = list(seen.values())
        first = self._begin(SubCommand.ENUMERATE_RPS_GET_NEXT_RP, rps, context, token)
        return {**self._rp_entry(first), 0x05: len(rps)}

    @staticmethod
    def _rp_entry(record: CredentialRecord) -> dict[int, Any]:
        rp: dict[str, Any] = {"id": record.rp_id}
        if record.rp_name is not None:
            rp["name"] = record.rp_name
        return {0x03: rp, 0x04: record.rp_id_hash}

    def _credentials_begin(
        self, records: list[CredentialRecord], context: RequestContext, token: _TokenCheck
    ) -> dict[int, Any]:
        if not records:
            raise CtapError(CtapStatus.NO_CREDENTIALS)
        first = self._begin(
            SubCommand.ENUMERATE_CREDENTIALS_GET_NEXT_CREDENTIAL, records, context, token
        )
        return {**self._credential_entry(first), 0x09: len(records)}

    def _credential_entry(self, record: CredentialRecord) -> dict[int, Any]:
        key = CredentialKey.from_private_bytes(record.algorithm, record.private_key)
        entry: dict[int, Any] = {
            0x06: _user_entity(record),
            0x07: {"id": record.credential_id, "type": "public-key"},
            0x08: dict(key.cose_public_key()),
            0x0A: record.cred_protect,
        }
        if record.large_blob_key is not None:
            entry[0x0B] = record.large_blob_key
        sealed = decode_credential_id(
            self._store.identity().credential_key, record.rp_id_hash, record.credential_id
        )
        if self._third_party_payment:  # thirdPartyPayment (CTAP 2.2)
            entry[0x0C] = sealed is not None and sealed.third_party_payment
        return entry
