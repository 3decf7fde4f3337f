"""Checking certificates: W valid votes from distinct owners of the sender, all in one epoch and
all on this exact order (its id and its signature bytes).

The votes' epoch names the committee that must have cast them; a certificate of any epoch whose
committee this peer knows can be checked. Verification is the expensive part of a payment, so
results are cached: a certificate (order id, order signature and its exact votes) is verified once
per peer. A vote this peer signed itself is checked by comparing it with the vote it stored when it
locked, not by verifying it again.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable

from crypto.errors import RemoteProtocolError
from crypto.messages import Certificate, Order
from peer.committee import Committee


class CertificateError(RemoteProtocolError):
    """A certificate that does not prove its order is final."""


class WrongNetworkCertificate(CertificateError):
    pass


class TooFewVotes(CertificateError):
    pass


class TooManyVotes(CertificateError):
    pass


class DuplicateVoter(CertificateError):
    pass


class VoterNotOwner(CertificateError):
    pass


class VoteForOtherOrder(CertificateError):
    pass


class BadVoteSignature(CertificateError):
    pass


class MixedEpochs(CertificateError):
    pass


class UnknownEpoch(CertificateError):
    """The votes name an epoch whose committee this peer does not know (yet)."""

    penalty = 0  # a peer ahead of us is not at fault


class CertificateChecker:
    def __init__(
        self,
        network_id: bytes,
        committee: Callable[[int], Committee | None],
        *,
        own_vote: Callable[[Order, int], bytes | None] | None = None,
        self_id: bytes | None = None,
        cache_size: int = 200_000,
    ) -> None:
        self.network_id = network_id
        self.committee = committee  # epoch -> its committee, None if unknown here
        self.own_vote = own_vote  # (order, epoch) -> the vote signature we stored for it, if any
        self.self_id = self_id
        self.cache_size = cache_size
        self._verified: OrderedDict[bytes, None] = OrderedDict()
        self.signature_checks = 0

    @staticmethod
    def _key(cert: Certificate) -> bytes:
        # Plain bytes, not a tuple of Vote objects: a big cache of GC-tracked objects makes every
        # full garbage collection scan it (tens of milliseconds of pause per peer). The order's
        # signature is part of the key: votes bind it, so the same votes on a re-signed order are
        # a different (invalid) certificate.
        order = cert.order
        return hashlib.sha256(order.id + order.sig
                              + b"".join(v.voter + v.sig for v in cert.votes)).digest()

    def check(self, cert: Certificate) -> None:
        """Raise a `CertificateError` subclass unless `cert` is valid for this network."""
        order = cert.order
        key = self._key(cert)
        if key in self._verified:
            self._verified.move_to_end(key)
            return
        if order.network != self.network_id:
            raise WrongNetworkCertificate("certificate is for another network")
        votes = cert.votes
        epoch = votes[0].epoch
        if any(v.epoch != epoch for v in votes):
            raise MixedEpochs("the votes in the certificate name different epochs")
        committee = self.committee(epoch)
        if committee is None:
            raise UnknownEpoch(f"the certificate's votes are from epoch {epoch}, unknown here")
        if len(votes) < committee.quorum:
            raise TooFewVotes(f"certificate has {len(votes)} votes; {committee.quorum} are needed")
        if len(votes) > committee.replication:
            raise TooManyVotes(f"certificate has {len(votes)} votes but an account has only "
                               f"{committee.replication} owners")
        owners = committee.owners(order.sender)
        order_id = order.id
        seen: set[bytes] = set()
        for vote in votes:
            if vote.voter in seen:
                raise DuplicateVoter(f"{vote.voter.hex()[:12]} voted twice in one certificate")
            seen.add(vote.voter)
            if vote.voter not in owners:
                raise VoterNotOwner(f"{vote.voter.hex()[:12]} does not own the sender's account "
                                    f"in epoch {epoch}")
            if vote.order_id != order_id:
                raise VoteForOtherOrder("a vote in the certificate is for a different order")
        for vote in votes:
            if vote.voter == self.self_id and self.own_vote is not None:
                mine = self.own_vote(order, epoch)
                if mine is not None and mine == vote.sig:
                    continue
            self.signature_checks += 1
            if not vote.signature_valid(self.network_id, order.sig):
                raise BadVoteSignature(f"vote by {vote.voter.hex()[:12]} has an invalid signature "
                                       f"(a vote signs the order id, epoch and order signature)")
        self._verified[key] = None
        if len(self._verified) > self.cache_size:
            self._verified.popitem(last=False)

    def remember(self, cert: Certificate) -> None:
        """Record a certificate whose votes the caller verified one by one (the gateway's own)."""
        self._verified[self._key(cert)] = None
        if len(self._verified) > self.cache_size:
            self._verified.popitem(last=False)

    def is_valid(self, cert: Certificate) -> bool:
        try:
            self.check(cert)
        except CertificateError:
            return False
        return True
