"""The WebAuthn signing extension ``previewSign`` (authenticator/sign_extension.py, arkg.py).

python-fido2's client (``PreviewSignExtension``) and raw ``Ctap2`` calls drive the key;
every signature is checked by an independent verifier: python-fido2's COSE classes and
its ARKG (``fido2.arkg``, used here only, never by the key), or ``cryptography``.
"""

from __future__ import annotations

import os
from typing import Any

import cryptography
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from fido2 import cbor
from fido2.client import DefaultClientDataCollector, Fido2Client, UserInteraction
from fido2.cose import ES256, CoseKey
from fido2.ctap import CtapError
from fido2.ctap2 import Ctap2
from fido2.ctap2.pin import ClientPin
from fido2.server import Fido2Server
from fido2.utils import sha256, websafe_decode, websafe_encode
from fido2.webauthn import AttestationObject

from tests.ctap2_helpers import (
    RP_ID,
    GrantPresence,
    Key,
    descriptor,
    make_key,
    params,
    rp,
    user,
)
from vfido.authenticator import arkg
from vfido.authenticator.config import Config
from vfido.authenticator.env import PresenceResult
from vfido.authenticator.sign_extension import PREVIEW_SIGN, SignAlgorithm

try:  # the previewSign client and ARKG came with python-fido2 2.2.1
    from fido2 import arkg as fido2_arkg
    from fido2.cose import ARKG_P256_PLACEHOLDER
    from fido2.ctap2.extensions import PreviewSignExtension
except ImportError:  # pragma: no cover - the dependency-floor run (fido2 2.2.0)
    pytest.skip("python-fido2 before 2.2.1: no previewSign client", allow_module_level=True)

#: python-fido2's ARKG (the verifier here) wants cryptography >= 45; the key's own code
#: runs on the floor, 44.
needs_fido2_arkg = pytest.mark.skipif(
    int(cryptography.__version__.split(".")[0]) < 45,
    reason="python-fido2's ARKG verifier needs cryptography >= 45",
)

ARKG = SignAlgorithm.ESP256_SPLIT_ARKG
PIN = "31415926"
ALL = [a.value for a in SignAlgorithm]


class PinInteraction(UserInteraction):
    def request_pin(self, permissions: Any, rp_id: str | None) -> str | None:
        return PIN


def client(key: Key) -> Fido2Client:
    return Fido2Client(
        key.device,
        client_data_collector=DefaultClientDataCollector(f"https://{RP_ID}"),
        user_interaction=PinInteraction(),
        extensions=[PreviewSignExtension()],
    )


def generate(
    ctap2: Ctap2, algorithms: list[int], flags: int = 0, **kwargs: Any
) -> tuple[Any, int, bytes, CoseKey, AttestationObject]:
    """Raw makeCredential with generateKey: (response, alg, key handle, public key, att obj)."""
    response = ctap2.make_credential(
        os.urandom(32),
        rp(),
        user(),
        params(),
        extensions={PREVIEW_SIGN: {3: algorithms, 4: flags}},
        **kwargs,
    )
    signed = response.auth_data.extensions[PREVIEW_SIGN]
    raw = cbor.decode(response.unsigned_extension_outputs[PREVIEW_SIGN][7])
    att = AttestationObject.create(raw[1], raw[2], raw[3])
    data = att.auth_data.credential_data
    assert data is not None
    return response, signed[3], bytes(data.credential_id), data.public_key, att


def sign(
    ctap2: Ctap2, response: Any, kh: bytes, tbs: bytes, args: Any = None, up: bool = False
) -> bytes:
    inputs: dict[int, Any] = {2: kh, 6: tbs}
    if args is not None:
        inputs[7] = cbor.encode(args)
    assertion = ctap2.get_assertion(
        RP_ID,
        os.urandom(32),
        [descriptor(response.auth_data.credential_data.credential_id)],
        extensions={PREVIEW_SIGN: inputs},
        options={"up": up},
    )
    return bytes(assertion.auth_data.extensions[PREVIEW_SIGN][6])


def test_get_info_lists_preview_sign() -> None:
    assert PREVIEW_SIGN in Ctap2(make_key().device).get_info().extensions


