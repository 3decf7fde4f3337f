"""Membership under a flood of outsiders (sans-IO core, then whole simulated networks).

An outsider is any peer key outside the committee. Thousands of them, each with a genuinely signed
record pointing at a closed port, push their records by Sync and piggyback (directly, and relayed
through a committee member). What must hold: the outsiders table stays within its bound and costs
no signature check once full; committee members keep their place and their failure detection
(probing, acks, suspicion timing); outsider records are never relayed nor persisted; what an
outsider says about anybody but itself is ignored; and the committee can change by `set_committee`.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
import trio
from trio.testing import MockClock

from crypto.keys import SigningKey
from crypto.messages import PeerRecord
from crypto.schema import Message
from gossip.effects import Committee, Forget, Learn, Persist, Send
from gossip.limits import PenaltyBook
from gossip.membership import Membership, MembershipConfig
from gossip.wire import ALIVE, DEAD, SUSPECT, Ack, Gossip, Ping, PingReq, Sync, Update
from store import layout
from store.db import Batch, Store
from tests.sim.bank import BankNetwork
from tests.sim.cluster import NETWORK_ID, GossipCluster
from tests.sim.flood import deliver, fake_identities, flood_messages

NET = NETWORK_ID
KEYS = [SigningKey.from_seed(bytes([i + 1]) * 32) for i in range(5)]
COMMITTEE = frozenset(k.public for k in KEYS)
ME, *OTHERS = KEYS
FLOOD = 2000
CONFIG = MembershipConfig()


def alive(key: SigningKey, incarnation: int = 0) -> Update:
    record = PeerRecord.create(key, NET, "127.0.0.1", 7000 + key.public[0], 0, incarnation)
    return Update(ALIVE, key.public, incarnation, key.public, record.encode())


def joined(config: MembershipConfig = CONFIG) -> tuple[Membership, list[object]]:
    """Our membership, knowing the four other committee members alive; and its effects so far."""
    m = Membership(ME, NET, "127.0.0.1", 7000, committee=COMMITTEE, config=config, rng=random.Random(1))
    m.start(0.0)
    m.handle(OTHERS[0].public, Sync(False, True, tuple(alive(k) for k in OTHERS)), 0.0)
    return m, m.out.drain()


def flood(m: Membership, now: float, count: int = FLOOD) -> list[object]:
    """Every fake identity introduces itself and relays the others; a committee member relays
    them too (hearsay). Returns the effects."""
    identities = fake_identities(NET, count)
    for src, msg in flood_messages(identities, m.id):
        m.handle(src, msg, now)
    updates = [u for _, u in identities]
    for i in range(0, len(updates), 1000):
        m.handle(OTHERS[0].public, Sync(False, True, tuple(updates[i:i + 1000])), now)
    return m.out.drain()


def run(m: Membership, start: float, until: float, *, answer: Callable[[bytes], bool] = lambda dst: True,
        step: float = 0.05) -> list[object]:
    """Tick from `start` to `until`; committee members for which `answer(id)` holds ack our pings."""
    effects: list[object] = []
    now = start
    while now < until:
        now += step
        m.tick(now)
        for effect in m.out.drain():
            effects.append(effect)
            if type(effect) is Send and type(effect.msg) is Ping and effect.dst in COMMITTEE and answer(effect.dst):
                m.handle(effect.dst, Ack(effect.msg.seq, ()), now)
    return effects


def sent(effects: list[object], kind: type[Message] | None = None) -> list[Send]:
    return [e for e in effects if type(e) is Send and (kind is None or type(e.msg) is kind)]


def updates_in(msg: Message) -> tuple[Update, ...]:
    if type(msg) is Sync:
        return msg.members
    return getattr(msg, "updates", ())


def stored_peer_ids(effects: list[object]) -> set[bytes]:
    ids = set()
    for e in effects:
        if type(e) is Persist:
            ids |= {key[1:] for key, value in e.batch.ops if key[:1] == layout.PEER and value is not None}
    return ids


def test_flood_leaves_outsiders_within_bound_without_signature_work(monkeypatch: pytest.MonkeyPatch) -> None:
    m, _ = joined()
    checks = []
    original = PeerRecord.signature_valid
    monkeypatch.setattr(PeerRecord, "signature_valid", lambda self, net: checks.append(self.peer_id) or original(self, net))
    effects = flood(m, 1.0)
    assert len(m.outsiders) <= CONFIG.max_outsiders, len(m.outsiders)
    assert len(m.outsiders) == CONFIG.max_outsiders  # a useful share, not none
    assert set(m.members) == COMMITTEE - {ME.public}
    assert all(mem.state == ALIVE for mem in m.members.values())
    # Once the table is full a newcomer costs a lookup, not a signature check; hearsay costs nothing.
    assert len(checks) == CONFIG.max_outsiders, len(checks)
    assert m.counters["outsiders_refused"] == FLOOD - CONFIG.max_outsiders
    # Outsider records reach the links (to answer them) but never the disk.
    learned = [e for e in effects if type(e) is Learn]
    assert len(learned) == CONFIG.max_outsiders and not any(e.persist for e in learned)
    assert not stored_peer_ids(effects) - COMMITTEE


def test_fake_records_are_never_relayed_and_committee_probes_are_not_diluted() -> None:
    m, _ = joined()
    flood(m, 1.0)
    effects = run(m, 1.0, 60.0)
    # Everything this peer said to anyone (pings, acks, gossip, syncs) names only the committee.
    relayed = {u.peer_id for s in sent(effects) for u in updates_in(s.msg)}
    assert relayed <= COMMITTEE, f"{len(relayed - COMMITTEE)} outsider records relayed"
    # Outsiders pinging us get acks, with no outsider record in them either.
    outsider = next(iter(m.outsiders))
    m.handle(outsider, Ping(9, m.id, ()), 61.0)
    (ack,) = sent(m.out.drain(), Ack)
    assert ack.dst == outsider and {u.peer_id for u in ack.msg.updates} <= COMMITTEE
    # Probes go to committee members only, each in turn: 4 members, one probe a second.
    probed = [s.dst for s in sent(effects, Ping)]
    assert set(probed) == COMMITTEE - {ME.public}
    assert len(probed) >= 55
    assert not sent(effects, PingReq)  # everyone answered: no indirect probes needed
    assert m.group_size() == len(COMMITTEE)  # outsiders never stretch the suspicion timeout


def test_killed_member_is_declared_dead_within_the_clean_bound_despite_the_flood() -> None:
    m, _ = joined()
    flood(m, 1.0)
    victim = OTHERS[2].public
    effects = run(m, 1.0, 60.0, answer=lambda dst: dst != victim)
    dead_at = next((e.event for e in effects if type(e).__name__ == "Notify"
                    and getattr(e.event, "peer_id", None) == victim and e.event.new == DEAD), None)
    assert dead_at is not None and m.members[victim].state == DEAD
    died = m.members[victim].changed_at
    assert died - 1.0 <= CONFIG.detection_bound(len(COMMITTEE)), died


def test_only_the_pinged_peer_can_answer_for_it() -> None:
    m, _ = joined()
    victim = OTHERS[1].public
    liar = fake_identities(NET, 1)[0][0]
    now, suspected = 0.0, False
    while now < 30 and not suspected:
        now += 0.05
        m.tick(now)
        for effect in m.out.drain():
            if type(effect) is Send and type(effect.msg) is Ping:
                if effect.dst == victim:
                    # The victim is down; an outsider and a member we did not ask both "ack" for it.
                    m.handle(liar, Ack(effect.msg.seq, ()), now)
                    m.handle(OTHERS[0].public, Ack(effect.msg.seq, ()), now)
                else:
                    m.handle(effect.dst, Ack(effect.msg.seq, ()), now)
        suspected = m.members[victim].state == SUSPECT
    assert suspected, "an ack from somebody else kept a dead member alive"


def test_what_outsiders_say_about_others_is_ignored() -> None:
    m, _ = joined()
    liar = fake_identities(NET, 1)[0][0]
    incarnation = m.incarnation
    target = OTHERS[0].public
    claims = (Update(SUSPECT, target, 0, liar, b""), Update(DEAD, OTHERS[1].public, 0, liar, b""),
              Update(SUSPECT, m.id, m.incarnation, liar, b""))
    for msg in (Gossip(claims), Ping(1, m.id, claims), Sync(False, True, claims)):
        m.handle(liar, msg, 1.0)
    assert all(mem.state == ALIVE for mem in m.members.values())
    assert m.incarnation == incarnation and m.awareness == 0  # no refutation forced on us
    # Nor does it get us to probe on its behalf.
    m.out.drain()
    m.handle(liar, PingReq(5, target, ()), 1.0)
    assert not sent(m.out.drain(), Ping)
    # A committee member's word still counts.
    m.handle(OTHERS[1].public, Gossip((Update(SUSPECT, target, 0, OTHERS[1].public, b""),)), 2.0)
    assert m.members[target].state == SUSPECT


def test_quiet_outsiders_expire_and_make_room() -> None:
    m, _ = joined()
    flood(m, 1.0)
    chatty = next(iter(m.outsiders))
    now = 1.0
    while now < 1.0 + CONFIG.outsider_ttl * 1.5:
        now += 5.0
        m.handle(chatty, Ping(1, m.id, ()), now)
        m.tick(now)
    effects = m.out.drain()
    assert set(m.outsiders) == {chatty}
    assert {e.peer_id for e in effects if type(e) is Forget} >= set(
        pid for pid, _ in fake_identities(NET, FLOOD)[:CONFIG.max_outsiders]) - {chatty}
    # Room again: a newcomer introducing itself is admitted.
    newcomer = fake_identities(NET, FLOOD + 1)[FLOOD]
    m.handle(newcomer[0], Sync(True, False, (newcomer[1],)), now)
    assert newcomer[0] in m.outsiders


def test_set_committee_promotes_an_observer_and_demotes_a_member() -> None:
    m, _ = joined()
    observer, update = fake_identities(NET, 1)[0]
    m.handle(observer, Sync(True, False, (update,)), 1.0)
    assert observer in m.outsiders and observer not in m.members
    demoted = OTHERS[3].public
    m.out.drain()
    m.set_committee((COMMITTEE - {demoted}) | {observer})
    effects = m.out.drain()
    assert observer in m.members and observer not in m.outsiders
    assert demoted in m.outsiders and demoted not in m.members
    assert any(type(e) is Learn and e.persist and e.record.peer_id == observer for e in effects)
    deleted = {key[1:] for e in effects if type(e) is Persist for key, value in e.batch.ops if value is None}
    assert demoted in deleted
    assert any(type(e) is Committee and observer in e.ids and demoted not in e.ids for e in effects)
    # The promoted observer is probed now; the demoted member never again.
    probed = {s.dst for s in sent(run(m, 1.0, 20.0), Ping)}
    assert observer in probed and demoted not in probed
    # What the demoted member says about others no longer counts.
    m.handle(demoted, Gossip((Update(SUSPECT, OTHERS[0].public, 0, demoted, b""),)), 21.0)
    assert m.members[OTHERS[0].public].state == ALIVE


async def _detection(flood_size: int, seed: int) -> tuple[float | None, int, int]:
    """Seconds until every peer sees a killed member dead; and the most outsiders and the fewest
    committee members any peer held just before the kill."""
    cluster = GossipCluster(5, seed=seed)
    async with trio.open_nursery() as nursery:
        await cluster.start(nursery)
        assert await cluster.wait_for(cluster.converged, timeout=30) is not None
        if flood_size:
            identities = fake_identities(NETWORK_ID, flood_size)
            for node in cluster.nodes:
                # Every message arrives at once, as thousands of fresh identities would send them.
                deliver(flood_messages(identities, node.id),
                        lambda src, payload, dst=node.id: cluster.net.transmit(src, dst, payload))
            await trio.sleep(5)
        tables = [n.membership for n in cluster.nodes if n.membership is not None]
        most_outsiders = max(len(m.outsiders) for m in tables)
        fewest_members = min(sum(1 for p in m.members if p in cluster.committee) for m in tables)
        victim = cluster.nodes[3]
        cluster.crash(victim)
        took = await cluster.wait_for(lambda: cluster.all_see_dead(victim), timeout=120, step=0.1)
        nursery.cancel_scope.cancel()
    return took, most_outsiders, fewest_members


def _clean_and_flooded(seed: int, flood_size: int) -> None:
    clean, _, _ = trio.run(_detection, 0, seed, clock=MockClock(autojump_threshold=0))
    flooded, most_outsiders, fewest_members = trio.run(_detection, flood_size, seed,
                                                       clock=MockClock(autojump_threshold=0))
    bound = CONFIG.detection_bound(5)
    print(f"seed {seed}: a killed member is dead at every peer after {clean} s clean, {flooded} s "
          f"with {flood_size} fake identities (bound {bound:.1f} s)")
    assert clean is not None and clean <= bound
    assert flooded is not None and flooded <= bound
    assert most_outsiders <= CONFIG.max_outsiders and fewest_members == 4


def test_flooded_network_detects_a_killed_member_within_the_clean_bound() -> None:
    # Every simulated message is really decoded, so the default run stays small (the unit tests
    # above take 2,000 identities; the soak run below takes them through whole networks).
    _clean_and_flooded(3, 300)


@pytest.mark.soak
@pytest.mark.parametrize("seed", [4, 5, 6])
def test_flooded_network_detection_soak(seed: int) -> None:
    _clean_and_flooded(seed, FLOOD)


async def _stored_after_flood_and_restart(seed: int) -> tuple[set[bytes], list[set[bytes]], set[tuple[str, int]], set[tuple[str, int]]]:
    bank = BankNetwork(seed, peers=4, accounts=8)
    committee = frozenset(bank.genesis.committee)
    try:
        async with trio.open_nursery() as nursery:
            await bank.start(nursery)
            await trio.sleep(3)
            target = bank.members[1]
            identities = fake_identities(bank.network_id, 300)
            deliver(flood_messages(identities, target.id),
                    lambda src, payload: bank.net.transmit(src, target.id, payload))
            await trio.sleep(5)
            assert target.node is not None and len(target.node.membership.outsiders) == CONFIG.max_outsiders
            # A database written before outsiders were kept off disk holds some of their records.
            bank.crash(target)
            store = Store.open(target.path, bank.network_id)
            junk = Batch()
            for peer_id, update in identities[:50]:
                junk.put_peer(peer_id, update.record)
            store.write(junk, sync=True)
            store.close()
            await bank.restart(target)
            assert target.node is not None
            redialled = set(target.node.membership._seeds)
            committee_addresses = {("sim", p.index + 1) for p in bank.members if p is not target}
            await trio.sleep(5)
            stored = [set(dict(p.store.peers())) for p in bank.members if p.store is not None]
            nursery.cancel_scope.cancel()
    finally:
        bank.close()
    return committee, stored, redialled, committee_addresses


def test_outsiders_are_never_stored_nor_redialled_after_a_restart() -> None:
    committee, stored, redialled, committee_addresses = trio.run(
        _stored_after_flood_and_restart, 7, clock=MockClock(autojump_threshold=0))
    assert len(stored) == 4
    for ids in stored:
        assert ids and ids <= committee, f"{len(ids - committee)} outsider records on disk"
    # The restarted peer dials its configured seed and the committee members it had stored: no
    # closed port from a fake record.
    assert redialled <= committee_addresses, redialled - committee_addresses


async def _observer_scenario(seed: int) -> dict[str, object]:
    cluster = GossipCluster(6, seed=seed)
    committee = frozenset(n.id for n in cluster.nodes[:5])
    cluster.committee = committee
    observer = cluster.nodes[5]
    members = cluster.nodes[:5]
    async with trio.open_nursery() as nursery:
        await cluster.start(nursery)

        def settled() -> bool:
            assert observer.membership is not None
            knows_all = set(observer.membership.alive()) == committee
            known_by_all = all(observer.id in m.membership.outsiders for m in members if m.membership)
            return knows_all and known_by_all

        joined = await cluster.wait_for(settled, timeout=60)
        from_member = cluster.publish(members[2], b"a certificate, say")
        from_observer = cluster.publish(observer, b"relayed by an observer")
        await cluster.wait_for(lambda: cluster.reached(from_member) == 6 and cluster.reached(from_observer) == 6,
                               timeout=30)
        result = {
            "joined": joined,
            "member_broadcast_reached": cluster.reached(from_member),
            "observer_broadcast_reached": cluster.reached(from_observer),
            "observer_in_members": [observer.id in m.membership.members for m in members if m.membership],
            "observer_group_size": observer.membership.group_size() if observer.membership else 0,
        }
        nursery.cancel_scope.cancel()
    return result


def test_an_observer_reads_and_relays_broadcasts_without_a_place_in_the_committee() -> None:
    result = trio.run(_observer_scenario, 8, clock=MockClock(autojump_threshold=0))
    assert result["joined"] is not None, "the observer and the committee never learned each other"
    assert result["member_broadcast_reached"] == 6 and result["observer_broadcast_reached"] == 6, result
    assert result["observer_in_members"] == [False] * 5
    assert result["observer_group_size"] == 6  # it counts the committee (and itself), like everyone


def test_penalty_book_stays_bounded_under_fresh_ids() -> None:
    book = PenaltyBook(threshold=10, half_life=60, ban_seconds=60)
    for i in range(30_000):
        assert book.penalize(i.to_bytes(32, "big"), 10, 1.0)  # every fresh id earns a ban at once
        book.penalize((i + 10**6).to_bytes(32, "big"), 1, 1.0)  # and as many a small score
    assert len(book._banned_until) <= PenaltyBook.MAX_ENTRIES
    assert len(book._scores) <= PenaltyBook.MAX_ENTRIES
    assert book.banned((29_999).to_bytes(32, "big"), 2.0)  # the newest bans hold
