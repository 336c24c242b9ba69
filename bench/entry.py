"""The key users run, measured from outside: `vfido run --transport udp` in a subprocess,
driven here by a raw CTAPHID/UDP client whose requests are split into reports once, before
anything is timed.

    python3 bench/entry.py [--quick] [--only ephemeral,persistent,multi,idle] [--json FILE]

Key-side cost of an operation = its round trip minus the round trip of a CTAPHID_PING of
about the same size (the same number of reports each way), so the client, the kernel's UDP
path and the wake-ups of both processes cancel out. It is reported as a ratio to the raw
operations measured in the same run, in alternating blocks with the round trips:

* getAssertion / one ECDSA P-256 sign (+ SHA-256 of the 69 signed bytes);
* makeCredential (packed attestation, `vfido run`'s default) / P-256 key generation + sign;
* getAssertion on a persistent keystore / sign + one durable SQLite commit (WAL,
  synchronous=FULL, as the keystore) in a database on the keystore's file system.

Each block gives one ratio; the figures are the median of the blocks' ratios with their
p10-p90. Run by hand, never in CI, never as assertions (a shared 2-core machine is noisy).

``--client polls`` (a diagnostic, not the measure of #16): the client polls its socket
instead of blocking in ``recv`` while it waits for an answer, so its CPU never goes idle
during a round trip. The key is the same `vfido run`; what changes is the machine it
answers on (session 25, bench/HISTORY.md: on this VM vfido measured 11-58 µs faster per
getAssertion with it, while a key that busy-waits a fixed time measured about the same with
either client; so the key's computing, not the client's wake-up, seems to be what a
blocking client's idle CPU slows).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import hashlib
import json
import os
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from cryptography.hazmat.primitives import hashes  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from harness import (  # noqa: E402
    credential_id_of,
    get_assertion_request,
    make_credential_request,
    user_verified,
)

from vfido.transports.ctaphid import BROADCAST_CID, TYPE_INIT, Command, encode_message  # noqa: E402
from vfido.transports.udp import free_ports  # noqa: E402

SIGNED_LEN = 69  # authenticatorData (37) + clientDataHash (32)
REPORT = 64
INSECURE_UDP_FLAG = "--udp-insecure-any-local-user"
#: `vfido run` with getAssertion answered from a cache (bench/cached_handler.py), its flags to add.
CACHED_HANDLER = (sys.executable, str(ROOT / "bench" / "cached_handler.py"))
#: ``--tree DIR``: the checkout whose `vfido run` is measured (default: the installed one).
TREE: Path | None = None
#: ``--client polls``: every RawClient polls its socket while it waits for an answer.
CLIENT_POLLS = False
_KEEPALIVE = TYPE_INIT | Command.KEEPALIVE
_ERROR = TYPE_INIT | Command.ERROR


def read_response(
    recv: Callable[[], bytes], cid: bytes, keepalives: list[tuple[float, int]]
) -> tuple[int, bytes]:
    """One CTAPHID response on channel ``cid``, read a report per ``recv()``: keepalives are
    skipped (noted in ``keepalives`` with when they came and their status), as are other
    channels' reports (late INIT answers). Returns the response's command byte and payload."""
    head = recv()
    while head[4] == _KEEPALIVE or head[:4] != cid:  # keepalives, late INIT answers
        if head[4] == _KEEPALIVE:
            keepalives.append((time.perf_counter(), head[7]))
        head = recv()
    length = (head[5] << 8) | head[6]
    data = head[7:]
    while len(data) < length:
        data += recv()[5:]
    return head[4], data[:length]


def stop(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """Terminates ``proc``, killing it if it has not exited ``timeout`` seconds later."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# --------------------------------------------------------------------------- the client