@needs_fido2_arkg
@pytest.mark.parametrize("uv", ["discouraged", "required"])
def test_client_arkg_end_to_end(uv: str) -> None:
    """What an RP does: register with generateKey(ESP256-split-ARKG), derive a public key
    with ARKG on its own, have the key sign a digest, verify with the derived key."""
    key = make_key()
    ClientPin(key.ctap2()).set_pin(PIN)
    server = Fido2Server({"id": RP_ID, "name": "Example"}, attestation="none")
    options, state = server.register_begin(
        {"id": b"user", "name": "alice"},
        user_verification=uv,
        resident_key_requirement="discouraged",
    )
    ext = {PREVIEW_SIGN: {"generateKey": {"algorithms": [ARKG]}}}
    result = client(key).make_credential({**options["publicKey"], "extensions": ext})
    credential = server.register_complete(state, result).credential_data
    generated = result.client_extension_results.previewSign.generated_key
    assert generated.algorithm == ARKG
    seed = CoseKey.parse(cbor.decode(websafe_decode(generated["publicKey"])))
    assert isinstance(seed, ARKG_P256_PLACEHOLDER)
    # The signing key's attestation object: same RP and AAGUID, counter 0, its own ID.
    inner = generated.attestation_object.auth_data
    assert inner.rp_id_hash == sha256(RP_ID.encode())
    assert inner.counter == 0
    assert inner.credential_data.aaguid == credential.aaguid
    assert inner.credential_data.credential_id != credential.credential_id
    # Its previewSign output: the flags alone (test_outputs_sit_where_the_draft_puts_them).
    assert inner.extensions[PREVIEW_SIGN] == {4: 0b101 if uv == "required" else 0b001}

    derived, args = seed.derive_public_key(os.urandom(32), b"vfido test")
    message = b"a document to sign"
    request, state = server.authenticate_begin([credential], user_verification=uv)
    by_credential = {
        websafe_encode(credential.credential_id): {
            "keyHandle": generated.key_handle,
            "tbs": sha256(message),
            "additionalArgs": cbor.encode(args),
        }
    }
    ext = {PREVIEW_SIGN: {"signByCredential": by_credential}}
    response = client(key).get_assertion({**request["publicKey"], "extensions": ext})
    signature = response.get_response(0).client_extension_results[PREVIEW_SIGN]["signature"]
    derived.verify(message, websafe_decode(signature))
    with pytest.raises(InvalidSignature):
        derived.verify(b"another document", websafe_decode(signature))


@pytest.mark.parametrize(
    "algorithm", [SignAlgorithm.ESP256, SignAlgorithm.ES256, -300, -70009], ids=str
)
def test_each_algorithm_signs_what_its_public_key_verifies(algorithm: int) -> None:
    ctap2 = make_key().ctap2()
    response, alg, kh, public, att = generate(ctap2, [-18, algorithm])  # -18: not ours
    assert alg == algorithm
    assert public[3] == (-7 if algorithm == -7 else -9)  # split keys verify as ESP256
    assert att.fmt == "packed" and "x5c" in att.att_stmt  # attested like the credential
    message = os.urandom(100)
    prehashed = algorithm in (-300, -70009)
    signature = sign(ctap2, response, kh, sha256(message) if prehashed else message)
    public.verify(message, signature)


def test_packed_attestation_of_the_signing_key_verifies() -> None:
    """The signing key's attestation statement is the batch key's signature over its
    authData || clientDataHash (checked with cryptography against the x5c certificate)."""
    from cryptography import x509

    ctap2 = make_key().ctap2()
    cdh = os.urandom(32)
    response = ctap2.make_credential(
        cdh, rp(), user(), params(), extensions={PREVIEW_SIGN: {3: [-9], 4: 0}}
    )
    raw = cbor.decode(response.unsigned_extension_outputs[PREVIEW_SIGN][7])
    certificate = x509.load_der_x509_certificate(raw[3]["x5c"][0])
    public = certificate.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    public.verify(raw[3]["sig"], raw[2] + cdh, ec.ECDSA(hashes.SHA256()))


def test_the_first_supported_algorithm_wins_and_unsupported_lists_fail() -> None:
    ctap2 = make_key().ctap2()
    assert generate(ctap2, [-8, -65539, -9])[1] == -65539
    with pytest.raises(CtapError) as exc:
        generate(ctap2, [-18, -8])
    assert exc.value.code == CtapError.ERR.UNSUPPORTED_ALGORITHM


@pytest.mark.parametrize("flags", [0b010, 0b011, 0b100, 0b110, 0b111, 0b1000, 0xFF])
def test_invalid_flags_are_refused(flags: int) -> None:
    with pytest.raises(CtapError) as exc:
        generate(make_key().ctap2(), ALL, flags)
    assert exc.value.code == CtapError.ERR.INVALID_OPTION


