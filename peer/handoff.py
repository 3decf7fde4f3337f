"""State handoff at an epoch change (docs/protocol.md 11.3-11.5), as a sans-IO core.

A peer `n` in the committee of epoch T runs the handoff into T. For every account `a` it owns in T
but did not own in T - 1 (it is a **new owner** of `a`), it needs the old owners' state before it
votes on `a`; accounts whose owner set did not change never move.

- **Streams.** `n` pulls from each member `q` of the committee of T - 1 a stream of the accounts `q`
  owned in T - 1 that move to `n`, in ascending account order: `HandoffPull(T, after, exclude,
  budget)` -> `HandoffChunk(T, reports, certs, next_after, done)`. One pull per stream is in flight
  (`q` produces a chunk only when asked: backpressure); chunks are bounded in reports,
  certificates and bytes; `n` writes the stream's cursor, the reports and what the certificates
  applied in one batch, so a restarted `n` resumes from its cursor, and `q` keeps no per-stream
  state at all. `q` answers only once it is sealed for T - 1 (it has entered T), and only after
  everything it wrote before is durable; until then it answers with `EpochSyncRequest` ("not yet,
  I am at epoch x"), which makes `n` send it the chain.
- **Reports and history.** An `AccountReport` carries `q`'s next_seq, credit count and digest and
  the orders it holds at next_seq. One old owner per account (the first in ring order that `n` does
  not `exclude` as unreachable) also streams the account's history: every certificate that debited
  or credited it. Every certificate is checked before it is applied.
- **Counting.** A report from `q` for `a` counts once received, or once `q`'s stream has moved past
  `a` without one (then `q` holds nothing for `a`). A report `q` marks not ready (it is itself still
  taking `a` over) does not count; `n` asks again later (`HandoffAccounts`).
- **Ready** (`readiness`): W counted reports, `n`'s next_seq at least every counted next_seq (debits
  pulled from the reporter that claimed them; a reporter that cannot back its claim in time is
  dropped and penalised), and credits reconciled with every reporter that differs (or given up
  after a timeout). Then `n` writes the hold set at its frontier (`peer.holds`) and the ready mark in
  one batch, and votes on `a` from then on. Until then vote requests get `handoff_pending`. A frozen
  account keeps counting reports as they come and is released when the hold set empties.
- **Complete**: every stream done (at most N - W of them given up as unreachable) and every
  reported account ready. Only then may this peer approve the next epoch change.
- **Continuing owners** holding a lock or hold set at an account's frontier (its vote naming an
  epoch before T) run the same rule with `HandoffAccounts` and replace it by the result when that is
  empty or one order (11.5): this is what unfreezes an account an equivocating sender split.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from crypto.errors import DecodeError
from crypto.messages import Certificate, Order, Vote
from gossip.effects import Notify, Outbox, Penalize, Persist, Send
from peer.committee import Committee
from peer.epoch_chain import Chain
from peer.holds import Held, hold_set
from peer.ledger import Ledger
from peer.wire import (
    CURSOR_SIZE,
    MAX_CHUNK_CERTS,
    MAX_CHUNK_REPORTS,
    MAX_EXCLUDE,
    MAX_HOLDS,
    MAX_REPORT_ACCOUNTS,
    AccountReport,
    CreditsRequest,
    EpochSyncRequest,
    HandoffAccounts,
    HandoffChunk,
    HandoffPull,
)
from store import layout
from store.db import Batch, Store
from store.layout import AccountState, HandoffRecord, StreamRecord

DONE = (1 << 64) - 1  # history index in a cursor meaning "this account is finished"
ZERO_DIGEST = bytes(32)


@dataclass(frozen=True)
class HandoffConfig:
    pull_timeout: float = 1.0  # re-send a pull that got no chunk (backing off to 8 s)
    chunk_bytes: int = 256 * 1024  # budget this peer asks for per chunk
    serve_bytes: int = 512 * 1024  # most this peer sends in one chunk, whatever it is asked
    scan_limit: int = 20_000  # accounts looked at per chunk served (bounds the work of one pull)
    claim_timeout: float = 20.0  # a reporter must back a higher next_seq by then (counted from our last
    # progress on the account: on a loaded 2-core devnet one catch-up round trip took over 3 s)
    credit_timeout: float = 3.0  # give up reconciling credits with a reporter after this
    stall: float = 20.0  # a stream without a chunk for this long is given up (its peer excluded)
    reask: float = 2.0  # not-ready reports and resolution reports are asked for again this often
    tick: float = 0.25
    resolve_for: float = 600.0  # how long continuing owners keep asking for resolution reports


@dataclass(frozen=True, slots=True)
class HandoffComplete:
    """Notification: this peer's handoff into `epoch` is complete (it may approve the next one)."""

    epoch: int


# ---- cursors ---------------------------------------------------------------------------------------

def make_cursor(account: bytes, index: int = DONE) -> bytes:
    """The cursor after `account`: finished, or with its history to continue at `index`."""
    return account + layout.u64(index)


