"""A crash between vote and reply never lets an owner vote twice for one (from, seq) after restart.

Real Nodes with real RocksDB stores on simulated links (tests/sim/bank.py) under a MockClock. An
order goes through a gateway; one owner of the sender (the victim) is crashed at an exact point of
its vote path, restarted on the same store, and then sent a conflicting order for the same
(sender, seq) as well as the original order again:

- `before_durable`: the group-commit write holding its lock never reaches the disk. No vote left
  the peer, so after the restart it may vote for either order, but never for both.
- `after_durable`: the lock is on disk, the vote was never sent. After the restart the lock must
  still hold: the conflicting order is refused CONFLICT with the locked order as evidence, and the
  original order gets the identical vote.
- `after_send`: the vote left, then the peer died. Same obligations as `after_durable`.

The crash is injected only in this test, by wrapping the victim node's instance attributes (its
group-commit writer's `_write` and its links' `send`): production code is untouched. A "dead" peer
neither writes nor sends from the instant of the crash, which models a killed process exactly even
though its trio tasks unwind a moment later.

Only two owners of the sender can hear the gateway (the other two are cut off from it), so no
certificate forms: a certificate would be applied at the victim after its restart and replace the
lock, and the test would no longer be about the lock.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest
import trio
from trio.testing import MockClock

from crypto.errors import DecodeError
from crypto.messages import Order, Vote
from crypto.schema import Message, decode_any
from gossip.effects import Send
from peer.wire import Refusal, Refuse, VoteReply, VoteRequest
from store import layout
from tests.sim.bank import BankNetwork, Peer

POINTS = ("before_durable", "after_durable", "after_send")
SEEDS = tuple(range(1, 9))


@dataclass
class Outbound:
    """One settlement reply the victim put on the wire, and in which life (boot) it did."""

    boot: int
    dst: bytes
    msg: Message


@dataclass
class CrashRig:
    bank: BankNetwork
    victim: Peer
    point: str
    watched: frozenset[bytes]  # order ids whose replies we record
    lock_key: bytes  # the store key of the victim's lock for (sender, seq)
    dead: bool = False
    crashed_at: float | None = None
    lock_on_disk_at_crash: bytes | None = None
    sent: list[Outbound] = field(default_factory=list)

    def crash(self) -> None:
        """Kill the victim now: no write and no send happens after this line."""
        assert not self.dead
        self.dead = True
        self.crashed_at = trio.current_time()
        assert self.victim.store is not None
        self.lock_on_disk_at_crash = self.victim.store.get(self.lock_key)
        assert self.victim.scope is not None
        self.victim.scope.cancel()
        self.victim.up = False
        self.bank.net.detach(self.victim.id)

    def instrument(self) -> None:
        """Wrap the (current) victim node's writer and links; called after every boot."""
        node = self.victim.node
        assert node is not None
        boot = self.victim.boots
        writer = node.writer
        assert hasattr(writer, "_write") and hasattr(node.links, "send"), "crash hooks need these"
        store = self.victim.store
        assert store is not None
        links = node.links
        real_send = links.send
        first_life = boot == 1

        def write(ops: list[tuple[bytes, bytes | None]]) -> None:
            if self.dead:
                return  # the process is gone: nothing more reaches its disk
            holds_lock = any(key == self.lock_key for key, _ in ops)
            if first_life and holds_lock and self.point == "before_durable":
                self.crash()
                return
            store.write_ops(ops, sync=writer.sync)
            if first_life and holds_lock and self.point == "after_durable":
                self.crash()

        def send(peer_id: bytes, payload: bytes) -> bool:
            if self.dead:
                return True  # vanishes, like anything a dead process was about to send
            try:
                msg: Message | None = decode_any(payload)
            except DecodeError:
                msg = None  # a kind this test does not know: not a settlement reply, pass it on
            reply_to = (msg.vote.order_id if isinstance(msg, VoteReply)
                        else msg.order_id if isinstance(msg, Refusal) else None)
            if msg is not None and reply_to in self.watched:
                self.sent.append(Outbound(boot, peer_id, msg))
            ok = real_send(peer_id, payload)
            if first_life and self.point == "after_send" and isinstance(msg, VoteReply) \
                    and reply_to in self.watched:
                self.crash()
            return ok

        writer._write = write  # type: ignore[method-assign]
        links.send = send  # type: ignore[method-assign]

    async def restart(self) -> None:
        # Let the cancelled tasks unwind before the store is closed and reopened by the new node.
        await trio.sleep(0.05)
        victim = self.victim
        assert victim.store is not None
        victim.store.close()
        victim.store = None
        victim.node = None
        self.dead = False
        await self.bank.boot(victim)
        self.instrument()

    def votes(self, *, boot: int | None = None) -> list[Vote]:
        return [o.msg.vote for o in self.sent if isinstance(o.msg, VoteReply)
                and (boot is None or o.boot == boot)]

    def refusals(self, order_id: bytes, *, boot: int) -> list[Refusal]:
        return [o.msg for o in self.sent if isinstance(o.msg, Refusal) and o.msg.order_id == order_id
                and o.boot == boot]


