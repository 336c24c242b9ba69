"""#16 benchmarks in the guest (opt-in): `vfido run --transport uhid` over /dev/hidrawN,
headless Chromium create()/get() through it vs the floor key (bench/floorkey.py), and the
key's requests warm and after a pause (bench/cold.py).

    VFIDO_VM_CHECKS=bench_hidraw .venv/bin/python -m pytest tests/vm/test_bench_vm.py -m vm -s
    VFIDO_VM_CHECKS=bench_cold .venv/bin/python -m pytest tests/vm/test_bench_vm.py -m vm -s -k cold
    VFIDO_VM_CHECKS=bench_chromium .venv/bin/python -m pytest tests/vm/test_bench_vm.py \
        -m vm -s -k chromium

Each test is skipped unless ``VFIDO_VM_CHECKS`` names its check (the default vm run boots the
guest for the functional checks and must not pay for a benchmark). They assert that the
benchmark ran and produced its rows, never a timing: the ratios are printed and kept in the
guest's results.json for bench/README.md.
"""

from __future__ import annotations

import json
import os

import pytest
from vmharness import TEST_TIMEOUT, GuestResults

pytestmark = [pytest.mark.vm, pytest.mark.slow, pytest.mark.timeout(TEST_TIMEOUT)]


def opt_in(check: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(
        check not in os.environ.get("VFIDO_VM_CHECKS", "").split(","),
        reason=f"opt-in benchmark: VFIDO_VM_CHECKS={check}",
    )


@opt_in("bench_hidraw")
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


@opt_in("bench_cold")
def test_bench_cold_rows(vm: GuestResults) -> None:
    """bench/cold.py ran in the guest: every row timed warm, after a sleep and after a spin
    (printed; no timing asserted)."""
    data = vm.require_ok("bench_cold")
    assert [row["name"] for row in data["rows"]][:3] == [
        "getInfo",
        "makeCredential ES256 packed",
        "getAssertion ES256 (repeated)",
    ]
    for row in data["rows"]:
        assert all(row[way]["us"] > 0 for way in ("warm", "after sleep", "after spin"))
    print(json.dumps(data, indent=1))


@opt_in("bench_chromium")
def test_bench_chromium_ratios(vm: GuestResults) -> None:
    """The rows exist, every block served each ceremony the way bench/chromium.py checks
    (CTAP2 only, counts = N), and the table is printed; no timing is asserted."""
    data = vm.require_ok("bench_chromium")
    keys, names = set(data["keys"]), [row["name"] for row in data["rows"]]
    if data.get("uv"):  # `bench_uv`: only keys that verify a user, every ceremony verified
        assert keys <= {"vfido", "vfido_untraced", "vfido_base", "vfido_timed", "vfido_niced"}
        for block in data["blocks"]:
            assert block["served"]["user_verified"] == 2 * data["n"] + 2  # the warm-ups too
    else:
        # A floor and at least one vfido (`bench_keys:` may leave the traced one out, or run
        # floor_sized without the minimal floor).
        assert keys & {"floor", "floor_sized", "floor_sized_niced"}
    assert keys & {
        "vfido",
        "vfido_untraced",
        "vfido_cached",
        "vfido_slept",
        "vfido_computed",
        "vfido_timed",
        "vfido_niced",
    }
    if "floor" in keys and "vfido" in keys:
        assert names[:2] == ["create", "get"]
    for other in keys - {"floor", "vfido"} if "floor" in keys else ():
        assert {f"create ({other})", f"get ({other})"} <= set(names)  # against the floor
    if {"floor_sized_niced", "vfido_niced"} <= keys:  # both keys at the same priority
        assert {
            "create vfido_niced / floor_sized_niced",
            "get vfido_niced / floor_sized_niced",
        } <= set(names)
    full = {"vfido_untraced", "vfido_slept", "vfido_computed", "vfido_niced"}
    for other in keys & full if "vfido_cached" in keys else ():
        assert {f"create {other} / vfido_cached", f"get {other} / vfido_cached"} <= set(names)
    if "vfido_timed" in keys:  # the handler's time per command, under the browser
        assert {"getInfo", "makeCredential", "getAssertion"} <= set(data["handler_ms"])
        assert all(row["calls"] > 0 for row in data["handler_ms"].values())
    if "vfido_base" in keys:  # after / before in the same rounds
        assert {"create vfido_untraced / vfido_base", "get vfido_untraced / vfido_base"} <= set(
            names
        )
        assert data["base_import"]
    blocks = data["blocks"]
    assert {b["key"] for b in blocks} == keys
    assert len(blocks) == len(data["keys"]) * data["rounds"]
    for block in blocks:
        assert [len(block["ms"][kind]) for kind in ("create", "get")] == [data["n"]] * 2
        assert block["served"]["u2f"] == 0
        # The CPU times around the timed ceremonies: the machine's, the key's, the browser's.
        cpu = block["cpu_ms"]
        assert set(cpu) == {"wall", "busy", "idle", "key", "browser", "other", "key_waited"}
        assert cpu["wall"] > 0 and cpu["browser"] > 0 and cpu["key"] > 0
        # Both CPUs' time adds up to the wall time (the /proc/stat line read right).
        assert 0.8 * data["cpus"] < (cpu["busy"] + cpu["idle"]) / cpu["wall"] < 1.2 * data["cpus"]
        # The niced keys ran at their priority, the others at the browser's.
        assert block["priority"]["nice"] == (-10 if block["key"].endswith("_niced") else 0)
    assert set(data["cpu_ms"]) == keys
    if "floor_sized" in data["keys"]:  # `bench_keys:floor+floor_sized+vfido`
        assert "create (floor_sized)" in names or "floor" not in keys
        for key in keys - {"floor", "floor_sized", "vfido_base"}:
            assert f"create {key} / floor_sized" in names
    for row in data["rows"]:
        assert row["floor_ms"] > 0 and row["vfido_ms"] > 0 and len(row["round_ratios"]) > 0
        key, reference = row["key"], row["reference"]
        print(
            f"{row['name']}: {reference} {row['floor_ms']:.1f} ms, {key} {row['vfido_ms']:.1f} "
            f"ms, {key}/{reference} {row['ratio']:.3f} ({row['ratio_p10']:.3f}-"
            f"{row['ratio_p90']:.3f}) rounds {[round(r, 3) for r in row['round_ratios']]}"
        )
    print(json.dumps({k: v for k, v in data.items() if k != "blocks"}, indent=1))
