"""What a sans-IO core asks its driver to do. Cores append these to an `Outbox`; the driver
performs them after each call, so the cores never touch sockets, clocks or disks."""

from __future__ import annotations

from dataclasses import dataclass, field

from crypto.messages import PeerRecord
from crypto.schema import Message
from store.db import Batch


@dataclass(frozen=True, slots=True)
class Send:
    dst: bytes
    msg: Message


@dataclass(frozen=True, slots=True)
class Persist:
    """Write `batch` durably, then perform `then` (e.g. send the vote the batch locked)."""

    batch: Batch
    then: tuple[object, ...] = ()


@dataclass(frozen=True, slots=True)
class Dial:
    """Connect to an address whose peer id we do not know yet (a seed)."""

    host: str
    port: int


@dataclass(frozen=True, slots=True)
class Learn:
    """A peer's (verified) record: where to reach it; stored (and redialled after a restart) only
    if `persist` (committee members: outsiders are never written to disk)."""

    record: PeerRecord
    persist: bool


@dataclass(frozen=True, slots=True)
class Committee:
    """The committee is now `ids` (the links class their connections by it)."""

    ids: frozenset[bytes]


@dataclass(frozen=True, slots=True)
class Forget:
    """A member was reaped: drop its connection and address."""

    peer_id: bytes


@dataclass(frozen=True, slots=True)
class Penalize:
    peer_id: bytes
    penalty: int
    reason: str


@dataclass(frozen=True, slots=True)
class Publish:
    """Broadcast `payload` to the whole network (peers in `exclude` already have it)."""

    payload: bytes
    exclude: frozenset[bytes] = frozenset()


@dataclass(frozen=True, slots=True)
class Seen:
    """`payload` reached us another way: a broadcast of it is a duplicate (do not relay it)."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class Notify:
    """An event for the layers above (member state change, delivered broadcast...)."""

    event: object


@dataclass(slots=True)
class Outbox:
    effects: list[object] = field(default_factory=list)

    def send(self, dst: bytes, msg: Message) -> None:
        self.effects.append(Send(dst, msg))

    def add(self, effect: object) -> None:
        self.effects.append(effect)

    def drain(self) -> list[object]:
        out, self.effects = self.effects, []
        return out