async def scenario(seed: int, point: str) -> None:
    rng = random.Random(f"vote-crash/{seed}/{point}")
    bank = BankNetwork(seed, peers=5, accounts=4)
    try:
        async with trio.open_nursery() as nursery:
            await bank.start(nursery)
            await trio.sleep(0.5)
            sender, recipient, other = bank.keys[0], bank.keys[1], bank.keys[2]
            owners = bank.owners(sender.public)
            assert len(owners) == 4
            gateway = next(p for p in bank.members if p not in owners)
            victim, _helper, *cut = rng.sample(owners, 4)
            # Keep a certificate from forming: only the victim and one helper hear the gateway.
            for peer in cut:
                bank.net.block(gateway.id, peer.id)

            original = Order.create(sender, bank.network_id, recipient.public, 10, 0, f"a{seed}")
            rival = Order.create(sender, bank.network_id, other.public, 20, 0, f"b{seed}")
            rig = CrashRig(bank, victim, point, frozenset({original.id, rival.id}),
                           layout.lock_key(sender.public, 0))
            rig.instrument()

            assert gateway.node is not None
            payment = gateway.node.submit(original)
            with trio.move_on_after(5):
                while not rig.dead:
                    await trio.sleep(0.001)
            assert rig.dead, f"{point}: the crash point was never reached"

            # What the crash left behind is exactly what the crash point promises.
            before = rig.votes(boot=1)
            if point == "before_durable":
                assert rig.lock_on_disk_at_crash is None
                assert before == []
            elif point == "after_durable":
                assert rig.lock_on_disk_at_crash is not None
                assert before == [], "the vote must not leave before its lock is durable"
            else:
                assert rig.lock_on_disk_at_crash is not None
                assert [v.order_id for v in before] == [original.id]
            if rig.lock_on_disk_at_crash is not None:
                lock = layout.Lock.decode(rig.lock_on_disk_at_crash)
                assert Order.decode(lock.order) == original
                locked_vote = Vote.decode(lock.vote)
                assert locked_vote.voter == victim.id and locked_vote.order_id == original.id

            await trio.sleep(rng.uniform(0.0, 0.5))
            await rig.restart()
            assert victim.node is not None and victim.boots == 2

            # Ask the restarted owner for the rival first (the dangerous one), then the original;
            # the gateway also keeps re-asking it for the original on its own backoff schedule.
            first, second = rival, original
            if point == "before_durable" and rng.random() < 0.5:
                first, second = original, rival
            for order in (first, second):
                gateway.node.runtime.perform([Send(victim.id, VoteRequest(order))])
                await trio.sleep(0.2)
            await trio.sleep(2.0)

            # Never two orders voted for one (sender, seq), across both lives of the peer.
            voted = {v.order_id for v in rig.votes()}
            assert len(voted) == 1, f"{point}: the owner voted for {len(voted)} orders at one seq"
            after = rig.votes(boot=2)
            assert after, "the restarted owner must answer with a vote for one of the orders"
            assert len({(v.voter, v.order_id, v.sig) for v in rig.votes()}) == 1, \
                "every vote it ever sent must be the one identical vote"

            if point == "before_durable":
                (chosen,) = voted
                loser = rival if chosen == original.id else original
                winner = original if chosen == original.id else rival
                refusals = rig.refusals(loser.id, boot=2)
                assert refusals and all(r.code == Refuse.CONFLICT for r in refusals)
                assert all(Order.decode(r.evidence) == winner for r in refusals)
            else:
                assert voted == {original.id}, "the durable lock must survive the crash"
                assert all(v == locked_vote for v in after), "the same vote, re-sent from the lock"
                refusals = rig.refusals(rival.id, boot=2)
                assert refusals, "the conflicting order must be refused, not ignored"
                assert all(r.code == Refuse.CONFLICT for r in refusals)
                assert all(r.evidence == original.encode() for r in refusals)
                assert payment.order == original

            # The lock is still on the restarted owner's disk and names the order it voted for.
            assert victim.store is not None
            raw = victim.store.get(rig.lock_key)
            assert raw is not None
            assert Order.decode(layout.Lock.decode(raw).order).id in voted
            nursery.cancel_scope.cancel()
    finally:
        bank.close()


@pytest.mark.parametrize("point", POINTS)
@pytest.mark.parametrize("seed", SEEDS)
def test_crash_between_vote_and_reply_never_votes_twice(seed: int, point: str) -> None:
    trio.run(scenario, seed, point, clock=MockClock(autojump_threshold=0))
