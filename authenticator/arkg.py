"""ARKG-P256: the authenticator's half of Asynchronous Remote Key Generation.

draft-bradleylundberg-cfrg-arkg (the instance python-fido2 2.2.1 calls ARKG-P256, COSE
placeholder -65700): a relying party holding the public seed ``(pk_bl, pk_kem)`` derives a
fresh public key ``pk'`` and a key handle ``kh`` on its own (ARKG-Derive-Public-Key); the
authenticator, holding ``(sk_bl, sk_kem)``, later derives the matching private key ``sk'``
from ``kh`` (ARKG-Derive-Secret-Key). Only the second half lives here: the key never
derives public keys for others.

Instance parameters (draft section "ARKG-P256"):

- BL: elliptic curve addition on P-256, hash-to-field of RFC 9380's
  ``P256_XMD:SHA-256_SSWU_RO_`` suite (expand_message_xmd with SHA-256, L = 48),
  ``DST_ext = 'ARKG-P256'``;
- KEM: ECDH on P-256 wrapped in the HMAC construction, ``DST_ext = 'ARKG-ECDH.ARKG-P256'``.

Every failure (a malformed or foreign key handle, a context over 64 bytes) is one
:class:`ArkgError`, without detail: the caller maps it to one CTAP status.
"""

from __future__ import annotations

import hashlib
import hmac

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

#: The order N of P-256's base point (SEC 2, section 2.4.2).
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
#: L of the hash-to-crv suite P256_XMD:SHA-256_SSWU_RO_ (RFC 9380 section 8.2).
_HASH_TO_FIELD_L = 48
#: SHA-256's output and input block sizes (b_in_bytes, s_in_bytes of RFC 9380 5.3.1).
_B_IN_BYTES = 32
_S_IN_BYTES = 64
#: The KEM's tag length: HMAC-SHA-256 truncated to 128 bits.
_TAG_SIZE = 16
#: An uncompressed P-256 point (SEC 1 section 2.3.3).
_POINT_SIZE = 65
#: ARKG-Derive-*-Key: "an octet string of length at most 64".
MAX_CONTEXT_LENGTH = 64

DST_EXT_BL = b"ARKG-P256"
DST_EXT_KEM = b"ARKG-ECDH.ARKG-P256"


class ArkgError(ValueError):
    """ARKG-Derive-Secret-Key aborted (no detail: the key handle is not for this seed)."""