def test_presence_and_verification_flags_are_enforced() -> None:
    ctap2 = make_key().ctap2()
    response, _, kh, public, _ = generate(ctap2, [-9], 0b001)
    tbs = os.urandom(32)
    with pytest.raises(CtapError) as exc:
        sign(ctap2, response, kh, tbs, up=False)
    assert exc.value.code == CtapError.ERR.UP_REQUIRED
    public.verify(tbs, sign(ctap2, response, kh, tbs, up=True))

    response, _, kh, _, _ = generate(ctap2, [-9], 0b101)
    with pytest.raises(CtapError) as exc:
        sign(ctap2, response, kh, tbs, up=True)
    assert exc.value.code == CtapError.ERR.PUAT_REQUIRED


def test_flags_default_to_presence_required() -> None:
    """Draft v4, authenticator extension input: "? flags => &(unattended: 0b000,
    require-up: 0b001, require-uv: 0b101) .default 0b001". A generateKey request without
    flags makes a key that needs presence, not an unattended one."""
    key = make_key()
    ctap2 = key.ctap2()
    response = ctap2.make_credential(
        os.urandom(32), rp(), user(), params(), extensions={PREVIEW_SIGN: {3: [-9]}}
    )
    raw = cbor.decode(response.unsigned_extension_outputs[PREVIEW_SIGN][7])
    att = AttestationObject.create(raw[1], raw[2], raw[3])
    assert att.auth_data.extensions[PREVIEW_SIGN] == {4: 0b001}
    data = att.auth_data.credential_data
    assert data is not None
    kh, tbs = bytes(data.credential_id), os.urandom(32)
    with pytest.raises(CtapError) as exc:
        sign(ctap2, response, kh, tbs, up=False)
    assert exc.value.code == CtapError.ERR.UP_REQUIRED
    data.public_key.verify(tbs, sign(ctap2, response, kh, tbs, up=True))


def test_outputs_sit_where_the_draft_puts_them() -> None:
    """Draft v4, authenticator extension output: ``alg`` // ``sig`` // ``flags`` are
    alternatives; the credential's authData carries "alg: chosenAlg", and ``flags`` is
    "Present only in the attestation object embedded within the att-obj output"."""
    response, alg, _, _, att = generate(make_key().ctap2(), [-300], 0b001)
    assert response.auth_data.extensions[PREVIEW_SIGN] == {3: -300}
    assert att.auth_data.extensions[PREVIEW_SIGN] == {4: 0b001}
    assert alg == -300


def test_args_name_the_keys_algorithm_whatever_it_is() -> None:
    """Draft v4, authentication step 6: "If args is not null and args[alg] is not present
    or does not equal chosenAlg, return CTAP2_ERR_INVALID_CREDENTIAL" -- for keys that need
    no arguments too."""
    ctap2 = make_key().ctap2()
    response, _, kh, public, _ = generate(ctap2, [-9], 0)
    tbs = os.urandom(32)
    for args in ({3: ARKG, -1: b"kh", -2: b"ctx"}, {}, {-1: b"kh"}, {3: -7}):
        with pytest.raises(CtapError) as exc:
            sign(ctap2, response, kh, tbs, args)
        assert exc.value.code == CtapError.ERR.INVALID_CREDENTIAL, args
    public.verify(tbs, sign(ctap2, response, kh, tbs, {3: -9, 42: 1}))  # its own: fine


def test_arguments_are_checked_before_the_keys_flags_and_the_user() -> None:
    """Draft v4: the arguments (steps 6, 7) come before the flags (8: UP_REQUIRED), and
    nothing is asked of the user for a request that fails them."""
    key = make_key()
    ctap2 = key.ctap2()
    response, _, kh, _, _ = generate(ctap2, [ARKG], 0b001)
    tbs = sha256(b"m")
    with pytest.raises(CtapError) as exc:
        sign(ctap2, response, kh, tbs, None, up=False)
    assert exc.value.code == CtapError.ERR.MISSING_PARAMETER
    asked = len(key.presence.requests)
    for up in (False, True):
        with pytest.raises(CtapError) as exc:
            sign(ctap2, response, kh, tbs, {3: -9, -1: b"kh", -2: b"ctx"}, up=up)
        assert exc.value.code == CtapError.ERR.INVALID_CREDENTIAL
    assert len(key.presence.requests) == asked


