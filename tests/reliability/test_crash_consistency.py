"""Crash consistency: `vfido run` SIGKILLed at random points, ~200 times, loses nothing.

A real keystore (Argon2id with the explicitly named cheap test parameters, so
~200 restarts fit in a few minutes; everything else is production code) is
served by the real `vfido run --transport udp`. The test drives a random mix of
registrations (discoverable and server-side), assertions, credential deletions,
PIN changes, wrong-PIN attempts and retry queries, and kills the service:

* ``kill-before-commit:*@n`` (fault hook): inside the n-th keystore write
  transaction, after its statements and before COMMIT;
* ``kill-after:*@n``: after the n-th write committed, before the reply;
* an external SIGKILL from a timer at a random moment.

A model of what the client was told checks, after every restart and at the
end: every credential whose registration response was received still works;
every acknowledged deletion stuck; no signature counter ever repeats or goes
back below a value already returned; the PIN retry counter never rises unless
a correct PIN was tried; the keystore opens (the service starts) every time,
and ``PRAGMA integrity_check`` is ``ok`` at the end.
"""

from __future__ import annotations

import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fido2.ctap import CtapError
from fido2.ctap2.base import Ctap2
from fido2.ctap2.credman import CredentialManagement
from fido2.ctap2.pin import ClientPin, PinProtocolV2
from fido2.hid import CtapHidDevice
from fido2.webauthn import PublicKeyCredentialDescriptor, PublicKeyCredentialType

from tests.service_helpers import PASSPHRASE, Service, udp_service
from vfido.keystore import kdf
from vfido.keystore.sqlite_store import DB_NAME, SqliteKeyStore
from vfido.keystore.store import CredentialRecord
from vfido.testing import faults
from vfido.transports.udp import UdpConnection

MODES = ("kill-before-commit", "kill-after", "external")
MAX_OPS_PER_LIFE = 300  # a fault rule that never fires ends the test instead of looping
KILLS = int(os.environ.get("VFIDO_CRASH_KILLS", "200"))
SEED = int(os.environ.get("VFIDO_CRASH_SEED", str(random.randrange(1 << 30))))
RPS = [f"rp{i}.example" for i in range(4)]
ES256: list[Mapping[str, Any]] = [{"type": "public-key", "alg": -7}]
FIRST_PIN = "13572468"
PERM = ClientPin.PERMISSION
PUBLIC_KEY = PublicKeyCredentialType.PUBLIC_KEY


class Dead(Exception):
    """The key died (or was killed) while we waited for its answer."""


class WatchedConnection(UdpConnection):
    """A UDP client that notices at once when the service process is gone."""

    def __init__(self, service: Service, limit: float = 10.0) -> None:
        super().__init__(service.port, service.peer_port, timeout=0.05)
        self._service = service
        self._limit = limit

    def read_packet(self) -> bytes:
        deadline = time.monotonic() + self._limit
        while True:
            try:
                return super().read_packet()
            except TimeoutError:
                if self._service.process.poll() is not None:
                    raise Dead from None
                if time.monotonic() > deadline:  # alive but silent: treat as a hang
                    raise


@dataclass
class Cred:
    rp_id: str
    user_id: bytes
    rk: bool
    cred_id: bytes | None
    status: str  # "ok" | "maybe" (registration unacknowledged) | "deleted" | "maybe-deleted"
    counter: int = -1  # highest signature counter ever returned


@dataclass
class Model:
    rng: random.Random
    pin: str = FIRST_PIN
    pin_candidates: list[str] = field(default_factory=list)  # after an unacknowledged change
    retries_upper: int = 8
    creds: list[Cred] = field(default_factory=list)
    acknowledged: int = 0
    violations: list[str] = field(default_factory=list)
    next_user: int = 0

    def fail(self, text: str) -> None:
        self.violations.append(text)

    def counter_seen(self, cred: Cred, value: int) -> None:
        if value <= cred.counter:
            self.fail(f"counter went from {cred.counter} to {value} ({cred.rp_id})")
        cred.counter = max(cred.counter, value)


