"""authenticatorGetAssertion (0x02, CTAP 2.1 section 6.2.2) and
authenticatorGetNextAssertion (0x08, section 6.3).

No clientPin and no built-in user verification yet: the response's "uv" bit
is always false, so user-identifying information (name, displayName) is
never returned and credProtect levels 2 and 3 filter as the spec says.
"""

from __future__ import annotations

import logging

from authenticator.authdata import AuthDataFlags, build_auth_data, rp_id_hash
from authenticator.cose import CredentialKey
from authenticator.credential_source import decode_credential_id
from authenticator.env import PresenceKind, PresenceRequest, RequestContext
from authenticator.errors import CtapError, CtapStatus
from authenticator.make_credential import check_pin_uv_auth_param, pin_probe
from authenticator.requests import PUBLIC_KEY, CredentialDescriptor, GetAssertionRequest
from authenticator.responses import GetAssertionResponse
from authenticator.state import AssertionCandidate, PendingAssertion, Services, require_presence

log = logging.getLogger(__name__)

#: credProtect levels (CTAP 2.1 section 12.1).
USER_VERIFICATION_OPTIONAL_WITH_CREDENTIAL_ID_LIST = 2
USER_VERIFICATION_REQUIRED = 3

_MAX_SIGN_COUNT = 0xFFFFFFFF


def _from_allow_list(
    services: Services, id_hash: bytes, allow_list: tuple[CredentialDescriptor, ...]
) -> list[AssertionCandidate]:
    """Step 10.1: the allowList entries created by this key for this RP."""
    store = services.store
    key = store.identity().credential_key
    found: list[AssertionCandidate] = []
    seen: set[bytes] = set()
    for descriptor in allow_list:
        if descriptor.type != PUBLIC_KEY or descriptor.id in seen:
            continue
        seen.add(descriptor.id)
        sealed = decode_credential_id(key, id_hash, descriptor.id)
        if sealed is None:
            continue
        record = None
        if sealed.discoverable:
            record = store.get_credential(descriptor.id)
            if record is None or record.rp_id_hash != id_hash:
                continue  # a deleted discoverable credential
        found.append(AssertionCandidate(descriptor.id, sealed, record))
    return found


def _discoverable(services: Services, id_hash: bytes) -> list[AssertionCandidate]:
    """Step 10.2: the discoverable credentials for this RP, newest first."""
    key = services.store.identity().credential_key
    found: list[AssertionCandidate] = []
    for record in services.store.find_credentials(id_hash):
        sealed = decode_credential_id(key, id_hash, record.credential_id)
        if sealed is None:
            log.warning("stored credential does not unseal; skipped")
            continue
        found.append(AssertionCandidate(record.credential_id, sealed, record))
    return found


def _cred_protect(candidate: AssertionCandidate) -> int:
    level = candidate.sealed.cred_protect
    if candidate.record is not None:
        level = max(level, candidate.record.cred_protect)
    return level


def _assertion(
    services: Services,
    id_hash: bytes,
    client_data_hash: bytes,
    flags: AuthDataFlags,
    candidate: AssertionCandidate,
    number_of_credentials: int | None,
) -> GetAssertionResponse:
    """Counter, authData, signature and response for one credential.

    The counter is per credential: it advances by one for every assertion made
    with user presence and is persisted before the response is returned.
    """
    store = services.store
    if services.config.constant_zero_counter:
        count = 0
    elif flags & AuthDataFlags.UP:
        # Persisted before the response leaves the key.
        count = store.increment_counter(candidate.credential_id)
    else:
        # A silent (up=false) assertion, e.g. a platform's pre-flight probe of the
        # allowList, reports the current counter without advancing it. No relying
        # party accepts an assertion without the UP flag, so every assertion an RP
        # can accept still carries a strictly larger counter, and pre-flights do
        # not make counters jump.
        count = store.get_counter(candidate.credential_id)
    count = min(count, _MAX_SIGN_COUNT)
    auth_data = build_auth_data(id_hash, flags, count)
    key = CredentialKey.from_private_bytes(candidate.sealed.algorithm, candidate.sealed.private_key)
    signature = key.sign(auth_data + client_data_hash)
    user = None
    if candidate.record is not None:
        # Discoverable credential: the user id is mandatory. Name and
        # displayName need user verification, which this key cannot do.
        user = {"id": candidate.record.user_id}
    return GetAssertionResponse(
        credential=CredentialDescriptor(PUBLIC_KEY, candidate.credential_id).to_cbor(),
        auth_data=auth_data,
        signature=signature,
        user=user,
        number_of_credentials=number_of_credentials,
    )


