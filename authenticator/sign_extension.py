"""The WebAuthn signing extension ``previewSign`` (authenticator side).

Draft "WebAuthn signing extension", version 4 (yubicolabs/webauthn-sign-extension,
``4/index.html`` section 10.2.1; the snapshot python-fido2 2.2.1's ``PreviewSignExtension``
implements has the same authenticator steps), checked as well against python-fido2's device
tests ``test_preview_sign.py`` / ``test_sign_extension_v4.py`` (docs/conformance.md). Step
numbers below are the draft's authentication steps. A credential made with the extension
gets a separate *signing key*;
an assertion can then sign data the relying party chose with it, unaltered (no authData,
no clientDataHash), e.g. for a remote signing service or a wallet.

makeCredential input ``previewSign: {3: [alg...], 4: flags}`` (generateKey):
  the first algorithm of the list this key supports (:class:`SignAlgorithm`) is used;
  flags 0b000 (unattended), 0b001 (user presence required, the default when absent) or
  0b101 (user verification required). Signed output in authData ``{3: alg}``; unsigned
  output (response member 0x06, unsignedExtensionOutputs) ``{7: attestation object}``: an
  attestation object ``{1: fmt, 2: authData, 3: attStmt}`` whose attested credential data
  carries the signing key handle (as credential ID) and the signing public key, and whose
  own previewSign output is ``{4: flags}``.

getAssertion input ``previewSign: {2: keyHandle, 6: tbs, 7: args}`` (sign):
  signs ``tbs`` with the key behind ``keyHandle``; output in authData ``{6: signature}``.
  For the split algorithms (ESP256-split and ESP256-split-ARKG) ``tbs`` is the SHA-256
  digest of the message (the client hashes), for ES256/ESP256 the message itself.
  ESP256-split-ARKG needs ``args``: CBOR COSE_Sign_Args ``{3: -65539, -1: kh, -2: ctx}``
  of ARKG (:mod:`vfido.authenticator.arkg` derives the private key).

Key handles are sealed like credential IDs (``keystore.credential_id.seal`` under the
device's credential key, so nothing of the key is on disk in plaintext, and a reset kills
them), with the associated data bound to the RP and to the credential they were made with:
a key handle is refused with any other credential.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils

from vfido.authenticator import arkg, cbor
from vfido.authenticator.attestation import batch_certificate, sign_with_batch_key
from vfido.authenticator.authdata import AttestedCredentialData, AuthDataFlags, build_auth_data
from vfido.authenticator.cose import ES256, ESP256, CredentialKey
from vfido.authenticator.errors import CtapError, CtapStatus
from vfido.keystore import credential_id, entropy
from vfido.keystore.store import DeviceIdentity

PREVIEW_SIGN = "previewSign"


class Input(IntEnum):
    """Authenticator extension input keys."""

    KEY_HANDLE = 2
    ALGORITHMS = 3
    FLAGS = 4
    TBS = 6
    ARGS = 7


class Output(IntEnum):
    """Authenticator extension output keys."""

    ALGORITHM = 3
    FLAGS = 4
    SIGNATURE = 6
    ATTESTATION_OBJECT = 7


class SignAlgorithm(IntEnum):
    """The signing algorithms a signing key can be generated for."""

    ESP256 = ESP256  # -9: ECDSA P-256 SHA-256 over tbs
    ES256 = ES256  # -7: the same, polymorphic identifier
    #: draft-lundberg-cose-two-party-signing-algs: the client hashes, the key signs the digest.
    ESP256_SPLIT = -300
    #: The same, the value some prototypes use.
    ESP256_SPLIT_PROTOTYPE = -70009
    #: ESP256-split with a private key derived by ARKG-P256 (draft-bradleylundberg-cfrg-arkg,
    #: placeholder value).
    ESP256_SPLIT_ARKG = -65539


#: The algorithms whose tbs is a SHA-256 digest.
PREHASHED = frozenset(
    {
        SignAlgorithm.ESP256_SPLIT,
        SignAlgorithm.ESP256_SPLIT_PROTOTYPE,
        SignAlgorithm.ESP256_SPLIT_ARKG,
    }
)

#: COSE key type and algorithm of an ARKG-P256 public seed (placeholder values), and the
#: COSE algorithm of its KEM key (ECDH-ES + HKDF-256).
KTY_ARKG_PUB = -65537
ARKG_P256 = -65700
ECDH_ES_HKDF_256 = -25
#: COSE_Sign_Args labels (draft-bradleylundberg-cfrg-arkg, "COSE signing arguments").
ARGS_ALG = 3
ARGS_KH = -1
ARGS_CTX = -2


class SignFlags:
    """Signing-key flags (generateKey input 4): what signing with the key requires."""

    UP = 0b001
    UV = 0b100
    #: The only valid combinations: unattended, presence, presence and verification.
    VALID = (0b000, 0b001, 0b101)


# Sealed key handle plaintext (canonical CBOR map).
_KH_ALG = 1
_KH_KEY = 2  # P-256 scalar (32 bytes); ARKG: sk_bl || sk_kem (64 bytes)
_KH_FLAGS = 3
_SCALAR = 32
_BINDING_LABEL = b"vfido previewSign key handle\x00"


def _type_error(detail: str) -> CtapError:
    return CtapError(CtapStatus.CBOR_UNEXPECTED_TYPE, f"previewSign {detail}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class GenerateKeyInput:
    """makeCredential's previewSign input: the algorithm chosen and the flags."""

    algorithm: SignAlgorithm
    flags: int

    @classmethod
    def from_extensions(cls, extensions: Mapping[Any, Any] | None) -> GenerateKeyInput | None:
        """Parse (None without the extension). Raises before any user interaction."""
        if not extensions or PREVIEW_SIGN not in extensions:
            return None
        value = extensions[PREVIEW_SIGN]
        if not isinstance(value, dict):
            raise _type_error("input")
        # "? flags => &(unattended: 0b000, require-up: 0b001, require-uv: 0b101)
        # .default 0b001": a request that names no flags gets a key that needs presence.
        algorithms = value.get(Input.ALGORITHMS)
        flags = value.get(Input.FLAGS, SignFlags.UP)
        # Sign inputs in a registration: not a generateKey request.
        if Input.KEY_HANDLE in value or Input.TBS in value:
            raise CtapError(CtapStatus.INVALID_OPTION, "previewSign sign input in makeCredential")
        if algorithms is None:
            raise CtapError(CtapStatus.MISSING_PARAMETER, "previewSign algorithms")
        if not isinstance(algorithms, list) or not all(_is_int(a) for a in algorithms):
            raise _type_error("algorithms")
        if not _is_int(flags):
            raise _type_error("flags")
        # Flags other than unattended, UP, UP+UV: INVALID_OPTION (the suite's
        # test_register_invalid_flags, all 256 values).
        if flags not in SignFlags.VALID:
            raise CtapError(CtapStatus.INVALID_OPTION, "previewSign flags")
        # The first algorithm of the RP's list (most preferred first) this key supports.
        supported = {a.value for a in SignAlgorithm}
        for alg in algorithms:
            if alg in supported:
                return cls(SignAlgorithm(alg), flags)
        raise CtapError(CtapStatus.UNSUPPORTED_ALGORITHM, "previewSign algorithms")


