"""vfido benchmark suite: medians, spreads (p10-p90) and ratios to the raw crypto of the same run.

    python3 bench/bench.py [--quick] [--only SECTIONS] [--scale 10,1000,100000] [--json FILE]
    python3 bench/bench.py --profile            # pyinstrument top lines of the hot paths

Sections (default: all but ``multi``; see bench/README.md):

* ``crypto``    the raw operations: ECDSA P-256 sign + SHA-256, Ed25519 sign, RSA-2048 sign;
* ``inprocess`` makeCredential / getAssertion for ES256, EdDSA, RS256 at four depths: the handler
  alone, + CTAPHID framing (sync), + the HidRunner threads, + python-fido2's client; and on a
  persistent (fsync'ed) keystore;
* ``udp``       a key in another process: raw CTAPHID-over-UDP client and python-fido2's client,
  with the client's own CPU time per operation;
* ``scale``     getAssertion with N discoverable credentials of other RPs + 5 of the target RP,
  bytes written per assertion, keystore open time and memory with N credentials, the KDF;
* ``multi``     32 keys in one process vs 32 processes: aggregate assertions/s, per-key latency;
* ``ctaphid``   7609-byte PING round trip; keepalive intervals while waiting for presence.

Nothing here asserts a time: the numbers are for people (bench/HISTORY.md keeps them).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import itertools
import json
import multiprocessing
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from cryptography.hazmat.primitives import hashes  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa  # noqa: E402
from fido2.ctap2.base import Ctap2  # noqa: E402
from harness import (  # noqa: E402
    RP_ID,
    RunnerHost,
    SyncHost,
    UdpHost,
    check_ok,
    credential_id_of,
    get_assertion_request,
    make_credential_request,
)
from stats import Results, sample, section, summarize  # noqa: E402

from vfido.authenticator.config import Config  # noqa: E402
from vfido.authenticator.device import Authenticator  # noqa: E402
from vfido.keystore import kdf  # noqa: E402
from vfido.keystore.sqlite_store import SqliteKeyStore  # noqa: E402
from vfido.presence import AutoPresence  # noqa: E402
from vfido.transports.inprocess import open_device  # noqa: E402
from vfido.transports.runner import HidTransaction  # noqa: E402
from vfido.transports.udp import free_ports, open_udp_device  # noqa: E402

ALGS = {"ES256": -7, "EdDSA": -8, "RS256": -257}
PASSPHRASE = "bench passphrase"
RP = {"id": RP_ID, "name": "Bench"}
USER = {"id": b"bench-user", "name": "bench"}
SIGNED_LEN = 37 + 32  # authData (no extensions) + clientDataHash

#: The raw operation per algorithm (set by bench_crypto). The in-process rows time it
#: alternately with the measured operation, so their ratios do not carry the machine's drift.
RAW_OPS: dict[str, Callable[[], object]] = {}


# --------------------------------------------------------------------------- crypto


def bench_crypto(res: Results, n: int) -> dict[str, float]:
    """The raw cost each algorithm's ratio is measured against (seconds)."""
    section("raw cryptography (the denominators of every ratio)")
    data = os.urandom(SIGNED_LEN)
    p256 = ec.generate_private_key(ec.SECP256R1())
    ed = ed25519.Ed25519PrivateKey.generate()
    rsa_key = rsa.generate_private_key(65537, 2048)

    def es256() -> None:
        hashlib.sha256(data).digest()
        p256.sign(data, ec.ECDSA(hashes.SHA256()))

    def eddsa() -> None:
        hashlib.sha256(data).digest()
        ed.sign(data)

    def rs256() -> None:
        hashlib.sha256(data).digest()
        rsa_key.sign(data, padding.PKCS1v15(), hashes.SHA256())

    RAW_OPS.update({"ES256": es256, "EdDSA": eddsa, "RS256": rs256})
    base = {
        "ES256": res.time("raw: ECDSA P-256 sign + SHA-256 (69 bytes)", es256, n * 3).median_ms,
        "EdDSA": res.time("raw: Ed25519 sign + SHA-256", eddsa, n * 3).median_ms,
        "RS256": res.time("raw: RSA-2048 PKCS#1 v1.5 sign + SHA-256", rs256, n).median_ms,
    }
    res.time("raw: P-256 key generation", lambda: ec.generate_private_key(ec.SECP256R1()), n)
    return {k: v / 1e3 for k, v in base.items()}


