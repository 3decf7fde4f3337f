"""Pure parts of test hosts, faults and `devnet chaos`: the seeded schedule, parsing what people
type, the rules each fault writes, the delayer's decisions and netlink messages, and the report.
(The same parts on real namespaces: tests/test_netns_devnet.py.)"""

from __future__ import annotations

import itertools
import socket
import struct
from collections import Counter

import pytest

from devnet import delayer, faults, hosts
from devnet.chaos import report, schedule
from devnet.chaos.report import Op
from devnet.faults import FaultError, LinkFault

PEERS = [f"peer{i}" for i in range(5)]
TOPO = hosts.Topology("abcde", "198.18.7.0/24", tuple(PEERS))


# ---- the schedule -------------------------------------------------------------------------------
def test_the_same_seed_gives_the_same_schedule_and_another_seed_another() -> None:
    one = schedule.make(42, 600, list(schedule.KINDS), PEERS, quorum=3)
    assert one == schedule.make(42, 600, list(schedule.KINDS), PEERS, quorum=3)
    assert [w.describe() for w in one] == [w.describe() for w in schedule.make(42, 600, list(schedule.KINDS), PEERS, 3)]
    assert one != schedule.make(43, 600, list(schedule.KINDS), PEERS, quorum=3)


def test_schedule_shape_every_kind_windows_apart_and_a_healthy_tail() -> None:
    t = schedule.Timing()
    windows = schedule.make(7, 600, list(schedule.KINDS), PEERS, quorum=3)
    assert {w.kind for w in windows[:4]} == set(schedule.KINDS)  # every kind within the first round
    assert windows[0].start >= t.lead_in
    for a, b in itertools.pairwise(windows):
        assert b.start - a.end >= t.gap[0] - 1e-9  # healthy time between faults
    assert windows[-1].end <= 600 - t.tail
    assert all(t.fault[0] <= w.end - w.start <= t.fault[1] for w in windows)
    counts = Counter(len(w.targets) for w in windows)
    assert counts[1] and counts[2]  # one owner lost, and two
    for w in windows:
        assert set(w.targets) <= set(PEERS) and not set(w.targets) & set(w.rest)
        if w.kind in ("partition", "slow"):
            assert set(w.targets) | set(w.rest) == set(PEERS)


def test_two_targets_only_when_a_quorum_of_the_committee_is_left() -> None:
    windows = schedule.make(7, 600, ["kill", "pause"], PEERS[:4], quorum=3)
    assert windows and all(len(w.targets) == 1 for w in windows)


def test_unknown_nemesis_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown nemesis flood"):
        schedule.make(1, 60, ["kill", "flood"], PEERS, quorum=3)


def test_an_op_counts_in_the_fault_it_overlapped() -> None:
    from devnet.chaos.nemesis import Nemesis

    nemesis = Nemesis(None, 1)  # only its record of windows is used here
    for window, began, ended in ((schedule.Window(10, 20, "pause", ("peer1",)), 10.0, 20.5),
                                 (schedule.Window(30, 40, "kill", ("peer1", "peer2")), 30.2, 45.0)):
        nemesis.windows.append(window)
        nemesis.applied.append({"began": began, "ended": ended})
    assert nemesis.during(1.0, 9.0) == ("healthy", frozenset())
    assert nemesis.during(8.0, 11.0) == ("pause", {"peer1"})  # began healthy, a fault came meanwhile
    assert nemesis.during(20.0, 21.0) == ("pause", {"peer1"})
    assert nemesis.during(21.0, 29.0) == ("healthy", frozenset())
    assert nemesis.during(15.0, 35.0) == ("kill", {"peer1", "peer2"})  # the worse of two


def test_lost_peers_per_window() -> None:
    kill = schedule.Window(0, 1, "kill", ("peer1", "peer2"))
    assert schedule.faulted(kill) == {"peer1", "peer2"}
    assert schedule.faulted(schedule.Window(0, 1, "slow", ("peer1",))) == frozenset()
    assert schedule.faulted(None) == frozenset()


