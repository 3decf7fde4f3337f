"""`devnet chaos`: a bank workload under a seeded nemesis schedule, then heal, quiesce and audit.

The workload: a few clients, each with its own account funded at the start (from the devnet's
bench accounts, as `devnet bench` does). A client pays small amounts to the others through any
peer (the binary client protocol, as the bench), one order at a time and in sequence, as a wallet
must. When an attempt gets no answer it asks another peer with the very same signed order; when
its op timeout passes it records the op as timed out and keeps retrying that order in its next op
(never signing another order for that sequence number). Some clients also try to overdraw (an
amount larger than all the workload's money: every owner must refuse it), and every client
sometimes sends an order that was already acknowledged again (it must come back certified, the
same payment, never a second one).

Meanwhile the nemesis (devnet/chaos/nemesis.py) applies the schedule (devnet/chaos/schedule.py).
Every op records the fault window it overlapped (healthy: none while it was in flight) and how many
owners of its payer and payee that window lost, so availability can be read per window kind and
per number of lost owners.

At the end: heal everything, restart what was killed, wait for membership to converge, let the
clients finish the orders they still have in flight, then the auditor (devnet/audit.py): supply,
no negative balance, replicas identical, one certificate per (sender, seq), every certificate and
every acknowledged payment applied by every owner; plus the workload's own checks (no overdraft
certified).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from crypto.keys import SigningKey
from crypto.messages import Order
from devnet.audit import AuditReport, audit
from devnet.bench import Bench, BenchConfig, Gateway, HttpGateway, Ticket
from devnet.chaos import report
from devnet.chaos.nemesis import Nemesis
from devnet.chaos.report import CERTIFIED, OVERDRAW, PAY, REPLAY, TIMEOUT, Op
from devnet.chaos.schedule import Timing, Window
from devnet.layout import Devnet
from peer.ring import Ring

FUNDING = 1_000_000  # minor units per client account
MAX_AMOUNT = 100  # a normal payment: never more than a client's own funding can cover
# Answers that settle an attempt: the owners decided about this very order.
FINAL_REFUSALS = {"insufficient_funds", "seq_too_low", "bad_signature", "wrong_network", "self_transfer",
                  "bad_address", "not_owner", "already_final"}


@dataclass
class ChaosConfig:
    duration: float
    seed: int
    schedule: list[Window]
    clients: int = 8
    overdrawers: int = 2
    op_timeout: float = 15.0
    attempt_timeout: float = 3.0
    quiesce_timeout: float = 90.0
    timing: Timing = field(default_factory=Timing)


@dataclass
class ChaosResult:
    ops: list[Op]
    applied: list[dict]
    audit: AuditReport | None
    violations: list[str]
    notes: list[str]
    acknowledged: int
    seconds: float

    @property
    def ok(self) -> bool:
        return not self.violations

    def as_dict(self) -> dict:
        return {"ok": self.ok, "violations": self.violations, "notes": self.notes, "seconds": self.seconds,
                "acknowledged": self.acknowledged, "windows": self.applied,
                "by_window": report.by_window(self.ops), "by_lost_owners": report.by_lost_owners(self.ops),
                "replays": report.replays(self.ops),
                "audit": self.audit.as_dict() if self.audit else None}


class Client:
    def __init__(self, index: int, key: SigningKey, overdrawer: bool, rng: random.Random) -> None:
        self.index = index
        self.key = key
        self.overdrawer = overdrawer
        self.rng = rng
        self.seq = 0  # a fresh account
        self.pending: Order | None = None  # signed; whether it certified is not known yet
        self.signed: dict[int, list[Order]] = {}  # every order signed per seq (to answer a conflict)
        self.acked: list[Order] = []


class Chaos:
    def __init__(self, devnet: Devnet, config: ChaosConfig, say: Callable[[str], None] = lambda text: None) -> None:
        self.devnet = devnet
        self.config = config
        self.say = say
        self.bench = Bench(devnet, BenchConfig(seed=config.seed))
        genesis = self.bench.genesis
        self.network_id = genesis.network_id
        self.ring = Ring(genesis.committee, genesis.replication, genesis.vnodes)
        self.names = {bytes.fromhex(p.peer_id): p.name for p in devnet.peers}
        self.rng = random.Random(config.seed)
        self.nemesis = Nemesis(devnet, config.seed)
        self.ops: list[Op] = []
        self.acknowledged: set[str] = set()
        self.violations: list[str] = []
        self.notes: list[str] = []
        self.suspect: dict[int, float] = {}  # gateway index -> until (perf_counter)
        self.t0 = 0.0
        self.stopping = False

    # ---- timing ---------------------------------------------------------------------------------
    def now(self) -> float:
        return time.perf_counter() - self.t0

    async def sleep_until(self, at: float) -> None:
        await trio.sleep(max(0.0, at - self.now()))

    # ---- the run --------------------------------------------------------------------------------
    async def run(self) -> ChaosResult:
        cfg = self.config
        keys = [SigningKey.generate() for _ in range(cfg.clients)]
        clients = [Client(i, k, i < cfg.overdrawers, random.Random(cfg.seed * 1000 + i)) for i, k in enumerate(keys)]
        self.recipients = [k.public for k in keys]
        started = time.perf_counter()
        async with trio.open_nursery() as nursery:
            await self.bench.connect(nursery)
            self.say(f"funding {cfg.clients} client accounts…")
            await self.bench.fund(keys, FUNDING)
            self.t0 = time.perf_counter()
            self.say(f"running {cfg.duration:.0f} s of load with {len(cfg.schedule)} fault windows")
            async with trio.open_nursery() as load:
                for client in clients:
                    load.start_soon(self._client_loop, client)
                await self._nemesis_loop()
                await self.sleep_until(cfg.duration)
                self.stopping = True
            self.say("healing, restarting what is down, waiting for membership…")
            await trio.to_thread.run_sync(self.nemesis.restore, self.now)
            await self._finish_pending(clients)
            nursery.cancel_scope.cancel()
        self.say("auditing…")
        audit_report = await trio.to_thread.run_sync(
            lambda: audit(self.devnet, quiet_timeout=60.0, token=self.devnet.audit_token,
                          acknowledged=self.acknowledged))
        self.violations += audit_report.violations
        return ChaosResult(self.ops, self.nemesis.applied, audit_report, self.violations,
                           self.notes + audit_report.notes, len(self.acknowledged), time.perf_counter() - started)

    async def _nemesis_loop(self) -> None:
        """The windows in order, each for its scheduled length. When undoing one overruns (a
        killed peer slow to restart on a loaded machine), the rest shift by as much, so no
        window is cut short; windows pushed past the end of the run are skipped (and noted)."""
        drift = 0.0
        for number, window in enumerate(self.config.schedule):
            if window.start + drift >= self.config.duration - self.config.timing.tail:
                self.notes.append(f"{len(self.config.schedule) - number} fault window(s) skipped: earlier "
                                  f"windows overran by {drift:.0f} s")
                return
            await self.sleep_until(window.start + drift)
            self.say(f"{self.now():7.1f}s  begin {window.describe().split('  ', 1)[1]}")
            await trio.to_thread.run_sync(self.nemesis.begin, window, self.now())
            await self.sleep_until(window.end + drift)
            await trio.to_thread.run_sync(self.nemesis.end, window, self.now)
            drift = max(drift, self.now() - window.end)
            self.say(f"{self.now():7.1f}s  end   {window.kind}")

    async def _finish_pending(self, clients: list[Client]) -> None:
        """After healing: every order whose outcome is still unknown is tried until it is decided."""
        deadline = self.now() + self.config.quiesce_timeout
        async with trio.open_nursery() as nursery:
            for client in clients:
                if client.pending is not None:
                    nursery.start_soon(self._settle_pending, client, deadline)

    async def _settle_pending(self, client: Client, deadline: float) -> None:
        while client.pending is not None and self.now() < deadline:
            order = client.pending
            self._after_pay(client, order, await self._attempt(client, order, PAY, "quiesce", retry=True))
        if client.pending is not None:
            self.notes.append(f"client {client.index}: seq {client.pending.seq} still undecided after healing "
                              f"({self.config.quiesce_timeout:.0f} s)")

    # ---- clients ---------------------------------------------------------------------------------
    async def _client_loop(self, client: Client) -> None:
        rng = client.rng
        while not self.stopping and self.now() < self.config.duration:
            if client.pending is not None:
                order = client.pending
                self._after_pay(client, order, await self._attempt(client, order, PAY, retry=True))
            elif client.overdrawer and rng.random() < 0.3:
                total = FUNDING * self.config.clients * 10
                order = self._sign(client, total + rng.randrange(1000))
                op = await self._attempt(client, order, OVERDRAW)
                if op.outcome == CERTIFIED:
                    self.violations.append(f"an overdraft was certified: payment {op.order_id[:16]} of "
                                           f"{order.amount} from client {client.index}")
                    client.seq += 1
            elif client.acked and rng.random() < 0.08:
                await self._attempt(client, rng.choice(client.acked[-20:]), REPLAY)
            else:
                order = self._sign(client, 1 + rng.randrange(MAX_AMOUNT))
                self._after_pay(client, order, await self._attempt(client, order, PAY))
            await trio.sleep(rng.uniform(0.05, 0.3))

    def _sign(self, client: Client, amount: int) -> Order:
        others = [r for r in self.recipients if r != client.key.public]
        order = Order.create(client.key, self.network_id, client.rng.choice(others), amount, client.seq, "chaos")
        client.signed.setdefault(client.seq, []).append(order)
        return order

    def _after_pay(self, client: Client, order: Order, op: Op) -> None:
        if op.outcome == CERTIFIED:
            client.acked.append(order)
            client.pending = None
            client.seq = max(client.seq, order.seq + 1)
        elif op.outcome == TIMEOUT:
            client.pending = order  # its fate is unknown: only this order may use this seq now
        elif op.outcome == "conflict":
            # The owners hold another order of ours at this seq: that one is the one to finish.
            others = [o for o in client.signed.get(order.seq, []) if o.id != order.id]
            client.pending = others[-1] if others else order
            self.notes.append(f"client {client.index}: conflict at seq {order.seq}")
        else:
            client.pending = None
            if op.outcome == "refused:seq_too_low":
                self.notes.append(f"client {client.index}: seq {order.seq} was already used")
                client.seq += 1

    async def _attempt(self, client: Client, order: Order, kind: str, label: str = "", *,
                       retry: bool = False) -> Op:
        """Submit `order` through peers until it is decided or the op timeout passes. `label`: the
        window to count it in ("" = whichever it lived through, with the owners lost meanwhile)."""
        start = self.now()
        op = Op(client.index, kind, start, label, 0, 0, order.id.hex(), retry=retry)
        self.ops.append(op)
        await self._decide(op, order, client.rng)
        if not label:
            op.window, lost = self.nemesis.during(start, self.now())
            op.payer_lost = sum(self.names[o] in lost for o in self.ring.owners(order.sender))
            op.payee_lost = sum(self.names[o] in lost for o in self.ring.owners(order.recipient))
        return op

    async def _decide(self, op: Op, order: Order, rng: random.Random) -> None:
        cfg = self.config
        start = op.start
        deadline = start + cfg.op_timeout
        turn = rng.randrange(len(self.bench.gateways))
        while self.now() < deadline:
            gateway = self._pick(turn)
            turn += 1
            if gateway is None:
                await trio.sleep(0.2)
                continue
            ticket = Ticket(order)
            ticket.submitted = time.perf_counter()
            gateway.submit(ticket)
            op.attempts += 1
            with trio.move_on_after(max(0.0, min(cfg.attempt_timeout, deadline - self.now()))):
                await ticket.certified_event.wait()
            if ticket.certified is not None:
                op.outcome = CERTIFIED
                op.certified_s = ticket.certified - self.t0 - start
                self.acknowledged.add(op.order_id)
                with trio.move_on_after(max(0.0, deadline - self.now())):
                    await ticket.done.wait()
                if ticket.settled is not None:
                    op.settled_s = ticket.settled - self.t0 - start
                return
            if ticket.failed is None:  # no answer in time: this peer may be frozen or cut off
                self.suspect[gateway.index] = time.perf_counter() + 5.0
                continue
            if ticket.failed == "conflict":
                op.outcome = "conflict"
                return
            if ticket.failed in FINAL_REFUSALS:
                op.outcome = f"refused:{ticket.failed}"
                return
            await trio.sleep(0.2)  # timeout, overloaded, shutting down...: another peer, shortly

    def _pick(self, turn: int) -> Gateway | HttpGateway | None:
        gateways = self.bench.gateways
        now = time.perf_counter()
        usable = [g for g in gateways if g.alive and self.suspect.get(g.index, 0) <= now]
        usable = usable or [g for g in gateways if g.alive]
        return usable[turn % len(usable)] if usable else None

