"""Checking certificates: W valid votes from distinct owners of the sender, all on this order.

Verification is the expensive part of a payment, so results are cached: a certificate (order id
plus its exact votes) is verified once per peer. A vote this peer signed itself is checked by
comparing it with the vote it stored when it locked, not by verifying it again.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable

from crypto.errors import RemoteProtocolError
from crypto.messages import Certificate
from peer.ring import Ring


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


class CertificateChecker:
    def __init__(
        self,
        network_id: bytes,
        ring: Ring,
        quorum: int,
        *,
        own_vote: Callable[[bytes, bytes, int], bytes | None] | None = None,
        self_id: bytes | None = None,
        cache_size: int = 200_000,
    ) -> None:
        self.network_id = network_id
        self.ring = ring
        self.quorum = quorum
        self.own_vote = own_vote  # (sender, seq, order_id) -> the signature we stored, if any
        self.self_id = self_id
        self.cache_size = cache_size
        self._verified: OrderedDict[bytes, None] = OrderedDict()
        self.signature_checks = 0

    @staticmethod
    def _key(cert: Certificate) -> bytes:
        # Plain bytes, not a tuple of Vote objects: a big cache of GC-tracked objects makes every
        # full garbage collection scan it (tens of milliseconds of pause per peer).
        return hashlib.sha256(cert.order.id + b"".join(v.voter + v.sig for v in cert.votes)).digest()

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
        if len(votes) < self.quorum:
            raise TooFewVotes(f"certificate has {len(votes)} votes; {self.quorum} are needed")
        if len(votes) > self.ring.replication:
            raise TooManyVotes(f"certificate has {len(votes)} votes but an account has only "
                               f"{self.ring.replication} owners")
        owners = self.ring.owners(order.sender)
        order_id = order.id
        seen: set[bytes] = set()
        for vote in votes:
            if vote.voter in seen:
                raise DuplicateVoter(f"{vote.voter.hex()[:12]} voted twice in one certificate")
            seen.add(vote.voter)
            if vote.voter not in owners:
                raise VoterNotOwner(f"{vote.voter.hex()[:12]} does not own the sender's account")
            if vote.order_id != order_id:
                raise VoteForOtherOrder("a vote in the certificate is for a different order")
        for vote in votes:
            if vote.voter == self.self_id and self.own_vote is not None:
                mine = self.own_vote(order.sender, order.seq, order_id)
                if mine is not None and mine == vote.sig:
                    continue
            self.signature_checks += 1
            if not vote.signature_valid(self.network_id):
                raise BadVoteSignature(f"vote by {vote.voter.hex()[:12]} has an invalid signature")
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
