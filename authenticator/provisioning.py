"""Provisioning credentials from outside CTAP: import a credential with a given private key
(or a fresh one) so a test can pre-seed accounts on the key.

Used by the control socket's ``add-credential`` command. The credential is exactly what
authenticatorMakeCredential would have made: a credential ID sealed by this key (so only
this key can use it), and for a discoverable credential a keystore record. Private keys
come as PEM (PKCS#8 or traditional) or as a COSE_Key map with the private part ``d``
(EC2 P-256/P-384/P-521, OKP Ed25519); RSA keys must be 2048-bit with e = 65537 (what
credential IDs can carry).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from vfido.authenticator.authdata import (
    keystore_backup_eligible,
    new_credential_backed_up,
    rp_id_hash,
)
from vfido.authenticator.cose import EDDSA, ES256, ES384, ES512, RS256, CredentialKey
from vfido.authenticator.credential_source import (
    ImportedCredentialId,
    SealedCredential,
    decode_credential_id,
    encode_credential_id,
    imported_id_state_key,
)
from vfido.authenticator.requests import MAX_USER_ID_LENGTH
from vfido.keystore import entropy
from vfido.keystore.store import CredentialRecord, KeyStore

#: COSE_Key labels and values (RFC 9052/9053).
_KTY, _ALG, _CRV, _X, _D = 1, 3, -1, -2, -4
_KTY_OKP, _KTY_EC2 = 1, 2
_EC2_CURVES: dict[int, tuple[int, ec.EllipticCurve, int]] = {
    1: (ES256, ec.SECP256R1(), 32),
    2: (ES384, ec.SECP384R1(), 48),
    3: (ES512, ec.SECP521R1(), 66),
}
_CURVE_ALGS: dict[str, int] = {"secp256r1": ES256, "secp384r1": ES384, "secp521r1": ES512}
_CRV_ED25519 = 6

#: The longest credential ID a test may choose (CTAP's maxCredentialIdLength bound is
#: the platform's concern; WebAuthn allows up to 1023 bytes).
MAX_IMPORTED_ID = 1023
MAX_NAME = 64 * 4  # CTAP 2.1 truncates at 64 bytes; keep some room for what the RP sent
MAX_INITIAL_COUNTER = 0xFFFFFFFF


class ProvisioningError(ValueError):
    """A bad key or parameter, said in one line (never containing key material)."""


def _from_cryptography(key: Any) -> CredentialKey:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        alg = _CURVE_ALGS.get(key.curve.name)
        if alg is None:
            raise ProvisioningError(f"unsupported EC curve {key.curve.name}")
        return CredentialKey(alg, key)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return CredentialKey(EDDSA, key)
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size != 2048 or key.private_numbers().public_numbers.e != 65537:
            raise ProvisioningError("RSA keys must be 2048-bit with public exponent 65537")
        return CredentialKey(RS256, key)
    raise ProvisioningError("unsupported private key type (EC P-256/384/521, Ed25519, RSA)")


def key_from_pem(pem: str | bytes) -> CredentialKey:
    """A credential key from an unencrypted PEM private key. Raises ProvisioningError."""
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise ProvisioningError("not an unencrypted PEM private key") from None
    return _from_cryptography(key)


def key_from_pkcs8(der: bytes) -> CredentialKey:
    """A credential key from a PKCS#8 DER private key (WebDriver's ``privateKey``).
    Raises ProvisioningError."""
    try:
        key = serialization.load_der_private_key(der, password=None)
    except (ValueError, TypeError):
        raise ProvisioningError("privateKey is not an unencrypted PKCS#8 private key") from None
    return _from_cryptography(key)


def pkcs8_of(key: CredentialKey) -> bytes:
    """The PKCS#8 DER of a credential key (EC, Ed25519, RSA). Raises ProvisioningError."""
    private = key._key
    if not isinstance(
        private, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey
    ):
        raise ProvisioningError("this algorithm's keys have no PKCS#8 form here")
    der: bytes = private.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return der


