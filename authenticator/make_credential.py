"""authenticatorMakeCredential (0x01), CTAP 2.1 section 6.1.2 (plus CTAP 2.2's
attestationFormatsPreference).

Step numbers in the comments are those of section 6.1.2. "Protected by some
form of user verification" means a PIN is set or built-in UV is enabled
(:attr:`Services.uv_protected`).

Signature counter: a new credential's counter starts at 0 and the authData of
makeCredential carries signCount 0 (nothing has been signed with the new key;
the first assertion reports 1). This is what most security keys do and is
what WebAuthn relying parties expect from a per-credential counter.
"""

from __future__ import annotations

import logging
from typing import Any

from vfido.authenticator.attestation import make_attestation
from vfido.authenticator.authdata import (
    AttestedCredentialData,
    AuthDataFlags,
    backup_flags,
    build_auth_data,
    keystore_backup_eligible,
    new_credential_backed_up,
    rp_id_hash,
)
from vfido.authenticator.behaviours import FIDO_2_0, attestation_identity
from vfido.authenticator.cose import CredentialKey
from vfido.authenticator.credential_source import (
    SealedCredential,
    encode_credential_id,
    record_server_side,
    resolve_credential_id,
)
from vfido.authenticator.env import PresenceKind, PresenceRequest, PresenceResult, RequestContext
from vfido.authenticator.errors import CtapError, CtapStatus
from vfido.authenticator.extensions import (
    CRED_BLOB,
    CRED_PROTECT,
    HMAC_SECRET,
    HMAC_SECRET_MC,
    MAX_CRED_BLOB_LENGTH,
    MIN_PIN_LENGTH,
    PIN_COMPLEXITY_POLICY,
    THIRD_PARTY_PAYMENT,
    MakeCredentialExtensions,
    hmac_secret_output,
    open_hmac_secret,
)
from vfido.authenticator.get_info import remaining_discoverable_credentials
from vfido.authenticator.model import answers_as_ctap20, reports_option
from vfido.authenticator.persistent_token import note_credential_change
from vfido.authenticator.pin_token import Permission
from vfido.authenticator.requests import PUBLIC_KEY, MakeCredentialRequest
from vfido.authenticator.responses import MakeCredentialResponse
from vfido.authenticator.shared_steps import (
    check_pin_uv_auth_param,
    collect_presence,
    enforce_always_uv,
    perform_user_verification,
    pin_probe,
    token_applies,
    token_user_present,
)
from vfido.authenticator.sign_extension import PREVIEW_SIGN, GenerateKeyInput
from vfido.authenticator.sign_extension import generate_key as generate_sign_key
from vfido.authenticator.sign_extension import unsigned_output as sign_unsigned_output
from vfido.authenticator.state import Services, ask_presence
from vfido.keystore import entropy
from vfido.keystore.store import CredentialRecord, KeystoreFull

log = logging.getLogger(__name__)

#: credProtect level 3 (CTAP 2.1 section 12.1).
USER_VERIFICATION_REQUIRED = 3
#: enterpriseAttestation values (section 7.1).
EP_VENDOR_FACILITATED = 1
EP_PLATFORM_MANAGED = 2


def _choose_attestation(services: Services, request: MakeCredentialRequest) -> str:
    """The attestation to produce: the configured one, or CTAP 2.2's
    attestationFormatsPreference (the first entry this key supports)."""
    configured = services.config.attestation
    if request.attestation_formats_preference:
        for fmt in request.attestation_formats_preference:
            if fmt == "none":
                return "none"
            if fmt == "packed" and configured != "none":
                return configured  # "packed" (batch) or "self" (packed self attestation)
    return configured


def _enterprise_attestation(services: Services, request: MakeCredentialRequest) -> bool:
    """Step 9: whether to return an enterprise attestation (section 7.1)."""
    value = request.enterprise_attestation
    if value is None:
        return False
    config = services.config
    # 9.1: not capable, or capable but not enabled -> INVALID_PARAMETER.
    if not config.enterprise_attestation or not services.settings.enterprise_attestation:
        raise CtapError(CtapStatus.INVALID_PARAMETER, "enterprise attestation not enabled")
    # 9.2: only values 1 and 2 exist.
    if value not in (EP_VENDOR_FACILITATED, EP_PLATFORM_MANAGED):
        raise CtapError(CtapStatus.INVALID_OPTION, "enterpriseAttestation value")
    # Platform-managed (2): the platform vouches for the RP, on a key that does it. 9.3:
    # "An authenticator that only supports vendor-facilitated enterprise attestation is
    # obliged to treat enterpriseAttestation parameter values 1 and 2 equivalently,
    # otherwise it will yield unexpected results if used with an enterprise-managed
    # platform (which will be setting enterpriseAttestation to 2)." (an outside review)
    if value == EP_PLATFORM_MANAGED and config.enterprise_attestation >= EP_PLATFORM_MANAGED:
        return True
    # Vendor-facilitated (1, or 2 on a vendor-only key): only for the RP IDs configured
    # in the key; for any other RP a regular attestation is returned.
    return request.rp.id in config.enterprise_rp_ids


