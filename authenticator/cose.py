"""Credential key pairs: generation, compact private serialization, COSE public keys, signing.

The public side reuses python-fido2's COSE key classes (``fido2.cose``) so the
encoding is exactly what relying parties parse.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from fido2 import cose

ES256 = -7
EDDSA = -8
ES384 = -35
ES512 = -36
RS256 = -257

#: Supported algorithms, in the order getInfo lists them.
SUPPORTED_ALGORITHMS: tuple[int, ...] = (ES256, EDDSA, ES384, ES512, RS256)

_EC_CURVES: dict[int, tuple[ec.EllipticCurve, hashes.HashAlgorithm, int]] = {
    ES256: (ec.SECP256R1(), hashes.SHA256(), 32),
    ES384: (ec.SECP384R1(), hashes.SHA384(), 48),
    ES512: (ec.SECP521R1(), hashes.SHA512(), 66),
}
#: Signature algorithm objects, built once (constructing one per signature showed in profiles).
_ECDSA: dict[int, ec.ECDSA] = {alg: ec.ECDSA(h) for alg, (_, h, _) in _EC_CURVES.items()}
_COSE_CLASSES: dict[int, Any] = {
    ES256: cose.ES256,
    ES384: cose.ES384,
    ES512: cose.ES512,
    EDDSA: cose.EdDSA,
    RS256: cose.RS256,
}
_RSA_BITS = 2048
_RSA_E = 65537

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey


class UnsupportedAlgorithm(ValueError):
    pass


#: How many loaded credential keys :meth:`CredentialKey.from_private_bytes` keeps.
KEY_CACHE_SIZE = 256
_KEY_CACHE: OrderedDict[tuple[int, bytes], CredentialKey] = OrderedDict()
_KEY_CACHE_LOCK = threading.Lock()


def clear_key_cache() -> None:
    """Forget every cached key (authenticatorReset: the old keys are dead)."""
    with _KEY_CACHE_LOCK:
        _KEY_CACHE.clear()


@dataclass(frozen=True)
class CredentialKey:
    """A credential's private key and its COSE algorithm identifier."""

    algorithm: int
    _key: PrivateKey = field(repr=False)

    @classmethod
    def generate(cls, algorithm: int) -> CredentialKey:
        if algorithm in _EC_CURVES:
            return cls(algorithm, ec.generate_private_key(_EC_CURVES[algorithm][0]))
        if algorithm == EDDSA:
            return cls(algorithm, ed25519.Ed25519PrivateKey.generate())
        if algorithm == RS256:
            return cls(algorithm, rsa.generate_private_key(_RSA_E, _RSA_BITS))
        raise UnsupportedAlgorithm(algorithm)

    def private_bytes(self) -> bytes:
        """Compact private serialization (fits in a credential ID).

        EC: the big-endian scalar; Ed25519: the 32-byte seed; RSA: p || q.
        """
        key = self._key
        if isinstance(key, ec.EllipticCurvePrivateKey):
            size = _EC_CURVES[self.algorithm][2]
            return key.private_numbers().private_value.to_bytes(size, "big")
        if isinstance(key, ed25519.Ed25519PrivateKey):
            from cryptography.hazmat.primitives import serialization as s

            return key.private_bytes(s.Encoding.Raw, s.PrivateFormat.Raw, s.NoEncryption())
        numbers = key.private_numbers()
        half = key.key_size // 16
        return numbers.p.to_bytes(half, "big") + numbers.q.to_bytes(half, "big")

    @classmethod
    def from_private_bytes(cls, algorithm: int, data: bytes) -> CredentialKey:
        """Inverse of :meth:`private_bytes`. Raises ValueError on malformed input.

        Loading a key is costly (an EC scalar multiplication for the public point, a
        modular inverse for RSA), so recently loaded keys are kept in a small
        per-process cache (see :func:`clear_key_cache`).
        """
        key = (algorithm, bytes(data))
        with _KEY_CACHE_LOCK:
            cached = _KEY_CACHE.get(key)
            if cached is not None:
                _KEY_CACHE.move_to_end(key)
                return cached
        loaded = cls._load(algorithm, key[1])
        with _KEY_CACHE_LOCK:
            _KEY_CACHE[key] = loaded
            while len(_KEY_CACHE) > KEY_CACHE_SIZE:
                _KEY_CACHE.popitem(last=False)
        return loaded

    @classmethod
    def _load(cls, algorithm: int, data: bytes) -> CredentialKey:
        if algorithm in _EC_CURVES:
            curve, _, size = _EC_CURVES[algorithm]
            if len(data) != size:
                raise ValueError("bad EC private key length")
            return cls(algorithm, ec.derive_private_key(int.from_bytes(data, "big"), curve))
        if algorithm == EDDSA:
            return cls(algorithm, ed25519.Ed25519PrivateKey.from_private_bytes(data))
        if algorithm == RS256:
            if len(data) != _RSA_BITS // 8:
                raise ValueError("bad RSA private key length")
            half = len(data) // 2
            p = int.from_bytes(data[:half], "big")
            q = int.from_bytes(data[half:], "big")
            n = p * q
            d = pow(_RSA_E, -1, (p - 1) * (q - 1))
            numbers = rsa.RSAPrivateNumbers(
                p=p,
                q=q,
                d=d,
                dmp1=rsa.rsa_crt_dmp1(d, p),
                dmq1=rsa.rsa_crt_dmq1(d, q),
                iqmp=rsa.rsa_crt_iqmp(p, q),
                public_numbers=rsa.RSAPublicNumbers(_RSA_E, n),
            )
            # The primes come from an ID we sealed ourselves (authenticated), so the
            # expensive consistency check of the key adds nothing.
            return cls(algorithm, numbers.private_key(unsafe_skip_rsa_key_validation=True))
        raise UnsupportedAlgorithm(algorithm)

    def cose_public_key(self) -> cose.CoseKey:
        """The COSE_Key map (integer keys) of the public key."""
        public = self._key.public_key()
        key_class: Any = _COSE_CLASSES[self.algorithm]
        result: cose.CoseKey = key_class.from_cryptography_key(public)
        return result

    def public_key(self) -> Any:
        """The ``cryptography`` public key object."""
        return self._key.public_key()

    def sign(self, data: bytes) -> bytes:
        """Sign as WebAuthn expects: DER ECDSA, raw Ed25519, PKCS#1 v1.5 RSA."""
        key = self._key
        if isinstance(key, ec.EllipticCurvePrivateKey):
            return key.sign(data, _ECDSA[self.algorithm])
        if isinstance(key, ed25519.Ed25519PrivateKey):
            return key.sign(data)
        return key.sign(data, padding.PKCS1v15(), hashes.SHA256())

    def __repr__(self) -> str:
        return f"CredentialKey(algorithm={self.algorithm})"
