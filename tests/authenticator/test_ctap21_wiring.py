"""CTAP 2.1 wiring: enterprise attestation, alwaysUv, attestationFormatsPreference,
PIN retry persistence, built-in UV options, and fuzzing of the 2.1 commands."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import pytest
from fido2.attestation.packed import PackedAttestation
from fido2.ctap import CtapError
from fido2.ctap2.base import Ctap2
from fido2.ctap2.config import Config as FidoConfig
from fido2.ctap2.pin import ClientPin, PinProtocolV2
from fido2.webauthn import (
    AuthenticatorData,
    PublicKeyCredentialDescriptor,
    PublicKeyCredentialType,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.ctap2_helpers import (
    CLIENT_DATA_HASH,
    EventContext,
    GrantPresence,
    Key,
    descriptor,
    make_credential_map,
    make_key,
    params,
    rp,
    user,
)
from tests.vkey import running_key
from vfido.authenticator import cbor
from vfido.authenticator.config import Config
from vfido.authenticator.env import KeepaliveStatus
from vfido.authenticator.errors import CtapStatus
from vfido.keystore.sqlite_store import SqliteKeyStore
from vfido.keystore.store import KeyStore
from vfido.presence import AutoPresence, DenyUvPresence

ERR = CtapError.ERR
PIN = "2468"
MC, GA, CLIENT_PIN, CRED_MGMT, LARGE_BLOBS, CONFIG = 0x01, 0x02, 0x06, 0x0A, 0x0C, 0x0D


def make(ctap: Ctap2, rp_id: str = "example.com", **kwargs: Any) -> Any:
    return ctap.make_credential(
        CLIENT_DATA_HASH,
        {"id": rp_id},
        {"id": os.urandom(8), "name": "u"},
        [{"type": "public-key", "alg": -7}],
        **kwargs,
    )


def pin_token(ctap: Ctap2, permissions: ClientPin.PERMISSION, rp_id: str | None = None) -> bytes:
    return ClientPin(ctap, PinProtocolV2()).get_pin_token(PIN, permissions, rp_id)


def pin_param(token: bytes) -> dict[str, Any]:
    return {
        "pin_uv_param": PinProtocolV2().authenticate(token, CLIENT_DATA_HASH),  # type: ignore[no-untyped-call]
        "pin_uv_protocol": 2,
    }


# --- enterprise attestation ----------------------------------------------------


def test_enterprise_attestation_not_configured() -> None:
    with running_key() as k:
        ctap = Ctap2(k.device)
        assert "ep" not in ctap.get_info().options
        with pytest.raises(CtapError) as info:
            make(ctap, enterprise_attestation=1)
        assert info.value.code == ERR.INVALID_PARAMETER
        # getInfo's authenticatorConfigCommands (CTAP 2.3) leaves it out, so python-fido2
        # refuses to send it; sent anyway, 6.11 step 1: a subcommand not supported.
        assert ctap.get_info().authenticator_config_commands == [2, 3]
        with pytest.raises(ValueError, match="not supported"):
            FidoConfig(ctap).enable_enterprise_attestation()
        with pytest.raises(CtapError) as info:
            ctap.send_cbor(0x0D, {1: 1})
        assert info.value.code == ERR.INVALID_PARAMETER


def _refused(code: int, *calls: Callable[[], object]) -> None:
    """Each of ``calls`` raises a CtapError with ``code``."""
    for call in calls:
        with pytest.raises(CtapError) as err:
            call()
        assert err.value.code == code


def _assert_batch_attestation(att: Any) -> None:
    assert att.fmt == "packed" and "x5c" in att.att_stmt
    PackedAttestation().verify(att.att_stmt, att.auth_data, CLIENT_DATA_HASH)


def test_enterprise_attestation_mode_1_only_for_listed_rps() -> None:
    config = Config(attestation="none", enterprise_attestation=1, enterprise_rp_ids=("corp.test",))
    with running_key(config=config) as k:
        ctap = Ctap2(k.device)
        assert ctap.get_info().options["ep"] is False
        # Its only attestation is the enterprise one, packed: attestationFormats says so.
        assert ctap.send_cbor(Ctap2.CMD.GET_INFO)[0x16] == ["packed"]
        with pytest.raises(CtapError) as info:  # capable, but not enabled yet
            make(ctap, "corp.test", enterprise_attestation=1)
        assert info.value.code == ERR.INVALID_PARAMETER
        FidoConfig(ctap).enable_enterprise_attestation()
        assert ctap.get_info().options["ep"] is True
        att = make(ctap, "corp.test", enterprise_attestation=1)
        assert att.ep_att is True
        _assert_batch_attestation(att)  # even though the key is set to "none"
        # CTAP 2.1 section 6.1.2 step 9 (note): "An authenticator that only supports
        # vendor-facilitated enterprise attestation is obliged to treat enterpriseAttestation
        # parameter values 1 and 2 equivalently" (an enterprise-managed platform sends 2; an
        # outside review found 2 answered with a plain attestation for a listed RP).
        managed = make(ctap, "corp.test", enterprise_attestation=2)
        assert managed.ep_att is True
        _assert_batch_attestation(managed)
        for mode in (1, 2):
            plain = make(ctap, "other.test", enterprise_attestation=mode)
            assert plain.ep_att is None and plain.fmt == "none"
        with pytest.raises(CtapError) as info:
            make(ctap, "corp.test", enterprise_attestation=3)
        assert info.value.code == ERR.INVALID_OPTION


def test_enterprise_attestation_mode_2_for_any_rp() -> None:
    with running_key(config=Config(enterprise_attestation=2)) as k:
        ctap = Ctap2(k.device)
        FidoConfig(ctap).enable_enterprise_attestation()
        att = make(ctap, "anything.test", enterprise_attestation=2)
        assert att.ep_att is True
        _assert_batch_attestation(att)
        assert make(ctap, "anything.test", enterprise_attestation=1).ep_att is None
        assert make(ctap, "anything.test").ep_att is None


# --- attestationFormatsPreference (CTAP 2.2) -----------------------------------


@pytest.mark.parametrize(
    ("configured", "preference", "expected"),
    [
        ("packed", ["none"], "none"),
        ("packed", ["tpm", "none", "packed"], "none"),
        ("packed", ["tpm", "packed"], "packed"),
        ("packed", ["apple"], "packed"),  # nothing supported: the default
        ("none", ["packed"], "none"),  # no batch attestation offered
        ("self", ["packed"], "packed"),
    ],
)
def test_attestation_formats_preference(
    configured: str, preference: list[str], expected: str
) -> None:
    key = make_key(Config(attestation=configured))
    status, response = key.call(MC, make_credential_map(attestation_formats_preference=preference))
    assert status == CtapStatus.OK
    assert response[1] == expected
    assert (response[3] == {}) == (expected == "none")
    # CTAP 2.2 section 6.4 (0x16): "none" is implied and MUST be omitted, and the list MUST
    # NOT be empty if present: a key that attests nothing leaves the member out.
    status, info = key.call(0x04)
    assert status == CtapStatus.OK
    assert info.get(0x16) == (None if configured == "none" else ["packed"])
    bad = key.call(MC, make_credential_map(attestation_formats_preference=[1]))
    assert bad[0] == CtapStatus.CBOR_UNEXPECTED_TYPE


# --- alwaysUv ------------------------------------------------------------------


def test_always_uv_allows_silent_probes() -> None:
    key = make_key()
    ctap = key.ctap2()
    cred = make(ctap).auth_data.credential_data.credential_id
    FidoConfig(ctap).toggle_always_uv()
    probe = ctap.get_assertion(
        "example.com", CLIENT_DATA_HASH, [descriptor(cred)], options={"up": False}
    )
    assert not probe.auth_data.is_user_present()


def test_always_uv_requires_a_token_for_everything() -> None:
    key = make_key()
    ctap = key.ctap2()
    cred = make(ctap).auth_data.credential_data.credential_id
    FidoConfig(ctap).toggle_always_uv()
    info = ctap.get_info()
    assert info.options["alwaysUv"] is True and info.options["makeCredUvNotRqd"] is False
    _refused(
        ERR.PUAT_REQUIRED,
        lambda: make(ctap),  # even a non-discoverable credential
        lambda: ctap.get_assertion("example.com", CLIENT_DATA_HASH, [descriptor(cred)]),
        lambda: FidoConfig(ctap).set_min_pin_length(6),  # config itself is now protected
    )
    ClientPin(ctap, PinProtocolV2()).set_pin(PIN)
    with pytest.raises(CtapError) as err:
        make(ctap)
    assert err.value.code == ERR.PUAT_REQUIRED
    att = make(ctap, **pin_param(pin_token(ctap, ClientPin.PERMISSION.MAKE_CREDENTIAL)))
    assert att.auth_data.is_user_verified() and att.auth_data.is_user_present()
    token = pin_token(ctap, ClientPin.PERMISSION.AUTHENTICATOR_CFG)
    FidoConfig(ctap, PinProtocolV2(), token).toggle_always_uv()
    assert ctap.get_info().options["alwaysUv"] is False
    assert not make(ctap).auth_data.is_user_verified()  # makeCredUvNotRqd again


def test_always_uv_turns_off_without_a_token_on_an_unprotected_key() -> None:
    """CTAP 2.1 section 6.11, step 2: "If the authenticator is not protected by some form of
    user verification and the alwaysUv option ID is present and true": the subcommand is
    invoked without a pinUvAuthParam. For toggleAlwaysUv that is how alwaysUv, turned on
    with no PIN and no built-in UV, is turned off again (OpenSK alike; libfido2's
    fido_dev_toggle_always_uv(3): "The pin parameter may be NULL if dev does not have a PIN
    set"). vfido answered CTAP2_ERR_PUAT_REQUIRED, which no platform can satisfy there."""
    key = make_key()
    ctap = key.ctap2()
    FidoConfig(ctap).toggle_always_uv()
    assert ctap.get_info().options["alwaysUv"] is True
    FidoConfig(ctap).toggle_always_uv()
    assert ctap.get_info().options["alwaysUv"] is False
    assert not make(ctap).auth_data.is_user_verified()


def test_always_uv_toggle_needs_a_token_once_a_pin_protects_the_key() -> None:
    key = make_key()
    ctap = key.ctap2()
    FidoConfig(ctap).toggle_always_uv()
    ClientPin(ctap, PinProtocolV2()).set_pin(PIN)
    with pytest.raises(CtapError) as err:
        FidoConfig(ctap).toggle_always_uv()
    assert err.value.code == ERR.PUAT_REQUIRED
    assert ctap.get_info().options["alwaysUv"] is True


def test_config_needs_a_token_on_a_key_only_built_in_uv_protects() -> None:
    """Step 2's exception is for a key "not protected by some form of user verification":
    built-in UV alone protects it (a diff review found this half of the rule unpinned)."""
    key = make_key(Config(builtin_uv=True), presence=AutoPresence())
    ctap = key.ctap2()
    _refused(
        ERR.PUAT_REQUIRED,
        lambda: FidoConfig(ctap).toggle_always_uv(),
        lambda: FidoConfig(ctap).set_min_pin_length(6),
    )
    assert "alwaysUv" not in ctap.get_info().options or not ctap.get_info().options["alwaysUv"]


def test_config_needs_a_token_while_the_pin_blocked_behaviour_pretends_a_pin() -> None:
    """The ``pin-blocked`` misbehaviour makes the key look PIN-protected (getInfo clientPin
    true, Services.uv_protected): config must then want a token as on a real PIN-blocked
    key, not toggle alwaysUv off or raise the minimum PIN length unasked (a diff review)."""
    key = make_key()
    ctap = key.ctap2()
    FidoConfig(ctap).toggle_always_uv()
    key.authenticator.behaviours.set("pin-blocked", True)
    _refused(
        ERR.PUAT_REQUIRED,
        lambda: FidoConfig(ctap).toggle_always_uv(),
        lambda: FidoConfig(ctap).set_min_pin_length(8),
    )
    key.authenticator.behaviours.clear("pin-blocked")
    info = ctap.get_info()
    assert info.options["alwaysUv"] is True and info.min_pin_length == 4


def test_an_unknown_config_subcommand_is_invalid_parameter_before_any_token() -> None:
    """CTAP 2.1 section 6.11, step 1: "If the authenticator does not support the subcommand
    being invoked, per subCommand's value, return CTAP1_ERR_INVALID_PARAMETER" (OpenSK
    alike); vfido answered CTAP2_ERR_INVALID_SUBCOMMAND, and only after the token."""
    for protect in (False, True):
        key = make_key()
        ctap = key.ctap2()
        if protect:
            ClientPin(ctap, PinProtocolV2()).set_pin(PIN)
        # 0x01, enableEnterpriseAttestation: "only implemented if the enterprise attestation
        # feature is supported" (6.11.1), and this key has none (OpenSK alike).
        for sub in (0x00, 0x01, 0x04, 0xFF):
            with pytest.raises(CtapError) as err:
                ctap.send_cbor(0x0D, {1: sub})
            assert err.value.code == ERR.INVALID_PARAMETER


def test_always_uv_uses_builtin_uv() -> None:
    key = make_key(Config(builtin_uv=True), presence=AutoPresence())
    ctap = key.ctap2()
    assert ctap.get_info().options["uv"] is True
    # UV-protected: config needs a token; get one by built-in UV.
    token = ClientPin(ctap, PinProtocolV2()).get_uv_token(ClientPin.PERMISSION.AUTHENTICATOR_CFG)
    FidoConfig(ctap, PinProtocolV2(), token).toggle_always_uv()
    att = make(ctap)  # no uv option, no token: built-in UV is used
    assert att.auth_data.is_user_verified() and att.auth_data.is_user_present()


def test_pin_token_is_single_use_for_mc_and_user_present_flag() -> None:
    presence = GrantPresence()
    key = make_key(presence=presence)
    ctap = key.ctap2()
    ClientPin(ctap, PinProtocolV2()).set_pin(PIN)
    token = pin_token(ctap, ClientPin.PERMISSION.MAKE_CREDENTIAL, "example.com")
    before = len(presence.requests)
    att = make(ctap, options={"rk": True}, **pin_param(token))
    assert att.auth_data.is_user_verified()
    assert len(presence.requests) == before + 1  # a PIN token carries no user presence
    with pytest.raises(CtapError) as err:  # mc permission cleared after use
        make(ctap, **pin_param(token))
    assert err.value.code == ERR.PIN_AUTH_INVALID


def test_builtin_uv_token_carries_user_presence() -> None:
    presence = AutoPresence()
    key = make_key(Config(builtin_uv=True), presence=presence)
    ctap = key.ctap2()
    token = ClientPin(ctap, PinProtocolV2()).get_uv_token(
        ClientPin.PERMISSION.MAKE_CREDENTIAL, "example.com"
    )
    att = make(ctap, options={"rk": True}, **pin_param(token))
    assert att.auth_data.is_user_verified() and att.auth_data.is_user_present()


def test_deny_uv_presence_counts_down_uv_retries() -> None:
    key = make_key(Config(builtin_uv=True), presence=DenyUvPresence())
    ctap = key.ctap2()
    with pytest.raises(CtapError) as err:  # CTAP2.0-style uv option: step 11.2.3
        make(ctap, options={"uv": True})
    assert err.value.code == ERR.OPERATION_DENIED
    assert ClientPin(ctap, PinProtocolV2()).get_uv_retries() == 7
    with pytest.raises(CtapError) as err:  # the clientPin subcommand says UV_INVALID
        ClientPin(ctap, PinProtocolV2()).get_uv_token(ClientPin.PERMISSION.MAKE_CREDENTIAL)
    assert err.value.code == ERR.UV_INVALID
    for _ in range(5):
        with pytest.raises(CtapError):
            make(ctap, options={"uv": True})
    assert ClientPin(ctap, PinProtocolV2()).get_uv_retries() == 1
    with pytest.raises(CtapError) as err:  # the last attempt
        make(ctap, options={"uv": True})
    assert err.value.code == ERR.PIN_BLOCKED
    with pytest.raises(CtapError) as err:
        ClientPin(ctap, PinProtocolV2()).get_uv_token(ClientPin.PERMISSION.MAKE_CREDENTIAL)
    assert err.value.code == ERR.UV_BLOCKED
    # With a PIN set, a failed built-in UV sends the platform to the PIN.
    ClientPin(ctap, PinProtocolV2()).set_pin(PIN)
    with pytest.raises(CtapError) as err:
        make(ctap, options={"uv": True})
    assert err.value.code == ERR.PUAT_REQUIRED
    assert not make(ctap).auth_data.is_user_verified()  # presence alone still works
    with pytest.raises(CtapError) as err:  # uv without built-in UV configured
        make(make_key(presence=DenyUvPresence()).ctap2(), options={"uv": True})
    assert err.value.code == ERR.INVALID_OPTION


def test_builtin_uv_needs_a_verifier() -> None:
    with pytest.raises(ValueError):
        make_key(Config(builtin_uv=True), presence=GrantPresence())


def test_user_name_only_with_uv_and_several_credentials() -> None:
    key = make_key()
    ctap = key.ctap2()
    ClientPin(ctap, PinProtocolV2()).set_pin(PIN)
    for uid, name in ((b"u1", "alice"), (b"u2", "bob")):
        token = pin_token(ctap, ClientPin.PERMISSION.MAKE_CREDENTIAL)
        ctap.make_credential(
            CLIENT_DATA_HASH,
            rp(),
            user(uid, name),
            params(),
            options={"rk": True},
            **pin_param(token),
        )
    token = pin_token(ctap, ClientPin.PERMISSION.GET_ASSERTION)
    first = ctap.get_assertion("example.com", CLIENT_DATA_HASH, **pin_param(token))
    second = ctap.get_next_assertion()
    assert first.number_of_credentials == 2
    assert first.user is not None and second.user is not None
    assert {first.user["name"], second.user["name"]} == {"alice", "bob"}
    assert first.user["displayName"] in ("Alice", "Bob")
    plain = ctap.get_assertion("example.com", CLIENT_DATA_HASH)
    plain_next = ctap.get_next_assertion()
    assert plain.user is not None and plain_next.user is not None
    assert set(plain.user) == {"id"} and set(plain_next.user) == {"id"}
    # One credential only (allowList): just the id, even with UV.
    token = pin_token(ctap, ClientPin.PERMISSION.GET_ASSERTION)
    single = ctap.get_assertion(
        "example.com",
        CLIENT_DATA_HASH,
        [descriptor(first.credential["id"])],
        **pin_param(token),
    )
    assert single.user is not None and set(single.user) == {"id"}


def test_reset_clears_pin_and_tokens() -> None:
    key = make_key()
    ctap = key.ctap2()
    ClientPin(ctap, PinProtocolV2()).set_pin(PIN)
    token = pin_token(ctap, ClientPin.PERMISSION.MAKE_CREDENTIAL)
    ctap.reset()
    info = ctap.get_info()
    assert info.options["clientPin"] is False and info.min_pin_length == 4
    # The old token is gone: with no PIN any more, makeCredential does not check a
    # pinUvAuthParam (6.1.2 step 11 is for a key "protected by some form of user
    # verification"), and the credential is not user-verified.
    assert not make(ctap, **pin_param(token)).auth_data.is_user_verified()
    ClientPin(ctap, PinProtocolV2()).set_pin(PIN)  # a new PIN: the old token does not verify
    with pytest.raises(CtapError) as err:
        make(ctap, **pin_param(token))
    assert err.value.code == ERR.PIN_AUTH_INVALID


# --- PIN retries are persisted before the PIN is compared ----------------------


class CrashAfterWrite:
    """A KeyStore that "loses power" right after a put_state touching ``key``."""

    def __init__(self, inner: KeyStore, key: str) -> None:
        self._inner = inner
        self._key = key
        self.armed = False

    def put_state(self, updates: Mapping[str, bytes | None]) -> None:
        self._inner.put_state(updates)
        if self.armed and self._key in updates:
            raise RuntimeError("power lost")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def test_pin_retry_decrement_is_persisted_before_the_comparison() -> None:
    inner = SqliteKeyStore.ephemeral()
    crashing = CrashAfterWrite(inner, "pin.retries")
    key = make_key(store=crashing)  # type: ignore[arg-type]
    cp = ClientPin(key.ctap2(), PinProtocolV2())
    cp.set_pin(PIN)
    crashing.armed = True
    with pytest.raises(CtapError) as err:
        cp.get_pin_token(PIN)  # the right PIN, but power is lost mid-check
    assert err.value.code == ERR.OTHER
    assert int.from_bytes(inner.get_state("pin.retries") or b"", "big") == 7
    crashing.armed = False
    # A fresh start over the same store sees the spent attempt...
    restarted = make_key(store=inner)
    cp = ClientPin(restarted.ctap2(), PinProtocolV2())
    assert cp.get_pin_retries()[0] == 7
    cp.get_pin_token(PIN)  # ...and a correct PIN restores the counter.
    assert cp.get_pin_retries()[0] == 8


# --- fuzzing -------------------------------------------------------------------

_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**64) + 1, 2**64 - 1)
    | st.binary(max_size=80)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.integers(-3, 12) | st.text(max_size=4), inner, max_size=4)
    ),
    max_leaves=12,
)
_PAYLOADS = st.dictionaries(st.integers(0, 12), _VALUES, max_size=7)
_SUBCOMMANDS = st.integers(-1, 12)


