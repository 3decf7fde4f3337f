"""SWIM membership with Lifeguard-style local health, as a sans-IO state machine.

Everything that changes who this peer believes is alive lives in this file. The core never reads a
clock or touches a socket: the driver passes `now` in, and collects effects from `out`.

Rules (after SWIM and memberlist):
- Each protocol period, probe the next member of a shuffled round-robin list with `Ping`. No `Ack`
  within the probe timeout: ask `indirect_checks` others to probe it (`PingReq`). No ack by the end of
  the period: suspect it.
- A suspicion expires into death after a timeout that grows with log(n) and shrinks (down to a floor)
  as independent members confirm it (Lifeguard). A member refutes a suspicion or a death about itself
  by bumping its incarnation and re-announcing its signed record.
- Precedence: alive(i) overrides suspect/dead(j) only when i > j; suspect(i) overrides alive(j) when
  i >= j; dead(i) overrides alive/suspect(j) when i >= j.
- Updates ride on pings and acks and on periodic gossip rounds, each retransmitted about
  `retransmit_mult * log10(n+1)` times. A periodic push-pull `Sync` with a random member heals what
  gossip missed; remote deaths learned by sync only raise a suspicion (so partitions heal without
  everyone declaring everyone dead). Dead members are retried now and then and reaped after a while.
- Local health (Lifeguard): missed acks and missed nacks raise an awareness score that stretches our
  own probe interval and timeout, so a slow peer does not declare healthy ones dead.
- Only a peer can sign its own record; forged or mismatched records are dropped and the sender penalised.

Committee and outsiders. Who is in the committee is given (the genesis now, epoch changes later,
through `set_committee`); a record's `roles` field is only the peer's claim and decides nothing.
Everything above is about committee members: they alone are in `members`, probed, suspected,
declared dead, gossiped about, sent in syncs, persisted and never reaped, and only their (or our
own) word counts about a committee member. Any other peer ("outsider": an observer, or anybody who
knows the network id) may only speak for itself:
- its own signed record, sent by itself (`src` == the record's peer), enters the bounded
  `outsiders` table (`max_outsiders`; when full, newcomers are not even signature-checked) and
  stays while it keeps talking to us (`outsider_ttl`); it is never probed, gossiped, synced to
  others, persisted, or counted in n;
- it may ping us (we ack, without spending our retransmit budget on it), sync with us (we answer
  with the committee's records), and receive and relay broadcasts (see gossip.broadcast);
- what it says about anybody else (records, suspicions, deaths, about us too) is ignored, and so
  are its indirect-probe requests; an ack or nack counts only from the peer we asked.
So outsiders cost a bounded table and never dilute, slow or fake the failure detection of a
committee member. What they make the peer read per second is bounded by the transport.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from crypto.errors import DecodeError
from crypto.keys import SigningKey
from crypto.messages import PeerRecord
from crypto.schema import Message
from gossip.effects import Committee, Dial, Forget, Learn, Notify, Outbox, Penalize, Persist
from gossip.wire import (
    ALIVE,
    DEAD,
    LEFT,
    MAX_PIGGYBACK,
    MAX_SYNC_MEMBERS,
    SUSPECT,
    Ack,
    Gossip,
    Nack,
    Ping,
    PingReq,
    Sync,
    Update,
)
from store.db import Batch

_U32 = 1 << 32
ROLE_COMMITTEE = 1  # bit in PeerRecord.roles: the signer says it is in the committee (a claim)


@dataclass(frozen=True)
class MembershipConfig:
    probe_interval: float = 1.0
    probe_timeout: float = 0.5
    indirect_checks: int = 3
    gossip_interval: float = 0.2
    gossip_fanout: int = 3
    retransmit_mult: int = 4
    suspicion_mult: int = 4
    suspicion_max_mult: int = 6
    sync_interval: float = 15.0
    reconnect_interval: float = 10.0
    reap_after: float = 600.0
    awareness_max: int = 8
    seed_retry_min: float = 0.5
    seed_retry_max: float = 15.0
    max_outsiders: int = 32  # non-committee peers held at once (only ones that introduced themselves)
    outsider_ttl: float = 60.0  # an outsider not heard from for this long is dropped
    max_relays: int = 64  # indirect probes we run for others at once

    def suspicion_bounds(self, n: int) -> tuple[float, float]:
        """(floor, ceiling) of the suspicion timeout in a group of n members."""
        scale = max(1.0, math.log10(max(1, n)))
        low = self.suspicion_mult * scale * self.probe_interval
        return low, low * self.suspicion_max_mult

    def detection_bound(self, n: int) -> float:
        """Upper bound (with high probability) from a crash to `dead` at every member of a healthy
        group: a few probe periods until somebody probes it, the longest suspicion, then gossip."""
        return 5 * self.probe_interval + self.suspicion_bounds(n)[1] + 10 * self.gossip_interval + 2.0


@dataclass(frozen=True, slots=True)
class MemberChanged:
    """Notification: `peer_id` moved from `old` (None = unknown) to `new`."""

    peer_id: bytes
    old: int | None
    new: int


@dataclass(slots=True)
class Member:
    peer_id: bytes
    state: int
    incarnation: int
    changed_at: float
    record: PeerRecord | None = None
    record_bytes: bytes = b""
    suspect_since: float = 0.0
    suspect_deadline: float = math.inf
    confirmations: set[bytes] = field(default_factory=set)
    heard_at: float = 0.0  # outsiders: when it last spoke to us


@dataclass(slots=True)
class _Probe:
    target: bytes
    seq: int
    indirect_at: float
    fail_at: float
    indirect_sent: bool = False
    relays: frozenset[bytes] = frozenset()  # the members asked to probe the target for us
    nacked: set[bytes] = field(default_factory=set)


@dataclass(slots=True)
class _Relay:
    origin: bytes
    origin_seq: int
    target: bytes
    deadline: float


@dataclass(slots=True)
class _Queued:
    update: Update
    transmits: int = 0


class Membership:
    """Who is in the group and whether they are alive, from this peer's point of view."""

    def __init__(
        self,
        key: SigningKey,
        network_id: bytes,
        host: str,
        port: int,
        *,
        committee: frozenset[bytes],
        api_port: int = 0,
        incarnation: int = 0,
        seeds: list[tuple[str, int]] | None = None,
        config: MembershipConfig | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.key = key
        self.id = key.public
        self.network_id = network_id
        self.config = config or MembershipConfig()
        self.rng = rng or random.Random()
        self.out = Outbox()
        self.committee = frozenset(committee)
        self.members: dict[bytes, Member] = {}  # committee members only
        self.outsiders: dict[bytes, Member] = {}  # other peers that introduced themselves (bounded)
        self._suspects: dict[bytes, Member] = {}  # the members in SUSPECT, for cheap deadlines
        self.awareness = 0
        self._host, self._port, self._api_port = host, port, api_port
        self.incarnation = incarnation
        self.record = self._sign_record()
        self._seeds = list(seeds or [])
        self._seed_retry = self.config.seed_retry_min
        self._next_seed_dial = math.inf
        self._seq = self.rng.randrange(_U32)
        self._probe_order: list[bytes] = []
        self._probe: _Probe | None = None
        self._relays: dict[int, _Relay] = {}
        self._queue: dict[bytes, _Queued] = {}
        self._started = False
        self._left = False
        self._next_probe = self._next_gossip = self._next_sync = self._next_reconnect = math.inf
        self._next_reap = math.inf
        self._now = 0.0  # the latest time we were given (for calls that take none)
        self.counters = {"probes": 0, "probe_failures": 0, "refutations": 0, "forged_records": 0,
                         "suspicions": 0, "deaths": 0, "outsiders_admitted": 0, "outsiders_refused": 0,
                         "outsiders_expired": 0, "outsider_claims_ignored": 0}

    # ---- public surface -------------------------------------------------------------------
    def start(self, now: float) -> None:
        """Begin: dial the seeds and schedule the periodic work with a random phase."""
        self._started = True
        self._now = now
        jitter = self.rng.random
        self._next_probe = now + self.config.probe_interval * jitter()
        self._next_gossip = now + self.config.gossip_interval * jitter()
        self._next_sync = now + self.config.sync_interval * (0.5 + jitter())
        self._next_reconnect = now + self.config.reconnect_interval * (0.5 + jitter())
        self._next_reap = now + self.config.probe_interval * 10
        self._persist_incarnation()
        self.out.add(Committee(self.committee))
        self._dial_seeds(now)

    def add_seeds(self, seeds: list[tuple[str, int]]) -> None:
        self._seeds.extend(s for s in seeds if s not in self._seeds)

    def is_committee(self, peer_id: bytes) -> bool:
        return peer_id in self.committee

    def set_committee(self, ids: frozenset[bytes]) -> None:
        """The committee changed (an epoch change). Promoted outsiders become full members;
        demoted members join the bounded outsiders (or are dropped if that table is full) and their
        stored records are deleted. Perform `out` afterwards (it tells the transport too)."""
        ids = frozenset(ids)
        if ids == self.committee:
            return
        now = self._now
        was_member = self.id in self.committee
        self.committee = ids
        batch = Batch()
        for peer_id in [p for p in self.members if p not in ids]:
            m = self.members.pop(peer_id)
            self._suspects.pop(peer_id, None)
            self._queue.pop(peer_id, None)
            if m.record is not None:
                batch.delete_peer(peer_id)
            if m.record is not None and m.state in (ALIVE, SUSPECT) and len(self.outsiders) < self.config.max_outsiders:
                m.state, m.heard_at = ALIVE, now
                m.suspect_deadline, m.confirmations = math.inf, set()
                self.outsiders[peer_id] = m
            else:
                self.out.add(Forget(peer_id))
        for peer_id in [p for p in self.outsiders if p in ids]:
            m = self.outsiders.pop(peer_id)
            m.changed_at = now
            self.members[peer_id] = m
            assert m.record is not None
            self.out.add(Learn(m.record, persist=True))
            self.out.add(Notify(MemberChanged(peer_id, None, ALIVE)))
            self._enqueue(Update(ALIVE, peer_id, m.incarnation, peer_id, m.record_bytes))  # members who never met it
        if len(batch):
            self.out.add(Persist(batch))
        self._probe_order = []
        if (self.id in ids) != was_member:
            # Our record's roles claim changes: re-sign it under a new incarnation so it spreads.
            self.incarnation += 1
            self.record = self._sign_record()
            self._persist_incarnation()
            self._enqueue(self._self_update())
        self.out.add(Committee(ids))

    def on_dialed(self, peer_id: bytes, now: float) -> None:
        """A seed answered and proved it is `peer_id`: ask for its view of the group."""
        if peer_id == self.id:
            return
        self._seed_retry = self.config.seed_retry_min
        self.out.send(peer_id, Sync(True, False, self._snapshot()))

    def on_dial_failed(self, now: float) -> None:
        # Keep retrying seeds only while we know nobody; once joined, gossip does the rest.
        if self._next_seed_dial is math.inf and not self.alive():
            self._next_seed_dial = now + self._seed_retry
            self._seed_retry = min(self._seed_retry * 2, self.config.seed_retry_max)

    def alive(self) -> list[bytes]:
        """Committee members other than us believed alive (suspects count: they may be fine)."""
        return [m.peer_id for m in self.members.values() if m.state in (ALIVE, SUSPECT)]

    def outsider_ids(self) -> list[bytes]:
        """The outsiders in our table (they spoke to us within `outsider_ttl`)."""
        return list(self.outsiders)

    def state_of(self, peer_id: bytes) -> int | None:
        if peer_id == self.id:
            return ALIVE
        m = self.members.get(peer_id) or self.outsiders.get(peer_id)
        return None if m is None else m.state

    def group_size(self) -> int:
        """n: live committee members, ourselves included (outsiders never stretch the timings)."""
        return 1 + sum(1 for m in self.members.values() if m.state in (ALIVE, SUSPECT))

    def leave(self, now: float) -> None:
        """Graceful departure: tell the members we are leaving so they need not suspect us. The
        update carries our signed record, so a member that missed our latest incarnation (a
        refutation) still accepts it."""
        update = Update(LEFT, self.id, self.incarnation, self.id, self.record.encode())
        for target in self.alive():
            self.out.send(target, Gossip((update,)))
        # From here on we neither probe nor gossip, and never refute: the members re-gossip our
        # departure and its echo reaches us before we exit; refuting it would undo the departure.
        self._left = True
        self._started = False

    # ---- timers ------------------------------------------------------------------------------
    def next_deadline(self) -> float:
        if not self._started:
            return math.inf
        d = min(self._next_probe, self._next_gossip, self._next_sync, self._next_reconnect,
                self._next_reap, self._next_seed_dial)
        if self._probe is not None:
            d = min(d, self._probe.fail_at if self._probe.indirect_sent else self._probe.indirect_at)
        for relay in self._relays.values():
            d = min(d, relay.deadline)
        for m in self._suspects.values():
            d = min(d, m.suspect_deadline)
        return d

    def tick(self, now: float) -> None:
        if not self._started:
            return
        self._now = now
        if now >= self._next_seed_dial:
            self._next_seed_dial = math.inf
            self._dial_seeds(now)
        self._tick_probe(now)
        for seq in [s for s, r in self._relays.items() if now >= r.deadline]:
            relay = self._relays.pop(seq)
            self.out.send(relay.origin, Nack(relay.origin_seq))
        for m in [m for m in self._suspects.values() if now >= m.suspect_deadline]:
            self._set_state(m, DEAD, m.incarnation, now)
            self._enqueue(Update(DEAD, m.peer_id, m.incarnation, self.id, b""))
        if now >= self._next_gossip:
            self._next_gossip = now + self.config.gossip_interval
            self._gossip_round()
        if now >= self._next_sync:
            self._next_sync = now + self._sync_interval()
            peers = self.alive()
            if peers:
                self.out.send(self.rng.choice(peers), Sync(False, False, self._snapshot()))
            elif self._seeds:
                self._dial_seeds(now)
        if now >= self._next_reconnect:
            self._next_reconnect = now + self.config.reconnect_interval
            dead = [m.peer_id for m in self.members.values() if m.state == DEAD and m.record]
            if dead:
                self.out.send(self.rng.choice(dead), Sync(False, False, self._snapshot()))
        if now >= self._next_reap:
            # Committee members are never reaped (they keep their place); outsiders that went quiet are.
            self._next_reap = now + self.config.probe_interval * 10
            self._expire_outsiders(now)

    def _tick_probe(self, now: float) -> None:
        probe = self._probe
        if probe is not None:
            if not probe.indirect_sent and now >= probe.indirect_at:
                probe.indirect_sent = True
                relays = self._pick([p for p in self.alive() if p != probe.target],
                                    self.config.indirect_checks)
                probe.relays = frozenset(relays)
                for relay in relays:
                    self.out.send(relay, PingReq(probe.seq, probe.target, self._piggyback()))
            if now >= probe.fail_at:
                self._probe = None
                self._probe_failed(probe, now)
        if now >= self._next_probe:
            self._next_probe = now + self.config.probe_interval * (self.awareness + 1)
            if self._probe is not None:
                self._probe_failed(self._probe, now)
                self._probe = None
            self._start_probe(now)

    def _start_probe(self, now: float) -> None:
        target = self._next_probe_target()
        if target is None:
            return
        scale = self.awareness + 1
        seq = self._next_seq()
        self._probe = _Probe(target, seq, now + self.config.probe_timeout * scale,
                             now + self.config.probe_interval * scale * 0.95)
        self.counters["probes"] += 1
        updates = self._piggyback()
        if self.id not in self.committee:
            # We are an outsider to them: only our own word about ourselves makes us known.
            updates = (self._self_update(), *updates[:MAX_PIGGYBACK - 1])
        self.out.send(target, Ping(seq, target, updates))

    def _next_probe_target(self) -> bytes | None:
        while self._probe_order:
            candidate = self._probe_order.pop()
            m = self.members.get(candidate)
            if m is not None and m.state in (ALIVE, SUSPECT):
                return candidate
        self._probe_order = self.alive()
        if not self._probe_order:
            return None
        self.rng.shuffle(self._probe_order)
        return self._probe_order.pop()

    def _probe_failed(self, probe: _Probe, now: float) -> None:
        self.counters["probe_failures"] += 1
        # Lifeguard: relays that did not even nack point at our own connectivity.
        missed_nacks = max(0, len(probe.relays) - len(probe.nacked))
        self._adjust_awareness(1 + min(missed_nacks, 1))
        m = self.members.get(probe.target)
        if m is not None and m.state == ALIVE:
            self._suspect(m, m.incarnation, self.id, now)
        elif m is not None and m.state == SUSPECT:
            # Our own failed probe is an independent confirmation (Lifeguard), as memberlist counts it.
            self._confirm(m, self.id, now)

    # ---- message handling ---------------------------------------------------------------------
    def handle(self, src: bytes, msg: Message, now: float) -> None:
        self._now = now
        kind = type(msg)
        outsider = src not in self.committee
        if outsider:
            known = self.outsiders.get(src)
            if known is not None:
                known.heard_at = now
        if kind is Ping:
            self._updates(src, msg.updates, now)
            if msg.target == self.id:
                self.out.send(src, Ack(msg.seq, self._peek() if outsider else self._piggyback()))
        elif kind is Ack:
            self._updates(src, msg.updates, now)
            self._on_ack(src, msg.seq)
        elif kind is PingReq:
            if outsider:
                # Outsiders probe members themselves; relaying for them would let anyone make us
                # ping on their behalf (and they are never asked to relay for us).
                self.counters["outsider_claims_ignored"] += 1
                return
            self._updates(src, msg.updates, now)
            if msg.target == self.id:
                self.out.send(src, Ack(msg.seq, self._piggyback()))
            elif msg.target in self.members and len(self._relays) < self.config.max_relays:
                seq = self._next_seq()
                self._relays[seq] = _Relay(src, msg.seq, msg.target, now + self.config.probe_timeout)
                self.out.send(msg.target, Ping(seq, msg.target, self._piggyback()))
        elif kind is Nack:
            probe = self._probe
            if probe is not None and probe.seq == msg.seq and src in probe.relays:
                probe.nacked.add(src)
        elif kind is Gossip:
            self._updates(src, msg.updates, now)
        elif kind is Sync:
            self._updates(src, msg.members, now, from_sync=True)
            if not msg.reply:
                self.out.send(src, Sync(False, True, self._snapshot()))
        else:
            raise TypeError(f"membership does not handle {kind.__name__}")

    def _on_ack(self, src: bytes, seq: int) -> None:
        # Only the peer that was pinged (or a member we asked to ping it) can vouch for it:
        # otherwise anybody who guessed our next sequence number could keep a dead member alive.
        relay = self._relays.get(seq)
        if relay is not None:
            if src == relay.target:
                del self._relays[seq]
                self.out.send(relay.origin, Ack(relay.origin_seq, ()))
            return
        probe = self._probe
        if probe is not None and probe.seq == seq and (src == probe.target or src in probe.relays):
            self._probe = None
            self._adjust_awareness(-1)

    def _updates(self, src: bytes, updates: tuple[Update, ...], now: float, *, from_sync: bool = False) -> None:
        from_member = src in self.committee
        for update in updates:
            if update.peer_id == self.id:
                if from_member:
                    self._about_me(src, update)
            elif update.peer_id not in self.committee:
                if update.peer_id == src:
                    self._outsider_speaks(update, now)
                else:
                    self.counters["outsider_claims_ignored"] += 1
            elif from_member or (update.state == ALIVE and update.record):
                self._apply(src, update, now, from_sync)
            else:
                self.counters["outsider_claims_ignored"] += 1

    def _apply(self, src: bytes, u: Update, now: float, from_sync: bool) -> None:
        """An update about a committee member (from a member, or a signed alive record from anyone)."""
        m = self.members.get(u.peer_id)
        record: PeerRecord | None = None
        if u.record:
            if m is not None and m.record_bytes == u.record:
                record = m.record
            else:
                genuine, record = self._verified(src, u, None if m is None else m.record)
                if not genuine:
                    return
                if record is not None and m is not None:
                    m.record, m.record_bytes = record, u.record
                    self.out.add(Learn(record, persist=True))
        if u.state == ALIVE:
            if record is None:
                return  # an alive claim must carry the peer's own (new) signature
            if m is None:
                self.members[u.peer_id] = Member(u.peer_id, ALIVE, u.incarnation, now, record, u.record)
                self.out.add(Learn(record, persist=True))
                self.out.add(Notify(MemberChanged(u.peer_id, None, ALIVE)))
                self._enqueue(u)
            elif u.incarnation > m.incarnation:
                self._set_state(m, ALIVE, u.incarnation, now)
                self._enqueue(u)
            return
        if m is None:
            if record is not None:
                # A member we never saw alive (a sync after a partition): keep its record so
                # reconnects can try it, and hold the claim as a suspicion at most.
                state = SUSPECT if u.state == SUSPECT else DEAD
                m = Member(u.peer_id, state, u.incarnation, now, record, u.record)
                self.members[u.peer_id] = m
                if state == SUSPECT:
                    self._suspects[m.peer_id] = m
                    self._arm_suspicion(m, u.origin, now)
                self.out.add(Learn(record, persist=True))
                self.out.add(Notify(MemberChanged(u.peer_id, None, state)))
            return
        # Unsigned claims may not run ahead of the member's own signed incarnation: otherwise
        # anyone could push it to the top of the range where it can no longer refute.
        if m.record is None or u.incarnation < m.incarnation or u.incarnation > m.record.incarnation:
            return
        state = SUSPECT if from_sync and u.state == DEAD else u.state
        if state == SUSPECT:
            if m.state in (DEAD, LEFT):
                return
            if m.state == SUSPECT and u.incarnation == m.incarnation:
                self._confirm(m, u.origin, now)
            else:
                self._suspect(m, u.incarnation, u.origin, now)
        elif m.state not in (DEAD, LEFT):
            self._set_state(m, state, u.incarnation, now)
            self._enqueue(Update(state, m.peer_id, u.incarnation, u.origin, b""))

    def _verified(self, src: bytes, u: Update, known: PeerRecord | None) -> tuple[bool, PeerRecord | None]:
        """(genuine, record): record is the update's record if it is newer than `known` and signed
        by its peer, None if stale. Forged or mismatched records are not genuine and penalise `src`."""
        try:
            record = PeerRecord.decode(u.record)
        except DecodeError as exc:
            self._forged(src, f"malformed peer record: {exc}")
            return False, None
        if record.peer_id != u.peer_id or (u.state == ALIVE and record.incarnation != u.incarnation):
            self._forged(src, "peer record does not match its update")
            return False, None
        if known is not None and record.incarnation <= known.incarnation:
            return True, None  # stale: not worth a signature check, and not used
        if not record.signature_valid(self.network_id):
            self._forged(src, f"forged peer record for {u.peer_id.hex()[:12]}")
            return False, None
        return True, record

    def _outsider_speaks(self, u: Update, now: float) -> None:
        """An outsider's word about itself: the only way into (or out of) the outsiders table."""
        m = self.outsiders.get(u.peer_id)
        if u.state != ALIVE:
            if m is not None and u.state == LEFT:
                self._drop_outsider(u.peer_id)
            return
        if not u.record or (m is not None and m.record_bytes == u.record):
            return
        if m is None and len(self.outsiders) >= self.config.max_outsiders:
            self._expire_outsiders(now)
            if len(self.outsiders) >= self.config.max_outsiders:
                self.counters["outsiders_refused"] += 1  # refused before any signature work
                return
        _, record = self._verified(u.peer_id, u, None if m is None else m.record)
        if record is None:
            return
        if m is None:
            self.outsiders[u.peer_id] = Member(u.peer_id, ALIVE, u.incarnation, now, record, u.record,
                                               heard_at=now)
            self.counters["outsiders_admitted"] += 1
        else:
            m.record, m.record_bytes, m.incarnation, m.heard_at = record, u.record, u.incarnation, now
        self.out.add(Learn(record, persist=False))

    def _expire_outsiders(self, now: float) -> None:
        horizon = now - self.config.outsider_ttl
        for peer_id in [p for p, m in self.outsiders.items() if m.heard_at < horizon]:
            self.counters["outsiders_expired"] += 1
            self._drop_outsider(peer_id)

    def _drop_outsider(self, peer_id: bytes) -> None:
        del self.outsiders[peer_id]
        self.out.add(Forget(peer_id))

    def _forged(self, src: bytes, reason: str) -> None:
        self.counters["forged_records"] += 1
        self.out.add(Penalize(src, 10, reason))

    def _about_me(self, src: bytes, u: Update) -> None:
        if self._left:
            return
        if u.state == ALIVE:
            if u.incarnation > self.incarnation and u.record:
                try:
                    record = PeerRecord.decode(u.record)
                except DecodeError:
                    return
                if record.peer_id == self.id and record.signature_valid(self.network_id):
                    # Our own signed record from before a restart that lost its incarnation.
                    self._refute(record.incarnation)
            return
        if u.incarnation == self.incarnation:
            self._refute(u.incarnation)

    def _refute(self, seen: int) -> None:
        self.counters["refutations"] += 1
        self._adjust_awareness(1)
        self.incarnation = seen + 1
        self.record = self._sign_record()
        self._persist_incarnation()
        self._enqueue(self._self_update())

    # ---- state changes ----------------------------------------------------------------------
    def _suspect(self, m: Member, incarnation: int, origin: bytes, now: float) -> None:
        m.incarnation = incarnation
        self._set_state(m, SUSPECT, incarnation, now)
        self._arm_suspicion(m, origin, now)
        self.counters["suspicions"] += 1
        self._enqueue(Update(SUSPECT, m.peer_id, incarnation, origin, b""))

    def _arm_suspicion(self, m: Member, origin: bytes, now: float) -> None:
        m.suspect_since = now
        m.confirmations = {origin}
        m.suspect_deadline = now + self._suspicion_timeout(0)

    def _confirm(self, m: Member, origin: bytes, now: float) -> None:
        if origin in m.confirmations:
            return
        m.confirmations.add(origin)
        m.suspect_deadline = m.suspect_since + self._suspicion_timeout(len(m.confirmations) - 1)
        self._enqueue(Update(SUSPECT, m.peer_id, m.incarnation, origin, b""))

    def _suspicion_timeout(self, confirmations: int) -> float:
        n = self.group_size()
        low, high = self.config.suspicion_bounds(n)
        expected = self.config.suspicion_mult - 2
        if n - 2 < expected or expected < 1:
            return low
        frac = math.log(confirmations + 1) / math.log(expected + 1)
        return max(low, high - (high - low) * frac)

    def _set_state(self, m: Member, state: int, incarnation: int, now: float) -> None:
        old = m.state
        m.incarnation = incarnation
        if old == state:
            return
        m.state = state
        m.changed_at = now
        if state == SUSPECT:
            self._suspects[m.peer_id] = m
        else:
            self._suspects.pop(m.peer_id, None)
            m.suspect_deadline = math.inf
            m.confirmations = set()
        if state == DEAD:
            self.counters["deaths"] += 1
        self.out.add(Notify(MemberChanged(m.peer_id, old, state)))

    def _adjust_awareness(self, delta: int) -> None:
        self.awareness = min(self.config.awareness_max, max(0, self.awareness + delta))

    # ---- dissemination ----------------------------------------------------------------------
    def _enqueue(self, update: Update) -> None:
        self._queue[update.peer_id] = _Queued(update)

    def _transmit_limit(self) -> int:
        return self.config.retransmit_mult * math.ceil(math.log10(self.group_size() + 1))

    def _piggyback(self, limit: int = MAX_PIGGYBACK) -> tuple[Update, ...]:
        if not self._queue:
            return ()
        chosen = sorted(self._queue.values(), key=lambda q: q.transmits)[:limit]
        cap = self._transmit_limit()
        for q in chosen:
            q.transmits += 1
            if q.transmits >= cap:
                self._queue.pop(q.update.peer_id, None)
        return tuple(q.update for q in chosen)

    def _peek(self, limit: int = MAX_PIGGYBACK) -> tuple[Update, ...]:
        """Updates to share with an outsider: they do not use up the retransmits the committee needs."""
        if not self._queue:
            return ()
        return tuple(q.update for q in sorted(self._queue.values(), key=lambda q: q.transmits)[:limit])

    def _gossip_round(self) -> None:
        if not self._queue:
            return
        targets = self.alive()
        # Recently dead members are told too, so a wrongly-declared peer learns it and refutes.
        targets += [m.peer_id for m in self.members.values()
                    if m.state == DEAD and m.record is not None and self.rng.random() < 0.1]
        for target in self._pick(targets, self.config.gossip_fanout):
            updates = self._piggyback(2 * MAX_PIGGYBACK)
            if not updates:
                break
            self.out.send(target, Gossip(updates))

    def _snapshot(self) -> tuple[Update, ...]:
        # Ourselves and the committee: never an outsider (nobody takes an outsider's record from a
        # third party, so relaying one would only cost bandwidth).
        entries = [self._self_update()]
        for m in self.members.values():
            if m.record_bytes and len(entries) < MAX_SYNC_MEMBERS:
                entries.append(Update(m.state, m.peer_id, m.incarnation, self.id, m.record_bytes))
        return tuple(entries)

    def _sync_interval(self) -> float:
        # memberlist: sync less often in big groups so the total sync traffic stays flat.
        n = self.group_size()
        scale = 1.0 if n <= 32 else math.ceil(math.log2(n) - math.log2(32)) + 1
        return self.config.sync_interval * scale

    # ---- helpers ----------------------------------------------------------------------------
    def _self_update(self) -> Update:
        return Update(ALIVE, self.id, self.incarnation, self.id, self.record.encode())

    def _sign_record(self) -> PeerRecord:
        roles = ROLE_COMMITTEE if self.id in self.committee else 0
        return PeerRecord.create(self.key, self.network_id, self._host, self._port, self._api_port,
                                 self.incarnation, roles)

    def _persist_incarnation(self) -> None:
        batch = Batch()
        batch.put_meta("incarnation", self.incarnation)
        self.out.add(Persist(batch))

    def _dial_seeds(self, now: float) -> None:
        for host, port in self._seeds:
            self.out.add(Dial(host, port))

    def _pick(self, candidates: list[bytes], k: int) -> list[bytes]:
        if len(candidates) <= k:
            picked = list(candidates)
            self.rng.shuffle(picked)
            return picked
        return self.rng.sample(candidates, k)

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) % _U32
        return self._seq
