"""authenticatorGetAssertion (0x02, CTAP 2.1 section 6.2.2) and
authenticatorGetNextAssertion (0x08, section 6.3).

Step numbers in the comments follow section 6.2.2. User-identifying
information (name, displayName) is only returned when the user was verified
and more than one credential matched (the platform then shows an account
chooser); otherwise the user entity carries only the id.
"""

from __future__ import annotations

import logging
from typing import Any

from vfido.authenticator.authdata import (
    AuthDataFlags,
    backup_flags,
    backup_flags_of,
    build_auth_data,
    rp_id_hash,
)
from vfido.authenticator.behaviours import corrupt_signed_data
from vfido.authenticator.cose import (
    ALGORITHM_NAMES,
    CredentialKey,
    can_sign,
    mldsa_unavailable_reason,
)
from vfido.authenticator.credential_source import SealedCredential, resolve_credential_id
from vfido.authenticator.env import PresenceKind, PresenceRequest, RequestContext
from vfido.authenticator.errors import CtapError, CtapStatus
from vfido.authenticator.extensions import (
    CRED_BLOB,
    HMAC_SECRET,
    THIRD_PARTY_PAYMENT,
    GetAssertionExtensions,
    OpenedHmacSecret,
    hmac_secret_output,
    open_hmac_secret,
)
from vfido.authenticator.pin_token import Permission
from vfido.authenticator.requests import PUBLIC_KEY, CredentialDescriptor, GetAssertionRequest
from vfido.authenticator.responses import GetAssertionResponse
from vfido.authenticator.shared_steps import (
    check_pin_uv_auth_param,
    collect_presence,
    enforce_always_uv,
    perform_user_verification,
    pin_probe,
    token_applies,
)
from vfido.authenticator.sign_extension import PREVIEW_SIGN, Output, SigningKey, SignInput
from vfido.authenticator.state import AssertionCandidate, PendingAssertion, Services

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
    found: list[AssertionCandidate] = []
    seen: set[bytes] = set()
    for descriptor in allow_list:
        if descriptor.type != PUBLIC_KEY or descriptor.id in seen:
            continue
        seen.add(descriptor.id)
        recorded = services.config.record_server_side_credentials
        resolved = resolve_credential_id(store, id_hash, descriptor.id, recorded=recorded)
        if resolved is None or not _usable(resolved[0]):
            continue
        sealed, imported = resolved
        record = None
        if sealed.discoverable:
            record = store.get_credential(descriptor.id)
            if record is None or record.rp_id_hash != id_hash:
                continue  # a deleted discoverable credential
        backup, user_handle = None, None
        if imported is not None and record is None:
            backup = (imported.backup_eligible, imported.backup_state)
            user_handle = imported.user_handle
        found.append(AssertionCandidate(descriptor.id, sealed, record, backup, user_handle))
    return found


def _discoverable(services: Services, id_hash: bytes) -> list[AssertionCandidate]:
    """Step 10.2: the discoverable credentials for this RP, newest first."""
    found: list[AssertionCandidate] = []
    for record in services.store.find_credentials(id_hash):
        resolved = resolve_credential_id(services.store, id_hash, record.credential_id)
        if resolved is None:
            log.warning("stored credential does not unseal; skipped")
            continue
        sealed = resolved[0]
        if not _usable(sealed):
            continue
        found.append(AssertionCandidate(record.credential_id, sealed, record))
    return found


def _usable(sealed: SealedCredential) -> bool:
    """A credential whose algorithm this process cannot sign with (an ML-DSA credential
    in a keystore moved to a runtime without ML-DSA) is not applicable: the request
    goes on with the others, or ends in NO_CREDENTIALS, never in an internal error."""
    if can_sign(sealed.algorithm):
        return True
    if sealed.algorithm not in _WARNED:  # once per algorithm, not per request
        _WARNED.add(sealed.algorithm)
        log.warning(
            "%s credentials are skipped: %s",
            ALGORITHM_NAMES.get(sealed.algorithm, str(sealed.algorithm)),
            mldsa_unavailable_reason() or "algorithm not supported here",
        )
    return False


_WARNED: set[int] = set()


