"""Gossip benchmark: simulated networks of 10, 100 and 1000 peers, and 5 real peer processes.

    python -m tests.bench.gossip [--quick] [--sizes 10,100,1000] [--no-sim] [--no-real]

Simulation (tests/sim: the daemon's Membership, Broadcast and Runtime on in-memory links under
trio's MockClock, library-default configs, 1-5 ms uniform link latency). Per size:
  - broadcast: rounds (hops of the last peer reached) and simulated seconds from publish until
    99.9 % and 100 % of peers have one broadcast (the publisher counts as reached); median and max
    over several broadcasts from random publishers;
  - join: simulated seconds until 99.9 % / 100 % of peers have learnt a new peer is alive through
    membership gossip (the figure memberlist/Serf quote: ~1 s to 99.9 % of 1000 at 200 ms, fanout 3);
  - steady state: membership messages (and bytes) sent per peer per second, no broadcasts, over a
    window that is a whole number of push-pull sync periods (so syncs are counted at their rate);
  - false positives at 1 % and 5 % message loss over a fixed simulated time: live peers declared
    dead, and suspicions, per peer-hour (every peer stays up: any death is a false positive).
  Peers start with their tables pre-filled (see GossipCluster.start_prefilled): bootstrapping 1000
  peers through one seed costs a million signature checks and says nothing about these figures.
  One extra peer is left out of the pre-fill and joins through the seed for the join figure.

Real sockets: 5 `tests.gossip_node` processes on 127.0.0.1 (TcpTransport, default membership
config), joined through one seed. Peer 0 publishes fresh signed Orders (signed as they are
published; every receiver verifies each before relaying) at a target rate for a bounded count and
time; every process records `time.time()` when it delivers each. Reported: broadcasts delivered to
all 4 receivers per second (from the first publish to the last delivery), and the dissemination
latency of each broadcast (publish to its delivery at the last of the 4), all on this machine's clock.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import random
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass

import trio
from trio.testing import MockClock

from gossip.broadcast import BroadcastConfig
from gossip.membership import MembershipConfig
from gossip.wire import ALIVE, DEAD
from tests.bench.common import measure_signature_cost, percentile
from tests.gossip_procs import ProcCluster
from tests.sim.cluster import GossipCluster, SimNode
from tests.sim.network import LinkProfile

LATENCY = (0.001, 0.005)
WARMUP = 25.0  # past the first wave of push-pull syncs (every peer starts at once)


def _k(n: int, fraction: float) -> int:
    """How many peers `fraction` of n is (at least one, rounded up)."""
    return max(1, math.ceil(n * fraction - 1e-9))


@dataclass
class SimResult:
    n: int
    bcast_t999: list[float]
    bcast_t100: list[float]
    bcast_r999: list[int]
    bcast_r100: list[int]
    bcast_missed: int
    bcast_repaired: int  # broadcasts where some peer got it only by pull repair (IHave/IWant)
    join_t999: float | None
    join_t100: float | None
    msgs_per_peer_s: float
    bytes_per_peer_s: float
    by_type: dict[str, float]
    window: float
    fp: dict[float, tuple[float, float, float, float, int, bool]]
    # loss -> (deaths/peer-h, suspect transitions/peer-h, failed probes/peer-h, peer-hours, deaths, view whole after)
    wall: float


def _sync_period(cfg: MembershipConfig, n: int) -> float:
    scale = 1.0 if n <= 32 else math.ceil(math.log2(n) - math.log2(32)) + 1
    return cfg.sync_interval * scale


def _sent_by_type(cluster: GossipCluster) -> Counter[str]:
    total: Counter[str] = Counter()
    for node in cluster.live():
        assert node.runtime is not None
        total.update(node.runtime.sent)
    return total


async def _simulate(n: int, seed: int, broadcasts: int, fp_seconds: float, steady_periods: int) -> SimResult:
    wall = time.perf_counter()
    mcfg, bcfg = MembershipConfig(), BroadcastConfig()
    cluster = GossipCluster(n, seed, profile=LinkProfile(latency=LATENCY), membership=mcfg, broadcast=bcfg)
    rng = random.Random(seed)
    async with trio.open_nursery() as nursery:
        joiner = cluster.nodes[-1]
        await cluster.start_prefilled(nursery, nodes=cluster.nodes[:-1])
        await trio.sleep(WARMUP)

        # Join: the last peer bootstraps through the seed; membership gossip spreads its record.
        t0 = trio.current_time()
        await cluster.boot(joiner)
        await cluster.wait_for(lambda: all(_first_alive(x, joiner.id) is not None for x in cluster.live()
                                           if x is not joiner), timeout=30, step=0.05)
        learnt = sorted(t for x in cluster.live() if x is not joiner
                        if (t := _first_alive(x, joiner.id)) is not None)
        times = [0.0] + [t - t0 for t in learnt]  # the joiner knows itself at once
        join_t999 = times[_k(n, 0.999) - 1] if len(times) >= _k(n, 0.999) else None
        join_t100 = times[n - 1] if len(times) >= n else None
        await trio.sleep(10)

        # Steady state: membership traffic only, over whole sync periods.
        window = _sync_period(mcfg, n) * steady_periods
        sent0, bytes0, types0 = cluster.net.stats.sent, cluster.net.stats.bytes, _sent_by_type(cluster)
        await trio.sleep(window)
        msgs = (cluster.net.stats.sent - sent0) / n / window
        nbytes = (cluster.net.stats.bytes - bytes0) / n / window
        by_type = {k: v / n / window for k, v in (_sent_by_type(cluster) - types0).items()}

        # Broadcasts, one at a time, from random publishers.
        t999, t100, r999, r100, missed, repaired = [], [], [], [], 0, 0
        for b in range(broadcasts):
            publisher = rng.choice(cluster.nodes)
            repairs0 = sum(x.broadcast.counters["repaired"] for x in cluster.nodes)
            mid = cluster.publish(publisher, f"bench broadcast {b} from {publisher.index}".encode())
            start = trio.current_time()
            await cluster.wait_for(lambda m=mid: cluster.reached(m) == n, timeout=30, step=0.01)
            got = sorted(node.delivered[mid] for node in cluster.nodes if mid in node.delivered)
            if len(got) < n:
                missed += 1
            repaired += sum(x.broadcast.counters["repaired"] for x in cluster.nodes) > repairs0
            k = _k(n, 0.999)
            if len(got) >= k:
                t999.append(got[k - 1][0] - start)
                r999.append(max(h for _, h in got[:k]))
            if len(got) == n:
                t100.append(got[-1][0] - start)
                r100.append(max(h for _, h in got))
            await trio.sleep(1.0)

        # False positives under loss: nobody is down, so every death is wrong.
        fp = {}
        for loss in (0.01, 0.05):
            cluster.net.profile = LinkProfile(latency=LATENCY, loss=loss)
            start = trio.current_time()
            susp0 = sum(x.membership.counters["suspicions"] for x in cluster.nodes)
            fail0 = sum(x.membership.counters["probe_failures"] for x in cluster.nodes)
            await trio.sleep(fp_seconds)
            fails = sum(x.membership.counters["probe_failures"] for x in cluster.nodes) - fail0
            deaths = sum(1 for x in cluster.nodes for t, ch in x.changes if t >= start and ch.new == DEAD)
            susp = sum(x.membership.counters["suspicions"] for x in cluster.nodes) - susp0
            hours = n * fp_seconds / 3600
            cluster.net.profile = LinkProfile(latency=LATENCY)
            # Give refutations a moment, then check that the view is whole again.
            healed = await cluster.wait_for(cluster.converged, timeout=60, step=0.5) is not None
            fp[loss] = (deaths / hours, susp / hours, fails / hours, hours, deaths, healed)
        nursery.cancel_scope.cancel()
    return SimResult(n, t999, t100, r999, r100, missed, repaired, join_t999, join_t100, msgs, nbytes, by_type, window,
                     fp, time.perf_counter() - wall)


def _first_alive(node: SimNode, peer_id: bytes) -> float | None:
    for t, ch in node.changes:
        if ch.peer_id == peer_id and ch.new == ALIVE:
            return t
    return None


def _med(values: list[float] | list[int]) -> float:
    return statistics.median(values) if values else float("nan")


def _fmt_s(value: float | None) -> str:
    return "  n/a " if value is None or math.isnan(value) else f"{value:6.3f}"


def run_sim(sizes: list[int], quick: bool) -> None:
    print("\n== Simulation: in-memory links, MockClock, link latency 1-5 ms, library-default configs ==")
    m = MembershipConfig()
    print(f"membership: probe {m.probe_interval} s, probe timeout {m.probe_timeout} s, gossip every "
          f"{m.gossip_interval} s to {m.gossip_fanout}, {m.indirect_checks} indirect probes, suspicion "
          f"x{m.suspicion_mult} (max x{m.suspicion_max_mult}), sync every {m.sync_interval} s (scaled)")
    print("broadcast: eager push to about ln(n)+1 peers on first receipt, pull repair every 1 s")
    print("start: tables pre-filled from every peer's signed record, each record verified once "
          "(bootstrap skipped; all protocol code unchanged); one more peer joins through the seed")
    results = []
    for n in sizes:
        broadcasts = 5 if quick else 21
        fp_seconds = {10: 3600.0, 100: 600.0}.get(n, 120.0) / (6 if quick else 1)
        periods = max(1, math.ceil(60 / _sync_period(m, n))) if not quick else 1
        r = trio.run(_simulate, n, 1000 + n, broadcasts, fp_seconds, periods, clock=MockClock(autojump_threshold=0))
        results.append(r)
        print(f"  n={n}: simulated in {r.wall:.0f} s wall")

    print("\nbroadcast of one message (median [max] over broadcasts from random publishers):")
    print("(rounds = hops of the last peer reached; a broadcast that a peer got only by pull repair "
          "reaches 100 % after about one repair interval)")
    print(f"{'peers':>6} {'bcasts':>6}  {'rounds 99.9%':>13} {'rounds 100%':>12}  {'sim s 99.9%':>14} "
          f"{'sim s 100%':>14}  {'needed repair':>13} {'never all':>9}")
    for r in results:
        print(f"{r.n:>6} {len(r.bcast_t999):>6}  {_med(r.bcast_r999):>6.0f} [{max(r.bcast_r999, default=0):>3}] "
              f"{_med(r.bcast_r100):>5.0f} [{max(r.bcast_r100, default=0):>3}]  "
              f"{_med(r.bcast_t999):.4f} [{max(r.bcast_t999, default=float('nan')):.3f}] "
              f"{_med(r.bcast_t100):.4f} [{max(r.bcast_t100, default=float('nan')):.3f}]  "
              f"{r.bcast_repaired:>13} {r.bcast_missed:>9}")
    print("\nmembership gossip: a new peer joins through the seed; simulated s until peers know it is alive")
    print(f"{'peers':>6}  {'99.9%':>7} {'100%':>7}")
    for r in results:
        print(f"{r.n:>6}  {_fmt_s(r.join_t999)}  {_fmt_s(r.join_t100)}")
    print("\nsteady state, membership only (no broadcasts, no loss):")
    print(f"{'peers':>6} {'window s':>9} {'msgs/peer/s':>12} {'bytes/peer/s':>13}  by type (msgs/peer/s)")
    for r in results:
        kinds = "  ".join(f"{k} {v:.3f}" for k, v in sorted(r.by_type.items(), key=lambda kv: -kv[1]))
        print(f"{r.n:>6} {r.window:>9.0f} {r.msgs_per_peer_s:>12.3f} {r.bytes_per_peer_s:>13.0f}  {kinds}")
    print("\nfalse positives (all peers up the whole time; per peer-hour = per observing peer per hour):")
    print("(failed probes: own probes with no direct or indirect ack; suspected: times a peer marked "
          "another suspect, by its own probe or by hearsay)")
    print(f"{'peers':>6} {'loss':>5} {'peer-hours':>10} {'false deaths':>12} {'deaths/peer-h':>13} "
          f"{'failed probes/peer-h':>20} {'suspected/peer-h':>16}  view whole after")
    for r in results:
        for loss, (dph, sph, fph, hours, deaths, healed) in r.fp.items():
            print(f"{r.n:>6} {loss:>5.0%} {hours:>10.1f} {deaths:>12} {dph:>13.3f} {fph:>20.2f} {sph:>16.2f}"
                  f"  {healed}")


# ---- real sockets -------------------------------------------------------------------------------

def _machine_busy() -> float:
    """CPU seconds this machine has spent busy (all processes), from /proc/stat; nan elsewhere."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return float("nan")
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _real_round(cluster: ProcCluster, rate: int, seconds: float) -> tuple[float, float, float, float, int, int, float]:
    pub, receivers = cluster.nodes[0], cluster.nodes[1:]
    count = int(rate * seconds)
    cpu0 = [cluster.ask(n, {"cmd": "stats"}, "stats")["cpu_s"] for n in cluster.nodes]
    busy0, wall0 = _machine_busy(), time.monotonic()
    done = cluster.ask(pub, {"cmd": "flood", "count": count, "rate": rate, "max_seconds": seconds * 3},
                       "flood_done", timeout=seconds * 3 + 30)
    time.sleep(1.0)  # stragglers
    busy1, wall1 = _machine_busy(), time.monotonic()
    cpu1 = [cluster.ask(n, {"cmd": "stats"}, "stats")["cpu_s"] for n in cluster.nodes]
    seen = [{mid: t for mid, t, _ in cluster.ask(n, {"cmd": "deliveries", "clear": True}, "deliveries")["items"]}
            for n in receivers]
    latencies, last = [], []
    for mid, t in done["published"]:
        at = [s.get(mid) for s in seen]
        if all(a is not None for a in at):
            latencies.append((max(at) - t) * 1000)
            last.append(max(at))
    published = len(done["published"])
    span = (max(last) - done["published"][0][1]) if last else float("nan")
    ours = sum(b - a for a, b in zip(cpu0, cpu1, strict=True)) / (wall1 - wall0)
    others = max(0.0, (busy1 - busy0) / (wall1 - wall0) - ours)  # includes this driver (idle meanwhile)
    return (len(latencies) / span, percentile(latencies, 50), percentile(latencies, 99),
            max(latencies, default=float("nan")), published, len(latencies), ours, others)


