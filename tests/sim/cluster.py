"""A cluster of gossip-only peers on a SimNetwork: the same Membership, Broadcast and Runtime the
daemon runs, with simulated links and (in tests) MockClock time."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from crypto.keys import SigningKey
from gossip.broadcast import Broadcast, BroadcastConfig, Delivered
from gossip.membership import Member, MemberChanged, Membership, MembershipConfig
from gossip.runtime import Runtime
from gossip.wire import ALIVE, DEAD
from tests.sim.network import LinkProfile, SimLinks, SimNetwork, wait_for

NETWORK_ID = bytes(range(32))
HOST = "sim"


def derive_key(seed: int, index: int) -> SigningKey:
    return SigningKey.from_seed(random.Random(f"{seed}/key/{index}").randbytes(32))


@dataclass
class SimNode:
    index: int
    key: SigningKey
    links: SimLinks | None = None
    membership: Membership | None = None
    broadcast: Broadcast | None = None
    runtime: Runtime | None = None
    scope: trio.CancelScope | None = None
    up: bool = False
    incarnation: int = 0
    delivered: dict[bytes, tuple[float, int]] = field(default_factory=dict)  # id -> (time, hops)
    changes: list[tuple[float, MemberChanged]] = field(default_factory=list)

    @property
    def id(self) -> bytes:
        return self.key.public


class GossipCluster:
    def __init__(
        self,
        n: int,
        seed: int,
        *,
        profile: LinkProfile | None = None,
        membership: MembershipConfig | None = None,
        broadcast: BroadcastConfig | None = None,
        seed_nodes: tuple[int, ...] = (0,),
        committee: frozenset[bytes] | None = None,
    ) -> None:
        self.seed = seed
        self.net = SimNetwork(seed, profile)
        self.mconfig = membership or MembershipConfig()
        self.bconfig = broadcast or BroadcastConfig()
        self.nodes = [SimNode(i, derive_key(seed, i)) for i in range(n)]
        self.by_id = {node.id: node for node in self.nodes}
        # Gossip-only clusters: every node is in the committee unless a test says otherwise.
        self.committee = frozenset(self.by_id) if committee is None else committee
        self.seed_nodes = seed_nodes
        self._nursery: trio.Nursery | None = None
        # Seed trio's scheduler tie-breaking too, so a seed replays the same interleaving.
        trio._core._run._r.seed(seed)

    # ---- lifecycle --------------------------------------------------------------------------
    async def start(self, nursery: trio.Nursery, *, stagger: float = 0.05,
                    nodes: list[SimNode] | None = None) -> None:
        self._nursery = nursery
        await nursery.start(self.net.run)
        for node in self.nodes if nodes is None else nodes:
            await self.boot(node)
            if stagger:
                await trio.sleep(stagger)

    async def start_prefilled(self, nursery: trio.Nursery, *, nodes: list[SimNode] | None = None) -> None:
        """Start `nodes` (default: all) already knowing each other, as if bootstrap had converged.

        Bootstrapping n peers through one seed makes every peer verify every other peer's signed
        record: n^2 Ed25519 verifications (a million at n = 1000), which dominates a simulation
        of that size. Here each peer signs its record as usual, each record is verified once for
        the whole process, and the verified record is entered as ALIVE in every other peer's
        table before any of them runs. Only the bootstrap is skipped: from then on the unchanged
        protocol code runs (probes, gossip, syncs; a later joiner still bootstraps via the seed).
        """
        self._nursery = nursery
        await nursery.start(self.net.run)
        group = self.nodes if nodes is None else nodes
        for node in group:
            self._build(node, seeds=[])
        now = trio.current_time()
        records = []
        for node in group:
            assert node.membership is not None
            record = node.membership.record
            if not record.signature_valid(NETWORK_ID):
                raise AssertionError(f"peer {node.index} signed an invalid record")
            records.append((record, record.encode()))
        for node in group:
            assert node.membership is not None and node.links is not None
            table = node.membership.members
            for record, raw in records:
                if record.peer_id != node.id:
                    table[record.peer_id] = Member(record.peer_id, ALIVE, record.incarnation, now, record, raw)
                    node.links.set_address(record.peer_id, record.host, record.port)
        for node in group:
            await self._nursery.start(self._run_node, node)

    async def boot(self, node: SimNode) -> None:
        assert self._nursery is not None
        self._build(node, seeds=[(HOST, i + 1) for i in self.seed_nodes if i != node.index])
        await self._nursery.start(self._run_node, node)

    def _build(self, node: SimNode, *, seeds: list[tuple[str, int]]) -> None:
        node.links = self.net.attach(node.id, HOST, node.index + 1)
        rng = random.Random(f"{self.seed}/node/{node.index}/{node.incarnation}")
        node.membership = Membership(
            node.key, NETWORK_ID, HOST, node.index + 1, committee=self.committee, incarnation=node.incarnation,
            seeds=seeds, config=self.mconfig, rng=rng,
        )
        node.broadcast = Broadcast(NETWORK_ID, node.membership.alive, node.id,
                                   observers=node.membership.outsider_ids, trusted=node.membership.is_committee,
                                   config=self.bconfig, rng=rng)
        node.runtime = Runtime(node.links, node.membership, node.broadcast)
        node.runtime.subscribe(self._observer(node))
        node.up = True

    async def _run_node(self, node: SimNode, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with trio.CancelScope() as scope:
            node.scope = scope
            assert node.runtime is not None
            await node.runtime.run(task_status=task_status)

    def _observer(self, node: SimNode) -> Callable[[object], None]:
        def observe(event: object) -> None:
            now = trio.current_time()
            if isinstance(event, Delivered):
                node.delivered.setdefault(event.id, (now, event.hops))
            elif isinstance(event, MemberChanged):
                node.changes.append((now, event))

        return observe

    def crash(self, node: SimNode) -> None:
        """Kill a peer: its memory is gone, messages to it vanish."""
        assert node.scope is not None
        node.scope.cancel()
        node.up = False
        self.net.detach(node.id)
        # Without a store, a restarted peer would reuse its incarnation; the daemon persists it.
        assert node.membership is not None
        node.incarnation = node.membership.incarnation + 1

    def leave(self, node: SimNode) -> None:
        """A graceful stop's first half, as the daemon does it: announce the departure and send it.
        The node keeps running (reading, answering) until the test crashes it, as a daemon does while
        it flushes its queues."""
        assert node.membership is not None and node.runtime is not None
        node.membership.leave(trio.current_time())
        node.runtime.perform(node.membership.out.drain())

    async def restart(self, node: SimNode) -> None:
        await self.boot(node)

    # ---- observation ------------------------------------------------------------------------
    def live(self) -> list[SimNode]:
        return [n for n in self.nodes if n.up]

    def view(self, node: SimNode) -> dict[bytes, int]:
        assert node.membership is not None
        return {pid: m.state for pid, m in node.membership.members.items()}

    def converged(self, alive: set[bytes] | None = None) -> bool:
        """Every live peer sees exactly the live peers as alive (and everyone else not alive)."""
        expected = alive if alive is not None else {n.id for n in self.live()}
        for node in self.live():
            view = self.view(node)
            seen_alive = {pid for pid, state in view.items() if state == ALIVE} | {node.id}
            if seen_alive != expected:
                return False
        return True

    def all_see_dead(self, victim: SimNode) -> bool:
        return all(self.view(n).get(victim.id) == DEAD for n in self.live())

    def publish(self, node: SimNode, payload: bytes) -> bytes:
        assert node.runtime is not None and node.broadcast is not None
        mid = node.broadcast.publish(payload, trio.current_time())
        node.delivered.setdefault(mid, (trio.current_time(), 0))
        node.runtime.perform(node.broadcast.out.drain())
        return mid

    def reached(self, mid: bytes) -> int:
        return sum(1 for n in self.live() if mid in n.delivered)

    async def wait_for(self, predicate: Callable[[], bool], *, timeout: float, step: float = 0.1) -> float | None:
        """Simulated seconds until `predicate()` holds, or None if it did not within `timeout`."""
        return await wait_for(predicate, timeout=timeout, step=step)