def expand_message_xmd(msg: bytes, dst: bytes, len_in_bytes: int) -> bytes:
    """RFC 9380 section 5.3.1, with SHA-256 (steps numbered as there)."""
    # 1. ell = ceil(len_in_bytes / b_in_bytes)
    ell = -(-len_in_bytes // _B_IN_BYTES)
    # 2. ABORT if ell > 255 or len_in_bytes > 65535 or len(DST) > 255
    if ell > 255 or len_in_bytes > 65535 or len(dst) > 255:
        raise ArkgError
    # 3. DST_prime = DST || I2OSP(len(DST), 1)
    dst_prime = dst + bytes((len(dst),))
    # 4. Z_pad = I2OSP(0, s_in_bytes); 5. l_i_b_str = I2OSP(len_in_bytes, 2)
    z_pad = bytes(_S_IN_BYTES)
    l_i_b_str = len_in_bytes.to_bytes(2, "big")
    # 6. msg_prime = Z_pad || msg || l_i_b_str || I2OSP(0, 1) || DST_prime
    # 7. b_0 = H(msg_prime)
    b_0 = hashlib.sha256(z_pad + msg + l_i_b_str + b"\x00" + dst_prime).digest()
    # 8. b_1 = H(b_0 || I2OSP(1, 1) || DST_prime)
    blocks = [hashlib.sha256(b_0 + b"\x01" + dst_prime).digest()]
    # 9.-10. b_i = H(strxor(b_0, b_(i - 1)) || I2OSP(i, 1) || DST_prime)
    for i in range(2, ell + 1):
        mixed = bytes(x ^ y for x, y in zip(b_0, blocks[-1], strict=True))
        blocks.append(hashlib.sha256(mixed + bytes((i,)) + dst_prime).digest())
    # 11.-12. uniform_bytes = b_1 || ... || b_ell, truncated
    return b"".join(blocks)[:len_in_bytes]


def hash_to_scalar(msg: bytes, dst: bytes) -> int:
    """hash_to_field(msg, 1) over GF(N) (RFC 9380 section 5.2, m = 1, count = 1)."""
    return int.from_bytes(expand_message_xmd(msg, dst, _HASH_TO_FIELD_L), "big") % P256_ORDER


def _kem_decaps(sk_kem: ec.EllipticCurvePrivateKey, c: bytes, ctx: bytes) -> bytes:
    """KEM-Decaps(sk, c, ctx) of the HMAC-wrapped ECDH KEM (its inner ECDH sub-KEM gets
    ``ctx_sub = 'ARKG-KEM-HMAC.' || DST_ext || ctx``, which ECDH does not use)."""
    # t = LEFT(c, 128 bits), c' = DROP_LEFT(c, 128 bits)
    if len(c) != _TAG_SIZE + _POINT_SIZE:
        raise ArkgError
    tag, c_prime = c[:_TAG_SIZE], c[_TAG_SIZE:]
    # k' = Sub-Kem-Decaps(sk, c', ctx_sub): ECDH(pk', sk) with pk' = the point c'
    # (the ECDH sub-KEM does not use ctx_sub).
    try:
        peer = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), c_prime)
        k_prime = sk_kem.exchange(ec.ECDH(), peer)
    except ValueError:
        raise ArkgError from None
    # prk = HKDF-Extract(salt not set, IKM k'); mk = HKDF-Expand(prk, info_mac, L = 32)
    mk = HKDF(hashes.SHA256(), 32, None, b"ARKG-KEM-HMAC-mac." + DST_EXT_KEM + ctx).derive(k_prime)
    # t' = HMAC-SHA-256-128(mk, c'); abort unless t = t' (constant time)
    expected = hmac.new(mk, c_prime, hashlib.sha256).digest()[:_TAG_SIZE]
    if not hmac.compare_digest(tag, expected):
        raise ArkgError
    # k = HKDF-Expand(prk, 'ARKG-KEM-HMAC-shared.' || DST_ext || ctx, L = len(k'))
    info = b"ARKG-KEM-HMAC-shared." + DST_EXT_KEM + ctx
    return HKDF(hashes.SHA256(), len(k_prime), None, info).derive(k_prime)


def derive_secret_key(sk_bl: int, sk_kem: int, kh: bytes, ctx: bytes) -> int:
    """ARKG-Derive-Secret-Key((sk_bl, sk_kem), kh, ctx) -> sk' (a P-256 scalar).

    Raises :class:`ArkgError` when ``kh`` does not authenticate under ``sk_kem`` (it was
    not derived from this seed, or with another ``ctx``) or ``ctx`` is too long.
    """
    # If LEN(ctx) > 64: abort.
    if len(ctx) > MAX_CONTEXT_LENGTH:
        raise ArkgError
    # ctx' = I2OSP(LEN(ctx), 1) || ctx; ctx_bl, ctx_kem
    ctx_prime = bytes((len(ctx),)) + ctx
    ctx_bl = b"ARKG-Derive-Key-BL." + ctx_prime
    ctx_kem = b"ARKG-Derive-Key-KEM." + ctx_prime
    # ikm_tau = KEM-Decaps(sk_kem, kh, ctx_kem)
    ikm_tau = _kem_decaps(ec.derive_private_key(sk_kem, ec.SECP256R1()), kh, ctx_kem)
    # tau = BL-PRF(ikm_tau, ctx_bl) = hash_to_field(ikm_tau) with DST 'ARKG-BL-EC.' || ...
    tau = hash_to_scalar(ikm_tau, b"ARKG-BL-EC." + DST_EXT_BL + ctx_bl)
    # sk' = BL-Blind-Secret-Key(sk_bl, tau) = sk_bl + tau mod N; abort if 0
    sk_prime = (sk_bl + tau) % P256_ORDER
    if sk_prime == 0:
        raise ArkgError
    return sk_prime