class Session:
    """One life of the service: the ops a client can do, updating the model."""

    def __init__(self, model: Model, device: CtapHidDevice) -> None:
        self.m = model
        self.ctap2 = Ctap2(device)
        self.cp = ClientPin(self.ctap2, PinProtocolV2())
        self.wrong_streak = 0  # 3 wrong PINs in one power cycle block PIN use until restart

    # --- PIN ------------------------------------------------------------

    def observe_retries(self) -> int:
        retries = self.cp.get_pin_retries()[0]
        self.m.acknowledged += 1
        if retries > self.m.retries_upper:
            self.m.fail(f"PIN retries rose from {self.m.retries_upper} to {retries}")
        self.m.retries_upper = retries
        return retries

    def query_retries(self) -> None:
        self.observe_retries()

    def token(self, permissions: ClientPin.PERMISSION, rp_id: str | None) -> bytes:
        """A pinUvAuthToken, resolving an uncertain PIN change on the way."""
        candidates = self.m.pin_candidates or [self.m.pin]
        for i, pin in enumerate(candidates):
            self.m.retries_upper = 8  # trying a (possibly) correct PIN may refund
            try:
                token = self.cp.get_pin_token(pin, permissions, rp_id)
            except CtapError as exc:
                if exc.code == CtapError.ERR.PIN_INVALID and i + 1 < len(candidates):
                    self.m.acknowledged += 1
                    self.wrong_streak += 1
                    continue
                raise
            self.m.acknowledged += 1
            self.wrong_streak = 0
            self.m.pin, self.m.pin_candidates = pin, []
            return token
        raise AssertionError("unreachable")

    def change_pin(self) -> None:
        self.token(PERM.GET_ASSERTION, None)  # settle the PIN first
        new = f"{self.m.rng.randrange(10**8):08d}"
        old = self.m.pin
        self.m.pin_candidates = [old, new]
        self.m.retries_upper = 8
        self.cp.change_pin(old, new)
        self.m.acknowledged += 1
        self.m.pin, self.m.pin_candidates = new, []

    def wrong_pin(self) -> None:
        if self.m.pin_candidates or self.wrong_streak >= 1 or self.observe_retries() < 5:
            return
        before = self.m.retries_upper
        wrong = "99999999" if self.m.pin != "99999999" else "88888888"
        try:
            self.cp.get_pin_token(wrong, PERM.GET_ASSERTION)
        except CtapError as exc:
            if exc.code != CtapError.ERR.PIN_INVALID:
                raise
            self.m.acknowledged += 1
            self.wrong_streak += 1
            self.m.retries_upper = before - 1
            return
        self.m.fail("a wrong PIN was accepted")

    # --- credentials ----------------------------------------------------

    def register(self, rk: bool) -> None:
        rp_id = self.m.rng.choice(RPS)
        self.m.next_user += 1
        user_id = b"user-%d" % self.m.next_user
        token = self.token(PERM.MAKE_CREDENTIAL, rp_id)
        cdh = os.urandom(32)
        cred = Cred(rp_id, user_id, rk, None, "maybe")
        if rk:
            self.m.creds.append(cred)  # may exist even if we never hear back
        response = self.ctap2.make_credential(
            cdh,
            {"id": rp_id, "name": rp_id},
            {"id": user_id, "name": user_id.decode()},
            ES256,
            options={"rk": rk},
            pin_uv_param=self.cp.protocol.authenticate(token, cdh),
            pin_uv_protocol=self.cp.protocol.VERSION,
        )
        self.m.acknowledged += 1
        data = response.auth_data.credential_data
        assert data is not None
        cred.cred_id, cred.status = data.credential_id, "ok"
        self.m.counter_seen(cred, response.auth_data.counter)
        if not rk:
            self.m.creds.append(cred)

    def assert_one(self, cred: Cred) -> None:
        assert cred.cred_id is not None
        try:
            response = self.ctap2.get_assertion(
                cred.rp_id,
                os.urandom(32),
                [{"type": "public-key", "id": cred.cred_id}],
            )
        except CtapError as exc:
            if exc.code != CtapError.ERR.NO_CREDENTIALS:
                raise
            self.m.acknowledged += 1
            if cred.status == "ok":
                self.m.fail(f"an acknowledged credential of {cred.rp_id} no longer works")
            cred.status = "deleted"
            return
        self.m.acknowledged += 1
        if cred.status == "deleted":
            self.m.fail(f"a deleted credential of {cred.rp_id} still works")
        cred.status = "ok"
        self.m.counter_seen(cred, response.auth_data.counter)

    def enumerate_rp(self, rp_id: str) -> None:
        """Discoverable credentials of one RP, checked against the model."""
        try:
            first = self.ctap2.get_assertion(rp_id, os.urandom(32))
            responses = [first] + [
                self.ctap2.get_next_assertion() for _ in range(1, first.number_of_credentials or 1)
            ]
        except CtapError as exc:
            if exc.code != CtapError.ERR.NO_CREDENTIALS:
                raise
            responses = []
        self.m.acknowledged += 1
        found = {bytes(r.user["id"]): r for r in responses if r.user}
        for cred in self.m.creds:
            if not cred.rk or cred.rp_id != rp_id:
                continue
            response = found.pop(cred.user_id, None)
            if response is None:
                if cred.status == "ok":
                    self.m.fail(f"an acknowledged discoverable credential of {rp_id} is gone")
                cred.status = "deleted" if cred.status != "maybe" else "never"
                continue
            if cred.status == "deleted":
                self.m.fail(f"a deleted discoverable credential of {rp_id} is back")
            assert response.credential is not None
            cred.cred_id, cred.status = bytes(response.credential["id"]), "ok"
            self.m.counter_seen(cred, response.auth_data.counter)
        if found:
            self.m.fail(f"{rp_id}: unknown credentials {sorted(found)}")
        self.m.creds = [c for c in self.m.creds if c.status != "never"]

    def delete(self, cred: Cred) -> None:
        assert cred.cred_id is not None
        token = self.token(PERM.CREDENTIAL_MGMT, None)
        cm = CredentialManagement(self.ctap2, self.cp.protocol, token)
        cred.status = "maybe-deleted"
        descriptor = PublicKeyCredentialDescriptor(type=PUBLIC_KEY, id=cred.cred_id)
        cm.delete_cred(descriptor)
        self.m.acknowledged += 1
        cred.status = "deleted"

    # --- the random mix -------------------------------------------------

    def random_op(self) -> None:
        rng = self.m.rng
        live = [c for c in self.m.creds if c.status == "ok"]
        rks = [c for c in live if c.rk]
        ops: list[tuple[int, Callable[[], None]]] = [
            (4, lambda: self.register(rk=True)),
            (3, lambda: self.register(rk=False)),
            (2, lambda: self.enumerate_rp(rng.choice(RPS))),
            (1, self.change_pin),
            (1, self.wrong_pin),
            (1, self.query_retries),
        ]
        if live:
            ops.append((6, lambda: self.assert_one(rng.choice(live))))
        if rks:
            ops.append((2, lambda: self.delete(rng.choice(rks))))
        weights = [w for w, _ in ops]
        rng.choices([op for _, op in ops], weights)[0]()


