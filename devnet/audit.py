"""`devnet check`: the auditor. It asks every running peer for the accounts it owns and the
certificates it holds, waits until the network is quiet, and checks the money invariants:

- total supply equals the genesis, and no replica holds a negative balance;
- the replicas of each account agree (balance, next_seq, credit count and credit digest) among its
  running owners;
- no two certificates exist for one (sender, seq);
- every certificate is applied by every running owner of both its accounts;
- every payment a client was told is certified (`acknowledged`, e.g. `devnet bench --ids-out`, or
  what `devnet chaos` saw) is held, and so applied, by the peers.

It also reports frozen accounts (not a violation: the sender's own doing): the running owners are
locked on different orders at the account's next sequence so that no order can reach the quorum W,
even if every owner that is free or not running voted for it. A sender gets there by signing two
orders for one sequence number and having them sent at once to different owners.

The audit endpoints need the peers' `api.audit_token`: pass `token`, or the auditor reads each
peer's from its config file in the devnet.
Owners are those of the current epoch: the auditor follows the chain of epoch certificates from the
genesis (checking every link, devnet/epochs.py) and takes the newest committee. While an epoch
change is in progress (peers in different epochs, or a handoff not complete) the network is busy.
Certificates are compared across all epochs, so two orders for one (sender, seq) certified in
different epochs are found too.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

import httpx

from crypto.address import encode_address
from devnet import epochs
from devnet.layout import Devnet, PeerEntry
from devnet.processes import is_running
from peer import config as peer_config
from peer.genesis import load as load_genesis
from peer.ring import Ring

DEBIT, CREDIT = 1, 2


@dataclass
class Snapshot:
    accounts: dict[str, dict[str, tuple]]  # peer_id -> account hex -> state tuple
    certs: dict[str, dict[str, dict]]  # peer_id -> payment id -> row
    busy: bool
    locks: dict[str, dict[str, tuple[str | None, bool]]] = field(default_factory=dict)
    # peer_id -> account hex -> (payment id locked at next_seq, equivocation seen)


@dataclass
class AuditReport:
    ok: bool
    violations: list[str]
    peers_checked: list[str]
    peers_down: list[str]
    accounts: int
    certificates: int
    total_supply: int
    genesis_supply: int
    quiet: bool
    notes: list[str] = field(default_factory=list)
    frozen: list[dict] = field(default_factory=list)
    epoch: int = 0  # whose committee owned the accounts checked

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def _pages(client: httpx.Client, url: str, key: str, token: str | None) -> list[dict]:
    rows: list[dict] = []
    after = None
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    for _ in range(100_000):
        params = {"limit": "5000", **({"after": after} if after else {})}
        response = client.get(url, params=params, headers=headers)
        response.raise_for_status()
        doc = response.json()
        rows.extend(doc[key])
        after = doc["next_after"]
        if after is None:
            return rows
    raise RuntimeError("audit paging did not end")


def snapshot(peers: list[PeerEntry], timeout: float = 10.0, tokens: dict[str, str] | None = None) -> Snapshot:
    """Every peer's owned accounts and certificates; `tokens` maps a peer's name to its audit token."""
    accounts: dict[str, dict[str, tuple]] = {}
    certs: dict[str, dict[str, dict]] = {}
    locks: dict[str, dict[str, tuple[str | None, bool]]] = {}
    busy = False
    tokens = tokens or {}
    with httpx.Client(timeout=timeout) as client:
        for peer in peers:
            token = tokens.get(peer.name)
            status = client.get(f"{peer.api}/v1/status").json()
            q = status["queues"]
            busy |= bool(q["gateway_in_flight"] or q["group_commit"] or q["inbound"])
            rows = _pages(client, f"{peer.api}/v1/audit/accounts", "accounts", token)
            accounts[peer.peer_id] = {
                row["account"]: (row["balance"], row["next_seq"], row["credits"], row["credit_digest"])
                for row in rows
            }
            locks[peer.peer_id] = {row["account"]: (row.get("lock"), bool(row.get("equivocation")))
                                   for row in rows}
            certs[peer.peer_id] = {row["payment_id"]: row for row in
                                   _pages(client, f"{peer.api}/v1/audit/certificates", "certificates", token)}
    return Snapshot(accounts, certs, busy, locks)


def configured_tokens(devnet: Devnet) -> dict[str, str]:
    """Each peer's `api.audit_token` as its config file (and the environment) sets it."""
    tokens = {}
    for peer in devnet.peers:
        try:
            token = peer_config.load(devnet.config_path(peer.name)).api.audit_token
        except peer_config.ConfigError:
            continue
        if token:
            tokens[peer.name] = token
    return tokens


