"""Coverage-guided fuzzing of the CTAPHID core and every CTAP2/CTAP1 decoder.

A small in-repo engine (no extra dependency): inputs are mutated (bit flips,
interesting bytes, inserts, cuts, splices, and CBOR-aware mutations that swap a
field's value for a wrong type, a huge string or deep nesting); an input is kept
when it reaches a line transition (arc) of ``authenticator/``, ``transports/`` or
``keystore/`` never seen before (``sys.settrace``). The corpus lives in
``tests/reliability/corpus/<target>/`` and is replayed first; set
``VFIDO_FUZZ_SAVE=1`` to add the new interesting inputs to it, and
``VFIDO_FUZZ_SECONDS`` to change the time per target (default 25 s; CI total
about 75 s).

Oracles: no exception escapes; every CTAP2 answer starts with a defined status
and never CTAP1_ERR_OTHER (the code an uncaught internal exception becomes); an
OK answer carries a CBOR map; every CTAP1 answer ends in a status word other
than 6F00; every CTAPHID output is a well-framed 64-byte report and the core
still answers PING afterwards; and memory stays flat over a long replay.

Existing property tests (tests/transports/test_ctaphid.py::test_core_survives_garbage,
tests/transports/test_runner.py::test_runner_survives_garbage,
tests/authenticator/test_ctap2_device.py::test_random_bytes_never_crash and
test_mutated_requests_never_crash, tests/authenticator/test_ctap2_cbor.py) stay as they are.
"""

from __future__ import annotations

import gc
import hashlib
import os
import random
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import cbor2
import pytest
from fido2 import cbor as fido_cbor

from tests.ctap2_helpers import (
    EventContext,
    Key,
    descriptor,
    get_assertion_map,
    make_credential_map,
    make_key,
)
from tests.ctaphid_helpers import assert_core_recovers, decode_messages, reports_of
from vfido.authenticator.env import PresenceResult
from vfido.authenticator.errors import CtapStatus
from vfido.transports.ctaphid import REPORT_SIZE, CtapHidCore, Request

ROOT = Path(__file__).resolve().parents[2]
CORPUS = Path(__file__).parent / "corpus"
SECONDS = float(os.environ.get("VFIDO_FUZZ_SECONDS", "25"))
SAVE = os.environ.get("VFIDO_FUZZ_SAVE") == "1"
VALID_STATUSES = {int(s) for s in CtapStatus}
TRACED = tuple(
    str(ROOT / "vfido" / d) + os.sep for d in ("authenticator", "transports", "keystore")
)


# --- the engine -----------------------------------------------------------------


class Coverage:
    """Arcs (file, previous line, line) of our packages executed by one call."""

    def __init__(self) -> None:
        self.seen: set[tuple[str, int, int]] = set()
        self._current: set[tuple[str, int, int]] = set()
        self._prev: dict[int, int] = {}

    def _local(self, frame: FrameType, event: str, arg: Any) -> Any:
        if event == "line":
            key = id(frame)
            self._current.add((frame.f_code.co_filename, self._prev.get(key, 0), frame.f_lineno))
            self._prev[key] = frame.f_lineno
        return self._local

    def _global(self, frame: FrameType, event: str, arg: Any) -> Any:
        if event == "call" and frame.f_code.co_filename.startswith(TRACED):
            return self._local
        return None

    def run(self, func: Callable[[], None]) -> int:
        """Run ``func`` traced; return how many arcs were new."""
        self._current = set()
        self._prev = {}
        sys.settrace(self._global)
        try:
            func()
        finally:
            sys.settrace(None)
        new = self._current - self.seen
        self.seen |= new
        return len(new)


INTERESTING = [0x00, 0x01, 0x17, 0x18, 0x19, 0x1A, 0x1B, 0x1F, 0x3F, 0x5F, 0x7F, 0x80, 0x9F, 0xBF,
               0xA0, 0xF4, 0xF5, 0xF6, 0xF7, 0xFF]  # fmt: skip