def get_assertion(
    services: Services, request: GetAssertionRequest, context: RequestContext
) -> GetAssertionResponse:
    # Step 1: zero-length pinUvAuthParam = "touch to select" probe.
    if request.pin_uv_auth_param is not None and len(request.pin_uv_auth_param) == 0:
        pin_probe(services, context, request.rp_id)

    # Step 2: pinUvAuthParam present.
    check_pin_uv_auth_param(request.pin_uv_auth_param, request.pin_uv_auth_protocol)

    # Step 3: response "uv" and "up" bits start false.
    flags = AuthDataFlags(0)

    # Step 4: options.
    options = request.options
    # 4.3: uv true without built-in user verification -> INVALID_OPTION.
    if options.uv:
        raise CtapError(CtapStatus.INVALID_OPTION, "no built-in user verification")
    # 4.4: "rk" is not valid for getAssertion.
    if options.rk is not None:
        raise CtapError(CtapStatus.UNSUPPORTED_OPTION, "rk is not a getAssertion option")
    # 4.5: "up" absent -> true.
    up = True if options.up is None else options.up

    # Steps 5-9: alwaysUv / pinUvAuthParam / built-in UV: not supported, "uv" stays false.
    uv = False

    # Step 10: locate the applicable credentials.
    id_hash = rp_id_hash(request.rp_id)
    has_allow_list = bool(request.allow_list)  # an empty allowList counts as absent
    if has_allow_list:
        candidates = _from_allow_list(services, id_hash, request.allow_list)
    else:
        candidates = _discoverable(services, id_hash)
    # 10.4: userVerificationRequired needs uv.
    # 10.5: userVerificationOptionalWithCredentialIDList needs an allowList or uv.
    candidates = [
        c
        for c in candidates
        if not (_cred_protect(c) >= USER_VERIFICATION_REQUIRED and not uv)
        and not (
            _cred_protect(c) == USER_VERIFICATION_OPTIONAL_WITH_CREDENTIAL_ID_LIST
            and not has_allow_list
            and not uv
        )
    ]
    # 10.6
    if not candidates:
        raise CtapError(CtapStatus.NO_CREDENTIALS, "no credentials")
    # 10.7
    number_of_credentials = len(candidates)

    # Step 11: user presence (skipped for up=false: a silent probe).
    if up:
        first = candidates[0]
        require_presence(
            services,
            context,
            PresenceRequest(
                PresenceKind.AUTHENTICATE,
                rp_id=request.rp_id,
                user_name=first.record.user_name
                if number_of_credentials == 1 and first.record
                else None,
            ),
        )
        flags |= AuthDataFlags.UP

    # Step 12: extensions: none supported yet; unknown extensions are ignored.

    # Step 13: select the credential. With an allowList any applicable one will
    # do and numberOfCredentials is omitted; without one the newest comes first
    # (the store's order).
    selected = candidates[0]
    several = not has_allow_list and number_of_credentials > 1

    # Step 14: sign authData || clientDataHash.
    response = _assertion(
        services,
        id_hash,
        request.client_data_hash,
        flags,
        selected,
        number_of_credentials if several else None,
    )
    if several:
        # 13.2.3: remember the request for authenticatorGetNextAssertion and
        # start its timer.
        services.runtime.set_pending(
            PendingAssertion(
                channel=context.channel,
                rp_id_hash=id_hash,
                client_data_hash=request.client_data_hash,
                flags=flags,
                remaining=candidates[1:],
                deadline=services.clock.monotonic() + services.config.next_assertion_timeout,
            )
        )
    return response


def get_next_assertion(services: Services, context: RequestContext) -> GetAssertionResponse:
    # Steps 1-4, 7-8: pending state, channel, timer, counter (see RuntimeState).
    pending, candidate = services.runtime.next_candidate(
        context.channel, services.clock.monotonic(), services.config.next_assertion_timeout
    )
    # Steps 5-6: user entity (id only: no UV) and signature.
    return _assertion(
        services, pending.rp_id_hash, pending.client_data_hash, pending.flags, candidate, None
    )