@needs_fido2_arkg
def test_what_the_signature_needs_is_checked_before_the_user_is_asked() -> None:
    """An ARKG key handle that does not derive (INVALID_CREDENTIAL) and a split algorithm's
    tbs that is not a digest (INVALID_LENGTH) were refused only after a touch (the diff
    review): now before the user is asked for anything."""
    key = make_key()
    ctap2 = key.ctap2()
    response, _, kh, seed, _ = generate(ctap2, [ARKG], 0b001)
    _, args = seed.derive_public_key(os.urandom(32), b"ctx")
    asked = len(key.presence.requests)
    bad_handle = {**args, -1: args[-1][:-1] + bytes([args[-1][-1] ^ 1])}
    for tbs, arguments, code in (
        (sha256(b"m"), bad_handle, CtapError.ERR.INVALID_CREDENTIAL),
        (b"not a digest", args, CtapError.ERR.INVALID_LENGTH),
    ):
        with pytest.raises(CtapError) as exc:
            sign(ctap2, response, kh, tbs, arguments, up=True)
        assert exc.value.code == code
    assert len(key.presence.requests) == asked


class _VerifyingUser(GrantPresence):
    def verify_user(self, request: Any, context: Any, timeout: Any) -> PresenceResult:
        return PresenceResult.GRANTED


@pytest.mark.parametrize("flags", [0b001, 0b101])
def test_built_in_verification_is_the_presence_the_flags_ask_for(flags: int) -> None:
    """Draft v4, step 8: "If the UP bit is set in signFlags but not in authData.flags,
    return CTAP2_ERR_UP_REQUIRED" -- the authData's bit, which CTAP 2.1 getAssertion step 8
    sets after built-in user verification whatever the "up" option."""
    key = make_key(Config(builtin_uv=True), presence=_VerifyingUser())
    ctap2 = key.ctap2()
    response, _, kh, public, _ = generate(ctap2, [-9], flags, options={"uv": True})
    tbs = os.urandom(32)
    assertion = ctap2.get_assertion(
        RP_ID,
        os.urandom(32),
        [descriptor(response.auth_data.credential_data.credential_id)],
        extensions={PREVIEW_SIGN: {2: kh, 6: tbs}},
        options={"up": False, "uv": True},
    )
    assert assertion.auth_data.flags & 0b101 == 0b101  # UP and UV
    public.verify(tbs, bytes(assertion.auth_data.extensions[PREVIEW_SIGN][6]))


def test_unattended_key_signs_without_presence() -> None:
    key = make_key()
    ctap2 = key.ctap2()
    response, _, kh, public, _ = generate(ctap2, [-9], 0)
    asked = len(key.presence.requests)
    tbs = os.urandom(20)
    public.verify(tbs, sign(ctap2, response, kh, tbs, up=False))
    assert len(key.presence.requests) == asked


def test_a_key_handle_only_works_with_its_credential() -> None:
    """Key handles are sealed and bound to the RP and the credential they were made with."""
    ctap2 = make_key().ctap2()
    first, _, kh1, _, _ = generate(ctap2, [-9])
    second, _, kh2, _, _ = generate(ctap2, [-9])
    with pytest.raises(CtapError) as exc:
        sign(ctap2, second, kh1, os.urandom(32))
    assert exc.value.code == CtapError.ERR.INVALID_CREDENTIAL
    # A key of another authenticator (another device key) is not one of ours either.
    _, _, other_kh, _, _ = generate(make_key().ctap2(), [-9])
    with pytest.raises(CtapError) as exc:
        sign(ctap2, first, other_kh, os.urandom(32))
    assert exc.value.code == CtapError.ERR.INVALID_CREDENTIAL
    assert kh1 != kh2


def test_key_handles_hold_no_plaintext_key_and_die_with_a_reset() -> None:
    key = make_key()
    ctap2 = key.ctap2()
    response, _, kh, _, _ = generate(ctap2, [-9])
    # The handle is sealed like a credential ID (version 0x01, nonce, AES-GCM ciphertext
    # and tag under the device key); a reset replaces that key.
    assert kh[0] == 0x01 and len(kh) > 29
    ctap2.reset()
    with pytest.raises(CtapError):
        sign(ctap2, response, kh, os.urandom(32))


def test_sign_without_allow_list_or_required_inputs() -> None:
    ctap2 = make_key().ctap2()
    response, _, kh, _, _ = generate(ctap2, ALL, options={"rk": True})
    for inputs in ({2: kh, 6: os.urandom(32)}, {6: os.urandom(32)}, {2: kh}):
        allow = (
            None
            if len(inputs) == 2
            else [descriptor(response.auth_data.credential_data.credential_id)]
        )
        with pytest.raises(CtapError) as exc:
            ctap2.get_assertion(
                RP_ID,
                os.urandom(32),
                allow,
                extensions={PREVIEW_SIGN: inputs},
                options={"up": False},
            )
        assert exc.value.code == CtapError.ERR.INVALID_OPTION


