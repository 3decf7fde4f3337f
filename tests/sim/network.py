"""In-memory links with latency, loss, duplication, reordering and partitions, all from one seed.

A single delivery task owns a time-ordered heap of messages in flight and hands each to its
destination's inbound channel when its (simulated) time comes. Random per-message latency gives
reordering; duplication schedules a second copy with its own latency. Partitions and one-way
blocks drop messages at send time. Every random choice comes from the network's seeded RNG.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from gossip.links import ConnectError

INBOUND_CAPACITY = 100_000


async def wait_for(predicate: Callable[[], bool], *, timeout: float, step: float) -> float | None:
    """Simulated seconds until `predicate()` holds, or None if it did not within `timeout`."""
    start = trio.current_time()
    while trio.current_time() - start <= timeout:
        if predicate():
            return trio.current_time() - start
        await trio.sleep(step)
    return None


@dataclass
class LinkProfile:
    latency: tuple[float, float] = (0.001, 0.010)
    loss: float = 0.0
    duplicate: float = 0.0


@dataclass
class NetStats:
    sent: int = 0
    delivered: int = 0
    lost: int = 0
    blocked: int = 0
    duplicated: int = 0
    overflow: int = 0
    bytes: int = 0
    by_node_sent: Counter[bytes] = field(default_factory=Counter)


class SimLinks:
    """One peer's view of the simulated network (implements gossip.links.Links)."""

    def __init__(self, net: SimNetwork, peer_id: bytes) -> None:
        self.net = net
        self.peer_id = peer_id
        self._send, self._recv = trio.open_memory_channel[tuple[bytes, bytes]](INBOUND_CAPACITY)
        self.penalties: list[tuple[bytes, int, str]] = []
        self.addresses: dict[bytes, tuple[str, int]] = {}
        self.committee: frozenset[bytes] = frozenset()

    @property
    def inbound(self) -> trio.MemoryReceiveChannel[tuple[bytes, bytes]]:
        return self._recv

    def send(self, peer_id: bytes, payload: bytes) -> bool:
        return self.net.transmit(self.peer_id, peer_id, payload)

    def set_address(self, peer_id: bytes, host: str, port: int) -> None:
        self.addresses[peer_id] = (host, port)

    def forget(self, peer_id: bytes) -> None:
        self.addresses.pop(peer_id, None)

    def set_committee(self, ids: frozenset[bytes]) -> None:
        self.committee = ids

    def penalize(self, peer_id: bytes, penalty: int, reason: str) -> None:
        self.penalties.append((peer_id, penalty, reason))

    def is_banned(self, peer_id: bytes) -> bool:
        return False  # the simulator records penalties and never bans

    async def dial(self, host: str, port: int) -> bytes:
        target = self.net.addresses.get((host, port))
        await trio.sleep(2 * self.net.profile.latency[1])
        if target is None or target not in self.net.links or not self.net.reachable(self.peer_id, target) \
                or not self.net.reachable(target, self.peer_id):
            raise ConnectError(f"{host}:{port} unreachable")
        return target

    def push(self, src: bytes, payload: bytes) -> bool:
        try:
            self._send.send_nowait((src, payload))
        except trio.WouldBlock:
            return False
        return True


class SimNetwork:
    def __init__(self, seed: int, profile: LinkProfile | None = None) -> None:
        self.rng = random.Random(seed)
        self.profile = profile or LinkProfile()
        self.links: dict[bytes, SimLinks] = {}
        self.addresses: dict[tuple[str, int], bytes] = {}
        self.link_profiles: dict[tuple[bytes, bytes], LinkProfile] = {}
        self.blocked: set[tuple[bytes, bytes]] = set()
        self.stats = NetStats()
        self._heap: list[tuple[float, int, bytes, bytes, bytes]] = []
        self._counter = itertools.count()
        self._wake = trio.Event()

    # ---- topology ----------------------------------------------------------------------------
    def attach(self, peer_id: bytes, host: str, port: int) -> SimLinks:
        links = SimLinks(self, peer_id)
        self.links[peer_id] = links
        self.addresses[(host, port)] = peer_id
        return links

    def detach(self, peer_id: bytes) -> None:
        """The peer crashed: messages to it vanish until it attaches again."""
        self.links.pop(peer_id, None)

    def partition(self, *groups: set[bytes]) -> None:
        """Block every message between different groups, both ways."""
        for a, b in itertools.permutations(range(len(groups)), 2):
            for x in groups[a]:
                for y in groups[b]:
                    self.blocked.add((x, y))

    def block(self, src: bytes, dst: bytes) -> None:
        """One-way: `src` can no longer reach `dst`."""
        self.blocked.add((src, dst))

    def heal(self) -> None:
        self.blocked.clear()

    def set_link(self, src: bytes, dst: bytes, profile: LinkProfile) -> None:
        self.link_profiles[(src, dst)] = profile

    def reachable(self, src: bytes, dst: bytes) -> bool:
        return (src, dst) not in self.blocked

    # ---- traffic -----------------------------------------------------------------------------
    def transmit(self, src: bytes, dst: bytes, payload: bytes) -> bool:
        self.stats.sent += 1
        self.stats.bytes += len(payload)
        self.stats.by_node_sent[src] += 1
        if (src, dst) in self.blocked:
            self.stats.blocked += 1
            return True  # the sender cannot tell: the packet just vanishes
        profile = self.link_profiles.get((src, dst), self.profile)
        rng = self.rng
        if profile.loss and rng.random() < profile.loss:
            self.stats.lost += 1
            return True
        copies = 2 if profile.duplicate and rng.random() < profile.duplicate else 1
        if copies == 2:
            self.stats.duplicated += 1
        now = trio.current_time()
        low, high = profile.latency
        for _ in range(copies):
            heapq.heappush(self._heap, (now + rng.uniform(low, high), next(self._counter), src, dst, payload))
        self._wake.set()
        return True

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        heap = self._heap
        while True:
            if not heap:
                self._wake = trio.Event()
                await self._wake.wait()
                continue
            at = heap[0][0]
            if at > trio.current_time():
                self._wake = trio.Event()
                with trio.move_on_at(at):
                    await self._wake.wait()
                continue
            now = trio.current_time()
            while heap and heap[0][0] <= now:
                _, _, src, dst, payload = heapq.heappop(heap)
                links = self.links.get(dst)
                if links is None or (src, dst) in self.blocked:
                    self.stats.blocked += 1
                    continue
                if links.push(src, payload):
                    self.stats.delivered += 1
                else:
                    self.stats.overflow += 1
            await trio.lowlevel.checkpoint()
