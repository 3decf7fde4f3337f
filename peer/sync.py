"""Catch-up and anti-entropy between owners of the same accounts.

Certificates prove themselves, so an owner can pull what it missed from any co-owner without
trusting it: whatever comes back is verified like any other certificate.

- Catch-up: an owner that sees a debit ahead of its `next_seq` (a vote request or a certificate)
  asks a co-owner for the certificates in the gap (`CertRange`), one request per account in flight.
- Anti-entropy: every `ae_interval` an owner sends a random co-owner a digest of the accounts both
  own, in 64 buckets. The co-owner answers with its per-account state for the buckets that differ;
  the first side then pulls debits it lacks (`CertRange`) and, where the credit sets differ, the list
  of credit ids (`CreditsRequest`) and the certificates it is missing (`CertFetch`). Both sides run
  rounds, so each pulls what it lacks.
- The digests are kept up to date incrementally (XOR in and out as accounts change), so a round
  costs work proportional to what changed, not to how many accounts a peer owns; and accounts that
  changed in the last `ae_quiet` seconds are left out of replies and pulls (their certificates are
  most likely still in flight, not missing).
- Under load most buckets differ for a moment (payments in flight between owners), and answering
  with every account of every differing bucket made each round's work grow with the accounts held
  (thousands of entries per round once a devnet had run a few benchmarks: CPU per payment and the
  latency tail grew with every run). So: accounts that changed within `ae_quiet` are left out of
  the digests as well; a bucket is answered only if it also differed in the previous digest from
  the same co-owner (a lag passes, a real difference stays); and a reply looks at no more than
  `max_ae_scan` accounts, taking turns through large buckets. A real difference is found a round
  or a few turns later instead of at once; a round's work no longer depends on what a peer holds.
"""

from __future__ import annotations

import hashlib
import itertools
import random
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from crypto.errors import DecodeError
from crypto.messages import Certificate
from gossip.effects import Outbox
from peer.ledger import Ledger
from peer.ring import Ring
from peer.wire import (
    AE_BUCKETS,
    MAX_BATCH_CERTS,
    MAX_IDS,
    AEAccounts,
    AEDigest,
    AEEntry,
    CertBatch,
    CertFetch,
    CertRange,
    CreditsReply,
    CreditsRequest,
)
from store import layout
from store.layout import AccountState

CREDITS_SCAN = 1024  # history entries one CreditsRequest may make this peer read


@dataclass(frozen=True)
class SyncConfig:
    catch_up_timeout: float = 1.0
    ae_interval: float = 2.0
    ae_quiet: float = 2.0
    max_ae_entries: int = 4096
    max_ae_scan: int = 1024  # accounts one anti-entropy reply looks at, whatever a peer holds


