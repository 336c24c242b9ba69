"""authenticatorBioEnrollment with the simulated fingerprint sensor, driven by python-fido2's
FPBioEnrollment; built-in UV by an enrolled finger, chosen by the presence front end."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from fido2.client import ClientError, DefaultClientDataCollector, Fido2Client, UserInteraction
from fido2.ctap import CtapError
from fido2.ctap2.bio import BioEnrollment, CaptureError, FPBioEnrollment
from fido2.ctap2.pin import ClientPin
from fido2.server import Fido2Server

from tests.ctap2_helpers import RP_ID, DenyPresence, Key, make_key
from vfido.authenticator.bio_enrollment import (
    MAX_FRIENDLY_NAME,
    MAX_TEMPLATES,
    SAMPLES_REQUIRED,
    UNKNOWN_FINGER,
    UV_MODALITY_FINGERPRINT,
)
from vfido.authenticator.config import Config
from vfido.authenticator.env import PresenceResult
from vfido.presence import AutoPresence

PIN = "31415926"
FEEDBACK = FPBioEnrollment.FEEDBACK


def fingerprint_key(pin: bool = True) -> Key:
    key = make_key(Config(fingerprint=True), AutoPresence())
    if pin:
        ClientPin(key.ctap2()).set_pin(PIN)
    return key


def bio(key: Key) -> FPBioEnrollment:
    client_pin = ClientPin(key.ctap2())
    token = client_pin.get_pin_token(PIN, ClientPin.PERMISSION.BIO_ENROLL)
    return FPBioEnrollment(key.ctap2(), client_pin.protocol, token)


def enroll(key: Key, finger: str | None = None) -> bytes:
    key.authenticator.sensor.place(finger)
    context = bio(key).enroll()
    template_id = None
    while template_id is None:
        template_id = context.capture()
    return template_id


class WrongPin(UserInteraction):
    def request_pin(self, permissions: object, rp_id: str | None) -> str | None:
        return "WrongPin"


def register_with_uv(key: Key) -> None:
    server = Fido2Server({"id": RP_ID, "name": "Example RP"})
    options, state = server.register_begin(
        {"id": os.urandom(8), "name": "A. User"}, user_verification="required"
    )
    client = Fido2Client(
        key.device,
        client_data_collector=DefaultClientDataCollector("https://example.com"),
        user_interaction=WrongPin(),
    )
    result = client.make_credential(options.public_key)
    auth_data = server.register_complete(state, result)
    assert auth_data.is_user_verified()


def test_get_info_before_and_after_enrollment() -> None:
    key = fingerprint_key(pin=False)
    info = key.ctap2().get_info()
    # Supported, not configured: the device suite's precondition for its bio tests.
    assert info.options["uv"] is False and info.options["bioEnroll"] is False
    assert info.uv_modality == UV_MODALITY_FINGERPRINT
    assert BioEnrollment.is_supported(info)
    assert ClientPin(key.ctap2()).get_uv_retries() == 8
    ClientPin(key.ctap2()).set_pin(PIN)
    enroll(key)
    info = key.ctap2().get_info()
    assert info.options["uv"] is True and info.options["bioEnroll"] is True


def test_sensor_info_and_modality() -> None:
    key = fingerprint_key(pin=False)
    sensor = FPBioEnrollment(key.ctap2(), None, None)  # type: ignore[arg-type]
    assert sensor.get_modality() == BioEnrollment.MODALITY.FINGERPRINT
    info = sensor.get_fingerprint_sensor_info()
    assert info[2] == 1 and info[3] == SAMPLES_REQUIRED and info[8] == MAX_FRIENDLY_NAME


def test_enroll_use_rename_remove() -> None:
    # As python-fido2's device suite test_enroll_use_delete.
    key = fingerprint_key()
    assert bio(key).enumerate_enrollments() == {}
    context = bio(key).enroll()
    remaining = []
    template_id = None
    while template_id is None:
        template_id = context.capture()
        remaining.append(context.remaining)
    assert remaining == list(range(SAMPLES_REQUIRED - 1, -1, -1))
    assert bio(key).enumerate_enrollments() == {template_id: ""}
    bio(key).set_name(template_id, "Test".ljust(MAX_FRIENDLY_NAME, "!"))
    assert bio(key).enumerate_enrollments() == {template_id: "Test".ljust(MAX_FRIENDLY_NAME, "!")}
    with pytest.raises(CtapError, match="INVALID_PARAMETER"):
        bio(key).set_name(template_id, "x" * (MAX_FRIENDLY_NAME + 1))
    register_with_uv(key)
    bio(key).remove_enrollment(template_id)
    assert bio(key).enumerate_enrollments() == {}
    assert key.ctap2().get_info().options["uv"] is False
    # CTAP 2.1 6.7.6 / 6.7.7: "If there are no enrollments existing on authenticator for the
    # passed templateId, it returns CTAP2_ERR_INVALID_OPTION" (was INVALID_PARAMETER).
    with pytest.raises(CtapError, match="INVALID_OPTION"):
        bio(key).remove_enrollment(template_id)
    with pytest.raises(CtapError, match="INVALID_OPTION"):
        bio(key).set_name(template_id, "gone")


def test_sample_feedback() -> None:
    key = fingerprint_key()
    thumb = enroll(key, "left-thumb")
    # The same finger again: FP_EXISTS, the sample does not count.
    key.authenticator.sensor.place("left-thumb")
    context = bio(key).enroll()
    with pytest.raises(CaptureError) as err:
        context.capture()
    assert err.value.code == FEEDBACK.FP_EXISTS and context.remaining == SAMPLES_REQUIRED
    context.cancel()
    # Another finger in the middle of an enrollment: FP_MERGE_FAILURE.
    key.authenticator.sensor.place("right-index")
    context = bio(key).enroll()
    assert context.capture() is None and context.remaining == SAMPLES_REQUIRED - 1
    key.authenticator.sensor.place("right-middle")
    with pytest.raises(CaptureError) as err:
        context.capture()
    assert err.value.code == FEEDBACK.FP_MERGE_FAILURE
    key.authenticator.sensor.place("right-index")
    while (done := context.capture()) is None:
        pass
    assert set(bio(key).enumerate_enrollments()) == {thumb, done}


class NobodyTouches(DenyPresence):
    def verify_user(self, request: object, context: object, timeout: float) -> PresenceResult:
        return PresenceResult.DENIED


def test_no_user_activity() -> None:
    store_key = fingerprint_key()
    deny = make_key(Config(fingerprint=True), NobodyTouches(), store=store_key.store)
    context = bio(deny).enroll()
    with pytest.raises(CaptureError) as err:
        context.capture()
    assert err.value.code == FEEDBACK.NO_USER_ACTIVITY and context.remaining == SAMPLES_REQUIRED


def test_the_front_end_chooses_the_finger() -> None:
    key = fingerprint_key()
    enroll(key, "right-index")
    enroll(key, "left-thumb")
    for finger in (None, "right-index", "left-thumb"):
        key.authenticator.sensor.place(finger)
        register_with_uv(key)
    # An unknown finger fails and costs a UV retry; python-fido2 then falls back to the PIN,
    # which WrongPin gets wrong.
    key.authenticator.sensor.place(UNKNOWN_FINGER)
    with pytest.raises(ClientError):
        register_with_uv(key)
    assert ClientPin(key.ctap2()).get_uv_retries() < 8
    # By friendly name too.
    template_id = next(iter(bio(key).enumerate_enrollments()))
    bio(key).set_name(template_id, "index")
    key.authenticator.sensor.place("index")
    register_with_uv(key)


def test_database_full_and_cancel() -> None:
    key = fingerprint_key()
    for n in range(MAX_TEMPLATES):
        enroll(key, f"finger-{n}")
    with pytest.raises(CtapError, match="FP_DATABASE_FULL"):
        bio(key).enroll().capture()
    # CTAP 2.1 6.7.5: "cancels current ongoing enrollment, if any, and returns CTAP2_OK"
    # (python-fido2's enroll_cancel() raised when nothing was left to cancel).
    bio(key).enroll_cancel()  # nothing in progress


def test_needs_the_be_permission() -> None:
    key = fingerprint_key()
    client_pin = ClientPin(key.ctap2())
    token = client_pin.get_pin_token(PIN, ClientPin.PERMISSION.CREDENTIAL_MGMT)
    with pytest.raises(CtapError, match="PIN_AUTH_INVALID"):
        FPBioEnrollment(key.ctap2(), client_pin.protocol, token).enumerate_enrollments()
    # A key without the sensor neither grants be nor knows the command.
    plain = make_key()
    ClientPin(plain.ctap2()).set_pin(PIN)
    with pytest.raises(CtapError, match="UNAUTHORIZED_PERMISSION"):
        ClientPin(plain.ctap2()).get_pin_token(PIN, ClientPin.PERMISSION.BIO_ENROLL)
    with pytest.raises(CtapError, match="INVALID_COMMAND"):
        plain.ctap2().send_cbor(0x09, {6: True})


def test_uv_without_enrollment_is_not_offered() -> None:
    key = fingerprint_key(pin=False)
    from tests.ctap2_helpers import CLIENT_DATA_HASH, params, rp, user

    with pytest.raises(CtapError, match="INVALID_OPTION"):
        key.ctap2().make_credential(CLIENT_DATA_HASH, rp(), user(), params(), options={"uv": True})


def test_reset_forgets_the_fingers() -> None:
    key = fingerprint_key()
    enroll(key)
    key.authenticator.power_cycle()
    key.ctap2().reset()
    assert key.ctap2().get_info().options["bioEnroll"] is False


def test_virtual_key_and_control_socket(tmp_path: Path) -> None:
    from fido2.ctap2 import Ctap2

    from vfido.api import VirtualKey
    from vfido.cli import build_parser
    from vfido.control import ControlError

    with VirtualKey(fingerprint=True, pin=PIN, control_socket=tmp_path / "ctl") as vkey:
        client_pin = ClientPin(Ctap2(vkey.device))
        token = client_pin.get_pin_token(PIN, ClientPin.PERMISSION.BIO_ENROLL)
        vkey.place_finger("thumb")
        context = FPBioEnrollment(Ctap2(vkey.device), client_pin.protocol, token).enroll()
        while context.capture() is None:
            pass
        with vkey.controller() as control:
            answer = control.call("finger", finger="unknown")
            assert answer["finger"] == "unknown"
            assert [t["finger"] for t in answer["enrolled"]] == ["thumb"]
            assert vkey.authenticator.sensor.finger == "unknown"
            control.call("finger", finger=None)
            # Text that is not UTF-8 (`vfido ctl finger $'\xff'`) is refused, not stored
            # and echoed as an escape (a session 15 newcomer's trial).
            with pytest.raises(ControlError, match="finger is not UTF-8 text"):
                control.call("finger", finger="\udcff")
        assert vkey.authenticator.sensor.finger is None
    args = build_parser().parse_args(["run", "--fingerprint"])
    assert args.fingerprint is True
    assert build_parser().parse_args(["ctl", "finger", "thumb"]).finger == "thumb"


def test_user_verification_mgmt_preview() -> None:
    """CTAP 2.1-PRE userVerificationMgmtPreview (0x40) with ``ctap21_pre``: what older
    Windows uses to enroll fingers, authorized with getPinToken's token."""
    import dataclasses

    from fido2.ctap2.pin import PinProtocolV1

    key = make_key(Config(fingerprint=True, ctap21_pre=True), AutoPresence())
    ClientPin(key.ctap2()).set_pin(PIN)
    info = key.ctap2().get_info()
    assert info.options["userVerificationMgmtPreview"] is False
    ctap2 = key.ctap2()
    options = {k: v for k, v in ctap2.info.options.items() if k != "bioEnroll"}
    ctap2._info = dataclasses.replace(ctap2.info, options=options)  # a 2.1-PRE platform
    legacy = ClientPin(ctap2, PinProtocolV1()).get_pin_token(PIN)
    preview = FPBioEnrollment(ctap2, PinProtocolV1(), legacy)
    context = preview.enroll()
    while (template_id := context.capture()) is None:
        pass
    assert preview.enumerate_enrollments() == {template_id: ""}
    assert key.ctap2().get_info().options["userVerificationMgmtPreview"] is True
    # Without ctap21_pre there is no 0x40.
    with pytest.raises(CtapError, match="INVALID_COMMAND"):
        fingerprint_key().ctap2().send_cbor(0x40, {6: True})


