"""authenticatorMakeCredential (0x01), CTAP 2.1 section 6.1.2.

This key has no clientPin/pinUvAuthToken and no built-in user verification
yet, so the steps that only apply to a UV-protected authenticator (6, 7, 9-11,
13, parts of 14) reduce to nothing; they are marked below.

Signature counter: a new credential's counter starts at 0 and the authData of
makeCredential carries signCount 0 (nothing has been signed with the new key;
the first assertion reports 1). This is what most security keys do and is
what WebAuthn relying parties expect from a per-credential counter.
"""

from __future__ import annotations

import logging

from authenticator.attestation import make_attestation
from authenticator.authdata import (
    AttestedCredentialData,
    AuthDataFlags,
    build_auth_data,
    rp_id_hash,
)
from authenticator.cose import CredentialKey
from authenticator.credential_source import (
    SealedCredential,
    decode_credential_id,
    encode_credential_id,
)
from authenticator.env import PresenceKind, PresenceRequest, PresenceResult, RequestContext
from authenticator.errors import CtapError, CtapStatus
from authenticator.requests import PUBLIC_KEY, MakeCredentialRequest
from authenticator.responses import MakeCredentialResponse
from authenticator.state import Services, ask_presence, require_presence
from keystore.store import CredentialRecord, KeystoreFull

log = logging.getLogger(__name__)

#: credProtect level 3 (CTAP 2.1 section 12.1).
USER_VERIFICATION_REQUIRED = 3


def pin_probe(services: Services, context: RequestContext, rp_id: str) -> None:
    """Step 1 of makeCredential/getAssertion: a zero-length pinUvAuthParam.

    CTAP2.0 platforms send it to let the user pick an authenticator by touch.
    Ask for the touch; decline or timeout -> OPERATION_DENIED; otherwise
    PIN_NOT_SET (no PIN can be set on this key yet; with a PIN it is PIN_INVALID).
    """
    result = ask_presence(services, context, PresenceRequest(PresenceKind.SELECT, rp_id=rp_id))
    if result is PresenceResult.CANCELLED:
        raise CtapError(CtapStatus.KEEPALIVE_CANCEL, "cancelled")
    if result is not PresenceResult.GRANTED:
        raise CtapError(CtapStatus.OPERATION_DENIED, "touch probe declined")
    raise CtapError(CtapStatus.PIN_NOT_SET, "touch probe")


def check_pin_uv_auth_param(param: bytes | None, protocol: int | None) -> None:
    """Step 2: pinUvAuthParam present -> its protocol must be present and supported."""
    if param is None:
        return
    if protocol is None:
        raise CtapError(CtapStatus.MISSING_PARAMETER, "pinUvAuthProtocol")
    # No PIN/UV auth protocol is supported yet.
    raise CtapError(CtapStatus.INVALID_PARAMETER, "unsupported pinUvAuthProtocol")


