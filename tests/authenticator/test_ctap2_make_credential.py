"""authenticatorMakeCredential (0x01) and the assertions its credentials make."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from fido2.attestation.base import AttestationType, NoneAttestation
from fido2.attestation.packed import PackedAttestation
from fido2.ctap import CtapError
from fido2.webauthn import AuthenticatorData

from tests.ctap2_helpers import (
    CLIENT_DATA_HASH,
    RP_ID,
    DenyPresence,
    NeverPresence,
    ScriptedPresence,
    credential_data,
    descriptor,
    make_credential_map,
    make_key,
    params,
    rp,
    user,
)
from vfido.authenticator.authdata import rp_id_hash
from vfido.authenticator.config import Config
from vfido.authenticator.env import KeepaliveStatus, PresenceKind, PresenceResult
from vfido.authenticator.errors import CtapStatus

ALGORITHMS = [-7, -8, -35, -36, -257]
MC = 0x01


def _status(key: Any, **overrides: Any) -> int:
    status, _ = key.call(MC, make_credential_map(**overrides))
    return int(status)


@pytest.mark.parametrize("alg", ALGORITHMS)
@pytest.mark.parametrize("rk", [False, True])
def test_register_and_authenticate_every_algorithm(alg: int, rk: bool) -> None:
    key = make_key()
    ctap = key.ctap2()
    att = ctap.make_credential(
        CLIENT_DATA_HASH, rp(), user(), params(alg), options={"rk": True} if rk else None
    )
    auth_data = att.auth_data
    assert auth_data.rp_id_hash == rp_id_hash(RP_ID)
    assert auth_data.flags & AuthenticatorData.FLAG.UP
    assert auth_data.flags & AuthenticatorData.FLAG.AT
    assert not auth_data.flags & AuthenticatorData.FLAG.UV
    assert not auth_data.flags & AuthenticatorData.FLAG.ED
    assert auth_data.counter == 0
    cred = credential_data(att)
    assert cred.aaguid == key.store.identity().aaguid
    assert cred.public_key[3] == alg
    assert len(cred.credential_id) <= ctap.info.max_cred_id_length

    # Packed attestation by the batch key, verified by python-fido2's verifier.
    assert att.fmt == "packed"
    result = PackedAttestation().verify(att.att_stmt, auth_data, CLIENT_DATA_HASH)
    assert result.attestation_type == AttestationType.BASIC
    batch = x509.load_der_x509_certificate(result.trust_path[0])
    root = x509.load_der_x509_certificate(key.store.identity().attestation_chain[-1])
    batch.verify_directly_issued_by(root)

    # An assertion with the new credential verifies with the attested public key.
    allow = None if rk else [descriptor(cred.credential_id)]
    assertion = ctap.get_assertion(RP_ID, bytes(32), allow)
    assertion.verify(bytes(32), cred.public_key)
    assert assertion.credential["id"] == cred.credential_id
    assert assertion.auth_data.counter == 1
    assert assertion.auth_data.flags & AuthenticatorData.FLAG.UP
    if rk:
        assert assertion.user == {"id": user()["id"]}
        assert key.store.count_credentials() == 1
    else:
        assert assertion.user is None
        assert key.store.count_credentials() == 0


def test_self_and_none_attestation() -> None:
    key = make_key(Config(attestation="self"))
    att = key.ctap2().make_credential(CLIENT_DATA_HASH, rp(), user(), params(-8))
    assert att.fmt == "packed"
    assert "x5c" not in att.att_stmt
    assert att.att_stmt["alg"] == -8
    result = PackedAttestation().verify(att.att_stmt, att.auth_data, CLIENT_DATA_HASH)
    assert result.attestation_type == AttestationType.SELF

    key = make_key(Config(attestation="none"))
    att = key.ctap2().make_credential(CLIENT_DATA_HASH, rp(), user(), params())
    assert att.fmt == "none"
    NoneAttestation().verify(  # type: ignore[no-untyped-call]
        att.att_stmt, att.auth_data, CLIENT_DATA_HASH
    )


def test_first_supported_algorithm_wins() -> None:
    key = make_key()
    att = key.ctap2().make_credential(
        CLIENT_DATA_HASH,
        rp(),
        user(),
        [
            {"type": "public-key", "alg": -65535},  # unknown algorithm: skipped
            {"type": "future-type", "alg": -7},  # unknown type: skipped
            {"type": "public-key", "alg": -36},
            {"type": "public-key", "alg": -7},
        ],
    )
    assert credential_data(att).public_key[3] == -36


def test_config_restricts_algorithms() -> None:
    key = make_key(Config(algorithms=(-8,)))
    assert _status(key, pub_key_cred_params=params(-7)) == CtapStatus.UNSUPPORTED_ALGORITHM
    assert _status(key, pub_key_cred_params=params(-7, -8)) == CtapStatus.OK


def test_unsupported_algorithm() -> None:
    key = make_key()
    assert _status(key, pub_key_cred_params=params(-65535)) == CtapStatus.UNSUPPORTED_ALGORITHM
    assert _status(key, pub_key_cred_params=[]) == CtapStatus.UNSUPPORTED_ALGORITHM
    assert key.presence.requests == []


@pytest.mark.parametrize("missing", ["client_data_hash", "rp", "user", "pub_key_cred_params"])
def test_missing_required_parameter(missing: str) -> None:
    key = make_key()
    assert _status(key, **{missing: None}) == CtapStatus.MISSING_PARAMETER
    assert key.presence.requests == []


@pytest.mark.parametrize(
    "overrides",
    [
        {"rp": {"name": "x"}},
        {"user": {"name": "x"}},
        {"pub_key_cred_params": [{"type": "public-key"}]},
        {"pub_key_cred_params": [{"alg": -7}]},
        {"exclude_list": [{"type": "public-key"}]},
        {"exclude_list": [{"id": b"x"}]},
    ],
)
def test_missing_nested_member(overrides: dict[str, Any]) -> None:
    """Section 8: "If structures in messages from the host are missing required members, or
    the values of those members have the wrong type, then the authenticator SHOULD return
    CTAP2_ERR_CBOR_UNEXPECTED_TYPE" (the FIDO conformance tools' MakeCred-Req-5 F-2 / F-5
    want exactly that for an excludeList descriptor). A missing parameter of the command
    itself is MISSING_PARAMETER (test_missing_required_parameter)."""
    key = make_key()
    assert _status(key, **overrides) == CtapStatus.CBOR_UNEXPECTED_TYPE
    assert key.presence.requests == []


@pytest.mark.parametrize(
    "overrides",
    [
        {"client_data_hash": "not bytes"},
        {"rp": "example.com"},
        {"rp": {"id": b"example.com"}},
        {"rp": {"id": RP_ID, "name": 5}},
        {"user": b"user"},
        {"user": {"id": "user"}},
        {"user": {"id": b"u", "name": b"alice"}},
        {"user": {"id": b"u", "displayName": 1}},
        {"pub_key_cred_params": {"type": "public-key", "alg": -7}},
        {"pub_key_cred_params": ["public-key"]},
        {"pub_key_cred_params": [{"type": "public-key", "alg": "-7"}]},
        {"pub_key_cred_params": [{"type": 1, "alg": -7}]},
        {"pub_key_cred_params": [{"type": "public-key", "alg": True}]},
        {"exclude_list": {"type": "public-key", "id": b"x"}},
        {"exclude_list": [{"type": "public-key", "id": "x"}]},
        {"exclude_list": [b"x"]},
        {"extensions": [1]},
        {"options": ["rk"]},
        {"options": {"rk": 1}},
        {"options": {"up": "true"}},
        {"pin_uv_auth_param": "x"},
        {"pin_uv_auth_protocol": b"\x01"},
        {"enterprise_attestation": "yes"},
    ],
)
def test_wrong_parameter_types(overrides: dict[str, Any]) -> None:
    key = make_key()
    assert _status(key, **overrides) == CtapStatus.CBOR_UNEXPECTED_TYPE
    assert key.presence.requests == []
    assert key.store.count_credentials() == 0


@pytest.mark.parametrize(
    "overrides",
    [
        {"client_data_hash": bytes(31)},
        {"user": {"id": bytes(65)}},
        {"user": {"id": b""}},
        {"enterprise_attestation": 1},
    ],
)
def test_invalid_parameter_values(overrides: dict[str, Any]) -> None:
    key = make_key()
    assert _status(key, **overrides) == CtapStatus.INVALID_PARAMETER


def test_top_level_not_a_map() -> None:
    key = make_key()
    status, _ = key.raw(MC, b"\x80")
    assert status == CtapStatus.CBOR_UNEXPECTED_TYPE
    status, _ = key.raw(MC, b"")
    assert status == CtapStatus.MISSING_PARAMETER


def test_unknown_keys_options_and_members_are_ignored() -> None:
    key = make_key()
    status, _ = key.call(
        MC,
        {
            **make_credential_map(
                rp={"id": RP_ID, "icon": "https://x"},
                user={"id": b"u", "icon": 7},
                options={"future": 5, "rk": False},
                extensions={"unknownExt": {"x": 1}},
            ),
            0x1F: "future parameter",
        },
    )
    assert status == CtapStatus.OK


def test_long_names_are_truncated() -> None:
    key = make_key()
    name = "é" * 40  # 80 bytes of UTF-8
    assert _status(key, user={"id": b"u", "name": name}, options={"rk": True}) == CtapStatus.OK
    (summary,) = key.store.list_credentials()
    assert summary.record.user_name == "é" * 32


def test_options() -> None:
    key = make_key()
    # uv without built-in user verification.
    assert _status(key, options={"uv": True}) == CtapStatus.INVALID_OPTION
    # up may be sent as true (CTAP 2.1) but never as false.
    assert _status(key, options={"up": False}) == CtapStatus.INVALID_OPTION
    assert _status(key, options={"up": True}) == CtapStatus.OK
    assert _status(key, options={"uv": False, "rk": False}) == CtapStatus.OK


def test_pin_uv_auth_param_without_pin() -> None:
    key = make_key()
    # A zero-length pinUvAuthParam is a touch probe: touch, then PIN_NOT_SET.
    assert _status(key, pin_uv_auth_param=b"", pin_uv_auth_protocol=1) == CtapStatus.PIN_NOT_SET
    assert [r.kind for r in key.presence.requests] == [PresenceKind.SELECT]
    # A real pinUvAuthParam needs its protocol, and a supported one (1 and 2).
    assert _status(key, pin_uv_auth_param=bytes(16)) == CtapStatus.MISSING_PARAMETER
    assert (
        _status(key, pin_uv_auth_param=bytes(16), pin_uv_auth_protocol=3)
        == CtapStatus.INVALID_PARAMETER
    )
    # Step 11 is "If the authenticator is protected by some form of user verification":
    # without a PIN or built-in UV the pinUvAuthParam is not checked. No token can exist,
    # so the credential is made as without one: a touch, and no UV flag.
    key.presence.requests.clear()
    status, body = key.call(
        0x01,
        make_credential_map(
            pin_uv_auth_param=bytes(16), pin_uv_auth_protocol=1, options={"rk": True}
        ),
    )
    assert status == CtapStatus.OK and key.store.count_credentials() == 1
    flags = body[2][32]
    assert flags & 0x01 and not flags & 0x04  # UP, not UV
    assert [r.kind for r in key.presence.requests] == [PresenceKind.REGISTER]

    denied = make_key(presence=DenyPresence())
    assert _status(denied, pin_uv_auth_param=b"") == CtapStatus.OPERATION_DENIED


def test_exclude_list() -> None:
    key = make_key()
    ctap = key.ctap2()
    first = ctap.make_credential(CLIENT_DATA_HASH, rp(), user(), params())
    cred_id = credential_data(first).credential_id
    key.presence.requests.clear()

    # One of ours for this RP: touch, then CREDENTIAL_EXCLUDED.
    foreign = bytes(len(cred_id))
    assert _status(key, exclude_list=[descriptor(foreign), descriptor(cred_id)]) == (
        CtapStatus.CREDENTIAL_EXCLUDED
    )
    assert [r.kind for r in key.presence.requests] == [PresenceKind.EXCLUDED]

    # Same ID for another RP, unknown IDs, other types: not excluded.
    assert _status(key, rp={"id": "other.example"}, exclude_list=[descriptor(cred_id)]) == 0
    assert _status(key, exclude_list=[descriptor(foreign)]) == CtapStatus.OK
    assert _status(key, exclude_list=[{"type": "other", "id": cred_id}]) == CtapStatus.OK


@pytest.mark.parametrize("answer", [PresenceResult.DENIED, PresenceResult.TIMEOUT])
def test_excluded_even_if_touch_denied_or_timed_out(answer: PresenceResult) -> None:
    presence = ScriptedPresence([PresenceResult.GRANTED, answer])
    key = make_key(presence=presence)
    att = key.ctap2().make_credential(CLIENT_DATA_HASH, rp(), user(), params())
    cred_id = credential_data(att).credential_id
    assert _status(key, exclude_list=[descriptor(cred_id)]) == CtapStatus.CREDENTIAL_EXCLUDED
    assert [r.kind for r in presence.requests] == [PresenceKind.REGISTER, PresenceKind.EXCLUDED]


def test_excluded_discoverable_credential_deleted_is_not_excluded() -> None:
    key = make_key()
    att = key.ctap2().make_credential(
        CLIENT_DATA_HASH, rp(), user(), params(), options={"rk": True}
    )
    cred_id = credential_data(att).credential_id
    assert _status(key, exclude_list=[descriptor(cred_id)]) == CtapStatus.CREDENTIAL_EXCLUDED
    assert key.store.delete_credential(cred_id)
    assert _status(key, exclude_list=[descriptor(cred_id)]) == CtapStatus.OK


def test_presence_denied_timeout_cancelled() -> None:
    """A refusal is OPERATION_DENIED; a timeout is USER_ACTION_TIMEOUT, where the spec's
    step says OPERATION_DENIED for both (a deliberate deviation, docs/conformance.md)."""
    key = make_key(presence=DenyPresence())
    assert _status(key) == CtapStatus.OPERATION_DENIED

    key = make_key(Config(presence_timeout=0.01), presence=NeverPresence())
    assert _status(key) == CtapStatus.USER_ACTION_TIMEOUT

    # CTAPHID_CANCEL while waiting for the touch (python-fido2's cancel event).
    event = threading.Event()
    event.set()
    key = make_key(Config(presence_timeout=30.0), presence=NeverPresence())
    with pytest.raises(CtapError) as info:
        key.ctap2().make_credential(CLIENT_DATA_HASH, rp(), user(), params(), event=event)
    assert int(info.value.code) == CtapStatus.KEEPALIVE_CANCEL
    assert key.store.count_credentials() == 0


def test_upneeded_keepalive_while_waiting_for_touch() -> None:
    key = make_key()
    seen: list[int] = []
    key.ctap2().make_credential(CLIENT_DATA_HASH, rp(), user(), params(), on_keepalive=seen.append)
    assert seen == [KeepaliveStatus.UPNEEDED, KeepaliveStatus.PROCESSING]
    (request,) = key.presence.requests
    assert request.kind is PresenceKind.REGISTER
    assert request.rp_id == RP_ID
    assert request.user_name == "alice"


def test_resident_key_overwrite_for_same_user() -> None:
    key = make_key()
    ctap = key.ctap2()
    first = ctap.make_credential(
        CLIENT_DATA_HASH, rp(), user(b"u1", "alice"), params(), options={"rk": True}
    )
    second = ctap.make_credential(
        CLIENT_DATA_HASH, rp(), user(b"u1", "alice2"), params(), options={"rk": True}
    )
    other = ctap.make_credential(
        CLIENT_DATA_HASH, rp(), user(b"u2", "bob"), params(), options={"rk": True}
    )
    assert key.store.count_credentials() == 2
    ids = {r.credential_id for r in key.store.find_credentials(rp_id_hash(RP_ID))}
    assert ids == {
        credential_data(second).credential_id,
        credential_data(other).credential_id,
    }
    # The overwritten credential is gone: not usable even through the allowList.
    with pytest.raises(CtapError) as info:
        ctap.get_assertion(RP_ID, bytes(32), [descriptor(credential_data(first).credential_id)])
    assert int(info.value.code) == CtapStatus.NO_CREDENTIALS
    stored = key.store.get_credential(credential_data(second).credential_id)
    assert stored is not None
    assert stored.user_name == "alice2"
    assert stored.rp_name == "Example"
    assert stored.user_display_name == "Alice2"


def test_key_store_full() -> None:
    key = make_key(max_credentials=1)
    assert _status(key, user=user(b"u1"), options={"rk": True}) == CtapStatus.OK
    assert _status(key, user=user(b"u2"), options={"rk": True}) == CtapStatus.KEY_STORE_FULL
    # Server-side credentials need no storage.
    assert _status(key, user=user(b"u3")) == CtapStatus.OK


def test_credential_ids_are_unique_and_bound_to_rp() -> None:
    key = make_key()
    ctap = key.ctap2()
    ids = {
        credential_data(
            ctap.make_credential(CLIENT_DATA_HASH, rp(), user(), params())
        ).credential_id
        for _ in range(3)
    }
    assert len(ids) == 3
    for cred_id in ids:
        with pytest.raises(CtapError) as info:
            ctap.get_assertion("other.example", bytes(32), [descriptor(cred_id)])
        assert int(info.value.code) == CtapStatus.NO_CREDENTIALS


def test_attestation_key_is_p256() -> None:
    key = make_key()
    att = key.ctap2().make_credential(CLIENT_DATA_HASH, rp(), user(), params(-257))
    cert = x509.load_der_x509_certificate(att.att_stmt["x5c"][0])
    public = cert.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert att.att_stmt["alg"] == -7
