"""Test helpers for the CTAP2 state machine.

* :class:`DirectDevice`: a python-fido2 ``CtapDevice`` that hands CTAPHID_CBOR
  / CTAPHID_MSG payloads straight to ``Authenticator.handle_cbor`` /
  ``handle_msg`` (no CTAPHID framing), so ``fido2.ctap2.Ctap2`` drives the key.
* :class:`EventContext`: a real ``RequestContext`` over a ``threading.Event``
  (the cancel event python-fido2 passes) that reports keepalives.
* Presence front ends: grant, deny, never answer (until cancel or timeout),
  scripted.
* :class:`ManualClock`: time only moves when a test says so.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from fido2 import cbor as fido_cbor
from fido2.ctap import CtapDevice, CtapError
from fido2.ctap2.base import Ctap2
from fido2.ctap2.pin import ClientPin
from fido2.hid import CAPABILITY, CTAPHID
from fido2.webauthn import AttestedCredentialData

from vfido.authenticator.config import Config
from vfido.authenticator.device import Authenticator
from vfido.authenticator.env import PresenceRequest, PresenceResult, RequestContext
from vfido.keystore.sqlite_store import SqliteKeyStore

RP_ID = "example.com"
CLIENT_DATA_HASH = bytes(range(32))


class EventContext:
    """RequestContext backed by a cancel event; records keepalive statuses."""

    def __init__(
        self,
        channel: int = 1,
        event: threading.Event | None = None,
        on_keepalive: Callable[[int], None] | None = None,
    ) -> None:
        self._channel = channel
        self.event = event or threading.Event()
        self._on_keepalive = on_keepalive
        self.keepalives: list[int] = []

    @property
    def channel(self) -> int:
        return self._channel

    def is_cancelled(self) -> bool:
        return self.event.is_set()

    def wait_cancelled(self, timeout: float) -> bool:
        return self.event.wait(timeout)

    def set_keepalive(self, status: int) -> None:
        self.keepalives.append(status)
        if self._on_keepalive is not None:
            self._on_keepalive(status)


class DirectDevice(CtapDevice):
    """A CtapDevice that calls the authenticator directly (no CTAPHID)."""

    def __init__(self, authenticator: Authenticator, channel: int = 1) -> None:
        self.authenticator = authenticator
        self.channel = channel
        self.last_context: EventContext | None = None

    @property
    def capabilities(self) -> int:
        return int(CAPABILITY.CBOR | CAPABILITY.WINK)

    def call(
        self,
        cmd: int,
        data: bytes = b"",
        event: threading.Event | None = None,
        on_keepalive: Callable[[Any], None] | None = None,
    ) -> bytes:
        context = EventContext(self.channel, event, on_keepalive)
        self.last_context = context
        if cmd == CTAPHID.CBOR:
            return self.authenticator.handle_cbor(data, context)
        if cmd == CTAPHID.MSG:
            return self.authenticator.handle_msg(data, context)
        if cmd == CTAPHID.WINK:
            self.authenticator.wink()
            return b""
        raise CtapError(CtapError.ERR.INVALID_COMMAND)

    @classmethod
    def list_devices(cls) -> Iterator[CtapDevice]:
        return iter(())


# --- presence ------------------------------------------------------------------


@dataclass
class RecordingPresence:
    """A presence front end that remembers every request it was asked (``requests``) and
    answers with :meth:`answer`; the ones below differ only in the answer."""

    requests: list[PresenceRequest] = field(default_factory=list, kw_only=True)

    def request_presence(
        self, request: PresenceRequest, context: RequestContext, timeout: float
    ) -> PresenceResult:
        self.requests.append(request)
        return self.answer(context, timeout)

    def answer(self, context: RequestContext, timeout: float) -> PresenceResult:
        raise NotImplementedError


class GrantPresence(RecordingPresence):
    """Always touches at once."""

    def answer(self, context: RequestContext, timeout: float) -> PresenceResult:
        return PresenceResult.GRANTED


class DenyPresence(RecordingPresence):
    """Always refuses at once."""

    def answer(self, context: RequestContext, timeout: float) -> PresenceResult:
        return PresenceResult.DENIED


class NeverPresence(RecordingPresence):
    """Never touched: waits for a cancel or the timeout, like a real front end."""

    def answer(self, context: RequestContext, timeout: float) -> PresenceResult:
        if context.wait_cancelled(timeout):
            return PresenceResult.CANCELLED
        return PresenceResult.TIMEOUT


@dataclass
class ScriptedPresence(RecordingPresence):
    """Answers from a list (then grants)."""

    answers: list[PresenceResult] = field(default_factory=list)

    def answer(self, context: RequestContext, timeout: float) -> PresenceResult:
        return self.answers.pop(0) if self.answers else PresenceResult.GRANTED


class ManualClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return 1_700_000_000.0 + self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# --- a key under test ------------------------------------------------------------


@dataclass
class Key:
    authenticator: Authenticator
    store: SqliteKeyStore
    presence: Any
    clock: ManualClock
    device: DirectDevice

    def ctap2(self) -> Ctap2:
        return Ctap2(self.device)

    def raw(
        self, command: int, payload: bytes = b"", context: EventContext | None = None
    ) -> tuple[int, Any]:
        """Send command byte + payload; return (status, decoded response or None)."""
        response = self.authenticator.handle_cbor(
            bytes([command]) + payload, context or EventContext()
        )
        assert len(response) >= 1
        if len(response) == 1:
            return response[0], None
        return response[0], fido_cbor.decode(response[1:])

    def call(self, command: int, params: Mapping[int, Any] | None = None) -> tuple[int, Any]:
        return self.raw(command, fido_cbor.encode(dict(params)) if params is not None else b"")


def make_key(
    config: Config | None = None,
    presence: Any = None,
    *,
    max_credentials: int | None = None,
    store: SqliteKeyStore | None = None,
    clock: ManualClock | None = None,
) -> Key:
    """A key over an ephemeral SqliteKeyStore (or ``store``, to share one between keys)."""
    store = store or SqliteKeyStore.ephemeral(max_credentials=max_credentials)
    clock = clock or ManualClock()
    presence = presence if presence is not None else GrantPresence()
    authenticator = Authenticator(store, presence, config or Config(), clock)
    return Key(authenticator, store, presence, clock, DirectDevice(authenticator))


def rp(rp_id: str = RP_ID) -> dict[str, Any]:
    return {"id": rp_id, "name": "Example"}


def user(user_id: bytes = b"user-1", name: str = "alice") -> dict[str, Any]:
    return {"id": user_id, "name": name, "displayName": name.title()}


def params(*algs: int) -> list[Mapping[str, Any]]:
    return [{"type": "public-key", "alg": a} for a in (algs or (-7,))]


def _overridden(
    m: dict[int, Any], names: Mapping[str, int], overrides: Mapping[str, Any]
) -> dict[int, Any]:
    """``m`` with each override (by keyword name) set, or removed where it is None."""
    for name, value in overrides.items():
        key = names[name]
        if value is None:
            m.pop(key, None)
        else:
            m[key] = value
    return m


def make_credential_map(**overrides: Any) -> dict[int, Any]:
    """A valid makeCredential parameter map; keyword names override entries."""
    names = {
        "client_data_hash": 1,
        "rp": 2,
        "user": 3,
        "pub_key_cred_params": 4,
        "exclude_list": 5,
        "extensions": 6,
        "options": 7,
        "pin_uv_auth_param": 8,
        "pin_uv_auth_protocol": 9,
        "enterprise_attestation": 10,
        "attestation_formats_preference": 11,
    }
    return _overridden({1: CLIENT_DATA_HASH, 2: rp(), 3: user(), 4: params()}, names, overrides)


def get_assertion_map(**overrides: Any) -> dict[int, Any]:
    """A valid getAssertion parameter map; keyword names override entries."""
    names = {
        "rp_id": 1,
        "client_data_hash": 2,
        "allow_list": 3,
        "extensions": 4,
        "options": 5,
        "pin_uv_auth_param": 6,
        "pin_uv_auth_protocol": 7,
    }
    return _overridden({1: RP_ID, 2: CLIENT_DATA_HASH}, names, overrides)


def descriptor(credential_id: bytes) -> Mapping[str, Any]:
    return {"type": "public-key", "id": credential_id}


def create_credential(
    ctap2: Ctap2, rp_id: str, user_id: bytes | None = None, *, rk: bool = False
) -> bytes:
    """One makeCredential (ES256) at ``rp_id`` for ``user_id`` (8 random bytes by default)
    through a python-fido2 ``Ctap2`` (any transport); the new credential ID."""
    response = ctap2.make_credential(
        os.urandom(32),
        {"id": rp_id, "name": rp_id},
        {"id": os.urandom(8) if user_id is None else user_id, "name": "u"},
        params(),
        options={"rk": rk},
    )
    return bytes(credential_data(response).credential_id)


def sign_counter(ctap2: Ctap2, rp_id: str, credential_id: bytes) -> int:
    """One getAssertion of ``credential_id`` at ``rp_id`` through ``ctap2``; its counter."""
    response = ctap2.get_assertion(rp_id, os.urandom(32), [descriptor(credential_id)])
    return int(response.auth_data.counter)


def credential_data(attestation: Any) -> AttestedCredentialData:
    """The attested credential data of a makeCredential response (must be present)."""
    data = attestation.auth_data.credential_data
    assert data is not None
    return data  # type: ignore[no-any-return]


def raw_set_pin(client_pin: ClientPin, padded_pin: bytes) -> None:
    """setPIN with a padded PIN python-fido2 would refuse to send."""
    key_agreement, shared_secret = client_pin._get_shared_secret()  # type: ignore[no-untyped-call]
    pin_enc = client_pin.protocol.encrypt(shared_secret, padded_pin)
    client_pin.ctap.client_pin(
        client_pin.protocol.VERSION,
        ClientPin.CMD.SET_PIN,
        key_agreement=key_agreement,
        new_pin_enc=pin_enc,
        pin_uv_param=client_pin.protocol.authenticate(shared_secret, pin_enc),
    )
