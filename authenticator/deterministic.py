"""A reproducible key: randomness and time from a seed (``vfido run --deterministic SEED``).

FOR TESTS ONLY. Everything such a key draws is computable by anyone who knows the seed:
its credential private keys, its PIN protocol keys, its pinUvAuthTokens. It exists so
that golden-file tests can compare responses byte for byte: two keys with the same seed
that receive the same requests answer with the same bytes.

:class:`SeededEnvironment` is both the key's :class:`~vfido.keystore.entropy.Entropy`
and its :class:`~vfido.authenticator.env.Clock`:

* random bytes: an HMAC-SHA256 counter stream keyed by SHA-256 of the seed (each
  draw takes the next bytes of the stream, so the values depend on the order of draws,
  which is the order of requests);
* EC keys: a scalar reduced from 64 extra bits of the stream into [1, n-1]; Ed25519 and
  ML-DSA keys: 32-byte seeds from the stream; RSA keys: primes searched from stream
  candidates with Miller-Rabin (witnesses from the stream too);
* signatures: ECDSA uses RFC 6979 (``deterministic_signing``); EdDSA and RSASSA-PKCS1-v1_5
  are deterministic anyway; RSASSA-PSS (PS256) is encoded here (RFC 8017 section 9.1.1)
  with its 32-byte salt drawn from the stream, so PS256 signatures repeat too and still
  verify with any PSS verifier; ML-DSA signs hedged inside OpenSSL and does NOT repeat;
* the clock: wall time is a fixed start (2025-01-01T00:00:00Z) plus one second per
  request; monotonic time starts at 0 and advances one millisecond per request (so the
  reset window, pinUvAuthToken and getNextAssertion timers never expire in a test
  sequence of reasonable length). The authenticator calls :meth:`begin_request` before
  every request it handles.
"""

from __future__ import annotations

import hashlib
import hmac
import threading

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from vfido.authenticator.rsa_numbers import rsa_private_key_from_primes

#: 2025-01-01T00:00:00Z: the wall clock of a seeded key before its first request.
START_TIME = 1735689600.0
#: How far the monotonic clock moves per request (seconds).
MONOTONIC_STEP = 0.001
#: The warning a seeded key prints to stderr and shows in its status.
WARNING = (
    "WARNING: deterministic key (--deterministic): its private keys, PIN protocol keys "
    "and tokens follow from the seed -- FOR TESTS ONLY, never register it anywhere real"
)

_ORDERS: dict[str, int] = {
    "secp256r1": 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
    "secp384r1": int(
        "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF"
        "581A0DB248B0A77AECEC196ACCC52973",
        16,
    ),
    "secp521r1": int(
        "01FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFA51868783BF2F"
        "966B7FCC0148F709A5D03BB5C9B8899C47AEBB6FB71E91386409",
        16,
    ),
    "secp256k1": 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141,
}
_SMALL_PRIMES = [p for p in range(3, 2000) if all(p % d for d in range(2, int(p**0.5) + 1))]
_MILLER_RABIN_ROUNDS = 40


def seed_bytes(seed: str | bytes) -> bytes:
    """The seed as bytes (a string is UTF-8). Raises ValueError for an empty seed."""
    raw = seed.encode() if isinstance(seed, str) else bytes(seed)
    if not raw:
        raise ValueError("the seed is empty")
    return raw