class Sync:
    def __init__(self, ledger: Ledger, out: Outbox, rng: random.Random, alive: Callable[[], list[bytes]],
                 apply: Callable[[Certificate, bytes], None], config: SyncConfig | None = None, *,
                 credits_listed: Callable[[bytes, bytes, tuple[bytes, ...], bool], None] | None = None) -> None:
        self.ledger = ledger
        self.ring = ledger.ring
        self.me = ledger.me
        self.out = out
        self.rng = rng
        self.alive = alive
        self.apply = apply  # verify and apply a pulled certificate (src for penalties)
        # (src, account, credit ids we lack, last page): the handoff reconciles credits through it
        self.credits_listed = credits_listed or (lambda src, account, missing, last: None)
        self.config = config or SyncConfig()
        self._catching_up: dict[bytes, float] = {}  # sender -> when the request expires
        self._next_ae = float("inf")
        self._entry: dict[bytes, int] = {}  # account -> its current digest contribution (0: none)
        self._last_change: dict[bytes, float] = {}
        self._digests: dict[bytes, list[int]] = {}  # co-owner -> 64 bucket digests of shared accounts
        self._in_bucket: list[set[bytes]] = [set() for _ in range(AE_BUCKETS)]
        self._turn = [0] * AE_BUCKETS  # where the next reply starts in a bucket too large for one
        self._recent: OrderedDict[bytes, float] = OrderedDict()  # changed within ae_quiet, oldest first
        self._differed: dict[bytes, set[int]] = {}  # co-owner -> buckets that differed in its last digest
        self._now = 0.0
        self.counters = {"catch_up_requests": 0, "ae_rounds": 0, "ae_repairs": 0, "certs_pulled": 0}

    def start(self, now: float) -> None:
        self._next_ae = now + self.config.ae_interval * (0.5 + self.rng.random())

    def set_ring(self, ring: Ring) -> None:
        """An epoch change: co-owners changed, so every per-co-owner digest is rebuilt."""
        self.ring = ring
        self._entry.clear()
        self._digests.clear()
        for bucket in self._in_bucket:
            bucket.clear()
        self.ledger.changed.update(self.ledger.accounts)

    # ---- catch-up ---------------------------------------------------------------------------------
    def need(self, sender: bytes, have: int, upto: int, now: float, prefer: bytes | None = None,
             peer: bytes | None = None) -> None:
        """We lack `sender`'s debits from `have` to before `upto`: ask a co-owner (or `peer`: an
        old owner that claimed them in a handoff report)."""
        if upto <= have:
            return
        expires = self._catching_up.get(sender)
        if expires is not None and expires > now:
            return
        if peer is None:
            peer = self._co_owner(sender, prefer)
        if peer is None:
            return
        self._catching_up[sender] = now + self.config.catch_up_timeout
        self.counters["catch_up_requests"] += 1
        self.out.send(peer, CertRange(sender, have, min(upto - have, MAX_BATCH_CERTS)))

    def _co_owner(self, account: bytes, prefer: bytes | None) -> bytes | None:
        live = set(self.alive())
        owners = [p for p in self.ring.owners(account) if p != self.me and p in live]
        if prefer is not None and prefer in owners:
            return prefer
        return self.rng.choice(owners) if owners else None

    # ---- serving ---------------------------------------------------------------------------------
    def on_cert_range(self, src: bytes, msg: CertRange) -> None:
        certs = []
        for seq in range(msg.start, msg.start + msg.count):
            oid = self.ledger.debit_at(msg.account, seq)
            if oid is None:
                break
            raw = self.ledger.cert_bytes(oid)
            if raw is None:
                break
            certs.append(Certificate.decode(raw))
        if certs:
            self.out.send(src, CertBatch(tuple(certs)))

    def on_cert_fetch(self, src: bytes, msg: CertFetch) -> None:
        certs = []
        # Each id once: a request naming one certificate 512 times was answered 512 times over.
        for oid in dict.fromkeys(msg.ids):
            raw = self.ledger.cert_bytes(oid)
            if raw is not None:
                certs.append(Certificate.decode(raw))
            if len(certs) == MAX_BATCH_CERTS:
                self.out.send(src, CertBatch(tuple(certs)))
                certs = []
        if certs:
            self.out.send(src, CertBatch(tuple(certs)))

    def on_cert_batch(self, src: bytes, msg: CertBatch, now: float) -> None:
        senders = set()
        for cert in msg.certs:
            self.counters["certs_pulled"] += 1
            senders.add(cert.order.sender)
            self.apply(cert, src)
        for sender in senders:
            self._catching_up.pop(sender, None)

    def on_credits_request(self, src: bytes, msg: CreditsRequest) -> None:
        ids: list[bytes] = []
        prefix = layout.HISTORY + msg.account
        next_after = 0
        # Read at most CREDITS_SCAN history entries per request (debits are skipped, and an account
        # of debits only was read to its end for each 39-byte request); the reply says where to go on.
        for scanned, (key, value) in enumerate(
                self.ledger.store.scan(prefix, start=layout.history_key(msg.account, msg.after)), 1):
            index = layout.read_u64(key[33:])
            try:
                entry = layout.HistoryEntry.decode(value)
            except DecodeError:
                continue
            if entry.direction == layout.DIRECTION_CREDIT:
                ids.append(entry.order_id)
            if len(ids) == MAX_IDS or scanned == CREDITS_SCAN:
                next_after = index + 1
                break
        self.out.send(src, CreditsReply(msg.account, tuple(ids), next_after))

    def on_credits_reply(self, src: bytes, msg: CreditsReply) -> None:
        missing = tuple(oid for oid in msg.ids if not self.ledger.applied(oid) & layout.APPLIED_CREDIT)
        self.credits_listed(src, msg.account, missing, not msg.next_after)
        if missing:
            self.counters["ae_repairs"] += len(missing)
            self.out.send(src, CertFetch(missing))
        if msg.next_after:
            self.out.send(src, CreditsRequest(msg.account, msg.next_after))

    # ---- anti-entropy ------------------------------------------------------------------------------
    def next_deadline(self) -> float:
        return self._next_ae

    def tick(self, now: float) -> None:
        self._now = now
        for sender in [s for s, t in self._catching_up.items() if t <= now]:
            del self._catching_up[sender]
        if now < self._next_ae:
            return
        self._next_ae = now + self.config.ae_interval
        live = [p for p in self.alive() if p in self.ring.committee and p != self.me]
        if not live or self.me not in self.ring.committee:
            return
        peer = self.rng.choice(live)
        self.counters["ae_rounds"] += 1
        self.out.send(peer, AEDigest(self._buckets(peer)))

    def on_digest(self, src: bytes, msg: AEDigest, now: float) -> None:
        self._now = now
        mine = self._buckets(src)
        now_differ = {i for i in range(AE_BUCKETS) if mine[i] != msg.buckets[i]}
        before = self._differed.get(src, set())
        if now_differ:
            self._differed[src] = now_differ
        else:
            self._differed.pop(src, None)
        differ = sorted(now_differ & before)  # a difference that persisted, not a lag
        if not differ:
            return
        owners = self.ring.owners
        quiet_before = self._now - self.config.ae_quiet
        entries = []
        share = max(1, self.config.max_ae_scan // len(differ))
        for bucket in differ:
            for account in self._scan(bucket, share):
                if src not in owners(account) or self._last_change.get(account, 0.0) > quiet_before:
                    continue
                state = self.ledger.accounts[account]
                entries.append(AEEntry(account, state.next_seq, state.credits, state.credit_digest))
                if len(entries) >= self.config.max_ae_entries:
                    break
            if len(entries) >= self.config.max_ae_entries:
                break
        if entries:
            self.out.send(src, AEAccounts(tuple(entries)))

    def _scan(self, bucket: int, limit: int) -> list[bytes]:
        """At most `limit` accounts of a bucket, continuing where the last reply stopped."""
        accounts = self._in_bucket[bucket]
        if len(accounts) <= limit:
            return list(accounts)
        start = self._turn[bucket] % len(accounts)
        chosen = list(itertools.islice(accounts, start, start + limit))
        if len(chosen) < limit:
            chosen += itertools.islice(accounts, limit - len(chosen))
        self._turn[bucket] = start + limit
        return chosen

    def on_accounts(self, src: bytes, msg: AEAccounts, now: float) -> None:
        self._now = now
        self._refresh()
        quiet_before = now - self.config.ae_quiet
        for entry in msg.entries:
            if not self.ledger.owns(entry.account) or src not in self.ring.owners(entry.account):
                continue
            if self._last_change.get(entry.account, 0.0) > quiet_before:
                continue  # we are still applying things to it: compare it in a later round
            mine = self.ledger.peek(entry.account) or AccountState()
            if mine.next_seq < entry.next_seq:
                self.need(entry.account, mine.next_seq, entry.next_seq, now, prefer=src)
            if entry.credits and (entry.credits, entry.credit_digest) != (mine.credits, mine.credit_digest):
                self.out.send(src, CreditsRequest(entry.account, 0))

    def _refresh(self) -> None:
        """Fold the accounts changed since the last look into the per-co-owner bucket digests."""
        changed = self.ledger.changed
        if not changed:
            return
        owners = self.ring.owners
        me = self.me
        for account in changed:
            state = self.ledger.accounts.get(account)
            new = 0
            if state is not None and (state.next_seq or state.credits or state.balance) \
                    and me in owners(account):
                h = hashlib.sha256(account + state.next_seq.to_bytes(8, "big") + state.credits.to_bytes(8, "big")
                                   + state.credit_digest).digest()
                new = int.from_bytes(h[:8], "big")
            old = self._entry.get(account, 0)
            self._last_change[account] = self._now
            self._recent[account] = self._now
            self._recent.move_to_end(account)
            if new == old:
                continue
            bucket = account[0] % AE_BUCKETS
            flip = old ^ new
            for peer in owners(account):
                if peer != self.me:
                    digests = self._digests.get(peer)
                    if digests is None:
                        digests = self._digests[peer] = [0] * AE_BUCKETS
                    digests[bucket] ^= flip
            if new:
                self._entry[account] = new
                self._in_bucket[bucket].add(account)
            else:
                self._entry.pop(account, None)
                self._in_bucket[bucket].discard(account)
        changed.clear()

    def _buckets(self, peer: bytes) -> tuple[bytes, ...]:
        """The digest of the quiet accounts shared with `peer` (work: what changed recently)."""
        self._refresh()
        digests = list(self._digests.get(peer) or [0] * AE_BUCKETS)
        recent = self._recent
        quiet_before = self._now - self.config.ae_quiet
        while recent:
            account, at = next(iter(recent.items()))
            if at > quiet_before:
                break
            del recent[account]
        owners = self.ring.owners
        for account in recent:
            entry = self._entry.get(account, 0)
            if entry and peer in owners(account):
                digests[account[0] % AE_BUCKETS] ^= entry
        return tuple(x.to_bytes(8, "big") for x in digests)
