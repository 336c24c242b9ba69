"""Credential key pairs: generation, compact private serialization, COSE public keys, signing.

The public side reuses python-fido2's COSE key classes (``fido2.cose``) so the
encoding is exactly what relying parties parse.

ML-DSA-44 (COSE -48), ML-DSA-65 (COSE -49) and ML-DSA-87 (COSE -50) are post-quantum signature
algorithms (FIPS 204; COSE: draft-ietf-cose-dilithium). They need
``cryptography`` >= 47 on an OpenSSL that provides ML-DSA (>= 3.5); whether this
process has them is detected once, on first use (:func:`mldsa_unavailable_reason`), not at
import: the self-test costs start-up time to every process that never uses ML-DSA.
Their COSE public key is ``{1: 7 (kty AKP), 3: alg, -1: pub}`` with the raw
FIPS 204 public key; the private key kept in a credential ID is the 32-byte
seed ξ, and signatures are pure ML-DSA with an empty context, over
``authData || clientDataHash`` like every other WebAuthn signature.
"""

from __future__ import annotations

import functools
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import cryptography
from cryptography.exceptions import InvalidSignature
from cryptography.exceptions import UnsupportedAlgorithm as _CryptoUnsupported
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from fido2 import cose

from vfido.authenticator.rsa_numbers import rsa_private_key_from_primes
from vfido.keystore import entropy

ES256 = -7
EDDSA = -8
ES384 = -35
ES512 = -36
PS256 = -37
ES256K = -47
RS256 = -257
MLDSA44 = -48
MLDSA65 = -49
MLDSA87 = -50
# Fully-specified identifiers (RFC 9864): one curve per identifier. Each is the same
# signature as the polymorphic algorithm it names a case of (ESP256 is ES256 on P-256,
# Ed25519 is EdDSA on Ed25519...); only the COSE "alg" of the key differs.
ESP256 = -9
ESP384 = -51
ESP512 = -52
ED25519 = -19

#: COSE key type "AKP" (algorithm key pair) of ML-DSA public keys.
KTY_AKP = 7
#: COSE key type EC2 and its curve identifiers (RFC 9053 section 7.1; secp256k1: RFC 8812).
KTY_EC2 = 2
_EC2_CURVE_IDS = {"secp256r1": 1, "secp384r1": 2, "secp521r1": 3, "secp256k1": 8}

#: Names of the algorithms, for people (logs, ``vfido info``, the dashboard).
ALGORITHM_NAMES: dict[int, str] = {
    ES256: "ES256",
    EDDSA: "EdDSA",
    ES384: "ES384",
    ES512: "ES512",
    PS256: "PS256",
    RS256: "RS256",
    ES256K: "ES256K",
    ESP256: "ESP256",
    ESP384: "ESP384",
    ESP512: "ESP512",
    ED25519: "Ed25519",
    MLDSA44: "ML-DSA-44",
    MLDSA65: "ML-DSA-65",
    MLDSA87: "ML-DSA-87",
}

#: The classical algorithms, always available (all of them in the COSE algorithm enum of
#: Firefox's authenticator-rs, which rejects a getInfo naming any other: see config.py).
CLASSICAL_ALGORITHMS: tuple[int, ...] = (ES256, EDDSA, ES384, ES512, PS256, RS256, ES256K)
#: The fully-specified identifiers, always available but opt-in (Config
#: ``fully_specified_algorithms``): authenticator-rs does not know them yet.
FULLY_SPECIFIED_ALGORITHMS: tuple[int, ...] = (ESP256, ED25519, ESP384, ESP512)
#: The post-quantum ones, available when ``cryptography``/OpenSSL provide ML-DSA.
MLDSA_ALGORITHMS: tuple[int, ...] = (MLDSA44, MLDSA65, MLDSA87)
#: Every algorithm this code implements, in getInfo order (most preferred first:
#: CTAP 2.1 section 6.4 orders "algorithms" by the authenticator's preference; ML-DSA
#: comes last as its keys and signatures are far larger and slower. The RP's
#: pubKeyCredParams order is what chooses a credential's algorithm).
ALL_ALGORITHMS: tuple[int, ...] = (
    CLASSICAL_ALGORITHMS + FULLY_SPECIFIED_ALGORITHMS + MLDSA_ALGORITHMS
)

#: Sizes in bytes of ML-DSA (FIPS 204 table 2): (public key, signature).
MLDSA_SIZES: dict[int, tuple[int, int]] = {
    MLDSA44: (1312, 2420),
    MLDSA65: (1952, 3309),
    MLDSA87: (2592, 4627),
}
#: Length of the ML-DSA private seed (xi) kept in credential IDs.
MLDSA_SEED_SIZE = 32


