"""vfido benchmarks: operations per second and latency medians.

    .venv/bin/python bench/bench.py [--quick] [--scale 10,1000,100000]

Reports medians and spreads (p10-p90) and ratios to the raw cryptographic
operation measured in the same run. Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cryptography.hazmat.primitives import hashes  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from fido2.ctap2 import Ctap2  # noqa: E402

from authenticator.config import Config  # noqa: E402
from authenticator.device import Authenticator  # noqa: E402
from keystore.sqlite_store import SqliteKeyStore  # noqa: E402
from keystore.store import CredentialRecord  # noqa: E402
from transports.inprocess import open_device  # noqa: E402
from vfido.presence import AutoPresence  # noqa: E402

RP = {"id": "bench.example", "name": "Bench"}
USER = {"id": b"bench-user", "name": "bench"}


def timed(fn: Callable[[], object], n: int) -> list[float]:
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return samples


def report(name: str, samples: list[float], base: float | None = None) -> float:
    med = statistics.median(samples)
    q = statistics.quantiles(samples, n=10) if len(samples) >= 10 else [med] * 9
    ratio = f"  {med / base:6.1f}x raw crypto" if base else ""
    print(
        f"{name:<52} median {med * 1e3:8.3f} ms  p10-p90 {q[0] * 1e3:7.3f}-{q[-1] * 1e3:7.3f}"
        f"  ({1 / med:8.0f}/s){ratio}",
        flush=True,
    )
    return med


def raw_crypto(n: int) -> float:
    key = ec.generate_private_key(ec.SECP256R1())
    data = os.urandom(37 + 32)
    return report(
        "raw: ECDSA P-256 sign + SHA-256",
        timed(lambda: key.sign(hashlib.sha256(data).digest(), ec.ECDSA(hashes.SHA256())), n),
    )


def bench_device(label: str, ctap: Ctap2, n: int, base: float) -> None:
    cdh = os.urandom(32)
    for alg, name in ((-7, "ES256"), (-8, "EdDSA"), (-257, "RS256")):
        params = [{"type": "public-key", "alg": alg}]
        count = n if alg != -257 else max(5, n // 20)
        report(
            f"{label}: makeCredential {name}",
            timed(lambda p=params: ctap.make_credential(cdh, RP, USER, p), count),  # type: ignore[misc]
            base,
        )
        cred = ctap.make_credential(cdh, RP, USER, params).auth_data.credential_data
        assert cred is not None
        allow = [{"type": "public-key", "id": cred.credential_id}]
        report(
            f"{label}: getAssertion {name} (server-side)",
            timed(lambda a=allow: ctap.get_assertion(RP["id"], cdh, a), n),  # type: ignore[misc]
            base,
        )


def bench_inprocess(n: int, base: float) -> None:
    store = SqliteKeyStore.ephemeral()
    device = open_device(Authenticator(store, AutoPresence(), Config(attestation="none")))
    bench_device("in-process", Ctap2(device), n, base)
    device.close()


def bench_udp(n: int, base: float) -> None:
    from tests.service_helpers import udp_service
    from transports.udp import open_udp_device

    with udp_service(["--ephemeral", "--attestation", "none"]) as service:
        device = open_udp_device(port=service.port, peer_port=service.peer_port)
        bench_device("udp (separate process)", Ctap2(device), n, base)
        device.close()


def bench_scale(sizes: list[int], n: int, base: float) -> None:
    from authenticator.cose import CredentialKey
    from authenticator.credential_source import SealedCredential, encode_credential_id

    for size in sizes:
        store = SqliteKeyStore.ephemeral()
        identity = store.identity()
        key = CredentialKey.generate(-7)
        t0 = time.perf_counter()
        for i in range(size):
            rp_id = f"rp{i}.example"
            rp_hash = hashlib.sha256(rp_id.encode()).digest()
            cid = encode_credential_id(
                identity.credential_key,
                rp_hash,
                SealedCredential(-7, key.private_bytes(), discoverable=True),
            )
            store.put_credential(
                CredentialRecord(
                    cid,
                    rp_id,
                    rp_hash,
                    i.to_bytes(8, "big"),
                    -7,
                    key.private_bytes(),
                    int(time.time()),
                )
            )
        fill = time.perf_counter() - t0
        config = Config(attestation="none", max_resident_credentials=size + 10)
        device = open_device(Authenticator(store, AutoPresence(), config))
        ctap = Ctap2(device)
        cdh = os.urandom(32)
        for u in range(5):
            ctap.make_credential(
                cdh,
                RP,
                {"id": b"u%d" % u, "name": "u"},
                [{"type": "public-key", "alg": -7}],
                options={"rk": True},
            )
        report(
            f"getAssertion (rk, 5 for RP) with {size:>6} other creds",
            timed(lambda c=ctap, h=cdh: c.get_assertion(RP["id"], h), n),  # type: ignore[misc]
            base,
        )
        print(f"    (filling {size} credentials took {fill:.1f} s)")
        device.close()
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer iterations")
    parser.add_argument("--scale", default="10,1000,100000")
    parser.add_argument("--no-udp", action="store_true")
    args = parser.parse_args()
    n = 50 if args.quick else 300
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, n={n}")
    base = raw_crypto(n * 3)
    bench_inprocess(n, base)
    if not args.no_udp:
        bench_udp(n, base)
    bench_scale([int(s) for s in args.scale.split(",") if s], n, base)


if __name__ == "__main__":
    main()
