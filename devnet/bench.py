"""`devnet bench`: load over many accounts, through the binary client protocol on the peer ports.

Phases: (1) make fresh bench accounts and fund them from the devnet's bench accounts (made for
this in the genesis: the demo wallets are never spent; not timed); (2) pre-sign
each account's orders (signing is the wallet's work, not the network's: not timed); (3) run the load:
each account sends its orders in sequence (the next only after the previous is certified, as a
wallet must), spread over all gateways, at a fixed offered `rate` or with `concurrency` accounts
busy at once; (4) report throughput, latency percentiles to `certified` and to `settled`, failures by
kind, and the fraction of the signature-cost bound (sign/verify CPU time measured in this same run).

CPU is reported per settled payment, separately for the peers (every peer process's user+system
time from /proc over the load phase) and for this client process; and how busy the whole machine
was meanwhile, so a run on a shared machine says how much of the box others were using.

A gateway that disappears mid-run (a killed peer) is survived: its outstanding orders are submitted
again, the very same signed bytes, through another peer.
"""

from __future__ import annotations

import gc
import math
import os
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import trio

from crypto import keystore
from crypto.address import encode_address
from crypto.errors import DecodeError
from crypto.keys import SigningKey
from crypto.messages import Order
from crypto.schema import decode_any
from devnet import epochs, sigcost
from devnet.cpustat import CpuMeter
from devnet.httpclient import HttpClient, HttpError
from devnet.layout import Devnet, DevnetError
from devnet.processes import is_running, live_pid
from gossip.client import CONNECTION_FAILURES, ClientConnection, open_client
from gossip.links import ConnectError
from peer.client_wire import STATUS_NAMES, WAIT_SETTLED, PaymentStatus, Submit
from peer.genesis import load as load_genesis

MAX_BENCH_AMOUNT = 100  # minor units per bench payment: bench accounts need little money


@dataclass
class Ticket:
    order: Order
    submitted: float = 0.0
    certified: float | None = None
    settled: float | None = None
    failed: str | None = None
    done: trio.Event = field(default_factory=trio.Event)
    certified_event: trio.Event = field(default_factory=trio.Event)
    gateway: int = -1
    attempts: int = 0


class Gateway:
    """One client connection to a peer, with pipelined submissions matched by request id."""

    def __init__(self, index: int, host: str, port: int, network_id: bytes) -> None:
        self.index = index
        self.host, self.port, self.network_id = host, port, network_id
        self.conn: ClientConnection | None = None
        self.tickets: dict[int, Ticket] = {}
        self._req = 0
        self._queue: deque[bytes] = deque()
        self._wake = trio.Event()
        self.alive = False
        self.on_lost: Callable[[Gateway, list[Ticket]], None] = lambda gw, lost: None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        started = False
        while True:
            try:
                self.conn = await open_client(self.host, self.port, self.network_id)
            except ConnectError:
                if not started:
                    started = True
                    task_status.started()
                await trio.sleep(0.5)
                continue
            self.alive = True
            if not started:
                started = True
                task_status.started()
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._reader, nursery.cancel_scope)
                    await self._writer()
            except CONNECTION_FAILURES:
                pass
            self.alive = False
            lost = list(self.tickets.values())
            self.tickets.clear()
            self._queue.clear()
            self.on_lost(self, lost)
            await trio.sleep(0.5)

    def submit(self, ticket: Ticket) -> None:
        self._req += 1
        self.tickets[self._req] = ticket
        ticket.gateway = self.index
        ticket.attempts += 1
        self._queue.append(Submit(self._req, ticket.order, WAIT_SETTLED).encode())
        self._wake.set()

    async def _writer(self) -> None:
        assert self.conn is not None
        while True:
            if not self._queue:
                self._wake = trio.Event()
                await self._wake.wait()
            await trio.sleep(0)  # coalesce submissions made in this scheduler pass
            batch = []
            size = 0
            while self._queue and size < 512 * 1024:
                item = self._queue.popleft()
                batch.append(item)
                size += len(item)
            await self.conn.send_many(batch)

    async def _reader(self, scope: trio.CancelScope) -> None:
        assert self.conn is not None
        try:
            while True:
                payload = await self.conn.receive()
                try:
                    msg = decode_any(payload)
                except DecodeError:
                    continue
                if type(msg) is PaymentStatus:
                    self._on_status(msg)
        except (trio.EndOfChannel, *CONNECTION_FAILURES):
            scope.cancel()

    def _on_status(self, msg: PaymentStatus) -> None:
        ticket = self.tickets.get(msg.req)
        if ticket is None:
            return
        now = time.perf_counter()
        status = STATUS_NAMES[msg.status]
        if status in ("certified", "settled") and ticket.certified is None:
            ticket.certified = now
            ticket.certified_event.set()
        if status == "settled":
            ticket.settled = now
            self.tickets.pop(msg.req, None)
            ticket.done.set()
        elif msg.code == "shutting_down":
            # The gateway is leaving (a removed or restarted peer): the same order through another.
            self.alive = False
            self.tickets.pop(msg.req, None)
            self.on_lost(self, [ticket])
        elif status in ("failed", "rejected"):
            ticket.failed = msg.code or status
            self.tickets.pop(msg.req, None)
            ticket.certified_event.set()
            ticket.done.set()