def _cheap_keystore(directory: Path) -> None:
    """A real keystore; only the Argon2id cost is the explicitly insecure test one."""
    SqliteKeyStore.create(directory, PASSPHRASE, kdf_params=kdf.insecure_test_params()).close()


def _device(service: Service) -> CtapHidDevice:
    connection = WatchedConnection(service)
    try:
        return CtapHidDevice(connection.descriptor, connection)
    except BaseException:
        connection.close()
        raise


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_sigkill_at_random_points_loses_nothing(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    model = Model(rng)
    keystore = tmp_path / "ks"
    _cheap_keystore(keystore)
    args = ["--keystore", str(keystore)]

    with udp_service(args) as service:  # set the PIN (no faults)
        device = _device(service)
        ClientPin(Ctap2(device), PinProtocolV2()).set_pin(FIRST_PIN)
        device.close()

    kills = dict.fromkeys(MODES, 0)
    lives = 0
    while sum(kills.values()) < KILLS:
        lives += 1
        mode = rng.choice(list(kills))
        extra = {} if mode == "external" else {faults.ENV: f"{mode}:*@{rng.randint(1, 8)}"}
        with udp_service(args, extra_env=extra) as service:
            timer = None
            if mode == "external":
                timer = threading.Timer(rng.uniform(0.0, 1.0), service.process.kill)
                timer.start()
            connection: Any = None
            try:
                device = _device(service)
                connection = device._connection  # to close it below
                session = Session(model, device)
                session.observe_retries()
                session.enumerate_rp(rng.choice(RPS))
                for _ in range(MAX_OPS_PER_LIFE):
                    session.random_op()
                pytest.fail(f"{mode}: the service was not killed: " + str(extra))
            except (Dead, OSError) as exc:
                if service.process.wait(timeout=30) is None or isinstance(exc, TimeoutError):
                    raise
            finally:
                if timer is not None:
                    timer.cancel()
                if connection is not None:
                    connection.close()
            code = service.process.wait(timeout=30)
            assert code == -9, f"service ended with {code}:\n" + "\n".join(service.stderr_lines)
            kills[mode] += 1
        assert not model.violations, f"seed {SEED}: {model.violations}"

    # Final check on a clean start: everything acknowledged still works.
    with udp_service(args) as service:
        device = _device(service)
        session = Session(model, device)
        session.observe_retries()
        for rp_id in RPS:
            session.enumerate_rp(rp_id)
        for cred in list(model.creds):
            if cred.status in ("ok", "maybe-deleted") and cred.cred_id is not None:
                session.assert_one(cred)
        session.token(PERM.GET_ASSERTION, None)
        assert session.observe_retries() == 8
        device.close()
    assert not model.violations, f"seed {SEED}: {model.violations}"

    with SqliteKeyStore.open(keystore, PASSPHRASE) as store:
        conn = store._conn
        assert conn is not None
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    assert sqlite3.connect(keystore / DB_NAME).execute("PRAGMA quick_check").fetchone() == ("ok",)

    registered = sum(1 for c in model.creds if c.status == "ok")
    print(
        f"\ncrash consistency (seed {SEED}): {lives} lives, kills {kills} "
        f"= {sum(kills.values())}, operations acknowledged {model.acknowledged}, "
        f"credentials alive {registered}, lost 0"
    )


# --- the fault hook itself (in-process, no subprocess) ---------------------


class _Killed(Exception):
    pass


def _die() -> None:
    raise _Killed


def test_fault_rules_parse_and_reject_unknown() -> None:
    rules = faults.parse("kill-after:put_state=pin.retries, kill-before-commit:*@3")
    assert [(r.when, r.what, r.nth) for r in rules] == [
        ("kill-after", "put_state=pin.retries", 1),
        ("kill-before-commit", "*", 3),
    ]
    for bad in ("kill-after:nothing", "explode:*", "kill-after:*@0", "kill-after:reset=x"):
        with pytest.raises(ValueError):
            faults.parse(bad)


def test_kill_before_commit_leaves_no_trace_and_after_commit_keeps_the_write() -> None:
    store = SqliteKeyStore.ephemeral()
    record = CredentialRecord(
        credential_id=os.urandom(48),
        rp_id="example.com",
        rp_id_hash=bytes(32),
        user_id=b"x",
        algorithm=-7,
        private_key=os.urandom(32),
        created=1,
    )
    try:
        before = faults.KillingStore(store, faults.parse("kill-before-commit:*@2"), _die)
        before.put_state({"a": b"1"})
        with pytest.raises(_Killed):
            before.put_credential(record)
        assert store.count_credentials() == 0  # rolled back: the transaction never committed
        assert store.before_commit is None
        after = faults.KillingStore(store, faults.parse("kill-after:increment_counter"), _die)
        with pytest.raises(_Killed):
            after.increment_counter(b"id")
        assert store.get_counter(b"id") == 1  # committed before the kill
        after.increment_counter(b"id")  # the rule fired once
        assert store.get_counter(b"id") == 2
    finally:
        store.close()
