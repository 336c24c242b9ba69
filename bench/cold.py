"""What one request costs warm, and what it costs after a pause (issue #16, a breakdown).

    python3 bench/cold.py [--n 100] [--pause-ms 50]
    VFIDO_VM_CHECKS=bench_cold .venv/bin/python -m pytest tests/vm/test_bench_vm.py -m vm -s -k cold

In a browser ceremony (150-250 ms each in bench_chromium's guest) the key's requests
are a few milliseconds of it: each one starts after the key has waited, and by then the
caches a request needs may hold other work. The benchmarks that loop requests back to
back (entry.py, hidraw.py) measure a key whose caches stay warm. This script times the
same work both ways, in-process: the authenticator of `vfido run --ephemeral --presence
auto` (built by vfido's own wiring, ``vfido.key.build_key``; its transport is never started)
answering getInfo, makeCredential (packed) and a repeated getAssertion, the same
getAssertion answered by ``bench/minimal.py`` (only what every key computes for it), and the raw
operations inside them (P-256 keygen, ECDSA sign, the CBOR decoding of a makeCredential
request). Each is timed three ways:

* ``warm``: the third of three calls in a row (no pause), as in a loop;
* ``after sleep``: after ``time.sleep(pause)``, as a key waiting for the next request;
* ``after spin``: after ``pause`` of a Python busy loop on this thread (no sleep): if this
  is about as slow as ``after sleep``, it is not the wait itself (a sleeping CPU, a
  wake-up) but what runs meanwhile, even this thread's own loop, displacing what the call
  needs from the caches, TLBs and predictors. (It does not tell this thread's loop from
  other work on the machine.)

Medians of ``n`` calls with p10-p90, in microseconds, and each pause's ratio to ``warm``.
A breakdown for reading the from-outside rows, not a target.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from cryptography.hazmat.primitives import hashes  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from harness import credential_id_of, get_assertion_request, make_credential_request  # noqa: E402
from minimal import minimal_get_assertion  # noqa: E402
from stats import summarize  # noqa: E402

from vfido.authenticator import cbor  # noqa: E402
from vfido.cli import build_parser  # noqa: E402
from vfido.cli.common import open_store  # noqa: E402
from vfido.cli.run import config, presence_broker  # noqa: E402
from vfido.key import TransportOptions, build_key  # noqa: E402
from vfido.testing import faults  # noqa: E402
from vfido.transports.runner import HidTransaction  # noqa: E402

WAYS = ("warm", "after sleep", "after spin")


def vfido_run_authenticator() -> Any:
    """The authenticator `vfido run --ephemeral --presence auto` builds (packed attestation):
    its keystore wrapper, presence broker and config, assembled by ``build_key``."""
    args = build_parser().parse_args(["run", "--ephemeral", "--presence", "auto"])
    store = faults.wrap(open_store(args))
    return build_key(store, presence_broker(args), config(args), TransportOptions()).device


def _spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def timed(fn: Callable[[], object], n: int, pause: float) -> dict[str, dict[str, float]]:
    """``fn`` timed ``n`` times each way, the ways interleaved call by call."""
    samples: dict[str, list[float]] = {way: [] for way in WAYS}
    for _ in range(n):
        for way in WAYS:
            if way == "warm":
                fn()
                fn()
            elif way == "after sleep":
                time.sleep(pause)
            else:
                _spin(pause)
            start = time.perf_counter()
            fn()
            samples[way].append(time.perf_counter() - start)
    out = {}
    for way, values in samples.items():
        row = summarize(way, values)
        out[way] = {"us": row.median_ms * 1e3, "p10": row.p10_ms * 1e3, "p90": row.p90_ms * 1e3}
    return out


def run(n: int = 100, pause: float = 0.05) -> dict[str, Any]:
    device = vfido_run_authenticator()
    context = HidTransaction(1, 1)
    make = make_credential_request(os.urandom(32))
    client_data_hash = os.urandom(32)
    credential = credential_id_of(
        device.handle_cbor(make_credential_request(client_data_hash), context)
    )
    get = get_assertion_request(client_data_hash, credential)
    key = ec.generate_private_key(ec.SECP256R1())
    message = os.urandom(69)
    work: dict[str, Callable[[], object]] = {
        "getInfo": lambda: device.handle_cbor(b"\x04", context),
        "makeCredential ES256 packed": lambda: device.handle_cbor(make, context),
        "getAssertion ES256 (repeated)": lambda: device.handle_cbor(get, context),
        "getAssertion, the minimal answer (minimal.py)": lambda: minimal_get_assertion(get),
        "raw: P-256 keygen": lambda: ec.generate_private_key(ec.SECP256R1()),
        "raw: ECDSA P-256 sign": lambda: key.sign(message, ec.ECDSA(hashes.SHA256())),
        "raw: CBOR decode of the makeCredential": lambda: cbor.decode(make[1:]),
    }
    for fn in work.values():  # imports, first-use caches
        fn()
    result: dict[str, Any] = {"n": n, "pause_ms": pause * 1e3, "load": os.getloadavg()}
    rows = []
    for name, fn in work.items():
        row: dict[str, Any] = {"name": name, **timed(fn, n, pause)}
        for way in WAYS[1:]:
            row[f"{way} / warm"] = row[way]["us"] / row["warm"]["us"]
        rows.append(row)
        print(
            f"{name:<42} warm {row['warm']['us']:8.1f} us, after sleep "
            f"{row['after sleep']['us']:8.1f} ({row['after sleep / warm']:.1f}x), after spin "
            f"{row['after spin']['us']:8.1f} ({row['after spin / warm']:.1f}x)",
            flush=True,
        )
    result["rows"] = rows
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--pause-ms", type=float, default=50.0)
    parser.add_argument("--json", type=Path)
    options = parser.parse_args()
    data = run(options.n, options.pause_ms / 1e3)
    if options.json:
        options.json.write_text(json.dumps(data, indent=1))