class RawClient:
    """CTAPHID over UDP, one report per datagram. :meth:`prepare` splits a request once;
    :meth:`call` sends its reports and reads the response (skipping keepalives)."""

    def __init__(
        self, port: int, peer_port: int, *, timeout: float = 30.0, polls: bool | None = None
    ) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", peer_port))
        self._timeout = timeout
        #: Wait for an answer by polling the socket (``--client polls``), not in ``recv``.
        self.polls = CLIENT_POLLS if polls is None else polls
        self._waiting_mode()
        self._key = ("127.0.0.1", port)
        self.channel = BROADCAST_CID
        self._cid = b"\xff\xff\xff\xff"
        self.keepalives: list[tuple[float, int]] = []

    def _waiting_mode(self) -> None:
        # A polling client's socket never blocks: a socket with a timeout waits in poll()
        # before each recv, whatever the flags.
        self._sock.settimeout(0.0 if self.polls else self._timeout)

    def _poll(self) -> bytes:
        """The next datagram, read by polling the socket (``--client polls``)."""
        recv, end = self._sock.recv, 0.0
        while True:
            try:
                return recv(2048)
            except BlockingIOError:
                now = time.perf_counter()
                if not end:
                    end = now + self._timeout
                elif now > end:
                    raise TimeoutError("no answer from the key") from None

    def init(self, *, retry_every: float | None = None, deadline: float = 30.0) -> float:
        """CTAPHID_INIT on the broadcast channel; returns when the answer came
        (``time.perf_counter``). With ``retry_every``, resend until the key answers (it may
        not have bound its socket yet)."""
        nonce = os.urandom(8)
        (report,) = encode_message(BROADCAST_CID, Command.INIT, nonce)
        end = time.perf_counter() + deadline
        self._sock.settimeout(retry_every or deadline)
        try:
            while True:
                with contextlib.suppress(ConnectionRefusedError):
                    self._sock.sendto(report, self._key)
                try:
                    while True:
                        data = self._sock.recv(2048)
                        if data[:4] == b"\xff\xff\xff\xff" and data[7:15] == nonce:
                            self.channel = int.from_bytes(data[15:19], "big")
                            self._cid = data[15:19]
                            return time.perf_counter()
                except (TimeoutError, ConnectionRefusedError):
                    if retry_every is None or time.perf_counter() > end:
                        raise TimeoutError("no CTAPHID_INIT answer") from None
        finally:
            self._waiting_mode()

    def prepare(self, command: int, payload: bytes) -> list[bytes]:
        return encode_message(self.channel, command, payload)

    def call(self, reports: Sequence[bytes]) -> bytes:
        sock, key = self._sock, self._key
        for report in reports:
            sock.sendto(report, key)
        recv = self._poll if self.polls else functools.partial(sock.recv, 2048)
        command, data = read_response(recv, self._cid, self.keepalives)
        if command == _ERROR:
            raise RuntimeError(f"CTAPHID error 0x{data[0]:02x}")
        return data

    def cbor(self, payload: bytes) -> bytes:
        return self.call(self.prepare(Command.CBOR, payload))

    def close(self) -> None:
        self._sock.close()


def _ok(response: bytes) -> bytes:
    if not response or response[0] != 0:
        raise RuntimeError(f"CTAP error 0x{response[:1].hex()}")
    return response


def _assertion_reports(client: RawClient) -> list[bytes]:
    """Makes a credential on the key; the reports of a getAssertion of it, to send again and
    again."""
    cdh = os.urandom(32)
    cid = credential_id_of(_ok(client.cbor(make_credential_request(cdh))))
    return client.prepare(Command.CBOR, get_assertion_request(cdh, cid))


# --------------------------------------------------------------------------- the key


@dataclass
class KeyProcess:
    proc: subprocess.Popen[bytes]
    port: int
    peer_port: int
    started: float  # perf_counter just before Popen
    stderr_lines: list[bytes] = field(default_factory=list)

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")


def _tree_env() -> dict[str, str]:
    env = dict(os.environ)
    # The key starts as a user's does: with its modules' bytecode cached (a wheel install
    # compiles it, an editable one writes it at the first start). Where the environment says
    # not to write bytecode (some sandboxes set PYTHONDONTWRITEBYTECODE), every start would
    # compile about 100 modules again: 0.28 s of a 0.59 s start on session 23's machine.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if TREE is not None:  # measure another checkout's `vfido run` (its packages first)
        env["PYTHONPATH"] = str(TREE)
    return env


def run_help() -> str:
    return subprocess.run(
        [sys.executable, "-m", "vfido", "run", "--help"],
        capture_output=True,
        text=True,
        check=True,
        cwd=tempfile.gettempdir(),  # not ROOT: `python -m` puts the cwd first on sys.path
        env=_tree_env(),
    ).stdout