def parse_cursor(raw: bytes) -> tuple[bytes, int] | None:
    if not raw:
        return None
    if len(raw) != CURSOR_SIZE:
        raise DecodeError(f"a handoff cursor is {CURSOR_SIZE} bytes, not {len(raw)}")
    return raw[:32], layout.read_u64(raw[32:])


def stream_past(cursor: bytes, done: bool, account: bytes) -> bool:
    """Whether a stream at `cursor` has reported on `account` or moved past it."""
    return done or (len(cursor) == CURSOR_SIZE and cursor[:32] >= account)


# ---- the readiness rule (11.4), pure ----------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Claim:
    """What a counted report claims about an account (a stream that moved past it claims zeros)."""

    reporter: bytes
    next_seq: int = 0
    credits: int = 0
    credit_digest: bytes = ZERO_DIGEST

    @classmethod
    def of(cls, report: AccountReport) -> Claim:
        return cls(b"", report.next_seq, report.credits, report.credit_digest)


@dataclass(frozen=True, slots=True)
class Readiness:
    ready: bool
    counted: int = 0
    pull: tuple[tuple[bytes, int], ...] = ()  # (reporter, next_seq it claims): fetch those debits
    reconcile: tuple[bytes, ...] = ()  # reporters whose credits differ: compare credit ids
    drop: tuple[bytes, ...] = ()  # reporters whose claims timed out: stop counting, penalise
    reason: str = ""


def readiness(own: AccountState, counted: Sequence[Claim], quorum: int, *,
              expired: Iterable[bytes] = (), credits_settled: Iterable[bytes] = ()) -> Readiness:
    """Whether a new owner whose state is `own` may start voting on the account (11.4).

    `expired`: reporters whose higher next_seq went unbacked past the claim timeout (they are
    dropped from S). `credits_settled`: reporters whose credits were reconciled or given up on.
    """
    expired = set(expired)
    settled = set(credits_settled)
    drop = tuple(c.reporter for c in counted if c.reporter in expired and c.next_seq > own.next_seq)
    live = [c for c in counted if c.reporter not in drop]
    if len(live) < quorum:
        return Readiness(False, len(live), drop=drop, reason=f"{len(live)} of the {quorum} reports needed")
    pull = tuple((c.reporter, c.next_seq) for c in live if c.next_seq > own.next_seq)
    reconcile = tuple(c.reporter for c in live if c.credits and c.reporter not in settled
                      and (c.credits, c.credit_digest) != (own.credits, own.credit_digest))
    if pull:
        return Readiness(False, len(live), pull, reconcile, drop,
                         f"behind {len(pull)} reporter(s): at seq {own.next_seq}, they claim "
                         f"{max(n for _, n in pull)}")
    if reconcile:
        return Readiness(False, len(live), (), reconcile, drop, f"credits differ from {len(reconcile)} reporter(s)")
    return Readiness(True, len(live), drop=drop)


# ---- state -----------------------------------------------------------------------------------------

@dataclass(slots=True)
class Stream:
    peer: bytes
    cursor: bytes = b""
    done: bool = False
    sent_at: float | None = None  # a pull is in flight since
    attempts: int = 0
    progress_at: float = 0.0


@dataclass(slots=True)
class CreditCheck:
    asked_at: float
    missing: set[bytes] = field(default_factory=set)
    listed: bool = False  # the reporter's whole credit list came back


@dataclass
class EpochHandoff:
    """This peer's handoff into `epoch` (from the owners of `epoch - 1`)."""

    epoch: int
    old: Committee
    new: Committee
    started: float
    streams: dict[bytes, Stream] = field(default_factory=dict)
    reports: dict[bytes, dict[bytes, AccountReport]] = field(default_factory=dict)  # account -> reporter
    ready: set[bytes] = field(default_factory=set)
    frozen: dict[bytes, int] = field(default_factory=dict)  # ready, hold set >= 2 at seq: still counting
    resolving: dict[bytes, int] = field(default_factory=dict)  # continuing owner: account -> seq
    resolve_reports: dict[bytes, dict[bytes, AccountReport]] = field(default_factory=dict)
    discredited: dict[bytes, set[bytes]] = field(default_factory=dict)
    # (account, reporter) -> (since, our next_seq then): a claim times out only while we make no progress
    claims: dict[tuple[bytes, bytes], tuple[float, int]] = field(default_factory=dict)
    credit_checks: dict[tuple[bytes, bytes], CreditCheck] = field(default_factory=dict)
    dirty: set[bytes] = field(default_factory=set)
    complete: bool = False
    moved_in: int = 0
    ready_count: int = 0
    certs: int = 0
    bytes: int = 0
    next_reask: float = 0.0
    resolve_until: float = 0.0

    def record(self) -> HandoffRecord:
        return HandoffRecord(self.complete, self.moved_in, self.certs, self.bytes)


