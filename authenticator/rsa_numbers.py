"""An RSA private key from its two primes: what :mod:`~vfido.authenticator.cose` does when it
loads a credential's key from its sealed ID, and the seeded key of
:mod:`~vfido.authenticator.deterministic` after its prime search. Its own module because
``cose`` imports ``deterministic`` (for PS256 under a seed): either one importing the other
for this would close an import cycle."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import rsa


def rsa_private_key_from_primes(
    p: int, q: int, public_exponent: int, *, validate: bool = True
) -> rsa.RSAPrivateKey:
    """The RSA private key with primes ``p`` and ``q`` (d and the CRT values computed here).
    ``validate=False`` skips ``cryptography``'s costly consistency check of the key: only for
    primes from a source already authenticated."""
    d = pow(public_exponent, -1, (p - 1) * (q - 1))
    numbers = rsa.RSAPrivateNumbers(
        p=p,
        q=q,
        d=d,
        dmp1=rsa.rsa_crt_dmp1(d, p),
        dmq1=rsa.rsa_crt_dmq1(d, q),
        iqmp=rsa.rsa_crt_iqmp(p, q),
        public_numbers=rsa.RSAPublicNumbers(public_exponent, p * q),
    )
    return numbers.private_key(unsafe_skip_rsa_key_validation=not validate)