@contextlib.contextmanager
def vfido_run(
    workdir: Path,
    *,
    keystore: Path | None = None,
    passphrase_file: Path | None = None,
    extra: Sequence[str] = (),
    drain_stderr: bool = True,
    python: str = sys.executable,
    command: Sequence[str] | None = None,
    ports: tuple[int, int] | None = None,
) -> Iterator[KeyProcess]:
    """`vfido run --transport udp --presence auto` on free ports (ephemeral unless
    ``keystore``). stderr is a pipe read by a thread here, as a terminal or a journal would
    (``drain_stderr=False``: nobody reads it). ``ports``: the key's and its peer's, from one
    :func:`free_ports` call for several keys (the peer port stays unbound until a client
    binds it, so a later call could hand it out again)."""
    port, peer = ports or free_ports(2)
    argv = list(command or (python, "-m", "vfido", "run"))
    argv += ["--transport", "udp", "--presence", "auto"]
    argv += ["--udp-port", str(port), "--udp-peer-port", str(peer)]
    argv += ["--control-socket", str(workdir / f"ctl-{port}.sock")]
    if keystore is None:
        argv.append("--ephemeral")
    else:
        argv += ["--keystore", str(keystore)]
        if passphrase_file is not None:
            argv += ["--passphrase-file", str(passphrase_file)]
    argv += list(extra)
    env = _tree_env()
    started = time.perf_counter()
    proc = subprocess.Popen(  # cwd: `python -m` puts it first on sys.path, before --tree
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        cwd=workdir,
    )
    key = KeyProcess(proc, port, peer, started)
    if drain_stderr:
        assert proc.stderr is not None
        stream = proc.stderr

        def drain() -> None:
            for line in stream:
                if len(key.stderr_lines) < 1000:
                    key.stderr_lines.append(line)

        threading.Thread(target=drain, daemon=True).start()
    try:
        yield key
    finally:
        stop(proc)


def init_keystore(directory: Path, passphrase_file: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "vfido",
            "init",
            "--keystore",
            str(directory),
            "--passphrase-file",
            str(passphrase_file),
        ],
        check=True,
        capture_output=True,
        cwd=directory.parent,
        env=_tree_env(),
    )


# --------------------------------------------------------------------------- raw operations


def raw_ops(db_dir: Path) -> dict[str, Callable[[], object]]:
    data = os.urandom(SIGNED_LEN)
    key = ec.generate_private_key(ec.SECP256R1())
    algorithm = ec.ECDSA(hashes.SHA256())

    def sign() -> None:
        hashlib.sha256(data).digest()
        key.sign(data, algorithm)

    def keygen_sign() -> None:
        hashlib.sha256(data).digest()
        ec.generate_private_key(ec.SECP256R1()).sign(data, algorithm)

    conn = sqlite3.connect(db_dir / "commit.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE IF NOT EXISTS c (id INTEGER PRIMARY KEY, n INTEGER)")
    conn.execute("INSERT OR REPLACE INTO c VALUES (1, 0)")

    def sign_commit() -> None:
        sign()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("UPDATE c SET n = n + 1 WHERE id = 1")
        conn.execute("COMMIT")

    def sign_after_wait() -> float:
        # The key computes right after its thread blocked (recvfrom) and woke up; on this
        # machine that alone makes the next microseconds of work about 2x slower (see
        # bench/HISTORY.md, session 6). The same sign, timed alone, after a 100 us sleep.
        time.sleep(100e-6)
        t0 = time.perf_counter()
        sign()
        return time.perf_counter() - t0

    return {
        "sign": sign,
        "keygen+sign": keygen_sign,
        "sign+commit": sign_commit,
        "sign after a wait": sign_after_wait,
    }


# --------------------------------------------------------------------------- measuring


def _quantiles(values: list[float]) -> tuple[float, float, float]:
    med = statistics.median(values)
    if len(values) >= 10:
        q = statistics.quantiles(values, n=10)
        return med, q[0], q[-1]
    return med, min(values), max(values)


@dataclass
class KeySide:
    name: str
    raw_name: str
    blocks: int
    rtt_ms: float
    ping_ms: float
    key_ms: float
    raw_ms: float
    ratio: float
    ratio_p10: float
    ratio_p90: float

    def show(self) -> None:
        print(
            f"  {self.name:<44} rtt {self.rtt_ms:7.3f}  ping {self.ping_ms:7.3f}  "
            f"key-side {self.key_ms:7.3f} ms  {self.raw_name} {self.raw_ms:7.4f} ms  "
            f"ratio {self.ratio:5.2f}x (p10-p90 {self.ratio_p10:.2f}-{self.ratio_p90:.2f}, "
            f"{self.blocks} blocks)",
            flush=True,
        )