def make_credential(
    services: Services, request: MakeCredentialRequest, context: RequestContext
) -> MakeCredentialResponse:
    store, config, pin = services.store, services.config, services.client_pin
    rp_id = request.rp.id

    # Step 1: zero-length pinUvAuthParam = "touch to select" probe.
    if request.pin_uv_auth_param is not None and len(request.pin_uv_auth_param) == 0:
        pin_probe(services, context, rp_id)

    # Step 2: pinUvAuthParam present: its protocol must be present and supported.
    check_pin_uv_auth_param(services, request.pin_uv_auth_param, request.pin_uv_auth_protocol)
    has_param = request.pin_uv_auth_param is not None

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
    flags = 0

    # Step 5: options. Unknown option keys were dropped while parsing.
    options = request.options
    # 5.1: "uv" absent -> false. 5.2: pinUvAuthParam present -> "uv" treated as false.
    uv = bool(options.uv) and not has_param
    # 5.3: uv true needs built-in user verification (enabled).
    if uv and not services.client_pin.has_uv:
        raise CtapError(CtapStatus.INVALID_OPTION, "no built-in user verification")
    # 5.4/5.5: "rk" absent -> false. 5.4: a key without discoverable-credential storage
    # (getInfo "rk" false, WebDriver's hasResidentKey false) -> UNSUPPORTED_OPTION.
    rk = bool(options.rk)
    if rk and not config.resident_keys:
        raise CtapError(CtapStatus.UNSUPPORTED_OPTION, "no discoverable-credential storage")
    # 5.6/5.7: "up" may be sent to a 2.1 authenticator but only as true.
    if options.up is False:
        raise CtapError(CtapStatus.INVALID_OPTION, "up=false is not valid for makeCredential")

    # Step 6: alwaysUv (makeCredUvNotRqd is then treated as false).
    uv, uv_not_required = enforce_always_uv(services, has_param, uv)
    # Step 8 applies where getInfo does not report makeCredUvNotRqd ("present with the value
    # false or is absent"): a CTAP 2.0 or 2.1-PRE model, or behaviour versions=FIDO_2_0.
    ctap20 = services.behaviours.current().versions == FIDO_2_0
    if uv_not_required and not reports_option(config.model, ctap20, "makeCredUvNotRqd"):
        uv_not_required = False
    # CTAP 2.0 knows only the PIN here (its step 6: "If pinAuth parameter is not present and
    # clientPin been set on the authenticator, return CTAP2_ERR_PIN_REQUIRED error", the
    # code of PUAT_REQUIRED): built-in UV alone protects nothing a 2.0 platform must answer.
    protected = pin.is_pin_set if answers_as_ctap20(config.model, ctap20) else services.uv_protected

    # Step 7 (makeCredUvNotRqd true): a UV-protected key may create a
    # non-discoverable credential without UV, a discoverable one needs it.
    # Step 8 (else): any credential needs it. Then (7.1 / 8.1): "If ClientPin option ID
    # is true [a PIN is set] and the noMcGaPermissionsWithClientPin option ID is absent
    # or false, end the operation by returning CTAP2_ERR_PUAT_REQUIRED. Otherwise, end
    # the operation by returning CTAP2_ERR_OPERATION_DENIED." A key with built-in UV and
    # no PIN must not ask for a PIN it does not have (libfido2 prompts for one on
    # PUAT_REQUIRED and waits for ever).
    if protected and not uv and not has_param and (rk or not uv_not_required):
        if pin.is_pin_set:
            raise CtapError(CtapStatus.PUAT_REQUIRED, "user verification required")
        raise CtapError(CtapStatus.OPERATION_DENIED, "user verification required (no PIN set)")

    # Step 9: enterprise attestation.
    enterprise = _enterprise_attestation(services, request)

    # Step 15 (parsed early so malformed input fails before any user interaction).
    ext = MakeCredentialExtensions.parse(request.extensions)
    sign_request = GenerateKeyInput.from_extensions(request.extensions)  # previewSign

    # The pinUvAuthParam counts from here on only on a key with PIN or built-in UV.
    has_param = token_applies(services, has_param)
    # Step 10: rk and uv false, makeCredUvNotRqd, no pinUvAuthParam: no UV (to step 12).
    # Step 11: user verification.
    # 11.1: the pinUvAuthToken; 11.2: built-in UV (both only on a key protected by some
    # form of user verification).
    verified, user_verified_builtin = perform_user_verification(
        services,
        context,
        has_param=has_param,
        uv=uv,
        protocol=request.pin_uv_auth_protocol,
        client_data_hash=request.client_data_hash,
        param=request.pin_uv_auth_param,
        permission=Permission.MAKE_CREDENTIAL,
        rp_id=rp_id,
    )
    if verified:
        flags |= AuthDataFlags.UV

    identity = store.identity()
    id_hash = rp_id_hash(rp_id)
    uv_done = bool(flags & AuthDataFlags.UV)
    behaviours = services.behaviours.current()

    # Step 12: excludeList.
    for descriptor in request.exclude_list:
        if descriptor.type != PUBLIC_KEY or behaviours.vanished(descriptor.id):
            continue
        recorded = config.record_server_side_credentials
        resolved = resolve_credential_id(store, id_hash, descriptor.id, recorded=recorded)
        if resolved is None:
            continue
        sealed = resolved[0]
        record = store.get_credential(descriptor.id) if sealed.discoverable else None
        if sealed.discoverable and record is None:
            continue  # deleted discoverable credential
        level = max(sealed.cred_protect, record.cred_protect if record else 1)
        # 12.2: a userVerificationRequired credential only counts with uv.
        if level == USER_VERIFICATION_REQUIRED and not uv_done:
            continue
        # 12.1.1-12.1.3: userPresentFlagValue is the token's user-present flag with a
        # pinUvAuthParam, else true after built-in UV in step 11 (evidence of user
        # interaction). 12.1.4: only when it is false, wait for presence; 12.1.5: either
        # way the answer is CREDENTIAL_EXCLUDED (a CTAPHID_CANCEL still ends with
        # KEEPALIVE_CANCEL).
        if not (user_verified_builtin or token_user_present(services, has_param)):
            result = ask_presence(
                services, context, PresenceRequest(PresenceKind.EXCLUDED, rp_id=rp_id)
            )
            if result is PresenceResult.CANCELLED:
                raise CtapError(CtapStatus.KEEPALIVE_CANCEL, "cancelled")
        raise CtapError(CtapStatus.CREDENTIAL_EXCLUDED, "excluded credential exists")

    presence_request = PresenceRequest(
        PresenceKind.REGISTER,
        rp_id=rp_id,
        user_name=request.user.name or request.user.display_name,
    )
    if user_verified_builtin:
        # Step 13: built-in UV was evidence of user interaction: "up" is true.
        flags |= AuthDataFlags.UP
    else:
        # Step 14: "up" is (treated as) true: collect user presence.
        collect_presence(services, context, has_param, presence_request)
        flags |= AuthDataFlags.UP

    # Step 15: extensions (unknown ones are ignored).
    cred_protect = ext.cred_protect or 1
    cred_blob: bytes | None = None
    outputs: dict[str, Any] = {}
    if ext.cred_protect is not None:
        outputs[CRED_PROTECT] = cred_protect
    if ext.hmac_secret:
        outputs[HMAC_SECRET] = True
    if ext.cred_blob is not None:
        stored = len(ext.cred_blob) <= MAX_CRED_BLOB_LENGTH
        cred_blob = ext.cred_blob if stored else None
        outputs[CRED_BLOB] = stored
    if ext.min_pin_length and rp_id in services.settings.min_pin_length_rp_ids:
        outputs[MIN_PIN_LENGTH] = pin.min_pin_length
    if ext.pin_complexity_policy and rp_id in services.settings.min_pin_length_rp_ids:
        outputs[PIN_COMPLEXITY_POLICY] = pin.pin_complexity_policy
    if ext.third_party_payment:
        outputs[THIRD_PARTY_PAYMENT] = True
    # largeBlobKey: discoverable credentials only (section 12.3); platforms
    # (python-fido2 among them) send it regardless, so a server-side credential
    # simply gets none and the client reports largeBlob unsupported.
    large_blob_key = entropy.random_bytes(32) if ext.large_blob_key and rk else None

    # Step 16: generate the credential key pair.
    key = CredentialKey.generate(algorithm)
    private = key.private_bytes()
    credential_id = encode_credential_id(
        identity.credential_key,
        id_hash,
        SealedCredential(
            algorithm=algorithm,
            private_key=private,
            cred_protect=cred_protect,
            discoverable=rk,
            hmac_secret=ext.with_hmac_secret,
            cred_blob=cred_blob,
            third_party_payment=ext.third_party_payment,
        ),
    )
    if ext.hmac_secret_mc is not None:
        # CTAP 2.2 hmac-secret-mc: the first hmac-secret evaluation at creation.
        outputs[HMAC_SECRET_MC] = hmac_secret_output(
            open_hmac_secret(pin, ext.hmac_secret_mc),
            identity.credential_key,
            credential_id,
            uv_done,
        )
    # previewSign generateKey: a signing key bound to this credential (sign_extension.py).
    sign_key = None
    if sign_request is not None:
        sign_key = generate_sign_key(sign_request, identity.credential_key, id_hash, credential_id)
        outputs[PREVIEW_SIGN] = sign_key.signed_output

    # Step 17: discoverable credential: store it (replacing one for the same
    # rp.id and user.id); out of space -> KEY_STORE_FULL.
    if rk:
        # Full: no room left, as getInfo's remainingDiscoverableCredentials counts it
        # (behaviour store-full included); a credential that replaces one still fits.
        if remaining_discoverable_credentials(services) == 0 and not _replaces(
            services, id_hash, request.user.id
        ):
            raise CtapError(CtapStatus.KEY_STORE_FULL, "no room for discoverable credentials")
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
            cred_protect=cred_protect,
            cred_blob=cred_blob,
            large_blob_key=large_blob_key,
            backup_eligible=keystore_backup_eligible(store),
            backup_state=new_credential_backed_up(store, config.default_backup_state),
        )
        try:
            store.put_credential(record)
            note_credential_change(store)  # CTAP 2.2 credStoreState
        except KeystoreFull:
            raise CtapError(CtapStatus.KEY_STORE_FULL, "keystore full") from None
    # Step 18: otherwise the credential is server-side: everything is in its ID (a key that
    # records them also keeps its sealed ID, see Config.record_server_side_credentials).
    elif config.record_server_side_credentials:
        backup = backup_flags(store, None, config.default_backup_state)
        eligible, backed_up = bool(backup & AuthDataFlags.BE), bool(backup & AuthDataFlags.BS)
        record_server_side(store, rp_id, id_hash, credential_id, eligible, backed_up)

    # Step 19: attestation statement over authData || clientDataHash. An
    # enterprise attestation is the batch (packed) attestation plus epAtt.
    auth_data = build_auth_data(
        id_hash,
        flags | backup_flags(store, record if rk else None, config.default_backup_state),  # BE/BS
        0,
        AttestedCredentialData(identity.aaguid, credential_id, key.cose_public_key()),
        outputs,
    )
    fmt_wanted = "packed" if enterprise else _choose_attestation(services, request)
    attesting = identity
    if behaviours.attestation == "none":
        fmt_wanted = "none"
    elif behaviours.attestation is not None:
        # Behaviour attestation=untrusted|expired: another CA's batch certificate.
        fmt_wanted = "packed"
        attesting = attestation_identity(identity, behaviours.attestation)
    fmt, att_stmt = make_attestation(
        fmt_wanted,
        attesting,
        auth_data,
        request.client_data_hash,
        key,
        force_batch=enterprise or attesting is not identity,  # ML-DSA: self unless forced
    )
    unsigned_outputs = None
    if sign_key is not None:
        unsigned_outputs = {
            PREVIEW_SIGN: sign_unsigned_output(
                sign_key, auth_data, att_stmt, attesting, request.client_data_hash
            )
        }
    log.info(
        "makeCredential: new %s credential (alg %d, credProtect %d%s%s)",
        "discoverable" if rk else "server-side",
        algorithm,
        cred_protect,
        ", uv" if uv_done else "",
        ", enterprise attestation" if enterprise else "",
    )
    key.remember(private)  # its first assertion usually follows at once
    # Step 20: return the attestation object.
    return MakeCredentialResponse(
        fmt=fmt,
        auth_data=auth_data,
        att_stmt=att_stmt,
        ep_att=enterprise,
        large_blob_key=large_blob_key,
        unsigned_extension_outputs=unsigned_outputs,
    )


def _replaces(services: Services, id_hash: bytes, user_id: bytes) -> bool:
    """Whether a new discoverable credential replaces one (same RP and user)."""
    return any(r.user_id == user_id for r in services.store.find_credentials(id_hash))