@dataclass(frozen=True)
class SignInput:
    """getAssertion's previewSign input."""

    key_handle: bytes
    tbs: bytes = field(repr=False)
    args: bytes | None = None

    @classmethod
    def from_extensions(
        cls, extensions: Mapping[Any, Any] | None, *, has_allow_list: bool
    ) -> SignInput | None:
        """Parse (None without the extension). Raises before any user interaction."""
        if not extensions or PREVIEW_SIGN not in extensions:
            return None
        value = extensions[PREVIEW_SIGN]
        if not isinstance(value, dict):
            raise _type_error("input")
        # A key handle belongs to one credential: signing needs an allowList naming it.
        if not has_allow_list:
            raise CtapError(CtapStatus.INVALID_OPTION, "previewSign without an allowList")
        kh, tbs, args = value.get(Input.KEY_HANDLE), value.get(Input.TBS), value.get(Input.ARGS)
        # keyHandle and tbs are required; the suite expects INVALID_OPTION when either is
        # missing (test_assert_missing_required_parameter).
        if kh is None or tbs is None:
            raise CtapError(CtapStatus.INVALID_OPTION, "previewSign keyHandle/tbs missing")
        if not isinstance(kh, bytes) or not isinstance(tbs, bytes):
            raise _type_error("keyHandle/tbs")
        if args is not None and not isinstance(args, bytes):
            raise _type_error("args")
        return cls(kh, tbs, args)


def _binding(rp_id_hash: bytes, cred_id: bytes) -> bytes:
    """The associated data of a key handle: its RP and its credential."""
    return hashlib.sha256(_BINDING_LABEL + rp_id_hash + cred_id).digest()


def _scalar(data: bytes) -> int:
    return int.from_bytes(data, "big")


def _ec_cose(public: ec.EllipticCurvePublicKey, alg: int) -> dict[int, Any]:
    """An EC2 P-256 COSE_Key."""
    n = public.public_numbers()
    return {1: 2, 3: alg, -1: 1, -2: n.x.to_bytes(_SCALAR, "big"), -3: n.y.to_bytes(_SCALAR, "big")}


