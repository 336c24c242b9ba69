"""#16 benchmark in the guest (opt-in): `vfido run --transport uhid` over /dev/hidrawN.

    VFIDO_VM_CHECKS=bench_hidraw .venv/bin/python -m pytest tests/vm/test_bench_vm.py -m vm -s

Skipped unless ``VFIDO_VM_CHECKS`` names ``bench_hidraw`` (the default vm run boots the guest
for the functional checks and must not pay for a benchmark). It asserts that the benchmark
ran and produced its rows, never a timing: the ratios are printed and kept in the guest's
results.json for bench/README.md.
"""

from __future__ import annotations

import json
import os

import pytest
from vmharness import TEST_TIMEOUT, GuestResults

pytestmark = [
    pytest.mark.vm,
    pytest.mark.slow,
    pytest.mark.timeout(TEST_TIMEOUT),
    pytest.mark.skipif(
        "bench_hidraw" not in os.environ.get("VFIDO_VM_CHECKS", "").split(","),
        reason="opt-in benchmark: VFIDO_VM_CHECKS=bench_hidraw",
    ),
]


def test_bench_hidraw_ratios(vm: GuestResults) -> None:
    data = vm.require_ok("bench_hidraw")
    names = [row["name"] for row in data["rows"]]
    assert names == [
        "getAssertion ES256 (ephemeral)",
        "getAssertion ES256 (ephemeral) vs sign after a wait",
        "makeCredential ES256 packed (ephemeral)",
    ]
    for row in data["rows"]:
        assert row["blocks"] > 0 and row["raw_ms"] > 0 and row["rtt_ms"] > 0
    print(json.dumps(data, indent=1))
