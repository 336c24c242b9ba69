"""Interactive user presence: one pending request, several ways to answer it.

:class:`PresenceBroker` implements :class:`vfido.authenticator.env.Presence`. A front end that
answers everything at once (``auto`` without a delay, ``deny``) answers inline, on the
request's own thread: nothing is published, no thread is involved, nothing waits
(:meth:`PresenceBroker.instant_answer`). Otherwise the broker publishes a
:class:`PendingPresence` (which the control socket lists and answers: ``vfido approve`` /
``vfido deny``) and hands it to each configured front end (a desktop notification, a
terminal prompt, a delayed automatic answer...) on a long-lived worker thread
(:func:`run_in_background`). The first answer wins; when the request ends (answered, timed
out, cancelled by the host) the front ends are told through :meth:`PendingPresence.wait_done`
and withdraw their prompt.

The authenticator turns the result into the CTAP status: DENIED -> OPERATION_DENIED,
TIMEOUT -> USER_ACTION_TIMEOUT, CANCELLED -> KEEPALIVE_CANCEL. For the user, a timeout is a
refusal.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable, Sequence

from vfido.authenticator.env import PresenceRequest, PresenceResult, RequestContext
from vfido.presence.modes import check_delay, front_ends_for, mode_spec
from vfido.presence.pending import (
    CANCEL_POLL,
    FrontEnd,
    PendingPresence,
    question,
    run_in_background,
)

log = logging.getLogger("vfido.broker")  # the name `vfido run` has always logged under


class PresenceBroker:
    """A :class:`vfido.authenticator.env.Presence` answered by front ends or the control socket."""

    def __init__(
        self,
        front_ends: Sequence[FrontEnd] = (),
        *,
        mode: str = "manual",
        uv_fails: bool = False,
        timeout: float | None = None,
        delay: float = 0.0,
    ) -> None:
        self.front_ends = tuple(front_ends)
        self.mode = mode
        #: Seconds the mode waits before it answers (``auto`` and its kin; said in status).
        self.delay = delay
        #: The key's presence timeout (``Config.presence_timeout``), when known: a delay
        #: given to :meth:`set_mode` must be shorter.
        self.timeout = timeout
        #: Built-in user verification always fails (``--presence deny-uv``), for testing RPs.
        self.uv_fails = uv_fails
        #: How the user answers a request no front end asks about (said in the log line):
        #: the command line's, unless the key is answered otherwise (VirtualKey's methods).
        self.answer_hint = "answer with `vfido approve` or `vfido deny`"
        self._initial = (mode, self.front_ends, uv_fails, delay)
        self._instant = _instant_of(self.front_ends)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._pending: dict[int, PendingPresence] = {}
        self._ids = itertools.count(1)

    @property
    def initial_mode(self) -> str:
        """The mode the broker was created with."""
        return self._initial[0]

    def set_mode(self, mode: str, delay: float | None = None) -> None:
        """Switch the presence mode for the next requests (a pending one keeps its front
        ends). The mode the broker started with is restored as it was (``prompt`` included)
        unless a ``delay`` is given. Raises ValueError."""
        initial_mode, initial_front_ends, initial_uv_fails, initial_delay = self._initial
        if mode == initial_mode and delay is None:
            front_ends, uv_fails, delay = initial_front_ends, initial_uv_fails, initial_delay
        else:
            front_ends, uv_fails = front_ends_for(mode, delay or 0.0, self.timeout)
        with self._lock:
            self.front_ends, self.mode, self.uv_fails = front_ends, mode, uv_fails
            self.delay = delay or 0.0
            self._instant = _instant_of(self.front_ends)
        log.info("presence: mode %s", mode)

    def set_user_verified(self, verified: bool) -> None:
        """Whether built-in user verification succeeds from now on (WebDriver's Set User
        Verified), without touching how presence is answered: a key that is not consenting,
        or waits for ``vfido approve``, keeps doing so. ``auto`` and ``deny-uv`` are the same
        front ends with and without failing UV, so between them the mode's name follows."""
        with self._lock:
            self.uv_fails = not verified
            if self.mode in ("auto", "deny-uv"):
                self.mode = "auto" if verified else "deny-uv"
        log.info("presence: built-in user verification %s", "succeeds" if verified else "fails")

    # -- what the control socket uses -----------------------------------------------------

    def pending(self) -> list[PendingPresence]:
        with self._lock:
            return list(self._pending.values())

    def wait_pending(self, timeout: float) -> list[PendingPresence]:
        """The pending requests, waiting up to ``timeout`` seconds for one to appear."""
        with self._changed:
            self._changed.wait_for(lambda: bool(self._pending), timeout)
            return list(self._pending.values())

    def answer(self, granted: bool, request_id: int | None, source: str) -> PendingPresence:
        """Answer the pending request ``request_id`` (or the only one); ValueError if none."""
        with self._lock:
            pendings = list(self._pending.values())
        if request_id is not None:
            pendings = [p for p in pendings if p.id == request_id]
            if not pendings:
                raise LookupError(f"no pending request {request_id}")
        if not pendings:
            raise LookupError("no request is waiting for approval")
        if len(pendings) > 1:
            ids = ", ".join(str(p.id) for p in pendings)
            raise LookupError(f"several requests are waiting ({ids}): choose one with --id")
        target = pendings[0]
        if not target.answer(granted, source):
            if target.cancelled:
                raise LookupError(f"request {target.id} was cancelled by the host")
            raise LookupError(f"request {target.id} was already answered")
        return target

    # -- Presence ---------------------------------------------------------------------------

    def instant_answer(self, request: PresenceRequest) -> PresenceResult | None:
        """The answer of a front end that answers at once (``auto`` without a delay,
        ``deny``), or None if the user must be asked (authenticator.env.InstantPresence).
        Nothing is published and nothing waits; the line is logged at DEBUG only."""
        instant = self._instant  # one attribute read: set_mode replaces it whole
        if instant is None:
            return None
        result, source = instant
        if log.isEnabledFor(logging.DEBUG):
            log.debug("presence: %s: %s (%s)", question(request), result.value, source)
        return result

    def request_presence(
        self, request: PresenceRequest, context: RequestContext, timeout: float
    ) -> PresenceResult:
        instant = self.instant_answer(request)
        if instant is not None:
            return instant
        pending = PendingPresence(next(self._ids), request, timeout, context.is_cancelled)
        on_cancel = getattr(context, "on_cancel", None)  # the transport's: wake at a CANCEL
        if on_cancel is not None:
            on_cancel(pending.wake)
        with self._changed:
            self._pending[pending.id] = pending
            self._changed.notify_all()
        with self._lock:
            front_ends = self.front_ends
        if front_ends:
            log.info("presence: request %d: %s", pending.id, question(request))
        else:  # the user asked to answer by hand: one line tells them what and how
            log.warning(
                "presence: request %d: %s %s (%.0f s)",
                pending.id,
                question(request),
                self.answer_hint,
                timeout,
            )
        for front_end in front_ends:
            run_in_background(_front_end_job(front_end, pending))
        result = PresenceResult.TIMEOUT
        try:
            while True:
                remaining = pending.remaining()
                answered = pending.wait_answered(min(CANCEL_POLL, remaining))
                # A CANCEL wins over an answer the broker has not acted on yet (an answer
                # that came after it was refused): CTAP 2.1 11.2.9.1.5.
                if context.is_cancelled():
                    result = PresenceResult.CANCELLED
                    break
                if answered:
                    result = pending.result or PresenceResult.TIMEOUT
                    break
                if remaining <= 0:
                    break
        finally:
            result = pending.finish(result)
            with self._lock:
                self._pending.pop(pending.id, None)
        if result is PresenceResult.TIMEOUT:  # it was announced: so is its end
            log.info("presence: request %d: no answer in %.0f s: refused", pending.id, timeout)
        elif result is PresenceResult.CANCELLED:
            log.info("presence: request %d: cancelled by the host", pending.id)
        elif log.isEnabledFor(logging.DEBUG):
            log.debug("presence: request %d: %s (%s)", pending.id, result.value, pending.source)
        return result

    def verify_user(
        self, request: PresenceRequest, context: RequestContext, timeout: float
    ) -> PresenceResult:
        """Built-in user verification (``vfido run --uv``): the user's explicit approval
        through the same front ends stands in for a fingerprint; ``uv_fails`` makes every
        verification fail, as a finger the sensor does not know would."""
        instant = self.instant_verification(request)
        if instant is not None:
            return instant
        return self.request_presence(request, context, timeout)

    def instant_verification(self, request: PresenceRequest) -> PresenceResult | None:
        """:meth:`verify_user`'s answer when nobody is asked (``deny-uv``, or a front end
        that answers at once): authenticator.env.InstantVerifier."""
        if self.uv_fails:
            if log.isEnabledFor(logging.DEBUG):
                log.debug("presence: user verification for %s fails (deny-uv)", question(request))
            return PresenceResult.DENIED
        return self.instant_answer(request)


