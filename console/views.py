"""The JSON each page's live stream carries, built from the collector's picture, and the alerts."""

from __future__ import annotations

import time
from typing import Any

from console import epochs, model
from console.collector import Collector, FeedItem, PeerState
from crypto.address import decode_address, encode_address
from crypto.errors import AddressError

PAGE_SIZE = 25


def _peer_row(s: PeerState, exact: dict[str, float]) -> dict[str, Any]:
    st = s.status
    me = next((m for m in s.members or [] if m.is_self), None)
    return {
        "url": s.url, "peer_id": s.peer_id, "name": s.ref.name, "process": s.ref.process,
        "up": s.up, "error": s.error, "down_since": s.down_since, "last_ok": s.last_ok,
        "version": st.version if st else None, "uptime": st.uptime if st else None,
        "accepting": st.accepting if st else None, "committee": st.committee_member if st else None,
        "address": f"{me.host}:{me.port}" if me and me.host else None, "incarnation": st.incarnation if st else None,
        "ring_share": st.ring_share if st else None, "ring_share_exact": exact.get(s.peer_id or ""),
        "owned_accounts": st.owned_accounts if st else None,
        "in_flight": st.queues.get("gateway_in_flight") if st else None,
        "epoch": epochs.describe(st), "wrong_network": s.wrong_network, "admin": s.admin,
        "contract": sorted(s.contract.values()),
    }


def network(c: Collector) -> dict[str, Any]:
    health = c.health()
    names = {s.peer_id: s.ref.name for s in c.peers.values() if s.peer_id}
    exact: dict[str, float] = {}
    ring = None
    if c.ring is not None:
        exact = dict(zip(c.ring.committee, c.ring.shares, strict=True))
        ring = {"names": [names.get(pid, pid[:12]) for pid in c.ring.committee], "ids": c.ring.committee,
                "shares": c.ring.shares, "slices": c.ring.slices, "replication": c.ring.replication}
    by_key = {}
    for s in c.peers.values():
        by_key.setdefault(s.key, s)
    rows = []
    for r in health.rows:
        state = by_key.get(r.key)
        row = _peer_row(state, exact) if state else {"peer_id": r.key, "name": r.name, "url": None,
                                                        "ring_share_exact": exact.get(r.key)}
        row.update(key=r.key, verdict=r.verdict, views=r.views, counts=r.counts, disagree=r.disagree, why=r.why)
        rows.append(row)
    g = c.genesis
    statuses = [s.status for s in c.reachable() if s.status]
    return {
        "network": {
            "name": g.name if g else None, "network_id": g.network_id.hex() if g else None,
            "genesis": c.genesis_note,
            "committee": len(c.chain.current.members) if c.chain else (len(g.committee) if g else None),
            "replication": g.replication if g else None, "quorum": g.quorum if g else None,
            "epoch": epochs.network_epoch(statuses), "source": c.source.describe(),
            "verdicts": health.counts(), "disagreements": sum(1 for r in health.rows if r.disagree),
        },
        "observers": [names.get(k, k[:12]) for k in health.observers],
        "rows": rows, "ring": ring,
    }


def traffic(c: Collector, peer: str | None = None, minutes: float = 5.0) -> dict[str, Any]:
    now = time.time()
    chosen = {s.url: list(s.samples) for s in c.peers.values() if peer in (None, "", "all", s.url)}
    series = model.traffic(chosen, now, minutes=minutes)
    table = []
    total = model.Rates()
    for s in sorted(c.peers.values(), key=lambda s: s.ref.name):
        r = model.peer_rates(list(s.samples), now, 10.0)
        st = s.status
        if r is not None:
            total.add(r)
        table.append({
            "url": s.url, "name": s.ref.name, "up": s.up,
            "certified": r.payments.get("certified") if r else None, "settled": r.payments.get("settled") if r else None,
            "failed": r.payments.get("failed") if r else None,
            "certified_p50": _ms(r.percentile("certified", 0.5)) if r else None,
            "certified_p99": _ms(r.percentile("certified", 0.99)) if r else None,
            "settled_p99": _ms(r.percentile("settled", 0.99)) if r else None,
            "bytes_in": r.bytes_in if r else None, "bytes_out": r.bytes_out if r else None,
            "overload": r.overload if r else None,
            "queues": st.queues if st else None,
        })
    failures = sorted(((k.removeprefix("failed_"), v) for k, v in total.failures.items() if v > 0),
                      key=lambda kv: -kv[1])
    return {"peer": peer or "all", "series": series, "table": table, "failures": failures,
            "peers": [{"url": s.url, "name": s.ref.name} for s in sorted(c.peers.values(), key=lambda s: s.ref.name)]}


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000.0


