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
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from vfido.authenticator.env import PresenceKind, PresenceRequest, PresenceResult, RequestContext
from vfido.safetext import shorten, visible

log = logging.getLogger(__name__)

#: How often the broker looks at the host's CTAPHID_CANCEL while waiting for an answer.
CANCEL_POLL = 0.05
#: Longest site / user name shown to the user (they come from the web page).
NAME_LIMIT = 64


def clean(text: str, limit: int = NAME_LIMIT) -> str:
    """``text`` safe to show on a terminal or in a notification: control and format
    characters (ANSI escapes, bidi overrides) shown as escapes (:func:`vfido.safetext.visible`),
    at most ``limit`` characters."""
    return shorten(visible(text).strip(), limit)


_QUESTIONS = {
    PresenceKind.REGISTER: "Register this security key with {site}?",
    PresenceKind.AUTHENTICATE: "Sign in to {site} with this security key?",
    PresenceKind.EXCLUDED: "This key is already registered with {site}: confirm?",
    PresenceKind.RESET: "Reset the security key? Every credential will be erased.",
    PresenceKind.SELECT: "Use this security key{for_site}?",
    PresenceKind.CREDENTIAL_MANAGEMENT: "Allow managing the key's credentials{for_site}?",
    PresenceKind.LARGE_BLOB: "Allow writing large-blob data{for_site}?",
    PresenceKind.CONFIG: "Allow changing the key's configuration?",
    PresenceKind.ENROLL: "Touch the fingerprint sensor to enroll a finger?",
}


def question(request: PresenceRequest) -> str:
    """What the user is asked, in one sentence: which site asks, and for what."""
    site = clean(request.rp_id) if request.rp_id else "a site (U2F: name not known)"
    for_site = f" for {clean(request.rp_id)}" if request.rp_id else ""
    text = _QUESTIONS[request.kind].format(site=site, for_site=for_site)
    if request.user_name and text.endswith("?"):
        text = text[:-1] + f" (as {clean(request.user_name)})?"
    return text


def action(request: PresenceRequest) -> str:
    """A short name of what is asked, e.g. ``sign in`` (for status lines)."""
    return {
        PresenceKind.REGISTER: "register",
        PresenceKind.AUTHENTICATE: "sign in",
    }.get(request.kind, request.kind.value.replace("-", " "))


class _Workers:
    """Long-lived daemon threads that run front ends (and anything else a front end needs
    in the background). A thread is started only when every existing one is busy, so a
    key that asks one question at a time keeps one or two threads for its whole life."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0
        self._started = 0

    @property
    def threads(self) -> int:
        """How many worker threads exist (for tests)."""
        with self._lock:
            return self._started

    @property
    def busy(self) -> int:
        """How many worker threads are running a job or about to (for tests)."""
        with self._lock:
            return self._started - self._idle

    def submit(self, job: Callable[[], None]) -> None:
        with self._lock:
            if self._idle:
                self._idle -= 1  # that worker is spoken for
                start = False
            else:
                self._started += 1
                start = True
        self._jobs.put(job)
        if start:
            threading.Thread(target=self._work, name=self._name, daemon=True).start()

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                job()
            except Exception as exc:  # a broken front end must not take the key down
                log.warning("presence: %s failed: %s", getattr(job, "__name__", "a job"), exc)
            with self._lock:
                self._idle += 1


_WORKERS = _Workers("presence-front-end")


def run_in_background(job: Callable[[], None]) -> None:
    """Run ``job()`` on one of the presence front ends' long-lived worker threads."""
    _WORKERS.submit(job)


class PendingPresence:
    """One presence request waiting for an answer. The first answer wins."""

    def __init__(self, request_id: int, request: PresenceRequest, timeout: float) -> None:
        self.id = request_id
        self.request = request
        self.timeout = timeout
        self.created = time.monotonic()
        self._lock = threading.Lock()
        self._result: PresenceResult | None = None
        self._source: str | None = None
        self._answered = threading.Event()
        self._done = threading.Event()

    def answer(self, granted: bool, source: str) -> bool:
        """Record the user's answer; False if the request already has one (or is over)."""
        with self._lock:
            if self._result is not None or self._done.is_set():
                return False
            self._result = PresenceResult.GRANTED if granted else PresenceResult.DENIED
            self._source = source
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "presence: request %d %s by %s",
                self.id,
                "approved" if granted else "denied",
                source,
            )
        self._answered.set()
        return True

    def finish(self, result: PresenceResult) -> PresenceResult:
        """End the request (called by the broker); returns the result that stands."""
        with self._lock:
            if self._result is None:
                self._result = result
                self._source = "timeout" if result is PresenceResult.TIMEOUT else "host"
            self._done.set()
            return self._result

    @property
    def result(self) -> PresenceResult | None:
        with self._lock:
            return self._result

    @property
    def source(self) -> str | None:
        """Who answered: ``control socket``, ``notification``, ``terminal``, ``timeout``..."""
        with self._lock:
            return self._source

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def remaining(self) -> float:
        return max(0.0, self.timeout - (time.monotonic() - self.created))

    def wait_answered(self, timeout: float) -> bool:
        return self._answered.wait(timeout)

    def wait_done(self, timeout: float) -> bool:
        """Front ends call this to know when to withdraw their prompt."""
        return self._done.wait(timeout)

    def describe(self) -> dict[str, object]:
        """The request as the control socket shows it."""
        return {
            "id": self.id,
            "kind": self.request.kind.value,
            "action": action(self.request),
            "rp_id": self.request.rp_id,
            "user_name": self.request.user_name,
            "question": question(self.request),
            "remaining": round(self.remaining(), 1),
        }