def audit(devnet: Devnet, *, quiet_timeout: float = 30.0, token: str | None = None,
          acknowledged: Iterable[str] = ()) -> AuditReport:
    """Check the invariants; while they do not hold yet, keep looking until `quiet_timeout`.

    Right after load, owners can still be catching up (re-deliveries, anti-entropy), so a snapshot
    with violations is retaken every second until the invariants hold with nothing in flight, or
    the time is up; the report is the last look.
    """
    genesis = load_genesis(devnet.genesis_path)
    running = [p for p in devnet.peers if is_running(p, devnet)]
    down = [p.name for p in devnet.peers if p not in running]
    tokens = {p.name: token for p in devnet.peers} if token else configured_tokens(devnet)
    deadline = time.monotonic() + quiet_timeout
    acknowledged = sorted(set(acknowledged))
    while True:
        chain = epochs.verified_chain(devnet, running)
        ring = chain.current.ring
        changing = epochs.changing(running, chain)
        snap = snapshot(running, tokens=tokens)
        violations, notes, accounts, certs, total = _evaluate(snap, genesis, ring, running, acknowledged)
        quiet = not snap.busy and not changing
        if changing:
            notes.append(f"epoch change in progress: {changing}")
        if (quiet and not violations) or time.monotonic() >= deadline:
            break
        time.sleep(1.0)
    if not quiet:
        notes.append(f"work was still in flight after {quiet_timeout:.0f} s; results may include it")
    if down:
        notes.append(f"peers not running (not checked): {', '.join(down)}")
    frozen = frozen_accounts(snap, ring, genesis.quorum, running)
    for entry in frozen:
        split = " + ".join(str(len(names)) for names in entry["locks"].values())
        notes.append(f"account {entry['address']} is frozen at seq {entry['seq']}: its owners are locked on "
                     f"{len(entry['locks'])} different orders ({split}), so none can reach the quorum of "
                     f"{genesis.quorum}; its sender signed two orders for one sequence number")
    return AuditReport(not violations, violations, [p.name for p in running], down, accounts, certs, total,
                       genesis.total_supply, quiet, notes, frozen, chain.epoch)


def frozen_accounts(snap: Snapshot, ring: Ring, quorum: int, running: list[PeerEntry]) -> list[dict]:
    """Accounts whose running owners' locks at the next sequence leave every order short of the
    quorum, counting every free or not-running owner as a possible vote."""
    names = {p.peer_id: p.name for p in running}
    frozen = []
    locked_accounts = {a for per_peer in snap.locks.values() for a, (lock, _) in per_peer.items() if lock}
    for account in sorted(locked_accounts):
        owners = [o.hex() for o in ring.owners(bytes.fromhex(account))]
        seqs = {snap.accounts[o][account][1] for o in owners if o in snap.accounts and account in snap.accounts[o]}
        if len(seqs) != 1:
            continue  # owners disagree on the next seq: a certificate used it, or one is catching up
        by_order: dict[str, list[str]] = defaultdict(list)
        unknown = 0
        evidence = []
        for owner in owners:
            lock, saw = snap.locks.get(owner, {}).get(account, (None, False))
            if lock is None:
                unknown += 1  # free, or not running: it could still vote for any order
            else:
                by_order[lock].append(names[owner])
            if saw:
                evidence.append(names[owner])
        if len(by_order) >= 2 and max(len(v) for v in by_order.values()) + unknown < quorum:
            frozen.append({"account": account, "address": encode_address(bytes.fromhex(account)),
                           "seq": seqs.pop(), "locks": {k: sorted(v) for k, v in by_order.items()},
                           "free_or_down": unknown,
                           "evidence_at": evidence})
    return frozen


def _evaluate(snap: Snapshot, genesis, ring: Ring, running: list[PeerEntry], acknowledged: Iterable[str] = ()) -> tuple:
    violations: list[str] = []
    notes: list[str] = []
    live_ids = {bytes.fromhex(p.peer_id) for p in running}
    # Replicas agree, and supply is conserved.
    all_accounts = {a for per_peer in snap.accounts.values() for a in per_peer}
    all_accounts |= {a.account.hex() for a in genesis.allocations}
    total = 0
    for account in sorted(all_accounts):
        owners = [o for o in ring.owners(bytes.fromhex(account)) if o in live_ids]
        states = {o.hex(): snap.accounts[o.hex()].get(account) for o in owners}
        distinct = set(states.values())
        if len(distinct) > 1:
            detail = ", ".join(f"{pid[:8]}: {s[0] if s else 'missing'}/{s[1] if s else '-'}" for pid, s in states.items())
            violations.append(f"replicas of {encode_address(bytes.fromhex(account))} disagree ({detail})")
        for pid, state in states.items():
            if state is not None and state[0] < 0:
                violations.append(f"{encode_address(bytes.fromhex(account))} has a negative balance ({state[0]}) "
                                  f"at {pid[:8]}")
        agreed = next(iter(distinct)) if distinct else None
        if agreed is not None:
            total += agreed[0]
        if not owners:
            notes.append(f"account {account[:12]} has no running owner")
    if total != genesis.total_supply:
        violations.append(f"total supply is {total}, genesis created {genesis.total_supply}")
    # One certificate per (sender, seq); every certificate applied by every running owner.
    union: dict[str, dict] = {}
    for per_peer in snap.certs.values():
        union.update(per_peer)
    slots: dict[tuple[str, int], set[str]] = defaultdict(set)
    for pid, row in union.items():
        slots[(row["from"], row["seq"])].add(pid)
    for (sender, seq), ids in slots.items():
        if len(ids) > 1:
            violations.append(f"{len(ids)} certificates for ({sender[:12]}, seq {seq}): {sorted(ids)}")
    for pid in acknowledged:
        if pid not in union:
            violations.append(f"payment {pid[:16]} was acknowledged as certified but no running peer holds it")
    for pid, row in union.items():
        for side, account in ((DEBIT, row["from"]), (CREDIT, row["to"])):
            for owner in ring.owners(bytes.fromhex(account)):
                if owner not in live_ids:
                    continue
                mine = snap.certs[owner.hex()].get(pid)
                if mine is None or not mine["applied"] & side:
                    name = next(p.name for p in running if p.peer_id == owner.hex())
                    violations.append(f"{name} has not applied the {'debit' if side == DEBIT else 'credit'} of "
                                      f"payment {pid[:16]}")
    return violations, notes, len(all_accounts), len(union), total
