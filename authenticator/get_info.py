"""authenticatorGetInfo (0x04), CTAP 2.1 section 6.4.

Derived from the Config, the keystore and the persisted PIN / authenticatorConfig
state; nothing is written by hand. bioEnroll and uvModality only with a fingerprint sensor.

The members CTAP 2.2 and 2.3 added (0x17, 0x19-0x1F) are listed in :func:`ctap22_members`.
``FIDO_2_3`` is in versions because every CTAP 2.2 feature is implemented
(tests/authenticator/test_ctap22.py has one test per feature) and so are the members 2.3
adds (encCredStoreState, authenticatorConfigCommands). CTAP 2.2 has no version string:
2.3 section 6.4 says ``"FIDO_2_2"`` was never defined and must not appear.
"""

from __future__ import annotations

from vfido.authenticator.bio_enrollment import UV_MODALITY_FINGERPRINT
from vfido.authenticator.config import Config
from vfido.authenticator.config_command import (
    MAX_RPIDS_FOR_SET_MIN_PIN_LENGTH,
    supported_sub_commands,
)
from vfido.authenticator.cose import RS256
from vfido.authenticator.credential_source import SealedCredential
from vfido.authenticator.extensions import MAX_CRED_BLOB_LENGTH
from vfido.authenticator.extensions import SUPPORTED as SUPPORTED_EXTENSIONS
from vfido.authenticator.large_blobs import MAX_SERIALIZED_LARGE_BLOB_ARRAY
from vfido.authenticator.model import (
    CTAP20_MODEL,
    FIDO_2_0,
    FIDO_2_1,
    FIDO_2_1_PRE,
    FIDO_2_3,
    U2F_V2,
    restrict_info,
)
from vfido.authenticator.persistent_token import encrypted_info_members
from vfido.authenticator.responses import (
    INFO_AUTHENTICATOR_CONFIG_COMMANDS,
    INFO_ENC_CRED_STORE_STATE,
    INFO_ENC_IDENTIFIER,
    INFO_MAX_PIN_LENGTH,
    INFO_PIN_COMPLEXITY_POLICY,
    INFO_PIN_COMPLEXITY_POLICY_URL,
    INFO_TRANSPORTS_FOR_RESET,
    INFO_UV_COUNT_SINCE_LAST_PIN_ENTRY,
    INFO_UV_MODALITY,
    GetInfoResponse,
)
from vfido.authenticator.state import Services
from vfido.keystore.credential_id import SEAL_OVERHEAD

#: Transports the key is reachable on (CTAPHID over USB/UHID; UDP emulates USB HID).
TRANSPORTS = ("usb",)

#: pinUvAuthProtocols in order of preference (0x06).
PIN_UV_AUTH_PROTOCOLS = (2, 1)

#: maxPINLength (CTAP 2.2, 0x1D): newPinEnc holds at most 63 bytes of UTF-8 (6.5.5.5).
MAX_PIN_LENGTH = 63


def _max_credential_id_length() -> int:
    """Upper bound of every credential ID this key issues (RSA keys are the largest)."""
    largest = SealedCredential(
        algorithm=RS256,
        private_key=bytes(256),
        cred_protect=3,
        discoverable=True,
        hmac_secret=True,
        u2f=True,
        cred_blob=bytes(MAX_CRED_BLOB_LENGTH),
    )
    return SEAL_OVERHEAD + len(largest.to_bytes())


MAX_CREDENTIAL_ID_LENGTH = _max_credential_id_length()


def versions(config: Config) -> tuple[str, ...]:
    # FIDO_2_1: clientPin with pinUvAuthToken, credMgmt, largeBlobs, authnrCfg.
    # FIDO_2_3: CTAP 2.2's persistent pinUvAuthTokens, thirdPartyPayment,
    # pinComplexityPolicy, getInfo members and hmac-secret-mc, and 2.3's getInfo members.
    # FIDO_2_1_PRE: credentialMgmtPreview.
    pre = (FIDO_2_1_PRE,) if config.ctap21_pre else ()
    return (U2F_V2, FIDO_2_0, *pre, FIDO_2_1, FIDO_2_3)


def extensions(config: Config) -> tuple[str, ...]:
    return SUPPORTED_EXTENSIONS


def attestation_formats(config: Config) -> tuple[str, ...]:
    """Formats makeCredential can return (CTAP 2.2 attestationFormats, 0x16), "none" left
    out: "Support for "none" attestation is implied and MUST be omitted", and the list
    "MUST NOT ... be empty if present", so a key that attests nothing (no enterprise
    attestation either, which is packed) leaves the member out (an empty tuple)."""
    if config.attestation == "none" and not config.enterprise_attestation:
        return ()
    return ("packed",)


