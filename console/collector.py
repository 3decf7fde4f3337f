"""The console's picture of the network, kept fresh by polling every peer's public API.

One trio task per peer asks it, once per interval, for `/v1/status`, `/v1/peers`, `/metrics` and the
certificates it saw since the last look (`/v1/explore/recent`). A slow or paused peer delays only
its own task. Every few seconds an audit task reads the owners' account states (`/v1/audit/accounts`)
for the supply check and asks the owners of watched accounts whether they are frozen. Readers (the
pages' event streams) wait on `changes`, a version number: they always get the latest picture and
nothing queues up behind a slow browser.

The console polls quickly only while someone is looking (an open page) and slowly otherwise, so a
console left running next to a devnet costs the peers little.
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

import httpx
import trio

from console import model
from console.peerapi import (
    AccountView,
    ContractError,
    Member,
    PeerApi,
    PeerError,
    PeerRefused,
    RecentItem,
    RingDoc,
    Status,
)
from console.sources import PeerRef, Source, normalize
from crypto.address import decode_address
from crypto.errors import AddressError, MeshpayError
from peer.epoch_chain import Chain, EpochCertificate
from peer.genesis import Genesis
from peer.ring import Ring

CHAIN_INTERVAL = 5.0  # seconds between looks for new epochs
log = logging.getLogger("meshpay.console")

HISTORY_SECONDS = 600.0
WATCH_SECONDS = 120.0  # accounts stay watched for freezing this long after they were last of interest
MAX_WATCHED = 50
T = TypeVar("T")


async def each(items: Iterable[T], action: Callable[[T], Awaitable[None]], limit: int = 8) -> None:
    """`await action(item)` for every item, at most `limit` at once (a slow peer delays only itself)."""
    limiter = trio.CapacityLimiter(limit)

    async def one(item: T) -> None:
        async with limiter:
            await action(item)

    async with trio.open_nursery() as nursery:
        for item in items:
            nursery.start_soon(one, item)


def owner_state(peer_id: str, view: AccountView | str) -> model.OwnerState:
    """An owner's answer for the model (a string is why it gave none)."""
    if isinstance(view, AccountView):
        return model.OwnerState(peer_id, view.balance, view.next_seq, view.credits, view.pending)
    return model.OwnerState(peer_id, None, None, None, None)


class Changes:
    """A version number that readers wait on; latest wins, so nothing queues up."""

    def __init__(self) -> None:
        self.version = 0
        self._event = trio.Event()

    def bump(self) -> None:
        self.version += 1
        self._event.set()
        self._event = trio.Event()

    async def wait_newer(self, seen: int, timeout: float) -> int:
        if self.version == seen:
            with trio.move_on_after(timeout):
                await self._event.wait()
        return self.version


@dataclass
class PeerState:
    ref: PeerRef
    status: Status | None = None
    members: list[Member] | None = None
    members_at: float = -math.inf
    up: bool | None = None  # None: not asked yet
    error: str | None = None
    last_ok: float | None = None
    down_since: float | None = None
    samples: deque[tuple[float, model.Sample]] = field(default_factory=deque)
    cursor: int = 0
    explore: bool | None = None
    contract: dict[str, str] = field(default_factory=dict)  # route -> what did not match
    admin: str | None = None  # enabled | refused: ... | off (no token given) | not sent (a found peer)
    wrong_network: bool = False
    named: bool = True  # the operator named it (--peer, or the devnet's own): only those get tokens

    @property
    def url(self) -> str:
        return self.ref.url

    @property
    def peer_id(self) -> str | None:
        return self.status.peer_id if self.status is not None else self.ref.peer_id

    @property
    def key(self) -> str:
        return self.peer_id or self.url


@dataclass(frozen=True)
class FeedItem:
    payment_id: str
    sender: str
    recipient: str
    amount: int
    seq: int
    first_seen: float
    certified_at: float | None
    gateway: str | None  # peer id of the gateway, when it reported the certificate
    applied: dict[str, int]  # peer id -> sides it applied (1 debit, 2 credit)


class Feed:
    """Recent certificates merged from every peer's `/v1/explore/recent`, by payment id."""

    def __init__(self, keep: int = 2000) -> None:
        self.keep = keep
        self.items: OrderedDict[str, FeedItem] = OrderedDict()

    def add(self, peer_id: str, item: RecentItem) -> None:
        old = self.items.get(item.payment_id)
        applied = dict(old.applied) if old else {}
        certified_at, gateway = (old.certified_at, old.gateway) if old else (None, None)
        if item.event == "certified":
            certified_at, gateway = item.at, peer_id
        else:
            applied[peer_id] = applied.get(peer_id, 0) | item.sides
        first = min(old.first_seen, item.at) if old else item.at
        self.items[item.payment_id] = FeedItem(item.payment_id, item.sender, item.recipient, item.amount, item.seq,
                                               first, certified_at, gateway, applied)
        while len(self.items) > self.keep:
            self.items.popitem(last=False)

    def newest(self) -> list[FeedItem]:
        return sorted(self.items.values(), key=lambda f: f.first_seen, reverse=True)