class SeededEnvironment:
    """Randomness and clock from a seed (see the module docstring). Thread-safe."""

    deterministic = True

    def __init__(self, seed: str | bytes) -> None:
        self._key = hashlib.sha256(b"vfido deterministic key v1\x00" + seed_bytes(seed)).digest()
        self._lock = threading.Lock()
        self._counter = 0
        self._buffer = b""
        self._requests = 0

    def __repr__(self) -> str:  # never the seed
        return f"SeededEnvironment(requests={self._requests})"

    # -- Clock ------------------------------------------------------------------------

    def begin_request(self) -> None:
        """One more request: the clocks advance one step."""
        with self._lock:
            self._requests += 1

    @property
    def requests(self) -> int:
        with self._lock:
            return self._requests

    def time(self) -> float:
        with self._lock:
            return START_TIME + self._requests

    def monotonic(self) -> float:
        with self._lock:
            return self._requests * MONOTONIC_STEP

    # -- Entropy ----------------------------------------------------------------------

    def random_bytes(self, size: int) -> bytes:
        if size < 0:
            raise ValueError("negative size")
        with self._lock:
            while len(self._buffer) < size:
                self._counter += 1
                block = hmac.new(self._key, self._counter.to_bytes(8, "big"), "sha256")
                self._buffer += block.digest()
            out, self._buffer = self._buffer[:size], self._buffer[size:]
            return out

    def _below(self, bound: int) -> int:
        """A number in [0, bound) (64 extra bits make the bias negligible)."""
        size = (bound.bit_length() + 7) // 8 + 8
        return int.from_bytes(self.random_bytes(size), "big") % bound

    def ec_private_key(self, curve: ec.EllipticCurve) -> ec.EllipticCurvePrivateKey:
        order = _ORDERS.get(curve.name)
        if order is None:
            raise ValueError(f"no deterministic key generation for curve {curve.name}")
        return ec.derive_private_key(1 + self._below(order - 1), curve)

    def ed25519_private_key(self) -> ed25519.Ed25519PrivateKey:
        return ed25519.Ed25519PrivateKey.from_private_bytes(self.random_bytes(32))

    def rsa_private_key(self, public_exponent: int, bits: int) -> rsa.RSAPrivateKey:
        half = bits // 2
        while True:
            p = self._prime(half, public_exponent)
            q = self._prime(half, public_exponent)
            if p != q and (p * q).bit_length() == bits:
                break
        if p < q:
            p, q = q, p
        return rsa_private_key_from_primes(p, q, public_exponent)

    def _prime(self, bits: int, public_exponent: int) -> int:
        while True:
            candidate = int.from_bytes(self.random_bytes(bits // 8), "big")
            candidate |= (3 << (bits - 2)) | 1  # top two bits: p*q has all its bits
            if any(candidate % p == 0 for p in _SMALL_PRIMES):
                continue
            if (candidate - 1) % public_exponent == 0:
                continue  # e must be invertible mod p-1
            if self._probably_prime(candidate):
                return candidate

    def _probably_prime(self, n: int) -> bool:
        d, r = n - 1, 0
        while d % 2 == 0:
            d, r = d // 2, r + 1
        for _ in range(_MILLER_RABIN_ROUNDS):
            x = pow(2 + self._below(n - 3), d, n)
            if x in (1, n - 1):
                continue
            for _ in range(r - 1):
                x = pow(x, 2, n)
                if x == n - 1:
                    break
            else:
                return False
        return True


def _mgf1(seed: bytes, length: int) -> bytes:
    out = b""
    counter = 0
    while len(out) < length:
        out += hashlib.sha256(seed + counter.to_bytes(4, "big")).digest()
        counter += 1
    return out[:length]


def pss_sha256_sign(key: rsa.RSAPrivateKey, message: bytes, salt: bytes) -> bytes:
    """RSASSA-PSS-SIGN (RFC 8017 section 8.1.1) with SHA-256, MGF1-SHA-256 and the given
    salt: EMSA-PSS-ENCODE (section 9.1.1) here, RSASP1 with the private numbers (CRT).

    ``cryptography`` draws the PSS salt itself from OpenSSL's RNG; a seeded key needs it
    from the seed, so the encoding is done here. Verifies as PS256 (salt length 32)."""
    numbers = key.private_numbers()
    n = numbers.public_numbers.n
    em_bits = n.bit_length() - 1
    em_len = (em_bits + 7) // 8
    m_hash = hashlib.sha256(message).digest()
    h = hashlib.sha256(b"\x00" * 8 + m_hash + salt).digest()
    ps = b"\x00" * (em_len - len(salt) - len(h) - 2)
    db = ps + b"\x01" + salt
    masked = bytearray(a ^ b for a, b in zip(db, _mgf1(h, len(db)), strict=True))
    masked[0] &= 0xFF >> (8 * em_len - em_bits)
    em = bytes(masked) + h + b"\xbc"
    m = int.from_bytes(em, "big")
    # RSASP1 with the Chinese remainder theorem (RFC 8017 section 5.2.1, 2.b).
    s1 = pow(m, numbers.dmp1, numbers.p)
    s2 = pow(m, numbers.dmq1, numbers.q)
    s = s2 + numbers.q * ((numbers.iqmp * (s1 - s2)) % numbers.p)
    return s.to_bytes((n.bit_length() + 7) // 8, "big")