# ---- parsing ------------------------------------------------------------------------------------
def test_groups_durations_and_percentages() -> None:
    assert faults.parse_groups(["peer0,peer1", "/", "peer2,peer3,peer4"]) == [["peer0", "peer1"], ["peer2", "peer3", "peer4"]]
    assert faults.parse_groups(["peer0,peer1/peer2"]) == [["peer0", "peer1"], ["peer2"]]
    assert faults.parse_groups(["peer0 -> peer1"], separators=("->", "/")) == [["peer0"], ["peer1"]]
    for bad in (["peer0"], ["peer0 /"], ["peer0 / peer0"]):
        with pytest.raises(FaultError):
            faults.parse_groups(bad)
    assert faults.parse_ms("50ms") == pytest.approx(0.05)
    assert faults.parse_ms("0.2s") == pytest.approx(0.2)
    assert faults.parse_ms("10") == pytest.approx(0.01)
    assert faults.parse_percent("2%") == pytest.approx(0.02)
    for bad in ("fast", "-5ms"):
        with pytest.raises(FaultError):
            faults.parse_ms(bad)
    with pytest.raises(FaultError):
        faults.parse_percent("150%")


# ---- rules ----------------------------------------------------------------------------------------
def test_a_symmetric_partition_drops_at_both_sides_receivers() -> None:
    links = faults.partition_links([["peer0"], ["peer1", "peer2"]])
    assert set(links) == {LinkFault("peer0", "peer1"), LinkFault("peer0", "peer2"),
                          LinkFault("peer1", "peer0"), LinkFault("peer2", "peer0")}
    scripts = faults.drop_scripts(TOPO, links, "F1")
    assert set(scripts) == {"mpabcde-peer0", "mpabcde-peer1", "mpabcde-peer2"}
    assert 'ip saddr { 198.18.7.11, 198.18.7.12 } drop comment "meshpay F1"' in scripts["mpabcde-peer0"]
    assert 'ip saddr 198.18.7.10 drop comment "meshpay F1"' in scripts["mpabcde-peer1"]


def test_a_one_way_partition_drops_only_at_the_receivers() -> None:
    scripts = faults.drop_scripts(TOPO, faults.one_way_links(["peer0"], ["peer1"]), "F2")
    assert list(scripts) == ["mpabcde-peer1"]
    assert "ip saddr 198.18.7.10 drop" in scripts["mpabcde-peer1"]


def test_slow_links_queue_at_the_receiver_and_duplicate_at_the_sender() -> None:
    links = faults.slow_links([["peer3"], ["peer0", "peer4"]])
    commands = faults.queue_commands(TOPO, links, 5, "F5")
    assert commands["mpabcde-peer3"][commands["mpabcde-peer3"].index("-s") + 1] == "198.18.7.10,198.18.7.14"
    assert commands["mpabcde-peer0"][-4:] == ["NFQUEUE", "--queue-num", "5", "--queue-bypass"]
    dup = faults.duplicate_scripts(TOPO, links, 0.01, "F5")
    assert "ip daddr { 198.18.7.10, 198.18.7.14 } numgen random mod 1000 < 10 dup to ip daddr" in dup["mpabcde-peer3"]


# ---- test hosts -------------------------------------------------------------------------------------
def test_topology_names_are_prefixed_and_addresses_are_in_the_benchmark_block() -> None:
    assert TOPO.bridge == "mpabcdebr" and TOPO.namespace("peer2") == "mpabcde-peer2" and TOPO.veth(3) == "mpabcdev3"
    assert all(len(name) <= 15 for name in (TOPO.bridge, TOPO.veth(63)))  # interface names: IFNAMSIZ
    assert TOPO.host_address == "198.18.7.1" and TOPO.address(0) == "198.18.7.10"
    assert hosts.Topology.from_dict(TOPO.as_dict()) == TOPO


def test_missing_privileges_and_tools_are_named() -> None:
    everything = 1 << hosts.CAP_NET_ADMIN | 1 << hosts.CAP_SYS_ADMIN
    assert hosts.missing(everything, {"ip": None}) == []
    problems = hosts.missing(0, {"ip": None, "nft": "Debian: apt-get install nftables"})
    assert "CAP_NET_ADMIN" in problems[0] and "CAP_SYS_ADMIN" in problems[0] and "root" in problems[0]
    assert problems[1] == "the `nft` command (Debian: apt-get install nftables)"
    only_net = hosts.missing(1 << hosts.CAP_NET_ADMIN, {})
    assert len(only_net) == 1 and "CAP_SYS_ADMIN" in only_net[0] and "CAP_NET_ADMIN" not in only_net[0]


