"""What `devnet chaos` saw, summed up: availability and latency per nemesis window, and by how
many owners of a payment's accounts were lost when it started. Pure (ops in, tables out)."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

PAY, OVERDRAW, REPLAY = "pay", "overdraw", "replay"
CERTIFIED, TIMEOUT = "certified", "timeout"
WINDOW_ORDER = ("healthy", "kill", "pause", "partition", "slow")


@dataclass
class Op:
    """One attempt of a client, bounded by the op timeout (a timed-out payment is tried again
    as a new op: the same signed order)."""

    client: int
    kind: str  # pay | overdraw | replay (the same signed order as an acknowledged payment)
    start: float  # seconds since the run started
    # The fault window the op overlapped (healthy: none at all while it was in flight), and how many
    # owners of the payer and the payee that window killed, paused or cut off.
    window: str
    payer_lost: int
    payee_lost: int
    order_id: str
    outcome: str = TIMEOUT  # certified | timeout | refused:<code> | conflict
    certified_s: float | None = None  # seconds from start to certified / settled
    settled_s: float | None = None
    attempts: int = 0
    retry: bool = False  # the same order as the client's previous op (which timed out)


def _pct(part: int, whole: int) -> float | None:
    return None if not whole else 100.0 * part / whole


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return 1000 * ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def _row(ops: list[Op]) -> dict:
    pays = [o for o in ops if o.kind == PAY]
    certified = [o.certified_s for o in pays if o.certified_s is not None]
    settled = [o.settled_s for o in pays if o.settled_s is not None]
    overdraws = [o for o in ops if o.kind == OVERDRAW]
    return {
        "payments": len(pays), "certified": len(certified), "settled": len(settled),
        "certified_pct": _pct(len(certified), len(pays)), "settled_pct": _pct(len(settled), len(pays)),
        "timeouts": sum(o.outcome == TIMEOUT for o in pays),
        "refused": sum(o.outcome.startswith("refused") for o in pays),
        "certified_ms": {"p50": _quantile(certified, 0.5), "p99": _quantile(certified, 0.99)},
        "settled_ms": {"p50": _quantile(settled, 0.5), "p99": _quantile(settled, 0.99)},
        "overdraws": len(overdraws), "overdraws_refused": sum(o.outcome == "refused:insufficient_funds" for o in overdraws),
        "overdraws_certified": sum(o.outcome == CERTIFIED for o in overdraws),
    }


def by_window(ops: list[Op]) -> dict[str, dict]:
    groups: dict[str, list[Op]] = defaultdict(list)
    for op in ops:
        groups[op.window].append(op)
    return {w: _row(groups[w]) for w in WINDOW_ORDER if w in groups}


def by_lost_owners(ops: list[Op]) -> dict[str, dict]:
    """Keyed "payer k / payee j": how many of each side's owners were lost when the op started."""
    groups: dict[tuple[int, int], list[Op]] = defaultdict(list)
    for op in ops:
        if op.kind == PAY:
            groups[(op.payer_lost, op.payee_lost)].append(op)
    return {f"payer {a} / payee {b}": _row(groups[(a, b)]) for a, b in sorted(groups)}


def replays(ops: list[Op]) -> dict:
    done = [o for o in ops if o.kind == REPLAY]
    return {"replays": len(done), "certified": sum(o.outcome == CERTIFIED for o in done),
            "other": sorted({o.outcome for o in done if o.outcome != CERTIFIED})}


def fmt(value: float | None, unit: str = "") -> str:
    return "-" if value is None else f"{value:.1f}{unit}"
