"""An owner's signed answer about an account (docs/protocol.md section 2.1).

A wallet decides what became of its payments, and which sequence number it may sign next, from
what the sender's owners report. It finds those owners' API addresses through the peer it talks
to, so that peer could answer in their place; an answer counts only when the owner's own key signed
it, over the wallet's fresh challenge (so an old answer cannot be replayed either).
"""

from __future__ import annotations

from dataclasses import dataclass

from crypto import codec
from crypto.keys import Purpose, SigningKey, verify

CHALLENGE_SIZE = 32


@dataclass(frozen=True, slots=True)
class AccountView:
    """What one owner says of an account, and of the debit it applied at `seq` (if asked)."""

    peer_id: bytes
    account: bytes
    balance: int
    next_seq: int
    credits: int
    history_length: int
    pending: tuple[int, bytes] | None  # (seq, order id) of its lock at next_seq
    seq: int | None  # the sequence number the wallet asked about
    debit_at: bytes | None  # the order id this owner applied at `seq`, if any
    challenge: bytes

    def body(self) -> bytes:
        pending = None if self.pending is None else [self.pending[0], self.pending[1]]
        return codec.encode([self.peer_id, self.account, self.balance, self.next_seq, self.credits,
                             self.history_length, pending, self.seq, self.debit_at, self.challenge])

    def sign(self, key: SigningKey, network_id: bytes) -> bytes:
        if key.public != self.peer_id:
            raise ValueError("an account view is signed by the peer it names")
        return key.sign(Purpose.ACCOUNT_VIEW, network_id, self.body())

    def signature_valid(self, network_id: bytes, signature: bytes) -> bool:
        return verify(self.peer_id, signature, Purpose.ACCOUNT_VIEW, network_id, self.body())