def key_side(
    name: str,
    op: Callable[[], object],
    ping: Callable[[], object],
    raw_name: str,
    raw: Callable[[], object],
    blocks: int,
    per_block: int = 20,
) -> KeySide:
    """Alternating blocks of ``op``, ``ping`` and ``raw``; per block, key-side =
    median(op) - median(ping), ratio = key-side / median(raw)."""
    for _ in range(5):
        op()
        ping()
        raw()
    clock = time.perf_counter
    ratios, ops, pings, raws = [], [], [], []
    gc.collect()
    gc.disable()
    try:
        for _ in range(blocks):
            medians = []
            for fn in (op, ping, raw):
                fn()  # refill caches after the other operations; not counted
                samples = []
                for _ in range(per_block):
                    t0 = clock()
                    timed = fn()  # a raw operation may time itself (a float: seconds)
                    samples.append(timed if isinstance(timed, float) else clock() - t0)
                medians.append(statistics.median(samples))
            o, p, r = medians
            ops.append(o)
            pings.append(p)
            raws.append(r)
            ratios.append((o - p) / r)
    finally:
        gc.enable()
    ratio, p10, p90 = _quantiles(ratios)
    o, p, r = (statistics.median(v) * 1e3 for v in (ops, pings, raws))
    row = KeySide(name, raw_name, blocks, o, p, o - p, r, ratio, p10, p90)
    row.show()
    return row


def _ping_for(client: RawClient, request: bytes, response: bytes) -> Callable[[], object]:
    size = (len(request) + len(response)) // 2
    reports = client.prepare(Command.PING, b"\xa5" * size)
    return lambda: client.call(reports)


def measure_key(
    client: RawClient, raws: dict[str, Callable[[], object]], blocks: int, *, persistent: bool
) -> list[KeySide]:
    cdh = os.urandom(32)
    mc = make_credential_request(cdh)
    mc_reports = client.prepare(Command.CBOR, mc)
    cid = credential_id_of(_ok(client.call(mc_reports)))
    ga = get_assertion_request(cdh, cid)
    ga_reports = client.prepare(Command.CBOR, ga)
    ga_response = _ok(client.call(ga_reports))
    mc_response = _ok(client.call(mc_reports))
    kind = "persistent" if persistent else "ephemeral"
    rows = [
        key_side(
            f"getAssertion ES256 ({kind})",
            lambda: client.call(ga_reports),
            _ping_for(client, ga, ga_response),
            "sign+commit" if persistent else "sign",
            raws["sign+commit" if persistent else "sign"],
            blocks,
        )
    ]
    if persistent:
        rows.append(
            key_side(
                "getAssertion ES256 (persistent) vs sign alone",
                lambda: client.call(ga_reports),
                _ping_for(client, ga, ga_response),
                "sign",
                raws["sign"],
                max(4, blocks // 2),
            )
        )
    else:
        rows.append(
            key_side(
                f"getAssertion ES256 ({kind}) vs sign after a wait",
                lambda: client.call(ga_reports),
                _ping_for(client, ga, ga_response),
                "sign after a wait",
                raws["sign after a wait"],
                max(4, blocks // 2),
            )
        )
        rows.append(
            key_side(
                f"makeCredential ES256 packed ({kind})",
                lambda: client.call(mc_reports),
                _ping_for(client, mc, mc_response),
                "keygen+sign",
                raws["keygen+sign"],
                blocks,
            )
        )
    return rows


def measure_at(
    port: int,
    peer_port: int,
    raws: dict[str, Callable[[], object]],
    blocks: int,
    *,
    persistent: bool,
    retry_every: float = 0.01,
) -> list[KeySide]:
    """:func:`measure_key` through a new client of the key at ``port`` (once it answers)."""
    client = RawClient(port, peer_port)
    client.init(retry_every=retry_every)
    rows = measure_key(client, raws, blocks, persistent=persistent)
    client.close()
    return rows


# --------------------------------------------------------------------------- sections


def section(title: str) -> None:
    print(f"\n== {title}", flush=True)


def bench_ephemeral(out: dict[str, Any], tmp: Path, blocks: int) -> None:
    section("vfido run --transport udp --ephemeral --presence auto (subprocess), raw client here")
    raws = raw_ops(tmp)
    with vfido_run(tmp) as key:
        rows = measure_at(key.port, key.peer_port, raws, blocks, persistent=False)
    out["ephemeral"] = [r.__dict__ for r in rows]


def bench_uv(out: dict[str, Any], tmp: Path, blocks: int) -> None:
    """`vfido run --uv --presence auto`, how CI gives Chromium a key that verifies the user
    (Chromium wants PIN or UV for a discoverable credential): getAssertion with the uv
    option, key-side against a sign, and the keepalives the key sent meanwhile (none since
    session 28: a verification answered at once is nobody's wait)."""
    section("vfido run --uv --presence auto --ephemeral (subprocess): getAssertion with uv")
    raws = raw_ops(tmp)
    with vfido_run(tmp, extra=["--uv"]) as key:
        client = RawClient(key.port, key.peer_port)
        client.init(retry_every=0.01)
        cdh = os.urandom(32)
        cid = credential_id_of(_ok(client.cbor(make_credential_request(cdh))))
        ga = get_assertion_request(cdh, cid, uv=True)
        reports = client.prepare(Command.CBOR, ga)
        response = _ok(client.call(reports))
        if not user_verified(response):
            raise RuntimeError("the getAssertion with uv came back without the UV flag")
        before = len(client.keepalives)
        row = key_side(
            "getAssertion ES256 with uv (--uv)",
            lambda: client.call(reports),
            _ping_for(client, ga, response),
            "sign",
            raws["sign"],
            blocks,
        )
        keepalives = len(client.keepalives) - before
        client.close()
    print(f"  keepalives the key sent during these requests: {keepalives}")
    out["uv"] = {"rows": [row.__dict__], "keepalives": keepalives}


def bench_reference(out: dict[str, Any], tmp: Path, blocks: int) -> None:
    """bench/refkey.py (one thread: INIT, PING, sign; nothing else) measured like vfido run:
    the floor of the ratios on this machine, in the same run."""
    section("reference key (bench/refkey.py: single-threaded, signs, nothing else), raw client")
    raws = raw_ops(tmp)
    port, peer = free_ports(2)
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "refkey.py"), str(port), str(peer)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
    )
    try:
        rows = measure_at(port, peer, raws, blocks, persistent=False)
    finally:
        proc.kill()
        proc.wait()
    out["reference"] = [r.__dict__ for r in rows]


