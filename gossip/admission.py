"""Who may hold a connection on the peer port (sans-IO: the transport asks, this decides).

Every authenticated connection belongs to one class, decided by the proven key and role, never by
anything the remote claims about itself (a peer record's `roles` field is only a claim):

- committee: a peer key in the current committee (the genesis now, epoch changes later; the
  transport learns it through `set_committee`). Never refused for room: the only limit is
  `max_links_per_peer` links per key, where a new link replaces the oldest of that key (a
  restarted peer's new link supersedes its dead one). Nothing below counts it.
- outsider: any other peer key (an observer, or anybody who knows the network id). All outsiders
  together share `max_outsider_links`, a handshake rate, and `max_per_address` with clients.
- client: a wallet or load-generator session (a throwaway key). All clients share
  `max_client_sessions`, their own handshake rate, and `max_per_address`.

Bounds are per class and per address, never per key, so a stream of fresh keys does not add up to
more. When a class (or an address) is full, a newcomer gets the place of that class's (or
address's) longest-idle session if it has been idle at least `evict_idle`; otherwise the newcomer
is refused. Idle sessions therefore never lock out active ones, and a committee link never waits
for room. Refusals raise `Busy` (sent to the remote as a readable `HandshakeReject`); evictions are
returned for the caller to close.
"""

from __future__ import annotations

import enum
from collections import Counter
from typing import Protocol

from crypto.messages import ROLE_CLIENT
from gossip.handshake import Busy
from gossip.limits import TokenBucket, TransportLimits


class Kind(enum.Enum):
    COMMITTEE = "committee"
    OUTSIDER = "outsider"
    CLIENT = "client"


class Session(Protocol):
    """What admission reads of a connection (gossip.connection.Connection has it)."""

    peer_id: bytes
    role: int
    remote: tuple[str, int]
    last_active: float


class Admission:
    def __init__(self, limits: TransportLimits, committee: frozenset[bytes] = frozenset()) -> None:
        self.limits = limits
        self.committee = frozenset(committee)
        self._tables: dict[Kind, dict[Session, None]] = {kind: {} for kind in Kind}  # insertion-ordered
        self._by_peer: dict[bytes, list[Session]] = {}  # peer links only, oldest first
        self._per_address: Counter[str] = Counter()  # outsider links and client sessions
        self._handshakes: dict[Kind, TokenBucket] = {}

    # ---- classes ----------------------------------------------------------------------------
    def kind(self, peer_id: bytes, role: int) -> Kind:
        if role == ROLE_CLIENT:
            return Kind.CLIENT
        return Kind.COMMITTEE if peer_id in self.committee else Kind.OUTSIDER

    def set_committee(self, ids: frozenset[bytes]) -> list[Session]:
        """A new committee. Returns the links whose class changed: close them, they reconnect and
        are classed afresh (promotion and demotion are rare: epoch changes)."""
        ids = frozenset(ids)
        changed = [s for s in list(self._tables[Kind.COMMITTEE]) + list(self._tables[Kind.OUTSIDER])
                   if (s.peer_id in ids) != (s.peer_id in self.committee)]
        self.committee = ids
        return changed

    def count(self, kind: Kind) -> int:
        return len(self._tables[kind])

    # ---- decisions --------------------------------------------------------------------------
    def screen(self, peer_id: bytes, role: int, address: str, now: float) -> None:
        """On the Hello, before any signature work: refuse when the class's handshake rate is
        spent or there is no room that an eviction could make. Grants nothing (the key is unproven)."""
        kind = self.kind(peer_id, role)
        if kind is Kind.COMMITTEE:
            return  # a false claim fails the signature check next; committee keys are never rate-limited
        bucket = self._handshakes.get(kind)
        if bucket is None:
            rate = (self.limits.client_handshakes_per_second if kind is Kind.CLIENT
                    else self.limits.outsider_handshakes_per_second)
            bucket = self._handshakes[kind] = TokenBucket(rate, max(1.0, 2 * rate), now)
        if not bucket.take(now):
            raise Busy(f"{kind.value}_handshake_rate", f"too many {kind.value} handshakes; try again later")
        self._room(kind, peer_id, address, now)

    def check(self, peer_id: bytes, role: int, address: str, now: float) -> None:
        """After the handshake signature verified, before we answer: refuse if there is no room."""
        self._room(self.kind(peer_id, role), peer_id, address, now)

    def admit(self, session: Session, now: float) -> list[Session]:
        """Register an authenticated connection; returns the sessions it displaces (close them).
        Raises Busy when there is no room after all (it filled up during the handshake)."""
        kind = self.kind(session.peer_id, session.role)
        victims = self._room(kind, session.peer_id, session.remote[0], now)
        for victim in victims:
            self.release(victim)
        self._tables[kind][session] = None
        if kind is not Kind.CLIENT:
            self._by_peer.setdefault(session.peer_id, []).append(session)
        if kind is not Kind.COMMITTEE:
            self._per_address[session.remote[0]] += 1
        return victims

    def release(self, session: Session) -> None:
        """The connection ended (or was displaced). Idempotent."""
        for kind, table in self._tables.items():
            if session not in table:
                continue
            del table[session]
            if kind is not Kind.COMMITTEE:
                address = session.remote[0]
                self._per_address[address] -= 1
                if self._per_address[address] <= 0:
                    del self._per_address[address]
            links = self._by_peer.get(session.peer_id)
            if links is not None and session in links:
                links.remove(session)
                if not links:
                    del self._by_peer[session.peer_id]
            return

    # ---- room -------------------------------------------------------------------------------
    def _room(self, kind: Kind, peer_id: bytes, address: str, now: float) -> list[Session]:
        """The sessions to displace so that one more of `kind` fits; raises Busy if none may go."""
        limits = self.limits
        victims: list[Session] = []
        if kind is not Kind.CLIENT:
            links = self._by_peer.get(peer_id, [])
            if len(links) >= limits.max_links_per_peer:
                victims.append(links[0])  # the same key: its newest link wins, idle or not
        if kind is Kind.COMMITTEE:
            return victims
        table = self._tables[kind]
        capacity = limits.max_client_sessions if kind is Kind.CLIENT else limits.max_outsider_links
        class_full = len(table) - self._among(victims, kind) >= capacity
        address_full = self._per_address[address] - self._at(victims, address) >= limits.max_per_address
        if not (class_full or address_full):
            return victims
        if class_full:
            candidates = [s for s in table if s not in victims
                          and (not address_full or s.remote[0] == address)]
        else:
            candidates = [s for k in (Kind.OUTSIDER, Kind.CLIENT) for s in self._tables[k]
                          if s.remote[0] == address and s not in victims]
        idlest = min(candidates, key=lambda s: s.last_active, default=None)
        if idlest is None or now - idlest.last_active < limits.evict_idle:
            limit = "per_address" if address_full and not class_full else f"{kind.value}_capacity"
            raise Busy(limit, f"no room for another {kind.value} connection here; try again later")
        victims.append(idlest)
        return victims

    def _among(self, sessions: list[Session], kind: Kind) -> int:
        return sum(1 for s in sessions if s in self._tables[kind])

    def _at(self, sessions: list[Session], address: str) -> int:
        return sum(1 for s in sessions if s.remote[0] == address and s not in self._tables[Kind.COMMITTEE])
