"""Timing helpers: samples, medians, spreads, ratios, and a results table (no assertions)."""

from __future__ import annotations

import gc
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


def sample(fn: Callable[[], object], n: int, *, warmup: int = 10) -> list[float]:
    """``n`` wall-clock durations (seconds) of ``fn()``, after ``warmup`` untimed calls.

    The garbage collector is paused while timing (and run in between) so one
    collection does not land on a random sample.
    """
    for _ in range(warmup):
        fn()
    gc.collect()
    gc.disable()
    try:
        out = []
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
        return out
    finally:
        gc.enable()


def sample_paired(
    fn: Callable[[], object], raw: Callable[[], object], n: int, *, warmup: int = 10
) -> tuple[list[float], list[float]]:
    """``n`` durations of ``fn()`` and ``n`` of ``raw()``, in alternating blocks.

    On a shared machine the speed drifts by tens of per cent within a minute; a ratio of
    two medians taken minutes apart carries that drift, a ratio of samples taken in
    alternating blocks a few milliseconds long does not. Within a block the operation
    runs back to back, as in an unpaired loop: the first call of each block (whose caches
    the other operation has just evicted) is run but not counted, so ``raw`` is measured
    with warm caches, exactly as it would be alone.
    """
    for _ in range(warmup):
        fn()
        raw()
    gc.collect()
    gc.disable()
    try:
        out: list[float] = []
        base: list[float] = []
        clock = time.perf_counter
        while len(out) < n:
            for op, samples in ((raw, base), (fn, out)):
                op()  # the block's first call: caches refilled, not counted
                for _ in range(min(PAIR_BLOCK, n - len(out))):
                    t0 = clock()
                    op()
                    samples.append(clock() - t0)
        return out, base
    finally:
        gc.enable()


#: Counted calls per block in :func:`sample_paired`.
PAIR_BLOCK = 20


@dataclass
class Summary:
    name: str
    n: int
    median_ms: float
    p10_ms: float
    p90_ms: float
    ratio: float | None = None  # median / the raw crypto median of the same run
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def summarize(
    name: str, samples: list[float], base: float | None = None, note: str = ""
) -> Summary:
    med = statistics.median(samples)
    if len(samples) >= 10:
        q = statistics.quantiles(samples, n=10)
        p10, p90 = q[0], q[-1]
    else:
        p10, p90 = min(samples), max(samples)
    return Summary(
        name,
        len(samples),
        med * 1e3,
        p10 * 1e3,
        p90 * 1e3,
        (med / base) if base else None,
        note,
    )


class Results:
    """Collects summaries and free-form figures; prints as it goes; dumps JSON."""

    def __init__(self) -> None:
        self.rows: list[Summary] = []
        self.figures: dict[str, Any] = {}

    def time(
        self,
        name: str,
        fn: Callable[[], object],
        n: int,
        *,
        base: float | Callable[[], object] | None = None,
        warmup: int = 10,
        note: str = "",
    ) -> Summary:
        """Time ``fn``. ``base``: the raw operation's median (seconds) for the ratio, or
        the raw operation itself, which is then timed alternately with ``fn``
        (:func:`sample_paired`) and the ratio is of the two medians of this run."""
        if callable(base):
            samples, raw = sample_paired(fn, base, n, warmup=warmup)
            paired_raw = statistics.median(raw)
            note = f"{note}; " if note else ""
            row = summarize(
                name, samples, paired_raw, f"{note}paired raw {paired_raw * 1e3:.4f} ms"
            )
            row.extra["paired_raw_ms"] = paired_raw * 1e3
            return self.add(row)
        return self.add(summarize(name, sample(fn, n, warmup=warmup), base, note))

    def add(self, row: Summary) -> Summary:
        self.rows.append(row)
        ratio = f"{row.ratio:7.1f}x" if row.ratio is not None else " " * 8
        print(
            f"  {row.name:<58} {row.median_ms:9.3f} ms  "
            f"p10-p90 {row.p10_ms:8.3f}-{row.p90_ms:8.3f}  {ratio}  {row.note}",
            flush=True,
        )
        return row

    def figure(self, name: str, value: Any, unit: str = "") -> None:
        self.figures[name] = value
        shown = f"{value:.3f}" if isinstance(value, float) else str(value)
        print(f"  {name:<58} {shown} {unit}", flush=True)

    def dump(self, path: Path) -> None:
        data = {"rows": [asdict(r) for r in self.rows], "figures": self.figures}
        path.write_text(json.dumps(data, indent=1) + "\n")


def section(title: str) -> None:
    print(f"\n== {title}", flush=True)
