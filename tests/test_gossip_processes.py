"""Real sockets, real processes: five `tests.gossip_node` nodes on 127.0.0.1 find each other from
one seed, broadcast signed messages to each other exactly once, detect a SIGKILLed peer within the
bound their MembershipConfig promises, and take it back when it restarts with a higher incarnation."""

from __future__ import annotations

import time

import pytest

from gossip.membership import MembershipConfig
from tests.gossip_procs import ProcCluster, ProcNode

N = 5
# Faster than the library defaults so the whole scenario fits in well under a minute; the same
# numbers go to the processes as flags and into the bound we hold them to.
CONFIG = MembershipConfig(probe_interval=0.25, probe_timeout=0.1, gossip_interval=0.05,
                          reconnect_interval=1.0, seed_retry_max=1.0)
FLAGS = ["--probe-interval", str(CONFIG.probe_interval), "--probe-timeout", str(CONFIG.probe_timeout),
         "--gossip-interval", str(CONFIG.gossip_interval),
         "--reconnect-interval", str(CONFIG.reconnect_interval),
         "--seed-retry-max", str(CONFIG.seed_retry_max)]


def _describe(cluster: ProcCluster) -> str:
    names = {n.id: f"p{n.index}" for n in cluster.nodes}
    with cluster.lock:
        return "; ".join(f"p{n.index} sees {({names.get(p, p[:8]): s for p, s in sorted(n.states.items())})}"
                         for n in cluster.nodes)


def _publish(cluster: ProcCluster, node: ProcNode) -> str:
    with cluster.lock:
        before = set(node.published)
    cluster.send(node, {"cmd": "vote"})
    assert cluster.wait_until(lambda: len(node.published) > len(before), 10), "publish not acknowledged"
    with cluster.lock:
        (mid,) = set(node.published) - before
    return mid


@pytest.mark.slow
def test_five_processes_join_broadcast_detect_kill_and_readmit() -> None:
    cluster = ProcCluster(N, seed=7, extra_args=FLAGS)
    started = time.monotonic()
    try:
        seed, *rest = cluster.nodes
        cluster.start(seed, seeds=[])
        for node in rest:
            cluster.start(node, seeds=[0])  # everyone knows only peer 0's address
        everyone = {n.id for n in cluster.nodes}

        # 1. Membership: each process reports the other four alive.
        joined = cluster.wait_until(lambda: all(n.sees_alive() == everyone - {n.id} for n in cluster.nodes), 30)
        assert joined, f"not all peers found each other within 30 s: {_describe(cluster)}"
        print(f"5 processes started and joined in {time.monotonic() - started:.2f} s")

        # 2. Broadcast from two different peers: every process has each exactly once (the
        #    publisher by publishing it, the others by delivering it after verifying the signature).
        publishers = [cluster.nodes[1], cluster.nodes[3]]
        mids = [_publish(cluster, p) for p in publishers]
        assert len(set(mids)) == 2

        def everyone_has_both() -> bool:
            return all(n.delivered[m] + (m in n.published) >= 1 for n in cluster.nodes for m in mids)

        assert cluster.wait_until(everyone_has_both, 10), \
            f"broadcasts not delivered everywhere: {[dict(n.delivered) for n in cluster.nodes]}"
        time.sleep(1.0)  # room for duplicates (relays, pull repair) to show up if dedupe broke
        for node in cluster.nodes:
            for mid in mids:
                times = node.delivered[mid] + (mid in node.published)
                assert times == 1, f"p{node.index} has broadcast {mid[:8]} {times} times"

        # 3. SIGKILL a peer that is not the seed: the other four declare it dead within the bound.
        victim = cluster.nodes[2]
        survivors = [n for n in cluster.nodes if n is not victim]
        bound = CONFIG.detection_bound(N)
        cluster.kill(victim)
        killed_at = time.monotonic()
        detected = cluster.wait_until(lambda: all(n.states.get(victim.id) == "dead" for n in survivors), bound)
        took = time.monotonic() - killed_at
        assert detected, f"SIGKILLed peer not dead everywhere within {bound:.1f} s: {_describe(cluster)}"
        print(f"SIGKILLed peer declared dead by all 4 survivors in {took:.2f} s (bound {bound:.2f} s)")
        # Nobody else was declared dead along the way.
        with cluster.lock:
            wrong = [(n.index, o.index) for n in survivors for o in survivors
                     if o is not n and n.states.get(o.id) not in ("alive", "suspect")]
        assert not wrong, f"live peers declared dead: {wrong}; {_describe(cluster)}"

        # 4. Restart it with the same key and port and a higher incarnation: taken back everywhere,
        #    and it sees everyone.
        victim.incarnation += 1
        cluster.start(victim, seeds=[0])
        restarted_at = time.monotonic()
        back = cluster.wait_until(lambda: all(n.sees_alive() == everyone - {n.id} for n in cluster.nodes), 30)
        assert back, f"restarted peer not taken back within 30 s: {_describe(cluster)}"
        print(f"restarted peer alive everywhere again after {time.monotonic() - restarted_at:.2f} s")
        view = cluster.ask(survivors[0], {"cmd": "members"}, "members")
        entry = view["members"][victim.id]
        # At least the incarnation it restarted with (it may have refuted a suspicion since).
        assert entry["state"] == "alive" and entry["incarnation"] >= victim.incarnation, entry

        # The survivors still hold each broadcast exactly once.
        for node in survivors:
            for mid in mids:
                assert node.delivered[mid] + (mid in node.published) == 1
        # A broadcast from the restarted peer reaches the four survivors.
        mid = _publish(cluster, victim)
        assert cluster.wait_until(lambda: all(n.delivered[mid] == 1 for n in survivors), 10), \
            "broadcast from the restarted peer did not reach everyone"
        for node in cluster.nodes:
            assert not node.errors, f"p{node.index} reported errors: {node.errors}"
    finally:
        cluster.close()
    print(f"scenario took {time.monotonic() - started:.1f} s")
