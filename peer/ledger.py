"""The ledger state machine of one owner: accounts, locks, and applying certificates.

State is kept in memory and written through to the store in the caller's batch; the caller makes
the batch durable (group commit) before acting on it (sending a vote or an `Applied`). Because the
writer keeps submission order, what is in memory is always a prefix-extension of what is on disk,
and a crash loses at most a suffix that the protocol re-derives (certificates are re-delivered or
pulled; a vote that was never sent was never relied upon).

Rules:
- A credit is applied once per order id, at every owner of the recipient.
- A debit is applied at every owner of the sender strictly in sequence order: a certificate ahead of
  `next_seq` waits (persisted) until the ones before it arrive, and the gap is reported so the caller
  can pull the missing certificates.
- Applying never checks the balance: a certificate is final. An owner that missed a credit can show
  a negative balance until anti-entropy brings the credit.
- Ownership is that of the current epoch (`ring`, replaced at an epoch change). State of accounts
  this peer no longer owns is kept: it serves handoff streams and history from it.
- A hold set at `(sender, seq)` (docs/protocol.md 11.5) is what an owner inherited at a handoff: one
  order binds like a lock without a vote (the owner will vote only for it), two or more freeze the
  sequence. Applying the debit at that sequence removes it, as it removes a lock.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from crypto.messages import Certificate, Order
from peer.genesis import Genesis
from peer.ring import Ring
from store import layout
from store.db import Batch, Store
from store.layout import AccountState, HistoryEntry, Lock

APPLIED_CACHE = 500_000  # order ids whose flags stay in memory (far beyond any write still in flight)
RECENT = 50_000  # debits and certificates kept in memory: reads must see writes not yet durable


@dataclass(slots=True)
class ApplyResult:
    sides: int = 0  # sides applied (now or before) that this peer owns
    newly: list[Certificate] = field(default_factory=list)  # applied by this call (incl. chained)
    gap: tuple[bytes, int, int] | None = None  # (sender, have next_seq, need up to seq)
    conflict: bytes | None = None  # order id of a different certificate at the same (sender, seq)


def _xor(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(32, "big")


class Ledger:
    def __init__(self, store: Store, ring: Ring, me: bytes) -> None:
        self.store = store
        self.ring = ring
        self.me = me
        self.accounts: dict[bytes, AccountState] = {}
        self.locks: dict[tuple[bytes, int], Lock] = {}
        self.holds: dict[tuple[bytes, int], tuple[bytes, ...]] = {}  # encoded orders, by order id
        self.waiting: dict[bytes, dict[int, Certificate]] = {}
        self._applied: OrderedDict[bytes, int] = OrderedDict()
        # Recent writes, so reads never miss what a batch still in the group-commit queue holds.
        self._debits: OrderedDict[tuple[bytes, int], bytes] = OrderedDict()
        self._certs: OrderedDict[bytes, bytes] = OrderedDict()
        self.conflicts: list[tuple[bytes, int, bytes, bytes]] = []  # (sender, seq, applied, other)
        self.changed: set[bytes] = set()  # accounts changed since anti-entropy last looked

    # ---- startup ------------------------------------------------------------------------------
    def load(self) -> None:
        """Read the owned state back after a restart."""
        for account, state in self.store.accounts():
            self.accounts[account] = state
            self.changed.add(account)
        for account, seq, lock in self.store.locks():
            self.locks[(account, seq)] = lock
        for account, seq, orders in self.store.holds():
            self.holds[(account, seq)] = orders
        for account, seq, order_id in self.store.waiting():
            raw = self.store.get_cert(order_id)
            if raw is not None:
                self.waiting.setdefault(account, {})[seq] = Certificate.decode(raw)

    def genesis_batch(self, genesis: Genesis) -> Batch | None:
        """The initial balances this peer owns, once per database."""
        if self.store.get_meta("genesis") is not None:
            return None
        batch = Batch()
        for alloc in genesis.allocations:
            if self.owns(alloc.account):
                state = AccountState(balance=alloc.amount)
                self.accounts[alloc.account] = state
                self.changed.add(alloc.account)
                batch.put_account(alloc.account, state)
        batch.put_meta("genesis", genesis.network_id)
        return batch

    # ---- reads ----------------------------------------------------------------------------------
    def owns(self, account: bytes) -> bool:
        return self.me in self.ring.owners(account)

    def account(self, account: bytes) -> AccountState:
        """This owner's view of an account (a fresh, empty one if never seen)."""
        state = self.accounts.get(account)
        if state is None:
            state = self.accounts[account] = AccountState()
        return state

    def peek(self, account: bytes) -> AccountState | None:
        return self.accounts.get(account)

    def applied(self, order_id: bytes) -> int:
        flags = self._applied.get(order_id)
        if flags is None:
            # Remember the answer (also "never applied"): one payment asks several times.
            flags = self.store.get_applied(order_id)
            self._applied[order_id] = flags
            if len(self._applied) > APPLIED_CACHE:
                self._applied.popitem(last=False)
        return flags

    def debit_at(self, account: bytes, seq: int) -> bytes | None:
        oid = self._debits.get((account, seq))
        return oid if oid is not None else self.store.get_debit(account, seq)

    def cert_bytes(self, order_id: bytes) -> bytes | None:
        raw = self._certs.get(order_id)
        return raw if raw is not None else self.store.get_cert(order_id)

    @staticmethod
    def _remember(cache: OrderedDict, key: object, value: object) -> None:
        cache[key] = value
        if len(cache) > RECENT:
            cache.popitem(last=False)

    def pending_lock(self, account: bytes) -> Lock | None:
        state = self.accounts.get(account)
        return None if state is None else self.locks.get((account, state.next_seq))

    def set_ring(self, ring: Ring) -> None:
        """An epoch change: ownership from now on is that of `ring`."""
        self.ring = ring

    def init_account(self, account: bytes, balance: int, batch: Batch) -> bool:
        """Give a newly owned account its genesis allocation, once per database (False if this peer
        has held state for it before: then the allocation is in it already)."""
        if account in self.accounts:
            return False
        state = self.accounts[account] = AccountState(balance=balance)
        self.changed.add(account)
        batch.put_account(account, state)
        return True

    # ---- locks and holds ---------------------------------------------------------------------------
    def lock(self, account: bytes, seq: int, order: Order, vote_bytes: bytes, batch: Batch) -> Lock:
        lock = Lock(order.encode(), vote_bytes)
        self.locks[(account, seq)] = lock
        batch.put_lock(account, seq, lock)
        if self.holds.pop((account, seq), None) is not None:
            batch.delete_holds(account, seq)  # voting for the one held order turns it into a lock
        return lock

    def unlock(self, account: bytes, seq: int, batch: Batch) -> None:
        if self.locks.pop((account, seq), None) is not None:
            batch.delete_lock(account, seq)

    def set_holds(self, account: bytes, seq: int, orders: tuple[bytes, ...], batch: Batch) -> None:
        """Replace the hold set at (account, seq); an empty one removes it."""
        if orders:
            self.holds[(account, seq)] = orders
            batch.put_holds(account, seq, orders)
        elif self.holds.pop((account, seq), None) is not None:
            batch.delete_holds(account, seq)

    def held_orders(self, account: bytes, seq: int) -> list[bytes]:
        """Encoded orders this owner holds at (account, seq): its lock's order and its hold set."""
        held: list[bytes] = []
        lock = self.locks.get((account, seq))
        if lock is not None:
            held.append(lock.order)
        for raw in self.holds.get((account, seq), ()):
            if raw not in held:
                held.append(raw)
        return held

    def frozen_count(self) -> int:
        """Accounts whose frontier is frozen (a hold set of two or more orders at next_seq)."""
        count = 0
        for (account, seq), orders in self.holds.items():
            state = self.accounts.get(account)
            if len(orders) >= 2 and state is not None and state.next_seq == seq:
                count += 1
        return count

    # ---- applying -------------------------------------------------------------------------------
    def apply(self, cert: Certificate, batch: Batch) -> ApplyResult:
        """Apply the sides of a (verified) certificate this peer owns; idempotent."""
        result = ApplyResult()
        order = cert.order
        oid = order.id
        flags = self.applied(oid)
        new_flags = flags
        store_cert = False
        if self.owns(order.recipient):
            result.sides |= layout.APPLIED_CREDIT
            if not flags & layout.APPLIED_CREDIT:
                self._credit(order, oid, batch)
                new_flags |= layout.APPLIED_CREDIT
                store_cert = True
        if self.owns(order.sender):
            if flags & layout.APPLIED_DEBIT:
                result.sides |= layout.APPLIED_DEBIT
            else:
                state = self.account(order.sender)
                if order.seq == state.next_seq:
                    self._debit(order, oid, batch)
                    new_flags |= layout.APPLIED_DEBIT
                    result.sides |= layout.APPLIED_DEBIT
                    store_cert = True
                    self._chain(order.sender, batch, result)
                elif order.seq > state.next_seq:
                    waiting = self.waiting.setdefault(order.sender, {})
                    if order.seq not in waiting:
                        waiting[order.seq] = cert
                        batch.put_waiting(order.sender, order.seq, oid)
                        store_cert = True
                    result.gap = (order.sender, state.next_seq, order.seq)
                else:
                    applied_id = self.debit_at(order.sender, order.seq)
                    if applied_id is not None and applied_id != oid:
                        # Two certificates for one (sender, seq): only possible if more owners
                        # misbehaved than the quorum tolerates. Keep the evidence, apply nothing.
                        result.conflict = applied_id
                        self.conflicts.append((order.sender, order.seq, applied_id, oid))
        if store_cert:
            raw = cert.encode()
            batch.put_cert(oid, raw)
            self._remember(self._certs, oid, raw)
        if new_flags != flags:
            result.newly.insert(0, cert)
            self._set_applied(oid, new_flags, batch)
        return result

    def _credit(self, order: Order, oid: bytes, batch: Batch) -> None:
        state = self.account(order.recipient)
        self.changed.add(order.recipient)
        state.balance += order.amount
        state.credits += 1
        state.credit_digest = _xor(state.credit_digest, oid)
        batch.put_history(order.recipient, state.history, HistoryEntry(oid, layout.DIRECTION_CREDIT))
        state.history += 1
        batch.put_account(order.recipient, state)

    def _debit(self, order: Order, oid: bytes, batch: Batch) -> None:
        state = self.account(order.sender)
        self.changed.add(order.sender)
        state.balance -= order.amount
        batch.put_debit(order.sender, order.seq, oid)
        self._remember(self._debits, (order.sender, order.seq), oid)
        if self.locks.pop((order.sender, order.seq), None) is not None:
            batch.delete_lock(order.sender, order.seq)
        if self.holds.pop((order.sender, order.seq), None) is not None:
            batch.delete_holds(order.sender, order.seq)
        state.next_seq = order.seq + 1
        batch.put_history(order.sender, state.history, HistoryEntry(oid, layout.DIRECTION_DEBIT))
        state.history += 1
        batch.put_account(order.sender, state)

    def _chain(self, sender: bytes, batch: Batch, result: ApplyResult) -> None:
        """Apply waiting debits that the one just applied made current."""
        waiting = self.waiting.get(sender)
        while waiting:
            state = self.account(sender)
            cert = waiting.pop(state.next_seq, None)
            if cert is None:
                break
            batch.delete_waiting(sender, cert.order.seq)
            oid = cert.order.id
            flags = self.applied(oid)
            if flags & layout.APPLIED_DEBIT:
                continue
            self._debit(cert.order, oid, batch)
            self._set_applied(oid, flags | layout.APPLIED_DEBIT, batch)
            result.newly.append(cert)
        if waiting is not None and not waiting:
            del self.waiting[sender]
        if waiting:
            state = self.account(sender)
            result.gap = (sender, state.next_seq, min(waiting))

    def _set_applied(self, oid: bytes, flags: int, batch: Batch) -> None:
        self._applied[oid] = flags
        self._applied.move_to_end(oid)
        if len(self._applied) > APPLIED_CACHE:
            self._applied.popitem(last=False)
        batch.put_applied(oid, flags)