def _detect_mldsa() -> tuple[Any, str | None]:
    """``(mldsa module, None)`` if ML-DSA works here, else ``(None, reason)``.

    Tries a key generation, a signature and its verification for both parameter
    sets, so a backend that imports but cannot compute is caught too.
    """
    try:
        from cryptography.hazmat.primitives.asymmetric import mldsa
    except ImportError:
        return None, (
            f"cryptography {cryptography.__version__} has no ML-DSA "
            "(it needs cryptography >= 47 built on OpenSSL >= 3.5)"
        )
    try:
        for private_class in (
            mldsa.MLDSA44PrivateKey,
            mldsa.MLDSA65PrivateKey,
            mldsa.MLDSA87PrivateKey,
        ):
            probe = private_class.generate()
            probe.public_key().verify(probe.sign(b"vfido self-test"), b"vfido self-test")
    except AttributeError:  # an older cryptography: ML-DSA-44/65 without -87
        return None, f"cryptography {cryptography.__version__} lacks ML-DSA-87 (needs >= 47)"
    except _CryptoUnsupported:
        return None, f"the OpenSSL in use ({_openssl_version()}) provides no ML-DSA (needs >= 3.5)"
    except (InvalidSignature, ValueError) as exc:  # pragma: no cover - a broken backend
        return None, f"ML-DSA self-test failed ({type(exc).__name__})"
    return mldsa, None


def _openssl_version() -> str:
    try:
        from cryptography.hazmat.backends.openssl.backend import backend

        return str(backend.openssl_version_text())
    except Exception:  # pragma: no cover - version text is informational only
        return "unknown version"


_UNKNOWN: Any = object()
#: The ``mldsa`` module once :func:`_mldsa` ran its self-test (None: unavailable, why in
#: ``_MLDSA_REASON``); ``_UNKNOWN`` until then. Tests set it to None to take ML-DSA away.
_MLDSA: Any = _UNKNOWN
_MLDSA_REASON: str | None = None
_MLDSA_LOCK = threading.Lock()


def _mldsa() -> Any:
    """The ``mldsa`` module if ML-DSA works here, else None: self-tested on first call."""
    global _MLDSA, _MLDSA_REASON
    if _MLDSA is _UNKNOWN:
        with _MLDSA_LOCK:
            if _MLDSA is _UNKNOWN:
                module, _MLDSA_REASON = _detect_mldsa()
                _MLDSA = module
    return _MLDSA


def mldsa_unavailable_reason() -> str | None:
    """Why this process cannot make ML-DSA credentials, or None if it can."""
    _mldsa()
    return _MLDSA_REASON


def can_sign(algorithm: int) -> bool:
    """Whether this process can sign with ``algorithm`` (ML-DSA needs a runtime with it:
    a keystore can hold ML-DSA credentials made where it had one)."""
    if algorithm in MLDSA_ALGORITHMS:
        return _mldsa() is not None
    return algorithm in CLASSICAL_ALGORITHMS or algorithm in FULLY_SPECIFIED_ALGORITHMS


def supported_algorithms() -> tuple[int, ...]:
    """Algorithms this process can actually use (ML-DSA only where the runtime has it), in
    the order getInfo lists them."""
    return tuple(a for a in ALL_ALGORITHMS if can_sign(a))


_EC_CURVES: dict[int, tuple[ec.EllipticCurve, hashes.HashAlgorithm, int]] = {
    ES256: (ec.SECP256R1(), hashes.SHA256(), 32),
    ES384: (ec.SECP384R1(), hashes.SHA384(), 48),
    ES512: (ec.SECP521R1(), hashes.SHA512(), 66),
    ES256K: (ec.SECP256K1(), hashes.SHA256(), 32),
    ESP256: (ec.SECP256R1(), hashes.SHA256(), 32),
    ESP384: (ec.SECP384R1(), hashes.SHA384(), 48),
    ESP512: (ec.SECP521R1(), hashes.SHA512(), 66),
}
#: RSA algorithms and their signature padding (RSASSA-PKCS1-v1_5; RSASSA-PSS with MGF1
#: and a salt as long as the hash, RFC 8230 section 2).
_RSA_PADDING: dict[int, padding.AsymmetricPadding] = {
    RS256: padding.PKCS1v15(),
    PS256: padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32),
}
_EDDSA_ALGORITHMS = (EDDSA, ED25519)
#: Signature algorithm objects, built once (constructing one per signature showed in profiles).
_ECDSA: dict[int, ec.ECDSA] = {alg: ec.ECDSA(h) for alg, (_, h, _) in _EC_CURVES.items()}
_COSE_CLASSES: dict[int, Any] = {
    ES256: cose.ES256,
    ES384: cose.ES384,
    ES512: cose.ES512,
    EDDSA: cose.EdDSA,
    RS256: cose.RS256,
    PS256: cose.PS256,
    ES256K: cose.ES256K,
    ESP256: cose.ESP256,
    ESP384: cose.ESP384,
    ESP512: cose.ESP512,
    ED25519: cose.Ed25519,
}
_RSA_BITS = 2048
_RSA_E = 65537


