"""What an owner knows about senders that signed two orders for one sequence number.

A sender that signs two different orders for one `(sender, seq)` and has them sent at once to
different owners can split the owners' locks so that neither order reaches the quorum: the
account is frozen at that sequence (FastPay's rule; only the equivocator's own account suffers).
Nothing showed it. An owner sees it when it refuses a vote request with `conflict`: it holds a lock
on one order and is asked to vote for another. If the second order's signature verifies, the two
sender-signed orders are evidence that the sender equivocated; the book keeps them (latest per
account, in memory, bounded) so the API can show them and /metrics can count them.

Evidence matters while the account is still at that sequence; once a certificate used the seq
(`next_seq` moved past it) the account is not stuck there any more and the evidence is dropped.
One owner alone cannot tell "frozen" from "one order may still gather a quorum": that needs every
owner's lock, which the auditor and the wallet read (docs/api.md says how).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from crypto.errors import DecodeError
from crypto.messages import Order
from peer.ledger import Ledger

MAX_ACCOUNTS = 10_000  # accounts with evidence kept at once (oldest forgotten first)
MAX_TRIES = 4  # signature checks per (sender, seq) on orders that turned out forged


@dataclass(frozen=True, slots=True)
class ConflictSeen:
    """Notification from settlement: a vote request for `order` was refused because its
    `(sender, seq)` is locked to another order (`locked`, its encoded bytes)."""

    order: Order
    locked: bytes


@dataclass(frozen=True, slots=True)
class Evidence:
    seq: int
    orders: tuple[bytes, bytes]  # the locked order and the other one, encoded, both sender-signed

    @property
    def ids(self) -> tuple[bytes, bytes]:
        return Order.decode(self.orders[0]).id, Order.decode(self.orders[1]).id


class EquivocationBook:
    def __init__(self, ledger: Ledger, *, max_accounts: int = MAX_ACCOUNTS) -> None:
        self.ledger = ledger
        self.max_accounts = max_accounts
        self._evidence: OrderedDict[bytes, Evidence] = OrderedDict()
        self._forged: OrderedDict[tuple[bytes, int], int] = OrderedDict()
        self.counters = {"evidence": 0, "forged": 0}

    def on_event(self, event: object) -> None:
        """Runtime subscription."""
        if type(event) is ConflictSeen:
            self.record(event.order, event.locked)

    def record(self, order: Order, locked_bytes: bytes) -> bool:
        """Keep `order` and the locked order as evidence if they are two sender-signed orders for
        one (sender, seq). True if this is new evidence."""
        sender, seq = order.sender, order.seq
        known = self._evidence.get(sender)
        if known is not None and known.seq == seq:
            return False  # one pair proves it; more pairs prove nothing new
        key = (sender, seq)
        if self._forged.get(key, 0) >= MAX_TRIES:
            return False  # a relay keeps sending forgeries: stop spending signature checks on them
        try:
            locked = Order.decode(locked_bytes)
        except DecodeError:
            return False
        if locked.id == order.id or (locked.sender, locked.seq) != key:
            return False
        # Our own lock's signature was verified when we voted; the other order's never was (a
        # conflict is refused before any signature work), and a relay could have made it up.
        if not order.signature_valid():
            self.counters["forged"] += 1
            self._forged[key] = self._forged.get(key, 0) + 1
            if len(self._forged) > self.max_accounts:
                self._forged.popitem(last=False)
            return False
        self._evidence[sender] = Evidence(seq, (locked_bytes, order.encode()))
        self._evidence.move_to_end(sender)
        if len(self._evidence) > self.max_accounts:
            self._evidence.popitem(last=False)
        self.counters["evidence"] += 1
        return True

    def current(self, account: bytes) -> Evidence | None:
        """Evidence at the account's current sequence number (None once a certificate used it)."""
        evidence = self._evidence.get(account)
        if evidence is None:
            return None
        state = self.ledger.peek(account)
        if state is not None and state.next_seq > evidence.seq:
            del self._evidence[account]
            return None
        return evidence

    def equivocating(self) -> int:
        """Owned accounts stuck at a sequence for which this owner holds two sender-signed orders."""
        return sum(1 for account in list(self._evidence) if self.current(account) is not None)
