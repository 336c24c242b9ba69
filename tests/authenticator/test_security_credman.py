"""Issue #15, medium 1: a credential-management enumeration belongs to the channel and the
pinUvAuthToken that began it.

The attack: while the platform enumerates with its PIN token on one CTAPHID channel, a second
client (its own connection, its own channel, no PIN) sends enumerateRPsGetNextRP /
enumerateCredentialsGetNextCredential, which carry no pinUvAuthParam, and reads the next entry
(user, credential ID, public key, largeBlobKey). Driven through the real CTAPHID framing with
python-fido2 on two connections of one key.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from fido2.ctap import CtapError
from fido2.ctap2.base import Ctap2
from fido2.ctap2.credman import CredentialManagement
from fido2.ctap2.pin import ClientPin, PinProtocolV2
from fido2.hid import CtapHidDevice
from fido2.utils import sha256

from tests.ctap2_helpers import ManualClock
from vfido.authenticator.config import Config
from vfido.authenticator.device import Authenticator
from vfido.authenticator.pin_token import MAX_USAGE_TIME_PERIOD
from vfido.keystore.sqlite_store import SqliteKeyStore
from vfido.presence import AutoPresence
from vfido.transports.inprocess import InProcessKey

PIN = "4321"
RPS = ("a.example", "b.example", "c.example")
RESULT = CredentialManagement.RESULT
CMD = CredentialManagement.CMD


@dataclass
class TwoClients:
    clock: ManualClock
    platform: CtapHidDevice  # knows the PIN
    #: Another process: its own connection and channel, no PIN. Made up front, as Ctap2()
    #: sends getInfo, which (like any other command) ends an enumeration.
    attacker: Ctap2

    def manager(self) -> CredentialManagement:
        token = ClientPin(Ctap2(self.platform), PinProtocolV2()).get_pin_token(
            PIN, ClientPin.PERMISSION.CREDENTIAL_MGMT
        )
        return CredentialManagement(Ctap2(self.platform), PinProtocolV2(), token)

    def attacker_next(self, sub_command: int) -> CtapError.ERR:
        """The attacker's unauthenticated GetNext; the status it gets (OK is a leak)."""
        try:
            self.attacker.credential_mgmt(sub_command)
        except CtapError as exc:
            return exc.code
        return CtapError.ERR.SUCCESS


@pytest.fixture
def clients() -> Iterator[TwoClients]:
    clock = ManualClock()
    store = SqliteKeyStore.ephemeral()
    key = InProcessKey(Authenticator(store, AutoPresence(), Config(), clock))
    platform, attacker = key.open(), key.open()
    assert platform._channel_id != attacker._channel_id  # two CTAPHID channels
    ctap2 = Ctap2(platform)
    for rp_id in RPS:
        for user in (b"u1", b"u2", b"u3"):
            ctap2.make_credential(
                os.urandom(32),
                {"id": rp_id, "name": rp_id},
                {"id": user, "name": f"{user.decode()}@{rp_id}"},
                [{"type": "public-key", "alg": -7}],
                options={"rk": True},
                extensions={"largeBlobKey": True},
            )
    ClientPin(ctap2, PinProtocolV2()).set_pin(PIN)
    try:
        yield TwoClients(clock, platform, Ctap2(attacker))
    finally:
        key.close()
        store.close()


def test_another_channel_cannot_continue_the_rp_enumeration(clients: TwoClients) -> None:
    cm = clients.manager()
    first = cm.enumerate_rps_begin()
    assert first[RESULT.TOTAL_RPS] == len(RPS)
    # The attack: on its own channel, without a PIN, the next RP.
    assert clients.attacker_next(CMD.ENUMERATE_RPS_NEXT) == CtapError.ERR.NOT_ALLOWED
    # The platform's enumeration goes on undisturbed and sees every RP.
    rest = [cm.enumerate_rps_next() for _ in RPS[1:]]
    assert sorted(r[RESULT.RP]["id"] for r in [first, *rest]) == list(RPS)


def test_another_channel_cannot_continue_the_credential_enumeration(
    clients: TwoClients,
) -> None:
    cm = clients.manager()
    first = cm.enumerate_creds_begin(sha256(RPS[0].encode()))
    assert first[RESULT.TOTAL_CREDENTIALS] == 3
    assert RESULT.LARGE_BLOB_KEY in first
    assert clients.attacker_next(CMD.ENUMERATE_CREDS_NEXT) == CtapError.ERR.NOT_ALLOWED
    assert clients.attacker_next(CMD.ENUMERATE_RPS_NEXT) == CtapError.ERR.NOT_ALLOWED
    rest = [cm.enumerate_creds_next() for _ in range(2)]
    assert sorted(c[RESULT.USER]["id"] for c in [first, *rest]) == [b"u1", b"u2", b"u3"]
    with pytest.raises(CtapError) as info:
        cm.enumerate_creds_next()  # all read: the state is gone
    assert info.value.code == CtapError.ERR.NOT_ALLOWED


def test_the_enumeration_ends_with_its_token(clients: TwoClients) -> None:
    """GetNext carries no pinUvAuthParam: once the token that began the enumeration has
    expired, the rest of it is no longer handed out, even on the same channel."""
    cm = clients.manager()
    cm.enumerate_creds_begin(sha256(RPS[1].encode()))
    cm.enumerate_creds_next()  # within the token's lifetime: fine
    clients.clock.advance(MAX_USAGE_TIME_PERIOD + 1)
    with pytest.raises(CtapError) as info:
        cm.enumerate_creds_next()
    assert info.value.code == CtapError.ERR.NOT_ALLOWED


def test_getnext_subcommand_must_match_the_enumeration(clients: TwoClients) -> None:
    cm = clients.manager()
    cm.enumerate_rps_begin()
    with pytest.raises(CtapError) as info:
        cm.enumerate_creds_next()  # an RP enumeration is pending, not a credential one
    assert info.value.code == CtapError.ERR.NOT_ALLOWED
