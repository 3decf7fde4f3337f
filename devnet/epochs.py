"""Changing a running devnet's committee: add peers, remove one, and the epoch history.

What an operator does on a real network (docs/api.md "Epochs"), done for every peer of the devnet:
a new peer starts as an observer (not in the committee), joins membership, then a committee peer
proposes the new committee and every committee peer approves it through its HTTP API with the
admin token of its config. The epoch certificate is formed once more than two thirds approved; the
change is done when every peer of the new committee has completed its handoff (it holds and votes
on every account it now owns). A removed peer is stopped only then, since new owners pull the
accounts it owned from it, and is recorded under `extra["removed"]` so that `status` and `check`
do not count it as a dead peer.

Each change is recorded in `devnet.json` (`extra["epochs"]`): when it was proposed, how long until
the certificate and until the new epoch served, accounts and bytes moved.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import httpx

from crypto import keystore
from crypto.keys import SigningKey
from devnet import processes
from devnet.layout import DEVNET_SCRYPT_N, Devnet, DevnetError, PeerEntry, free_ports, write_private
from peer import config as peer_config
from peer.epoch_chain import Chain, EpochCertificate, EpochError
from peer.genesis import load as load_genesis

HTTP_TIMEOUT = 10.0
POLL = 0.2
MAX_PAGES = 10_000

Progress = Callable[[str], None]


class ChangeRefused(DevnetError):
    """A peer refused a proposal or an approval (the message is its reason)."""


@dataclass
class ChangeReport:
    """One committee change as the devnet saw it."""

    epoch: int
    change_id: str
    added: list[str]  # peer names
    removed: list[str]
    committee: list[str]  # peer names (ids for peers this devnet does not know)
    proposed_at: float  # unix time
    seconds_to_certificate: float  # proposal -> every running peer in the new epoch
    seconds_to_serving: float  # proposal -> every new-committee peer's handoff complete
    approvals: int
    accounts_moved: int  # accounts the new owners took over (summed over peers)
    certs_moved: int
    bytes_moved: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---- reading the peers --------------------------------------------------------------------------
def admin_token(devnet: Devnet, entry: PeerEntry) -> str:
    """The peer's `api.admin_token` as its config file (and the environment) sets it."""
    try:
        token = peer_config.load(devnet.config_path(entry.name)).api.admin_token
    except peer_config.ConfigError as exc:
        raise DevnetError(str(exc)) from exc
    if not token:
        raise DevnetError(f"{entry.name} has no api.admin_token in {devnet.config_path(entry.name)}; this devnet "
                          "predates epoch changes: recreate it (`devnet down --wipe`, `devnet up`)")
    return token


def running(devnet: Devnet) -> list[PeerEntry]:
    return [p for p in devnet.peers if processes.is_running(p, devnet)]


def epoch_status(entry: PeerEntry, timeout: float = HTTP_TIMEOUT) -> dict[str, Any] | None:
    """The peer's `GET /v1/epoch`, or None if it does not answer."""
    try:
        response = httpx.get(entry.api + "/v1/epoch", timeout=timeout)
    except httpx.HTTPError:
        return None
    return response.json() if response.status_code == 200 else None


def _operator(devnet: Devnet, entry: PeerEntry, path: str, body: dict[str, Any]) -> dict[str, Any]:
    headers = {"authorization": f"Bearer {admin_token(devnet, entry)}"}
    try:
        response = httpx.post(entry.api + path, json=body, headers=headers, timeout=HTTP_TIMEOUT)
    except httpx.HTTPError as exc:
        raise DevnetError(f"{entry.name} did not answer {path}: {exc}") from exc
    doc = response.json()
    if response.status_code not in (200, 201):
        error = doc.get("error", {})
        raise ChangeRefused(f"{entry.name} refused {path} ({response.status_code} {error.get('code')}): "
                          f"{error.get('message')}")
    return doc


