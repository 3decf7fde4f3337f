"""Helpers shared by the benchmarks: timing medians and the signature-cost bound."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

from devnet import sigcost
from devnet.sigcost import SigCost


def median_us(fn: Callable[[], object], *, n: int, repeats: int = 7) -> float:
    """Median over `repeats` runs of the mean time of `n` calls, in microseconds."""
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        samples.append((time.perf_counter() - start) / n * 1e6)
    return statistics.median(samples)


def measure_signature_cost(repeats: int = 7) -> SigCost:
    """Ed25519 sign and verify of an order-sized body, measured now (same run as the benchmark)."""
    return sigcost.measure(repeats)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]
