"""The answers nobody has to give: approve (after an optional delay) or refuse.

One family in two shapes: :class:`AutoFrontEnd` / :class:`DenyFrontEnd` are front ends of the
:class:`vfido.presence.broker.PresenceBroker` (what ``vfido run`` and the toolkit use: the
control socket can still list and switch them); :class:`AutoPresence`, :class:`DenyPresence`
and :class:`DenyUvPresence` are the same answers as a bare
:class:`vfido.authenticator.env.Presence`, for an authenticator used without a broker (tests,
:func:`vfido.key.offline_authenticator`). The authenticator has already set the UPNEEDED
keepalive when it asks; these only decide.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from vfido.authenticator.env import PresenceRequest, PresenceResult, RequestContext
from vfido.presence.pending import describe

if TYPE_CHECKING:
    from vfido.presence.pending import PendingPresence

__all__ = [
    "AutoFrontEnd",
    "AutoPresence",
    "DenyFrontEnd",
    "DenyPresence",
    "DenyUvPresence",
    "describe",
]

log = logging.getLogger("vfido.presence")  # the name `vfido run` has always logged under


def _check_delay(delay: float) -> float:
    if delay < 0:
        raise ValueError("delay must be >= 0")
    return delay


class AutoPresence:
    """Always approves, after an optional delay (a CTAPHID_CANCEL ends the wait)."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = _check_delay(delay)

    def instant_answer(self, request: PresenceRequest) -> PresenceResult | None:
        """Without a delay, approved at once (authenticator.env.InstantPresence)."""
        return None if self.delay else PresenceResult.GRANTED

    def request_presence(
        self, request: PresenceRequest, context: RequestContext, timeout: float
    ) -> PresenceResult:
        if log.isEnabledFor(logging.DEBUG):  # describe() is not free; this runs per request
            log.debug("presence: auto-approving %s", describe(request))
        if self.delay:
            if self.delay >= timeout:
                context.wait_cancelled(timeout)
                return (
                    PresenceResult.CANCELLED if context.is_cancelled() else PresenceResult.TIMEOUT
                )
            if context.wait_cancelled(self.delay):
                return PresenceResult.CANCELLED
        return PresenceResult.GRANTED

    def verify_user(
        self, request: PresenceRequest, context: RequestContext, timeout: float
    ) -> PresenceResult:
        """Built-in user verification (``--uv``): the user is always verified."""
        if log.isEnabledFor(logging.DEBUG):
            log.debug("user verification: auto-approving %s", describe(request))
        return self.request_presence(request, context, timeout)


class DenyUvPresence(AutoPresence):
    """Presence is granted but built-in user verification always fails
    (``--presence deny-uv``: exercises uvRetries and the PIN fallback)."""

    def verify_user(
        self, request: PresenceRequest, context: RequestContext, timeout: float
    ) -> PresenceResult:
        if log.isEnabledFor(logging.DEBUG):
            log.debug("user verification: failing %s", describe(request))
        return PresenceResult.DENIED


class DenyPresence:
    """The user refuses every request."""

    def instant_answer(self, request: PresenceRequest) -> PresenceResult | None:
        return PresenceResult.DENIED

    def request_presence(
        self, request: PresenceRequest, context: RequestContext, timeout: float
    ) -> PresenceResult:
        if log.isEnabledFor(logging.DEBUG):
            log.debug("presence: denying %s", describe(request))
        return PresenceResult.DENIED

    def verify_user(
        self, request: PresenceRequest, context: RequestContext, timeout: float
    ) -> PresenceResult:
        """Built-in user verification is refused too (so a key with built-in UV can be
        built offline: ``vfido.key.offline_authenticator``)."""
        return self.request_presence(request, context, timeout)


class AutoFrontEnd:
    """Approves after ``delay`` seconds (``--presence auto``)."""

    name = "auto"

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = _check_delay(delay)
        #: Without a delay, every request is approved inline.
        self.instant: bool | None = None if delay else True

    def ask(self, pending: PendingPresence) -> None:
        if self.delay and pending.wait_done(self.delay):
            return
        pending.answer(True, "auto")


class DenyFrontEnd:
    """Refuses at once (``--presence deny``)."""

    name = "deny"
    instant = False

    def ask(self, pending: PendingPresence) -> None:
        pending.answer(False, "deny")