@dataclass
class AuditState:
    at: float
    check: model.SupplyCheck | None
    busy: bool
    persistent: list[str]  # accounts whose replicas disagreed in two audits in a row
    peers: int
    error: str | None = None


def _usable_url(url: str) -> bool:
    """An http(s) URL httpx can request (a peer's list may hold anything)."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError):
        return False
    return parsed.scheme in ("http", "https") and bool(parsed.host)


class Collector:
    def __init__(self, source: Source, http: httpx.AsyncClient, *, genesis: Genesis | None = None,
                 admin_token: str | None = None, interval: float = 1.0, idle_interval: float = 5.0,
                 audit_interval: float = 10.0, audit_headers: dict[str, str] | None = None) -> None:
        self.source = source
        self.http = http
        self.admin_token = admin_token
        self.interval = interval
        self.idle_interval = idle_interval
        self.audit_interval = audit_interval
        self.audit_headers = audit_headers or {}
        self.peers: dict[str, PeerState] = {}
        self.feed = Feed()
        self.ring: RingDoc | None = None
        self.audit: AuditState | None = None
        self.frozen: dict[str, int] = {}  # address -> seq where it is stuck
        self.watched: dict[str, float] = {}  # address -> when it was last of interest
        self.changes = Changes()
        self.viewers = 0
        self.last_view = -math.inf
        self.started = time.time()
        self.genesis: Genesis | None = None
        self.genesis_note = ""
        # The committees of every epoch, each link checked from the genesis (certificates of any
        # epoch are verified against it; owners are those of its newest epoch).
        self.chain: Chain | None = None
        self._next_chain_check = 0.0
        self._ring_calc: Ring | None = None
        self._nursery: trio.Nursery | None = None
        self._health: tuple[int, model.Health] | None = None
        if genesis is not None:
            self._set_genesis(genesis, "pinned")

    # ---- lifecycle ------------------------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._reconcile()
            nursery.start_soon(self._audit_loop)
            task_status.started()
            while True:
                await trio.sleep(self.interval)
                self._reconcile()

    def _reconcile(self) -> None:
        """Start a poller for every peer the source names that has none yet; refresh devnet facts."""
        for ref in self.source.refs():
            state = self.peers.get(ref.url)
            if state is None:
                self._add(ref)
            else:
                state.ref = ref  # a devnet's process state and pid change under us

    def _add(self, ref: PeerRef, *, named: bool = True) -> None:
        state = PeerState(ref, named=named)
        self.peers[ref.url] = state
        if self._nursery is not None:
            self._nursery.start_soon(self._poll_loop, state)

    def viewed(self) -> None:
        self.last_view = trio.current_time()

    def _busy_watching(self) -> bool:
        return self.viewers > 0 or trio.current_time() - self.last_view < 60.0

    def poll_interval(self) -> float:
        return self.interval if self._busy_watching() else self.idle_interval

    def api(self, url: str) -> PeerApi:
        """A peer's API client; the admin and audit tokens go only to peers the operator named. A
        found peer's address is whatever some peer's /v1/peers says (an observer chooses its own),
        and the console cannot tell who answers there: tokens sent to it were stolen (found by an
        attacker's review, 2 December 2026)."""
        state = self.peers.get(url)
        if state is None or not state.named:
            return PeerApi(self.http, url)
        return PeerApi(self.http, url, admin_token=self.admin_token, audit_headers=self.audit_headers)

    # ---- genesis ------------------------------------------------------------------------------------------
    def _set_genesis(self, genesis: Genesis, note: str) -> None:
        self.genesis = genesis
        self.genesis_note = note
        self._ring_calc = Ring(genesis.committee, genesis.replication, genesis.vnodes)
        self.chain = Chain.from_genesis(genesis)
        self._next_chain_check = 0.0

    async def _follow_chain(self, api: PeerApi) -> None:
        """Append the epoch certificates a peer serves beyond our chain (one request every
        `CHAIN_INTERVAL` seconds at most; a link that does not verify is refused and logged)."""
        if self.chain is None or time.monotonic() < self._next_chain_check:
            return
        self._next_chain_check = time.monotonic() + CHAIN_INTERVAL
        try:
            response = await api.http.get(api.url + "/v1/epochs", params={"from": str(self.chain.epoch + 1)},
                                          timeout=5.0)
            rows = response.raise_for_status().json()["certificates"]
            certs = [EpochCertificate.decode(bytes.fromhex(row["cbor"])) for row in rows]
        except (httpx.HTTPError, ValueError, KeyError, TypeError, MeshpayError) as exc:
            log.info("cannot read the epoch chain from %s: %s", api.url, exc)
            return
        before = self.chain.epoch
        try:
            self.chain.extend_all(certs)
        except MeshpayError as exc:
            log.warning("%s serves an epoch chain that does not follow the genesis: %s", api.url, exc)
            return
        self._ring_calc = self.chain.current.ring
        if self.chain.epoch != before:
            self.ring = None  # the peers' ring layout changed with the committee: fetch it again

    def owners(self, account: bytes) -> tuple[bytes, ...]:
        return self._ring_calc.owners(account) if self._ring_calc is not None else ()

    def url_of(self, peer_id: str) -> str | None:
        for state in self.peers.values():
            if state.peer_id == peer_id:
                return state.url
        return None

    def name_of(self, peer_id: str | None) -> str:
        if peer_id is None:
            return "?"
        for state in self.peers.values():
            if state.peer_id == peer_id:
                return state.ref.name
        return peer_id[:12]

    # ---- polling -----------------------------------------------------------------------------------------
    async def _poll_loop(self, state: PeerState) -> None:
        while True:
            try:
                await self.poll(state)
            except Exception as exc:  # one peer's odd answer must not end the console
                log.warning("polling %s failed: %s: %s", state.url, type(exc).__name__, exc)
                state.up, state.error = False, f"{type(exc).__name__}: {exc}"
            self.changes.bump()
            await trio.sleep(self.poll_interval())

    async def poll(self, state: PeerState) -> None:
        api = self.api(state.url)
        now = time.time()
        try:
            status = await api.status()
        except PeerError as exc:
            self._failed(state, exc, now)
            return
        state.status, state.up, state.error, state.last_ok, state.down_since = status, True, None, now, None
        state.contract.pop("/v1/status", None)
        if self.genesis is None:
            await self._fetch_genesis(api, status)
        state.wrong_network = self.genesis is not None and status.network_id != self.genesis.network_id.hex()
        if not state.wrong_network:
            await self._follow_chain(api)
        try:
            state.members = await api.members()
            state.members_at = now
            state.contract.pop("/v1/peers", None)
        except PeerError as exc:
            self._note(state, exc)
        try:
            sample = await api.metrics()
            state.samples.append((now, sample))
            while state.samples and state.samples[0][0] < now - HISTORY_SECONDS:
                state.samples.popleft()
            state.contract.pop("/metrics", None)
        except PeerError as exc:
            self._note(state, exc)
        if state.explore is not False and not state.wrong_network:
            await self._poll_recent(api, state)
        if self.ring is None and state.explore and not state.wrong_network:
            try:
                self.ring = await api.ring()
            except PeerError as exc:
                self._note(state, exc)
        if state.admin is None:
            await self._check_admin(api, state)
        if self.source.discover and state.members:
            for m in state.members:
                if m.api and normalize(m.api) not in self.peers and _usable_url(normalize(m.api)):
                    self._add(PeerRef(normalize(m.api), m.peer_id[:12], m.peer_id), named=False)

    def _failed(self, state: PeerState, exc: PeerError, now: float) -> None:
        if isinstance(exc, ContractError):
            state.contract[exc.path] = str(exc)
        state.up = False
        state.error = str(exc)
        if state.down_since is None:
            state.down_since = now
        if state.admin != "off":
            state.admin = None  # ask again once it answers: it may come back with another token

    def _note(self, state: PeerState, exc: PeerError) -> None:
        if isinstance(exc, ContractError):
            state.contract[exc.path] = str(exc)
            log.warning("%s", exc)

    async def _fetch_genesis(self, api: PeerApi, status: Status) -> None:
        try:
            genesis = await api.genesis()
        except PeerError as exc:
            log.warning("cannot read the genesis from %s: %s", api.url, exc)
            return
        if genesis.network_id.hex() == status.network_id:
            self._set_genesis(genesis, f"taken from {api.url} (not pinned: pass --genesis FILE to pin one)")

    async def _poll_recent(self, api: PeerApi, state: PeerState) -> None:
        try:
            recent = await api.recent(state.cursor)
        except PeerRefused as exc:
            if exc.status == 404:
                state.explore = False  # an older peer: no explorer routes
            return
        except PeerError as exc:
            self._note(state, exc)
            return
        state.explore = True
        state.cursor = recent.cursor
        for item in recent.items:
            self.feed.add(recent.peer_id, item)
            if item.event == "certified":
                self.watch(item.sender)

    async def _check_admin(self, api: PeerApi, state: PeerState) -> None:
        if not self.admin_token:
            state.admin = "off"
            return
        if not state.named:
            state.admin = "off (found, not named with --peer: no token is sent to it)"
            return
        try:
            await api.admin_info()
            state.admin = "enabled"
        except PeerRefused as exc:
            state.admin = f"refused: {exc.code}"
        except PeerError as exc:
            self._note(state, exc)

    # ---- views of the peers ------------------------------------------------------------------------------
    def reachable(self) -> list[PeerState]:
        return [s for s in self.peers.values() if s.up and not s.wrong_network]

    def observations(self) -> list[model.Observation]:
        fresh = time.time() - 5 * self.poll_interval() - 5.0
        seen: set[str] = set()
        out = []
        for s in self.peers.values():
            if s.wrong_network or s.key in seen:
                continue
            seen.add(s.key)
            views = None
            if s.up and s.members is not None and s.members_at >= fresh:
                views = {m.peer_id: m.state for m in s.members}
            out.append(model.Observation(s.key, s.ref.name, s.up if s.up is not None else None, views))
        if self.genesis is not None:
            for pid in self.genesis.committee:
                if pid.hex() not in seen:
                    out.append(model.Observation(pid.hex(), pid.hex()[:12], None, None))
        return out

    def health(self) -> model.Health:
        """The matrix and verdicts, computed once per change of the picture (every page asks for it)."""
        if self._health is None or self._health[0] != self.changes.version:
            self._health = (self.changes.version, model.health(self.observations()))
        return self._health[1]

    # ---- accounts ----------------------------------------------------------------------------------------
    def watch(self, address: str) -> None:
        self.watched[address] = time.time()
        if len(self.watched) > 4 * MAX_WATCHED:
            for old in sorted(self.watched, key=self.watched.__getitem__)[: len(self.watched) - MAX_WATCHED]:
                del self.watched[old]

    async def owner_views(self, address: str) -> list[tuple[str, AccountView | str]]:
        """(owner peer id, its view or why there is none) for every owner of `address`."""
        try:
            account = decode_address(address)
        except AddressError:
            return []
        owners = [o.hex() for o in self.owners(account)]
        results: dict[str, AccountView | str] = {}

        async def ask(pid: str) -> None:
            url = self.url_of(pid)
            if url is None:
                results[pid] = "no API address known"
                return
            try:
                results[pid] = await self.api(url).account(address)
            except PeerError as exc:
                results[pid] = str(exc)

        await each(owners, ask, limit=len(owners) or 1)
        return [(pid, results[pid]) for pid in owners]

    # ---- audit -------------------------------------------------------------------------------------------
    async def _audit_loop(self) -> None:
        while True:
            await trio.sleep(self.audit_interval if self._busy_watching() else 3 * self.audit_interval)
            await self.audit_once()
            await self.check_frozen()
            self.changes.bump()

    async def audit_once(self) -> None:
        genesis = self.genesis
        peers = [s for s in self.reachable() if s.named]  # the audit token goes to named peers only
        if genesis is None or not peers:
            return
        states: dict[str, dict[str, tuple]] = {}
        errors: list[str] = []

        async def read(state: PeerState) -> None:
            api = self.api(state.url)
            rows: dict[str, tuple] = {}
            after = None
            try:
                for _ in range(10_000):
                    page = await api.audit_accounts(after)
                    rows.update(page.rows)
                    after = page.next_after
                    if after is None:
                        break
            except PeerError as exc:
                errors.append(f"{state.ref.name}: {exc}")
                return
            if state.peer_id is not None:
                states[state.peer_id] = rows

        await each(peers, read)
        busy = any(s.status is not None and s.status.busy for s in peers)
        if not states:
            self.audit = AuditState(time.time(), None, busy, [], 0, "; ".join(errors[:3]) or "no peer answered")
            return
        check = model.supply(states, self.owners, genesis.total_supply,
                             [a.account.hex() for a in genesis.allocations])
        before = set(self.audit.check.disagreeing) if self.audit and self.audit.check else set()
        persistent = sorted(before & set(check.disagreeing))
        self.audit = AuditState(time.time(), check, busy, persistent, len(states),
                                "; ".join(errors[:3]) if errors else None)

    async def check_frozen(self) -> None:
        """Ask the owners of watched accounts (demo wallets, recent senders, accounts people opened)."""
        if self.genesis is None:
            return
        cutoff = time.time() - WATCH_SECONDS
        addresses = [a for a, t in sorted(self.watched.items(), key=lambda kv: -kv[1]) if t >= cutoff][:MAX_WATCHED]
        if self.source.kind == "devnet":
            addresses += [w.address for w in self.source.load().wallets if w.address not in addresses]

        async def check(address: str) -> None:
            views = [owner_state(pid, v) for pid, v in await self.owner_views(address)]
            seq = model.frozen_at(views, self.genesis.quorum) if self.genesis else None
            if seq is None:
                self.frozen.pop(address, None)
            else:
                self.frozen[address] = seq

        await each(addresses, check)