def _cred_protect(candidate: AssertionCandidate) -> int:
    level = candidate.sealed.cred_protect
    if candidate.record is not None:
        level = max(level, candidate.record.cred_protect)
    return level


def _assertion(
    services: Services,
    id_hash: bytes,
    client_data_hash: bytes,
    flags: int,
    candidate: AssertionCandidate,
    number_of_credentials: int | None,
    identifying: bool = False,
    ext: GetAssertionExtensions | None = None,
    signature_output: bytes | None = None,
    hmac_secret: OpenedHmacSecret | None = None,
) -> GetAssertionResponse:
    """Counter, authData, signature and response for one credential.

    The counter is per credential: it advances by one for every assertion made
    with user presence and is persisted before the response is returned.
    """
    store = services.store
    behaviours = services.behaviours.current()
    # Persisted before the response leaves the key. A silent (up=false) assertion, e.g. a
    # platform's pre-flight probe of the allowList, reports the current counter without
    # advancing it: no relying party accepts an assertion without the UP flag, so every
    # assertion an RP can accept still carries a strictly larger counter, and pre-flights
    # do not make counters jump.
    count = behaviours.signature_counter(
        store,
        candidate.credential_id,
        constant_zero=services.config.constant_zero_counter,
        advance=bool(flags & AuthDataFlags.UP),
    )
    count = min(count, _MAX_SIGN_COUNT)
    # Step 10: extension outputs for this credential.
    outputs: dict[str, Any] = {}
    large_blob_key = None
    record, sealed = candidate.record, candidate.sealed
    if ext is not None:
        if hmac_secret is not None and sealed.hmac_secret:
            outputs[HMAC_SECRET] = hmac_secret_output(
                hmac_secret,
                store.identity().credential_key,
                candidate.credential_id,
                bool(flags & AuthDataFlags.UV),
            )
        if ext.cred_blob:
            blob = record.cred_blob if record is not None else None
            outputs[CRED_BLOB] = blob if blob is not None else (sealed.cred_blob or b"")
        if ext.large_blob_key and record is not None:
            large_blob_key = record.large_blob_key
        if ext.third_party_payment:
            outputs[THIRD_PARTY_PAYMENT] = sealed.third_party_payment
    if signature_output is not None:  # previewSign (sign_extension.py)
        outputs[PREVIEW_SIGN] = {Output.SIGNATURE: signature_output}
    if candidate.backup is not None:  # imported with an ID of its own
        backup = backup_flags_of(*candidate.backup)
    else:
        backup = backup_flags(store, record, services.config.default_backup_state)
    auth_data = build_auth_data(id_hash, flags | backup, count, extensions=outputs)
    key = CredentialKey.from_private_bytes(sealed.algorithm, sealed.private_key)
    # Step 13: sign authData || clientDataHash.
    # Behaviour wrong-signature: sign other data.
    signed = auth_data + client_data_hash
    signature = key.sign(corrupt_signed_data(signed) if behaviours.wrong_signature else signed)
    user: dict[str, Any] | None = None
    if record is not None and not behaviours.omit_user:
        # Discoverable credential: the user id is mandatory; name and
        # displayName only with user verification and several credentials.
        user = {"id": record.user_id}
        if identifying:
            if record.user_name is not None:
                user["name"] = record.user_name
            if record.user_display_name is not None:
                user["displayName"] = record.user_display_name
    elif candidate.user_handle is not None and not behaviours.omit_user:
        user = {"id": candidate.user_handle}  # a server-side credential added with one
    return GetAssertionResponse(
        credential=CredentialDescriptor(PUBLIC_KEY, candidate.credential_id).to_cbor(),
        auth_data=auth_data,
        signature=signature,
        user=user,
        number_of_credentials=number_of_credentials,
        large_blob_key=large_blob_key,
    )


