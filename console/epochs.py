"""Committee changes (epochs): the one place where the console learns whether a network has them.

Peers report their epoch in `/v1/status` (`epoch`); a peer of an older version that reports none
is shown as "not available on this network". Committee changes are proposed and approved by each
operator on their own peer (`peer epoch`, or `devnet add-peer`/`remove-peer`); the console shows
where each peer stands and verifies certificates of every epoch through the chain of epochs.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from console.peerapi import Status

NOT_AVAILABLE = "not available on this network (the peers' API reports no epochs)"


def describe(status: Status | None) -> str | None:
    """One peer's epoch as text: `genesis` while the network has no epochs."""
    if status is None:
        return None
    return "genesis" if status.epoch is None else str(status.epoch)


def network_epoch(statuses: Iterable[Status]) -> dict[str, Any]:
    epochs = {str(s.epoch) for s in statuses if s.epoch is not None}
    if not epochs:
        return {"available": False, "text": "genesis committee", "note": NOT_AVAILABLE}
    return {"available": True, "text": ", ".join(sorted(epochs)),
            "note": "peers report different epochs" if len(epochs) > 1 else ""}
