"""PIN/UV auth protocols one and two, authenticator side (CTAP 2.1 sections 6.5.6 and 6.5.7).

Each protocol owns an ephemeral P-256 key-agreement key pair, regenerated at
power-up and on request, and provides the primitives the spec names:
``get_public_key``, ``decapsulate``, ``encrypt``, ``decrypt``, ``authenticate``
and ``verify``.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from vfido.authenticator.errors import CtapError, CtapStatus
from vfido.keystore import entropy

# COSE_Key labels and values for the key-agreement key (section 6.5.6: alg -25,
# "ECDH-ES+HKDF-256", even though the KDF depends on the protocol).
_KTY, _ALG, _CRV, _X, _Y = 1, 3, -1, -2, -3
_KTY_EC2, _ALG_ECDH_ES_HKDF_256, _CRV_P256 = 2, -25, 1


def _aes_cbc(key: bytes, iv: bytes, data: bytes, encrypt: bool) -> bytes:
    cipher = Cipher(algorithms.AES(key), modes.CBC(iv))
    ctx = cipher.encryptor() if encrypt else cipher.decryptor()
    return ctx.update(data) + ctx.finalize()


def parse_key_agreement(cose_key: Any) -> ec.EllipticCurvePublicKey:
    """Validate the platform's COSE key-agreement key; INVALID_PARAMETER if unusable."""
    if not isinstance(cose_key, dict):
        raise CtapError(CtapStatus.CBOR_UNEXPECTED_TYPE, "keyAgreement is not a map")
    x, y = cose_key.get(_X), cose_key.get(_Y)
    if (
        cose_key.get(_KTY) != _KTY_EC2
        or cose_key.get(_CRV) != _CRV_P256
        or not isinstance(x, bytes)
        or not isinstance(y, bytes)
        or len(x) != 32
        or len(y) != 32
    ):
        raise CtapError(CtapStatus.INVALID_PARAMETER, "keyAgreement is not a P-256 key")
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + x + y)
    except ValueError:
        raise CtapError(CtapStatus.INVALID_PARAMETER, "keyAgreement point not on curve") from None


class PinProtocol:
    """Protocol one (section 6.5.6). Subclassed by :class:`PinProtocolV2`."""

    version = 1
    #: Length of pinUvAuthParam produced by ``authenticate``.
    auth_param_length = 16

    def __init__(self) -> None:
        self._key = entropy.ec_private_key(ec.SECP256R1())

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def regenerate(self) -> None:
        """A new key-agreement key pair (power-up, and after a PIN is set or changed)."""
        self._key = entropy.ec_private_key(ec.SECP256R1())

    def get_public_key(self) -> dict[int, Any]:
        numbers = self._key.public_key().public_numbers()
        return {
            _KTY: _KTY_EC2,
            _ALG: _ALG_ECDH_ES_HKDF_256,
            _CRV: _CRV_P256,
            _X: numbers.x.to_bytes(32, "big"),
            _Y: numbers.y.to_bytes(32, "big"),
        }

    def decapsulate(self, peer_cose_key: Any) -> bytes:
        """The shared secret for the platform's key-agreement key."""
        peer = parse_key_agreement(peer_cose_key)
        z = self._key.exchange(ec.ECDH(), peer)
        return self.kdf(z)

    def kdf(self, z: bytes) -> bytes:
        return hashlib.sha256(z).digest()

    def encrypt(self, key: bytes, plaintext: bytes) -> bytes:
        return _aes_cbc(key, b"\x00" * 16, plaintext, encrypt=True)

    def decrypt(self, key: bytes, ciphertext: bytes) -> bytes:
        """Raises CtapError(INVALID_PARAMETER) when ciphertext is not whole blocks."""
        if len(ciphertext) % 16 or not ciphertext:
            raise CtapError(CtapStatus.INVALID_PARAMETER, "ciphertext length")
        return _aes_cbc(key, b"\x00" * 16, ciphertext, encrypt=False)

    def authenticate(self, key: bytes, message: bytes) -> bytes:
        return hmac.new(key, message, hashlib.sha256).digest()[:16]

    def verify(self, key: bytes, message: bytes, signature: bytes) -> bool:
        """Constant-time check of a pinUvAuthParam."""
        return hmac.compare_digest(self.authenticate(key, message), signature)


class PinProtocolV2(PinProtocol):
    """Protocol two (section 6.5.7): HKDF, random IVs, full-length HMAC."""

    version = 2
    auth_param_length = 32
    _SALT = b"\x00" * 32

    def kdf(self, z: bytes) -> bytes:
        def hkdf(info: bytes) -> bytes:
            return HKDF(hashes.SHA256(), 32, self._SALT, info).derive(z)

        return hkdf(b"CTAP2 HMAC key") + hkdf(b"CTAP2 AES key")

    @staticmethod
    def _aes_key(key: bytes) -> bytes:
        return key[32:] if len(key) == 64 else key

    def encrypt(self, key: bytes, plaintext: bytes) -> bytes:
        iv = entropy.random_bytes(16)
        return iv + _aes_cbc(self._aes_key(key), iv, plaintext, encrypt=True)

    def decrypt(self, key: bytes, ciphertext: bytes) -> bytes:
        if len(ciphertext) < 32 or len(ciphertext) % 16:
            raise CtapError(CtapStatus.INVALID_PARAMETER, "ciphertext length")
        iv, body = ciphertext[:16], ciphertext[16:]
        return _aes_cbc(self._aes_key(key), iv, body, encrypt=False)

    def authenticate(self, key: bytes, message: bytes) -> bytes:
        return hmac.new(key[:32], message, hashlib.sha256).digest()


def new_protocols() -> dict[int, PinProtocol]:
    """Both protocols, keyed by their pinUvAuthProtocol number."""
    return {1: PinProtocol(), 2: PinProtocolV2()}
