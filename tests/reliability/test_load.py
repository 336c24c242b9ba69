"""Concurrency and load: many channels at once, CANCEL races, vanished clients,
10,000 consecutive transactions with flat memory and no fd/thread growth, and
several keys on one host each with its own keystore.

Already covered elsewhere (not repeated): one channel gets CHANNEL_BUSY while
another's request runs (tests/transports/test_runner.py::test_second_channel_gets_channel_busy),
cancel during a presence wait (test_runner.py::test_cancel_during_user_presence_wait),
the 500 ms message timeout (test_runner.py::test_message_timeout_is_sent_by_the_runner).
"""

from __future__ import annotations

import gc
import os
import random
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from fido2.ctap import CtapError
from fido2.ctap2.base import Ctap2
from fido2.hid import CTAPHID, CtapHidDevice

from tests.ctap2_helpers import create_credential, sign_counter
from tests.service_helpers import PASSPHRASE, udp_service
from vfido.authenticator.config import Config
from vfido.authenticator.device import Authenticator
from vfido.authenticator.env import PresenceRequest, PresenceResult, RequestContext
from vfido.keystore import kdf
from vfido.keystore.sqlite_store import SqliteKeyStore
from vfido.presence import AutoPresence
from vfido.transports.ctaphid import BROADCAST_CID, REPORT_SIZE, TYPE_INIT, Command
from vfido.transports.inprocess import InProcessKey
from vfido.transports.udp import open_udp_device

ES256: list[Mapping[str, Any]] = [{"type": "public-key", "alg": -7}]
WAIT = 30.0


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_ten_thousand_transactions_flat_memory_no_fd_growth() -> None:
    store = SqliteKeyStore.ephemeral()
    key = InProcessKey(Authenticator(store, AutoPresence(), Config()))
    device = key.open()
    ctap2 = Ctap2(device)
    cred_id = create_credential(ctap2, "load.example")
    rng = random.Random(7)
    last_counter = 0

    def transaction(i: int) -> None:
        nonlocal last_counter
        kind = i % 10
        if kind < 4:
            counter = sign_counter(ctap2, "load.example", cred_id)
            assert counter > last_counter
            last_counter = counter
        elif kind == 4:
            create_credential(ctap2, "load.example")  # server-side: nothing stored
        elif kind < 7:
            assert ctap2.get_info().versions
        elif kind < 9:
            data = os.urandom(rng.randrange(1, 2000))
            assert device.ping(data) == data
        else:
            device.wink()

    try:
        for i in range(1000):  # warm up (imports, caches, SQLite pages)
            transaction(i)
        gc.collect()
        fds, threads = _fds(), threading.active_count()
        for i in range(1000, 3000):
            transaction(i)
        gc.collect()
        # Live interpreter memory blocks: exact and cheap (tracemalloc would
        # triple the run time). A leak of one object per transaction adds 7,000+.
        early, early_rss = sys.getallocatedblocks(), _rss_kib()
        for i in range(3000, 10000):
            transaction(i)
        gc.collect()
        late, late_rss = sys.getallocatedblocks(), _rss_kib()
        print(
            f"\n10,000 transactions: allocated blocks {early} -> {late}, "
            f"RSS {early_rss} -> {late_rss} KiB, fds {fds} -> {_fds()}, "
            f"threads {threads} -> {threading.active_count()}, counter {last_counter}"
        )
        assert late - early < 3000, (early, late)
        assert _fds() <= fds
        assert threading.active_count() <= threads
        assert store.get_counter(cred_id) == last_counter
    finally:
        device.close()
        key.close()
        store.close()


@pytest.mark.slow
def test_several_channels_at_once_all_complete() -> None:
    """Six clients, each on its own channel, hammer one key: python-fido2 retries on
    CHANNEL_BUSY; every transaction completes with the right answer, none deadlocks."""
    store = SqliteKeyStore.ephemeral()
    key = InProcessKey(Authenticator(store, AutoPresence(), Config()))
    seed = create_credential(Ctap2(key.open()), "multi.example")
    errors: list[BaseException] = []
    done = [0] * 6

    def client(n: int) -> None:
        try:
            device = key.open()
            ctap2 = Ctap2(device)
            previous = 0
            for i in range(60):
                if i % 3 == 0:
                    counter = sign_counter(ctap2, "multi.example", seed)
                    assert counter > previous  # each client sees its own counters rise
                    previous = counter
                elif i % 3 == 1:
                    payload = os.urandom(300 + n)
                    assert device.ping(payload) == payload
                else:
                    assert "FIDO_2_1" in ctap2.get_info().versions
                done[n] += 1
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    try:
        assert not any(t.is_alive() for t in threads), "deadlock"
        assert not errors, errors
        assert done == [60] * 6
        assert store.get_counter(seed) == 6 * 20
    finally:
        key.close()
        store.close()


class GatePresence:
    """Waits (cancellably) up to 0.4 s, then grants (CANCEL rides on 100 ms keepalives)."""

    def __init__(self) -> None:
        self.rng = random.Random(11)

    def request_presence(
        self, request: PresenceRequest, context: RequestContext, timeout: float
    ) -> PresenceResult:
        if context.wait_cancelled(self.rng.uniform(0.0, 0.4)):
            return PresenceResult.CANCELLED
        return PresenceResult.GRANTED