def bench_transport(out: dict[str, Any], tmp: Path, blocks: int) -> None:
    """`vfido run` with getAssertion answered from a cache (bench/cached_handler.py), with
    a minimal answer (``--minimal``, bench/minimal.py: vfido's strict decoding, one signature,
    vfido's encoding) and plain `vfido run`, in one run: the key-side cost without any
    authenticator, with only what every key computes, and with vfido's."""
    section(
        "vfido run: transport share (getAssertion answered from a cache), a minimal answer,"
        " the whole key"
    )
    raws = raw_ops(tmp)
    rows = [
        _assertion_row(tmp, f"getAssertion ES256, {label}", command, raws, blocks)
        for label, command in (
            ("cached", CACHED_HANDLER),
            ("minimal", (*CACHED_HANDLER, "--minimal")),
            ("whole key", None),
        )
    ]
    out["transport"] = [r.__dict__ for r in rows]


def bench_calibration(out: dict[str, Any], tmp: Path, blocks: int) -> None:
    """The instrument checked: `vfido run` answering a kept getAssertion after a busy wait of
    a known length (bench/cached_handler.py ``--busy-us``). Each row's key-side should be its
    wait plus the first row's; more than that is the client's own error (for instance a
    wake-up that costs more after a longer wait, which the PING would not cancel)."""
    section("calibration: `vfido run` answering after a busy wait of a known length")
    raws = raw_ops(tmp)
    rows = []
    for us in (0, 30, 60, 100):
        command = (*CACHED_HANDLER, "--busy-us", str(us))
        rows.append(_assertion_row(tmp, f"getAssertion after {us} us", command, raws, blocks))
    out["calibration"] = [r.__dict__ for r in rows]


def _assertion_row(
    tmp: Path,
    name: str,
    command: Sequence[str] | None,
    raws: dict[str, Callable[[], object]],
    blocks: int,
) -> KeySide:
    """The key-side getAssertion of `vfido run` started as ``command`` (None: vfido run)."""
    with vfido_run(tmp, command=command) as key:
        client = RawClient(key.port, key.peer_port)
        client.init(retry_every=0.01)
        cdh = os.urandom(32)
        cid = credential_id_of(_ok(client.cbor(make_credential_request(cdh))))
        ga = get_assertion_request(cdh, cid)
        reports = client.prepare(Command.CBOR, ga)
        response = _ok(client.call(reports))
        row = key_side(
            name,
            functools.partial(client.call, reports),
            _ping_for(client, ga, response),
            "sign",
            raws["sign"],
            blocks,
        )
        client.close()
    return row


def bench_persistent(out: dict[str, Any], tmp: Path, blocks: int) -> None:
    section("vfido run --transport udp --keystore DIR (persistent, subprocess), raw client here")
    directory = tmp / "keystore"
    secret = tmp / "passphrase"
    secret.write_text("bench passphrase\n")
    secret.chmod(0o600)
    init_keystore(directory, secret)
    extra = [INSECURE_UDP_FLAG] if INSECURE_UDP_FLAG in run_help() else []
    if extra:
        print(f"  (passing {INSECURE_UDP_FLAG}: `vfido run --help` lists it)")
    raws = raw_ops(directory)  # the commit's database on the keystore's file system
    with vfido_run(tmp, keystore=directory, passphrase_file=secret, extra=extra) as key:
        rows = measure_at(key.port, key.peer_port, raws, blocks, persistent=True, retry_every=0.05)
    out["persistent"] = [r.__dict__ for r in rows]


