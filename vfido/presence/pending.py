"""A presence request waiting for the user (:class:`PendingPresence`), what the user is
asked (:func:`question`), what every front end implements (:class:`FrontEnd`) and the threads
front ends run on (:func:`run_in_background`). Front ends import this module, never the broker.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Protocol

from vfido.authenticator.env import PresenceKind, PresenceRequest, PresenceResult
from vfido.safetext import shorten, visible

log = logging.getLogger("vfido.broker")  # the name `vfido run` has always logged under

#: How often the broker looks at the host's CTAPHID_CANCEL while waiting for an answer.
CANCEL_POLL = 0.05
#: Longest site / user name shown to the user (they come from the web page).
NAME_LIMIT = 64


def clean(text: str, limit: int = NAME_LIMIT, *, site: bool = False) -> str:
    """``text`` safe to show on a terminal or in a notification: control and format
    characters (ANSI escapes, bidi overrides) shown as escapes (:func:`vfido.safetext.visible`),
    at most ``limit`` characters. ``site``: an RP ID, cut at its start: its end says whose
    it is (``login.example.com.attacker.example`` cut at its end reads as example.com's)."""
    return shorten(visible(text).strip(), limit, keep_end=site)


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
    site = clean(request.rp_id, site=True) if request.rp_id else "a site (U2F: name not known)"
    for_site = f" for {clean(request.rp_id, site=True)}" if request.rp_id else ""
    text = _QUESTIONS[request.kind].format(site=site, for_site=for_site)
    if request.user_name and text.endswith("?"):
        text = text[:-1] + f" (as {clean(request.user_name)})?"
    return text


def describe(request: PresenceRequest) -> str:
    """A one-line description of the request for logs (``register for example.com as
    alice``); :func:`question` is what the user is asked."""
    what = request.kind.value
    parts = [what]
    if request.rp_id:
        parts.append(f"for {visible(request.rp_id)}")
    if request.user_name:
        parts.append(f"as {visible(request.user_name)}")
    return " ".join(parts)


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

    def __init__(
        self,
        request_id: int,
        request: PresenceRequest,
        timeout: float,
        cancelled: Callable[[], bool] | None = None,
    ) -> None:
        self.id = request_id
        self.request = request
        self.timeout = timeout
        self.created = time.monotonic()
        #: Whether the host cancelled the request (its transaction's ``is_cancelled``).
        self._cancelled = cancelled
        self._lock = threading.Lock()
        self._result: PresenceResult | None = None
        self._source: str | None = None
        self._answered = threading.Event()
        self._done = threading.Event()

    def answer(self, granted: bool, source: str) -> bool:
        """Record the user's answer; False if the request already has one, is over, or was
        cancelled by the host (CTAPHID_CANCEL): an approval after the cancel must not sign."""
        with self._lock:
            if self._result is not None or self._done.is_set() or self.cancelled:
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

    def wake(self) -> None:
        """Wake the broker waiting for an answer (the host cancelled: it looks at once)."""
        self._answered.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled is not None and self._cancelled()

    def finish(self, result: PresenceResult) -> PresenceResult:
        """End the request (called by the broker); returns the result that stands: the
        first answer, unless the host cancelled before the broker acted on it."""
        with self._lock:
            if self._result is None or result is PresenceResult.CANCELLED:
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
