"""The steps authenticatorMakeCredential (CTAP 2.1 section 6.1.2) and
authenticatorGetAssertion (section 6.2.2) share: the pinUvAuthParam probe and checks,
alwaysUv, user verification (pinUvAuthToken or built-in UV) and user presence.

Each function names the steps of both sections it implements (makeCredential step N /
getAssertion step M); the handlers call them in their own step order.
"""

from __future__ import annotations

from vfido.authenticator.env import PresenceKind, PresenceRequest, PresenceResult, RequestContext
from vfido.authenticator.errors import CtapError, CtapStatus
from vfido.authenticator.pin_token import Permission
from vfido.authenticator.state import Services, ask_presence, require_presence


def pin_probe(services: Services, context: RequestContext, rp_id: str) -> None:
    """Step 1 of makeCredential/getAssertion: a zero-length pinUvAuthParam.

    CTAP2.0 platforms send it to let the user pick an authenticator by touch.
    1.1 ask for the touch; 1.2 decline or timeout -> OPERATION_DENIED;
    1.3 otherwise PIN_NOT_SET without a PIN, PIN_INVALID with one.
    """
    result = ask_presence(services, context, PresenceRequest(PresenceKind.SELECT, rp_id=rp_id))
    if result is PresenceResult.CANCELLED:
        raise CtapError(CtapStatus.KEEPALIVE_CANCEL, "cancelled")
    if result is not PresenceResult.GRANTED:
        raise CtapError(CtapStatus.OPERATION_DENIED, "touch probe declined")
    if services.client_pin.is_pin_set:
        raise CtapError(CtapStatus.PIN_INVALID, "touch probe")
    raise CtapError(CtapStatus.PIN_NOT_SET, "touch probe")


def check_pin_uv_auth_param(services: Services, param: bytes | None, protocol: int | None) -> None:
    """Step 2: pinUvAuthParam present -> its protocol must be present (2.2) and
    supported (2.1)."""
    if param is None:
        return
    if protocol is None:
        raise CtapError(CtapStatus.MISSING_PARAMETER, "pinUvAuthProtocol")
    services.client_pin.protocol(protocol)  # INVALID_PARAMETER when unsupported


def enforce_always_uv(services: Services, has_param: bool, uv: bool) -> tuple[bool, bool]:
    """alwaysUv (makeCredential step 6, getAssertion step 5 when "up" is true).

    Returns (uv, make_cred_uv_not_rqd). With alwaysUv on:
    6.1 makeCredUvNotRqd is treated as false;
    6.2 a key not protected by any user verification -> PUAT_REQUIRED (clientPin
        is supported, so the platform should set a PIN);
    6.3 no pinUvAuthParam and built-in UV enabled -> "uv" treated as true;
    6.4 no pinUvAuthParam and no "uv" -> PUAT_REQUIRED.
    """
    if not services.settings.always_uv:
        return uv, True
    if not services.uv_protected:
        raise CtapError(CtapStatus.PUAT_REQUIRED, "alwaysUv without PIN or built-in UV")
    if has_param or uv:
        return uv, False
    if services.client_pin.has_uv:
        return True, False
    raise CtapError(CtapStatus.PUAT_REQUIRED, "alwaysUv")


def verify_pin_uv_auth_param(
    services: Services,
    protocol: int | None,
    client_data_hash: bytes,
    param: bytes,
    permission: Permission,
    rp_id: str,
) -> None:
    """makeCredential step 11.1 / getAssertion step 6.1: check the pinUvAuthToken.

    verify() over clientDataHash, the mc/ga permission, the permissions RP ID
    and the userVerified flag; any failure is PIN_AUTH_INVALID. The token is
    then bound to ``rp_id`` if it was not yet.
    """
    pin = services.client_pin
    pin.verify_token(protocol, client_data_hash, param, permission, rp_id)
    if not pin.token.get_user_verified_flag():
        raise CtapError(CtapStatus.PIN_AUTH_INVALID, "token has no user verification")