class MldsaPrivateKey(Protocol):
    """What vfido uses of ``cryptography``'s ML-DSA private keys."""

    def sign(self, data: bytes) -> bytes: ...

    def public_key(self) -> Any: ...

    def private_bytes_raw(self) -> bytes: ...


PrivateKey = (
    ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey | MldsaPrivateKey
)


class UnsupportedAlgorithm(ValueError):
    """An algorithm this code does not implement, or ML-DSA where the runtime lacks it."""


def _mldsa_class(algorithm: int) -> Any:
    mldsa = _mldsa()
    if mldsa is None:
        raise UnsupportedAlgorithm(f"{ALGORITHM_NAMES[algorithm]}: {_MLDSA_REASON}")
    classes = {
        MLDSA44: mldsa.MLDSA44PrivateKey,
        MLDSA65: mldsa.MLDSA65PrivateKey,
        MLDSA87: mldsa.MLDSA87PrivateKey,
    }
    return classes[algorithm]


#: How many loaded credential keys :meth:`CredentialKey.from_private_bytes` keeps.
KEY_CACHE_SIZE = 256
_KEY_CACHE: OrderedDict[tuple[int, bytes], CredentialKey] = OrderedDict()
_KEY_CACHE_LOCK = threading.Lock()


def clear_key_cache() -> None:
    """Forget every cached key (authenticatorReset: the old keys are dead)."""
    with _KEY_CACHE_LOCK:
        _KEY_CACHE.clear()


def _cache_key(key: tuple[int, bytes], loaded: CredentialKey) -> None:
    with _KEY_CACHE_LOCK:
        _KEY_CACHE[key] = loaded
        _KEY_CACHE.move_to_end(key)
        while len(_KEY_CACHE) > KEY_CACHE_SIZE:
            _KEY_CACHE.popitem(last=False)


