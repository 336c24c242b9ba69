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
from typing import TYPE_CHECKING, Protocol

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa, utils

if TYPE_CHECKING:  # cryptography.x509 is imported where a certificate is made, not here
    from cryptography import x509


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


def enter(source: Entropy) -> contextvars.Token[Entropy]:
    """Make ``source`` current until :func:`leave` (the cheap form of :func:`using`, for
    the authenticator's per-request path)."""
    return _CURRENT.set(source)


def leave(token: contextvars.Token[Entropy]) -> None:
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


def ecdsa(algorithm: hashes.HashAlgorithm | utils.Prehashed) -> ec.ECDSA:
    """The ECDSA signature algorithm to sign with now: randomized with the system source,
    RFC 6979 deterministic with a seeded one (same key + same data = same signature)."""
    if _CURRENT.get().deterministic:
        return ec.ECDSA(algorithm, deterministic_signing=True)
    return ec.ECDSA(algorithm)


#: DER AlgorithmIdentifier of ecdsa-with-SHA256 (RFC 5758 section 3.2: no parameters).
_ECDSA_WITH_SHA256 = bytes.fromhex("300a06082a8648ce3d040302")


def _der(tag: int, body: bytes) -> bytes:
    size = len(body)
    if size < 0x80:
        return bytes([tag, size]) + body
    length = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(length)]) + length + body


def sign_certificate(
    builder: x509.CertificateBuilder, issuer_key: ec.EllipticCurvePrivateKey
) -> x509.Certificate:
    """``builder`` signed with ECDSA-SHA256 by ``issuer_key``: as the library does it with
    the system source; with a seeded one the signature is RFC 6979 deterministic, so the
    certificate's bytes repeat. (``CertificateBuilder.sign``'s own ``ecdsa_deterministic``
    needs cryptography >= 45; the floor is 44, so the certificate is re-signed here: the
    to-be-signed part, an AlgorithmIdentifier and the signature, RFC 5280 section 4.1.)"""
    certificate = builder.sign(issuer_key, hashes.SHA256())
    if not _CURRENT.get().deterministic:
        return certificate
    from cryptography.x509 import load_der_x509_certificate  # loaded with the builder

    tbs = certificate.tbs_certificate_bytes
    signature = issuer_key.sign(tbs, ec.ECDSA(hashes.SHA256(), deterministic_signing=True))
    der = _der(0x30, tbs + _ECDSA_WITH_SHA256 + _der(0x03, b"\x00" + signature))
    return load_der_x509_certificate(der)


def deterministic() -> bool:
    """True while a seeded source is in force."""
    return _CURRENT.get().deterministic