def options(services: Services) -> dict[str, bool]:
    config, settings, pin = services.config, services.settings, services.client_pin
    result = {
        "rk": config.resident_keys,
        "up": True,
        "plat": False,
        # clientPin: supported; true once a PIN is set.
        "clientPin": pin.is_pin_set,
        "pinUvAuthToken": True,
        "credMgmt": True,
        "largeBlobs": True,
        "authnrCfg": True,
        "alwaysUv": settings.always_uv,
        # makeCredUvNotRqd: non-discoverable credentials need no UV even with a
        # PIN set; toggleAlwaysUv turns it off (section 6.11.2).
        "makeCredUvNotRqd": not settings.always_uv,
        "setMinPINLength": True,
        # CTAP 2.2: the persistent pinUvAuthToken (pcmr) reads credential management.
        "perCredMgmtRO": True,
    }
    if config.ctap21_pre:
        result["credentialMgmtPreview"] = True
        if config.fingerprint:
            result["userVerificationMgmtPreview"] = pin.has_uv
    if config.builtin_uv:
        # Supported; true once enabled (a fingerprint key: a finger enrolled).
        result["uv"] = pin.has_uv
        # A token from built-in UV may configure the key (without it, a key with built-in
        # UV and no PIN could never be configured); 6.5.5.7.3 step 4 refuses acfg without it.
        result["uvAcfg"] = True
    if config.fingerprint:
        result["bioEnroll"] = pin.has_uv
        result["uvBioEnroll"] = True  # the same for bio enrollment (be)
    if config.enterprise_attestation:
        result["ep"] = settings.enterprise_attestation
    return result


def remaining_discoverable_credentials(services: Services) -> int:
    if services.behaviours.current().store_full or not services.config.resident_keys:
        return 0
    return max(0, services.config.max_resident_credentials - services.store.count_credentials())


def ctap22_members(services: Services) -> dict[int, object]:
    """The getInfo members CTAP 2.2 and 2.3 added (section 6.4), each derived from its
    source."""
    config, store = services.config, services.store
    # encIdentifier / encCredStoreState: see authenticator.persistent_token.
    enc_identifier, enc_cred_store_state = encrypted_info_members(store)
    members: dict[int, object] = {
        INFO_ENC_IDENTIFIER: enc_identifier,
        # Reset is allowed on every transport the key has.
        INFO_TRANSPORTS_FOR_RESET: list(TRANSPORTS),
        INFO_PIN_COMPLEXITY_POLICY: services.client_pin.pin_complexity_policy,
        INFO_MAX_PIN_LENGTH: MAX_PIN_LENGTH,
        INFO_ENC_CRED_STORE_STATE: enc_cred_store_state,
        # 6.11.1, 6.11.2, 6.11.4: "authenticatorConfigCommands MUST contain" each supported
        # subcommand; the same list authenticatorConfig answers.
        INFO_AUTHENTICATOR_CONFIG_COMMANDS: list(
            supported_sub_commands(config.enterprise_attestation > 0)
        ),
    }
    if config.pin_complexity_policy_url is not None:
        members[INFO_PIN_COMPLEXITY_POLICY_URL] = config.pin_complexity_policy_url.encode()
    if config.builtin_uv:
        members[INFO_UV_COUNT_SINCE_LAST_PIN_ENTRY] = services.client_pin.uv_count_since_pin
    if config.fingerprint:
        members[INFO_UV_MODALITY] = UV_MODALITY_FINGERPRINT
    return members


def build_info(services: Services) -> GetInfoResponse:
    config, store, pin = services.config, services.store, services.client_pin
    behaviours = services.behaviours.current()
    reported_versions = versions(config)
    if not services.ctap1_enabled:  # alwaysUv: no CTAP1/U2F
        reported_versions = tuple(v for v in reported_versions if v != U2F_V2)
    reported_options = options(services)
    formats = attestation_formats(config)
    extra = ctap22_members(services)
    if behaviours.pin_blocked:
        reported_options["clientPin"] = True  # a PIN is "set" (and blocked)
    if behaviours.attestation == "none":
        formats = ()
    response = GetInfoResponse(
        versions=reported_versions,
        extensions=extensions(config),
        aaguid=store.identity().aaguid,
        options=reported_options,
        max_msg_size=config.max_msg_size,
        pin_uv_auth_protocols=PIN_UV_AUTH_PROTOCOLS,
        max_credential_count_in_list=config.max_credential_count_in_list,
        max_credential_id_length=MAX_CREDENTIAL_ID_LENGTH,
        transports=TRANSPORTS,
        algorithms=config.algorithms,
        max_serialized_large_blob_array=MAX_SERIALIZED_LARGE_BLOB_ARRAY,
        force_pin_change=pin.force_pin_change,
        min_pin_length=pin.min_pin_length,
        firmware_version=config.firmware_version,
        max_cred_blob_length=MAX_CRED_BLOB_LENGTH,
        max_rpids_for_set_min_pin_length=MAX_RPIDS_FOR_SET_MIN_PIN_LENGTH,
        remaining_discoverable_credentials=remaining_discoverable_credentials(services),
        attestation_formats=formats,
        extra=extra,
    )
    # A model class (vfido run --persona) reports only its own versions, options, members;
    # behaviour versions=FIDO_2_0 narrows that (or the full key) to a CTAP 2.0 key's.
    if config.model is not None:
        response = restrict_info(config.model, response)
    if behaviours.versions == FIDO_2_0:
        response = restrict_info(CTAP20_MODEL, response)
    return response