def fetch_certificates(entry: PeerEntry) -> list[EpochCertificate]:
    """Every epoch certificate the peer serves, in order (not checked: see `verified_chain`)."""
    certs: list[EpochCertificate] = []
    with httpx.Client(timeout=HTTP_TIMEOUT) as client:
        for _ in range(MAX_PAGES):
            doc = client.get(f"{entry.api}/v1/epochs", params={"from": str(len(certs) + 1)}).raise_for_status().json()
            certs.extend(EpochCertificate.decode(bytes.fromhex(row["cbor"])) for row in doc["certificates"])
            if doc["next_from"] is None:
                return certs
    raise DevnetError(f"{entry.name}'s epoch chain did not end")


def verified_chain(devnet: Devnet, peers: list[PeerEntry] | None = None) -> Chain:
    """The longest chain the running peers serve, every link checked from the genesis."""
    genesis = load_genesis(devnet.genesis_path)
    best = Chain.from_genesis(genesis)
    for entry in peers if peers is not None else running(devnet):
        chain = Chain.from_genesis(genesis)
        try:
            certs = fetch_certificates(entry)
        except httpx.HTTPError:
            continue  # not answering now: the others give the chain
        try:
            chain.extend_all(certs)
        except EpochError as exc:
            raise DevnetError(f"{entry.name} serves an epoch chain that does not follow the genesis: {exc}") from exc
        if chain.epoch > best.epoch:
            best = chain
    return best


def handoff_done(doc: dict[str, Any] | None, epoch: int) -> bool:
    """The peer is in `epoch` (or later) and holds every account it owns there."""
    if doc is None or doc["epoch"] < epoch:
        return False
    handoff = doc["handoff"]
    return handoff["epoch"] > epoch or (handoff["epoch"] == epoch and handoff["state"] == "complete")


def _names(devnet: Devnet, ids: list[str]) -> list[str]:
    by_id = {p.peer_id: p.name for p in devnet.peers}
    by_id.update({r["peer_id"]: r["name"] for r in devnet.extra.get("removed", [])})
    return [by_id.get(i, i[:12]) for i in ids]


def _wait(what: str, predicate: Callable[[], bool], timeout: float) -> float:
    """Seconds until `predicate()` held (raises `DevnetError` after `timeout`)."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise DevnetError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(POLL)
    return time.monotonic() - start


# ---- new peers -----------------------------------------------------------------------------------
def create_peer(devnet: Devnet) -> PeerEntry:
    """A new peer's key, config and directory, like `devnet up` makes them (not yet started)."""
    taken = {p.name for p in devnet.peers} | {r["name"] for r in devnet.extra.get("removed", [])}
    index = len(taken)
    while f"peer{index}" in taken:
        index += 1
    name = f"peer{index}"
    model = running(devnet) or devnet.peers
    if not model:
        raise DevnetError("the devnet has no peer to copy settings from")
    settings = peer_config.load(devnet.config_path(model[0].name))
    port, api_port = free_ports(2)
    key = SigningKey.generate()
    entry = PeerEntry(name, key.public.hex(), port, api_port)
    devnet.peer_dir(name).mkdir(parents=True)
    keystore.save(devnet.peer_dir(name) / "peer.key", key, devnet.password(), kind="peer", name=name,
                  scrypt_n=DEVNET_SCRYPT_N)
    text = peer_config.render(genesis="../../genesis.json", password_file="../../password.txt",
                              listen_port=port, api_port=api_port,
                              seeds=[f"127.0.0.1:{p.port}" for p in model[:2]], fsync=settings.tuning.fsync,
                              sync_in_thread=settings.tuning.sync_in_thread,
                              audit_token=settings.api.audit_token or None,
                              admin_token=admin_token(devnet, model[0]), log_format=settings.log.format)
    write_private(devnet.config_path(name), text)
    devnet.peers.append(entry)
    devnet.save()
    return entry