# --------------------------------------------------------------------------- in-process


def _authenticator(store: SqliteKeyStore | None = None, attestation: str = "none") -> Authenticator:
    return Authenticator(
        store if store is not None else SqliteKeyStore.ephemeral(),
        AutoPresence(),
        Config(attestation=attestation),
    )


def bench_inprocess(res: Results, n: int, base: dict[str, float]) -> None:
    section("in-process: handler / +CTAPHID framing / +HidRunner threads / +python-fido2 client")
    for name, alg in ALGS.items():
        _inprocess_alg(res, name, alg, n if alg != -257 else max(10, n // 5), RAW_OPS[name])


def _inprocess_alg(res: Results, name: str, alg: int, count: int, b: Callable[[], object]) -> None:
    cdh = os.urandom(32)
    auth = _authenticator()
    sync = SyncHost(auth)
    mc = make_credential_request(cdh, alg=alg)
    cid = credential_id_of(sync.cbor(mc))
    ga = get_assertion_request(cdh, cid)
    transaction = HidTransaction(1, 1)

    def row(label: str, fn: Callable[[], object]) -> None:
        res.time(f"{name} {label}", fn, count, base=b)

    row(
        "getAssertion: handler.handle_cbor only",
        lambda: check_ok(auth.handle_cbor(ga, transaction)),
    )
    row("getAssertion: CTAPHID framing, sync", lambda: check_ok(sync.cbor(ga)))
    row("makeCredential: CTAPHID framing, sync", lambda: check_ok(sync.cbor(mc)))
    runner = RunnerHost(auth)
    row("getAssertion: HidRunner threads", lambda: check_ok(runner.cbor(ga)))
    row("makeCredential: HidRunner threads", lambda: check_ok(runner.cbor(mc)))
    runner.close()
    device = open_device(auth)
    ctap = Ctap2(device)
    params: list[Mapping[str, Any]] = [{"type": "public-key", "alg": alg}]
    allow: list[Mapping[str, Any]] = [{"type": "public-key", "id": cid}]
    row(
        "getAssertion: python-fido2 Ctap2, in-process",
        lambda: ctap.get_assertion(RP_ID, cdh, allow),
    )
    row(
        "makeCredential: python-fido2 Ctap2, in-process",
        lambda: ctap.make_credential(cdh, RP, USER, params),
    )
    device.close()
    if alg == -7:
        packed = SyncHost(_authenticator(attestation="packed"))
        row("makeCredential packed attestation: sync", lambda: check_ok(packed.cbor(mc)))
        with tempfile.TemporaryDirectory() as tmp:
            store = SqliteKeyStore.create(
                Path(tmp) / "ks", PASSPHRASE, kdf_params=kdf.insecure_test_params()
            )
            disk = SyncHost(_authenticator(store))
            disk_cid = credential_id_of(disk.cbor(mc))
            disk_ga = get_assertion_request(cdh, disk_cid)
            res.time(
                "ES256 getAssertion: sync, persistent keystore (fsync)",
                lambda: check_ok(disk.cbor(disk_ga)),
                count,
                base=b,
                note="counter fsync'd before the response",
            )
            store.close()


# --------------------------------------------------------------------------- udp


@contextmanager
def keyservers(specs: list[list[tuple[int, int]]]) -> Iterator[None]:
    """Start one bench/keyserver.py process per entry (each serving its (port, peer) pairs)."""
    procs = []
    try:
        for keys in specs:
            args = [f"{p}:{q}" for p, q in keys]
            proc = subprocess.Popen(
                [sys.executable, str(ROOT / "bench" / "keyserver.py"), *args],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            procs.append(proc)
        for proc in procs:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "ready":
                raise RuntimeError("keyserver did not start")
        yield
    finally:
        for proc in procs:
            if proc.stdin is not None:
                proc.stdin.close()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _cpu_per_op(fn: Callable[[], object], n: int) -> float:
    """Client CPU seconds (this process, all threads) per call."""
    t0 = time.process_time()
    for _ in range(n):
        fn()
    return (time.process_time() - t0) / n


def bench_udp(res: Results, n: int, base: dict[str, float]) -> None:
    section("UDP: key in a separate process (bench/keyserver.py), client here")
    port, peer = free_ports(2)
    cdh = os.urandom(32)
    b = base["ES256"]
    with keyservers([[(port, peer)]]):
        raw = UdpHost(port, peer)
        cid = credential_id_of(raw.cbor(make_credential_request(cdh)))
        ga = get_assertion_request(cdh, cid)
        mc = make_credential_request(cdh)
        r_ga = res.time(
            "ES256 getAssertion: raw CTAPHID/UDP client", lambda: check_ok(raw.cbor(ga)), n, base=b
        )
        res.time(
            "ES256 makeCredential: raw CTAPHID/UDP client",
            lambda: check_ok(raw.cbor(mc)),
            n,
            base=b,
        )
        raw_cpu = _cpu_per_op(lambda: check_ok(raw.cbor(ga)), n)
        res.figure("  raw client CPU per getAssertion (ms)", raw_cpu * 1e3)
        res.time(
            "CTAPHID PING 7609 bytes: raw UDP client",
            lambda: raw.ping(b"\xa5" * 7609),
            max(10, n // 5),
        )
        raw.close()
        device = open_udp_device(port=port, peer_port=peer)
        ctap = Ctap2(device)
        allow: list[Mapping[str, Any]] = [{"type": "public-key", "id": cid}]
        f_ga = res.time(
            "ES256 getAssertion: python-fido2 Ctap2 over UDP",
            lambda: ctap.get_assertion(RP_ID, cdh, allow),
            n,
            base=b,
        )
        res.time(
            "ES256 makeCredential: python-fido2 Ctap2 over UDP",
            lambda: ctap.make_credential(cdh, RP, USER, [{"type": "public-key", "alg": -7}]),
            n,
            base=b,
        )
        fido_cpu = _cpu_per_op(lambda: ctap.get_assertion(RP_ID, cdh, allow), n)
        res.figure("  python-fido2 client CPU per getAssertion (ms)", fido_cpu * 1e3)
        res.figure(
            "  client share of the python-fido2 round trip (CPU / median)",
            fido_cpu * 1e3 / f_ga.median_ms,
        )
        res.figure(
            "  round trip minus client CPU (key + kernel + wakeups, ms)",
            f_ga.median_ms - fido_cpu * 1e3,
        )
        res.figure(
            "  python-fido2 round trip / raw client round trip", f_ga.median_ms / r_ga.median_ms
        )
        device.close()


# --------------------------------------------------------------------------- scale


def _io_counters() -> dict[str, int]:
    out = {}
    with open("/proc/self/io") as f:
        for line in f:
            key, value = line.split(":")
            out[key] = int(value)
    return out


def _fill(store: SqliteKeyStore, size: int) -> None:
    """``size`` discoverable ES256 credentials for other RPs, each used once (a counter row).

    Uses the store's own API; durability is switched off for the fill only (bench-only access
    to the connection) so 100,000 inserts do not take 100,000 fsyncs.
    """
    from vfido.authenticator.cose import CredentialKey
    from vfido.authenticator.credential_source import SealedCredential, encode_credential_id
    from vfido.keystore.store import CredentialRecord

    conn = store._require_open()
    conn.execute("PRAGMA synchronous=OFF")
    key = CredentialKey.generate(-7).private_bytes()
    identity = store.identity()
    now = int(time.time())
    for i in range(size):
        rp_id = f"rp{i}.example"
        rp_hash = hashlib.sha256(rp_id.encode()).digest()
        cid = encode_credential_id(
            identity.credential_key, rp_hash, SealedCredential(-7, key, discoverable=True)
        )
        store.put_credential(
            CredentialRecord(cid, rp_id, rp_hash, i.to_bytes(8, "big"), -7, key, now, user_name="u")
        )
        store.increment_counter(cid)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("PRAGMA synchronous=FULL")


def open_probe(directory: str) -> None:
    """Child process: open a keystore, report times and memory as one JSON line."""
    real_derive = kdf.derive_key
    kdf_times: list[float] = []

    def timed_derive(passphrase: str, params: kdf.KdfParams) -> bytearray:
        t = time.perf_counter()
        try:
            return real_derive(passphrase, params)
        finally:
            kdf_times.append(time.perf_counter() - t)

    kdf.derive_key = timed_derive  # measures the KDF inside open() (bench process only)
    t0 = time.perf_counter()
    store = SqliteKeyStore.open(Path(directory), PASSPHRASE)
    opened = time.perf_counter() - t0
    kdf.derive_key = real_derive
    rss_open = _rss_mb()
    kdf_s = sum(kdf_times)
    count = store.count_credentials()
    store.close()
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "open_s": opened,
                "kdf_s": kdf_s,
                "rss_mb": rss_open,
                "maxrss_mb": maxrss,
                "count": count,
            }
        )
    )


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def bench_scale(
    res: Results, sizes: list[int], n: int, base: dict[str, float], kdf_kib: int
) -> None:
    section("scale: getAssertion (no allowList, 5 credentials of the RP) among N others")
    b = base["ES256"]
    for size in sizes:
        _scale_size(res, size, n, b, kdf_kib)


def _scale_size(res: Results, size: int, n: int, b: float, kdf_kib: int) -> None:
    cdh = os.urandom(32)
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        directory = Path(tmp) / "ks"
        params = kdf.new_params(kdf_kib) if kdf_kib else kdf.insecure_test_params()
        store = SqliteKeyStore.create(directory, PASSPHRASE, kdf_params=params)
        t0 = time.perf_counter()
        _fill(store, size)
        fill_s = time.perf_counter() - t0
        auth = Authenticator(
            store,
            AutoPresence(),
            Config(attestation="none", max_resident_credentials=size + 10),
        )
        host = SyncHost(auth)
        for u in range(5):
            check_ok(host.cbor(make_credential_request(cdh, user_id=b"user%d" % u, rk=True)))
        ga = get_assertion_request(cdh)
        res.time(
            f"N={size:>6}: getAssertion, persistent keystore (fsync)",
            lambda: check_ok(host.cbor(ga)),
            n,
            base=b,
            note=f"fill {fill_s:.1f} s",
        )
        # Bytes the process hands to write(2) and bytes that reach the block layer.
        k = max(200, n)
        io0 = _io_counters()
        for _ in range(k):
            check_ok(host.cbor(ga))
        io1 = _io_counters()
        res.figure(f"N={size:>6}: write(2) bytes per assertion", (io1["wchar"] - io0["wchar"]) / k)
        res.figure(
            f"N={size:>6}: block-layer bytes written per assertion",
            (io1["write_bytes"] - io0["write_bytes"]) / k,
        )
        conn = store._require_open()
        conn.execute("PRAGMA synchronous=OFF")
        res.time(
            f"N={size:>6}: getAssertion, fsync excluded (CPU cost only)",
            lambda: check_ok(host.cbor(ga)),
            n,
            base=b,
            note="synchronous=OFF: not the product",
        )
        conn.execute("PRAGMA synchronous=FULL")
        store.close()
        db = directory / "vfido.db"
        res.figure(f"N={size:>6}: database size (MB)", db.stat().st_size / 1e6)
        probe = subprocess.run(
            [sys.executable, str(Path(__file__)), "--open-probe", str(directory)],
            capture_output=True,
            text=True,
            check=True,
        )
        info = json.loads(probe.stdout.strip().splitlines()[-1])
        res.figure(f"N={size:>6}: keystore open, total (s)", info["open_s"])
        res.figure(f"N={size:>6}: keystore open after the KDF (s)", info["open_s"] - info["kdf_s"])
        res.figure(f"N={size:>6}: the KDF inside open (s)", info["kdf_s"])
        res.figure(f"N={size:>6}: RSS after open (MB)", info["rss_mb"])
        res.figure(f"N={size:>6}: peak RSS of the process (MB)", info["maxrss_mb"])


def _call(host: SyncHost, request: bytes) -> None:
    check_ok(host.cbor(request))


def bench_flat(res: Results, sizes: list[int], n: int, base: dict[str, float]) -> None:
    """The scale latencies again, interleaved: every store open at once, samples alternate
    between them, so load on a shared machine hits every size alike."""
    section("flatness: the same getAssertion on every store size, interleaved")
    b = base["ES256"]
    cdh = os.urandom(32)
    ga = get_assertion_request(cdh)
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        hosts: dict[int, tuple[SqliteKeyStore, SyncHost]] = {}
        for size in sizes:
            store = SqliteKeyStore.create(
                Path(tmp) / f"ks{size}", PASSPHRASE, kdf_params=kdf.insecure_test_params()
            )
            _fill(store, size)
            config = Config(attestation="none", max_resident_credentials=size + 10)
            host = SyncHost(Authenticator(store, AutoPresence(), config))
            for u in range(5):
                check_ok(host.cbor(make_credential_request(cdh, user_id=b"user%d" % u, rk=True)))
            hosts[size] = (store, host)
        for durable in (True, False):
            samples: dict[int, list[float]] = {size: [] for size in sizes}
            for store, _ in hosts.values():
                mode = "FULL" if durable else "OFF"
                store._require_open().execute(f"PRAGMA synchronous={mode}")
            for _ in range(10):
                for size, (_, host) in hosts.items():
                    samples[size] += sample(functools.partial(_call, host, ga), max(10, n // 10))
            label = "fsync'd" if durable else "fsync excluded"
            for size in sizes:
                res.add(
                    summarize(f"interleaved N={size:>6}: getAssertion, {label}", samples[size], b)
                )
            first, last = sizes[0], sizes[-1]
            res.figure(
                f"  median N={last} / median N={first} ({label})",
                statistics.median(samples[last]) / statistics.median(samples[first]),
            )
        for store, _ in hosts.values():
            store.close()


# --------------------------------------------------------------------------- 32 keys


def _client_worker(keys: list[tuple[int, int]], duration: float, out: Any) -> None:
    """Client process: one thread per key, getAssertion in a loop for ``duration`` seconds."""
    results: dict[int, list[float]] = {}
    cdh = os.urandom(32)
    start = threading.Barrier(len(keys))

    def drive(port: int, peer: int) -> None:
        host = UdpHost(port, peer)
        cid = credential_id_of(host.cbor(make_credential_request(cdh)))
        ga = get_assertion_request(cdh, cid)
        samples: list[float] = []
        start.wait()
        end = time.perf_counter() + duration
        while True:
            t0 = time.perf_counter()
            if t0 >= end:
                break
            check_ok(host.cbor(ga))
            samples.append(time.perf_counter() - t0)
        results[port] = samples
        host.close()

    threads = [threading.Thread(target=drive, args=key) for key in keys]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put(results)


def bench_multi(res: Results, keys: int, duration: float, clients: int) -> None:
    section(f"{keys} keys: one process vs {keys} processes ({clients} client processes, raw UDP)")
    ctx = multiprocessing.get_context("spawn")
    for label in ("one process", f"{keys} processes"):
        ports = free_ports(keys * 2)
        pairs = [(ports[2 * i], ports[2 * i + 1]) for i in range(keys)]
        specs = [pairs] if label == "one process" else [[p] for p in pairs]
        with keyservers(specs):
            queue = ctx.Queue()
            groups = [pairs[i::clients] for i in range(clients)]
            procs = [ctx.Process(target=_client_worker, args=(g, duration, queue)) for g in groups]
            for p in procs:
                p.start()
            merged: dict[int, list[float]] = {}
            for _ in procs:
                merged.update(queue.get(timeout=duration + 120))
            for p in procs:
                p.join()
        total = sum(len(s) for s in merged.values())
        everything = [x for s in merged.values() for x in s]
        medians = sorted(statistics.median(s) * 1e3 for s in merged.values() if s)
        res.figure(f"{label}: aggregate getAssertion/s", total / duration)
        res.figure(f"{label}: per-key latency median (ms)", statistics.median(everything) * 1e3)
        res.figure(
            f"{label}: per-key latency p90 (ms)", statistics.quantiles(everything, n=10)[-1] * 1e3
        )
        res.figure(
            f"{label}: per-key medians min..max (ms)", f"{medians[0]:.2f}..{medians[-1]:.2f}"
        )


# --------------------------------------------------------------------------- ctaphid


def bench_ctaphid(res: Results, n: int, presence_wait: float) -> None:
    section("CTAPHID: 7609-byte PING, keepalives while waiting for presence")
    auth = _authenticator()
    runner = RunnerHost(auth)
    payload = bytes(range(256)) * 29 + bytes(185)
    assert len(payload) == 7609
    res.time("PING 7609 bytes: HidRunner, in-process host", lambda: runner.ping(payload), n)
    runner.close()
    device = open_device(auth)
    res.time(
        "PING 7609 bytes: python-fido2 CtapHidDevice, in-process", lambda: device.ping(payload), n
    )
    device.close()
    slow = Authenticator(
        SqliteKeyStore.ephemeral(), AutoPresence(delay=presence_wait), Config(attestation="none")
    )
    runner = RunnerHost(slow)
    cdh = os.urandom(32)
    t0 = time.perf_counter()
    check_ok(runner.cbor(make_credential_request(cdh)))
    stamps = [t0, *runner.last_keepalives]
    gaps = [(b - a) * 1e3 for a, b in itertools.pairwise(stamps)]
    runner.close()
    res.figure("keepalives received during the wait", len(gaps))
    res.figure("keepalive interval median (ms)", statistics.median(gaps))
    res.figure("keepalive interval min (ms)", min(gaps))
    res.figure("keepalive interval max (ms) [spec: <= 100]", max(gaps))
    res.figure("keepalive interval stdev (ms)", statistics.pstdev(gaps))


# --------------------------------------------------------------------------- profile


def profile(n: int) -> None:
    from pyinstrument import Profiler

    cdh = os.urandom(32)
    auth = _authenticator()
    sync = SyncHost(auth)
    ga = get_assertion_request(cdh, credential_id_of(sync.cbor(make_credential_request(cdh))))
    for label, host in (("sync CTAPHID framing", sync), ("HidRunner threads", RunnerHost(auth))):
        profiler = Profiler(interval=0.0001)
        profiler.start()
        for _ in range(n):
            check_ok(host.cbor(ga))
        profiler.stop()
        host.close()
        print(f"\n== profile: {n} x ES256 getAssertion, {label}")
        print(profiler.output_text(unicode=False, color=False))


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples")
    parser.add_argument(
        "--only", default="crypto,inprocess,udp,scale,ctaphid", help="comma-separated sections"
    )
    parser.add_argument("--scale", default="10,1000,100000", help="credential counts for scale")
    parser.add_argument(
        "--kdf-kib", type=int, default=kdf.DEFAULT_MEMORY_KIB, help="scale KDF memory"
    )
    parser.add_argument("--keys", type=int, default=32)
    parser.add_argument("--clients", type=int, default=2, help="client processes for multi")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per multi run")
    parser.add_argument("--presence-wait", type=float, default=3.0)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--profile", action="store_true", help="pyinstrument the hot paths")
    parser.add_argument("--open-probe", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.open_probe:
        open_probe(args.open_probe)
        return
    n = 60 if args.quick else 400
    if args.profile:
        profile(2000 if not args.quick else 300)
        return
    sections = set(args.only.split(","))
    load = os.getloadavg()
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, n={n}, "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    res = Results()
    base = bench_crypto(res, n)
    if "inprocess" in sections:
        bench_inprocess(res, n, base)
    if "udp" in sections:
        bench_udp(res, n, base)
    if "scale" in sections:
        sizes = [int(s) for s in args.scale.split(",") if s]
        bench_scale(res, sizes, n, base, args.kdf_kib)
    if "flat" in sections:
        bench_flat(res, [int(s) for s in args.scale.split(",") if s], n, base)
    if "multi" in sections:
        bench_multi(res, args.keys, args.duration / (3 if args.quick else 1), args.clients)
    if "ctaphid" in sections:
        bench_ctaphid(res, max(20, n // 4), args.presence_wait)
    if args.json:
        res.dump(args.json)


if __name__ == "__main__":
    main()