class HttpGateway:
    """The same role as `Gateway`, through the peer's HTTP JSON API (to measure what HTTP costs).

    Each payment is two requests: POST with wait=certified, then the same signed order again with
    wait=settled (idempotent: it joins the payment), so both latencies are seen by the client. The
    requests go through `devnet.httpclient` (keep-alive, little client CPU), not httpx.
    """

    def __init__(self, index: int, api: str, max_connections: int = 256) -> None:
        self.index = index
        self.api = api
        host, _, port = api.removeprefix("http://").rpartition(":")
        self.client = HttpClient(host, int(port), max_connections=max_connections)
        self.alive = False
        self.on_lost: Callable[[HttpGateway, list[Ticket]], None] = lambda gw, lost: None
        self._nursery: trio.Nursery | None = None

    async def _up(self) -> bool:
        try:
            status, _ = await self.client.request("GET", "/v1/status")
        except HttpError:
            return False
        return status == 200

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self.alive = await self._up()
            task_status.started()
            try:
                while True:
                    await trio.sleep(0.5)
                    if not self.alive:
                        self.alive = await self._up()
            finally:
                self.client.close()

    def submit(self, ticket: Ticket) -> None:
        assert self._nursery is not None
        ticket.gateway = self.index
        ticket.attempts += 1
        self._nursery.start_soon(self._pay, ticket)

    async def _pay(self, ticket: Ticket) -> None:
        body = {"order": ticket.order.encode().hex(), "timeout": 30}
        try:
            for wait in ("certified", "settled"):
                status, doc = await self.client.request("POST", "/v1/payments", {**body, "wait": wait})
                if status != 200:
                    error = doc.get("error", {}) if isinstance(doc, dict) else {}
                    ticket.failed = error.get("code", str(status)) if isinstance(error, dict) else str(status)
                    ticket.certified_event.set()
                    ticket.done.set()
                    return
                now = time.perf_counter()
                if wait == "certified":
                    ticket.certified = now
                    ticket.certified_event.set()
                else:
                    ticket.settled = now
                    ticket.done.set()
        except HttpError:
            self.alive = False
            self.on_lost(self, [ticket])


@dataclass
class BenchConfig:
    accounts: int = 200
    payments: int | None = 2000
    duration: float | None = None
    rate: float | None = None
    concurrency: int | None = None
    settle_timeout: float = 30.0
    seed: int | None = None
    via: str = "binary"  # or "http"
    stop: threading.Event | None = None  # set by another thread: issue no more payments (tests, benchmarks)