@dataclass(frozen=True)
class SigningKey:
    """A signing key: what its key handle seals."""

    algorithm: SignAlgorithm
    private: bytes = field(repr=False)
    flags: int

    @classmethod
    def generate(cls, request: GenerateKeyInput) -> SigningKey:
        """A new key. Randomness as every credential key draws it (CredentialKey.generate)."""
        count = 2 if request.algorithm is SignAlgorithm.ESP256_SPLIT_ARKG else 1
        private = b"".join(CredentialKey.generate(ES256).private_bytes() for _ in range(count))
        return cls(request.algorithm, private, request.flags)

    def seal(self, key: bytes, rp_id_hash: bytes, cred_id: bytes) -> bytes:
        plaintext = cbor.encode(
            {_KH_ALG: int(self.algorithm), _KH_KEY: self.private, _KH_FLAGS: self.flags}
        )
        return credential_id.seal(key, _binding(rp_id_hash, cred_id), plaintext)

    @classmethod
    def unseal(cls, key: bytes, rp_id_hash: bytes, cred_id: bytes, kh: bytes) -> SigningKey:
        """The key behind ``kh`` for this credential; INVALID_CREDENTIAL if it is not one."""
        plaintext = credential_id.unseal(key, _binding(rp_id_hash, cred_id), kh)
        if plaintext is None:
            raise CtapError(CtapStatus.INVALID_CREDENTIAL, "previewSign key handle")
        m = cbor.decode(plaintext)
        return cls(SignAlgorithm(m[_KH_ALG]), m[_KH_KEY], m[_KH_FLAGS])

    def _keys(self) -> list[ec.EllipticCurvePrivateKey]:
        curve = ec.SECP256R1()
        return [
            ec.derive_private_key(_scalar(self.private[i : i + _SCALAR]), curve)
            for i in range(0, len(self.private), _SCALAR)
        ]

    def cose_public_key(self) -> dict[int, Any]:
        """The signing public key: ESP256/ES256 COSE key (the split algorithms verify as
        ESP256), for ARKG the public seed ``{1: kty, 3: ARKG-P256, -1: pk_bl, -2: pk_kem,
        -3: ESP256 (the derived keys' algorithm)}``."""
        keys = self._keys()
        if self.algorithm is SignAlgorithm.ESP256_SPLIT_ARKG:
            return {
                1: KTY_ARKG_PUB,
                3: ARKG_P256,
                -1: _ec_cose(keys[0].public_key(), ES256),
                -2: _ec_cose(keys[1].public_key(), ECDH_ES_HKDF_256),
                -3: ESP256,
            }
        alg = ES256 if self.algorithm is SignAlgorithm.ES256 else ESP256
        return _ec_cose(keys[0].public_key(), alg)

    def checked_args(self, request: SignInput) -> dict[Any, Any] | None:
        """Steps 6 and 7: the COSE_Sign_Args, decoded (None: none were sent).

        6: "If *args* is not null and ``args[alg]`` is not present or does not equal
        *chosenAlg*, return ... CTAP2_ERR_INVALID_CREDENTIAL" (for every algorithm, not
        only those that need arguments). 7: an algorithm that needs arguments (ARKG) and got
        none: CTAP2_ERR_MISSING_PARAMETER. For ARKG both ``kh`` (-1) and ``ctx`` (-2) must
        be byte strings (draft-bradleylundberg-cfrg-arkg section 5.3: "kh and ctx are both
        REQUIRED"). Unknown labels are ignored.
        """
        if request.args is None:
            if self.algorithm is SignAlgorithm.ESP256_SPLIT_ARKG:
                raise CtapError(CtapStatus.MISSING_PARAMETER, "previewSign args")
            return None
        try:
            args = cbor.decode(request.args)
        except CtapError:
            raise CtapError(CtapStatus.INVALID_CREDENTIAL, "previewSign args") from None
        if not isinstance(args, dict) or args.get(ARGS_ALG) != self.algorithm:
            raise CtapError(CtapStatus.INVALID_CREDENTIAL, "previewSign args alg")
        if self.algorithm is SignAlgorithm.ESP256_SPLIT_ARKG and not (
            isinstance(args.get(ARGS_KH), bytes) and isinstance(args.get(ARGS_CTX), bytes)
        ):
            raise CtapError(CtapStatus.INVALID_CREDENTIAL, "previewSign ARKG args kh/ctx")
        return args

    def check_requirements(self, up: bool, uv: bool) -> None:
        """Steps 8 and 9: the flags chosen at generateKey against the UP and UV bits the
        assertion's authData carries (``up``, ``uv``): presence (UP_REQUIRED), verification
        (PUAT_REQUIRED: the platform should get a pinUvAuthToken)."""
        if self.flags & SignFlags.UP and not up:
            raise CtapError(CtapStatus.UP_REQUIRED, "previewSign key requires user presence")
        if self.flags & SignFlags.UV and not uv:
            raise CtapError(CtapStatus.PUAT_REQUIRED, "previewSign key requires verification")

    def signer(self, tbs: bytes, args: Mapping[Any, Any] | None) -> Signer:
        """What signs ``tbs`` (a SHA-256 digest for the split algorithms: else
        INVALID_LENGTH), with the arguments :meth:`checked_args` returned: ARKG derives its
        private key here (a key handle that does not derive: INVALID_CREDENTIAL). Called
        before the user is asked for anything; :meth:`Signer.sign` after."""
        private = self._keys()[0]
        if self.algorithm not in PREHASHED:
            return Signer(private, tbs, prehashed=False)
        if len(tbs) != hashlib.sha256().digest_size:
            raise CtapError(CtapStatus.INVALID_LENGTH, "previewSign tbs is not a SHA-256 digest")
        if self.algorithm is SignAlgorithm.ESP256_SPLIT_ARKG:
            assert args is not None  # checked_args: MISSING_PARAMETER
            private = self._arkg_key(args[ARGS_KH], args[ARGS_CTX])
        return Signer(private, tbs, prehashed=True)

    def _arkg_key(self, kh: bytes, ctx: bytes) -> ec.EllipticCurvePrivateKey:
        """The private key ARKG derives for the key handle ``kh`` and context ``ctx``."""
        try:
            sk = arkg.derive_secret_key(
                _scalar(self.private[:_SCALAR]), _scalar(self.private[_SCALAR:]), kh, ctx
            )
        except arkg.ArkgError:
            raise CtapError(CtapStatus.INVALID_CREDENTIAL, "previewSign ARKG key handle") from None
        return ec.derive_private_key(sk, ec.SECP256R1())


