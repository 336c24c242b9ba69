"""User-presence front ends.

Each implements :class:`authenticator.env.Presence`. The authenticator has
already set the UPNEEDED keepalive when it asks; a front end only decides.
"""

from __future__ import annotations

import logging
import threading

from authenticator.env import PresenceRequest, PresenceResult, RequestContext

log = logging.getLogger(__name__)


def describe(request: PresenceRequest) -> str:
    """A one-line, human description of what the user is asked to approve."""
    what = request.kind.value
    parts = [what]
    if request.rp_id:
        parts.append(f"for {request.rp_id}")
    if request.user_name:
        parts.append(f"as {request.user_name}")
    return " ".join(parts)


class AutoPresence:
    """Always approves, after an optional delay (a CTAPHID_CANCEL ends the wait)."""

    def __init__(self, delay: float = 0.0) -> None:
        if delay < 0:
            raise ValueError("delay must be >= 0")
        self.delay = delay

    def request_presence(
        self, request: PresenceRequest, context: RequestContext, timeout: float
    ) -> PresenceResult:
        log.info("presence: auto-approving %s", describe(request))
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
        log.info("user verification: auto-approving %s", describe(request))
        return self.request_presence(request, context, timeout)


class DenyUvPresence(AutoPresence):
    """Presence is granted but built-in user verification always fails
    (``--presence deny-uv``: exercises uvRetries and the PIN fallback)."""

    def verify_user(
        self, request: PresenceRequest, context: RequestContext, timeout: float
    ) -> PresenceResult:
        log.info("user verification: failing %s", describe(request))
        return PresenceResult.DENIED


class DenyPresence:
    """The user refuses every request."""

    def request_presence(
        self, request: PresenceRequest, context: RequestContext, timeout: float
    ) -> PresenceResult:
        log.info("presence: denying %s", describe(request))
        return PresenceResult.DENIED


class PendingRequest:
    """A presence request waiting for an answer from somewhere else (control socket, UI)."""

    def __init__(self, request: PresenceRequest) -> None:
        self.request = request
        self._answer: PresenceResult | None = None
        self._event = threading.Event()

    def answer(self, granted: bool) -> None:
        self._answer = PresenceResult.GRANTED if granted else PresenceResult.DENIED
        self._event.set()

    def wait(self, context: RequestContext, timeout: float, poll: float = 0.05) -> PresenceResult:
        waited = 0.0
        while waited < timeout:
            if self._event.wait(0):
                break
            if context.wait_cancelled(min(poll, timeout - waited)):
                return PresenceResult.CANCELLED
            waited += poll
        if self._answer is None:
            return PresenceResult.TIMEOUT
        return self._answer


class ManualPresence:
    """Presence answered by another thread: ``approve()`` / ``deny()`` the pending request.

    Used by the control socket (``vfido approve``) and by tests that script a user.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: PendingRequest | None = None
        self._changed = threading.Condition(self._lock)

    @property
    def pending(self) -> PresenceRequest | None:
        with self._lock:
            return self._pending.request if self._pending else None

    def wait_pending(self, timeout: float) -> PresenceRequest | None:
        with self._changed:
            self._changed.wait_for(lambda: self._pending is not None, timeout)
            return self._pending.request if self._pending else None

    def _answer(self, granted: bool) -> bool:
        with self._lock:
            pending = self._pending
        if pending is None:
            return False
        pending.answer(granted)
        return True

    def approve(self) -> bool:
        return self._answer(True)

    def deny(self) -> bool:
        return self._answer(False)

    def request_presence(
        self, request: PresenceRequest, context: RequestContext, timeout: float
    ) -> PresenceResult:
        pending = PendingRequest(request)
        with self._changed:
            self._pending = pending
            self._changed.notify_all()
        log.info("presence: waiting for approval of %s", describe(request))
        try:
            return pending.wait(context, timeout)
        finally:
            with self._lock:
                if self._pending is pending:
                    self._pending = None
