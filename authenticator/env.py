"""The authenticator's view of its world: the request in flight, the user, the clock.

Everything the state machine cannot compute by itself comes through these
interfaces, so tests can script presence and advance time by hand.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import Enum, IntEnum
from typing import Protocol


class KeepaliveStatus(IntEnum):
    """Same numbers as CTAPHID_KEEPALIVE (CTAP 2.1 section 11.2.9.2.1)."""

    PROCESSING = 0x01
    UPNEEDED = 0x02


class RequestContext(Protocol):
    """The request being processed, as the transport sees it.

    Structurally identical to ``transports.handler.Transaction`` so that a
    transport's transaction object can be passed straight in.
    """

    @property
    def channel(self) -> int: ...

    def is_cancelled(self) -> bool: ...

    def wait_cancelled(self, timeout: float) -> bool: ...

    def set_keepalive(self, status: int) -> None: ...


class PresenceKind(Enum):
    """Why the key asks the user to touch it."""

    REGISTER = "register"
    AUTHENTICATE = "authenticate"
    EXCLUDED = "excluded"  # a credential in the excludeList exists: touch to confirm the error
    RESET = "reset"
    SELECT = "select"
    CREDENTIAL_MANAGEMENT = "credential-management"
    LARGE_BLOB = "large-blob"
    CONFIG = "config"
    ENROLL = "enroll"  # a fingerprint sample (authenticatorBioEnrollment)


@dataclass(frozen=True)
class PresenceRequest:
    kind: PresenceKind
    rp_id: str | None = None
    user_name: str | None = None


class PresenceResult(Enum):
    GRANTED = "granted"
    DENIED = "denied"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"


class Presence(Protocol):
    """A user-presence front end (auto, deny, terminal, desktop notification...)."""

    def request_presence(
        self, request: PresenceRequest, context: RequestContext, timeout: float
    ) -> PresenceResult:
        """Block until the user answers, the timeout passes or the context is cancelled.

        Implementations poll ``context.wait_cancelled`` so a CTAPHID_CANCEL ends
        the wait promptly; the caller has already set the UPNEEDED keepalive.
        """
        ...


class InstantPresence(Protocol):
    """Optional for a :class:`Presence`: the answer it would give without asking anyone.

    A front end that approves or refuses everything at once (``--presence auto`` without a
    delay, ``deny``) returns that answer here; the authenticator then uses it inline,
    without the UPNEEDED keepalive (nobody is asked to touch anything) and without the
    front end's waiting machinery. ``None``: the user must be asked
    (:meth:`Presence.request_presence`). Called on every request: it must be cheap.
    """

    def instant_answer(self, request: PresenceRequest) -> PresenceResult | None: ...


def _offered_answer(
    answerer: object, method_name: str, request: PresenceRequest
) -> PresenceResult | None:
    """``answerer``'s optional ``method_name(request)``, or ``None`` if it has no such method."""
    method = getattr(answerer, method_name, None)
    if method is None:
        return None
    answer: PresenceResult | None = method(request)
    return answer


def instant_answer(presence: object, request: PresenceRequest) -> PresenceResult | None:
    """``presence``'s :meth:`InstantPresence.instant_answer` for ``request``, or ``None`` if
    it has none (it must then be asked)."""
    return _offered_answer(presence, "instant_answer", request)


class Clock(Protocol):
    def monotonic(self) -> float: ...

    def time(self) -> float: ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()


class NullContext:
    """A request context for callers with no transport (tests, CLI)."""

    channel = 0

    def is_cancelled(self) -> bool:
        return False

    def wait_cancelled(self, timeout: float) -> bool:
        time.sleep(timeout)
        return False

    def set_keepalive(self, status: int) -> None:
        pass


class UserVerifier(Protocol):
    """Built-in user verification (a fingerprint reader's job on a hardware key).

    GRANTED means the user was verified; DENIED means verification failed (the
    authenticator counts it against uvRetries).
    """

    def verify_user(
        self, request: PresenceRequest, context: RequestContext, timeout: float
    ) -> PresenceResult: ...


class InstantVerifier(Protocol):
    """Optional for a :class:`UserVerifier`: the verification's result without asking anyone,
    as :class:`InstantPresence` is for a touch (``--uv`` with ``--presence auto``: everyone
    is verified at once; ``deny-uv``: nobody is). The authenticator then takes it inline,
    without the UPNEEDED keepalive. ``None``: the user must act
    (:meth:`UserVerifier.verify_user`). Called on every verification: it must be cheap, and
    agree with ``verify_user`` (a subclass that overrides one overrides both).
    """

    def instant_verification(self, request: PresenceRequest) -> PresenceResult | None: ...


def instant_verification(verifier: object, request: PresenceRequest) -> PresenceResult | None:
    """``verifier``'s :meth:`InstantVerifier.instant_verification` for ``request``, or
    ``None`` if it has none (the user must then act)."""
    return _offered_answer(verifier, "instant_verification", request)
