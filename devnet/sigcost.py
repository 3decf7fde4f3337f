"""The signature-cost bound of a payment (docs/protocol.md, "Performance model").

Per payment: the order is verified by the N owners, W votes are signed and checked by the gateway,
and every peer that applies the certificate checks its W votes once:

    cost = N*verify + W*(sign + verify) + A*W*verify

where A is the mean number of peers applying a certificate, |owners(from) U owners(to)|. The bound is
`cores / cost` payments per second. Sign and verify are measured in the same run as the benchmark, in
CPU time of this process (not wall time: on a loaded machine the wall clock also counts the time
other processes held the core, which would make the bound meaningless).
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

from crypto.keys import Purpose, SigningKey, verify


@dataclass(frozen=True)
class SigCost:
    sign_us: float
    verify_us: float


def median_us(fn: Callable[[], object], n: int, repeats: int,
              clock: Callable[[], float] = time.process_time) -> float:
    """Median over `repeats` runs of the time per call of `fn`, by `clock` (CPU time by default)."""
    samples = []
    for _ in range(repeats):
        start = clock()
        for _ in range(n):
            fn()
        samples.append((clock() - start) / n * 1e6)
    return statistics.median(samples)


def measure(repeats: int = 7, n: int = 2000) -> SigCost:
    """Median Ed25519 sign and verify CPU time of an order-sized body, measured now."""
    key = SigningKey.generate()
    network, body = os.urandom(32), os.urandom(120)
    sig = key.sign(Purpose.ORDER, network, body)
    return SigCost(
        sign_us=median_us(lambda: key.sign(Purpose.ORDER, network, body), n, repeats),
        verify_us=median_us(lambda: verify(key.public, sig, Purpose.ORDER, network, body), n, repeats),
    )


@dataclass(frozen=True)
class Bound:
    per_payment_us: float
    payments_per_second: float
    formula: str


def bound(cost: SigCost, *, replication: int, quorum: int, appliers: float, cores: float) -> Bound:
    n, w, s, v = replication, quorum, cost.sign_us, cost.verify_us
    per = n * v + w * (s + v) + appliers * w * v
    formula = (f"{n}*verify + {w}*(sign+verify) + {appliers:.2f}*{w}*verify = {per:.0f} us "
               f"(sign {s:.1f} us, verify {v:.1f} us), on {cores:g} core(s)")
    return Bound(per, cores * 1e6 / per, formula)