@dataclass
class BenchReport:
    payments: int
    settled: int
    certified: int
    failures: dict[str, int]
    seconds: float
    throughput: float
    certified_ms: dict[str, float]
    settled_ms: dict[str, float]
    sign_us: float
    verify_us: float
    bound_per_second: float
    bound_formula: str
    fraction_of_bound: float
    offered: str
    resubmits: int
    per_gateway: dict[str, int]
    server_cpu_us: float  # all peers' CPU per settled payment
    client_cpu_us: float  # this load generator's CPU per settled payment
    server_cores: float  # mean cores the peers used during the load
    machine_busy_cores: float | None  # mean cores the whole machine used (peers, client, others)
    others_cores: float | None  # what the rest of the machine used meanwhile
    signature_share: float  # the bound's signature CPU per payment / the peers' CPU per payment
    cpu_complete: bool  # False if a peer's CPU could not be followed to the end (it was killed)
    certified_ids: list[str]

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items()}


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": math.nan, "p95": math.nan, "p99": math.nan, "max": math.nan}
    ordered = sorted(values)

    def q(p: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))] * 1000

    return {"p50": q(50), "p95": q(95), "p99": q(99), "max": ordered[-1] * 1000}


class Bench:
    def __init__(self, devnet: Devnet, config: BenchConfig, progress: Callable[[str, int, int], None] | None = None) -> None:
        self.devnet = devnet
        self.config = config
        self.genesis = load_genesis(devnet.genesis_path)
        self.network_id = self.genesis.network_id
        self.ring = epochs.verified_chain(devnet).current.ring  # the owners now (devnet/epochs.py)
        self.rng = random.Random(config.seed)
        self.progress = progress or (lambda phase, done, total: None)
        self.gateways: list[Gateway | HttpGateway] = []
        self.resubmits = 0
        self.funded_from = "bench accounts"
        self.server_cpu = 0.0
        self.client_cpu = 0.0
        self.machine_busy: float | None = None
        self.cpu_complete = True

    # ---- connections ----------------------------------------------------------------------------
    async def connect(self, nursery: trio.Nursery) -> None:
        for i, entry in enumerate(self.devnet.peers):
            gw = HttpGateway(i, entry.api) if self.config.via == "http" else \
                Gateway(i, entry.host, entry.port, self.network_id)
            gw.on_lost = self._on_lost
            self.gateways.append(gw)
            await nursery.start(gw.run)
        with trio.fail_after(15):
            while not any(g.alive for g in self.gateways):
                await trio.sleep(0.05)

    def _pick(self, index: int) -> Gateway | HttpGateway:
        live = [g for g in self.gateways if g.alive]
        if not live:
            raise ConnectError("no peer of the devnet accepts connections")
        return live[index % len(live)]

    def _on_lost(self, gw: Gateway | HttpGateway, lost: list[Ticket]) -> None:
        # The same signed order again, through another gateway: it can only ever settle once.
        for i, ticket in enumerate(lost):
            if ticket.done.is_set():
                continue
            self.resubmits += 1
            try:
                self._pick(gw.index + 1 + i).submit(ticket)
            except ConnectError:
                ticket.failed = "no_gateway"
                ticket.certified_event.set()
                ticket.done.set()

    async def _submit_and_wait(self, ticket: Ticket, gateway_hint: int, timeout: float) -> None:
        ticket.submitted = time.perf_counter()
        self._pick(gateway_hint).submit(ticket)
        with trio.move_on_after(timeout):
            await ticket.done.wait()
        if not ticket.done.is_set():
            ticket.failed = ticket.failed or ("settle_timeout" if ticket.certified else "timeout")

    # ---- phases ----------------------------------------------------------------------------------
    async def fund(self, accounts: list[SigningKey], amount: int) -> None:
        password = self.devnet.password()
        # The devnet's own bench accounts; only a devnet made before they existed lends its demo
        # wallets (and the report says so).
        sources = self.devnet.bench_funders or self.devnet.wallets
        self.funded_from = "bench accounts" if self.devnet.bench_funders else "demo wallets"
        funders = [keystore.load(w.key_file, password) for w in sources]
        if not funders:
            raise ConnectError("the devnet has no accounts to fund bench accounts from")
        seqs = [await self._next_seq(k.public) for k in funders]
        shares: list[list[SigningKey]] = [accounts[i::len(funders)] for i in range(len(funders))]
        done = 0

        async def fund(fi: int) -> None:
            nonlocal done
            for target in shares[fi]:
                for _ in range(5):
                    order = Order.create(funders[fi], self.network_id, target.public, amount, seqs[fi], "bench funding")
                    ticket = Ticket(order)
                    await self._submit_and_wait(ticket, fi, 30)
                    if ticket.settled is not None:
                        break
                    if ticket.failed in ("seq_too_low",):
                        seqs[fi] = await self._next_seq(funders[fi].public)
                else:
                    raise ConnectError(f"could not fund a bench account ({ticket.failed})")
                seqs[fi] += 1
                done += 1
                self.progress("funding", done, len(accounts))

        async with trio.open_nursery() as nursery:
            for fi in range(len(funders)):
                nursery.start_soon(fund, fi)

    async def _next_seq(self, account: bytes) -> int:
        owners = self.ring.owners(account)
        peers = {bytes.fromhex(p.peer_id): p for p in self.devnet.peers}
        async with httpx.AsyncClient(timeout=3.0) as client:
            best = 0
            for owner in owners:
                entry = peers.get(owner)
                if entry is None or not is_running(entry, self.devnet):
                    continue
                try:
                    r = await client.get(f"{entry.api}/v1/accounts/{encode_address(account)}")
                except httpx.HTTPError:
                    continue
                if r.status_code == 200:
                    best = max(best, r.json()["next_seq"])
            return best

    async def run(self) -> BenchReport:
        cfg = self.config
        cost = sigcost.measure(repeats=5, n=1000)
        async with trio.open_nursery() as nursery:
            await self.connect(nursery)
            accounts = [SigningKey.generate() for _ in range(cfg.accounts)]
            per_account = self._plan(len(accounts))
            await self.fund(accounts, per_account * MAX_BENCH_AMOUNT)
            orders = self._presign(accounts, per_account)
            # The pre-signed orders are long-lived: keep the collector from rescanning them mid-run
            # (full collections would show up as latency the network did not cause).
            gc.collect()
            gc.freeze()
            tickets, seconds = await self._load(orders)
            nursery.cancel_scope.cancel()
        return self._report(tickets, seconds, cost, orders)

    def _plan(self, n_accounts: int) -> int:
        cfg = self.config
        if cfg.payments is not None:
            return max(1, math.ceil(cfg.payments / n_accounts))
        # duration-bound: enough orders that accounts never run dry within the duration
        per_second = cfg.rate if cfg.rate else 1000.0
        return max(4, math.ceil((cfg.duration or 10) * per_second / max(1, n_accounts)) + 4)

    def _presign(self, accounts: list[SigningKey], per_account: int) -> list[list[Order]]:
        publics = [k.public for k in accounts]
        orders = []
        total = len(accounts) * per_account
        done = 0
        for i, key in enumerate(accounts):
            mine = []
            for seq in range(per_account):
                to = publics[(i + 1 + self.rng.randrange(len(publics) - 1)) % len(publics)] if len(publics) > 1 else publics[0]
                mine.append(Order.create(key, self.network_id, to, 1 + self.rng.randrange(MAX_BENCH_AMOUNT), seq, "bench"))
                done += 1
                if done % 200 == 0:
                    self.progress("signing", done, total)
            orders.append(mine)
        return orders

    def _peer_pids(self) -> list[int]:
        try:
            current = Devnet.load(self.devnet.root)  # a restarted peer has a new pid
        except DevnetError:
            current = self.devnet
        pids = (live_pid(current, p) for p in current.peers)
        return [pid for pid in pids if pid is not None]

    async def _follow_cpu(self, meter: CpuMeter) -> None:
        while True:
            await trio.sleep(0.5)
            meter.sample()
            for pid in self._peer_pids():
                meter.track(pid, from_zero=True)

    async def _load(self, orders: list[list[Order]]) -> tuple[list[Ticket], float]:
        async with trio.open_nursery() as nursery:
            meter = CpuMeter()
            meter.start(self._peer_pids())
            client_start = time.process_time()
            nursery.start_soon(self._follow_cpu, meter)
            tickets, seconds = await self._offer(orders)
            self.server_cpu, self.machine_busy = meter.stop()
            self.client_cpu = time.process_time() - client_start
            self.cpu_complete = meter.complete
            nursery.cancel_scope.cancel()
        return tickets, seconds

    async def _offer(self, orders: list[list[Order]]) -> tuple[list[Ticket], float]:
        cfg = self.config
        total = cfg.payments if cfg.payments is not None else sum(len(o) for o in orders)
        tickets: list[Ticket] = []
        start = time.perf_counter()
        stop_at = start + cfg.duration if cfg.duration is not None else math.inf
        limit = trio.CapacityLimiter(cfg.concurrency or len(orders))
        issued = 0
        certified = 0
        pacing = 1.0 / cfg.rate if cfg.rate else 0.0
        next_slot = start

        async def account_loop(i: int, mine: list[Order]) -> None:
            nonlocal issued, next_slot, certified
            for order in mine:
                if issued >= total or time.perf_counter() >= stop_at or (cfg.stop is not None and cfg.stop.is_set()):
                    return
                issued += 1
                if pacing:
                    next_slot = max(next_slot + pacing, time.perf_counter())
                    await trio.sleep_until(trio.current_time() + max(0.0, next_slot - time.perf_counter()))
                    if time.perf_counter() >= stop_at:
                        return
                async with limit:
                    ticket = Ticket(order)
                    tickets.append(ticket)
                    ticket.submitted = time.perf_counter()
                    self._pick(i).submit(ticket)
                    with trio.move_on_after(cfg.settle_timeout):
                        await ticket.certified_event.wait()
                if ticket.certified is None:
                    ticket.failed = ticket.failed or "timeout"
                    return  # the next order would be refused (seq ahead) until this one settles
                certified += 1
                if certified % 50 == 0 or certified == total:
                    self.progress("load", certified, total)

        async with trio.open_nursery() as nursery:
            for i, mine in enumerate(orders):
                nursery.start_soon(account_loop, i, mine)
        # let the tail settle
        deadline = trio.current_time() + cfg.settle_timeout
        for ticket in tickets:
            if ticket.certified is not None and ticket.failed is None:
                with trio.move_on_at(deadline):
                    await ticket.done.wait()
        end = max([t.settled or t.certified or start for t in tickets] + [start])
        return tickets, max(1e-9, end - start)

    def _report(self, tickets: list[Ticket], seconds: float, cost: sigcost.SigCost, orders: list[list[Order]]) -> BenchReport:
        certified = [t for t in tickets if t.certified is not None]
        settled = [t for t in tickets if t.settled is not None]
        failures = Counter(t.failed for t in tickets if t.failed and t.certified is None)
        failures.update("settle_timeout" for t in certified if t.settled is None)
        appliers = [len(set(self.ring.owners(t.order.sender)) | set(self.ring.owners(t.order.recipient)))
                    for t in tickets] or [self.genesis.replication]
        b = sigcost.bound(cost, replication=self.genesis.replication, quorum=self.genesis.quorum,
                          appliers=sum(appliers) / len(appliers), cores=os.cpu_count() or 1)
        throughput = len(settled) / seconds
        per_settled = 1e6 / max(1, len(settled))
        server_us = self.server_cpu * per_settled
        busy = None if self.machine_busy is None else self.machine_busy / seconds
        offered = (f"rate {self.config.rate}/s" if self.config.rate else
                   f"concurrency {self.config.concurrency or self.config.accounts}") + f", via {self.config.via}"
        return BenchReport(
            payments=len(tickets), settled=len(settled), certified=len(certified), failures=dict(failures),
            seconds=seconds, throughput=throughput,
            certified_ms=percentiles([t.certified - t.submitted for t in certified]),
            settled_ms=percentiles([t.settled - t.submitted for t in settled]),
            sign_us=cost.sign_us, verify_us=cost.verify_us, bound_per_second=b.payments_per_second,
            bound_formula=b.formula, fraction_of_bound=throughput / b.payments_per_second, offered=offered,
            resubmits=self.resubmits,
            server_cpu_us=server_us, client_cpu_us=self.client_cpu * per_settled,
            server_cores=self.server_cpu / seconds, machine_busy_cores=busy,
            others_cores=None if busy is None else max(0.0, busy - (self.server_cpu + self.client_cpu) / seconds),
            signature_share=b.per_payment_us / server_us if server_us else math.nan,
            cpu_complete=self.cpu_complete,
            per_gateway={self.devnet.peers[i].name: n for i, n in sorted(Counter(t.gateway for t in tickets).items())
                         if 0 <= i < len(self.devnet.peers)},
            certified_ids=[t.order.id.hex() for t in certified],
        )

