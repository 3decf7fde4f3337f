"""Epidemic broadcast with pull repair, as a sans-IO state machine.

- A broadcast's id is a domain-separated hash of its payload, so ids cannot be forged for other
  payloads and a message is deduplicated before any validation work.
- On first receipt a message is checked by the `validate` hook (the settlement layer verifies
  certificates there); only valid messages are delivered and relayed, eagerly, to `fanout` random
  live peers (about ln(n)+1) other than the one it came from. Invalid ones penalise the sender.
- A bounded seen-cache with expiry stops re-processing; a bounded store of recent messages serves
  pull repair: every `repair_interval` we advertise short ids of recent messages to one random peer
  (`IHave`), which asks for the ones it lacks (`IWant`). A message missed during a partition thus
  still arrives once the partition heals.
- `peers` are the committee members believed alive: they get the whole fanout. Observers (the
  bounded set of outsiders membership holds) get `observer_fanout` extra copies per relay and one
  `IHave` per repair round, so an observer reads every certificate without ever taking a committee
  member's place. An `IWant` from a peer outside the committee is served for at most
  `untrusted_want_max` ids, so a small request cannot make us send megabytes.
"""

from __future__ import annotations

import enum
import math
import random
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from crypto.keys import Purpose, digest
from crypto.schema import Message
from gossip.effects import Notify, Outbox, Penalize
from gossip.wire import (
    MAX_BROADCAST_PAYLOAD,
    MAX_DIGEST_IDS,
    MAX_SKIP,
    SHORT_ID,
    IHave,
    IWant,
    Push,
)


class Verdict(enum.Enum):
    ACCEPT = "accept"  # deliver and relay
    IGNORE = "ignore"  # valid but not for relaying (stale, not ours to care about); no penalty
    REJECT = "reject"  # invalid: the sender relayed garbage


@dataclass(frozen=True)
class BroadcastConfig:
    fanout: int | None = None  # None: max(3, ceil(ln n) + 1)
    seen_capacity: int = 200_000
    seen_ttl: float = 900.0
    keep_capacity: int = 8192
    keep_window: float = 300.0
    repair_interval: float = 1.0
    repair_delay: float = 0.5  # advertise only messages old enough not to be still in flight
    repair_max_ids: int = 512
    observer_fanout: int = 1  # extra copies of each relayed broadcast for outsiders we hold
    untrusted_want_max: int = 16  # ids served per IWant from outside the committee


@dataclass(frozen=True, slots=True)
class Delivered:
    """Notification: a new, valid broadcast arrived."""

    id: bytes
    payload: bytes
    hops: int
    src: bytes


def message_id(network_id: bytes, payload: bytes) -> bytes:
    return digest(Purpose.MESSAGE_ID, network_id, payload)


