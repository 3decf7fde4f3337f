"""A graceful departure sticks (simulation: the gossip cluster of tests/sim on MockClock).

The members re-gossip a departure at once, so its echo reaches the departing peer while it is
still flushing its queues. A peer that took that echo for a claim against itself would refute
it with a higher incarnation, the members would take it for alive again and then, once it is
gone, for dead: every graceful stop would read as a crash (seen in CI under load).
"""

from __future__ import annotations

import math

import pytest
import trio
from trio.testing import MockClock

from gossip.membership import MembershipConfig
from gossip.wire import ALIVE, DEAD, LEFT
from tests.sim.cluster import GossipCluster
from tests.sim.network import LinkProfile


@pytest.fixture
def clock() -> MockClock:
    return MockClock(autojump_threshold=0)


@pytest.mark.parametrize("seed", range(10))
async def test_the_echo_of_a_departure_does_not_undo_it(clock: MockClock, seed: int) -> None:
    cluster = GossipCluster(5, seed=seed, profile=LinkProfile(latency=(0.001, 0.01)))
    async with trio.open_nursery() as nursery:
        await cluster.start(nursery, stagger=0.01)
        assert await cluster.wait_for(cluster.converged, timeout=60) is not None, f"seed {seed}"
        leaver, others = cluster.nodes[-1], cluster.nodes[:-1]
        incarnation = leaver.membership.incarnation
        cluster.leave(leaver)
        # It still reads and answers while it flushes its queues (the daemon waits up to 3 s).
        await trio.sleep(1.0)
        assert leaver.membership.incarnation == incarnation, f"seed {seed}: the leaver refuted its departure"
        assert leaver.membership.counters["refutations"] == 0 and leaver.membership.next_deadline() == math.inf
        cluster.crash(leaver)
        await trio.sleep(MembershipConfig().detection_bound(5) + 5)
        assert [cluster.view(n)[leaver.id] for n in others] == [LEFT] * 4, f"seed {seed}"
        assert not any(ch.new in (DEAD, ALIVE) and ch.peer_id == leaver.id for n in others for _, ch in n.changes
                       if ch.old == LEFT), f"seed {seed}: a departure was undone"
        nursery.cancel_scope.cancel()
