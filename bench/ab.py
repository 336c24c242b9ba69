"""Interleaved before/after comparison of the in-process getAssertion / makeCredential paths.

On a shared, noisy machine two benchmark runs minutes apart are not comparable. This script
alternates trees (``git archive`` exports or worktrees), one fresh process per (round, tree),
and reports per tree the median over rounds of each run's median, and of each run's ratio to
the raw ECDSA P-256 sign + SHA-256 timed in alternating blocks with each operation.

    git archive <commit> | tar -x -C /tmp/before
    python3 bench/ab.py /tmp/before . --rounds 6

Both trees must have the ``vfido.authenticator`` layout (commits after the namespace move).
"""

from __future__ import annotations

import argparse
import gc
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


def _paired_ms(
    fn: Callable[[], object], raw: Callable[[], object], n: int, block: int = 20
) -> tuple[float, float]:
    """Medians (ms) of ``fn`` and ``raw``, timed in alternating blocks of ``block`` calls
    (the ratio then does not carry the machine's drift between two measurements). The
    first call of each block is not counted: ``raw`` is timed with warm caches, as alone.
    Same method as ``stats.sample_paired`` (this file must also run against old trees)."""
    for _ in range(20):
        fn()
        raw()
    samples: list[float] = []
    base: list[float] = []
    clock = time.perf_counter
    gc.collect()
    gc.disable()
    try:
        while len(samples) < n:
            for op, out in ((raw, base), (fn, samples)):
                op()
                for _ in range(min(block, n - len(samples))):
                    t0 = clock()
                    op()
                    out.append(clock() - t0)
    finally:
        gc.enable()
    return statistics.median(samples) * 1e3, statistics.median(base) * 1e3


def measure(root: str, n: int) -> dict[str, float]:
    """One run inside ``root``: the key's packages come from that tree, the measuring
    harness (``harness.py``) from this one, so that every tree is measured the same way.
    (Not ``bench.py``: it puts its own tree first on ``sys.path``.)"""
    sys.path[:0] = [root, os.path.dirname(os.path.abspath(__file__))]
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

    import vfido.authenticator as authenticator
    from vfido.authenticator.config import Config
    from vfido.authenticator.device import Authenticator
    from vfido.keystore.sqlite_store import SqliteKeyStore
    from vfido.presence import AutoPresence
    from vfido.transports.runner import HidTransaction

    if not Path(authenticator.__file__).resolve().is_relative_to(Path(root).resolve()):
        raise RuntimeError(f"authenticator imported from {authenticator.__file__}, not {root}")

    data = os.urandom(69)
    key = ec.generate_private_key(ec.SECP256R1())

    def raw() -> None:
        hashlib.sha256(data).digest()
        key.sign(data, ec.ECDSA(hashes.SHA256()))

    cdh = os.urandom(32)
    auth = Authenticator(SqliteKeyStore.ephemeral(), AutoPresence(), Config(attestation="none"))
    sync = SyncHost(auth)
    mc = make_credential_request(cdh)
    ga = get_assertion_request(cdh, credential_id_of(sync.cbor(mc)))
    transaction = HidTransaction(1, 1)
    runner = RunnerHost(auth)
    ops: dict[str, Callable[[], object]] = {
        "handler": lambda: check_ok(auth.handle_cbor(ga, transaction)),
        "sync_ga": lambda: check_ok(sync.cbor(ga)),
        "sync_mc": lambda: check_ok(sync.cbor(mc)),
        "runner_ga": lambda: check_ok(runner.cbor(ga)),
    }
    out: dict[str, float] = {}
    raws = []
    for name, op in ops.items():
        out[name], raw_ms = _paired_ms(op, raw, n)
        out[name + "/raw"] = out[name] / raw_ms
        raws.append(raw_ms)
    runner.close()
    out["raw"] = statistics.median(raws)
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
            ratio = statistics.median(x[k + "/raw"] for x in results)
            paired = statistics.median(x[k] / x[k + "/raw"] for x in results)
            common = ms / raw
            print(
                f"  {LABELS[k]:42s} {ms:7.3f} ms  {ratio:5.1f}x"
                f"  (its paired raw {paired:.4f} ms; over the common raw {common:4.1f}x)"
            )


if __name__ == "__main__":
    main()
