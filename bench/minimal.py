"""A minimal getAssertion answer, in Python, with vfido's codec (issue #16, bench/README.md).

``minimal_get_assertion(request)`` answers an authenticatorGetAssertion request (command
byte + CBOR, with an allowList) the way no real key may, by doing only what every key has
to compute for one: the request decoded by vfido's strict canonical-CBOR decoder, the
rpIdHash (SHA-256 of the rpId), a counter, one ECDSA P-256 signature over
authenticatorData || clientDataHash with a key made at import, and the response (the first
allowList descriptor, authenticatorData, the signature) encoded by vfido's encoder. No
credential lookup or decryption, rpIdHash check, presence, options, extensions, PIN state
or keystore.

``bench/cached_handler.py --minimal`` serves it behind `vfido run`'s transport (entry.py
``transport``'s middle row); ``bench/cold.py`` times it in-process beside vfido's handler.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from vfido.authenticator import cbor

KEY = ec.generate_private_key(ec.SECP256R1())
_counter = 0


def minimal_get_assertion(request: bytes) -> bytes:
    """Decode, hash, count, sign, encode; nothing else."""
    global _counter
    params = cbor.decode(request[1:])
    _counter += 1
    digest = hashes.Hash(hashes.SHA256())
    digest.update(params[1].encode())
    auth_data = digest.finalize() + b"\x01" + _counter.to_bytes(4, "big")
    signature = KEY.sign(auth_data + params[2], ec.ECDSA(hashes.SHA256()))
    return b"\x00" + cbor.encode({1: params[3][0], 2: auth_data, 3: signature})