@pytest.mark.slow
def test_cancel_races_end_cleanly() -> None:
    """CANCEL sent at random moments (before, during, after a makeCredential): each
    request ends with OK or KEEPALIVE_CANCEL, and nothing is half-stored."""
    store = SqliteKeyStore.ephemeral()
    key = InProcessKey(Authenticator(store, GatePresence(), Config()))
    device = key.open()
    ctap2 = Ctap2(device)
    rng = random.Random(3)
    outcomes = {"ok": 0, "cancelled": 0}
    try:
        for i in range(60):
            event = threading.Event()
            timer = threading.Timer(rng.uniform(0.0, 0.4), event.set)
            timer.start()
            try:
                ctap2.make_credential(
                    os.urandom(32),
                    {"id": "cancel.example"},
                    {"id": b"user-%d" % i, "name": "u"},
                    ES256,
                    options={"rk": True},
                    event=event,
                )
                outcomes["ok"] += 1
            except CtapError as exc:
                assert exc.code == CtapError.ERR.KEEPALIVE_CANCEL, exc
                outcomes["cancelled"] += 1
            finally:
                timer.cancel()
        assert store.count_credentials() == outcomes["ok"]
        assert outcomes["ok"] > 0 and outcomes["cancelled"] > 0, outcomes
        assert device.ping(b"still here") == b"still here"
    finally:
        device.close()
        key.close()
        store.close()


@pytest.mark.slow
def test_client_vanishing_mid_message_does_not_wedge_the_key() -> None:
    """A client sends the first packet of a long message and disappears; others get
    CHANNEL_BUSY only until the message times out, then work; garbage continuation
    packets for channels nobody opened are ignored."""
    store = SqliteKeyStore.ephemeral()
    key = InProcessKey(Authenticator(store, AutoPresence(), Config()))
    try:
        ghost = key.connect()
        ghost.write_packet(
            BROADCAST_CID.to_bytes(4, "big") + bytes([TYPE_INIT | Command.INIT, 0, 8]) + bytes(8)
        )
        reply = ghost.read_packet()
        channel = reply[15:19]
        # First packet of a 1000-byte CBOR message, then silence.
        ghost.write_packet(
            (channel + bytes([TYPE_INIT | Command.CBOR]) + (1000).to_bytes(2, "big")).ljust(
                REPORT_SIZE, b"\x04"
            )
        )
        for seq in range(5):  # garbage continuations for a channel nobody has
            ghost.write_packet(b"\x12\x34\x56\x78" + bytes([seq]) + os.urandom(REPORT_SIZE - 5))
        ghost.close()  # gone for good
        other = key.open()
        started = time.monotonic()
        assert "FIDO_2_1" in Ctap2(other).get_info().versions  # retried past CHANNEL_BUSY
        assert time.monotonic() - started < WAIT
        assert other.ping(b"x" * 7000) == b"x" * 7000
        other.close()
    finally:
        key.close()
        store.close()


@pytest.mark.slow
def test_several_keys_on_one_host_each_with_its_own_keystore(tmp_path: Path) -> None:
    directories = [tmp_path / f"ks{i}" for i in range(3)]
    for d in directories:
        SqliteKeyStore.create(d, PASSPHRASE, kdf_params=kdf.insecure_test_params()).close()
    with (
        udp_service(["--keystore", str(directories[0])]) as a,
        udp_service(["--keystore", str(directories[1])]) as b,
        udp_service(["--keystore", str(directories[2])]) as c,
    ):
        devices: list[CtapHidDevice] = [
            open_udp_device(s.port, s.peer_port, timeout=WAIT) for s in (a, b, c)
        ]
        clients = [Ctap2(d) for d in devices]
        aaguids = {bytes(cl.get_info().aaguid) for cl in clients}
        assert len(aaguids) == 3
        ids = [create_credential(cl, "host.example", rk=True) for cl in clients]
        for i, cl in enumerate(clients):
            for j, cred_id in enumerate(ids):
                if i == j:
                    assert sign_counter(cl, "host.example", cred_id) >= 1
                else:
                    with pytest.raises(CtapError) as info:
                        sign_counter(cl, "host.example", cred_id)
                    assert info.value.code == CtapError.ERR.NO_CREDENTIALS
        for device in devices:
            device.close()
    for directory in directories:
        with SqliteKeyStore.open(directory, PASSPHRASE) as store:
            assert store.count_credentials() == 1


def test_ping_of_maximum_size_and_one_byte_more() -> None:
    key = InProcessKey(Authenticator(SqliteKeyStore.ephemeral(), AutoPresence(), Config()))
    device = key.open()
    try:
        assert device.ping(b"m" * 7609) == b"m" * 7609
        with pytest.raises((CtapError, ValueError, OSError)):
            device.call(CTAPHID.PING, b"m" * 7610)
        assert device.ping(b"ok") == b"ok"
    finally:
        device.close()
        key.close()