def make_credential(
    services: Services, request: MakeCredentialRequest, context: RequestContext
) -> MakeCredentialResponse:
    store, config = services.store, services.config
    rp_id = request.rp.id

    # Step 1: zero-length pinUvAuthParam = "touch to select" probe.
    if request.pin_uv_auth_param is not None and len(request.pin_uv_auth_param) == 0:
        pin_probe(services, context, rp_id)

    # Step 2: pinUvAuthParam present.
    check_pin_uv_auth_param(request.pin_uv_auth_param, request.pin_uv_auth_protocol)

    # Step 3: the first supported entry of pubKeyCredParams wins; unknown
    # types and algorithms are skipped.
    algorithm: int | None = None
    for params in request.pub_key_cred_params:
        if params.type == PUBLIC_KEY and params.alg in config.algorithms:
            algorithm = params.alg
            break
    if algorithm is None:
        raise CtapError(CtapStatus.UNSUPPORTED_ALGORITHM, "no supported algorithm")

    # Step 4: response "uv" and "up" bits start false.
    flags = AuthDataFlags(0)

    # Step 5: options. Unknown option keys were dropped while parsing.
    options = request.options
    # 5.1/5.2: "uv" absent -> false (pinUvAuthParam would force false as well).
    # 5.3: uv true without built-in user verification -> INVALID_OPTION.
    if options.uv:
        raise CtapError(CtapStatus.INVALID_OPTION, "no built-in user verification")
    # 5.4/5.5: "rk" is in getInfo's options, so it is supported; absent -> false.
    rk = bool(options.rk)
    # 5.6/5.7: "up" may be sent to a 2.1 authenticator but only as true.
    if options.up is False:
        raise CtapError(CtapStatus.INVALID_OPTION, "up=false is not valid for makeCredential")

    # Steps 6-7 (alwaysUv, makeCredUvNotRqd): not supported, nothing to do.

    # Step 8: enterprise attestation is not supported.
    if request.enterprise_attestation is not None:
        raise CtapError(CtapStatus.INVALID_PARAMETER, "enterprise attestation not supported")

    # Steps 9-11: the key is not protected by user verification; nothing to verify.

    identity = store.identity()
    id_hash = rp_id_hash(rp_id)

    # Step 12: excludeList.
    for descriptor in request.exclude_list:
        if descriptor.type != PUBLIC_KEY:
            continue
        sealed = decode_credential_id(identity.credential_key, id_hash, descriptor.id)
        if sealed is None:
            continue
        if sealed.discoverable and store.get_credential(descriptor.id) is None:
            continue  # deleted discoverable credential
        # 12.2: a userVerificationRequired credential only counts with uv, which
        # this key never has: remove it from the list and continue.
        if sealed.cred_protect == USER_VERIFICATION_REQUIRED:
            continue
        # 12.1.4: wait for presence; whether granted or not, the answer is
        # CREDENTIAL_EXCLUDED (a CTAPHID_CANCEL still ends with KEEPALIVE_CANCEL).
        result = ask_presence(
            services, context, PresenceRequest(PresenceKind.EXCLUDED, rp_id=rp_id)
        )
        if result is PresenceResult.CANCELLED:
            raise CtapError(CtapStatus.KEEPALIVE_CANCEL, "cancelled")
        raise CtapError(CtapStatus.CREDENTIAL_EXCLUDED, "excluded credential exists")

    # Step 13: no built-in UV.

    # Step 14: "up" is (treated as) true: collect user presence.
    require_presence(
        services,
        context,
        PresenceRequest(
            PresenceKind.REGISTER,
            rp_id=rp_id,
            user_name=request.user.name or request.user.display_name,
        ),
    )
    flags |= AuthDataFlags.UP

    # Step 15: extensions: none supported yet; unknown extensions are ignored.

    # Step 16: generate the credential key pair.
    key = CredentialKey.generate(algorithm)
    private = key.private_bytes()
    credential_id = encode_credential_id(
        identity.credential_key,
        id_hash,
        SealedCredential(algorithm=algorithm, private_key=private, discoverable=rk),
    )

    # Step 17: discoverable credential: store it (replacing one for the same
    # rp.id and user.id); out of space -> KEY_STORE_FULL.
    if rk:
        record = CredentialRecord(
            credential_id=credential_id,
            rp_id=rp_id,
            rp_id_hash=id_hash,
            user_id=request.user.id,
            algorithm=algorithm,
            private_key=private,  # CredentialKey.private_bytes() form
            created=int(services.clock.time()),
            rp_name=request.rp.name,
            user_name=request.user.name,
            user_display_name=request.user.display_name,
        )
        try:
            store.put_credential(record)
        except KeystoreFull:
            raise CtapError(CtapStatus.KEY_STORE_FULL, "keystore full") from None
    # Step 18: otherwise the credential is server-side: everything is in its ID.

    # Step 19: attestation statement over authData || clientDataHash.
    auth_data = build_auth_data(
        id_hash,
        flags,
        0,
        AttestedCredentialData(identity.aaguid, credential_id, key.cose_public_key()),
    )
    fmt, att_stmt = make_attestation(
        config.attestation, identity, auth_data, request.client_data_hash, key
    )
    log.info(
        "makeCredential: new %s credential (alg %d)",
        "discoverable" if rk else "server-side",
        algorithm,
    )
    # Step 20: return the attestation object.
    return MakeCredentialResponse(fmt=fmt, auth_data=auth_data, att_stmt=att_stmt)
