"""Epoch changes and the chain of committees (docs/protocol.md, section 11.1).

An `EpochChange` proposes the committee of the next epoch; an `EpochCertificate` is the change with
approvals from more than two thirds of the current committee. Starting from the genesis, a chain of
valid certificates fixes the committee of every epoch, so a peer or a wallet that pinned the
genesis can check a certificate of any epoch. Everything here is pure: no clock, no I/O.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Annotated

from crypto import codec
from crypto.errors import RemoteProtocolError
from crypto.keys import (
    Purpose,
    SigningKey,
    digest,
    is_on_curve,
    is_weak_key,
    verify,
)
from crypto.messages import Hash, Key, NetworkId, Sig
from crypto.schema import U63_MAX, Bytes, ListOf, Message, Nested, Text, UInt, message
from peer.committee import Committee
from peer.genesis import MAX_COMMITTEE, Genesis, GenesisError, check_parameters

MAX_NOTE_BYTES = 140


class EpochError(RemoteProtocolError):
    """An epoch change or certificate that does not extend the chain validly."""


@message(12, max_size=MAX_COMMITTEE * 34 + 512)
class EpochChange(Message):
    """The committee proposed for `epoch`, linked to the change that started the epoch before it."""

    network: NetworkId
    epoch: Annotated[int, UInt(1, U63_MAX)]
    prev: Hash  # id of the previous epoch's change; the network id for epoch 1
    members: Annotated[tuple[bytes, ...], ListOf(Bytes(size=32), MAX_COMMITTEE, min_len=1)]
    replication: Annotated[int, UInt(1, 64)]
    quorum: Annotated[int, UInt(1, 64)]
    vnodes: Annotated[int, UInt(1, 4096)]
    proposer: Key
    created: Annotated[int, UInt(0, U63_MAX)]  # unix seconds, informational
    note: Annotated[str, Text(MAX_NOTE_BYTES)]
    _id: bytes | None = dataclasses.field(default=None, init=False, repr=False, compare=False)

    @property
    def id(self) -> bytes:
        cid = self._id
        if cid is None:
            cid = digest(Purpose.EPOCH_CHANGE, self.network, codec.encode(self.to_plain()))
            object.__setattr__(self, "_id", cid)
        return cid

    def committee(self) -> Committee:
        return Committee(self.epoch, self.members, self.replication, self.quorum, self.vnodes)


@message(13, max_size=256)
class EpochApproval(Message):
    """A committee member's signature on a change id: "I approve this committee for that epoch"."""

    change_id: Hash
    signer: Key
    sig: Sig

    def signature_valid(self, network: bytes) -> bool:
        return verify(self.signer, self.sig, Purpose.EPOCH_APPROVAL, network, self.change_id)

    @classmethod
    def create(cls, key: SigningKey, network: bytes, change_id: bytes) -> EpochApproval:
        return cls(change_id, key.public, key.sign(Purpose.EPOCH_APPROVAL, network, change_id))


@message(14, max_size=MAX_COMMITTEE * (34 + 260) + 1024)
class EpochCertificate(Message):
    """An epoch change with approvals of more than two thirds of the previous committee."""

    change: Annotated[EpochChange, Nested(EpochChange)]
    approvals: Annotated[tuple[EpochApproval, ...], ListOf(Nested(EpochApproval), MAX_COMMITTEE, min_len=1)]

    @property
    def epoch(self) -> int:
        return self.change.epoch


def approvals_needed(committee_size: int) -> int:
    """More than two thirds of the committee."""
    return 2 * committee_size // 3 + 1


def check_change(change: EpochChange, prev: Committee, prev_id: bytes, network: bytes) -> Committee:
    """The committee `change` proposes, if it may follow `prev` (raises `EpochError`).

    Signatures are not checked here: this is what every approver checks before signing.
    """
    if change.network != network:
        raise EpochError("the epoch change is for another network")
    if change.epoch != prev.epoch + 1:
        raise EpochError(f"the change is for epoch {change.epoch}, not {prev.epoch + 1}")
    if change.prev != prev_id:
        raise EpochError(f"the change for epoch {change.epoch} does not follow this chain's epoch {prev.epoch}")
    members = change.members
    if list(members) != sorted(set(members)):
        raise EpochError("the committee must list distinct members in ascending order")
    for member in members:
        if is_weak_key(member) or not is_on_curve(member):
            raise EpochError(f"committee member {member.hex()[:16]} is not a usable key")
    if (change.replication, change.quorum, change.vnodes) != (prev.replication, prev.quorum, prev.vnodes):
        raise EpochError("an epoch change keeps replication, quorum and vnodes (docs/protocol.md 11.1)")
    try:
        check_parameters(len(members), change.replication, change.quorum)
    except GenesisError as exc:
        raise EpochError(str(exc)) from exc
    return change.committee()


def check_certificate(cert: EpochCertificate, prev: Committee, prev_id: bytes, network: bytes) -> Committee:
    """The committee of `cert.epoch`, if `cert` validly follows `prev` (raises `EpochError`)."""
    committee = check_change(cert.change, prev, prev_id, network)
    change_id = cert.change.id
    signers: set[bytes] = set()
    for approval in cert.approvals:
        if approval.change_id != change_id:
            raise EpochError("an approval in the epoch certificate is for another change")
        if approval.signer in signers:
            raise EpochError(f"{approval.signer.hex()[:12]} approved twice")
        if approval.signer not in prev:
            raise EpochError(f"{approval.signer.hex()[:12]} is not in the committee of epoch {prev.epoch}")
        signers.add(approval.signer)
    needed = approvals_needed(len(prev.members))
    if len(signers) < needed:
        raise EpochError(f"{len(signers)} approvals; epoch {cert.epoch} needs {needed} of {len(prev.members)}")
    for approval in cert.approvals:
        if not approval.signature_valid(network):
            raise EpochError(f"the approval by {approval.signer.hex()[:12]} has an invalid signature")
    return committee


@dataclasses.dataclass
class Chain:
    """The committees of epochs 0..latest, each proven by the certificate that started it."""

    network: bytes
    committees: list[Committee]
    certificates: list[EpochCertificate]  # certificates[i] started epoch i + 1

    @classmethod
    def from_genesis(cls, genesis: Genesis) -> Chain:
        return cls(genesis.network_id, [Committee.from_genesis(genesis)], [])

    @property
    def epoch(self) -> int:
        return len(self.committees) - 1

    @property
    def current(self) -> Committee:
        return self.committees[-1]

    def head_id(self) -> bytes:
        """What the next change's `prev` must be."""
        return self.certificates[-1].change.id if self.certificates else self.network

    def committee(self, epoch: int) -> Committee | None:
        return self.committees[epoch] if 0 <= epoch < len(self.committees) else None

    def extend(self, cert: EpochCertificate) -> Committee:
        """Check `cert` against the head of the chain and append it (raises `EpochError`)."""
        committee = check_certificate(cert, self.current, self.head_id(), self.network)
        self.committees.append(committee)
        self.certificates.append(cert)
        return committee

    def extend_all(self, certs: Iterable[EpochCertificate]) -> None:
        """Append every certificate newer than the head, in order; older ones must match the chain."""
        for cert in certs:
            if cert.epoch <= self.epoch:
                if cert.epoch >= 1 and self.certificates[cert.epoch - 1].change.id != cert.change.id:
                    raise EpochError(f"epoch {cert.epoch} has a different certificate in this chain")
                continue
            self.extend(cert)