@needs_fido2_arkg
def test_arkg_arguments_are_checked() -> None:
    ctap2 = make_key().ctap2()
    response, _, kh, seed, _ = generate(ctap2, [ARKG])
    derived, args = seed.derive_public_key(os.urandom(32), b"ctx")
    tbs = sha256(b"m")
    derived.verify(b"m", sign(ctap2, response, kh, tbs, {**args, 42: 1337}))  # unknown: ignored
    cases: list[tuple[Any, int]] = [
        (None, CtapError.ERR.MISSING_PARAMETER),
        ({k: v for k, v in args.items() if k != 3}, CtapError.ERR.INVALID_CREDENTIAL),
        ({**args, 3: ARKG + 1}, CtapError.ERR.INVALID_CREDENTIAL),
        ({**args, -2: b"another context"}, CtapError.ERR.INVALID_CREDENTIAL),
        ({**args, -1: args[-1][:-1] + bytes([args[-1][-1] ^ 1])}, CtapError.ERR.INVALID_CREDENTIAL),
        ({**args, -1: b"short"}, CtapError.ERR.INVALID_CREDENTIAL),
        ({**args, -2: "ctx"}, CtapError.ERR.INVALID_CREDENTIAL),
    ]
    # draft-bradleylundberg-cfrg-arkg section 5.3: "kh and ctx are both REQUIRED": not an
    # empty context when none is given (which would derive the right key here).
    _, empty_context_args = seed.derive_public_key(os.urandom(32), b"")
    cases.append(({3: ARKG, -1: empty_context_args[-1]}, CtapError.ERR.INVALID_CREDENTIAL))
    for bad, code in cases:
        with pytest.raises(CtapError) as exc:
            sign(ctap2, response, kh, tbs, bad)
        assert exc.value.code == code, bad
    with pytest.raises(CtapError) as exc:
        sign(ctap2, response, kh, b"not a digest", args)
    assert exc.value.code == CtapError.ERR.INVALID_LENGTH


# --- ARKG-P256 against python-fido2's independent implementation -------------------------


def _cose(key: ec.EllipticCurvePrivateKey, alg: int) -> dict[int, Any]:
    m = dict(ES256.from_cryptography_key(key.public_key()))
    m[3] = alg
    return m


@needs_fido2_arkg
@pytest.mark.parametrize("ctx", [b"", b"x", os.urandom(64)], ids=["empty", "one", "64"])
def test_arkg_secret_key_matches_fido2_public_key_derivation(ctx: bytes) -> None:
    bl, kem = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    seed = ARKG_P256_PLACEHOLDER(
        {1: -65537, 3: -65700, -1: _cose(bl, -7), -2: _cose(kem, -25), -3: -9}
    )
    for _ in range(3):
        derived, args = seed.derive_public_key(os.urandom(32), ctx)
        sk = arkg.derive_secret_key(
            bl.private_numbers().private_value, kem.private_numbers().private_value, args[-1], ctx
        )
        public = ec.derive_private_key(sk, ec.SECP256R1()).public_key().public_numbers()
        assert (public.x.to_bytes(32, "big"), public.y.to_bytes(32, "big")) == (
            derived[-2],
            derived[-3],
        )


@needs_fido2_arkg
def test_arkg_refuses_long_contexts_and_foreign_handles() -> None:
    bl, kem = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    other = ec.generate_private_key(ec.SECP256R1())
    seed = ARKG_P256_PLACEHOLDER(
        {1: -65537, 3: -65700, -1: _cose(bl, -7), -2: _cose(other, -25), -3: -9}
    )
    _, args = seed.derive_public_key(os.urandom(32), b"")
    secrets = (bl.private_numbers().private_value, kem.private_numbers().private_value)
    with pytest.raises(arkg.ArkgError):  # made for another KEM key: the tag does not verify
        arkg.derive_secret_key(*secrets, args[-1], b"")
    with pytest.raises(arkg.ArkgError):
        arkg.derive_secret_key(*secrets, args[-1], bytes(65))


@needs_fido2_arkg
@pytest.mark.parametrize("length", [0, 1, 32, 48, 97, 255])
def test_expand_message_xmd_matches_fido2(length: int) -> None:
    msg, dst = os.urandom(40), b"vfido-test-DST"
    theirs = fido2_arkg._HTF(dst, arkg.P256_ORDER, 48, hashes.SHA256()).expand_message_xmd(
        msg, length
    )
    assert arkg.expand_message_xmd(msg, dst, length) == theirs
