"""Reproducible keys (``vfido run --deterministic SEED``, ``VirtualKey(seed=...)``): the
application side of :mod:`vfido.authenticator.deterministic`.

A seeded key answers the same requests with the same bytes, so relying-party test suites
can keep golden files of attestation objects and assertions. Its private keys follow from
the seed: it is for tests only, says so loudly (stderr and the ``status`` control
command) and refuses a persistent keystore.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TextIO, TypeVar

from vfido.authenticator.deterministic import WARNING, SeededEnvironment, seed_bytes
from vfido.keystore.entropy import using

__all__ = ["WARNING", "PersistentKeystoreRefused", "SeededEnvironment", "build", "environment"]

T = TypeVar("T")

#: The one line a seeded key with a persistent keystore is refused with.
REFUSAL = (
    "a deterministic key needs an ephemeral keystore: its private keys follow from the "
    "seed, so it must never hold real credentials (drop --keystore/--passphrase-file)"
)


class PersistentKeystoreRefused(ValueError):
    """A seeded key was asked to use a persistent keystore."""

    def __init__(self) -> None:
        super().__init__(REFUSAL)


def environment(
    seed: str | bytes, *, persistent: bool, stream: TextIO | None = None
) -> SeededEnvironment:
    """The seeded environment for a new key, after the checks and the warning.

    Raises :class:`PersistentKeystoreRefused` for a persistent keystore and ValueError
    for an empty seed; prints :data:`WARNING` to ``stream`` (default stderr)."""
    if persistent:
        raise PersistentKeystoreRefused()
    seed_bytes(seed)  # ValueError for an empty seed
    print(WARNING, file=stream if stream is not None else sys.stderr, flush=True)
    return SeededEnvironment(seed)


def build(env: SeededEnvironment | None, factory: Callable[[], T]) -> T:
    """``factory()`` with ``env`` as the entropy source (the keystore's identity, the PIN
    protocol keys made at construction); plain ``factory()`` without one."""
    if env is None:
        return factory()
    with using(env):
        return factory()
