"""The epoch manager: proposals, approvals, assembling certificates, the chain's persistence and
sync, and sealing (docs/protocol.md 11.1, 11.2), as a sans-IO core.

- **Proposing and approving.** A member of the current committee (epoch e) proposes the committee
  of e + 1 and approves it; the others approve it on their own peers. A member approves at most one
  change per epoch number, writes that approval durably before it leaves, and only once its own
  handoff into e is complete. Proposals (`EpochPropose`, with the proposer's approval) and approvals
  (`EpochApprove`) travel by broadcast and are validated before they are relayed: only from members
  of the current committee, at most one pending proposal per proposer and one approval per signer
  for the next epoch; an approval for a change not seen yet waits for it (one per signer).
- **Certificates.** Any peer holding approvals from more than two thirds of the current committee
  assembles the certificate, accepts it and broadcasts it (`EpochAnnounce`).
- **Sealing.** Accepting the certificate of e + 1 writes it and moves this peer to e + 1 in one step
  (`Settlement.enter_epoch`): from then on it never signs a vote naming e or earlier.
- **Chain sync.** A peer that sees a later epoch (a vote, a pull, a certificate of an unknown epoch,
  a proposal for a later epoch), and every `sync_interval` a random live peer anyway, is sent
  `EpochSyncRequest(my epoch)`; the answer carries the certificates after it, each checked in order.
  A request from a peer at a later epoch makes us ask it back. The chain is stored (table `E`), and
  a restarted peer resumes from it.

The public surface (`propose`, `approve`, `proposals`, `certificates`, `history`, `accept`) is what
the HTTP API and the `peer epoch` commands call; after such a call the node performs the effects
(`drain`).
"""

from __future__ import annotations

import random
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from crypto.errors import DecodeError, MessageError
from crypto.keys import SigningKey, is_on_curve, is_weak_key
from crypto.schema import Message, decode_any
from gossip.broadcast import Delivered, Verdict
from gossip.effects import Notify, Outbox, Penalize, Persist, Publish
from gossip.wire import MAX_BROADCAST_PAYLOAD
from peer.epoch_chain import (
    Chain,
    EpochApproval,
    EpochCertificate,
    EpochChange,
    EpochError,
    approvals_needed,
    check_certificate,
    check_change,
)
from peer.genesis import Genesis
from peer.handoff import HandoffComplete
from peer.settlement import Settlement
from peer.wire import (
    MAX_SYNC_CERTS,
    EpochAnnounce,
    EpochApprove,
    EpochPropose,
    EpochSyncReply,
    EpochSyncRequest,
    payload_kind,
)
from store.db import Batch, Store
from store.layout import EpochRecord

EPOCH_MESSAGE_TYPES = (EpochPropose, EpochApprove, EpochAnnounce, EpochSyncRequest, EpochSyncReply)
BROADCAST_KINDS = frozenset({EpochPropose.KIND, EpochApprove.KIND, EpochAnnounce.KIND})
SYNC_REPLY_BYTES = 900_000

__all__ = ["EPOCH_MESSAGE_TYPES", "EpochChanged", "EpochConfig", "EpochError", "EpochManager",
           "HandoffComplete", "load_chain"]


@dataclass(frozen=True, slots=True)
class EpochChanged:
    """Notification: this peer entered `epoch`, whose committee is `committee` (durably)."""

    epoch: int
    committee: tuple[bytes, ...]


@dataclass(frozen=True)
class EpochConfig:
    sync_interval: float = 5.0  # ask a random live peer for newer certificates this often
    sync_cooldown: float = 1.0  # at most one request per peer in this time


@dataclass
class Proposal:
    change: EpochChange
    received: float
    approvals: dict[bytes, EpochApproval] = field(default_factory=dict)  # signer -> approval


def load_chain(genesis: Genesis, store: Store) -> Chain:
    """The chain of committees from the genesis and the stored epoch certificates (each checked)."""
    chain = Chain.from_genesis(genesis)
    for epoch, raw in store.epoch_certificates():
        try:
            cert = EpochCertificate.decode(raw)
        except DecodeError as exc:
            raise EpochError(f"the stored certificate of epoch {epoch} is unreadable: {exc}") from exc
        if cert.epoch != epoch:
            raise EpochError(f"the stored certificate under epoch {epoch} is for epoch {cert.epoch}")
        chain.extend(cert)
    return chain


