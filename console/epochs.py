"""Committee changes (epochs): the one place where the console learns whether a network has them.

Epochs are being built separately. Until the peers' API reports an epoch (an `epoch` field in
`/v1/status`), the console shows "not available on this network" and offers no epoch controls: it
does not guess at an API that does not exist yet. When the epoch API lands, this module reads it,
and the Controls page's separate "Committee changes" panel gets its propose/approve forms.
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
