"""authenticatorGetInfo (0x04), CTAP 2.1 section 6.4.

Derived from the Config and the keystore only. To add a feature (e.g. clientPin
and FIDO_2_1), extend :func:`versions` / :func:`options` / the response fields
from the feature's own state rather than writing values here by hand.
"""

from __future__ import annotations

from authenticator.config import Config
from authenticator.cose import RS256
from authenticator.credential_source import SealedCredential
from authenticator.responses import GetInfoResponse
from keystore.credential_id import SEAL_OVERHEAD
from keystore.store import KeyStore

#: Transports the key is reachable on (CTAPHID over USB/UHID; UDP emulates USB HID).
TRANSPORTS = ("usb",)

#: Largest credBlob a sealed credential may carry (reserved for the credBlob extension).
MAX_CRED_BLOB_LENGTH = 32


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
    # FIDO_2_1 requires clientPin / pinUvAuthToken support: added with that feature.
    return ("U2F_V2", "FIDO_2_0")


def extensions(config: Config) -> tuple[str, ...]:
    return ()


def options(config: Config, store: KeyStore) -> dict[str, bool]:
    # No "clientPin" and no "uv" key: this key has neither a PIN nor built-in UV yet.
    return {"rk": True, "up": True, "plat": False}


def build_info(config: Config, store: KeyStore) -> GetInfoResponse:
    return GetInfoResponse(
        versions=versions(config),
        extensions=extensions(config),
        aaguid=store.identity().aaguid,
        options=options(config, store),
        max_msg_size=config.max_msg_size,
        max_credential_count_in_list=config.max_credential_count_in_list,
        max_credential_id_length=MAX_CREDENTIAL_ID_LENGTH,
        transports=TRANSPORTS,
        algorithms=config.algorithms,
        firmware_version=config.firmware_version,
    )
