"""A Byzantine owner for the simulations: it votes for every order it is asked about (ignoring its
locks and balances, so it equivocates between conflicting orders) and relays forged certificates."""

from __future__ import annotations

import os

from crypto.messages import Certificate, Order, Vote
from gossip.effects import Publish
from peer.settlement import Settlement
from peer.wire import CertDelivery, VoteReply


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
            fake = tuple(Vote(order.id, vote.epoch, p, os.urandom(64)) for p in others[: self.quorum - 1])
            return Certificate(order, (vote, *fake))
        if kind == 1:  # our vote repeated to reach the count
            return Certificate(order, (vote,) * self.quorum)
        return Certificate(order, (vote,))  # plainly too few