def _instant_of(front_ends: Sequence[FrontEnd]) -> tuple[PresenceResult, str] | None:
    """(result, front end name) of the first front end that answers at once, if any."""
    for front_end in front_ends:
        instant = getattr(front_end, "instant", None)
        if instant is not None:
            return (PresenceResult.GRANTED if instant else PresenceResult.DENIED), front_end.name
    return None


def _front_end_job(front_end: FrontEnd, pending: PendingPresence) -> Callable[[], None]:
    def ask() -> None:
        try:
            front_end.ask(pending)
        except Exception as exc:  # a broken front end must not take the key down
            log.warning("presence front end %s failed: %s", front_end.name, exc)

    ask.__name__ = f"front end {front_end.name}"
    return ask


def broker_for(mode: str, delay: float = 0.0, timeout: float | None = None) -> PresenceBroker:
    """The broker of presence ``mode`` (a name in :data:`vfido.presence.modes.MODES`) as the
    key starts with it, for a key whose presence timeout is ``timeout`` (None: unknown); the
    control socket can always answer too. Raises
    :class:`vfido.presence.modes.PresenceModeError` (one line: the mode is unknown or cannot
    be used here, e.g. ``prompt`` without a terminal, or the delay is too long)."""
    spec = mode_spec(mode)
    check_delay(spec, delay, timeout)
    return PresenceBroker(
        spec.at_start(delay), mode=mode, uv_fails=spec.uv_fails, timeout=timeout, delay=delay
    )
