"""Helpers shared by the benchmarks: timing medians and the signature-cost bound."""

from __future__ import annotations

from devnet import sigcost
from devnet.sigcost import SigCost


def measure_signature_cost(repeats: int = 7) -> SigCost:
    """Ed25519 sign and verify of an order-sized body, measured now (same run as the benchmark)."""
    return sigcost.measure(repeats)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]
