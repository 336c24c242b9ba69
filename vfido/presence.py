"""User-presence front ends.

Each implements :class:`vfido.authenticator.env.Presence`. The authenticator has
already set the UPNEEDED keepalive when it asks; a front end only decides.
"""

from __future__ import annotations

import logging

from vfido.authenticator.env import PresenceRequest, PresenceResult, RequestContext
from vfido.safetext import visible

log = logging.getLogger(__name__)


def describe(request: PresenceRequest) -> str:
    """A one-line, human description of what the user is asked to approve."""
    what = request.kind.value
    parts = [what]
    if request.rp_id:
        parts.append(f"for {visible(request.rp_id)}")
    if request.user_name:
        parts.append(f"as {visible(request.user_name)}")
    return " ".join(parts)


class AutoPresence:
    """Always approves, after an optional delay (a CTAPHID_CANCEL ends the wait)."""

    def __init__(self, delay: float = 0.0) -> None:
        if delay < 0:
            raise ValueError("delay must be >= 0")
        self.delay = delay

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