# ---- the delayer ----------------------------------------------------------------------------------
def test_delayer_plan_holds_within_the_jitter_and_drops_at_the_loss_rate() -> None:
    plan = delayer.Plan({1: delayer.LinkSpec(0.05, 0.01, 0.02)}, seed=5)
    fates = [plan.on_packet(1, 100.0) for _ in range(20_000)]
    held = [f - 100.0 for f in fates if f is not None]
    assert all(0.04 <= h <= 0.06 for h in held)
    assert 0.015 < fates.count(None) / len(fates) < 0.025
    assert sum(held) / len(held) == pytest.approx(0.05, abs=0.001)
    # The same seed decides the same way; without jitter or loss, exactly the delay.
    again = delayer.Plan({1: delayer.LinkSpec(0.05, 0.01, 0.02)}, seed=5)
    assert [again.on_packet(1, 100.0) for _ in range(100)] == fates[:100]
    assert delayer.Plan({2: delayer.LinkSpec(0.03)}).on_packet(2, 1.0) == pytest.approx(1.03)
    with pytest.raises(ValueError):
        delayer.LinkSpec(-1.0)


def test_netlink_messages_round_trip() -> None:
    # A packet notification as the kernel sends it: nlmsghdr, nfgenmsg (queue 7), NFQA_PACKET_HDR.
    attr = struct.pack("=HH", 4 + 7, delayer.NFQA_PACKET_HDR) + struct.pack("!IHB", 4242, 0x0800, 1) + b"\0"
    body = struct.pack("=BBH", socket.AF_INET, 0, socket.htons(7)) + attr
    packet = struct.pack("=IHHII", 16 + len(body), (delayer.NFNL_SUBSYS_QUEUE << 8) | delayer.NFQNL_MSG_PACKET,
                         0, 0, 0) + body
    ack = struct.pack("=IHHII", 36, delayer.NLMSG_ERROR, 0, 9, 0) + struct.pack("=i", -1) + bytes(16)
    assert delayer.parse(packet + ack) == [("packet", 7, 4242), ("ack", 9, 1)]
    msg = delayer.verdict(7, 4242, accept=True)
    length, kind = struct.unpack_from("=IH", msg)
    assert length == len(msg) and kind == (delayer.NFNL_SUBSYS_QUEUE << 8) | delayer.NFQNL_MSG_VERDICT
    assert struct.unpack_from("!II", msg, len(msg) - 8) == (delayer.NF_ACCEPT, 4242)
    assert struct.unpack_from("!II", delayer.verdict(7, 1, accept=False), len(msg) - 8) == (delayer.NF_DROP, 1)


# ---- the report --------------------------------------------------------------------------------------
def test_report_counts_availability_per_window_and_per_lost_owners() -> None:
    ops = [Op(0, report.PAY, 1.0, "healthy", 0, 0, "a", "certified", 0.1, 0.2),
           Op(0, report.PAY, 2.0, "kill", 1, 0, "b", "certified", 0.3, 0.5),
           Op(1, report.PAY, 3.0, "kill", 2, 1, "c", "timeout"),
           Op(1, report.OVERDRAW, 4.0, "kill", 1, 1, "d", "refused:insufficient_funds"),
           Op(2, report.REPLAY, 5.0, "healthy", 0, 0, "a", "certified", 0.1)]
    rows = report.by_window(ops)
    assert list(rows) == ["healthy", "kill"]
    assert rows["kill"]["payments"] == 2 and rows["kill"]["certified_pct"] == 50.0 and rows["kill"]["timeouts"] == 1
    assert rows["kill"]["overdraws"] == 1 and rows["kill"]["overdraws_refused"] == 1
    assert rows["healthy"]["payments"] == 1  # a replay is not a new payment
    lost = report.by_lost_owners(ops)
    assert lost["payer 1 / payee 0"]["certified_pct"] == 100.0 and lost["payer 2 / payee 1"]["certified_pct"] == 0.0
    assert report.replays(ops) == {"replays": 1, "certified": 1, "other": []}