def builtin_uv(services: Services, context: RequestContext, rp_id: str, kind: PresenceKind) -> None:
    """makeCredential step 11.2 / getAssertion step 6.2: performBuiltInUv (the user is
    asked what for: ``kind``, registering or signing in).

    On failure (11.2.3): a timeout stays USER_ACTION_TIMEOUT (and a
    CTAPHID_CANCEL KEEPALIVE_CANCEL); otherwise PUAT_REQUIRED when a PIN is set
    (the platform can fall back to it), PIN_BLOCKED when uvRetries reached 0,
    else OPERATION_DENIED. The failed attempt counts against uvRetries.
    """
    pin = services.client_pin
    try:
        pin.verify_user_builtin(context, rp_id, kind)
    except CtapError as exc:
        if exc.status not in (CtapStatus.UV_INVALID, CtapStatus.UV_BLOCKED):
            raise
        if pin.is_pin_set:
            raise CtapError(CtapStatus.PUAT_REQUIRED, "built-in UV failed") from None
        if pin.uv_blocked:
            raise CtapError(CtapStatus.PIN_BLOCKED, "built-in UV blocked") from None
        raise CtapError(CtapStatus.OPERATION_DENIED, "built-in UV failed") from None


def token_applies(services: Services, has_param: bool) -> bool:
    """Whether a request's pinUvAuthParam counts. makeCredential step 11 and getAssertion
    step 6 are for a key "protected by some form of user verification": a key with neither
    a PIN nor built-in UV does not check the parameter there (no token can exist), and so
    nothing after them may take it for a token either (the token's userPresent flag
    included, in the excludeList's step and for presence)."""
    return has_param and services.uv_protected


def token_user_present(services: Services, used_token: bool) -> bool:
    """getUserPresentFlagValue(): with a pinUvAuthParam (that applies), the token's
    userPresent flag stands in for a touch (makeCredential steps 12.1.2 and 14, getAssertion
    step 9)."""
    return used_token and services.client_pin.token.get_user_present_flag()


def perform_user_verification(
    services: Services,
    context: RequestContext,
    *,
    has_param: bool,
    uv: bool,
    protocol: int | None,
    client_data_hash: bytes,
    param: bytes | None,
    permission: Permission,
    rp_id: str,
) -> tuple[bool, bool]:
    """makeCredential step 11 / getAssertion step 6: verify the user, if asked to.

    ``has_param``: a pinUvAuthParam that applies (:func:`token_applies`). With one the
    token is checked (11.1 / 6.1), else with the uv option built-in UV runs (11.2 / 6.2).
    Returns (user verified, verified by built-in UV: which is also evidence of user
    presence, steps 13 / 8).
    """
    if has_param:
        assert param is not None
        verify_pin_uv_auth_param(services, protocol, client_data_hash, param, permission, rp_id)
        return True, False
    if uv:
        kind = (
            PresenceKind.REGISTER
            if permission == Permission.MAKE_CREDENTIAL
            else PresenceKind.AUTHENTICATE
        )
        builtin_uv(services, context, rp_id, kind)
        return True, True
    return False, False


def collect_presence(
    services: Services,
    context: RequestContext,
    used_token: bool,
    request: PresenceRequest,
) -> None:
    """makeCredential step 14 / getAssertion step 9: user presence ("up" true).

    With a pinUvAuthParam the token's userPresent flag may stand in for a new touch
    (getUserPresentFlagValue). Afterwards, with a pinUvAuthParam or without one, 14.4 /
    9.4: "Call clearUserPresentFlag(), clearUserVerifiedFlag(), and
    clearPinUvAuthTokenPermissionsExceptLbw()": a token serves one operation, and an
    operation a touch approved ends the token's mc/ga (and other) permissions too.
    """
    token = services.client_pin.token
    if not token_user_present(services, used_token):
        require_presence(services, context, request)
    token.clear_user_present_flag()
    token.clear_user_verified_flag()
    token.clear_permissions_except_lbw()