@dataclass(frozen=True)
class Signer:
    """A signing key's private key and the data it is to sign (:meth:`SigningKey.signer`)."""

    private: ec.EllipticCurvePrivateKey = field(repr=False)
    tbs: bytes = field(repr=False)
    prehashed: bool

    def sign(self) -> bytes:
        """DER ECDSA signature of ``tbs`` (a SHA-256 digest when ``prehashed``)."""
        if self.prehashed:
            return self.private.sign(self.tbs, entropy.ecdsa(utils.Prehashed(hashes.SHA256())))
        return self.private.sign(self.tbs, entropy.ecdsa(hashes.SHA256()))


@dataclass(frozen=True)
class GeneratedKey:
    """makeCredential: the new signing key, its handle, and the signed output."""

    key: SigningKey = field(repr=False)
    key_handle: bytes

    @property
    def signed_output(self) -> dict[int, int]:
        """The credential's authData output: "``alg``: *chosenAlg*" only."""
        return {Output.ALGORITHM: int(self.key.algorithm)}

    @property
    def attested_output(self) -> dict[int, int]:
        """The signing key's own attestation object's output: "``flags``: *signFlags*"
        only ("Present only in the attestation object embedded within the ``att-obj``
        output")."""
        return {Output.FLAGS: self.key.flags}


def generate_key(
    request: GenerateKeyInput, sealing_key: bytes, rp_id_hash: bytes, cred_id: bytes
) -> GeneratedKey:
    """generateKey: a signing key for the credential ``cred_id``, sealed in its handle."""
    key = SigningKey.generate(request)
    return GeneratedKey(key, key.seal(sealing_key, rp_id_hash, cred_id))


def unsigned_output(
    generated: GeneratedKey,
    credential_auth_data: bytes,
    credential_att_stmt: Mapping[str, Any],
    identity: DeviceIdentity,
    client_data_hash: bytes,
) -> dict[int, bytes]:
    """The unsigned extension output ``{7: attestation object}`` of the signing key.

    Its authData repeats the credential's rpIdHash and UP/UV/BE/BS flags with counter 0,
    the key handle as credential ID, the signing public key and the key's flags. It is
    attested like the credential: by the batch certificate when the credential's statement
    has one (``x5c``), else "none" (a signing key cannot self-attest: an ARKG seed signs
    nothing, and the client cannot know which key signed).
    """
    rp_id_hash = credential_auth_data[:32]
    flags = credential_auth_data[32] & ~(AuthDataFlags.AT | AuthDataFlags.ED)
    auth_data = build_auth_data(
        rp_id_hash,
        flags,
        0,
        AttestedCredentialData(
            identity.aaguid, generated.key_handle, generated.key.cose_public_key()
        ),
        {PREVIEW_SIGN: generated.attested_output},
    )
    if "x5c" in credential_att_stmt:
        fmt = "packed"
        att_stmt: dict[str, Any] = {
            "alg": ES256,
            "sig": sign_with_batch_key(identity, auth_data + client_data_hash),
            "x5c": [batch_certificate(identity)],
        }
    else:
        fmt, att_stmt = "none", {}
    return {Output.ATTESTATION_OBJECT: cbor.encode({1: fmt, 2: auth_data, 3: att_stmt})}
