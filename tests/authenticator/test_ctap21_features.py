"""CTAP 2.1 features through python-fido2: credential management, large blobs,
authenticatorConfig, extensions (client level, checked by value), built-in UV."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from fido2.client import ClientError, DefaultClientDataCollector, Fido2Client, UserInteraction
from fido2.ctap import CtapError
from fido2.ctap2.base import Ctap2
from fido2.ctap2.blob import LargeBlobs
from fido2.ctap2.config import Config
from fido2.ctap2.credman import CredentialManagement
from fido2.ctap2.pin import ClientPin, PinProtocolV2
from fido2.utils import sha256, websafe_decode
from fido2.webauthn import (
    PublicKeyCredentialDescriptor,
    PublicKeyCredentialType,
    PublicKeyCredentialUserEntity,
)

from tests.rp import ORIGIN, RP_ID
from tests.vkey import Key, running_key
from vfido.authenticator.config import Config as KeyConfig
from vfido.presence import AutoPresence, DenyPresence

PIN = "4321"
ERR = CtapError.ERR


class PinEntry(UserInteraction):
    def __init__(self, pin: str = PIN) -> None:
        self.pin = pin

    def request_pin(self, permissions: Any, rp_id: str | None) -> str | None:
        return self.pin


@pytest.fixture
def key() -> Iterator[Key]:
    with running_key() as k:
        yield k


def as_bytes(value: Any) -> bytes:
    """Client extension outputs are JSON-style: binary values come base64url encoded."""
    return websafe_decode(value) if isinstance(value, str) else bytes(value)


def set_pin(key: Key) -> None:
    ClientPin(Ctap2(key.device), PinProtocolV2()).set_pin(PIN)


def token(key: Key, permissions: ClientPin.PERMISSION, rp_id: str | None = None) -> bytes:
    return ClientPin(Ctap2(key.device), PinProtocolV2()).get_pin_token(PIN, permissions, rp_id)


def client(key: Key, origin: str = ORIGIN) -> Fido2Client:
    return Fido2Client(key.device, DefaultClientDataCollector(origin), PinEntry())


def create(
    key: Key,
    *,
    rp_id: str = RP_ID,
    user: bytes | None = None,
    rk: str = "required",
    uv: str = "discouraged",
    extensions: dict[str, Any] | None = None,
) -> Any:
    # python-fido2 accepts plain mappings for the options (typed as its dataclasses).
    options: Any = {
        "rp": {"id": rp_id, "name": rp_id.upper()},
        "user": {"id": user or os.urandom(8), "name": "alice", "displayName": "Alice"},
        "challenge": os.urandom(32),
        "pubKeyCredParams": [{"type": "public-key", "alg": -7}],
        "authenticatorSelection": {"residentKey": rk, "userVerification": uv},
        "extensions": extensions or {},
    }
    return client(key, f"https://{rp_id}").make_credential(options)


def get(
    key: Key,
    *,
    rp_id: str = RP_ID,
    allow: list[bytes] | None = None,
    uv: str = "discouraged",
    extensions: dict[str, Any] | None = None,
) -> Any:
    options: Any = {
        "rpId": rp_id,
        "challenge": os.urandom(32),
        "userVerification": uv,
        "extensions": extensions or {},
    }
    if allow is not None:
        options["allowCredentials"] = [{"type": "public-key", "id": c} for c in allow]
    return client(key, f"https://{rp_id}").get_assertion(options).get_response(0)


def bare_make_credential(ctap: Ctap2, **kwargs: Any) -> Any:
    """A makeCredential straight to the key (no client to add a PIN or check anything):
    ES256 for RP_ID, user ``u``; ``kwargs`` are ``Ctap2.make_credential``'s (options,
    pin_uv_param, pin_uv_protocol...)."""
    return ctap.make_credential(
        os.urandom(32), {"id": RP_ID}, {"id": b"u"}, [{"type": "public-key", "alg": -7}], **kwargs
    )


# --- makeCredential / getAssertion with a PIN -------------------------------


def test_pin_protected_registration_sets_uv(key: Key) -> None:
    set_pin(key)
    reg = create(key, uv="required")
    assert reg.response.attestation_object.auth_data.is_user_verified()
    assertion = get(key, uv="required")
    assert assertion.response.authenticator_data.is_user_verified()


def test_pin_set_but_not_given_is_refused_for_discoverable(key: Key) -> None:
    set_pin(key)
    ctap = Ctap2(key.device)
    with pytest.raises(CtapError) as info:
        bare_make_credential(ctap, options={"rk": True})
    assert info.value.code == ERR.PUAT_REQUIRED
    # makeCredUvNotRqd: a server-side credential needs no PIN
    assert ctap.get_info().options.get("makeCredUvNotRqd") is True
    bare_make_credential(ctap)


def test_wrong_pin_uv_auth_param_is_refused(key: Key) -> None:
    set_pin(key)
    ctap = Ctap2(key.device)
    with pytest.raises(CtapError) as info:
        bare_make_credential(ctap, pin_uv_param=os.urandom(32), pin_uv_protocol=2)
    assert info.value.code == ERR.PIN_AUTH_INVALID


def test_touch_probe_with_and_without_pin(key: Key) -> None:
    ctap = Ctap2(key.device)

    def probe() -> None:
        bare_make_credential(ctap, pin_uv_param=b"", pin_uv_protocol=2)

    with pytest.raises(CtapError) as info:
        probe()
    assert info.value.code == ERR.PIN_NOT_SET
    set_pin(key)
    with pytest.raises(CtapError) as info:
        probe()
    assert info.value.code == ERR.PIN_INVALID


# --- credential management -------------------------------------------------


def test_credential_management_enumerate_update_delete(key: Key) -> None:
    set_pin(key)
    ids = {}
    for rp in ("a.example", "b.example"):
        for user in (b"u1", b"u2"):
            reg = create(key, rp_id=rp, user=user)
            ids[(rp, user)] = reg.raw_id
    cm = CredentialManagement(
        Ctap2(key.device), PinProtocolV2(), token(key, ClientPin.PERMISSION.CREDENTIAL_MGMT)
    )
    meta = cm.get_metadata()
    assert meta[CredentialManagement.RESULT.EXISTING_CRED_COUNT] == 4
    rps = cm.enumerate_rps()
    assert sorted(r[CredentialManagement.RESULT.RP]["id"] for r in rps) == [
        "a.example",
        "b.example",
    ]
    creds = cm.enumerate_creds(sha256(b"a.example"))
    assert sorted(c[CredentialManagement.RESULT.USER]["id"] for c in creds) == [b"u1", b"u2"]
    assert all(c[CredentialManagement.RESULT.CRED_PROTECT] == 1 for c in creds)
    target = PublicKeyCredentialDescriptor(
        type=PublicKeyCredentialType.PUBLIC_KEY, id=ids[("a.example", b"u1")]
    )
    cm.update_user_info(
        target, PublicKeyCredentialUserEntity(id=b"u1", name="new", display_name="New")
    )
    updated = [
        c
        for c in cm.enumerate_creds(sha256(b"a.example"))
        if c[CredentialManagement.RESULT.USER]["id"] == b"u1"
    ]
    assert updated[0][CredentialManagement.RESULT.USER]["name"] == "new"
    cm.delete_cred(target)
    assert cm.get_metadata()[CredentialManagement.RESULT.EXISTING_CRED_COUNT] == 3
    with pytest.raises(ClientError):
        get(key, rp_id="a.example", allow=[ids[("a.example", b"u1")]])
    with pytest.raises(CtapError) as info:
        cm.delete_cred(target)
    assert info.value.code == ERR.NO_CREDENTIALS


def test_credential_management_needs_the_cm_permission_for_the_rp(key: Key) -> None:
    set_pin(key)
    create(key, rp_id="a.example")
    bound = token(key, ClientPin.PERMISSION.CREDENTIAL_MGMT, "b.example")
    cm = CredentialManagement(Ctap2(key.device), PinProtocolV2(), bound)
    with pytest.raises(CtapError) as info:
        cm.enumerate_rps()  # spans all RPs: refused with an RP-bound token
    assert info.value.code == ERR.PIN_AUTH_INVALID  # CTAP 2.1: missing permission / other RP


# --- large blobs -----------------------------------------------------------


def test_large_blob_through_the_client_extension(key: Key) -> None:
    set_pin(key)
    reg = create(key, extensions={"largeBlob": {"support": "required"}})
    assert reg.client_extension_results["largeBlob"]["supported"] is True
    data = os.urandom(1500)
    written = get(key, extensions={"largeBlob": {"write": data}})
    assert written.client_extension_results["largeBlob"]["written"] is True
    read = get(key, extensions={"largeBlob": {"read": True}})
    assert as_bytes(read.client_extension_results["largeBlob"]["blob"]) == data


def test_large_blob_array_direct(key: Key) -> None:
    blobs = LargeBlobs(Ctap2(key.device))
    assert blobs.read_blob_array() == []
    blob_key = os.urandom(32)
    blobs.put_blob(blob_key, b"hello" * 300)
    assert LargeBlobs(Ctap2(key.device)).get_blob(blob_key) == b"hello" * 300
    info = Ctap2(key.device).get_info()
    assert info.max_large_blob is not None and info.max_large_blob >= 4096


# --- authenticatorConfig -----------------------------------------------------


def test_set_min_pin_length_forces_a_change(key: Key) -> None:
    set_pin(key)  # 4 digits
    cfg = Config(
        Ctap2(key.device), PinProtocolV2(), token(key, ClientPin.PERMISSION.AUTHENTICATOR_CFG)
    )
    cfg.set_min_pin_length(6, rp_ids=[RP_ID])
    info = Ctap2(key.device).get_info()
    assert info.min_pin_length == 6 and info.force_pin_change is True
    with pytest.raises(CtapError) as err:
        token(key, ClientPin.PERMISSION.MAKE_CREDENTIAL)
    assert err.value.code == ERR.PIN_POLICY_VIOLATION  # 6.5.5.7.2 step 11: forcePINChange
    cp = ClientPin(Ctap2(key.device), PinProtocolV2())
    with pytest.raises(CtapError) as err:
        cp.change_pin(PIN, "12345")
    assert err.value.code == ERR.PIN_POLICY_VIOLATION
    cp.change_pin(PIN, "123456")
    assert Ctap2(key.device).get_info().force_pin_change is False
    # the minPinLength extension tells the listed RP the minimum
    options: Any = {
        "rp": {"id": RP_ID, "name": "x"},
        "user": {"id": b"u", "name": "u"},
        "challenge": os.urandom(32),
        "pubKeyCredParams": [{"type": "public-key", "alg": -7}],
        "extensions": {"minPinLength": True},
    }
    reg = Fido2Client(
        key.device, DefaultClientDataCollector(ORIGIN), PinEntry("123456")
    ).make_credential(options)
    extensions_out = reg.response.attestation_object.auth_data.extensions
    assert extensions_out is not None and extensions_out["minPinLength"] == 6


def test_toggle_always_uv(key: Key) -> None:
    cfg = Config(Ctap2(key.device))  # no PIN yet: config needs no token
    cfg.toggle_always_uv()
    assert Ctap2(key.device).get_info().options["alwaysUv"] is True


# --- extensions --------------------------------------------------------------


def test_cred_props_and_cred_protect(key: Key) -> None:
    set_pin(key)
    reg = create(
        key,
        rk="required",
        extensions={
            "credProps": True,
            "credentialProtectionPolicy": "userVerificationRequired",
            "enforceCredentialProtectionPolicy": True,
        },
    )
    assert reg.client_extension_results["credProps"]["rk"] is True
    assert reg.response.attestation_object.auth_data.extensions["credProtect"] == 3
    ctap = Ctap2(key.device)
    with pytest.raises(CtapError) as info:  # level 3 is invisible without UV
        ctap.get_assertion(RP_ID, os.urandom(32))
    assert info.value.code == ERR.NO_CREDENTIALS
    assert get(key, uv="required").raw_id == reg.raw_id


def test_prf_outputs_are_stable_per_credential_and_salt(key: Key) -> None:
    reg1 = create(key, rk="discouraged", extensions={"prf": {}})
    reg2 = create(key, rk="discouraged", extensions={"prf": {}})
    assert reg1.client_extension_results["prf"]["enabled"] is True
    salt = {"prf": {"eval": {"first": b"salt one"}}}

    def prf(cred: bytes, ext: dict[str, Any] = salt) -> bytes:
        out = get(key, allow=[cred], extensions=ext).client_extension_results["prf"]
        return as_bytes(out["results"]["first"])

    a = prf(reg1.raw_id)
    assert len(a) == 32
    assert prf(reg1.raw_id) == a  # same salt, same output
    assert prf(reg2.raw_id) != a  # another credential, another output
    assert prf(reg1.raw_id, {"prf": {"eval": {"first": b"salt two"}}}) != a


def test_hmac_secret_differs_with_uv(key: Key) -> None:
    reg = create(key, rk="discouraged", extensions={"prf": {}})
    salt = {"prf": {"eval": {"first": b"s"}}}
    without_uv = get(key, allow=[reg.raw_id], extensions=salt)
    set_pin(key)
    with_uv = get(key, allow=[reg.raw_id], extensions=salt, uv="required")
    assert with_uv.response.authenticator_data.is_user_verified()
    first = as_bytes(without_uv.client_extension_results["prf"]["results"]["first"])
    assert len(first) == 32
    assert first != as_bytes(with_uv.client_extension_results["prf"]["results"]["first"])


def test_cred_blob(key: Key) -> None:
    blob = os.urandom(32)
    reg = create(key, rk="required", extensions={"credBlob": blob})
    assert reg.client_extension_results.get("credBlob") is True or (
        reg.response.attestation_object.auth_data.extensions["credBlob"] is True
    )
    assertion = get(key, extensions={"getCredBlob": True})
    assert assertion.response.authenticator_data.extensions["credBlob"] == blob


# --- built-in user verification ----------------------------------------------


def test_builtin_uv_key() -> None:
    with running_key(config=KeyConfig(builtin_uv=True)) as k:
        info = Ctap2(k.device).get_info()
        assert info.options["uv"] is True and info.options["pinUvAuthToken"] is True
        reg = create(k, uv="required")
        assert reg.response.attestation_object.auth_data.is_user_verified()
        assert get(k, uv="required").response.authenticator_data.is_user_verified()


def test_builtin_uv_without_pin_denies_discoverable_credential_without_uv() -> None:
    """CTAP 2.1 authenticatorMakeCredential step 7 (makeCredUvNotRqd true; step 8 alike):
    protected by user verification, "uv" false, no pinUvAuthParam, "rk" true -> "If ClientPin
    option ID is true and the noMcGaPermissionsWithClientPin option ID is absent or false, end
    the operation by returning CTAP2_ERR_PUAT_REQUIRED. Otherwise, end the operation by
    returning CTAP2_ERR_OPERATION_DENIED." With built-in UV and no PIN, PUAT_REQUIRED made
    libfido2's `fido2-cred -M -r` ask for a PIN the key does not have (issue #14)."""
    with running_key(config=KeyConfig(builtin_uv=True)) as k:
        ctap = Ctap2(k.device)
        assert ctap.get_info().options["clientPin"] is False
        with pytest.raises(CtapError) as info:
            bare_make_credential(ctap, options={"rk": True})
        assert info.value.code == ERR.OPERATION_DENIED
        made = bare_make_credential(ctap, options={"rk": True, "uv": True})
        assert made.auth_data.is_user_verified()
        bare_make_credential(ctap)  # non-discoverable: makeCredUvNotRqd
        set_pin(k)  # now "ClientPin option ID is true": the platform can use the PIN
        with pytest.raises(CtapError) as info:
            bare_make_credential(ctap, options={"rk": True})
        assert info.value.code == ERR.PUAT_REQUIRED


class FailUv(AutoPresence):
    def verify_user(self, request: Any, context: Any, timeout: float) -> Any:
        from vfido.authenticator.env import PresenceResult

        return PresenceResult.DENIED


def test_builtin_uv_failures_count_down() -> None:
    with running_key(presence=FailUv(), config=KeyConfig(builtin_uv=True)) as k:
        cp = ClientPin(Ctap2(k.device), PinProtocolV2())
        assert cp.get_uv_retries() == 8
        with pytest.raises(CtapError) as info:
            cp.get_uv_token(ClientPin.PERMISSION.MAKE_CREDENTIAL, RP_ID)
        assert info.value.code == ERR.UV_INVALID
        assert cp.get_uv_retries() == 7


def test_deny_presence_is_operation_denied_under_pin() -> None:
    with running_key(presence=DenyPresence()) as k:
        ClientPin(Ctap2(k.device), PinProtocolV2()).set_pin(PIN)
        with pytest.raises(ClientError) as info:
            create(k, uv="required")
        assert info.value.cause.code == ERR.OPERATION_DENIED