def _valid_statuses() -> Iterable[int]:
    return {int(s) for s in CtapStatus} - {CtapStatus.OTHER}


@pytest.mark.parametrize("command", [CLIENT_PIN, CRED_MGMT, LARGE_BLOBS, CONFIG])
def test_fuzz_ctap21_commands(command: int) -> None:
    key = make_key()
    valid = _valid_statuses()

    @settings(
        max_examples=120,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(payload=_PAYLOADS, sub=_SUBCOMMANDS)
    def run(payload: dict[int, Any], sub: int) -> None:
        if sub >= 0:  # mostly aim at a real subcommand / the get/offset keys
            payload = {**payload, (2 if command == CLIENT_PIN else 1): sub}
        response = key.authenticator.handle_cbor(
            bytes([command]) + cbor.encode(payload), EventContext()
        )
        assert response[0] in valid

    run()
    # Still a working key afterwards.
    status, info = key.call(0x04)
    assert status == CtapStatus.OK and "FIDO_2_1" in info[1]
    status, _ = key.call(MC, make_credential_map())
    assert status in (CtapStatus.OK, CtapStatus.PUAT_REQUIRED)  # alwaysUv may be on now


# --- extensions ------------------------------------------------------------------


def test_prf_at_creation_uses_hmac_secret_mc() -> None:
    from tests.authenticator.test_ctap21_features import as_bytes, create, get

    with running_key() as k:
        salt = {"prf": {"eval": {"first": b"creation salt"}}}
        reg = create(k, rk="discouraged", extensions=salt)
        assert reg.response.attestation_object.auth_data.extensions["hmac-secret"] is True
        at_creation = as_bytes(reg.client_extension_results["prf"]["results"]["first"])
        later = get(k, allow=[reg.raw_id], extensions=salt).client_extension_results["prf"]
        assert len(at_creation) == 32
        assert as_bytes(later["results"]["first"]) == at_creation


def _extension_outputs(key: Key, extensions: dict[str, Any], rk: bool = True) -> Any:
    status, response = key.call(MC, make_credential_map(extensions=extensions, options={"rk": rk}))
    assert status == CtapStatus.OK, status
    return AuthenticatorData(response[2]).extensions, response


def test_make_credential_extension_outputs() -> None:
    key = make_key()
    outputs, response = _extension_outputs(
        key, {"credBlob": bytes(33), "credProtect": 2, "unknownExt": {"x": 1}}
    )
    assert outputs == {"credBlob": False, "credProtect": 2}  # too large: not stored
    outputs, response = _extension_outputs(key, {"largeBlobKey": True, "minPinLength": True})
    assert outputs is None  # minPinLength: this RP is not in the list
    assert len(response[5]) == 32  # largeBlobKey (0x05), not in authData
    status, response = key.call(
        MC, make_credential_map(extensions={"largeBlobKey": True}, options={"rk": False})
    )
    assert status == CtapStatus.OK and 5 not in response  # discoverable credentials only
    status, _ = key.call(MC, make_credential_map(extensions={"largeBlobKey": False}))
    assert status == CtapStatus.INVALID_OPTION
    status, _ = key.call(MC, make_credential_map(extensions={"credProtect": "high"}))
    assert status == CtapStatus.CBOR_UNEXPECTED_TYPE


def test_cred_protect_2_needs_allow_list_without_uv() -> None:
    key = make_key()
    _, response = _extension_outputs(key, {"credProtect": 2})
    data = AuthenticatorData(response[2]).credential_data
    assert data is not None
    cred_id = data.credential_id
    ctap = key.ctap2()
    with pytest.raises(CtapError) as err:
        ctap.get_assertion("example.com", CLIENT_DATA_HASH)
    assert err.value.code == ERR.NO_CREDENTIALS
    assert ctap.get_assertion("example.com", CLIENT_DATA_HASH, [descriptor(cred_id)])


def test_large_blob_key_and_cred_blob_in_get_assertion() -> None:
    key = make_key()
    blob = os.urandom(20)
    _, response = _extension_outputs(key, {"largeBlobKey": True, "credBlob": blob})
    status, assertion = key.call(
        GA, {1: "example.com", 2: CLIENT_DATA_HASH, 4: {"largeBlobKey": True, "credBlob": True}}
    )
    assert status == CtapStatus.OK
    assert assertion[7] == response[5]
    assert AuthenticatorData(assertion[2]).extensions == {"credBlob": blob}
    status, assertion = key.call(GA, {1: "example.com", 2: CLIENT_DATA_HASH})
    assert 7 not in assertion and AuthenticatorData(assertion[2]).extensions is None


def test_builtin_uv_signals_upneeded() -> None:
    key = make_key(Config(builtin_uv=True), presence=AutoPresence())
    context = EventContext()
    status, _ = key.raw(MC, cbor.encode(make_credential_map(options={"uv": True})), context)
    assert status == CtapStatus.OK
    assert context.keepalives[:2] == [KeepaliveStatus.UPNEEDED, KeepaliveStatus.PROCESSING]
    cancelled = EventContext()
    cancelled.event.set()
    status, _ = key.raw(MC, cbor.encode(make_credential_map(options={"uv": True})), cancelled)
    assert status == CtapStatus.KEEPALIVE_CANCEL
    assert ClientPin(key.ctap2(), PinProtocolV2()).get_uv_retries() == 8  # no attempt made


_EXTENSION_NAMES = st.sampled_from(
    ["credProtect", "hmac-secret", "hmac-secret-mc", "credBlob", "largeBlobKey", "minPinLength"]
)
_EXTENSION_VALUES = _VALUES | st.fixed_dictionaries(
    {1: _VALUES, 2: st.binary(max_size=96), 3: st.binary(max_size=40)},
    optional={4: st.integers(-1, 3)},
)


def test_fuzz_extensions() -> None:
    key = make_key()
    status, _ = key.call(
        MC, make_credential_map(extensions={"hmac-secret": True}, options={"rk": True})
    )
    assert status == CtapStatus.OK
    valid = _valid_statuses()

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        extensions=st.dictionaries(_EXTENSION_NAMES | st.text(max_size=6), _EXTENSION_VALUES),
        rk=st.booleans(),
    )
    def run(extensions: dict[str, Any], rk: bool) -> None:
        mc_map = make_credential_map(extensions=extensions, options={"rk": rk})
        mc = key.raw(MC, cbor.encode(mc_map))
        ga = key.raw(GA, cbor.encode({1: "example.com", 2: CLIENT_DATA_HASH, 4: extensions}))
        assert mc[0] in valid and ga[0] in valid

    run()