def get_assertion(
    services: Services, request: GetAssertionRequest, context: RequestContext
) -> GetAssertionResponse:
    rp_id = request.rp_id
    # Step 1: zero-length pinUvAuthParam = "touch to select" probe.
    if request.pin_uv_auth_param is not None and len(request.pin_uv_auth_param) == 0:
        pin_probe(services, context, rp_id)

    # Step 2: pinUvAuthParam present: its protocol must be present and supported.
    check_pin_uv_auth_param(services, request.pin_uv_auth_param, request.pin_uv_auth_protocol)
    has_param = request.pin_uv_auth_param is not None

    # Step 3: response "uv" and "up" bits start false.
    flags = 0

    # Step 4: options.
    options = request.options
    # 4.1: "uv" absent -> false; 4.2: pinUvAuthParam present -> "uv" treated as false.
    uv = bool(options.uv) and not has_param
    # 4.3: uv true needs built-in user verification (enabled).
    if uv and not services.client_pin.has_uv:
        raise CtapError(CtapStatus.INVALID_OPTION, "no built-in user verification")
    # 4.4: "rk" is not valid for getAssertion.
    if options.rk is not None:
        raise CtapError(CtapStatus.UNSUPPORTED_OPTION, "rk is not a getAssertion option")
    # 4.5: "up" absent -> true.
    up = True if options.up is None else options.up

    # Step 5: alwaysUv, when "up" is true (silent probes stay possible).
    if up:
        uv, _ = enforce_always_uv(services, has_param, uv)

    # Extensions are parsed before any user interaction (used in step 10).
    ext = GetAssertionExtensions.parse(request.extensions)
    # CTAP 2.1 section 12.5 (hmac-secret, getAssertion): "If "up" is set to false,
    # authenticator returns CTAP2_ERR_UNSUPPORTED_OPTION." A silent assertion never
    # releases a credential's secret (nor does a getNextAssertion after it).
    if ext.hmac_secret is not None and not up:
        raise CtapError(CtapStatus.UNSUPPORTED_OPTION, "hmac-secret needs user presence")
    sign_input = SignInput.from_extensions(
        request.extensions, has_allow_list=bool(request.allow_list)
    )

    # The pinUvAuthParam counts from here on only on a key with PIN or built-in UV.
    has_param = token_applies(services, has_param)
    # Step 6: user verification.
    # 6.1: the pinUvAuthToken (ga permission, RP ID, userVerified flag); 6.2: built-in
    # UV (also evidence of user interaction, step 8).
    verified, user_verified_builtin = perform_user_verification(
        services,
        context,
        has_param=has_param,
        uv=uv,
        protocol=request.pin_uv_auth_protocol,
        client_data_hash=request.client_data_hash,
        param=request.pin_uv_auth_param,
        permission=Permission.GET_ASSERTION,
        rp_id=rp_id,
    )
    if verified:
        flags |= AuthDataFlags.UV

    # Step 7: locate the applicable credentials.
    id_hash = rp_id_hash(rp_id)
    has_allow_list = bool(request.allow_list)  # an empty allowList counts as absent
    if has_allow_list:
        candidates = _from_allow_list(services, id_hash, request.allow_list)
    else:
        candidates = _discoverable(services, id_hash)
    behaviours = services.behaviours.current()
    if behaviours.all_credentials_vanished or behaviours.vanished_credentials:
        # Behaviour vanished-credential: these are unknown to the key.
        candidates = [c for c in candidates if not behaviours.vanished(c.credential_id)]
    found = len(candidates)
    # credProtect (section 12.1): userVerificationRequired needs uv;
    # userVerificationOptionalWithCredentialIDList needs an allowList or uv.
    candidates = [
        c
        for c in candidates
        if not (_cred_protect(c) >= USER_VERIFICATION_REQUIRED and not verified)
        and not (
            _cred_protect(c) == USER_VERIFICATION_OPTIONAL_WITH_CREDENTIAL_ID_LIST
            and not has_allow_list
            and not verified
        )
    ]
    # Applicable credentials list empty -> NO_CREDENTIALS.
    if not candidates:
        # For --verbose: counts and lengths only, never an ID or key.
        raise CtapError(
            CtapStatus.NO_CREDENTIALS,
            f"no credentials (rpId {rp_id!r}, allowList {len(request.allow_list)} entries of "
            f"{sorted({len(d.id) for d in request.allow_list})} bytes, {found} ours, "
            f"uv {verified}, up {up})",
        )
    number_of_credentials = len(candidates)
    # previewSign (sign_extension.py), checked before the user is asked for anything: the
    # key handle must be the (first) applicable credential's; then the arguments (the
    # draft's steps 6-7), then the key's flags against the UP and UV bits this assertion
    # will carry (steps 8-9: UP from the "up" option or, step 8 below, from built-in UV),
    # then what the signature needs (tbs a digest for the split algorithms, ARKG's key).
    signer = None
    if sign_input is not None:
        sign_key = SigningKey.unseal(
            services.store.identity().credential_key,
            id_hash,
            candidates[0].credential_id,
            sign_input.key_handle,
        )
        sign_args = sign_key.checked_args(sign_input)
        sign_key.check_requirements(up or user_verified_builtin, verified)
        signer = sign_key.signer(sign_input.tbs, sign_args)

    # Step 8: built-in UV was evidence of user interaction: "up" bit set, whatever the
    # "up" option (the step has no condition on it: the user did interact).
    # Step 9: otherwise collect user presence (skipped for up=false: a silent probe).
    if user_verified_builtin:
        flags |= AuthDataFlags.UP
    elif up:
        first = candidates[0]
        collect_presence(
            services,
            context,
            has_param,
            PresenceRequest(
                PresenceKind.AUTHENTICATE,
                rp_id=rp_id,
                user_name=first.record.user_name
                if number_of_credentials == 1 and first.record
                else None,
            ),
        )
        flags |= AuthDataFlags.UP

    # Step 10's hmac-secret input (saltAuth, salts), after presence (step 9), as the spec
    # orders them, and for every request whichever credential answers: one made without
    # hmac-secret gets no output, but a bad input is refused all the same (it used to get
    # through there, and fail in a later getNextAssertion).
    opened = _opened_hmac_secret(services, ext)

    # Step 11: with an allowList any applicable credential will do and
    # numberOfCredentials is omitted. Step 12: without one, newest first (the
    # store's order), numberOfCredentials when more than one.
    selected = candidates[0]
    several = not has_allow_list and number_of_credentials > 1
    # 12: user-identifiable information (name, displayName) only with user
    # verification and more than one credential (the platform's account chooser).
    identifying = several and verified

    # Steps 10 (extensions) and 13 (signature).
    signature_output = signer.sign() if signer is not None else None
    response = _assertion(
        services,
        id_hash,
        request.client_data_hash,
        flags,
        selected,
        number_of_credentials if several else None,
        identifying,
        ext,
        signature_output,
        opened,
    )
    if several:
        # 12: remember the request for authenticatorGetNextAssertion and start its
        # timer. The extension inputs are remembered too: each next assertion computes
        # its own outputs (hmac-secret's shared secret is derived again from the same
        # keyAgreement, which only a power cycle or a wrong PIN replaces).
        services.runtime.set_pending(
            PendingAssertion(
                channel=context.channel,
                rp_id_hash=id_hash,
                client_data_hash=request.client_data_hash,
                flags=flags,
                remaining=candidates[1:],
                deadline=services.clock.monotonic() + services.config.next_assertion_timeout,
                identifying=identifying,
                extensions=ext,
            )
        )
    return response


def get_next_assertion(services: Services, context: RequestContext) -> GetAssertionResponse:
    # Steps 1-4, 7-8: pending state, channel, timer, counter (see RuntimeState).
    pending, candidate = services.runtime.next_candidate(
        context.channel, services.clock.monotonic(), services.config.next_assertion_timeout
    )
    # Steps 5-6: extensions, user entity and signature.
    return _assertion(
        services,
        pending.rp_id_hash,
        pending.client_data_hash,
        pending.flags,
        candidate,
        None,
        pending.identifying,
        pending.extensions,
        hmac_secret=_opened_hmac_secret(services, pending.extensions),
    )


def _opened_hmac_secret(
    services: Services, ext: GetAssertionExtensions | None
) -> OpenedHmacSecret | None:
    """The request's hmac-secret input, checked and opened (None without one)."""
    if ext is None or ext.hmac_secret is None:
        return None
    return open_hmac_secret(services.client_pin, ext.hmac_secret)
