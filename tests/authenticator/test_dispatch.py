"""authenticator.dispatch: one table of handlers derived from the command enum, and the one
declared rule for which pending state survives which command."""

from __future__ import annotations

import os

import pytest
from fido2.ctap import CtapError
from fido2.ctap2.credman import CredentialManagement
from fido2.ctap2.pin import ClientPin, PinProtocolV2
from fido2.utils import sha256

from tests.ctap1_helpers import short_apdu, sw_of
from tests.ctap2_helpers import EventContext, Key, make_key
from vfido.authenticator.config import Config
from vfido.authenticator.dispatch import (
    CTAP1_MESSAGE,
    SURVIVES,
    TABLE,
    Command,
    Pending,
    ended_by,
    handlers,
)

PIN = "4321"
U2F_VERSION = 0x03


def test_the_table_has_one_row_for_every_command() -> None:
    assert set(TABLE) == set(Command)
    assert set(SURVIVES) == set(Pending)


@pytest.mark.parametrize(
    ("config", "offered"),
    [
        (Config(), set()),
        (Config(fingerprint=True, builtin_uv=True), {Command.BIO_ENROLLMENT}),
        (Config(ctap21_pre=True), {Command.CREDENTIAL_MANAGEMENT_PREVIEW}),
        (
            Config(ctap21_pre=True, fingerprint=True, builtin_uv=True),
            {
                Command.BIO_ENROLLMENT,
                Command.BIO_ENROLLMENT_PREVIEW,
                Command.CREDENTIAL_MANAGEMENT_PREVIEW,
            },
        ),
    ],
)
def test_optional_commands_follow_the_configuration(config: Config, offered: set[int]) -> None:
    optional = {
        Command.BIO_ENROLLMENT,
        Command.BIO_ENROLLMENT_PREVIEW,
        Command.CREDENTIAL_MANAGEMENT_PREVIEW,
    }
    assert set(handlers(config)) == (set(Command) - optional) | offered


def test_the_pending_rule() -> None:
    """CTAP 2.1 section 6.3: getNextAssertion continues only a getAssertion followed by
    getNextAssertion calls; section 6.8: only credentialManagement continues an enumeration;
    an enrollment and a fragmented large-blob write are not ended by other commands."""
    assert set(ended_by(Command.GET_NEXT_ASSERTION)) == {Pending.CREDENTIAL_ENUMERATION}
    assert set(ended_by(Command.CREDENTIAL_MANAGEMENT)) == {Pending.NEXT_ASSERTION}
    assert set(ended_by(Command.CREDENTIAL_MANAGEMENT_PREVIEW)) == {Pending.NEXT_ASSERTION}
    both = {Pending.NEXT_ASSERTION, Pending.CREDENTIAL_ENUMERATION}
    for command in (Command.GET_INFO, Command.GET_ASSERTION, Command.LARGE_BLOBS, 0x20):
        assert set(ended_by(command)) == both
    assert set(ended_by(CTAP1_MESSAGE)) == both


def _key_with_credentials() -> Key:
    key = make_key()
    ctap2 = key.ctap2()
    for user in (b"u1", b"u2", b"u3"):
        ctap2.make_credential(
            os.urandom(32),
            {"id": "a.example", "name": "A"},
            {"id": user, "name": user.decode()},
            [{"type": "public-key", "alg": -7}],
            options={"rk": True},
        )
    ClientPin(ctap2, PinProtocolV2()).set_pin(PIN)
    return key


def _manager(key: Key) -> CredentialManagement:
    ctap2 = key.ctap2()
    token = ClientPin(ctap2, PinProtocolV2()).get_pin_token(
        PIN, ClientPin.PERMISSION.CREDENTIAL_MGMT
    )
    return CredentialManagement(ctap2, PinProtocolV2(), token)


def test_an_enumeration_goes_on_across_credential_management_commands() -> None:
    key = _key_with_credentials()
    cm = _manager(key)
    first = cm.enumerate_rps_begin()
    assert first[CredentialManagement.RESULT.TOTAL_RPS] == 1
    cm.get_metadata()  # another subcommand: ends the enumeration (6.8)
    with pytest.raises(CtapError) as info:
        cm.enumerate_rps_next()
    assert info.value.code == CtapError.ERR.NOT_ALLOWED


def test_a_u2f_message_ends_a_credential_enumeration() -> None:
    """A CTAP1 message is a command other than credentialManagement: like any other, it
    ends the enumeration in progress (it used to end only the getNextAssertion state)."""
    key = _key_with_credentials()
    cm = _manager(key)
    cm.enumerate_creds_begin(sha256(b"a.example"))
    cm.enumerate_creds_next()  # the enumeration is in progress
    answer = key.authenticator.handle_msg(short_apdu(U2F_VERSION), EventContext())
    assert sw_of(answer) == 0x9000
    with pytest.raises(CtapError) as info:
        cm.enumerate_creds_next()
    assert info.value.code == CtapError.ERR.NOT_ALLOWED