def test_partial_large_blob_write_dies_with_power_cycle() -> None:
    import hashlib

    key = make_key()
    body = cbor.encode([{1: os.urandom(40), 2: os.urandom(12), 3: 40}])
    array = body + hashlib.sha256(body).digest()[:16]
    half = len(array) // 2
    assert key.call(LARGE_BLOBS, {2: array[:half], 3: 0, 4: len(array)})[0] == CtapStatus.OK
    key.authenticator.power_cycle()
    status, _ = key.call(LARGE_BLOBS, {2: array[half:], 3: half})
    assert status == CtapStatus.INVALID_SEQ
    # A whole write still works, and the array reads back.
    assert key.call(LARGE_BLOBS, {2: array[:half], 3: 0, 4: len(array)})[0] == CtapStatus.OK
    assert key.call(LARGE_BLOBS, {2: array[half:], 3: half})[0] == CtapStatus.OK
    status, response = key.call(LARGE_BLOBS, {1: 1000, 3: 0})
    assert status == CtapStatus.OK and response[1] == array


def test_permission_bits() -> None:
    key = make_key()
    ctap = key.ctap2()
    ClientPin(ctap, PinProtocolV2()).set_pin(PIN)
    # Undefined bits are ignored; the defined ones are granted.
    token = pin_token(ctap, ClientPin.PERMISSION(0x80 | 0x01))
    assert make(ctap, options={"rk": True}, **pin_param(token)).auth_data.is_user_verified()
    for refused in (0x08, 0x40 | 0x01):  # bioEnroll, persistent credMgmt read-only
        with pytest.raises(CtapError) as err:
            pin_token(ctap, ClientPin.PERMISSION(refused))
        assert err.value.code == ERR.UNAUTHORIZED_PERMISSION