def key_from_cose(cose_key: Mapping[Any, Any]) -> CredentialKey:
    """A credential key from a COSE_Key with its private part. Raises ProvisioningError."""
    kty, crv, d = cose_key.get(_KTY), cose_key.get(_CRV), cose_key.get(_D)
    if not isinstance(d, bytes):
        raise ProvisioningError("COSE key has no private part (label -4, d)")
    key: CredentialKey
    if kty == _KTY_EC2 and isinstance(crv, int) and crv in _EC2_CURVES:
        alg, curve, size = _EC2_CURVES[crv]
        if len(d) != size:
            raise ProvisioningError("COSE EC2 private key has the wrong length")
        try:
            key = CredentialKey(alg, ec.derive_private_key(int.from_bytes(d, "big"), curve))
        except ValueError:
            raise ProvisioningError("COSE EC2 private key is out of range") from None
    elif kty == _KTY_OKP and crv == _CRV_ED25519:
        if len(d) != 32:
            raise ProvisioningError("COSE Ed25519 private key must be 32 bytes")
        key = CredentialKey(EDDSA, ed25519.Ed25519PrivateKey.from_private_bytes(d))
    else:
        raise ProvisioningError("unsupported COSE key (EC2 P-256/384/521 or OKP Ed25519)")
    alg_label = cose_key.get(_ALG)
    if alg_label is not None and alg_label != key.algorithm:
        raise ProvisioningError(f"COSE key alg {alg_label} does not match its curve")
    x = cose_key.get(_X)
    if x is not None and x != key.cose_public_key().get(_X):
        raise ProvisioningError("COSE key: the public part does not match the private part")
    return key


@dataclass(frozen=True)
class ProvisionedCredential:
    """What :func:`add_credential` made."""

    credential_id: bytes
    algorithm: int
    key: CredentialKey = field(repr=False)
    discoverable: bool
    sign_count: int
    #: The ID of the discoverable credential this one replaced (same RP and user), if any.
    replaced: bytes | None = None

    def public_key_cose(self) -> dict[int, Any]:
        return dict(self.key.cose_public_key())

    def public_key_pem(self) -> str:
        public = self.key.public_key()
        pem: bytes = public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return pem.decode()


def _text(name: str, value: str | None) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value.encode()) > MAX_NAME:
        raise ProvisioningError(f"{name} must be a string of at most {MAX_NAME} bytes")
    return value


def is_rp_id(text: object) -> bool:
    """Whether ``text`` can be an RP ID: a domain of at most 253 bytes, printable, with no
    space, scheme, port or path (a URL or a host:port never equals the RP ID a request
    names). Not checked against the public suffix list."""
    return (
        isinstance(text, str)
        and 0 < len(text.encode()) <= 253
        and text.isprintable()
        and not any(c.isspace() or c in "/:" for c in text)
    )