def feed_status(c: Collector, item: FeedItem) -> tuple[str, int, int]:
    """(certified | settled, debit appliers, credit appliers) as the owners themselves reported."""
    quorum = c.genesis.quorum if c.genesis else 0
    try:
        debit_owners = {o.hex() for o in c.owners(decode_address(item.sender))}
        credit_owners = {o.hex() for o in c.owners(decode_address(item.recipient))}
    except AddressError:
        return "certified", 0, 0
    debits = sum(1 for p, s in item.applied.items() if s & 1 and p in debit_owners)
    credits = sum(1 for p, s in item.applied.items() if s & 2 and p in credit_owners)
    settled = quorum and debits >= quorum and credits >= quorum
    return ("settled" if settled else "certified"), debits, credits


def feed(c: Collector, page: int = 0, query: str = "") -> dict[str, Any]:
    items = c.feed.newest()
    q = query.strip().lower()
    if q:
        items = [i for i in items if q in i.payment_id or q in i.sender.lower() or q in i.recipient.lower()]
    start = max(0, page) * PAGE_SIZE
    rows = []
    for item in items[start:start + PAGE_SIZE]:
        status, debits, credits = feed_status(c, item)
        rows.append({"payment_id": item.payment_id, "from": item.sender, "to": item.recipient, "amount": item.amount,
                     "seq": item.seq, "at": item.first_seen, "gateway": c.name_of(item.gateway) if item.gateway else None,
                     "status": status, "debits": debits, "credits": credits, "names": _names(c, item)})
    return {"rows": rows, "total": len(items), "page": page, "page_size": PAGE_SIZE,
            "decimals": c.genesis.decimals if c.genesis else 0, "quorum": c.genesis.quorum if c.genesis else None}


def _names(c: Collector, item: FeedItem) -> dict[str, str]:
    wallets = wallet_names(c)
    return {k: wallets[a] for k, a in (("from", item.sender), ("to", item.recipient)) if a in wallets}


def wallet_names(c: Collector) -> dict[str, str]:
    if c.source.kind != "devnet":
        return {}
    return {w.address: w.name for w in c.source.load().wallets}


def known_accounts(c: Collector) -> list[str]:
    """Demo wallets first, then accounts in the genesis, then accounts seen in recent certificates."""
    seen: dict[str, None] = dict.fromkeys(wallet_names(c))
    if c.genesis is not None:
        for a in c.genesis.allocations:
            seen.setdefault(encode_address(a.account), None)
    for item in c.feed.newest():
        seen.setdefault(item.sender, None)
        seen.setdefault(item.recipient, None)
    return list(seen)