class FrontEnd(Protocol):
    """Asks the user about one pending request.

    ``ask`` runs on a long-lived worker thread (:func:`run_in_background`), never on the
    request's. It calls ``pending.answer(granted, source)`` when the user answers, and
    returns once it has nothing more to do or ``pending.wait_done`` says the request is over
    (it then withdraws its prompt).

    A front end that gives every request the same answer without asking anyone also has an
    ``instant`` attribute (True: approve, False: refuse; None: it must be asked): the broker
    then answers inline, without a pending request or a thread.
    """

    name: str

    def ask(self, pending: PendingPresence) -> None: ...


class AutoFrontEnd:
    """Approves after ``delay`` seconds (``--presence auto``)."""

    name = "auto"

    def __init__(self, delay: float = 0.0) -> None:
        if delay < 0:
            raise ValueError("delay must be >= 0")
        self.delay = delay
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


#: Presence modes the control socket can switch to at run time (``set-presence``).
RUNTIME_MODES = ("auto", "deny", "deny-uv", "manual", "notify")


def front_ends_for(mode: str, delay: float = 0.0) -> tuple[tuple[FrontEnd, ...], bool]:
    """(front ends, uv_fails) of a run-time presence ``mode``. Raises ValueError.

    ``notify`` uses desktop notifications without a terminal fallback (the control socket
    can still answer); ``prompt`` needs the terminal of ``vfido run`` and is only available
    as the mode the key started with.
    """
    if delay < 0:
        raise ValueError("delay must be >= 0")
    if mode == "auto":
        return (AutoFrontEnd(delay),), False
    if mode == "deny-uv":
        return (AutoFrontEnd(delay),), True
    if mode == "deny":
        return (DenyFrontEnd(),), False
    if mode == "manual":
        return (), False
    if mode == "notify":
        from vfido.desktop import DesktopNotifier

        return (DesktopNotifier(fallback=None),), False
    raise ValueError(f"presence mode must be one of {', '.join(RUNTIME_MODES)} at run time")


class PresenceBroker:
    """A :class:`vfido.authenticator.env.Presence` answered by front ends or the control socket."""

    def __init__(
        self, front_ends: Sequence[FrontEnd] = (), *, mode: str = "manual", uv_fails: bool = False
    ) -> None:
        self.front_ends = tuple(front_ends)
        self.mode = mode
        #: Built-in user verification always fails (``--presence deny-uv``), for testing RPs.
        self.uv_fails = uv_fails
        self._initial = (mode, self.front_ends, uv_fails)
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
        initial_mode, initial_front_ends, initial_uv_fails = self._initial
        if mode == initial_mode and delay is None:
            front_ends, uv_fails = initial_front_ends, initial_uv_fails
        else:
            front_ends, uv_fails = front_ends_for(mode, delay or 0.0)
        with self._lock:
            self.front_ends, self.mode, self.uv_fails = front_ends, mode, uv_fails
            self._instant = _instant_of(self.front_ends)
        log.info("presence: mode %s", mode)

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
        pending = PendingPresence(next(self._ids), request, timeout)
        with self._changed:
            self._pending[pending.id] = pending
            self._changed.notify_all()
        with self._lock:
            front_ends = self.front_ends
        if front_ends:
            log.info("presence: request %d: %s", pending.id, question(request))
        else:  # the user asked to answer by hand: one line tells them what and how
            log.warning(
                "presence: request %d: %s answer with `vfido approve` or `vfido deny` (%.0f s)",
                pending.id,
                question(request),
                timeout,
            )
        for front_end in front_ends:
            run_in_background(_front_end_job(front_end, pending))
        result = PresenceResult.TIMEOUT
        try:
            while True:
                remaining = pending.remaining()
                if pending.wait_answered(min(CANCEL_POLL, remaining)):
                    result = pending.result or PresenceResult.TIMEOUT
                    break
                if context.is_cancelled():
                    result = PresenceResult.CANCELLED
                    break
                if remaining <= 0:
                    break
        finally:
            result = pending.finish(result)
            with self._lock:
                self._pending.pop(pending.id, None)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("presence: request %d: %s (%s)", pending.id, result.value, pending.source)
        return result

    def verify_user(
        self, request: PresenceRequest, context: RequestContext, timeout: float
    ) -> PresenceResult:
        """Built-in user verification (``vfido run --uv``): the user's explicit approval
        through the same front ends stands in for a fingerprint; ``uv_fails`` makes every
        verification fail, as a finger the sensor does not know would."""
        if self.uv_fails:
            if log.isEnabledFor(logging.DEBUG):
                log.debug("presence: user verification for %s fails (deny-uv)", question(request))
            return PresenceResult.DENIED
        return self.request_presence(request, context, timeout)


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