def bench_idle(out: dict[str, Any], tmp: Path, rounds: int) -> None:
    section("idle vfido run --ephemeral: start to first CTAPHID_INIT answer, RSS")
    starts, rss = [], []
    with vfido_run(tmp) as key:  # not measured: writes the bytecode a user's first start does
        warm = RawClient(key.port, key.peer_port)
        warm.init(retry_every=0.002)
        warm.close()
    for _ in range(rounds):
        with vfido_run(tmp) as key:
            client = RawClient(key.port, key.peer_port)
            answered = client.init(retry_every=0.002)
            starts.append(answered - key.started)
            time.sleep(0.5)
            rss.append(key.rss_mb())
            client.close()
    med, p10, p90 = _quantiles(starts)
    print(f"  start -> first INIT answer: median {med:.3f} s (p10-p90 {p10:.3f}-{p90:.3f})")
    rss_med = statistics.median(rss)
    print(f"  idle RSS: median {rss_med:.1f} MB (min {min(rss):.1f}, max {max(rss):.1f})")
    out["idle"] = {"start_s": starts, "rss_mb": rss}


def _multi_client(keys: list[tuple[int, int]], duration: float, conn: Any) -> None:
    """One client process: a thread per key, getAssertion in a loop for ``duration``."""
    results: dict[int, list[float]] = {}

    def drive(port: int, peer: int) -> None:
        client = RawClient(port, peer)
        client.init(retry_every=0.05)
        reports = _assertion_reports(client)
        start.wait()
        lat = []
        end = time.perf_counter() + duration
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            client.call(reports)
            lat.append(time.perf_counter() - t0)
        results[port] = lat
        client.close()

    start = threading.Event()
    threads = [threading.Thread(target=drive, args=k) for k in keys]
    for t in threads:
        t.start()
    time.sleep(1.0)
    start.set()
    for t in threads:
        t.join()
    conn.send(results)
    conn.close()


def _drive_many(keys: list[tuple[int, int]], duration: float, clients: int) -> dict[str, float]:
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    procs, pipes = [], []
    for i in range(clients):
        mine = keys[i::clients]
        parent, child = ctx.Pipe()
        p = ctx.Process(target=_multi_client, args=(mine, duration, child))
        p.start()
        procs.append(p)
        pipes.append(parent)
    results: dict[int, list[float]] = {}
    for parent in pipes:
        results.update(parent.recv())
    for p in procs:
        p.join()
    per_key = [statistics.median(v) for v in results.values() if v]
    total = sum(len(v) for v in results.values())
    return {
        "assertions_per_s": total / duration,
        "per_key_median_ms": statistics.median(per_key) * 1e3,
        "per_key_p10_ms": _quantiles(per_key)[1] * 1e3,
        "per_key_p90_ms": _quantiles(per_key)[2] * 1e3,
    }


def bench_multi(out: dict[str, Any], tmp: Path, keys: int, duration: float, clients: int) -> None:
    section(f"{keys} keys: one process (keyserver.py, `vfido run` wiring) vs {keys} `vfido run`s")
    ports = free_ports(2 * keys)
    pairs = list(zip(ports[::2], ports[1::2], strict=True))
    spec = [f"{p}:{q}" for p, q in pairs]
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "keyserver.py"), *spec],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=_tree_env(),  # --tree: that checkout's vfido (before session 10, this one's)
    )
    try:
        assert server.stdout is not None
        if server.stdout.readline().strip() != b"ready":
            raise RuntimeError("keyserver did not start")
        one = _drive_many(pairs, duration, clients)
    finally:
        assert server.stdin is not None
        server.stdin.close()
        server.wait(timeout=30)
    print(f"  one process:    {one}")
    with contextlib.ExitStack() as stack:
        ports = free_ports(2 * keys)
        many = [
            stack.enter_context(vfido_run(tmp, ports=pair))
            for pair in zip(ports[::2], ports[1::2], strict=True)
        ]
        for key in many:  # wait until every key answers
            c = RawClient(key.port, key.peer_port)
            c.init(retry_every=0.05, deadline=600.0)  # 32 imports on a busy machine
            c.close()
        multi = _drive_many([(k.port, k.peer_port) for k in many], duration, clients)
    print(f"  {keys} processes: {multi}")
    ratio = one["per_key_median_ms"] / multi["per_key_median_ms"]
    print(f"  per-key latency, one process / {keys} processes: {ratio:.2f}x")
    out["multi"] = {"one": one, "many": multi, "ratio": ratio}


