"""The garbage-collector policy of a long-running peer: pauses that do not grow with its history.

Nearly everything a peer allocates dies by reference counting; the cyclic collector's full
collections mostly rescan what the peer keeps (finished payments it still answers for, accounts,
caches), so their pause grew with every payment the peer had seen: 5,000 finished payments kept
cost a 126 ms full collection, 20,000 cost 870 ms on the 2-core benchmark machine. That pause, hit
by a few payments per run, was what made the latency tail climb run after run on the same devnet.

So: collect and freeze once after start-up (Instagram's trick), collect the young generation less
often, and after every full collection freeze what survived it. The next full collection then only
scans what was allocated since, so its pause stays the size of one interval's survivors, however
long the peer has run.

The price: a cycle whose objects were alive at a freeze is never reclaimed by the cycle collector
(acyclic garbage, nearly all of it, is still freed by reference counting at once). The peer's kept
data (ledger, finished payments, caches) holds no cycles; the trio machinery of connections alive
at a freeze may, which is a few kilobytes per freeze, and freezes happen only at full collections.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 20_000  # allocations between young collections (the default 700 ran constantly)


def install() -> None:
    """Apply the policy to this process (the peer daemon calls it once it has started)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, 20, 50)
    if _freeze_survivors not in gc.callbacks:
        gc.callbacks.append(_freeze_survivors)


def _freeze_survivors(phase: str, info: dict[str, int]) -> None:
    if phase == "stop" and info["generation"] == 2:
        gc.freeze()
