"""Sync requests (catch-up, anti-entropy, credit listings) cost the answering peer store reads and
long replies, so only co-owners may make them, within a budget, and each has a bounded price.

Found by an attacker's review (2 December 2026), against a real devnet: an outsider's 39-byte
`CreditsRequest` made a peer read an account's whole history (0.74 of a core, a bench could not
finish); `CertRange` cost 64 certificate decodes per 41-byte request; one committee member's
`CertFetch` naming one certificate 512 times took a peer to 364 MB; its `CreditsRequest` flood held
a core; and every outsider key that sent one digest left state behind for good.
"""

from __future__ import annotations

import os

import trio

from crypto.keys import SigningKey
from crypto.messages import Order
from gossip.effects import Send
from peer.settlement import SYNC_BURST, Settlement
from peer.sync import CREDITS_SCAN
from peer.wire import (
    AE_BUCKETS,
    AEDigest,
    CertBatch,
    CertFetch,
    CertRange,
    CreditsReply,
    CreditsRequest,
)
from store import layout
from store.db import Batch
from tests.sim.bank import BankNetwork, run_on_bank


def _replies(settlement: Settlement, to: bytes) -> list[object]:
    return [e.msg for e in settlement.out.drain() if isinstance(e, Send) and e.dst == to]


def _run(body) -> None:
    run_on_bank(body, seed=11, peers=5, accounts=6)


async def _paid(bank: BankNetwork) -> tuple[Order, Settlement, bytes]:
    """A settled payment, an owner of its sender, and another committee member that co-owns it."""
    order = Order.create(bank.keys[0], bank.network_id, bank.keys[1].public, 5, 0, "x")
    gateway = bank.members[0].node
    gateway.submit(order)
    assert (await gateway.wait(order.id, "settled", 30)).status == "settled"
    owners = bank.committee().owners(order.sender)
    owner = bank.by_id(owners[0]).node.settlement
    return order, owner, owners[1]


def test_outsiders_get_no_answer_to_sync_requests_and_leave_no_state() -> None:
    async def body(bank: BankNetwork) -> None:
        order, owner, member = await _paid(bank)
        owner.out.drain()
        stranger = SigningKey.generate().public
        now = trio.current_time()
        for msg in (CreditsRequest(order.recipient, 0), CertRange(order.sender, 0, 64), CertFetch((order.id,)),
                    AEDigest(tuple(os.urandom(8) for _ in range(AE_BUCKETS)))):
            owner.handle(stranger, msg, now)
        assert _replies(owner, stranger) == []
        assert owner.counters["sync_refused"] == 4
        assert stranger not in owner.sync._differed and stranger not in owner._sync_budget
        # The same requests from a co-owner are answered.
        owner.handle(member, CertRange(order.sender, 0, 64), now)
        owner.handle(member, CertFetch((order.id,)), now)
        got = _replies(owner, member)
        assert [type(m) for m in got] == [CertBatch, CertBatch]
        assert all(c.order.id == order.id for m in got for c in m.certs)
    _run(body)


def test_a_member_asking_for_one_certificate_many_times_gets_it_once() -> None:
    async def body(bank: BankNetwork) -> None:
        order, owner, member = await _paid(bank)
        owner.out.drain()
        owner.handle(member, CertFetch((order.id,) * 512), trio.current_time())
        got = _replies(owner, member)
        assert len(got) == 1 and len(got[0].certs) == 1
    _run(body)


def test_a_credits_request_reads_a_bounded_stretch_of_history_and_says_where_to_go_on() -> None:
    async def body(bank: BankNetwork) -> None:
        order, owner, member = await _paid(bank)
        account = order.sender
        # A long run of debits (no credits) written straight into the owner's store, past its history.
        state = owner.ledger.account(account)
        batch = Batch()
        for i in range(3 * CREDITS_SCAN):
            batch.put_history(account, state.history + i, layout.HistoryEntry(os.urandom(32), layout.DIRECTION_DEBIT))
        owner.store.write(batch, sync=False)
        owner.out.drain()
        after, pages = state.history, 0
        while True:
            owner.handle(member, CreditsRequest(account, after), trio.current_time())
            [reply] = _replies(owner, member)
            assert isinstance(reply, CreditsReply) and reply.ids == ()
            pages += 1
            if not reply.next_after:
                break
            assert reply.next_after - after <= CREDITS_SCAN
            after = reply.next_after
        assert pages == 4  # three full stretches of debits, then the end
    _run(body)


def test_each_member_has_a_budget_of_sync_requests() -> None:
    async def body(bank: BankNetwork) -> None:
        order, owner, member = await _paid(bank)
        owner.out.drain()
        now = trio.current_time()
        for _ in range(int(SYNC_BURST) + 50):
            owner.handle(member, CertRange(order.sender, 0, 1), now)
        assert len(_replies(owner, member)) == int(SYNC_BURST)
        assert owner.counters["sync_refused"] == 50
        await trio.sleep(1.0)  # the budget refills
        owner.handle(member, CertRange(order.sender, 0, 1), trio.current_time())
        assert len(_replies(owner, member)) == 1
    _run(body)