class Handoff:
    """Both sides of the handoff for one peer: serving streams from what it owned, and taking over
    what moves to it (one `EpochHandoff` per epoch still in progress)."""

    def __init__(
        self,
        me: bytes,
        network_id: bytes,
        ledger: Ledger,
        store: Store,
        chain: Chain,
        out: Outbox,
        *,
        alive: Callable[[], list[bytes]],
        apply: Callable[[Certificate, bytes, Batch], list[object]],
        need: Callable[[bytes, int, int, float, bytes], None],
        signature_ok: Callable[[Order], bool],
        later_epoch: Callable[[bytes], None],
        config: HandoffConfig | None = None,
    ) -> None:
        self.me = me
        self.network_id = network_id
        self.ledger = ledger
        self.store = store
        self.chain = chain
        self.out = out
        self.alive = alive
        self.apply = apply  # verify a certificate and apply it into the batch; returns follow-ups
        self.need = need  # (account, have, upto, now, peer): pull debits from that peer
        self.signature_ok = signature_ok
        self.later_epoch = later_epoch  # a peer is in a later epoch than we are: sync the chain
        self.config = config or HandoffConfig()
        self.handoffs: dict[int, EpochHandoff] = {}  # in progress, and the latest complete one
        self.incomplete: list[int] = []  # epochs of handoffs in progress, ascending (hot-path guard)
        self._sorted: list[bytes] = []  # the accounts this peer has state for, for serving streams
        self._sorted_len: tuple[int, int] = (-1, -1)
        self._next_tick = float("inf")
        self.counters = {"chunks_served": 0, "reports_served": 0, "certs_served": 0, "chunks_received": 0,
                         "reports_dropped": 0, "unfrozen": 0}

    # ---- lifecycle --------------------------------------------------------------------------------
    def load(self, now: float) -> None:
        """After a restart: resume the handoffs the store says are in progress."""
        latest_complete: EpochHandoff | None = None
        for epoch, record in self.store.handoffs():
            h = self._new(epoch, now)
            if h is None:
                continue
            h.complete, h.moved_in, h.certs, h.bytes = record.complete, record.moved_in, record.certs, record.bytes
            if h.complete:
                latest_complete = h
                continue
            for peer, rec in self.store.streams(epoch):
                stream = h.streams.get(peer)
                if stream is not None:
                    stream.cursor, stream.done = rec.cursor, rec.done
            for account, reporter, raw in self.store.reports(epoch):
                try:
                    report = AccountReport.decode(raw)
                except DecodeError:
                    continue
                h.reports.setdefault(account, {})[reporter] = report
                h.dirty.add(account)
            h.ready.update(self.store.ready_accounts(epoch))
            for account in h.ready:
                state = self.ledger.peek(account)
                if state is not None and len(self.ledger.holds.get((account, state.next_seq), ())) >= 2:
                    h.frozen[account] = state.next_seq
            self.handoffs[epoch] = h
        if latest_complete is not None and not any(e > latest_complete.epoch for e in self.handoffs):
            self.handoffs[latest_complete.epoch] = latest_complete
        self._reindex()
        for h in self.handoffs.values():
            if not h.complete:
                for stream in h.streams.values():
                    if not stream.done:
                        self._pull(h, stream, now)
        epoch = self.chain.epoch
        if epoch >= 1 and self.me in self.chain.current:
            h = self.handoffs.get(epoch)
            if h is None:
                h = self._new(epoch, now)
                if h is not None:
                    h.complete = True  # nothing moved here is pending: only resolution remains
                    self.handoffs[epoch] = h
            if h is not None:
                self._begin_resolution(h, now)
        self._next_tick = now + self.config.tick

    def begin(self, epoch: int, now: float, batch: Batch) -> None:
        """This peer entered `epoch` (writes go into the sealing batch)."""
        if self.me not in self.chain.current:
            return
        h = self._new(epoch, now)
        if h is None:
            return
        for e in [e for e, old in self.handoffs.items() if old.complete]:
            del self.handoffs[e]  # only the latest complete handoff is kept, for status
        self.handoffs[epoch] = h
        batch.put_handoff(epoch, h.record())
        for stream in h.streams.values():
            batch.put_stream(epoch, stream.peer, StreamRecord())
        self._reindex()
        for stream in h.streams.values():
            self._pull(h, stream, now)
        self._begin_resolution(h, now)
        self._next_tick = min(self._next_tick, now + self.config.tick)

    def _new(self, epoch: int, now: float) -> EpochHandoff | None:
        old, new = self.chain.committee(epoch - 1), self.chain.committee(epoch)
        if old is None or new is None or self.me not in new:
            return None
        h = EpochHandoff(epoch, old, new, now, resolve_until=now + self.config.resolve_for)
        for peer in old.members:
            if peer != self.me:
                h.streams[peer] = Stream(peer, progress_at=now)
        return h

    def _reindex(self) -> None:
        self.incomplete = sorted(e for e, h in self.handoffs.items() if not h.complete)

    # ---- the hot path: may this owner vote on `account`? -------------------------------------------
    def pending(self, account: bytes) -> bool:
        """True while this peer (an owner of `account` now) is still taking it over."""
        if not self.incomplete:
            return False
        return not self.ready_in(account, self.chain.epoch)

    def ready_in(self, account: bytes, epoch: int) -> bool:
        """Whether this peer holds complete state of `account` as its owner in `epoch`: it did not
        move here in a handoff that has not made it ready yet."""
        if not self.incomplete or epoch < self.incomplete[0]:
            return True
        me = self.me
        k = epoch
        while k >= self.incomplete[0] and k >= 1:
            prev = self.chain.committee(k - 1)
            if prev is None:
                return True
            if me not in prev.owners(account):  # it moved here at epoch k
                h = self.handoffs.get(k)
                return h is None or h.complete or self._is_ready(h, account)
            k -= 1
        return True

    def _is_ready(self, h: EpochHandoff, account: bytes) -> bool:
        if account in h.ready:
            return True
        if account in h.reports:
            return False  # being evaluated
        # Nobody reported it: ready once W of its old owners' streams moved past it (they hold nothing).
        passed = 0
        for q in h.old.owners(account):
            stream = h.streams.get(q)
            if stream is not None and stream_past(stream.cursor, stream.done, account):
                passed += 1
        return passed >= h.old.quorum

    def complete_through(self, epoch: int) -> bool:
        """Whether every handoff into `epoch` or earlier is complete (approving the next change
        needs that)."""
        return not self.incomplete or self.incomplete[0] > epoch

    # ---- serving: the old owner's side -------------------------------------------------------------
    def report(self, epoch: int, account: bytes) -> AccountReport:
        """This peer's report on `account` for the handoff into `epoch` (it owned it in epoch - 1)."""
        state = self.ledger.peek(account) or AccountState()
        held = self.ledger.held_orders(account, state.next_seq)
        ready = self.ready_in(account, epoch - 1) and len(held) <= MAX_HOLDS
        holds = tuple(Order.decode(raw) for raw in held) if ready else ()
        return AccountReport(epoch, account, state.next_seq, state.credits, state.credit_digest, holds, ready)

    def on_pull(self, src: bytes, msg: HandoffPull, now: float) -> None:
        epoch = msg.epoch
        if epoch > self.chain.epoch:
            self.out.send(src, EpochSyncRequest(self.chain.epoch))  # not yet: I am not sealed
            self.later_epoch(src)
            return
        old, new = self.chain.committee(epoch - 1), self.chain.committee(epoch)
        assert old is not None and new is not None
        if self.me not in old or src not in new or src == self.me:
            self._send_chunk(src, HandoffChunk(epoch, (), (), msg.after, True))
            return
        start = parse_cursor(msg.after)
        chunk = self._build_chunk(epoch, old, new, src, start, set(msg.exclude),
                                  min(msg.budget, self.config.serve_bytes))
        self._send_chunk(src, chunk)

    def _send_chunk(self, dst: bytes, chunk: HandoffChunk) -> None:
        self.counters["chunks_served"] += 1
        self.counters["reports_served"] += len(chunk.reports)
        self.counters["certs_served"] += len(chunk.certs)
        # After everything written before it is durable: the sealing batch, and every lock the
        # reports show (an empty batch is durable only after all earlier ones).
        self.out.add(Persist(Batch(), (Send(dst, chunk),)))

    def _accounts_sorted(self) -> list[bytes]:
        """Every account this peer can report on: those it holds state for, and those it only holds
        a hold set for (an account never funded here can still carry one; its report must travel,
        or the next new owners would count this peer as holding nothing: Lemma 2)."""
        ledger = self.ledger
        size = (len(ledger.accounts), len(ledger.holds))
        if size != self._sorted_len:
            self._sorted = sorted(set(ledger.accounts).union(a for a, _ in ledger.holds))
            self._sorted_len = size
        return self._sorted

    def _build_chunk(self, epoch: int, old: Committee, new: Committee, dst: bytes,
                     start: tuple[bytes, int] | None, exclude: set[bytes], budget: int) -> HandoffChunk:
        reports: list[AccountReport] = []
        certs: list[Certificate] = []
        size = 0
        me = self.me

        def history(account: bytes, index: int) -> int | None:
            """Add `account`'s history from `index`; the index to resume at if the chunk filled up."""
            nonlocal size
            prefix = layout.HISTORY + account
            for key, value in self.store.scan(prefix, start=layout.history_key(account, index)):
                at = layout.read_u64(key[33:])
                raw = self.ledger.cert_bytes(layout.HistoryEntry.decode(value).order_id)
                if raw is None:
                    continue
                if len(certs) >= MAX_CHUNK_CERTS or (size + len(raw) > budget and (certs or reports)):
                    return at
                certs.append(Certificate.decode(raw))
                size += len(raw)
            return None

        cursor = b""
        accounts = self._accounts_sorted()
        pos = 0
        if start is not None:
            account, index = start
            cursor = make_cursor(account, index)
            if index != DONE:
                resume = history(account, index)
                if resume is not None:
                    return HandoffChunk(epoch, (), tuple(certs), make_cursor(account, resume), False)
                cursor = make_cursor(account)
            pos = bisect.bisect_right(accounts, account)
        scanned = 0
        while pos < len(accounts):
            account = accounts[pos]
            old_owners = old.owners(account)
            if me in old_owners and dst in new.owners(account) and dst not in old_owners:
                report = self.report(epoch, account)
                cost = len(report.encode())
                if len(reports) >= MAX_CHUNK_REPORTS or (size + cost > budget and (reports or certs)):
                    return HandoffChunk(epoch, tuple(reports), tuple(certs), cursor, False)
                reports.append(report)
                size += cost
                cursor = make_cursor(account)
                source = next((o for o in old_owners if o not in exclude), None)
                if report.ready and source == me:
                    resume = history(account, 0)
                    if resume is not None:
                        return HandoffChunk(epoch, tuple(reports), tuple(certs), make_cursor(account, resume), False)
            else:
                cursor = make_cursor(account)
            pos += 1
            scanned += 1
            if scanned >= self.config.scan_limit and pos < len(accounts):
                return HandoffChunk(epoch, tuple(reports), tuple(certs), cursor, False)
        return HandoffChunk(epoch, tuple(reports), tuple(certs), cursor, True)

    def on_accounts(self, src: bytes, msg: HandoffAccounts, now: float) -> None:
        """Reports on named accounts (a new owner asking again, or a continuing owner resolving)."""
        epoch = msg.epoch
        if epoch > self.chain.epoch:
            self.out.send(src, EpochSyncRequest(self.chain.epoch))
            self.later_epoch(src)
            return
        old, new = self.chain.committee(epoch - 1), self.chain.committee(epoch)
        assert old is not None and new is not None
        if src not in new:
            return
        then = tuple(Send(src, self.report(epoch, a)) for a in msg.accounts if self.me in old.owners(a))
        if then:
            self.counters["reports_served"] += len(then)
            self.out.add(Persist(Batch(), then))

    # ---- taking over: the new owner's side ---------------------------------------------------------
    def _pull(self, h: EpochHandoff, stream: Stream, now: float) -> None:
        exclude = tuple(sorted(p for p, s in h.streams.items() if self._given_up(s, now)))[:MAX_EXCLUDE]
        stream.sent_at = now
        stream.attempts += 1
        self.out.send(stream.peer, HandoffPull(h.epoch, stream.cursor, exclude, self.config.chunk_bytes))

    def _given_up(self, stream: Stream, now: float, alive: set[bytes] | None = None) -> bool:
        """A stream whose peer seems unreachable: dead, or silent for `stall` seconds."""
        if stream.done:
            return False
        if alive is None:
            alive = set(self.alive())
        return stream.peer not in alive or now - stream.progress_at > self.config.stall

    def on_chunk(self, src: bytes, msg: HandoffChunk, now: float) -> None:
        h = self.handoffs.get(msg.epoch)
        if h is None or h.complete:
            return
        stream = h.streams.get(src)
        if stream is None or stream.done or stream.sent_at is None:
            return  # not asked for (a duplicate, or a late answer to a pull we re-sent)
        try:
            new_cursor = parse_cursor(msg.next_after)
        except DecodeError:
            self.out.add(Penalize(src, 5, "handoff chunk with a malformed cursor"))
            return
        if not msg.done and (new_cursor is None or msg.next_after <= stream.cursor):
            # An answer to a pull we sent again (the first answer was late): already processed. A
            # peer that never makes progress only stalls its own stream until it is given up.
            return
        self.counters["chunks_received"] += 1
        batch = Batch()
        low = stream.cursor[:32] if stream.cursor else None
        high = msg.next_after[:32] if msg.next_after else None
        for report in msg.reports:
            if low is not None and report.account <= low:
                continue  # processed already (a late answer that overlaps)
            if high is not None and report.account > high:
                self.out.add(Penalize(src, 2, "handoff report beyond its chunk's cursor"))
                continue
            self._take_report(h, src, report, batch, now)
        then: list[object] = []
        for cert in msg.certs:
            then.extend(self.apply(cert, src, batch))
            h.certs += 1
        size = len(msg.encode())
        h.bytes += size
        stream.cursor = msg.next_after if msg.next_after else stream.cursor
        stream.done = msg.done
        stream.sent_at = None
        stream.attempts = 0
        stream.progress_at = now
        batch.put_stream(h.epoch, src, StreamRecord(stream.cursor, stream.done))
        batch.put_handoff(h.epoch, h.record())
        if not stream.done:
            exclude = tuple(sorted(p for p, s in h.streams.items() if self._given_up(s, now)))[:MAX_EXCLUDE]
            stream.sent_at = now
            stream.attempts = 1
            # The next pull leaves once this chunk is durable: the disk pushes back too.
            then.append(Send(src, HandoffPull(h.epoch, stream.cursor, exclude, self.config.chunk_bytes)))
        self.out.add(Persist(batch, tuple(then)))
        if stream.done:
            h.dirty.update(h.reports)  # accounts waiting for this stream to move past them
        self._evaluate_dirty(h, now)

    def on_report(self, src: bytes, report: AccountReport, now: float) -> None:
        """A report sent on its own (an answer to `HandoffAccounts`)."""
        h = self.handoffs.get(report.epoch)
        if h is None:
            if report.epoch > self.chain.epoch:
                self.later_epoch(src)
            return
        batch = Batch()
        if self._take_report(h, src, report, batch, now):
            if len(batch) and not h.complete:
                self.out.add(Persist(batch))
            self._evaluate(h, report.account, now)

    def _take_report(self, h: EpochHandoff, src: bytes, report: AccountReport, batch: Batch, now: float) -> bool:
        account = report.account
        if report.epoch != h.epoch:
            return False
        old_owners = h.old.owners(account)
        if src not in old_owners:
            self.out.add(Penalize(src, 2, "handoff report on an account it did not own"))
            return False
        moved = self.moved_here(h, account)
        if not moved and account not in h.resolving:
            return False  # not asked for
        if account in h.discredited and src in h.discredited[account]:
            return False
        for order in report.holds:
            if order.network != self.network_id or order.sender != account or order.seq != report.next_seq \
                    or not self.signature_ok(order):
                self.out.add(Penalize(src, 10, "handoff report holding an order the account did not sign "
                                               "for that sequence"))
                self._discredit(h, account, src)
                return False
        if moved and account in h.ready and account not in h.frozen:
            return False  # ready already; anti-entropy keeps it up to date
        if not moved:
            h.resolve_reports.setdefault(account, {})[src] = report
            h.dirty.add(account)
            return True
        first = account not in h.reports
        h.reports.setdefault(account, {})[src] = report
        if not h.complete:
            batch.put_report(h.epoch, account, src, report.encode())
            if first:
                h.moved_in += 1
        h.dirty.add(account)
        return True

    def _discredit(self, h: EpochHandoff, account: bytes, reporter: bytes) -> None:
        h.discredited.setdefault(account, set()).add(reporter)
        for table in (h.reports, h.resolve_reports):
            reports = table.get(account)
            if reports is not None:
                reports.pop(reporter, None)
        self.counters["reports_dropped"] += 1
        h.dirty.add(account)

    def touch(self, account: bytes) -> None:
        """The account's state changed here (a certificate applied): re-evaluate it soon."""
        for epoch in self.incomplete:
            h = self.handoffs[epoch]
            if account in h.reports:
                h.dirty.add(account)
        for h in self.handoffs.values():
            if account in h.resolving or account in h.frozen:
                h.dirty.add(account)

    def on_credits_listed(self, src: bytes, account: bytes, missing: Sequence[bytes], last: bool) -> None:
        """A reporter listed (a page of) its credit ids for `account`; `missing` are those we lack."""
        for h in self.handoffs.values():
            check = h.credit_checks.get((account, src))
            if check is not None and not check.listed:
                check.missing.update(missing)
                check.listed = last
                h.dirty.add(account)

    # ---- evaluation --------------------------------------------------------------------------------
    def _counted(self, h: EpochHandoff, account: bytes) -> list[tuple[Claim, AccountReport | None]]:
        counted: list[tuple[Claim, AccountReport | None]] = []
        reports = h.reports.get(account, {})
        gone = h.discredited.get(account, ())
        for q in h.old.owners(account):
            if q in gone or q == self.me:
                continue
            report = reports.get(q)
            if report is not None:
                if report.ready:
                    counted.append((Claim(q, report.next_seq, report.credits, report.credit_digest), report))
                continue
            stream = h.streams.get(q)
            if stream is not None and stream_past(stream.cursor, stream.done, account):
                counted.append((Claim(q), None))
        return counted

    def _evaluate_dirty(self, h: EpochHandoff, now: float) -> None:
        dirty, h.dirty = h.dirty, set()
        for account in dirty:
            self._evaluate(h, account, now)

    def moved_here(self, h: EpochHandoff, account: bytes) -> bool:
        """Whether `account` moved to this peer in `h`'s epoch (a new owner, not a continuing one)."""
        return self.me not in h.old.owners(account) and self.me in h.new.owners(account)

    def _evaluate(self, h: EpochHandoff, account: bytes, now: float) -> None:
        if account in h.resolving:
            self._evaluate_resolution(h, account, now)
            return
        if not self.moved_here(h, account):
            return  # a continuing owner's account whose resolution is over: nothing to take over
        frozen_at = h.frozen.get(account)
        if account in h.ready and frozen_at is None:
            return
        own = self.ledger.peek(account) or AccountState()
        if frozen_at is not None and own.next_seq != frozen_at:
            del h.frozen[account]  # a certificate of a held order moved it on
            return
        counted = self._counted(h, account)
        expired = []
        for claim, _ in counted:
            since = h.claims.get((account, claim.reporter))
            if since is not None and since[1] >= own.next_seq and now - since[0] >= self.config.claim_timeout:
                expired.append(claim.reporter)
        settled = []
        for claim, _ in counted:
            check = h.credit_checks.get((account, claim.reporter))
            if check is None:
                continue
            done = check.listed and all(self.ledger.applied(oid) & layout.APPLIED_CREDIT for oid in check.missing)
            if done or now - check.asked_at >= self.config.credit_timeout:
                settled.append(claim.reporter)
        decision = readiness(own, [c for c, _ in counted], h.old.quorum, expired=expired, credits_settled=settled)
        for reporter in decision.drop:
            self.out.add(Penalize(reporter, 5, "could not back its handoff report with certificates"))
            self._discredit(h, account, reporter)
            h.claims.pop((account, reporter), None)
        for reporter, upto in decision.pull:
            if h.claims.get((account, reporter), (now, -1))[1] < own.next_seq:
                h.claims[(account, reporter)] = (now, own.next_seq)
            self.need(account, own.next_seq, upto, now, reporter)
        for claim, _ in counted:
            if claim.next_seq <= own.next_seq:
                h.claims.pop((account, claim.reporter), None)
        for reporter in decision.reconcile:
            if (account, reporter) not in h.credit_checks:
                h.credit_checks[(account, reporter)] = CreditCheck(now)
                self.out.send(reporter, CreditsRequest(account, 0))
        if not decision.ready:
            return
        held = [Held(c.reporter, c.next_seq, r.holds if r is not None else ()) for c, r in counted
                if c.reporter not in decision.drop]
        holds = hold_set(own.next_seq, held, h.old.replication, h.old.quorum)
        batch = Batch()
        orders = tuple(o.encode() for o in holds.orders)
        if frozen_at is not None:
            if set(orders) != set(self.ledger.holds.get((account, frozen_at), ())):
                self.ledger.set_holds(account, frozen_at, orders, batch)
                self.out.add(Persist(batch))
            if not holds.frozen:
                del h.frozen[account]
                self.counters["unfrozen"] += 1
            return
        # Whatever this peer held there from an earlier ownership is replaced by the rule's result.
        self.ledger.unlock(account, own.next_seq, batch)
        self.ledger.set_holds(account, own.next_seq, orders, batch)
        if not h.complete:
            batch.put_ready(h.epoch, account)
        self.out.add(Persist(batch))
        h.ready.add(account)
        if holds.frozen:
            h.frozen[account] = own.next_seq
        for key in [k for k in h.claims if k[0] == account]:
            del h.claims[key]
        for key in [k for k in h.credit_checks if k[0] == account]:
            del h.credit_checks[key]

    # ---- continuing owners: resolving a lock or hold set at the frontier ---------------------------
    def _begin_resolution(self, h: EpochHandoff, now: float) -> None:
        me = self.me
        seen: set[bytes] = set()
        for (account, seq) in [*self.ledger.locks, *self.ledger.holds]:
            if account in seen:
                continue
            state = self.ledger.peek(account)
            if state is None or state.next_seq != seq:
                continue
            if me not in h.old.owners(account) or me not in h.new.owners(account):
                continue
            lock = self.ledger.locks.get((account, seq))
            if lock is not None and Vote.decode(lock.vote).epoch >= h.epoch:
                continue
            seen.add(account)
            h.resolving[account] = seq
        if h.resolving:
            self._ask_reports(h, h.resolving, now)

    def _ask_reports(self, h: EpochHandoff, accounts: Iterable[bytes], now: float) -> None:
        wanted: dict[bytes, list[bytes]] = {}
        for account in accounts:
            have = (h.resolve_reports if account in h.resolving else h.reports).get(account, {})
            gone = h.discredited.get(account, ())
            for q in h.old.owners(account):
                if q == self.me or q in gone:
                    continue
                report = have.get(q)
                if report is None or not report.ready:
                    wanted.setdefault(q, []).append(account)
        for q, names in wanted.items():
            for i in range(0, len(names), MAX_REPORT_ACCOUNTS):
                self.out.send(q, HandoffAccounts(h.epoch, tuple(names[i:i + MAX_REPORT_ACCOUNTS])))
        h.next_reask = now + self.config.reask

    def _evaluate_resolution(self, h: EpochHandoff, account: bytes, now: float) -> None:
        seq = h.resolving[account]
        state = self.ledger.peek(account)
        lock = self.ledger.locks.get((account, seq))
        if state is None or state.next_seq != seq or (lock is None and (account, seq) not in self.ledger.holds):
            del h.resolving[account]  # moved on (a certificate at seq was applied)
            h.resolve_reports.pop(account, None)
            return
        if lock is not None and Vote.decode(lock.vote).epoch >= h.epoch:
            del h.resolving[account]  # voted again in this epoch: that vote binds
            h.resolve_reports.pop(account, None)
            return
        mine = Held(self.me, seq, tuple(Order.decode(raw) for raw in self.ledger.held_orders(account, seq)))
        reports = {q: r for q, r in h.resolve_reports.get(account, {}).items() if r.ready}
        ahead = [(q, r.next_seq) for q, r in reports.items() if r.next_seq > seq]
        if ahead:
            q, upto = ahead[0]
            self.need(account, seq, upto, now, q)  # a certificate at seq exists: fetch it
            return
        held = [mine, *(Held(q, r.next_seq, r.holds) for q, r in reports.items())]
        if len(held) < h.old.quorum:
            return
        decision = hold_set(seq, held, h.old.replication, h.old.quorum)
        batch = Batch()
        finished = len(held) == len(h.old.owners(account))
        if decision.free:
            self.ledger.unlock(account, seq, batch)
            self.ledger.set_holds(account, seq, (), batch)
            finished = True
            self.counters["unfrozen"] += 1
        elif not decision.frozen:
            only = decision.orders[0]
            if lock is None or Order.decode(lock.order).id != only.id:
                self.ledger.unlock(account, seq, batch)
                self.ledger.set_holds(account, seq, (only.encode(),), batch)
            finished = True
        elif lock is None:
            orders = tuple(o.encode() for o in decision.orders)
            if set(orders) != set(self.ledger.holds.get((account, seq), ())):
                self.ledger.set_holds(account, seq, orders, batch)
        if len(batch):
            self.out.add(Persist(batch))
        if finished:
            del h.resolving[account]
            h.resolve_reports.pop(account, None)

    # ---- timers ------------------------------------------------------------------------------------
    def next_deadline(self) -> float:
        return self._next_tick

    def tick(self, now: float) -> None:
        if now < self._next_tick:
            return
        busy = False
        alive = set(self.alive())
        for epoch in list(self.handoffs):
            h = self.handoffs[epoch]
            if (h.resolving or h.frozen) and now >= h.resolve_until:
                # Stop asking: what stays frozen stays so by its hold set (a later change may free it).
                h.resolving.clear()
                h.resolve_reports.clear()
                if h.complete:
                    h.frozen.clear()
            if h.complete:
                if h.resolving or h.frozen:
                    busy = True
                    if now >= h.next_reask:
                        self._ask_reports(h, [*h.resolving, *h.frozen], now)
                    self._evaluate_dirty(h, now)
                continue
            busy = True
            for stream in h.streams.values():
                if stream.done or stream.peer not in alive:
                    continue
                if stream.sent_at is None or now >= stream.sent_at + self.config.pull_timeout * min(
                        8.0, 1.5 ** max(0, stream.attempts - 1)):
                    self._pull(h, stream, now)
            if now >= h.next_reask:
                waiting = [a for a, reports in h.reports.items()
                           if a not in h.ready and any(not r.ready for r in reports.values())]
                self._ask_reports(h, [*waiting, *h.resolving, *h.frozen], now)
                h.dirty.update(a for a in h.reports if a not in h.ready)  # timeouts may have passed
                h.dirty.update(h.frozen)
            self._evaluate_dirty(h, now)
            self._check_complete(h, now, alive)
        self._next_tick = now + self.config.tick if busy else float("inf")

    def _check_complete(self, h: EpochHandoff, now: float, alive: set[bytes]) -> None:
        given_up = 0
        for stream in h.streams.values():
            if stream.done:
                continue
            if not self._given_up(stream, now, alive):
                return
            given_up += 1
        if given_up > h.old.replication - h.old.quorum:
            return  # some accounts could have no W reachable old owners: keep waiting
        if any(a not in h.ready for a in h.reports):
            return
        h.complete = True
        h.ready_count = len(h.ready)
        batch = Batch()
        batch.put_handoff(h.epoch, h.record())
        for prefix in (layout.REPORT + layout.u64(h.epoch), layout.READY + layout.u64(h.epoch)):
            for key in self.store.keys_under(prefix):
                batch.delete(key)
        h.reports = {a: r for a, r in h.reports.items() if a in h.frozen}
        h.claims.clear()
        h.credit_checks.clear()
        self._reindex()
        self.out.add(Persist(batch, (Notify(HandoffComplete(h.epoch)),)))

    # ---- status ------------------------------------------------------------------------------------
    def status(self) -> dict:
        """Progress of the latest handoff, for `GET /v1/epoch` and /metrics."""
        frozen = self.ledger.frozen_count()
        if not self.handoffs:
            return {"epoch": self.chain.epoch, "state": "idle", "streams": {}, "accounts_ready": 0,
                    "accounts_pending": 0, "accounts_moved_in": 0, "certs_received": 0, "bytes_received": 0,
                    "frozen": frozen}
        h = self.handoffs[max(self.handoffs)]
        pending = sum(1 for a in h.reports if a not in h.ready)
        return {
            "epoch": h.epoch,
            "state": "complete" if h.complete else "in_progress",
            "streams": {p.hex(): {"done": s.done or h.complete, "cursor": s.cursor.hex()}
                        for p, s in h.streams.items()},
            "accounts_ready": h.ready_count if h.complete else len(h.ready),
            "accounts_pending": 0 if h.complete else pending,
            "accounts_moved_in": h.moved_in,
            "certs_received": h.certs,
            "bytes_received": h.bytes,
            "frozen": frozen,
        }
