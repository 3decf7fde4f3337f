"""A Byzantine owner for the simulations: it votes for every order it is asked about (ignoring its
locks and balances, so it equivocates between conflicting orders), relays forged certificates, and
lies in its handoff reports at epoch changes."""

from __future__ import annotations

import dataclasses
import hashlib

from crypto.messages import Certificate, Order, Vote
from gossip.effects import Publish
from peer.handoff import Handoff
from peer.settlement import Settlement
from peer.wire import AccountReport, CertDelivery, VoteReply


class ByzantineSettlement(Settlement):
    forgeries = 0

    def _on_vote_request(self, src: bytes, order: Order, now: float) -> None:
        if order.network != self.network_id or not self.ledger.owns(order.sender):
            super()._on_vote_request(src, order, now)
            return
        vote = Vote.create(self.key, self.network_id, order, self.epoch)
        self.out.send(src, VoteReply(vote))
        forged = self._forge(order, vote)
        ByzantineSettlement.forgeries += 1
        self.out.add(Publish(forged.encode()))
        for owner in set(self.ring.owners(order.sender)) | set(self.ring.owners(order.recipient)):
            if owner != self.me:
                self.out.send(owner, CertDelivery(forged))

    def _forge(self, order: Order, vote: Vote) -> Certificate:
        """A certificate that must not pass: made-up votes, votes for another order, or too few."""
        others = [p for p in self.ring.owners(order.sender) if p != self.me]
        kind = self.rng.randrange(3)
        if kind == 0:  # co-owners' "votes" with random signatures
            fake = tuple(Vote(order.id, vote.epoch, p, self.rng.randbytes(64)) for p in others[: self.quorum - 1])
            return Certificate(order, (vote, *fake))
        if kind == 1:  # our vote repeated to reach the count
            return Certificate(order, (vote,) * self.quorum)
        return Certificate(order, (vote,))  # plainly too few


class LyingHandoff(Handoff):
    """A Byzantine old owner's handoff reports: a next_seq it cannot back with certificates, an order
    the account never signed held at its frontier, or a made-up credit digest (one lie per account,
    chosen by the account's first byte; a quarter of the reports are true)."""

    lies = 0

    def report(self, epoch: int, account: bytes) -> AccountReport:
        honest = super().report(epoch, account)
        kind = account[0] % 4
        if kind == 3 or not honest.ready:
            return honest
        LyingHandoff.lies += 1
        if kind == 0:
            return dataclasses.replace(honest, next_seq=honest.next_seq + 3)
        if kind == 1:
            forged = Order(self.network_id, account, account[::-1], 1, honest.next_seq, "forged", bytes(64))
            return dataclasses.replace(honest, holds=(forged,))
        return dataclasses.replace(honest, credits=honest.credits + 1,
                                   credit_digest=hashlib.sha256(b"made up" + account).digest())


ByzantineSettlement.handoff_class = LyingHandoff
