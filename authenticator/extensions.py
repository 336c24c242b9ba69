"""CTAP 2.1/2.2 extensions (section 12): parsing of inputs and computing of outputs.

makeCredential: credProtect, hmac-secret, hmac-secret-mc, credBlob,
largeBlobKey, minPinLength, pinComplexityPolicy, thirdPartyPayment. getAssertion:
hmac-secret, credBlob, largeBlobKey, thirdPartyPayment. Unknown extensions are
ignored (section 12). The WebAuthn signing extension previewSign has its own module,
sign_extension.py; getInfo lists it with these (SUPPORTED).

thirdPartyPayment (CTAP 2.2, for Secure Payment Confirmation): a credential made
with it is marked as a payment credential for good (a flag sealed in its ID, as
credProtect is); makeCredential answers ``thirdPartyPayment: true``, getAssertion
asked for it answers whether the credential is one, and credential management lists
it (0x0C). pinComplexityPolicy (CTAP 2.2) answers, for an RP allowed to see the
minimum PIN length (setMinPINLength's RP IDs), whether a PIN complexity policy is on.

hmac-secret's two CredRandoms are derived, not stored: HMAC-SHA-256 of the
credential ID under the device's credential key, one for each UV state. A
reset replaces the credential key, so they die with every credential.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from vfido.authenticator import cbor
from vfido.authenticator.client_pin import ClientPin
from vfido.authenticator.errors import CtapError, CtapStatus
from vfido.authenticator.pin_protocol import PinProtocol
from vfido.authenticator.sign_extension import PREVIEW_SIGN

CRED_PROTECT = "credProtect"
HMAC_SECRET = "hmac-secret"
HMAC_SECRET_MC = "hmac-secret-mc"
CRED_BLOB = "credBlob"
LARGE_BLOB_KEY = "largeBlobKey"
MIN_PIN_LENGTH = "minPinLength"
PIN_COMPLEXITY_POLICY = "pinComplexityPolicy"
THIRD_PARTY_PAYMENT = "thirdPartyPayment"

#: What getInfo lists, in this order.
SUPPORTED = (
    CRED_PROTECT,
    HMAC_SECRET,
    HMAC_SECRET_MC,
    CRED_BLOB,
    LARGE_BLOB_KEY,
    MIN_PIN_LENGTH,
    PIN_COMPLEXITY_POLICY,
    THIRD_PARTY_PAYMENT,
    PREVIEW_SIGN,  # the WebAuthn signing extension: sign_extension.py
)
#: maxCredBlobLength (getInfo 0x0F).
MAX_CRED_BLOB_LENGTH = 32


def _type_error(name: str) -> CtapError:
    return CtapError(CtapStatus.CBOR_UNEXPECTED_TYPE, f"extension {name}")


@dataclass(frozen=True)
class HmacSecretInput:
    """hmac-secret getAssertion input (12.5): keyAgreement, saltEnc, saltAuth, protocol."""

    key_agreement: dict[Any, Any]
    salt_enc: bytes = field(repr=False)
    salt_auth: bytes = field(repr=False)
    protocol: int = 1

    @classmethod
    def parse(cls, value: Any, name: str) -> HmacSecretInput:
        if not isinstance(value, dict):
            raise _type_error(name)
        ka, enc, auth, protocol = value.get(1), value.get(2), value.get(3), value.get(4, 1)
        if ka is None or enc is None or auth is None:
            raise CtapError(CtapStatus.MISSING_PARAMETER, f"extension {name}")
        if (
            not isinstance(ka, dict)
            or not isinstance(enc, bytes)
            or not isinstance(auth, bytes)
            or not cbor.is_unsigned(protocol)
        ):
            raise _type_error(name)
        return cls(ka, enc, auth, protocol)


@dataclass(frozen=True)
class MakeCredentialExtensions:
    cred_protect: int | None = None
    hmac_secret: bool = False  # "hmac-secret": true, answered with "hmac-secret": true
    hmac_secret_mc: HmacSecretInput | None = None
    cred_blob: bytes | None = field(default=None, repr=False)
    large_blob_key: bool = False
    min_pin_length: bool = False
    pin_complexity_policy: bool = False
    third_party_payment: bool = False

    @property
    def with_hmac_secret(self) -> bool:
        """Whether the credential gets an hmac secret (hmac-secret-mc comes only with it:
        :meth:`parse`)."""
        return self.hmac_secret

    @classmethod
    def parse(cls, m: Mapping[Any, Any] | None) -> MakeCredentialExtensions:
        if not m:
            return cls()
        cred_protect = m.get(CRED_PROTECT)
        if cred_protect is not None and not cbor.is_unsigned(cred_protect):
            raise _type_error(CRED_PROTECT)
        if cred_protect is not None and cred_protect not in (1, 2, 3):
            raise CtapError(CtapStatus.INVALID_PARAMETER, "credProtect level")
        flags = {}
        for name in (
            HMAC_SECRET,
            LARGE_BLOB_KEY,
            MIN_PIN_LENGTH,
            PIN_COMPLEXITY_POLICY,
            THIRD_PARTY_PAYMENT,
        ):
            value = m.get(name)
            if value is not None and not isinstance(value, bool):
                raise _type_error(name)
            flags[name] = bool(value)
        if m.get(LARGE_BLOB_KEY) is False:
            raise CtapError(CtapStatus.INVALID_OPTION, "largeBlobKey false")
        blob = m.get(CRED_BLOB)
        if blob is not None and not isinstance(blob, bytes):
            raise _type_error(CRED_BLOB)
        mc = m.get(HMAC_SECRET_MC)
        # CTAP 2.2 section 12.8: "the hmac-secret extension MUST also be present with the
        # value of hmac-secret set to true"; authenticators "MUST return
        # CTAP2_ERR_MISSING_PARAMETER when they receive this extension without the
        # hmac-secret extension" (false counts as without: no secret was asked for).
        if mc is not None and not flags[HMAC_SECRET]:
            raise CtapError(CtapStatus.MISSING_PARAMETER, "hmac-secret-mc without hmac-secret")
        return cls(
            cred_protect=cred_protect,
            hmac_secret=flags[HMAC_SECRET],
            hmac_secret_mc=HmacSecretInput.parse(mc, HMAC_SECRET_MC) if mc is not None else None,
            cred_blob=blob,
            large_blob_key=flags[LARGE_BLOB_KEY],
            min_pin_length=flags[MIN_PIN_LENGTH],
            pin_complexity_policy=flags[PIN_COMPLEXITY_POLICY],
            third_party_payment=flags[THIRD_PARTY_PAYMENT],
        )


@dataclass(frozen=True)
class GetAssertionExtensions:
    hmac_secret: HmacSecretInput | None = None
    cred_blob: bool = False
    large_blob_key: bool = False
    third_party_payment: bool = False

    @classmethod
    def parse(cls, m: Mapping[Any, Any] | None) -> GetAssertionExtensions:
        if not m:
            return cls()
        hs = m.get(HMAC_SECRET)
        for name in (CRED_BLOB, LARGE_BLOB_KEY, THIRD_PARTY_PAYMENT):
            value = m.get(name)
            if value is not None and not isinstance(value, bool):
                raise _type_error(name)
        if m.get(LARGE_BLOB_KEY) is False:
            raise CtapError(CtapStatus.INVALID_OPTION, "largeBlobKey false")
        return cls(
            hmac_secret=HmacSecretInput.parse(hs, HMAC_SECRET) if hs is not None else None,
            cred_blob=bool(m.get(CRED_BLOB)),
            large_blob_key=bool(m.get(LARGE_BLOB_KEY)),
            third_party_payment=bool(m.get(THIRD_PARTY_PAYMENT)),
        )


def cred_random(credential_key: bytes, credential_id: bytes, uv: bool) -> bytes:
    """CredRandomWithUV / CredRandomWithoutUV for a credential (32 bytes)."""
    label = b"vfido hmac-secret with uv\x00" if uv else b"vfido hmac-secret without uv\x00"
    return hmac.new(credential_key, label + credential_id, hashlib.sha256).digest()


@dataclass(frozen=True)
class OpenedHmacSecret:
    """An hmac-secret input checked and opened (:func:`open_hmac_secret`)."""

    protocol: PinProtocol
    shared: bytes = field(repr=False)
    salts: bytes = field(repr=False)


def open_hmac_secret(client_pin: ClientPin, request: HmacSecretInput) -> OpenedHmacSecret:
    """The hmac-secret input checked and opened, once per request: a getAssertion opens it
    whatever credential answers (whether or not it has a secret), so a bad input is
    refused there and not in the middle of the getNextAssertion calls after it."""
    protocol = client_pin.protocol(request.protocol)
    shared = protocol.decapsulate(request.key_agreement)
    if not protocol.verify(shared, request.salt_enc, request.salt_auth):
        raise CtapError(CtapStatus.PIN_AUTH_INVALID, "saltAuth")
    # "If the decryption fails, or if the result is not 32 or 64 bytes long, return
    # CTAP1_ERR_INVALID_PARAMETER." (CTAP 2.1 section 12.5)
    salts = protocol.decrypt(shared, request.salt_enc)
    if len(salts) not in (32, 64):
        raise CtapError(CtapStatus.INVALID_PARAMETER, "salts")
    return OpenedHmacSecret(protocol, shared, salts)


def hmac_secret_output(
    opened: OpenedHmacSecret, credential_key: bytes, credential_id: bytes, uv: bool
) -> bytes:
    """The encrypted hmac-secret output of one credential (12.5 getAssertion steps)."""
    key = cred_random(credential_key, credential_id, uv)
    salts = opened.salts
    output = b"".join(
        hmac.new(key, salts[i : i + 32], hashlib.sha256).digest() for i in range(0, len(salts), 32)
    )
    return opened.protocol.encrypt(opened.shared, output)
