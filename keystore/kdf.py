"""Passphrase key derivation: Argon2id (RFC 9106) via ``cryptography``.

The parameters (memory, iterations, lanes, salt) are stored in the keystore
next to the wrapped master key, so they can be raised later without a format
change. The defaults follow RFC 9106's second recommended option (64 MiB,
3 passes, 4 lanes). Cheaper parameters exist only through the explicitly named
:func:`insecure_test_params`.
"""

from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

from vfido.keystore import entropy
from vfido.keystore.crypto import derive_into

ALGORITHM = "argon2id"
KEY_SIZE = 32
SALT_SIZE = 16

DEFAULT_MEMORY_KIB = 65536
DEFAULT_ITERATIONS = 3
DEFAULT_LANES = 4

MIN_MEMORY_KIB = 65536
"""Smallest memory cost :func:`new_params` accepts (64 MiB)."""

# Upper bounds applied when loading parameters from a file, so a corrupted or
# hostile keystore cannot make us allocate absurd amounts of memory.
_MAX_MEMORY_KIB = 4 * 1024 * 1024
_MAX_ITERATIONS = 64
_MAX_LANES = 64

#: Largest costs run for parameters nothing has authenticated yet (a backup bundle's
#: header, a keystore's ``meta.kdf``, each read before its passphrase can be checked): four
#: times the defaults. vfido writes no more (:func:`new_params` refuses it); anything above
#: is a hostile file asking for gigabytes.
UNTRUSTED_MAX_MEMORY_KIB = 4 * DEFAULT_MEMORY_KIB
UNTRUSTED_MAX_ITERATIONS = 4 * DEFAULT_ITERATIONS
UNTRUSTED_MAX_LANES = 4 * DEFAULT_LANES


class KdfParamsError(ValueError):
    """Stored or requested KDF parameters are invalid."""


@dataclass(frozen=True)
class KdfParams:
    memory_kib: int
    iterations: int
    lanes: int
    salt: bytes = field(repr=False)

    def _check(self) -> None:
        if not (
            1 <= self.lanes <= _MAX_LANES
            and 1 <= self.iterations <= _MAX_ITERATIONS
            and 8 * self.lanes <= self.memory_kib <= _MAX_MEMORY_KIB
            and len(self.salt) >= 8
        ):
            raise KdfParamsError("invalid Argon2id parameters")

    def with_fresh_salt(self) -> KdfParams:
        """The same costs with a new random salt."""
        return KdfParams(
            self.memory_kib, self.iterations, self.lanes, entropy.random_bytes(SALT_SIZE)
        )

    def at_least_defaults(self) -> KdfParams:
        """Each cost raised to the current default where it is lower, with a new random salt
        (used when the passphrase changes: weak parameters do not outlive it)."""
        return KdfParams(
            max(self.memory_kib, DEFAULT_MEMORY_KIB),
            max(self.iterations, DEFAULT_ITERATIONS),
            max(self.lanes, DEFAULT_LANES),
            entropy.random_bytes(SALT_SIZE),
        )

    def check_untrusted(self) -> None:
        """Refuse costs above the ``UNTRUSTED_MAX_*`` bounds: call it before deriving a key
        with parameters read from a file nothing has authenticated yet."""
        self._check()
        if (
            self.memory_kib > UNTRUSTED_MAX_MEMORY_KIB
            or self.iterations > UNTRUSTED_MAX_ITERATIONS
            or self.lanes > UNTRUSTED_MAX_LANES
        ):
            raise KdfParamsError(
                f"Argon2id costs too high ({self.memory_kib} KiB, {self.iterations} passes, "
                f"{self.lanes} lanes; at most {UNTRUSTED_MAX_MEMORY_KIB} KiB, "
                f"{UNTRUSTED_MAX_ITERATIONS} passes, {UNTRUSTED_MAX_LANES} lanes)"
            )

    def to_json(self) -> str:
        return json.dumps(
            {
                "alg": ALGORITHM,
                "memory_kib": self.memory_kib,
                "iterations": self.iterations,
                "lanes": self.lanes,
                "salt": self.salt.hex(),
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> KdfParams:
        """Parse stored parameters. Raises :class:`KdfParamsError` if unusable."""
        try:
            d = json.loads(text)
            if not isinstance(d, dict) or d.get("alg") != ALGORITHM:
                raise KdfParamsError("unsupported key derivation algorithm")
            memory, iterations, lanes = d["memory_kib"], d["iterations"], d["lanes"]
            salt = bytes.fromhex(d["salt"])
        except (ValueError, KeyError, TypeError) as exc:
            raise KdfParamsError("malformed key derivation parameters") from exc
        if not all(type(v) is int for v in (memory, iterations, lanes)):
            raise KdfParamsError("malformed key derivation parameters")
        params = cls(memory, iterations, lanes, salt)
        params._check()
        return params


def new_params(
    memory_kib: int = DEFAULT_MEMORY_KIB,
    iterations: int = DEFAULT_ITERATIONS,
    lanes: int = DEFAULT_LANES,
) -> KdfParams:
    """Production parameters with a fresh random salt; refuses less than 64 MiB."""
    if memory_kib < MIN_MEMORY_KIB:
        raise KdfParamsError(f"Argon2id memory cost must be at least {MIN_MEMORY_KIB} KiB")
    if iterations < 1 or lanes < 1:
        raise KdfParamsError("Argon2id iterations and lanes must be at least 1")
    params = KdfParams(memory_kib, iterations, lanes, entropy.random_bytes(SALT_SIZE))
    params.check_untrusted()  # a keystore asking for more would not open again
    return params


def insecure_test_params() -> KdfParams:
    """Very cheap parameters FOR TESTS ONLY (a few KiB, one pass)."""
    return KdfParams(memory_kib=64, iterations=1, lanes=1, salt=entropy.random_bytes(SALT_SIZE))


def derive_key(passphrase: str, params: KdfParams) -> bytearray:
    """The 32-byte key-encryption key for ``passphrase`` (NFC-normalized, UTF-8), in a
    ``bytearray`` the caller zeroes after use (the passphrase ``str`` cannot be)."""
    params._check()
    secret = unicodedata.normalize("NFC", passphrase).encode("utf-8")
    kdf = Argon2id(
        salt=params.salt,
        length=KEY_SIZE,
        iterations=params.iterations,
        lanes=params.lanes,
        memory_cost=params.memory_kib,
    )
    out = bytearray(KEY_SIZE)
    derive_into(kdf, secret, out)
    return out