def start_observer(devnet: Devnet, entry: PeerEntry, timeout: float) -> float:
    """Start a peer outside the committee; seconds until it sees every running peer alive.

    (The committee keeps an outsider only in its bounded outsiders table, never in its members
    list (docs/security.md), so the newcomer's own view is the one that says it has joined.)"""
    members = {m.hex() for m in verified_chain(devnet).current.members}
    processes.start_peer(devnet, entry)
    others = [p for p in running(devnet) if p.name != entry.name and p.peer_id in members]

    def seen() -> bool:
        if not processes.is_running(entry, devnet):
            raise DevnetError(f"{entry.name} exited during start-up: {processes.tail(devnet, entry.name, 5)}")
        try:
            rows = httpx.get(entry.api + "/v1/peers", timeout=HTTP_TIMEOUT).json()["peers"]
        except (httpx.HTTPError, ValueError, KeyError):
            return False
        alive = {r.get("peer_id") for r in rows if isinstance(r, dict) and r.get("state") == "alive"}
        return all(p.peer_id in alive for p in others) and epoch_status(entry) is not None

    return _wait(f"{entry.name} to join membership", seen, timeout)


# ---- committee changes ---------------------------------------------------------------------------
def change_committee(devnet: Devnet, *, add: list[PeerEntry], remove: list[PeerEntry], note: str,
                     timeout: float, progress: Progress | None = None) -> ChangeReport:
    """Propose on one committee peer, approve on every other, wait until the new epoch serves."""
    say = progress or (lambda text: None)
    live = running(devnet)
    chain = verified_chain(devnet, live)
    members = {m.hex() for m in chain.current.members}
    committee_peers = [p for p in live if p.peer_id in members]
    if not committee_peers:
        raise DevnetError("no committee peer of this devnet is running")
    for entry in add:
        if entry.peer_id in members:
            raise DevnetError(f"{entry.name} is already in the committee of epoch {chain.epoch}")
    for entry in remove:
        if entry.peer_id not in members:
            raise DevnetError(f"{entry.name} is not in the committee of epoch {chain.epoch}")
    target = chain.epoch + 1
    removing = {p.peer_id for p in remove}
    proposer = next((p for p in committee_peers if p.peer_id not in removing), committee_peers[0])
    proposed_at = time.time()
    start = time.monotonic()
    proposal = _operator(devnet, proposer, "/v1/epoch/proposals",
                         {"add": [p.peer_id for p in add], "remove": sorted(removing), "note": note})
    change_id = proposal["change_id"]
    say(f"{proposer.name} proposed epoch {target} (change {change_id[:16]})")
    approvals = 1
    for entry in committee_peers:
        if entry is proposer:
            continue
        try:
            doc = _operator(devnet, entry, "/v1/epoch/approvals", {"change_id": change_id})
        except ChangeRefused:
            if (epoch_status(entry) or {}).get("epoch", 0) >= target:
                continue  # the certificate reached it first: nothing left to approve there
            raise
        approvals += 1
        say(f"{entry.name} approved" + (f": epoch {target} is certified" if doc.get("certified") else ""))
    live_ids = {p.peer_id for p in live}
    serving = [p for p in live if p.peer_id not in removing] + [p for p in add if p.peer_id not in live_ids]

    def certified() -> bool:
        return all((d := epoch_status(p)) is not None and d["epoch"] >= target for p in serving)

    to_cert = _wait(f"every peer to enter epoch {target}", certified, timeout)
    say(f"every peer is in epoch {target} after {to_cert:.1f} s; waiting for the handoffs")
    new_members = [p for p in serving if p.peer_id in (members - removing) | {a.peer_id for a in add}]
    _wait(f"the handoffs into epoch {target}",
          lambda: all(handoff_done(epoch_status(p), target) for p in new_members),
          max(1.0, timeout - (time.monotonic() - start)))
    to_serving = time.monotonic() - start
    moved = certs = size = 0
    for entry in new_members:
        handoff = (epoch_status(entry) or {}).get("handoff", {})
        if handoff.get("epoch") == target:
            moved += int(handoff.get("accounts_moved_in", 0))
            certs += int(handoff.get("certs_received", 0))
            size += int(handoff.get("bytes_received", 0))
    final = verified_chain(devnet, serving)
    report = ChangeReport(target, change_id, [p.name for p in add], [p.name for p in remove],
                          _names(devnet, [m.hex() for m in final.current.members]), proposed_at, round(to_cert, 3),
                          round(to_serving, 3), approvals, moved, certs, size)
    devnet.extra.setdefault("epochs", []).append(report.as_dict())
    devnet.save()
    return report


