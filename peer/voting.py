"""An owner's decision on a vote request (FastPay's "sign an order at most once per sequence").

The decision is a pure function of the ledger and the order; recording the lock goes into the
caller's batch, which must be durable before the vote leaves the peer. Checks run cheapest first:
nothing here verifies a signature until the order has passed every check that needs none.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from crypto.keys import SigningKey, is_on_curve, is_weak_key
from crypto.messages import Order, Vote
from peer.ledger import Ledger
from peer.wire import Refuse
from store.db import Batch
from store.layout import AccountState


@lru_cache(maxsize=65_536)
def _usable_key(key: bytes) -> bool:
    # No private key exists for a weak or off-curve key: money sent there is lost (or free to take).
    return not is_weak_key(key) and is_on_curve(key)


@dataclass(frozen=True, slots=True)
class Decision:
    vote: Vote | None = None
    refuse: Refuse | None = None
    detail: str = ""
    evidence: bytes = b""
    catch_up: tuple[bytes, int, int] | None = None  # (sender, have next_seq, need up to seq)


def decide(
    ledger: Ledger,
    key: SigningKey,
    network_id: bytes,
    epoch: int,
    order: Order,
    batch: Batch,
    signature_ok: Callable[[Order], bool],
) -> Decision:
    if order.network != network_id:
        return Decision(refuse=Refuse.WRONG_NETWORK, detail="order is for another network")
    if order.sender == order.recipient:
        return Decision(refuse=Refuse.SELF_TRANSFER, detail="sender and recipient are the same account")
    if not _usable_key(order.recipient) or is_weak_key(order.sender):
        return Decision(refuse=Refuse.BAD_ADDRESS, detail="an account key is not a usable public key")
    if not ledger.owns(order.sender):
        return Decision(refuse=Refuse.NOT_OWNER, detail="this peer does not own the sender's account")
    state = ledger.peek(order.sender) or AccountState()
    oid = order.id
    if order.seq < state.next_seq:
        applied = ledger.debit_at(order.sender, order.seq)
        evidence = (ledger.cert_bytes(applied) or b"") if applied is not None else b""
        if applied == oid:
            return Decision(refuse=Refuse.ALREADY_FINAL, detail="this order is already certified",
                            evidence=evidence)
        return Decision(refuse=Refuse.SEQ_TOO_LOW,
                        detail=f"sequence {order.seq} is used; next is {state.next_seq}", evidence=evidence)
    lock = ledger.locks.get((order.sender, order.seq))
    if lock is not None:
        locked = Order.decode(lock.order)
        if locked.id == oid:
            return Decision(vote=Vote.decode(lock.vote))  # idempotent: the same vote again
        return Decision(refuse=Refuse.CONFLICT, evidence=lock.order,
                        detail=f"sequence {order.seq} is locked to another order")
    if order.seq > state.next_seq:
        return Decision(refuse=Refuse.SEQ_AHEAD, catch_up=(order.sender, state.next_seq, order.seq),
                        detail=f"sequence {order.seq} is ahead of {state.next_seq}; catching up")
    if not signature_ok(order):
        return Decision(refuse=Refuse.BAD_SIGNATURE, detail="the sender's signature is invalid")
    if state.balance < order.amount:
        return Decision(refuse=Refuse.INSUFFICIENT_FUNDS,
                        detail=f"balance {max(state.balance, 0)} is below {order.amount}")
    vote = Vote.create(key, network_id, order, epoch)
    ledger.lock(order.sender, order.seq, order, vote.encode(), batch)
    return Decision(vote=vote)