def test_a_2_1_pre_keys_get_pin_token_token_does_not_authorize_bio_enrollment() -> None:
    """The getPinToken token of a 2.1-PRE key with a fingerprint sensor authorizes
    userVerificationMgmtPreview (0x40), not authenticatorBioEnrollment (0x09): CTAP 2.1
    6.5.5.7.1 grants it mc and ga, and 6.7 wants the be permission (it had be everywhere)."""
    from fido2.ctap2.pin import PinProtocolV1

    key = make_key(Config(fingerprint=True, ctap21_pre=True), AutoPresence())
    ClientPin(key.ctap2()).set_pin(PIN)
    legacy = ClientPin(key.ctap2(), PinProtocolV1()).get_pin_token(PIN)
    with pytest.raises(CtapError, match="PIN_AUTH_INVALID"):
        FPBioEnrollment(key.ctap2(), PinProtocolV1(), legacy).enumerate_enrollments()


def test_a_negative_timeout_is_not_an_unsigned_integer() -> None:
    """enrollBegin's timeoutMilliseconds is an "Unsigned Integer" (CTAP 2.2 section 6.7): a
    negative one is CTAP2_ERR_CBOR_UNEXPECTED_TYPE (a session 20 diff review found it
    accepted)."""
    key = fingerprint_key()
    key.authenticator.sensor.place(None)
    with pytest.raises(CtapError) as info:
        bio(key).enroll_begin(timeout=-1)
    assert info.value.code == CtapError.ERR.CBOR_UNEXPECTED_TYPE
