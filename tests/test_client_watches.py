"""Client sessions waiting on payments: bounded, and cheap to end however many wait.

An attacker's session used to add one watcher per resubmit of the same pending order, and ending
a session removed them one list search at a time (quadratic: seconds of traffic froze a peer for
over a minute). Now a session holds one watch per payment and at most `MAX_WATCHES`, watches of
finished payments are dropped, and concurrent owner-status queries of one payment do not erase
each other's answers.
"""

from __future__ import annotations

import time

import trio

from crypto.messages import Order
from crypto.schema import decode_any
from peer.client_service import MAX_WATCHES, ClientService
from peer.client_wire import STATUS_NAMES, WAIT_SETTLED, PaymentStatus, Submit
from tests.sim.bank import BankNetwork, run_on_bank


class ScriptedSession:
    """A client session whose requests are given up front; it hangs up after the last one."""

    def __init__(self, payloads: list[bytes]) -> None:
        self._payloads = list(reversed(payloads))
        self.sent: list[PaymentStatus] = []

    async def receive(self) -> bytes:
        await trio.sleep(0)
        if not self._payloads:
            raise trio.EndOfChannel
        return self._payloads.pop()

    def send(self, payload: bytes) -> None:
        msg = decode_any(payload)
        assert isinstance(msg, PaymentStatus)
        self.sent.append(msg)


def _ahead(bank: BankNetwork, i: int, seq: int = 7) -> Order:
    """An order owners refuse as `seq_ahead` (retryable): it stays pending until its deadline."""
    return Order.create(bank.keys[i], bank.network_id, bank.keys[i + 1].public, 1, seq, "hold")


def _run(body) -> None:
    async def with_node(bank: BankNetwork) -> None:
        await body(bank, bank.members[0].node)
    run_on_bank(with_node, seed=5, peers=5, accounts=8)


def test_resubmits_of_one_pending_order_hold_one_watch_and_end_cheaply() -> None:
    async def body(bank: BankNetwork, node) -> None:
        service = ClientService(node)
        order = _ahead(bank, 0)
        repeats = 20_000
        a = ScriptedSession([Submit(i, order, WAIT_SETTLED).encode() for i in range(repeats)])
        b = ScriptedSession([Submit(i, order, WAIT_SETTLED).encode() for i in range(repeats)])
        seen: list[int] = []

        async def serve(session: ScriptedSession) -> None:
            await service.handle(session)

        async def watch_count() -> None:
            while True:
                seen.append(len(node._watchers.get(order.id, {})))
                await trio.sleep(0)

        async with trio.open_nursery() as inner:
            inner.start_soon(watch_count)
            cpu = time.process_time()
            async with trio.open_nursery() as sessions:
                sessions.start_soon(serve, a)
                sessions.start_soon(serve, b)
            used = time.process_time() - cpu
            inner.cancel_scope.cancel()
        assert max(seen) <= 2, f"one watch per session expected, saw {max(seen)}"
        assert order.id not in node._watchers  # both sessions ended: nothing left behind
        assert len(a.sent) == repeats and all(STATUS_NAMES[m.status] == "pending" for m in a.sent)
        # 40,000 requests; the quadratic clean-up took minutes for this many.
        assert used < 30, f"{used:.1f} s of CPU for {2 * repeats} resubmits"
    _run(body)


def test_a_session_waits_on_at_most_max_watches_payments() -> None:
    async def body(bank: BankNetwork, node) -> None:
        service = ClientService(node)
        # Distinct pending orders: one account, many sequence numbers ahead of it.
        orders = [_ahead(bank, 2, seq) for seq in range(5, 5 + MAX_WATCHES + 3)]
        session = ScriptedSession([Submit(i, o, WAIT_SETTLED).encode() for i, o in enumerate(orders)])
        await service.handle(session)
        codes = [(STATUS_NAMES[m.status], m.code) for m in session.sent]
        assert codes[:MAX_WATCHES] == [("pending", "")] * MAX_WATCHES
        assert codes[MAX_WATCHES:] == [("rejected", "too_many_waiting")] * 3
        # The refused ones were never started at the gateway.
        assert all(node.settlement.gateway.lookup(o.id) is None for o in orders[MAX_WATCHES:])
        assert not any(o.id in node._watchers for o in orders)
    _run(body)


def test_finished_payments_leave_the_session_and_its_watch() -> None:
    async def body(bank: BankNetwork, node) -> None:
        service = ClientService(node)
        order = Order.create(bank.keys[3], bank.network_id, bank.keys[4].public, 5, 0, "real")
        session = ScriptedSession([Submit(1, order, WAIT_SETTLED).encode()])

        async def serve() -> None:
            await service.handle(session)

        # Keep the session open (no EndOfChannel) until the payment has settled.
        gate = trio.Event()
        original = session.receive

        async def receive() -> bytes:
            if session._payloads:
                return await original()
            await gate.wait()
            raise trio.EndOfChannel

        session.receive = receive  # type: ignore[method-assign]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve)
            with trio.fail_after(30):
                while not any(STATUS_NAMES[m.status] == "settled" for m in session.sent):
                    await trio.sleep(0.05)
            assert order.id not in node._watchers  # done: the watch went with it
            gate.set()
    _run(body)


def test_concurrent_status_queries_of_one_payment_each_get_every_answer() -> None:
    async def body(bank: BankNetwork, node) -> None:
        order = Order.create(bank.keys[5], bank.network_id, bank.keys[6].public, 5, 0, "pay")
        gateway = bank.members[1].node
        gateway.submit(order)
        assert (await gateway.wait(order.id, "settled", 30)).status == "settled"
        owners = node.settlement.ring.owners(order.sender)
        results: list[dict[bytes, int]] = []

        async def ask(delay: float) -> None:
            await trio.sleep(delay)
            results.append(await node.applied_by(order.id, owners, 2.0))

        async with trio.open_nursery() as nursery:
            for i in range(20):
                nursery.start_soon(ask, i * 0.001)
        assert len(results) == 20
        assert all(set(r) == set(owners) for r in results), [len(r) for r in results]
        assert order.id not in node._status_answers
    _run(body)