def _frame_name(frame: str) -> str:
    """``func (path/file.py:line)`` -> ``func (file.py)``."""
    name, sep, where = frame.partition(" (")
    if not sep:
        return frame
    return f"{name} ({where.split(':')[0].rsplit('/', 1)[-1]})"


def summarize_profile(path: Path, top: int = 25, *, threads: bool = False) -> list[str]:
    """Inclusive and self shares of each function in py-spy's collapsed stacks (-f raw).
    ``threads``: also the share of each thread (by name) and of each self frame per thread."""
    inclusive: dict[str, int] = {}
    own: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        total += count
        names = stack.split(";")
        if threads and names and names[0].startswith("thread ("):
            inclusive[names[0]] = inclusive.get(names[0], 0) + count
        frames = [_frame_name(f) for f in names if not f.startswith("thread (")]
        if frames:
            last = names[-1]
            if threads:  # the line too: select vs recvfrom vs a lock in the same function
                name, _, where = last.partition(" (")
                last = f"{name} ({where.rsplit('/', 1)[-1]}"
            else:
                last = frames[-1]
            own[last] = own.get(last, 0) + count
        for name in set(frames):
            inclusive[name] = inclusive.get(name, 0) + count
    lines = [f"{total} samples"]
    lines.append("inclusive:")
    for name, count in sorted(inclusive.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"  {100 * count / total:5.1f}%  {name}")
    lines.append("self:")
    for name, count in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"  {100 * count / total:5.1f}%  {name}")
    return lines


