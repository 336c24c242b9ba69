"""authenticatorGetInfo (0x04), CTAP 2.1 section 6.4.

Derived from the Config, the keystore and the persisted PIN / authenticatorConfig
state; nothing is written by hand. bioEnroll is absent (no enrollment command).
"""

from __future__ import annotations

from authenticator.behaviours import FIDO_2_0
from authenticator.config import Config
from authenticator.config_command import MAX_RPIDS_FOR_SET_MIN_PIN_LENGTH
from authenticator.cose import RS256
from authenticator.credential_source import SealedCredential
from authenticator.extensions import MAX_CRED_BLOB_LENGTH
from authenticator.extensions import SUPPORTED as SUPPORTED_EXTENSIONS
from authenticator.large_blobs import MAX_SERIALIZED_LARGE_BLOB_ARRAY
from authenticator.responses import GetInfoResponse
from authenticator.state import Services
from keystore.credential_id import SEAL_OVERHEAD

#: Transports the key is reachable on (CTAPHID over USB/UHID; UDP emulates USB HID).
TRANSPORTS = ("usb",)

#: pinUvAuthProtocols in order of preference (0x06).
PIN_UV_AUTH_PROTOCOLS = (2, 1)


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
    return ("U2F_V2", "FIDO_2_0", "FIDO_2_1")


def extensions(config: Config) -> tuple[str, ...]:
    return SUPPORTED_EXTENSIONS


def attestation_formats(config: Config) -> tuple[str, ...]:
    """Formats makeCredential can return (CTAP 2.2 attestationFormats, 0x16), default first."""
    if config.attestation == "none":
        return ("none",)
    return ("packed", "none")


def options(services: Services) -> dict[str, bool]:
    config, settings, pin = services.config, services.settings, services.client_pin
    result = {
        "rk": True,
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
    }
    if config.builtin_uv:
        result["uv"] = True
    if config.enterprise_attestation:
        result["ep"] = settings.enterprise_attestation
    return result


def remaining_discoverable_credentials(services: Services) -> int:
    if services.behaviours.current().store_full:
        return 0
    return max(0, services.config.max_resident_credentials - services.store.count_credentials())


#: Options a CTAP 2.0 authenticator does not know (dropped by behaviour versions=FIDO_2_0).
CTAP21_OPTIONS = frozenset(
    {
        "pinUvAuthToken",
        "credMgmt",
        "largeBlobs",
        "authnrCfg",
        "alwaysUv",
        "makeCredUvNotRqd",
        "setMinPINLength",
        "ep",
    }
)


def build_info(services: Services) -> GetInfoResponse:
    config, store, pin = services.config, services.store, services.client_pin
    behaviours = services.behaviours.current()
    reported_versions = versions(config)
    if not services.ctap1_enabled:  # alwaysUv without built-in UV: no CTAP1/U2F
        reported_versions = tuple(v for v in reported_versions if v != "U2F_V2")
    reported_options = options(services)
    protocols: tuple[int, ...] = PIN_UV_AUTH_PROTOCOLS
    formats = attestation_formats(config)
    if behaviours.versions == FIDO_2_0:
        # Behaviour versions=FIDO_2_0: a CTAP 2.0 key (PIN protocol 1, no 2.1 options).
        reported_versions = (FIDO_2_0,)
        reported_options = {k: v for k, v in reported_options.items() if k not in CTAP21_OPTIONS}
        protocols = (1,)
    if behaviours.pin_blocked:
        reported_options["clientPin"] = True  # a PIN is "set" (and blocked)
    if behaviours.attestation == "none":
        formats = ("none",)
    return GetInfoResponse(
        versions=reported_versions,
        extensions=extensions(config),
        aaguid=store.identity().aaguid,
        options=reported_options,
        max_msg_size=config.max_msg_size,
        pin_uv_auth_protocols=protocols,
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
    )
