"""Runtime (volatile) state of the authenticator and the services handlers share.

Persistent state lives in the keystore. What lives here is lost on power-cycle:

* when the device was last powered up (authenticatorReset's time window);
* the pending authenticatorGetNextAssertion state (CTAP 2.1 section 6.3):
  the remaining credentials, the request they answer, the channel it came in
  on and a 30-second timer.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from vfido.authenticator.behaviours import Behaviours
from vfido.authenticator.client_pin import ClientPin
from vfido.authenticator.config import Config
from vfido.authenticator.config_command import Settings
from vfido.authenticator.credential_source import SealedCredential
from vfido.authenticator.env import (
    Clock,
    KeepaliveStatus,
    Presence,
    PresenceRequest,
    PresenceResult,
    RequestContext,
    UserVerifier,
    instant_answer,
)
from vfido.authenticator.errors import CtapError, CtapStatus
from vfido.authenticator.extensions import GetAssertionExtensions
from vfido.keystore.store import CredentialRecord, KeyStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AssertionCandidate:
    """A credential that may answer a getAssertion: its ID, unsealed key and record."""

    credential_id: bytes
    sealed: SealedCredential = field(repr=False)
    record: CredentialRecord | None = field(default=None, repr=False)  # discoverable only
    #: (BE, BS) of a server-side credential imported with an ID of its own (else None:
    #: the record's or the keystore's flags).
    backup: tuple[bool, bool] | None = None
    #: The user handle kept with such a credential, if it was given one.
    user_handle: bytes | None = None


@dataclass
class PendingAssertion:
    """What authenticatorGetNextAssertion needs (CTAP 2.1 section 6.3)."""

    channel: int
    rp_id_hash: bytes
    client_data_hash: bytes
    flags: int  # AuthDataFlags bits
    remaining: list[AssertionCandidate] = field(repr=False)
    deadline: float
    #: Return name/displayName (user verified and more than one credential).
    identifying: bool = False
    #: The getAssertion's extension inputs: every next assertion carries its outputs too.
    extensions: GetAssertionExtensions | None = field(default=None, repr=False)


class RuntimeState:
    """Thread-safe holder of the volatile state."""

    def __init__(self, now: float) -> None:
        self._lock = threading.Lock()
        self._power_up = now
        self._pending: PendingAssertion | None = None

    def power_cycle(self, now: float) -> None:
        with self._lock:
            self._power_up = now
            self._pending = None

    def since_power_up(self, now: float) -> float:
        with self._lock:
            return now - self._power_up

    def set_pending(self, pending: PendingAssertion | None) -> None:
        with self._lock:
            self._pending = pending

    def clear_pending(self) -> None:
        self.set_pending(None)

    def has_pending(self) -> bool:
        with self._lock:
            return self._pending is not None

    def next_candidate(
        self, channel: int, now: float, timeout: float
    ) -> tuple[PendingAssertion, AssertionCandidate]:
        """Steps 1-4 and 7-8 of authenticatorGetNextAssertion.

        Returns the pending request and the next credential, restarting the
        timer; raises CTAP2_ERR_NOT_ALLOWED when nothing (more) is pending.
        """
        with self._lock:
            pending = self._pending
            # Step 1: no remembered getAssertion parameters.
            if pending is None:
                raise CtapError(CtapStatus.NOT_ALLOWED, "no pending assertion")
            # The state belongs to the channel that asked for it.
            if pending.channel != channel:
                raise CtapError(CtapStatus.NOT_ALLOWED, "pending assertion is on another channel")
            # Step 3: timer expired -> discard the state.
            if now > pending.deadline:
                self._pending = None
                raise CtapError(CtapStatus.NOT_ALLOWED, "pending assertion expired")
            # Step 2: credentialCounter >= numberOfCredentials.
            if not pending.remaining:
                self._pending = None
                raise CtapError(CtapStatus.NOT_ALLOWED, "no more credentials")
            # Step 4 (select), step 7 (reset timer), step 8 (advance counter).
            candidate = pending.remaining.pop(0)
            pending.deadline = now + timeout
            if not pending.remaining:
                self._pending = None
            return pending, candidate


@dataclass(frozen=True)
class Services:
    """Everything a command handler may use."""

    store: KeyStore
    presence: Presence
    config: Config
    clock: Clock
    runtime: RuntimeState
    client_pin: ClientPin
    settings: Settings
    user_verifier: UserVerifier | None = None
    #: Scripted misbehaviour (see authenticator.behaviours); all off by default.
    behaviours: Behaviours = field(default_factory=Behaviours)

    @property
    def ctap1_enabled(self) -> bool:
        """Whether CTAP1/U2F is served. alwaysUv (CTAP 2.1 section 7.2.4) asks for user
        verification on every credential; a key whose user verification cannot protect
        U2F credentials turns U2F off. This key's U2F path asks for presence only (its
        built-in UV is not wired to U2F), so alwaysUv turns U2F off on every key:
        REGISTER/AUTHENTICATE refused, U2F_V2 not in getInfo's versions, no CTAPHID_MSG
        capability, instead of signing with a touch alone."""
        return not self.settings.always_uv

    @property
    def uv_protected(self) -> bool:
        """ "Protected by some form of user verification" (CTAP 2.1 section 6.1.2):
        a PIN is set or built-in user verification is enabled (or the ``pin-blocked``
        behaviour pretends a PIN is set)."""
        return (
            self.client_pin.is_pin_set
            or self.client_pin.has_uv
            or self.behaviours.current().pin_blocked
        )


def ask_presence(
    services: Services, context: RequestContext, request: PresenceRequest
) -> PresenceResult:
    """Ask the user for a touch, with the UPNEEDED keepalive while waiting (a front end
    that answers at once is not waited for: no UPNEEDED, no wait)."""
    if context.is_cancelled():
        return PresenceResult.CANCELLED
    no_answer_after = services.behaviours.current().presence_timeout
    if no_answer_after is None:
        instant = instant_answer(services.presence, request)
        if instant is not None:
            if log.isEnabledFor(logging.DEBUG):
                log.debug("presence for %s: %s at once", request.kind.value, instant.value)
            return instant
    context.set_keepalive(KeepaliveStatus.UPNEEDED)
    try:
        if no_answer_after is not None:
            # Behaviour presence-timeout: nobody touches the key.
            cancelled = context.wait_cancelled(no_answer_after) or context.is_cancelled()
            result = PresenceResult.CANCELLED if cancelled else PresenceResult.TIMEOUT
        else:
            result = services.presence.request_presence(
                request, context, services.config.presence_timeout
            )
    finally:
        context.set_keepalive(KeepaliveStatus.PROCESSING)
    if log.isEnabledFor(logging.INFO):
        log.info("presence for %s: %s", request.kind.value, result.value)
    return result


_PRESENCE_ERRORS = {
    PresenceResult.DENIED: CtapStatus.OPERATION_DENIED,
    PresenceResult.TIMEOUT: CtapStatus.USER_ACTION_TIMEOUT,
    PresenceResult.CANCELLED: CtapStatus.KEEPALIVE_CANCEL,
}


def require_presence(services: Services, context: RequestContext, request: PresenceRequest) -> None:
    """Ask for a touch; raise the matching CtapError unless it is granted.

    DENIED -> OPERATION_DENIED, TIMEOUT -> USER_ACTION_TIMEOUT,
    CANCELLED (CTAPHID_CANCEL) -> KEEPALIVE_CANCEL.
    """
    result = ask_presence(services, context, request)
    if result is not PresenceResult.GRANTED:
        raise CtapError(_PRESENCE_ERRORS[result], f"user presence {result.value}")
