"""Interleaved before/after comparison of the in-process getAssertion / makeCredential paths.

On a shared, noisy machine two benchmark runs minutes apart are not comparable. This script
alternates trees (``git archive`` exports or worktrees), one fresh process per (round, tree),
and reports per tree the median over rounds of each run's median, and of each run's ratio to
the raw ECDSA P-256 sign + SHA-256 measured in the same process.

    git archive <commit> | tar -x -C /tmp/before
    python3 bench/ab.py /tmp/before . --rounds 6
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

KEYS = ("handler", "sync_ga", "sync_mc", "runner_ga")
LABELS = {
    "handler": "getAssertion, handler only",
    "sync_ga": "getAssertion, CTAPHID framing (sync)",
    "sync_mc": "makeCredential, CTAPHID framing (sync)",
    "runner_ga": "getAssertion, HidRunner threads",
}


def _median_ms(fn: Callable[[], object], n: int) -> float:
    for _ in range(20):
        fn()
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return statistics.median(samples) * 1e3


def measure(root: str, n: int) -> dict[str, float]:
    """One run inside ``root`` (imports come from that tree)."""
    sys.path[:0] = [root, os.path.join(root, "bench")]
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from harness import (
        RunnerHost,
        SyncHost,
        check_ok,
        credential_id_of,
        get_assertion_request,
        make_credential_request,
    )

    from bench import _authenticator
    from transports.runner import HidTransaction

    data = os.urandom(69)
    key = ec.generate_private_key(ec.SECP256R1())

    def raw() -> None:
        hashlib.sha256(data).digest()
        key.sign(data, ec.ECDSA(hashes.SHA256()))

    cdh = os.urandom(32)
    auth = _authenticator()
    sync = SyncHost(auth)
    mc = make_credential_request(cdh)
    ga = get_assertion_request(cdh, credential_id_of(sync.cbor(mc)))
    transaction = HidTransaction(1, 1)
    out = {"raw": _median_ms(raw, n * 2)}
    out["handler"] = _median_ms(lambda: check_ok(auth.handle_cbor(ga, transaction)), n)
    out["sync_ga"] = _median_ms(lambda: check_ok(sync.cbor(ga)), n)
    out["sync_mc"] = _median_ms(lambda: check_ok(sync.cbor(mc)), n)
    runner = RunnerHost(auth)
    out["runner_ga"] = _median_ms(lambda: check_ok(runner.cbor(ga)), n)
    runner.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("trees", nargs="*", help="source trees to compare (first = before)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("-n", type=int, default=300, help="samples per figure and run")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.n)))
        return
    runs: dict[str, list[dict[str, float]]] = {t: [] for t in args.trees}
    for r in range(args.rounds):
        for tree in args.trees:
            done = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--measure",
                    str(Path(tree).resolve()),
                    "-n",
                    str(args.n),
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            runs[tree].append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    load = os.getloadavg()
    print(f"{args.rounds} interleaved rounds, n={args.n}, load average now {load[0]:.1f}")
    for tree, results in runs.items():
        raw = statistics.median(x["raw"] for x in results)
        print(f"\n{tree}: raw ECDSA P-256 sign + SHA-256 {raw:.4f} ms (median of run medians)")
        for k in KEYS:
            ms = statistics.median(x[k] for x in results)
            ratio = statistics.median(x[k] / x["raw"] for x in results)
            print(f"  {LABELS[k]:42s} {ms:7.3f} ms  {ratio:5.1f}x")


if __name__ == "__main__":
    main()
