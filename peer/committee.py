"""A committee: who may own accounts in one epoch, with its ring and quorum.

Epoch 0's committee is the genesis one; later ones come from epoch-change certificates. Everything
that checks a vote or a certificate asks for the committee of the vote's epoch, so a certificate of
any epoch can be checked for as long as the chain of committees is known.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from peer.genesis import Genesis
from peer.ring import Ring


@dataclass(frozen=True)
class Committee:
    epoch: int
    members: tuple[bytes, ...]
    replication: int
    quorum: int
    vnodes: int
    ring: Ring = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ring", Ring(self.members, self.replication, self.vnodes))

    @classmethod
    def from_genesis(cls, genesis: Genesis) -> Committee:
        return cls(0, tuple(genesis.committee), genesis.replication, genesis.quorum, genesis.vnodes)

    @property
    def faults_tolerated(self) -> int:
        """Byzantine owners per account that cannot break safety: two quorums share 2W-N owners."""
        return 2 * self.quorum - self.replication - 1

    def owners(self, account: bytes) -> tuple[bytes, ...]:
        return self.ring.owners(account)

    def __contains__(self, peer: object) -> bool:
        return peer in self.ring.committee
