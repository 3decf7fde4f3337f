"""Following one payment or one account across the peers, and the search box.

A payment is assembled from every reachable peer's `/v1/explore/payments/{id}`: the certificate
(each distinct encoding verified here against the genesis), the gateway's record (votes with their
arrival times, refusals), and each owner's own word on whether it applied its side. An account is
read from each of its owners (`/v1/accounts/{address}`), so disagreements between replicas show.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from console import model
from console.certs import Checker, Verdict
from console.collector import Collector, PeerState, each, owner_state
from console.peerapi import AccountView, History, OrderDoc, PeerError, Trace
from crypto.address import decode_address
from crypto.errors import AddressError

_HEX64 = re.compile(r"[0-9a-fA-F]{64}")


@dataclass(frozen=True)
class VoteRow:
    voter: str
    name: str
    after_ms: float | None  # after the gateway received the order (None: not seen by a gateway)
    in_certificate: bool
    signature: bool | None  # None: not in the certificate, so not checked here


@dataclass(frozen=True)
class OwnerRow:
    peer_id: str
    name: str
    applied: bool | None  # None: it did not answer
    note: str = ""


@dataclass
class PaymentView:
    payment_id: str
    status: str = "unknown"
    order: OrderDoc | None = None
    gateway: str | None = None  # name of the peer that was its gateway
    gateway_status: str | None = None
    submitted_at: float | None = None
    certified_ms: float | None = None
    settled_ms: float | None = None
    failure: str | None = None
    votes: list[VoteRow] = field(default_factory=list)
    refusals: list[tuple[str, str, str]] = field(default_factory=list)
    certificates: list[tuple[str, Verdict, list[str]]] = field(default_factory=list)  # (cbor, verdict, servers)
    debit_owners: list[OwnerRow] = field(default_factory=list)
    credit_owners: list[OwnerRow] = field(default_factory=list)
    asked: int = 0
    answered: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> Verdict | None:
        return self.certificates[0][1] if self.certificates else None


async def _gather(collector: Collector, payment_id: str) -> tuple[dict[str, Trace], list[str]]:
    traces: dict[str, Trace] = {}
    problems: list[str] = []

    async def ask(state: PeerState) -> None:
        try:
            traces[state.url] = await collector.api(state.url).trace(payment_id)
        except PeerError as exc:
            problems.append(f"{state.ref.name}: {exc}")

    await each(collector.reachable(), ask, limit=16)
    return traces, problems


async def payment(collector: Collector, checker: Checker | None, payment_id: str) -> PaymentView:
    view = PaymentView(payment_id.lower())
    traces, view.problems = await _gather(collector, view.payment_id)
    view.asked, view.answered = len(traces) + len(view.problems), len(traces)
    by_peer = {t.peer_id: t for t in traces.values()}
    servers: dict[str, list[str]] = {}
    for t in by_peer.values():
        if t.order is not None and view.order is None:
            view.order = t.order
        if t.cert_cbor is not None:
            servers.setdefault(t.cert_cbor, []).append(collector.name_of(t.peer_id))
    for cbor, names in servers.items():
        verdict = checker.check_hex(cbor) if checker else Verdict(False, "no genesis to check it against")
        view.certificates.append((cbor, verdict, names))
    view.certificates.sort(key=lambda c: (not c[1].valid, -len(c[2])))
    in_cert: dict[str, bool] = {}
    if view.verdict is not None:
        in_cert = {v.voter: v.signature for v in view.verdict.votes}
    gateways = [t for t in by_peer.values() if t.gateway is not None]
    gw = max(gateways, key=lambda t: t.gateway.status in ("certified", "settled"), default=None)  # type: ignore[union-attr]
    if gw is not None and gw.gateway is not None:
        g = gw.gateway
        view.gateway, view.gateway_status, view.submitted_at = collector.name_of(gw.peer_id), g.status, g.submitted_at
        view.certified_ms = None if g.certified_after is None else g.certified_after * 1000
        view.settled_ms = None if g.settled_after is None else g.settled_after * 1000
        view.failure = g.code
        view.refusals = [(collector.name_of(o), code, detail) for o, code, detail in g.refusals]
        for voter, after in g.votes:
            view.votes.append(VoteRow(voter, collector.name_of(voter), None if after is None else after * 1000,
                                      voter in in_cert, in_cert.get(voter)))
    listed = {v.voter for v in view.votes}
    for voter, ok in in_cert.items():
        if voter not in listed:
            view.votes.append(VoteRow(voter, collector.name_of(voter), None, True, ok))
    if view.order is not None:
        view.debit_owners = _owner_rows(collector, by_peer, view.order.sender, "debit")
        view.credit_owners = _owner_rows(collector, by_peer, view.order.recipient, "credit")
    quorum = collector.genesis.quorum if collector.genesis else 0
    debits = sum(1 for o in view.debit_owners if o.applied)
    credits = sum(1 for o in view.credit_owners if o.applied)
    if view.verdict is not None and view.verdict.valid:
        view.status = "settled" if quorum and debits >= quorum and credits >= quorum else "certified"
    elif view.gateway_status is not None:
        view.status = view.gateway_status if view.gateway_status in ("pending", "failed") else "unverified"
    elif view.order is not None:
        view.status = "unverified"
    return view


def _owner_rows(collector: Collector, traces: dict[str, Trace], address: str, side: str) -> list[OwnerRow]:
    try:
        owners = collector.owners(decode_address(address))
    except AddressError:
        return []
    rows = []
    for owner in owners:
        pid = owner.hex()
        trace = traces.get(pid)
        if trace is None:
            rows.append(OwnerRow(pid, collector.name_of(pid), None, "did not answer"))
        else:
            done = trace.applied_debit if side == "debit" else trace.applied_credit
            rows.append(OwnerRow(pid, collector.name_of(pid), done, "" if done else "not applied (yet)"))
    return rows


# ---- accounts ------------------------------------------------------------------------------------------
@dataclass
class AccountPage:
    address: str
    owners: list[tuple[str, str, AccountView | None, str]]  # (peer id, name, view, error)
    agree: bool
    frozen_seq: int | None
    agreed: AccountView | None
    history: History | None
    history_from: str | None
    problems: list[str]


async def account(collector: Collector, address: str, *, before: int | None = None, limit: int = 25) -> AccountPage:
    collector.watch(address)
    answers = await collector.owner_views(address)
    rows = [(pid, collector.name_of(pid), v if isinstance(v, AccountView) else None,
             "" if isinstance(v, AccountView) else v) for pid, v in answers]
    states = [owner_state(pid, v or "") for pid, _, v, _ in rows]
    views = [v for _, _, v, _ in rows if v is not None]
    quorum = collector.genesis.quorum if collector.genesis else 1
    tally: dict[tuple[int, int, int], list[AccountView]] = {}
    for v in views:
        tally.setdefault((v.balance, v.next_seq, v.credits), []).append(v)
    agreed = max(tally.values(), key=len)[0] if tally else None
    history, source, problems = None, None, []
    for v in sorted(views, key=lambda v: -v.history_length):
        url = collector.url_of(v.peer_id)
        if url is None:
            continue
        try:
            history = await collector.api(url).history(address, limit=limit, before=before)
            source = collector.name_of(v.peer_id)
            break
        except PeerError as exc:
            problems.append(str(exc))
    return AccountPage(address, rows, not model.disagreement(states) and len(views) == len(rows),
                       model.frozen_at(states, quorum), agreed, history, source, problems)


# ---- search --------------------------------------------------------------------------------------------
async def resolve(collector: Collector, query: str) -> tuple[str | None, str]:
    """(where to go, or None, and what to say) for a payment id, an address, or `address seq`."""
    text = query.strip()
    if _HEX64.fullmatch(text):
        return f"/payments/{text.lower()}", ""
    parts = re.split(r"[\s:#/]+", text)
    try:
        address = parts[0]
        decode_address(address)
    except (AddressError, IndexError):
        return None, (f"{text!r} is neither a payment id (64 hex characters), an address (mp1…), "
                      "nor an address and a sequence number")
    if len(parts) == 1:
        return f"/accounts/{address}", ""
    if len(parts) != 2 or not parts[1].isdigit():
        return None, "write the sender's address and the sequence number, e.g. `mp1… 3`"
    seq = int(parts[1])
    found = await find_debit(collector, address, seq)
    if found is None:
        return None, f"no owner of {address[:16]}… reports a payment with sequence number {seq}"
    return f"/payments/{found}", ""


async def find_debit(collector: Collector, address: str, seq: int) -> str | None:
    for owner in collector.owners(decode_address(address)):
        url = collector.url_of(owner.hex())
        if url is None:
            continue
        try:
            found = await collector.api(url).debit(address, seq)
        except PeerError:
            continue  # that owner is down or refuses: ask the next one
        if found is not None:
            return found
    return None
