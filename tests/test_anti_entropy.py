"""Anti-entropy repairs what nothing else will: an owner that was away longer than the gateways
kept re-delivering certificates, and longer than broadcast pull repair remembers them, gets the
credits it missed from its co-owners (deterministic simulation, real stores)."""

from __future__ import annotations

import trio
from trio.testing import MockClock

from crypto.messages import Order
from tests.sim.bank import BankNetwork


async def _scenario(seed: int) -> tuple[dict, dict, int]:
    bank = BankNetwork(seed, peers=6, accounts=12)
    try:
        async with trio.open_nursery() as nursery:
            await bank.start(nursery)
            await trio.sleep(3)
            recipient = bank.keys[0].public
            owners = bank.owners(recipient)
            absent = owners[0]
            bank.crash(absent)
            # Credits to the recipient from several senders while one of its owners is down; each
            # settles with the other owners (W of N).
            live = [p for p in bank.members if p.up]
            for i, sender in enumerate(bank.keys[1:7]):
                order = Order.create(sender, bank.network_id, recipient, 100 + i, 0, "while away")
                node = live[i % len(live)].node
                node.submit(order)
                event = await node.wait(order.id, "settled", 30)
                assert event is not None and event.status == "settled", event
            # Longer than every gateway's delivery retries and than broadcast pull repair keeps
            # messages (BroadcastConfig.keep_window): only anti-entropy can bring them now.
            await trio.sleep(330)
            await bank.restart(absent)
            present = next(p for p in owners if p is not absent)

            def state(peer) -> tuple:
                s = peer.node.settlement.ledger.peek(recipient)
                return None if s is None else (s.balance, s.credits, s.credit_digest)

            await bank.wait_for(lambda: state(absent) == state(present), timeout=60, step=0.5)
            # Certificates it pulled from co-owners after comparing digests (credits by id, and debits
            # of senders it also owns by sequence range).
            result = state(absent), state(present), absent.node.settlement.sync.counters["certs_pulled"]
            nursery.cancel_scope.cancel()
    finally:
        bank.close()
    return result


def test_owner_away_past_redelivery_catches_up_by_anti_entropy() -> None:
    for seed in (1, 2):
        absent, present, pulled = trio.run(_scenario, seed, clock=MockClock(autojump_threshold=0))
        assert present is not None and present[1] == 6, f"seed {seed}: the live owners did not apply the credits"
        assert absent == present, f"seed {seed}: the returning owner did not converge: {absent} vs {present}"
        assert pulled >= 6, f"seed {seed}: converged without anti-entropy pulling the certificates ({pulled})"