def add_peers(devnet: Devnet, count: int, *, timeout: float = 120.0, progress: Progress | None = None) -> ChangeReport:
    """Create and start `count` observers, then make them committee members in one epoch change."""
    say = progress or (lambda text: None)
    added = []
    for _ in range(count):
        entry = create_peer(devnet)
        seconds = start_observer(devnet, entry, timeout)
        say(f"{entry.name} ({entry.peer_id[:12]}) joined as an observer after {seconds:.1f} s")
        added.append(entry)
    return change_committee(devnet, add=added, remove=[], note=f"devnet add-peer {' '.join(p.name for p in added)}",
                            timeout=timeout, progress=progress)


def remove_peer(devnet: Devnet, entry: PeerEntry, *, timeout: float = 120.0,
                progress: Progress | None = None) -> ChangeReport:
    """Take `entry` out of the committee, wait for the new owners, then stop it and record it removed."""
    report = change_committee(devnet, add=[], remove=[entry], note=f"devnet remove-peer {entry.name}",
                              timeout=timeout, progress=progress)
    processes.stop_peer(devnet, entry)
    devnet.peers = [p for p in devnet.peers if p.name != entry.name]
    devnet.extra.setdefault("removed", []).append({"name": entry.name, "peer_id": entry.peer_id,
                                                   "epoch": report.epoch, "removed_at": time.time()})
    devnet.save()
    return report


def history(devnet: Devnet) -> list[dict[str, Any]]:
    """Each epoch: committee, when it started, accounts moved into it (from the peers and the record)."""
    live = running(devnet)
    chain = verified_chain(devnet, live)
    recorded = {r["epoch"]: r for r in devnet.extra.get("epochs", [])}
    moved: dict[int, int] = {}
    for entry in live:
        for row in (epoch_status(entry) or {}).get("history", []):
            if isinstance(row, dict) and isinstance(row.get("accounts_moved"), int):
                moved[row["epoch"]] = moved.get(row["epoch"], 0) + row["accounts_moved"]
    rows = []
    previous: set[str] = set()
    for epoch, committee in enumerate(chain.committees):
        members = [m.hex() for m in committee.members]
        cert = chain.certificates[epoch - 1] if epoch else None
        record = recorded.get(epoch, {})
        rows.append({"epoch": epoch, "change_id": cert.change.id.hex() if cert else None,
                     "started": cert.change.created if cert else None, "note": cert.change.note if cert else "genesis",
                     "committee": _names(devnet, members),
                     "added": _names(devnet, sorted(set(members) - previous)) if epoch else [],
                     "removed": _names(devnet, sorted(previous - set(members))),
                     "approvals": len(cert.approvals) if cert else None,
                     # as recorded when the devnet made the change (the peers of then), else the peers now
                     "accounts_moved": record.get("accounts_moved", moved.get(epoch, 0)),
                     "seconds_to_serving": record.get("seconds_to_serving")})
        previous = set(members)
    return rows


def changing(peers: list[PeerEntry], chain: Chain) -> str:
    """Why the peers are not settled in `chain`'s epoch yet ("" when they are): a peer in another
    epoch, or a member of the current committee whose handoff is not complete."""
    members = {m.hex() for m in chain.current.members}
    for entry in peers:
        doc = epoch_status(entry)
        if doc is None:
            return f"{entry.name} does not answer /v1/epoch"
        if doc["epoch"] != chain.epoch:
            return f"{entry.name} is in epoch {doc['epoch']}, the chain in {chain.epoch}"
        if entry.peer_id in members and chain.epoch and not handoff_done(doc, chain.epoch):
            return f"{entry.name}'s handoff into epoch {chain.epoch} is {doc['handoff']['state']}"
    return ""