class EpochManager:
    def __init__(
        self,
        key: SigningKey,
        genesis: Genesis,
        store: Store,
        chain: Chain,
        settlement: Settlement,
        *,
        alive: Callable[[], list[bytes]],
        clock: Callable[[], float],
        wall: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        config: EpochConfig | None = None,
    ) -> None:
        self.key = key
        self.me = key.public
        self.network_id = genesis.network_id
        self.store = store
        self.chain = chain
        self.settlement = settlement
        self.alive = alive
        self.clock = clock  # the driver's monotonic time, for calls from the API
        self.wall = wall  # wall-clock seconds: only for the informational `created` and history
        self.rng = rng or random.Random()
        self.config = config or EpochConfig()
        self.out = Outbox()
        self.drain: Callable[[], None] | None = None  # set by the node: perform effects after an API call
        self._proposals: dict[bytes, Proposal] = {}  # proposer -> its change for epoch + 1
        self._loose: dict[bytes, EpochApproval] = {}  # signer -> approval of a change not seen yet
        self._approved: dict[int, EpochApproval] = {}  # epoch -> this peer's approval (durable)
        for epoch, raw in store.approvals():
            self._approved[epoch] = EpochApproval.decode(raw)
        self._records: dict[int, EpochRecord] = dict(store.epoch_records())
        self._decoded: OrderedDict[bytes, Message] = OrderedDict()
        self._asked: dict[bytes, float] = {}
        self._next_sync = float("inf")
        self.counters = {"proposals": 0, "approvals": 0, "certificates": 0, "syncs": 0, "rejected": 0}
        settlement.sync_epochs = self.request_sync

    @property
    def epoch(self) -> int:
        return self.chain.epoch

    # ---- service ---------------------------------------------------------------------------------
    def start(self, now: float) -> None:
        self._next_sync = now + self.config.sync_interval * (0.5 + self.rng.random())

    def next_deadline(self) -> float:
        return float("-inf") if self.out.effects else self._next_sync

    def tick(self, now: float) -> None:
        if now >= self._next_sync:
            self._next_sync = now + self.config.sync_interval
            self.request_sync(None, now)

    def handle(self, src: bytes, msg: Message, now: float) -> None:
        kind = type(msg)
        if kind is EpochSyncRequest:
            self._on_sync_request(src, msg, now)
        elif kind is EpochSyncReply:
            self._on_sync_reply(src, msg, now)
        elif kind in (EpochPropose, EpochApprove, EpochAnnounce):
            # Sent straight to us rather than broadcast: the same checks, no relaying.
            if self._validate(msg) is Verdict.ACCEPT:
                self._deliver(msg, now)
        else:
            raise TypeError(f"the epoch manager does not handle {kind.__name__}")

    # ---- broadcast -------------------------------------------------------------------------------
    def validate_broadcast(self, payload: bytes) -> Verdict:
        try:
            msg = decode_any(payload)
        except DecodeError:
            return Verdict.REJECT
        if type(msg) not in (EpochPropose, EpochApprove, EpochAnnounce):
            return Verdict.REJECT
        verdict = self._validate(msg)
        if verdict is Verdict.ACCEPT:
            self._decoded[payload] = msg
            if len(self._decoded) > 256:
                self._decoded.popitem(last=False)
        elif verdict is Verdict.REJECT:
            self.counters["rejected"] += 1
        return verdict

    def on_event(self, event: object) -> None:
        if type(event) is Delivered and payload_kind(event.payload) in BROADCAST_KINDS:
            msg = self._decoded.pop(event.payload, None)
            if msg is not None:
                self._deliver(msg, self.clock())

    def _validate(self, msg: Message) -> Verdict:
        """Validate-before-relay: only what a member of the current committee may send, and bounded."""
        current = self.chain.current
        e = current.epoch
        if type(msg) is EpochAnnounce:
            cert = msg.cert
            if cert.epoch <= e:
                return Verdict.IGNORE
            if cert.epoch > e + 1:
                self.request_sync(None)
                return Verdict.IGNORE
            try:
                check_certificate(cert, current, self.chain.head_id(), self.network_id)
            except EpochError:
                return Verdict.REJECT
            return Verdict.ACCEPT
        epoch = msg.change.epoch if type(msg) is EpochPropose else msg.epoch
        if epoch <= e:
            return Verdict.IGNORE
        if epoch > e + 1:
            self.request_sync(None)
            return Verdict.IGNORE
        if type(msg) is EpochPropose:
            change, approval = msg.change, msg.approval
            if change.proposer not in current:
                return Verdict.REJECT  # outsiders' proposals are never relayed
            if approval.signer != change.proposer or approval.change_id != change.id:
                return Verdict.REJECT
            if change.proposer in self._proposals:
                return Verdict.IGNORE  # one pending proposal per proposer per epoch
            try:
                check_change(change, current, self.chain.head_id(), self.network_id)
            except EpochError:
                return Verdict.REJECT
            return Verdict.ACCEPT if approval.signature_valid(self.network_id) else Verdict.REJECT
        approval = msg.approval
        if approval.signer not in current:
            return Verdict.REJECT
        if self._approval_of(approval.signer) is not None:
            return Verdict.IGNORE  # one approval per signer per epoch (the first one we saw)
        return Verdict.ACCEPT if approval.signature_valid(self.network_id) else Verdict.REJECT

    def _approval_of(self, signer: bytes) -> EpochApproval | None:
        loose = self._loose.get(signer)
        if loose is not None:
            return loose
        for proposal in self._proposals.values():
            approval = proposal.approvals.get(signer)
            if approval is not None:
                return approval
        return None

    def _deliver(self, msg: Message, now: float) -> None:
        kind = type(msg)
        if kind is EpochAnnounce:
            if msg.cert.epoch == self.epoch + 1:
                self._accept(msg.cert, now, publish=False)
            return
        if msg_epoch(msg) != self.epoch + 1:
            return
        if kind is EpochPropose:
            self.counters["proposals"] += 1
            proposal = self._proposals.setdefault(msg.change.proposer, Proposal(msg.change, now))
            if proposal.change.id != msg.change.id:
                return
            proposal.approvals[msg.approval.signer] = msg.approval
            for signer, approval in list(self._loose.items()):
                if approval.change_id == msg.change.id:
                    proposal.approvals[signer] = approval
                    del self._loose[signer]
            self._maybe_certify(proposal, now)
        else:
            self.counters["approvals"] += 1
            approval = msg.approval
            proposal = self._proposal(approval.change_id)
            if proposal is None:
                self._loose[approval.signer] = approval  # its proposal has not reached us yet
                return
            proposal.approvals.setdefault(approval.signer, approval)
            self._maybe_certify(proposal, now)

    def _proposal(self, change_id: bytes) -> Proposal | None:
        return next((p for p in self._proposals.values() if p.change.id == change_id), None)

    def _maybe_certify(self, proposal: Proposal, now: float) -> None:
        current = self.chain.current
        needed = approvals_needed(len(current.members))
        valid = sorted((a for a in proposal.approvals.values() if a.signer in current), key=lambda a: a.signer)
        if len(valid) < needed or proposal.change.epoch != current.epoch + 1:
            return
        cert = EpochCertificate(proposal.change, tuple(valid[:needed]))
        self._accept(cert, now, publish=True)

    # ---- accepting a certificate: sealing ------------------------------------------------------------
    def _accept(self, cert: EpochCertificate, now: float, *, publish: bool) -> None:
        """Extend the chain with the certificate of the next epoch and move to it (raises EpochError)."""
        committee = self.chain.extend(cert)
        self.counters["certificates"] += 1
        record = EpochRecord(now, self.wall())
        self._records[cert.epoch] = record
        batch = Batch()
        batch.put_epoch(cert.epoch, cert.encode())
        batch.put_epoch_record(cert.epoch, record)
        self._proposals.clear()
        self._loose.clear()
        self.settlement.enter_epoch(batch, (Notify(EpochChanged(cert.epoch, committee.members)),), now)
        if publish:
            payload = EpochAnnounce(cert).encode()
            if len(payload) <= MAX_BROADCAST_PAYLOAD:
                self.out.add(Publish(payload))
            # A larger committee's certificate travels only by chain sync (EpochSyncReply).

    def on_handoff_complete(self, event: HandoffComplete) -> None:
        """Record how many accounts moved here in that epoch (for `history`)."""
        record = self._records.get(event.epoch)
        h = self.settlement.handoff.handoffs.get(event.epoch)
        if record is None or h is None:
            return
        record = EpochRecord(record.monotonic, record.wall, h.moved_in)
        self._records[event.epoch] = record
        batch = Batch()
        batch.put_epoch_record(event.epoch, record)
        self.out.add(Persist(batch))

    # ---- chain sync --------------------------------------------------------------------------------
    def request_sync(self, peer: bytes | None, now: float | None = None) -> None:
        """Ask `peer` (None: a random live peer) for the certificates after our epoch."""
        now = self.clock() if now is None else now
        if peer is None:
            live = self.alive()
            if not live:
                return
            peer = self.rng.choice(live)
        if peer == self.me:
            return
        last = self._asked.get(peer)
        if last is not None and now - last < self.config.sync_cooldown:
            return
        self._asked[peer] = now
        if len(self._asked) > 4096:
            self._asked = {p: t for p, t in self._asked.items() if now - t < self.config.sync_cooldown}
        self.counters["syncs"] += 1
        self.out.send(peer, EpochSyncRequest(self.epoch))

    def _on_sync_request(self, src: bytes, msg: EpochSyncRequest, now: float) -> None:
        if msg.after > self.epoch:
            self.request_sync(src, now)  # it is ahead of us
            return
        certs: list[EpochCertificate] = []
        size = 0
        for cert in self.chain.certificates[msg.after:msg.after + MAX_SYNC_CERTS]:
            size += len(cert.encode())
            if certs and size > SYNC_REPLY_BYTES:
                break
            certs.append(cert)
        if certs:
            self.out.send(src, EpochSyncReply(tuple(certs)))

    def _on_sync_reply(self, src: bytes, msg: EpochSyncReply, now: float) -> None:
        for cert in msg.certs:
            if cert.epoch <= self.epoch:
                mine = self.chain.certificates[cert.epoch - 1]
                if mine.change.id != cert.change.id:
                    self.out.add(Penalize(src, 10, f"sent a different certificate for epoch {cert.epoch}"))
                    return
                continue
            if cert.epoch > self.epoch + 1:
                self._asked.pop(src, None)
                self.request_sync(src, now)  # a gap: ask again from where we are
                return
            try:
                self._accept(cert, now, publish=False)
            except EpochError as exc:
                self.out.add(Penalize(src, 10, f"sent an invalid epoch certificate: {exc}"))
                return
        if len(msg.certs) == MAX_SYNC_CERTS:
            self._asked.pop(src, None)
            self.request_sync(src, now)  # there may be more

    # ---- the public surface (HTTP API, `peer epoch ...`) --------------------------------------------
    def _flush(self) -> None:
        if self.drain is not None:
            self.drain()

    def _check_may_approve(self, epoch: int, change_id: bytes | None) -> None:
        current = self.chain.current
        if self.me not in current:
            raise EpochError(f"this peer is not a member of the committee of epoch {current.epoch}; only "
                             f"members propose and approve")
        mine = self._approved.get(epoch)
        if mine is not None and mine.change_id != change_id:
            raise EpochError(f"this peer already approved change {mine.change_id.hex()} for epoch {epoch}; "
                             f"a member approves one change per epoch")
        if not self.settlement.handoff.complete_through(current.epoch):
            status = self.settlement.handoff.status()
            raise EpochError(f"this peer's own handoff into epoch {current.epoch} is not complete yet "
                             f"({status['accounts_pending']} accounts pending); approve once it is")

    def _approve(self, change: EpochChange, now: float) -> EpochApproval:
        """Sign an approval, record it durably, and only then let it leave."""
        existing = self._approved.get(change.epoch)
        if existing is not None and existing.change_id == change.id:
            return existing
        approval = EpochApproval.create(self.key, self.network_id, change.id)
        self._approved[change.epoch] = approval
        batch = Batch()
        batch.put_approval(change.epoch, approval.encode())
        if change.proposer == self.me:
            message: Message = EpochPropose(change, approval)
        else:
            message = EpochApprove(change.epoch, approval)
        self.out.add(Persist(batch, (Publish(message.encode()),)))
        return approval

    def propose(self, add: list[bytes], remove: list[bytes], note: str = "") -> EpochChange:
        """Propose the committee of the next epoch (this one's plus `add`, minus `remove`), approve
        it and broadcast both. Raises `EpochError` with the reason when that is not possible."""
        now = self.clock()
        current = self.chain.current
        epoch = current.epoch + 1
        if not add and not remove:
            raise EpochError("nothing to change: name peers to add or to remove")
        for peer in [*add, *remove]:
            if len(peer) != 32 or is_weak_key(peer) or not is_on_curve(peer):
                raise EpochError(f"{peer.hex()[:16]} is not a usable peer id")
        already = [p for p in add if p in current]
        if already:
            raise EpochError(f"{already[0].hex()[:16]} is already in the committee of epoch {current.epoch}")
        absent = [p for p in remove if p not in current]
        if absent:
            raise EpochError(f"{absent[0].hex()[:16]} is not in the committee of epoch {current.epoch}")
        if set(add) & set(remove):
            raise EpochError("a peer cannot be both added and removed")
        self._check_may_approve(epoch, None)
        mine = self._proposals.get(self.me)
        if mine is not None:
            raise EpochError(f"this peer already proposed change {mine.change.id.hex()} for epoch {epoch}")
        members = tuple(sorted((set(current.members) | set(add)) - set(remove)))
        try:
            change = EpochChange(self.network_id, epoch, self.chain.head_id(), members, current.replication,
                                 current.quorum, current.vnodes, self.me, int(self.wall()), note)
        except MessageError as exc:
            raise EpochError(f"cannot build the change: {exc}") from exc
        check_change(change, current, self.chain.head_id(), self.network_id)
        approval = self._approve(change, now)
        proposal = Proposal(change, now, {self.me: approval})
        self._proposals[self.me] = proposal
        for signer, loose in list(self._loose.items()):
            if loose.change_id == change.id:
                proposal.approvals[signer] = loose
                del self._loose[signer]
        self._maybe_certify(proposal, now)
        self._flush()
        return change

    def approve(self, change_id: bytes) -> EpochApproval:
        """Approve a pending proposal for the next epoch (raises `EpochError` with the reason)."""
        now = self.clock()
        proposal = self._proposal(change_id)
        if proposal is None:
            raise EpochError(f"no pending proposal {change_id.hex()} for epoch {self.epoch + 1} at this peer")
        self._check_may_approve(proposal.change.epoch, change_id)
        approval = self._approve(proposal.change, now)
        proposal.approvals[self.me] = approval
        self._maybe_certify(proposal, now)
        self._flush()
        return approval

    def accept(self, cert: EpochCertificate) -> bool:
        """Take a certificate handed in by an operator (the same checks as from gossip). True if it
        started a new epoch here, False if this peer already had it; raises `EpochError`."""
        now = self.clock()
        if cert.epoch <= self.epoch:
            if self.chain.certificates[cert.epoch - 1].change.id != cert.change.id:
                raise EpochError(f"epoch {cert.epoch} has a different certificate in this peer's chain")
            return False
        if cert.epoch > self.epoch + 1:
            self.request_sync(None, now)
            self._flush()
            raise EpochError(f"this peer is at epoch {self.epoch}; the certificate of epoch {cert.epoch} "
                             f"needs the ones in between (asked the network for them)")
        self._accept(cert, now, publish=True)
        self._flush()
        return True

    def proposals(self) -> list[dict]:
        current = self.chain.current
        needed = approvals_needed(len(current.members))
        out = []
        for proposal in sorted(self._proposals.values(), key=lambda p: p.change.id):
            change = proposal.change
            members = set(change.members)
            out.append({
                "id": change.id.hex(),
                "epoch": change.epoch,
                "members": [m.hex() for m in change.members],
                "added": [m.hex() for m in sorted(members - set(current.members))],
                "removed": [m.hex() for m in sorted(set(current.members) - members)],
                "proposer": change.proposer.hex(),
                "note": change.note,
                "created": change.created,
                "approvals": sorted(s.hex() for s in proposal.approvals if s in current),
                "needed": needed,
            })
        return out

    def certificates(self, from_epoch: int = 0) -> list[EpochCertificate]:
        """The certificates of the epochs after `from_epoch` (0: the whole chain), in order."""
        return list(self.chain.certificates[max(0, from_epoch):])

    def history(self) -> list[dict]:
        out = []
        handoffs = self.settlement.handoff.handoffs
        for committee in self.chain.committees:
            record = self._records.get(committee.epoch)
            live = handoffs.get(committee.epoch)
            moved = live.moved_in if live is not None else 0 if record is None else record.moved_in
            out.append({
                "epoch": committee.epoch,
                "committee": [m.hex() for m in committee.members],
                "started": None if record is None else {"monotonic": record.monotonic, "wall": record.wall},
                "accounts_moved": moved,
            })
        return out


def msg_epoch(msg: Message) -> int:
    return msg.change.epoch if type(msg) is EpochPropose else msg.epoch