def run_real(quick: bool) -> None:
    rates = [500, 1000, 2000] if quick else [500, 1000, 2000, 4000]
    repeats = 1 if quick else 3
    seconds = 2.0 if quick else 3.0
    print(f"\n== Real sockets: 5 tests.gossip_node processes on 127.0.0.1, {os.cpu_count()} CPUs ==")
    print("signed broadcasts (Order, ~190 B, Ed25519-verified by every receiver before relay), fanout 3, "
          f"peer 0 publishes; {seconds:.0f} s per run, medians of {repeats} run(s)")
    cost = measure_signature_cost(3 if quick else 7)
    cpus = os.cpu_count() or 1
    bound = cpus / ((4 * cost.verify_us + cost.sign_us) / 1e6)
    print(f"Ed25519 here: sign {cost.sign_us:.1f} us, verify {cost.verify_us:.1f} us -> signature-work bound for "
          f"1 sign + 4 verifies per broadcast on {cpus} CPUs: {bound:,.0f} broadcasts/s")
    cluster = ProcCluster(5, seed=99, quiet=True)
    try:
        cluster.start(cluster.nodes[0], seeds=[])
        for node in cluster.nodes[1:]:
            cluster.start(node, seeds=[0])
        everyone = {n.id for n in cluster.nodes}
        if not cluster.wait_until(lambda: all(n.sees_alive() == everyone - {n.id} for n in cluster.nodes), 30):
            print("  the 5 processes did not find each other within 30 s; no figure")
            return
        print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}  (CPU cores used: by "
              "the 5 peers / by every other process on the machine, during the runs)")
        print(f"{'target/s':>8} {'published':>9} {'to all 4':>8} {'to-all/s':>9} {'p50 ms':>7} {'p99 ms':>7} "
              f"{'max ms':>7} {'cores: peers / others':>22}")
        for rate in rates:
            runs = [_real_round(cluster, rate, seconds) for _ in range(repeats)]
            med = [statistics.median(col) for col in zip(*runs, strict=True)]
            print(f"{rate:>8} {med[4]:>9.0f} {med[5]:>8.0f} {med[0]:>9.0f} {med[1]:>7.2f} {med[2]:>7.2f} "
                  f"{med[3]:>7.2f} {med[6]:>14.2f} / {med[7]:>5.2f}")
        stats = cluster.ask(cluster.nodes[2], {"cmd": "stats"}, "stats")
        print(f"(peer 2 afterwards: {stats['broadcast']['delivered']} delivered, "
              f"{stats['broadcast']['duplicates']} duplicates, {stats['broadcast']['rejected']} rejected, "
              f"{stats['transport']['messages_out'] / max(1, stats['transport']['frames_out']):.2f} messages/frame, "
              f"{stats['membership']['suspicions']} suspicions)")
    finally:
        cluster.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter windows, fewer broadcasts and runs")
    parser.add_argument("--sizes", default="10,100,1000", help="simulated network sizes (default 10,100,1000)")
    parser.add_argument("--no-sim", action="store_true")
    parser.add_argument("--no-real", action="store_true")
    args = parser.parse_args()
    print(f"meshpay gossip benchmark: {' '.join(['python -m tests.bench.gossip', *sys.argv[1:]])}")
    print(f"python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} CPUs, pid {os.getpid()}")
    started = time.perf_counter()
    if not args.no_sim:
        run_sim([int(s) for s in args.sizes.split(",")], args.quick)
    if not args.no_real:
        run_real(args.quick)
    print(f"\ntotal {time.perf_counter() - started:.0f} s wall")


if __name__ == "__main__":
    main()
