"""Where the key's randomness and wall-clock time come from: one interface, two sources.

Every random value the authenticator and the keystore draw (credential keys, credential
ID nonces, PIN protocol key agreement keys, pinUvAuthTokens, IVs, AAGUIDs, attestation
certificates) and the wall-clock time written into certificates and credential records
goes through :func:`current`: the operating system's CSPRNG and clock
(:class:`SystemEntropy`, the default), or a seeded source that makes a key reproducible
(``vfido.authenticator.deterministic.SeededEnvironment``, for golden-file tests only).

The source in force is a :class:`contextvars.ContextVar`: the authenticator enters its
own environment's source around every request (:func:`using`), so two keys in one
process (one seeded, one not) never see each other's source, and no module is patched.
Outside any :func:`using` block the system source answers, so code that never opts in
behaves exactly as before.

This module sits in the keystore package (which imports nothing above it) because the
keystore draws randomness too; the authenticator imports it from here.
"""

from __future__ import annotations

import contextvars
import datetime
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa


class Entropy(Protocol):
    """A source of randomness and wall-clock time."""

    #: True for a seeded (reproducible) source: signers then use deterministic variants
    #: (RFC 6979 ECDSA, a seeded PSS salt) so signatures repeat too.
    deterministic: bool

    def random_bytes(self, size: int) -> bytes:
        """``size`` random bytes."""
        ...

    def ec_private_key(self, curve: ec.EllipticCurve) -> ec.EllipticCurvePrivateKey: ...

    def ed25519_private_key(self) -> ed25519.Ed25519PrivateKey: ...

    def rsa_private_key(self, public_exponent: int, bits: int) -> rsa.RSAPrivateKey: ...

    def time(self) -> float:
        """Seconds since the epoch (certificate validity, credential creation times)."""
        ...


class SystemEntropy:
    """The operating system's CSPRNG (``os.urandom``, OpenSSL's key generation) and clock."""

    deterministic = False

    def random_bytes(self, size: int) -> bytes:
        return os.urandom(size)

    def ec_private_key(self, curve: ec.EllipticCurve) -> ec.EllipticCurvePrivateKey:
        return ec.generate_private_key(curve)

    def ed25519_private_key(self) -> ed25519.Ed25519PrivateKey:
        return ed25519.Ed25519PrivateKey.generate()

    def rsa_private_key(self, public_exponent: int, bits: int) -> rsa.RSAPrivateKey:
        return rsa.generate_private_key(public_exponent, bits)

    def time(self) -> float:
        return time.time()

    def __repr__(self) -> str:
        return "SystemEntropy()"


SYSTEM = SystemEntropy()
_CURRENT: contextvars.ContextVar[Entropy] = contextvars.ContextVar("vfido_entropy", default=SYSTEM)


def current() -> Entropy:
    """The source in force in this thread/context (the system one unless :func:`using`)."""
    return _CURRENT.get()


@contextmanager
def using(source: Entropy) -> Iterator[Entropy]:
    """Make ``source`` the one :func:`current` returns inside the block."""
    token = _CURRENT.set(source)
    try:
        yield source
    finally:
        _CURRENT.reset(token)


def random_bytes(size: int) -> bytes:
    """``size`` random bytes from the source in force."""
    return _CURRENT.get().random_bytes(size)


def ec_private_key(curve: ec.EllipticCurve) -> ec.EllipticCurvePrivateKey:
    """A new EC private key on ``curve`` from the source in force."""
    return _CURRENT.get().ec_private_key(curve)


def utc_now() -> datetime.datetime:
    """The wall-clock time of the source in force, as an aware UTC datetime."""
    return datetime.datetime.fromtimestamp(_CURRENT.get().time(), datetime.UTC)


def x509_serial() -> int:
    """A positive 159-bit certificate serial number (RFC 5280 allows up to 20 octets)."""
    return int.from_bytes(random_bytes(20), "big") >> 1 or 1


def ecdsa(algorithm: hashes.HashAlgorithm) -> ec.ECDSA:
    """The ECDSA signature algorithm to sign with now: randomized with the system source,
    RFC 6979 deterministic with a seeded one (same key + same data = same signature)."""
    if _CURRENT.get().deterministic:
        return ec.ECDSA(algorithm, deterministic_signing=True)
    return ec.ECDSA(algorithm)


def certificate_signing() -> dict[str, Any]:
    """Extra arguments of ``CertificateBuilder.sign`` for an EC issuer key: RFC 6979
    signatures with a seeded source, nothing (the library's default) otherwise."""
    return {"ecdsa_deterministic": True} if _CURRENT.get().deterministic else {}


def deterministic() -> bool:
    """True while a seeded source is in force."""
    return _CURRENT.get().deterministic
