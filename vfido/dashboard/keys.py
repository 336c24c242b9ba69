"""Credential public keys for export: a COSE_Key (as the control socket gives it) to PEM."""

from __future__ import annotations

import base64
import contextlib
import importlib
from collections.abc import Mapping
from typing import Any


def cose_to_pem(cose_key: Mapping[int, Any]) -> bytes:
    """A COSE public key as a PEM SubjectPublicKeyInfo. Raises ValueError."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    kty = cose_key.get(1)
    public: Any
    if kty == 2:  # EC2
        curves: dict[int, ec.EllipticCurve] = {
            1: ec.SECP256R1(),
            2: ec.SECP384R1(),
            3: ec.SECP521R1(),
        }
        curve = curves.get(cose_key.get(-1))  # type: ignore[arg-type]
        if curve is None:
            raise ValueError("unknown elliptic curve")
        x, y = cose_key.get(-2), cose_key.get(-3)
        if not isinstance(x, bytes) or not isinstance(y, bytes):
            raise ValueError("malformed EC2 key")
        public = ec.EllipticCurvePublicKey.from_encoded_point(curve, b"\x04" + x + y)
    elif kty == 1 and cose_key.get(-1) == 6:  # OKP Ed25519
        x = cose_key.get(-2)
        if not isinstance(x, bytes):
            raise ValueError("malformed OKP key")
        public = ed25519.Ed25519PublicKey.from_public_bytes(x)
    elif kty == 3:  # RSA
        n, e = cose_key.get(-1), cose_key.get(-2)
        if not isinstance(n, bytes) or not isinstance(e, bytes):
            raise ValueError("malformed RSA key")
        public = rsa.RSAPublicNumbers(
            int.from_bytes(e, "big"), int.from_bytes(n, "big")
        ).public_key()
    elif kty == 7:  # AKP (ML-DSA)
        raw = cose_key.get(-1)
        if not isinstance(raw, bytes):
            raise ValueError("malformed AKP key")
        try:
            mldsa = importlib.import_module("cryptography.hazmat.primitives.asymmetric.mldsa")
        except ImportError:
            raise ValueError("ML-DSA keys need a newer cryptography") from None
        classes = {-48: "MLDSA44PublicKey", -49: "MLDSA65PublicKey"}
        name = classes.get(cose_key.get(3))  # type: ignore[arg-type]
        if name is None:
            raise ValueError("unknown ML-DSA algorithm")
        public = getattr(mldsa, name).from_public_bytes(raw)
    else:
        raise ValueError(f"unsupported COSE key type {kty!r}")
    pem: bytes = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem


def public_key_pem(value: Any) -> bytes:
    """The PEM of a public key as the control socket gives it: PEM text, or a COSE key
    (CBOR) in base64url / hex / a JSON map with integer-like keys. Raises ValueError."""
    import cbor2

    if isinstance(value, str) and value.lstrip().startswith("-----BEGIN"):
        return value.encode()
    if isinstance(value, dict):
        return cose_to_pem({int(k): _decode_bytes_field(v) for k, v in value.items()})
    if isinstance(value, str):
        raw = _decode_text_bytes(value)
        decoded = cbor2.loads(raw)
        if not isinstance(decoded, dict):
            raise ValueError("the public key is not a COSE map")
        return cose_to_pem(decoded)
    raise ValueError("no public key")


def _decode_text_bytes(text: str) -> bytes:
    with contextlib.suppress(ValueError):
        if len(text) % 2 == 0:
            return bytes.fromhex(text)
    padded = text + "=" * (-len(text) % 4)
    return base64.urlsafe_b64decode(padded.replace("+", "-").replace("/", "_"))


def _decode_bytes_field(value: Any) -> Any:
    if isinstance(value, str):
        return _decode_text_bytes(value)
    return value