class Broadcast:
    def __init__(
        self,
        network_id: bytes,
        peers: Callable[[], list[bytes]],
        me: bytes = b"",
        *,
        observers: Callable[[], list[bytes]] | None = None,
        trusted: Callable[[bytes], bool] | None = None,
        validate: Callable[[bytes], Verdict] | None = None,
        config: BroadcastConfig | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.network_id = network_id
        self.peers = peers
        self.observers = observers or list
        self.trusted = trusted or (lambda peer: True)
        self.me = me
        self.validate = validate or (lambda payload: Verdict.ACCEPT)
        self.config = config or BroadcastConfig()
        self.rng = rng or random.Random()
        self.out = Outbox()
        self._seen: OrderedDict[bytes, float] = OrderedDict()  # id -> expiry
        self._seen_short: set[bytes] = set()
        self._kept: OrderedDict[bytes, tuple[bytes, float]] = OrderedDict()  # short id -> (payload, time)
        self._next_repair = math.inf
        self.counters = {"published": 0, "delivered": 0, "duplicates": 0, "rejected": 0,
                         "ignored": 0, "relayed": 0, "repaired": 0}

    def start(self, now: float) -> None:
        self._next_repair = now + self.config.repair_interval * self.rng.random()

    def fanout(self) -> int:
        if self.config.fanout is not None:
            return self.config.fanout
        n = len(self.peers()) + 1
        return max(3, math.ceil(math.log(n)) + 1)

    # ---- publishing and receiving --------------------------------------------------------
    def publish(self, payload: bytes, now: float, *, exclude: frozenset[bytes] = frozenset()) -> bytes:
        """Originate a broadcast (already valid by construction); returns its id."""
        if len(payload) > MAX_BROADCAST_PAYLOAD:
            raise ValueError(f"broadcast payload of {len(payload)} bytes exceeds {MAX_BROADCAST_PAYLOAD}")
        mid = message_id(self.network_id, payload)
        if self._is_seen(mid, now):
            return mid
        self._remember(mid, payload, now)
        self.counters["published"] += 1
        self._relay(mid, 1, payload, frozenset(p[:SHORT_ID] for p in exclude))
        return mid

    def mark_seen(self, payload: bytes, now: float) -> None:
        """The payload arrived outside the broadcast (e.g. delivered directly): treat a Push of it
        as a duplicate, so the flood stops here."""
        mid = message_id(self.network_id, payload)
        if not self._is_seen(mid, now):
            self._remember(mid, payload, now)

    def handle(self, src: bytes, msg: Message, now: float) -> None:
        kind = type(msg)
        if kind is Push:
            self._on_push(src, msg, now)
        elif kind is IHave:
            wants = tuple(sid for sid in msg.ids if sid not in self._seen_short)
            if wants:
                self.out.send(src, IWant(wants))
        elif kind is IWant:
            ids = msg.ids if self.trusted(src) else msg.ids[:self.config.untrusted_want_max]
            for sid in ids:
                kept = self._kept.get(sid)
                if kept is not None:
                    payload = kept[0]
                    self.counters["repaired"] += 1
                    self.out.send(src, Push(message_id(self.network_id, payload), 1, (), payload))
        else:
            raise TypeError(f"broadcast does not handle {kind.__name__}")

    def _on_push(self, src: bytes, msg: Push, now: float) -> None:
        if self._is_seen(msg.id, now):
            self.counters["duplicates"] += 1
            return
        if message_id(self.network_id, msg.payload) != msg.id:
            self.counters["rejected"] += 1
            self.out.add(Penalize(src, 10, "broadcast id does not match its payload"))
            return
        verdict = self.validate(msg.payload)
        self._mark_seen(msg.id, now)
        if verdict is Verdict.REJECT:
            self.counters["rejected"] += 1
            self.out.add(Penalize(src, 10, "relayed an invalid broadcast"))
            return
        if verdict is Verdict.IGNORE:
            self.counters["ignored"] += 1
            return
        self._keep(msg.id, msg.payload, now)
        self.counters["delivered"] += 1
        self.out.add(Notify(Delivered(msg.id, msg.payload, msg.hops, src)))
        self._relay(msg.id, min(255, msg.hops + 1), msg.payload, frozenset((*msg.skip, src[:SHORT_ID])))

    def _relay(self, mid: bytes, hops: int, payload: bytes, skip: frozenset[bytes]) -> None:
        candidates = [p for p in self.peers() if p[:SHORT_ID] not in skip]
        k = self.fanout()
        targets = candidates if len(candidates) <= k else self.rng.sample(candidates, k)
        # Tell the next hops who has it now (us, them, and who had it before) so they skip those.
        told = [self.me[:SHORT_ID]] if self.me else []
        told += [t[:SHORT_ID] for t in targets]
        told += [s for s in skip if s not in told]
        push = Push(mid, hops, tuple(told[:MAX_SKIP]), payload)
        for target in targets:
            self.out.send(target, push)
        self.counters["relayed"] += len(targets)
        observers = [o for o in self.observers() if o[:SHORT_ID] not in skip]
        for target in self.rng.sample(observers, min(len(observers), self.config.observer_fanout)):
            self.out.send(target, push)
            self.counters["relayed"] += 1

    # ---- timers ------------------------------------------------------------------------------
    def next_deadline(self) -> float:
        return self._next_repair

    def tick(self, now: float) -> None:
        if now < self._next_repair:
            return
        self._next_repair = now + self.config.repair_interval
        self._expire(now)
        cutoff = now - self.config.repair_delay
        ids = []
        for sid, (_, at) in reversed(self._kept.items()):
            if at <= cutoff:
                ids.append(sid)
                if len(ids) >= min(self.config.repair_max_ids, MAX_DIGEST_IDS):
                    break
        if not ids:
            return
        for group in (self.peers(), self.observers()):
            if group:
                self.out.send(self.rng.choice(group), IHave(tuple(ids)))

    # ---- bounded caches ------------------------------------------------------------------------
    def has_seen(self, mid: bytes) -> bool:
        return mid in self._seen

    def _is_seen(self, mid: bytes, now: float) -> bool:
        expiry = self._seen.get(mid)
        return expiry is not None and expiry > now

    def _mark_seen(self, mid: bytes, now: float) -> None:
        self._seen[mid] = now + self.config.seen_ttl
        self._seen.move_to_end(mid)
        self._seen_short.add(mid[:SHORT_ID])
        while len(self._seen) > self.config.seen_capacity:
            old, _ = self._seen.popitem(last=False)
            self._seen_short.discard(old[:SHORT_ID])

    def _keep(self, mid: bytes, payload: bytes, now: float) -> None:
        self._kept[mid[:SHORT_ID]] = (payload, now)
        while len(self._kept) > self.config.keep_capacity:
            self._kept.popitem(last=False)

    def _remember(self, mid: bytes, payload: bytes, now: float) -> None:
        self._mark_seen(mid, now)
        self._keep(mid, payload, now)

    def _expire(self, now: float) -> None:
        while self._seen:
            mid, expiry = next(iter(self._seen.items()))
            if expiry > now:
                break
            self._seen.popitem(last=False)
            self._seen_short.discard(mid[:SHORT_ID])
        horizon = now - self.config.keep_window
        while self._kept:
            _, (_, at) = next(iter(self._kept.items()))
            if at > horizon:
                break
            self._kept.popitem(last=False)

    @property
    def seen_size(self) -> int:
        return len(self._seen)
