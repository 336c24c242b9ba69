"""The presence path costs nothing when nothing waits (issue #16).

`vfido run --presence auto` (and ``deny``) answer inline on the request's thread: no thread
is started, no pending request is published, no UPNEEDED keepalive is announced for a touch
nobody is asked for. Front ends that do ask someone run on long-lived worker threads, reused
from one request to the next.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from fido2.ctap2 import Ctap2

from tests.presence_helpers import SIGN_IN, Context, wait_workers_idle
from tests.vkey import running_key
from vfido.authenticator.config import Config
from vfido.authenticator.env import PresenceResult
from vfido.presence import AutoFrontEnd, DenyFrontEnd, PendingPresence, PresenceBroker

CLIENT_DATA_HASH = b"\x11" * 32


@pytest.fixture
def thread_starts(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The names of the threads started while the test runs."""
    started: list[str] = []
    real_start = threading.Thread.start

    def start(self: threading.Thread) -> None:
        started.append(self.name)
        real_start(self)

    monkeypatch.setattr(threading.Thread, "start", start)
    yield started


@pytest.mark.parametrize(
    ("front_end", "expected"),
    [(AutoFrontEnd(), PresenceResult.GRANTED), (DenyFrontEnd(), PresenceResult.DENIED)],
)
def test_instant_front_ends_answer_inline(
    thread_starts: list[str], front_end: AutoFrontEnd | DenyFrontEnd, expected: PresenceResult
) -> None:
    broker = PresenceBroker([front_end], mode=front_end.name)
    published: list[list[PendingPresence]] = []
    watcher = threading.Thread(target=lambda: published.append(broker.wait_pending(0.5)))
    watcher.start()
    context = Context()
    for _ in range(20):
        assert broker.request_presence(SIGN_IN, context, 30.0) is expected
    watcher.join()
    assert thread_starts == [watcher.name]  # the test's own watcher, nothing else
    assert published == [[]]  # nothing was ever pending
    assert broker.instant_answer(SIGN_IN) is expected


def test_a_delay_or_manual_mode_is_not_instant() -> None:
    assert PresenceBroker([AutoFrontEnd(0.5)], mode="auto").instant_answer(SIGN_IN) is None
    assert PresenceBroker(mode="manual").instant_answer(SIGN_IN) is None
    broker = PresenceBroker([AutoFrontEnd()], mode="auto")
    broker.set_mode("manual")
    assert broker.instant_answer(SIGN_IN) is None
    broker.set_mode("auto")
    assert broker.instant_answer(SIGN_IN) is PresenceResult.GRANTED


def test_a_key_on_auto_starts_no_thread_and_asks_for_no_touch(thread_starts: list[str]) -> None:
    broker = PresenceBroker([AutoFrontEnd()], mode="auto")
    with running_key(presence=broker, config=Config(attestation="none")) as key:
        ctap = Ctap2(key.device)
        before = len(thread_starts)  # the transport's own threads start once, with the key
        statuses: list[int] = []
        for _ in range(5):
            made = ctap.make_credential(
                CLIENT_DATA_HASH,
                {"id": "example.com", "name": "Example"},
                {"id": b"user", "name": "user"},
                [{"type": "public-key", "alg": -7}],
                on_keepalive=statuses.append,
            )
            credential = made.auth_data.credential_data
            assert credential is not None
            ctap.get_assertion(
                "example.com",
                CLIENT_DATA_HASH,
                [{"type": "public-key", "id": credential.credential_id}],
                on_keepalive=statuses.append,
            )
        assert thread_starts[before:] == []
        assert statuses == []  # no UPNEEDED for a touch nobody is asked for
        assert broker.pending() == []


class _Answering:
    """A front end that asks "someone" (it is not instant) who approves at once."""

    name = "answering"

    def ask(self, pending: PendingPresence) -> None:
        pending.answer(True, self.name)


def test_interactive_front_ends_reuse_their_threads(thread_starts: list[str]) -> None:
    broker = PresenceBroker([_Answering()], mode="manual")
    context = Context()
    assert broker.request_presence(SIGN_IN, context, 30.0) is PresenceResult.GRANTED
    wait_workers_idle()
    first = list(thread_starts)
    assert len(first) <= 1  # at most one worker, the first time one is needed
    for _ in range(10):
        assert broker.request_presence(SIGN_IN, context, 30.0) is PresenceResult.GRANTED
        wait_workers_idle()
    assert thread_starts == first  # no thread per request