WRONG_VALUES: list[Any] = [0, -1, 2**64 - 1, -(2**64), b"", b"\x00" * 80, "", "x" * 300, [],
                           [0] * 20, {}, {1: 2}, True, False, None, 1.5]  # fmt: skip


def _nest(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


def _cbor_mutate(data: bytes, rng: random.Random) -> bytes | None:
    """Replace one value somewhere in a CBOR structure (keys kept)."""
    try:
        value = cbor2.loads(data)
    except Exception:
        return None
    containers: list[Any] = []

    def walk(v: Any) -> None:
        if isinstance(v, dict | list):
            containers.append(v)
            for child in v.values() if isinstance(v, dict) else v:
                walk(child)

    walk(value)
    if not containers:
        return None
    target = rng.choice(containers)
    if not target:
        return None
    slot = rng.choice(list(target)) if isinstance(target, dict) else rng.randrange(len(target))
    replacement = rng.choice(
        [*WRONG_VALUES, _nest(rng.randint(3, 40)), "é" * rng.randint(1, 3000), {"id": 5}]
    )
    if isinstance(target, dict) and rng.random() < 0.2:
        del target[slot]
    else:
        target[slot] = replacement
    try:
        return bytes(cbor2.dumps(value, canonical=rng.random() < 0.8))
    except Exception:
        return None


def mutate(data: bytes, corpus: list[bytes], rng: random.Random, prefix: int = 0) -> bytes:
    """One mutation; the first ``prefix`` bytes (e.g. the command byte) rarely change."""
    head, body = (data[:prefix], data[prefix:]) if rng.random() < 0.9 else (b"", data)
    choice = rng.randrange(8)
    if choice == 0 and body:
        i = rng.randrange(len(body))
        body = body[:i] + bytes([body[i] ^ (1 << rng.randrange(8))]) + body[i + 1 :]
    elif choice == 1 and body:
        i = rng.randrange(len(body))
        body = body[:i] + bytes([rng.choice(INTERESTING)]) + body[i + 1 :]
    elif choice == 2:
        i = rng.randrange(len(body) + 1)
        body = body[:i] + os.urandom(rng.choice([1, 2, 4, 8, 64])) + body[i:]
    elif choice == 3 and body:
        i = rng.randrange(len(body))
        body = body[:i] + body[i + rng.randint(1, 16) :]
    elif choice == 4 and body:
        body = body[: rng.randrange(len(body))]
    elif choice == 5:
        other = rng.choice(corpus)[prefix:]
        body = body[: rng.randrange(len(body) + 1)] + other[rng.randrange(len(other) + 1) :]
    else:
        mutated = _cbor_mutate(body, rng)
        if mutated is not None:
            body = mutated
    return head + body


def load_corpus(target: str, seeds: list[bytes]) -> list[bytes]:
    directory = CORPUS / target
    stored = [p.read_bytes() for p in sorted(directory.glob("*.bin"))] if directory.is_dir() else []
    return seeds + stored


def save(target: str, data: bytes) -> None:
    if SAVE:
        directory = CORPUS / target
        directory.mkdir(parents=True, exist_ok=True)
        (directory / (hashlib.sha256(data).hexdigest()[:16] + ".bin")).write_bytes(data)


def fuzz(
    target: str, seeds: list[bytes], execute: Callable[[bytes], None], prefix: int = 0
) -> dict[str, int]:
    """Replay the corpus, then mutate for ``SECONDS``; every oracle is in ``execute``."""
    rng = random.Random(int.from_bytes(os.urandom(4), "big"))
    coverage = Coverage()
    corpus = load_corpus(target, seeds)
    for data in corpus:
        coverage.run(lambda d=data: execute(d))  # type: ignore[misc]
    stats = {"executions": len(corpus), "corpus": len(corpus), "new": 0}
    deadline = time.monotonic() + SECONDS
    while time.monotonic() < deadline:
        parent = rng.choice(corpus)
        child = mutate(parent, corpus, rng, prefix)
        for _ in range(rng.randrange(3)):
            child = mutate(child, corpus, rng, prefix)
        child = child[:9000]
        try:
            gained = coverage.run(lambda c=child: execute(c))  # type: ignore[misc]
        except BaseException:
            save(target, child)
            print(f"\nfailing input ({target}): {child.hex()}")
            raise
        stats["executions"] += 1
        if gained:
            corpus.append(child)
            stats["new"] += 1
            save(target, child)
    stats["arcs"] = len(coverage.seen)
    print(f"\nfuzz {target}: {stats}")
    return stats


# --- targets --------------------------------------------------------------------


class Presence:
    def __init__(self) -> None:
        self.result = PresenceResult.DENIED

    def request_presence(self, request: Any, context: Any, timeout: float) -> PresenceResult:
        return self.result


@pytest.fixture(scope="module")
def key() -> Key:
    return make_key(presence=Presence())


def _ctap2_seeds() -> list[bytes]:
    def req(command: int, params: dict[int, Any] | None = None) -> bytes:
        return bytes([command]) + (fido_cbor.encode(params) if params is not None else b"")

    cose = {1: 2, 3: -25, -1: 1, -2: b"\x01" * 32, -3: b"\x02" * 32}
    return [
        req(0x01, make_credential_map(options={"rk": True}, extensions={"credProtect": 2})),
        req(0x01, make_credential_map(extensions={"hmac-secret": True, "credBlob": b"x"})),
        req(0x02, get_assertion_map(allow_list=[descriptor(bytes(60))])),
        req(0x02, get_assertion_map(extensions={"hmac-secret": {1: cose, 2: bytes(32), 3: b"a"}})),
        req(0x04),
        req(0x06, {1: 2, 2: 1}),
        req(0x06, {1: 2, 2: 2}),
        req(0x06, {1: 1, 2: 3, 3: cose, 4: b"\x00" * 16, 5: b"\x00" * 64}),
        req(0x06, {1: 2, 2: 9, 3: cose, 6: b"\x00" * 48, 9: 3, 10: "example.com"}),
        req(0x0A, {1: 1, 3: 1, 4: b"\x00" * 32}),
        req(0x0A, {1: 4, 2: {1: b"\x00" * 32}, 3: 2, 4: b"\x00" * 32}),
        req(0x0A, {1: 6, 2: {2: {"id": b"\x00"}, 3: {"id": b"u"}}, 3: 2, 4: b"\x00" * 32}),
        req(0x0B),
        req(0x0C, {1: 64, 3: 0}),
        req(0x0C, {2: b"\x80" + bytes(16), 3: 0, 4: 17, 5: b"\x00" * 32, 6: 2}),
        req(0x0D, {1: 3, 2: {1: 6, 2: ["example.com"], 3: True}, 3: 2, 4: b"\x00" * 32}),
        req(0x0D, {1: 1}),
        req(0x07),
        req(0x08),
        req(0x41, {1: 1}),
    ]


def _check_ctap2(key: Key) -> Callable[[bytes], None]:
    def execute(data: bytes) -> None:
        key.presence.result = PresenceResult.DENIED
        response = key.authenticator.handle_cbor(data or b"\x04", EventContext())
        assert response and response[0] in VALID_STATUSES, response[:1].hex()
        assert response[0] != CtapStatus.OTHER, f"internal error for {data.hex()}"
        if response[0] == CtapStatus.OK and len(response) > 1:
            assert isinstance(fido_cbor.decode(response[1:]), dict)

    return execute


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_fuzz_ctap2_commands(key: Key) -> None:
    stats = fuzz("ctap2", _ctap2_seeds(), _check_ctap2(key), prefix=1)
    assert stats["arcs"] > 500  # the engine really reaches the decoders


def _ctap1_seeds() -> list[bytes]:
    challenge, app = bytes(32), bytes(range(32))
    handle = bytes(64)
    return [
        bytes([0, 1, 3, 0, 0, 0, 64]) + challenge + app + b"\x00\x00",
        bytes([0, 2, 3, 0, 0, 0, 129]) + challenge + app + bytes([64]) + handle + b"\x00\x00",
        bytes([0, 2, 7, 0, 0, 0, 129]) + challenge + app + bytes([64]) + handle,
        bytes([0, 3, 0, 0, 0]),
        bytes([0, 3, 0, 0, 0, 0, 0]),
    ]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_fuzz_ctap1_messages(key: Key) -> None:
    def execute(data: bytes) -> None:
        key.presence.result = PresenceResult.DENIED
        response = key.authenticator.handle_msg(data, EventContext())
        assert len(response) >= 2
        assert response[-2:] != b"\x6f\x00", f"internal error for {data.hex()}"
        assert response[-2] in (0x90, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69,
                                0x6A, 0x6B, 0x6C, 0x6D, 0x6E, 0x6F)  # fmt: skip

    fuzz("ctap1", _ctap1_seeds(), execute, prefix=2)


def _hid_seeds() -> list[bytes]:
    """Each input: a script of (1 control byte + 64-byte report) steps."""
    init = (0xFFFFFFFF).to_bytes(4, "big") + bytes([0x86, 0, 8]) + b"\x01" * 8
    ping = (0x01020304).to_bytes(4, "big") + bytes([0x81, 0, 100]) + bytes(57)
    cont = (0x01020304).to_bytes(4, "big") + bytes([0]) + bytes(59)
    cbor_req = (0x01020304).to_bytes(4, "big") + bytes([0x90, 0, 1, 0x04])
    cancel = (0x01020304).to_bytes(4, "big") + bytes([0x91, 0, 0])
    steps = [init, ping, cont, cbor_req, cancel, init[:7] + b"\x10" + init[8:]]
    return [b"".join(bytes([i]) + s.ljust(REPORT_SIZE, b"\0") for i, s in enumerate(steps))]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_fuzz_ctaphid_core() -> None:
    channel_ids = [0x01020304.to_bytes(4, "big"), 0x0A0B0C0D.to_bytes(4, "big")]

    def execute(data: bytes) -> None:
        ids = iter(channel_ids)
        core = CtapHidCore(max_channels=4, random_bytes=lambda n: next(ids, None) or os.urandom(n))
        now = 0.0
        for offset in range(0, len(data), REPORT_SIZE + 1):
            control, report = data[offset], data[offset + 1 : offset + 1 + REPORT_SIZE]
            now += (0.0, 0.01, 0.2, 0.6, 3.5, 11.0)[control % 6]
            outputs = core.feed(report, now) if control % 7 else core.tick(now)
            for item in outputs:
                assert not isinstance(item, bytes) or len(item) == REPORT_SIZE
            decode_messages(reports_of(outputs))
            for item in outputs:
                if isinstance(item, Request) and control & 0x80:
                    decode_messages(core.respond(item.transaction, b"\x00"))
        assert_core_recovers(core, now)

    fuzz("ctaphid", _hid_seeds(), execute)


# --- memory stays flat -------------------------------------------------------------


@pytest.mark.slow
def test_memory_flat_over_corpus_replay(key: Key) -> None:
    """Replay the CTAP2 corpus many times: traced allocations do not grow."""
    corpus = load_corpus("ctap2", _ctap2_seeds())
    execute = _check_ctap2(key)
    rounds = max(1, 6000 // len(corpus))

    def replay() -> None:
        for _ in range(rounds):
            for data in corpus:
                execute(data)

    replay()  # warm caches (getInfo, imports, lazily built tables)
    gc.collect()
    tracemalloc.start()
    try:
        replay()
        gc.collect()
        first, _ = tracemalloc.get_traced_memory()
        replay()
        replay()
        gc.collect()
        second, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    print(f"\nmemory over {2 * rounds * len(corpus)} executions: {first} -> {second} bytes")
    assert second - first < 256 * 1024, (first, second)