@dataclass(frozen=True)
class CredentialKey:
    """A credential's private key and its COSE algorithm identifier."""

    algorithm: int
    _key: PrivateKey = field(repr=False)
    #: The signing call, bound once (sign() runs per assertion; this saves the type checks).
    _signer: Callable[[bytes], bytes] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_signer", self._bind_signer())

    def _bind_signer(self) -> Callable[[bytes], bytes]:
        """Sign as WebAuthn expects: DER ECDSA, raw Ed25519, PKCS#1 v1.5 or PSS RSA, pure
        ML-DSA (empty context)."""
        key = self._key
        if self.algorithm in MLDSA_ALGORITHMS:
            return self._mldsa_key().sign
        if isinstance(key, ec.EllipticCurvePrivateKey):
            return functools.partial(key.sign, signature_algorithm=_ECDSA[self.algorithm])
        if isinstance(key, ed25519.Ed25519PrivateKey):
            return key.sign
        assert isinstance(key, rsa.RSAPrivateKey)
        return functools.partial(
            key.sign, padding=_RSA_PADDING[self.algorithm], algorithm=hashes.SHA256()
        )

    @classmethod
    def generate(cls, algorithm: int) -> CredentialKey:
        if algorithm in _EC_CURVES:
            return cls(algorithm, entropy.ec_private_key(_EC_CURVES[algorithm][0]))
        if algorithm in _EDDSA_ALGORITHMS:
            return cls(algorithm, entropy.current().ed25519_private_key())
        if algorithm in _RSA_PADDING:
            return cls(algorithm, entropy.current().rsa_private_key(_RSA_E, _RSA_BITS))
        if algorithm in MLDSA_ALGORITHMS:
            seed = entropy.random_bytes(MLDSA_SEED_SIZE)  # = generate() (FIPS 204 KeyGen)
            return cls(algorithm, _mldsa_class(algorithm).from_seed_bytes(seed))
        raise UnsupportedAlgorithm(algorithm)

    def private_bytes(self) -> bytes:
        """Compact private serialization (fits in a credential ID).

        EC: the big-endian scalar; Ed25519: the 32-byte seed; RSA: p || q;
        ML-DSA: the 32-byte seed xi (FIPS 204 ML-DSA.KeyGen_internal's input).
        """
        key = self._key
        if self.algorithm in MLDSA_ALGORITHMS:
            return self._mldsa_key().private_bytes_raw()
        if isinstance(key, ec.EllipticCurvePrivateKey):
            size = _EC_CURVES[self.algorithm][2]
            return key.private_numbers().private_value.to_bytes(size, "big")
        if isinstance(key, ed25519.Ed25519PrivateKey):
            return key.private_bytes(
                serialization.Encoding.Raw,
                serialization.PrivateFormat.Raw,
                serialization.NoEncryption(),
            )
        assert isinstance(key, rsa.RSAPrivateKey)
        numbers = key.private_numbers()
        half = key.key_size // 16
        return numbers.p.to_bytes(half, "big") + numbers.q.to_bytes(half, "big")

    def remember(self, data: bytes) -> None:
        """Keep this key in the loaded-key cache under ``data`` (its :meth:`private_bytes`),
        as if loaded: a new credential's first assertion, which usually follows at once,
        loads nothing. Called once the credential is made (a failed one keeps nothing)."""
        _cache_key((self.algorithm, bytes(data)), self)

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
        _cache_key(key, loaded)
        return loaded

    @classmethod
    def _load(cls, algorithm: int, data: bytes) -> CredentialKey:
        if algorithm in _EC_CURVES:
            curve, _, size = _EC_CURVES[algorithm]
            if len(data) != size:
                raise ValueError("bad EC private key length")
            return cls(algorithm, ec.derive_private_key(int.from_bytes(data, "big"), curve))
        if algorithm in _EDDSA_ALGORITHMS:
            return cls(algorithm, ed25519.Ed25519PrivateKey.from_private_bytes(data))
        if algorithm in MLDSA_ALGORITHMS:
            if len(data) != MLDSA_SEED_SIZE:
                raise ValueError("bad ML-DSA seed length")
            return cls(algorithm, _mldsa_class(algorithm).from_seed_bytes(data))
        if algorithm in _RSA_PADDING:
            if len(data) != _RSA_BITS // 8:
                raise ValueError("bad RSA private key length")
            half = len(data) // 2
            p = int.from_bytes(data[:half], "big")
            q = int.from_bytes(data[half:], "big")
            # The primes come from an ID we sealed ourselves (authenticated), so the
            # expensive consistency check of the key adds nothing.
            return cls(algorithm, rsa_private_key_from_primes(p, q, _RSA_E, validate=False))
        raise UnsupportedAlgorithm(algorithm)

    def _mldsa_key(self) -> MldsaPrivateKey:
        key = self._key
        assert not isinstance(
            key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey
        )
        return key

    def cose_public_key(self) -> cose.CoseKey:
        """The COSE_Key map (integer keys) of the public key."""
        if self.algorithm in MLDSA_ALGORITHMS:
            # AKP key (draft-ietf-cose-dilithium): kty, alg, pub. fido2.cose.MLDSA44/65 parse
            # it (CoseKey.parse picks the class by alg).
            raw: bytes = self._mldsa_key().public_key().public_bytes_raw()
            return cose.CoseKey.parse({1: KTY_AKP, 3: self.algorithm, -1: raw})
        public = self._key.public_key()
        key_class: Any = _COSE_CLASSES[self.algorithm]
        if isinstance(public, ec.EllipticCurvePublicKey):
            # EC2 (RFC 9053 section 7.1.1) from the SEC1 uncompressed point: one call into
            # cryptography instead of two public_numbers() integers turned into bytes in a
            # Python loop (fido2's from_cryptography_key), on every makeCredential.
            point = public.public_bytes(
                serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
            )
            size = (len(point) - 1) // 2
            ec2: cose.CoseKey = key_class(
                {
                    1: KTY_EC2,
                    3: self.algorithm,
                    -1: _EC2_CURVE_IDS[public.curve.name],
                    -2: point[1 : 1 + size],
                    -3: point[1 + size :],
                }
            )
            return ec2
        result: cose.CoseKey = key_class.from_cryptography_key(public)
        return result

    def public_key(self) -> Any:
        """The ``cryptography`` public key object."""
        return self._key.public_key()

    def sign(self, data: bytes) -> bytes:
        """Sign as WebAuthn expects (see :meth:`_bind_signer`); with a seeded entropy
        source, reproducibly (:func:`_sign_deterministic`)."""
        if entropy.deterministic():
            return _sign_deterministic(self, data)
        return self._signer(data)

    def __repr__(self) -> str:
        return f"CredentialKey(algorithm={self.algorithm})"


def _sign_deterministic(key: CredentialKey, data: bytes) -> bytes:
    """The same signature for the same key and data (a seeded key, for tests): RFC 6979
    ECDSA, PS256 with its salt from the seed; EdDSA and RS256 are deterministic anyway;
    ML-DSA signs hedged (its signatures differ; see authenticator/deterministic.py)."""
    private = key._key
    if isinstance(private, ec.EllipticCurvePrivateKey):
        return private.sign(data, entropy.ecdsa(_EC_CURVES[key.algorithm][1]))
    if key.algorithm == PS256 and isinstance(private, rsa.RSAPrivateKey):
        from vfido.authenticator.deterministic import pss_sha256_sign

        return pss_sha256_sign(private, data, entropy.random_bytes(32))
    return key._signer(data)