def test_correct_pin_restores_uv_retries() -> None:
    key = make_key(Config(builtin_uv=True), presence=DenyUvPresence())
    ctap = key.ctap2()
    cp = ClientPin(ctap, PinProtocolV2())
    cp.set_pin(PIN)
    for _ in range(2):
        with pytest.raises(CtapError):
            cp.get_uv_token(ClientPin.PERMISSION.MAKE_CREDENTIAL)
    assert cp.get_uv_retries() == 6
    with pytest.raises(CtapError):
        cp.get_pin_token("0000")
    assert cp.get_uv_retries() == 6  # a wrong PIN does not help
    cp.get_pin_token(PIN)
    assert cp.get_uv_retries() == 8 and cp.get_pin_retries()[0] == 8


def test_rp_bound_credential_management_token() -> None:
    from fido2.ctap2.credman import CredentialManagement
    from fido2.utils import sha256

    key = make_key()
    ctap = key.ctap2()
    ClientPin(ctap, PinProtocolV2()).set_pin(PIN)
    token = pin_token(ctap, ClientPin.PERMISSION.MAKE_CREDENTIAL)
    att = make(ctap, "a.example", options={"rk": True}, **pin_param(token))
    cred_id = att.auth_data.credential_data.credential_id

    def cm(rp_id: str) -> CredentialManagement:
        return CredentialManagement(
            ctap,
            PinProtocolV2(),
            pin_token(ctap, ClientPin.PERMISSION.CREDENTIAL_MGMT, rp_id),
        )

    assert len(cm("a.example").enumerate_creds(sha256(b"a.example"))) == 1
    for rp_id, target in (("b.example", "a.example"), ("a.example", "c.example")):
        with pytest.raises(CtapError) as err:
            cm(rp_id).enumerate_creds(sha256(target.encode()))
        assert err.value.code == ERR.PIN_AUTH_INVALID
    # Bound to an RP without credentials: NO_CREDENTIALS (python-fido2 returns []).
    assert cm("c.example").enumerate_creds(sha256(b"c.example")) == []
    descriptor_ = PublicKeyCredentialDescriptor(type=PublicKeyCredentialType.PUBLIC_KEY, id=cred_id)
    with pytest.raises(CtapError) as err:
        cm("b.example").delete_cred(descriptor_)
    assert err.value.code == ERR.PIN_AUTH_INVALID
    cm("a.example").delete_cred(descriptor_)
    assert key.store.count_credentials() == 0


def test_large_blob_support_needs_a_discoverable_credential() -> None:
    from tests.authenticator.test_ctap21_features import create

    with running_key() as k:
        ext = {"largeBlob": {"support": "preferred"}}
        assert (
            create(k, rk="discouraged", extensions=ext).client_extension_results["largeBlob"][
                "supported"
            ]
            is False
        )
        assert (
            create(k, rk="required", extensions=ext).client_extension_results["largeBlob"][
                "supported"
            ]
            is True
        )
