"""The presence path costs nothing when nothing waits (issue #16).

`vfido run --presence auto` (and ``deny``) answer inline on the request's thread: no thread
is started, no pending request is published, no UPNEEDED keepalive is announced for a touch
nobody is asked for. Front ends that do ask someone run on long-lived worker threads, reused
from one request to the next.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from fido2.ctap import CtapError
from fido2.ctap2 import ClientPin, Ctap2, PinProtocolV2

from tests.presence_helpers import SIGN_IN, Context, wait_workers_idle
from tests.vkey import running_key
from vfido.authenticator.config import Config
from vfido.authenticator.env import PresenceResult
from vfido.presence import AutoFrontEnd, DenyFrontEnd, PendingPresence, PresenceBroker

CLIENT_DATA_HASH = b"\x11" * 32
KEEPALIVE_UPNEEDED = 2  # CTAP 2.1 section 11.2.9.1.7


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


def _ceremonies(device: object, statuses: list[int], *, uv: bool = False, rounds: int = 3) -> None:
    """makeCredential then getAssertion, ``rounds`` times (with the uv option if ``uv``:
    both must come back user-verified); every keepalive status goes to ``statuses``."""
    ctap = Ctap2(device)  # type: ignore[arg-type]
    options = {"uv": True} if uv else None
    for _ in range(rounds):
        made = ctap.make_credential(
            CLIENT_DATA_HASH,
            {"id": "example.com", "name": "Example"},
            {"id": b"user", "name": "user"},
            [{"type": "public-key", "alg": -7}],
            options=options,
            on_keepalive=statuses.append,
        )
        credential = made.auth_data.credential_data
        assert credential is not None
        got = ctap.get_assertion(
            "example.com",
            CLIENT_DATA_HASH,
            [{"type": "public-key", "id": credential.credential_id}],
            options=options,
            on_keepalive=statuses.append,
        )
        assert made.auth_data.is_user_verified() is got.auth_data.is_user_verified() is uv


def test_a_key_on_auto_starts_no_thread_and_asks_for_no_touch(thread_starts: list[str]) -> None:
    broker = PresenceBroker([AutoFrontEnd()], mode="auto")
    with running_key(presence=broker, config=Config(attestation="none")) as key:
        before = len(thread_starts)  # the transport's own threads start once, with the key
        statuses: list[int] = []
        _ceremonies(key.device, statuses, rounds=5)
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


def test_built_in_uv_on_auto_asks_for_no_touch(thread_starts: list[str]) -> None:
    """`vfido run --uv --presence auto` (how CI gives Chromium a key that verifies the
    user): verifying at once is nobody's wait either. No UPNEEDED keepalive (python-fido2
    turns one into "touch your authenticator"; CTAP 2.1 section 11.2.9.1.7 has it mean the
    key waits for the user), no thread, nothing pending."""
    broker = PresenceBroker([AutoFrontEnd()], mode="auto")
    config = Config(attestation="none", builtin_uv=True)
    with running_key(presence=broker, config=config) as key:
        before = len(thread_starts)
        statuses: list[int] = []
        _ceremonies(key.device, statuses, uv=True)
        assert thread_starts[before:] == []
        assert statuses == []
        assert broker.pending() == []


def test_built_in_uv_that_waits_still_says_upneeded() -> None:
    """The same key with a front end that asks someone: the UPNEEDED keepalive is sent
    while the verification waits (the test above would pass if no keepalive were ever sent)."""
    broker = PresenceBroker([_Answering()], mode="manual")
    config = Config(attestation="none", builtin_uv=True)
    with running_key(presence=broker, config=config) as key:
        statuses: list[int] = []
        _ceremonies(key.device, statuses, uv=True)
        assert statuses.count(KEEPALIVE_UPNEEDED) == 6  # once per verification


class _Refusing:
    """A front end that asks "someone" (it is not instant) who refuses at once."""

    name = "refusing"

    def ask(self, pending: PendingPresence) -> None:
        pending.answer(False, self.name)


#: (front end, broker mode, deny-uv): the four ways a verification can end, at once or asked.
_UV_WAYS = {
    "granted at once": (AutoFrontEnd(), "auto", False),
    "granted, asked": (_Answering(), "manual", False),
    "denied at once (deny-uv)": (AutoFrontEnd(), "auto", True),
    "denied, asked": (_Refusing(), "manual", False),
}


@pytest.mark.parametrize("way", list(_UV_WAYS))
def test_built_in_uv_leaves_the_same_state_verified_at_once_or_asked(way: str) -> None:
    """Answered at once, a verification is one state write and no keepalive; asked, the
    attempt is written first (in case the wait never ends), UPNEEDED is sent, and a granted
    one writes its outcome after. What is stored is the same either way: uvRetries back to 8,
    or one less per failure down to 0 (UV_INVALID, then UV_BLOCKED: CTAP 2.1 section
    6.5.5.7.3), and every attempt counted in uvCountSinceLastPinEntry (CTAP 2.2 section 6.4,
    0x17)."""
    front_end, mode, uv_fails = _UV_WAYS[way]
    broker = PresenceBroker([front_end], mode=mode, uv_fails=uv_fails)
    instant, granted = "at once" in way, way.startswith("granted")
    assert (broker.instant_verification(SIGN_IN) is None) is not instant
    config = Config(attestation="none", builtin_uv=True)
    with running_key(presence=broker, config=config) as key:
        writes: list[object] = []
        real_put = key.store.put_state

        def put_state(updates: Any) -> None:
            writes.append(updates)
            real_put(updates)

        key.store.put_state = put_state  # type: ignore[method-assign]
        ctap = Ctap2(key.device)
        client_pin = ClientPin(ctap, PinProtocolV2())
        for attempt in range(1, 9):
            writes.clear()
            statuses: list[int] = []
            verify = functools.partial(
                client_pin.get_uv_token,
                ClientPin.PERMISSION.GET_ASSERTION,
                "example.com",
                on_keepalive=statuses.append,
            )
            if granted:
                verify()
            else:
                with pytest.raises(CtapError) as failed:
                    verify()
                last = attempt == 8
                expected = CtapError.ERR.UV_BLOCKED if last else CtapError.ERR.UV_INVALID
                assert failed.value.code == expected
            assert len(writes) == (1 if instant or not granted else 2)
            assert (KEEPALIVE_UPNEEDED in statuses) is not instant
            assert client_pin.get_uv_retries() == (8 if granted else 8 - attempt)
            assert ctap.get_info().uv_count_since_pin == attempt