def add_credential(
    store: KeyStore,
    key: CredentialKey,
    rp_id: str,
    *,
    now: float,
    discoverable: bool = True,
    user_id: bytes | None = None,
    user_name: str | None = None,
    user_display_name: str | None = None,
    rp_name: str | None = None,
    cred_protect: int = 1,
    sign_count: int = 0,
    max_resident_credentials: int | None = None,
    credential_id: bytes | None = None,
    backup_eligible: bool | None = None,
    backup_state: bool | None = None,
    default_backup_state: bool | None = None,
) -> ProvisionedCredential:
    """Make ``key`` a credential of this key for ``rp_id``. Raises ProvisioningError.

    A discoverable credential needs ``user_id`` (1-64 bytes) and replaces one for the same
    RP and user, as makeCredential does; a server-side one is only its credential ID (the
    user's names are then ignored, and ``user_id`` too unless ``credential_id`` is given:
    the key keeps it with that ID, and its assertions carry it). ``user_id`` has at most 64
    bytes. ``sign_count`` sets the credential's starting counter.
    ``credential_id``: the ID the credential is known by (WebDriver's Add Credential);
    else the key seals one as makeCredential does. ``backup_eligible``/``backup_state``:
    its BE/BS flags (None: the keystore's, and BS as makeCredential gives a new one on a key
    whose ``Config.default_backup_state`` is ``default_backup_state``); BS needs BE. A
    server-side credential only keeps its own flags with its own ``credential_id``.
    """
    if not is_rp_id(rp_id):
        raise ProvisioningError("rp_id must be a domain name (no scheme, port or path)")
    if cred_protect not in (1, 2, 3) or isinstance(cred_protect, bool):
        raise ProvisioningError("cred_protect must be 1, 2 or 3")
    if not isinstance(sign_count, int) or not 0 <= sign_count <= MAX_INITIAL_COUNTER:
        raise ProvisioningError("sign_count must be an integer between 0 and 2^32-1")
    user_name = _text("user_name", user_name)
    user_display_name = _text("user_display_name", user_display_name)
    rp_name = _text("rp_name", rp_name)
    if discoverable and (user_id is None or not 1 <= len(user_id) <= MAX_USER_ID_LENGTH):
        raise ProvisioningError("a discoverable credential needs a user_id of 1-64 bytes")
    if user_id is not None and len(user_id) > MAX_USER_ID_LENGTH:
        raise ProvisioningError("a user_id has at most 64 bytes")
    if credential_id is not None and not 1 <= len(credential_id) <= MAX_IMPORTED_ID:
        raise ProvisioningError(f"a credential ID has 1-{MAX_IMPORTED_ID} bytes")
    eligible = keystore_backup_eligible(store) if backup_eligible is None else backup_eligible
    if backup_state is None:
        backed_up = new_credential_backed_up(store, default_backup_state) and eligible
    else:
        backed_up = bool(backup_state)
    if backed_up and not eligible:
        raise ProvisioningError("backup state needs backup eligibility")
    id_hash = rp_id_hash(rp_id)
    identity = store.identity()
    private = key.private_bytes()
    if credential_id is not None and decode_credential_id(
        identity.credential_key, id_hash, credential_id
    ):
        raise ProvisioningError("that credential ID is already one of this key's")
    sealed_id = encode_credential_id(
        identity.credential_key,
        id_hash,
        SealedCredential(
            algorithm=key.algorithm,
            private_key=private,
            cred_protect=cred_protect,
            discoverable=discoverable,
        ),
    )
    if credential_id is None:
        credential_id = sealed_id
    else:
        imported = ImportedCredentialId(
            sealed_id,
            eligible,
            backed_up,
            credential_id,
            rp_id,
            user_handle=None if discoverable else (user_id or None),  # a record keeps its own
        )
        store.put_state({imported_id_state_key(id_hash, credential_id): imported.to_bytes()})
    replaced: bytes | None = None  # a discoverable credential for the same RP and user
    if discoverable:
        assert user_id is not None
        replaced = next(
            (r.credential_id for r in store.find_credentials(id_hash) if r.user_id == user_id),
            None,
        )
        if (
            max_resident_credentials is not None
            and replaced is None
            and store.count_credentials() >= max_resident_credentials
        ):
            raise ProvisioningError("the key holds its maximum of discoverable credentials")
        store.put_credential(
            CredentialRecord(
                credential_id=credential_id,
                rp_id=rp_id,
                rp_id_hash=id_hash,
                user_id=user_id,
                algorithm=key.algorithm,
                private_key=private,
                created=int(now),
                rp_name=rp_name,
                user_name=user_name,
                user_display_name=user_display_name,
                cred_protect=cred_protect,
                # As makeCredential would: largeBlobKey for discoverable credentials.
                large_blob_key=entropy.random_bytes(32),
                backup_eligible=eligible,
                backup_state=backed_up,
            )
        )
    if sign_count:
        store.increment_counter(credential_id, sign_count)
    return ProvisionedCredential(
        credential_id=credential_id,
        algorithm=key.algorithm,
        key=key,
        discoverable=discoverable,
        sign_count=sign_count,
        replaced=replaced,
    )


def forget_imported_id(store: KeyStore, rp_id: str, credential_id: bytes) -> None:
    """Drop what the key keeps for a credential ID chosen outside it (if anything)."""
    state_key = imported_id_state_key(rp_id_hash(rp_id), credential_id)
    if store.get_state(state_key) is not None:
        store.put_state({state_key: None})