# ---- alerts ------------------------------------------------------------------------------------------
def alerts(c: Collector) -> list[model.Alert]:
    out: list[model.Alert] = []
    health = c.health()
    now = time.time()
    for r in health.rows:
        link = "/network?q=" + r.name
        if r.verdict == "down":
            state = next((s for s in c.peers.values() if s.key == r.key), None)
            since = f" for {now - state.down_since:.0f} s" if state and state.down_since else ""
            process = f" (process {state.ref.process})" if state and state.ref.process else ""
            out.append(model.Alert("critical", "peer down", r.name, f"{r.why}{since}{process}", link))
        elif r.verdict in ("suspect", "dead", "unreachable"):
            out.append(model.Alert("warning", f"peer {r.verdict}", r.name, r.why, link))
        elif r.disagree:
            out.append(model.Alert("warning", "views disagree", r.name,
                                   f"peers see it differently: {_count_text(r.counts)}", link))
    for s in c.peers.values():
        if s.wrong_network and c.genesis is not None:
            out.append(model.Alert("critical", "other network", s.ref.name,
                                   f"serves network {s.status.network_id[:16] if s.status else '?'}…, not "
                                   f"{c.genesis.network_id.hex()[:16]}… ({c.genesis.name})"))
        for problem in s.contract.values():
            out.append(model.Alert("warning", "API mismatch", s.ref.name, problem))
        r = model.peer_rates(list(s.samples), now, 30.0)
        if r is not None and r.overload > 0:
            out.append(model.Alert("warning", "overload", s.ref.name,
                                   f"{r.overload:.1f} answers/s are 429/503 (of {r.http:.1f}/s) over the last 30 s",
                                   "/traffic"))
        if r is not None and r.payments.get("failed", 0.0) > 0:
            kinds = ", ".join(f"{k.removeprefix('failed_')} {v:.1f}/s" for k, v in r.failures.items() if v > 0)
            out.append(model.Alert("warning", "failed payments", s.ref.name, f"{kinds} over the last 30 s", "/traffic"))
        if c.ring is not None and s.status is not None and s.peer_id in c.ring.committee:
            exact = c.ring.shares[c.ring.committee.index(s.peer_id)]
            if abs(exact - s.status.ring_share) > 0.1:
                out.append(model.Alert("warning", "ring share", s.ref.name,
                                       f"reports owning {s.status.ring_share:.0%} of accounts; its ring says {exact:.0%}"))
    for address, seq in sorted(c.frozen.items()):
        out.append(model.Alert("critical", "frozen account", address,
                               f"stuck at seq {seq}: its owners hold locks for different orders and no order can "
                               "reach the quorum (the sender signed two payments for one sequence number)",
                               f"/accounts/{address}"))
    out.extend(_audit_alerts(c))
    return model.sort_alerts(out)


def _count_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {s}" for s, n in counts.items() if n)


def _audit_alerts(c: Collector) -> list[model.Alert]:
    a = c.audit
    if a is None:
        return [model.Alert("info", "supply audit", "network", "the first audit has not run yet")]
    if a.check is None:
        return [model.Alert("warning", "supply audit", "network", f"could not audit: {a.error}")]
    out = []
    check = a.check
    if not check.balanced:
        severity = "warning" if a.busy else "critical"
        note = " (payments were in flight: rechecking)" if a.busy else " with nothing in flight"
        out.append(model.Alert(severity, "supply audit", "network",
                               f"total supply {check.total} differs from the genesis {check.genesis}{note}"))
    for account in a.persistent[:20]:
        address = encode_address(bytes.fromhex(account))
        severity = "warning" if a.busy else "critical"
        out.append(model.Alert(severity, "replicas disagree", address,
                               "its owners report different states in two audits in a row"
                               + (" (under load)" if a.busy else ""), f"/accounts/{address}"))
    if a.error:
        out.append(model.Alert("warning", "supply audit", "network", f"some peers did not answer: {a.error}"))
    return out


def audit(c: Collector) -> dict[str, Any] | None:
    a = c.audit
    if a is None:
        return None
    check = a.check
    return {"at": a.at, "busy": a.busy, "peers": a.peers, "error": a.error,
            "decimals": c.genesis.decimals if c.genesis else 0,
            "total": check.total if check else None, "genesis": check.genesis if check else None,
            "accounts": check.accounts if check else None, "balanced": check.balanced if check else None,
            "disagreeing": len(check.disagreeing) if check else None, "persistent": len(a.persistent)}


def alerts_payload(c: Collector) -> dict[str, Any]:
    items = alerts(c)
    return {"alerts": [a.__dict__ for a in items], "audit": audit(c),
            "counts": {s: sum(1 for a in items if a.severity == s) for s in model.SEVERITIES}}