def bench_profile(out: dict[str, Any], tmp: Path, seconds: float, py_spy: str) -> None:
    """py-spy samples the `vfido run` process while the raw client loops getAssertion
    (without py-spy: bench/sampler.py's sampling thread inside `vfido run`)."""
    if not Path(py_spy).exists():
        bench_sampled(out, tmp, seconds)
        return
    section(f"profile: py-spy record --pid (1000 Hz, {seconds:.0f} s) of vfido run under load")
    with vfido_run(tmp) as key:
        client = RawClient(key.port, key.peer_port)
        client.init(retry_every=0.01)
        reports = _assertion_reports(client)
        raw = tmp / "profile.txt"
        spy = subprocess.Popen(
            [
                py_spy,
                "record",
                "--pid",
                str(key.proc.pid),
                "-r",
                "1000",
                "-f",
                "raw",
                "-d",
                str(int(seconds)),
                "-o",
                str(raw),
                "--nonblocking",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        count = 0
        while spy.poll() is None:
            client.call(reports)
            count += 1
        client.close()
    lines = [f"{count} getAssertions while sampling", *summarize_profile(raw)]
    print("\n".join("  " + line for line in lines))
    out["profile"] = lines


def bench_sampled(out: dict[str, Any], tmp: Path, seconds: float, hz: int = 1000) -> None:
    """bench/sampler.py: `vfido run` with a thread sampling every thread's Python stack."""
    section(f"profile: bench/sampler.py ({hz} Hz, {seconds:.0f} s) of vfido run under load")
    raw = tmp / "sampled.txt"
    command = (sys.executable, str(ROOT / "bench" / "sampler.py"), str(raw), str(hz))
    with vfido_run(tmp, command=command) as key:
        client = RawClient(key.port, key.peer_port)
        client.init(retry_every=0.01)
        reports = _assertion_reports(client)
        count = 0
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            client.call(reports)
            count += 1
        client.close()
    lines = [f"{count} getAssertions while sampling", *summarize_profile(raw, threads=True)]
    print("\n".join("  " + line for line in lines))
    out["profile"] = lines


def summarize_cprofile(path: Path, requests: int, top: int = 22) -> list[str]:
    """Per getAssertion: each function's own time (tottime) and inclusive time, in
    microseconds under the profiler, and as a share of the I/O threads' total."""
    import pstats

    stats: Any = pstats.Stats(str(path)).stats  # {(file, line, name): (cc, nc, tt, ct, callers)}
    total = sum(tt for (_cc, _nc, tt, _ct, _callers) in stats.values())
    rows = []
    for (file, _line, name), (_cc, _nc, tt, ct, _callers) in stats.items():
        where = file.rsplit("/", 1)[-1]
        rows.append((tt, ct, f"{name} ({where})" if where != "~" else name))
    lines = [f"{requests} getAssertions; I/O threads' profiled time {total:.3f} s"]
    lines.append("self (per request, share of the I/O threads' time):")
    for tt, _ct, name in sorted(rows, reverse=True)[:top]:
        lines.append(f"  {1e6 * tt / requests:8.1f} us  {100 * tt / total:5.1f}%  {name}")
    lines.append("inclusive:")
    for _tt, ct, name in sorted(rows, key=lambda r: -r[1])[:top]:
        lines.append(f"  {1e6 * ct / requests:8.1f} us  {100 * ct / total:5.1f}%  {name}")
    return lines


def _get_assertions(tmp: Path, command: Sequence[str], count: int) -> None:
    """``count`` getAssertions of one credential from `vfido run` started as ``command``."""
    with vfido_run(tmp, command=command) as key:
        client = RawClient(key.port, key.peer_port)
        client.init(retry_every=0.01)
        reports = _assertion_reports(client)
        for _ in range(count):
            client.call(reports)
        client.close()


def bench_cprofile(out: dict[str, Any], tmp: Path, count: int) -> None:
    """bench/cprof.py: cProfile on `vfido run`'s UDP I/O threads while the client loops."""
    section(f"profile: cProfile of vfido run's I/O threads, {count} getAssertions (bench/cprof.py)")
    result = tmp / "cprof.prof"
    command = (sys.executable, str(ROOT / "bench" / "cprof.py"), str(result))
    _get_assertions(tmp, command, count)
    lines = summarize_cprofile(result, count + 2)
    print("\n".join("  " + line for line in lines))
    out["cprofile"] = lines


def bench_hops(out: dict[str, Any], tmp: Path, count: int) -> None:
    """Where a getAssertion's time goes inside `vfido run` (bench/hops.py's stopwatch)."""
    section(f"hand-offs inside vfido run: {count} getAssertions (bench/hops.py, microseconds)")
    result = tmp / "hops.json"
    command = (sys.executable, str(ROOT / "bench" / "hops.py"), str(result))
    _get_assertions(tmp, command, count)
    rows = json.loads(result.read_text())[-count:]
    summary = {}
    for name in rows[0]:
        med, p10, p90 = _quantiles([r[name] for r in rows])
        summary[name] = (med, p10, p90)
        print(f"  {name:<22} median {med:7.1f} us  (p10-p90 {p10:6.1f}-{p90:7.1f})")
    out["hops"] = summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", default="ephemeral,persistent,idle,multi")
    parser.add_argument("--blocks", type=int, default=0, help="blocks per row (default 30)")
    parser.add_argument("--keys", type=int, default=32)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--tree", type=Path, help="measure this checkout's `vfido run`")
    parser.add_argument(
        "--client",
        choices=("blocks", "polls"),
        default="blocks",
        help="how the client waits for an answer (polls: a diagnostic, see the docstring)",
    )
    parser.add_argument("--py-spy", default=str(Path(sys.executable).parent / "py-spy"))
    parser.add_argument("--profile-seconds", type=float, default=10.0)
    args = parser.parse_args()
    global TREE, CLIENT_POLLS
    TREE = args.tree.resolve() if args.tree else None
    CLIENT_POLLS = args.client == "polls"
    blocks = args.blocks or (8 if args.quick else 30)
    only = set(args.only.split(","))
    out: dict[str, Any] = {
        "python": sys.version.split()[0],
        "load": os.getloadavg(),
        "client": args.client,
    }
    print(f"load average at start: {os.getloadavg()}; the client {args.client}")
    base = os.environ.get("BENCH_TMP")
    with tempfile.TemporaryDirectory(dir=base, prefix="vfido-entry-") as tmp_name:
        tmp = Path(tmp_name)
        if "ephemeral" in only:
            bench_ephemeral(out, tmp, blocks)
        if "reference" in only:
            bench_reference(out, tmp, blocks)
        if "uv" in only:
            bench_uv(out, tmp, blocks)
        if "transport" in only:
            bench_transport(out, tmp, blocks)
        if "calibration" in only:
            bench_calibration(out, tmp, blocks)
        if "persistent" in only:
            bench_persistent(out, tmp, blocks)
        if "idle" in only:
            bench_idle(out, tmp, 3 if args.quick else 7)
        if "hops" in only:
            bench_hops(out, tmp, 300 if args.quick else 2000)
        if "profile" in only:
            bench_profile(out, tmp, args.profile_seconds, args.py_spy)
        if "cprofile" in only:
            bench_cprofile(out, tmp, 1000 if args.quick else 5000)
        if "multi" in only:
            bench_multi(out, tmp, args.keys, 3.0 if args.quick else args.duration, args.clients)
    out["load_end"] = os.getloadavg()
    print(f"load average at end: {os.getloadavg()}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
