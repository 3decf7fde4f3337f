"""Faults between a devnet's test hosts: partitions, slow and lossy links, paused peers.

Every network fault is a set of rules inside the devnet's own namespaces (devnet/hosts.py), in the
namespace of the peer that *receives* the affected packets, so one place decides a link's fate:

- partition (symmetric) `A,B / C,D,E`: each side drops what the other sends (nft table `ip meshpay`,
  chain `input`). Peers named on neither side keep reaching everyone.
- one-way `A -> B`: B drops what A sends; B's packets still reach A (so TCP connections either side
  opens stall, as on a real one-way cut).
- slow `PEER` (its links to every other peer, both directions) or `--between A,B / C,D` (both
  directions): the receiver queues the link's packets to NFQUEUE (an iptables-nft rule, because
  this kernel lacks nft's own `queue` expression), and a delayer process (devnet/delayer.py) holds
  each one for delay +- jitter and drops it with the loss probability. `--duplicate` adds an nft
  `dup` rule on the sending side. Everything the kernel's netem would do, without netem.
- pause: SIGSTOP of the peer's process (`resume`: SIGCONT). Works on 127.0.0.1 devnets too.

Traffic to and from the host (wallets, the bench, the auditor, `devnet status`) is never faulted.

Crash safety, as for the hosts: a fault is written to `faults.json` before any rule or delayer is
made, and `heal()` clears every namespace's rules (`nft flush ruleset`: the namespaces are the
devnet's own, nothing else puts rules there), stops the recorded delayers (only processes whose
command line is that delayer's) and resumes recorded paused peers, whatever state the record is in.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from devnet import hosts, processes
from devnet.hosts import Topology, Unprivileged
from devnet.layout import Devnet, DevnetError, PeerEntry, write_private

RECORD = "faults.json"
TABLE = "meshpay"
NFT_TOOLS = {"nft": "Debian: apt-get install nftables"}
QUEUE_TOOLS = {**NFT_TOOLS, "iptables-nft": "Debian: apt-get install iptables"}
NFQUEUE_PROC = Path("/proc/net/netfilter/nfnetlink_queue")


class FaultError(DevnetError):
    """A fault cannot be made (bad parameters, a command failed)."""


class UnknownPeer(FaultError):
    """A fault names a peer the devnet does not have."""


# ---- parsing what people type -------------------------------------------------------------------
def parse_groups(words: list[str], *, separators: tuple[str, ...] = ("/",)) -> list[list[str]]:
    """`["A,B", "/", "C,D,E"]` (or `"A,B/C,D,E"`, or an arrow for one-way) -> [["A","B"], ["C","D","E"]]."""
    text = " ".join(words)
    pattern = "|".join(re.escape(s) for s in separators)
    groups = [[name for name in re.split(r"[,\s]+", part.strip()) if name] for part in re.split(pattern, text)]
    if len(groups) < 2 or any(not g for g in groups):
        raise FaultError(f"expected groups of peers separated by {' or '.join(repr(s) for s in separators)}, "
                         f"e.g. `peer0,peer1 / peer2,peer3` (got {text!r})")
    seen: set[str] = set()
    for group in groups:
        for name in group:
            if name in seen:
                raise FaultError(f"{name} is named in two groups")
            seen.add(name)
    return groups


def parse_ms(text: str) -> float:
    """"50ms", "0.05s", "50" (milliseconds) -> seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s)?\s*", text)
    if not m:
        raise FaultError(f"{text!r} is not a duration (e.g. 50ms or 0.05s)")
    value = float(m.group(1))
    return value if m.group(2) == "s" else value / 1000


def parse_percent(text: str) -> float:
    """"2%" or "2" (percent) -> 0.02."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*%?\s*", text)
    if not m or float(m.group(1)) > 100:
        raise FaultError(f"{text!r} is not a percentage between 0 and 100 (e.g. 2%)")
    return float(m.group(1)) / 100


# ---- rules (pure) ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LinkFault:
    """What happens to packets from `src` to `dst` (peer names)."""

    src: str
    dst: str


def partition_links(groups: list[list[str]]) -> list[LinkFault]:
    """Every directed link between two different groups."""
    return [LinkFault(a, b) for i, ga in enumerate(groups) for j, gb in enumerate(groups) if i != j
            for a in ga for b in gb]


def one_way_links(src: list[str], dst: list[str]) -> list[LinkFault]:
    return [LinkFault(a, b) for a in src for b in dst]


def slow_links(groups: list[list[str]]) -> list[LinkFault]:
    return partition_links(groups)


def _addresses(topo: Topology, names: list[str]) -> str:
    addrs = [topo.addresses[n] for n in sorted(names)]
    return addrs[0] if len(addrs) == 1 else "{ " + ", ".join(addrs) + " }"


def _by_receiver(links: list[LinkFault]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for link in links:
        found.setdefault(link.dst, []).append(link.src)
    return found


def _by_sender(links: list[LinkFault]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for link in links:
        found.setdefault(link.src, []).append(link.dst)
    return found


NFT_HEADER = (f"table ip {TABLE} {{\n"
              "  chain input { type filter hook input priority -10; policy accept; }\n"
              "  chain output { type filter hook output priority -10; policy accept; }\n"
              "}\n")


def drop_scripts(topo: Topology, links: list[LinkFault], fault_id: str) -> dict[str, str]:
    """namespace -> nft script dropping, at each receiver, what the faulted senders send it."""
    return {topo.namespace(dst): NFT_HEADER + f"add rule ip {TABLE} input ip saddr {_addresses(topo, srcs)} "
            f'drop comment "meshpay {fault_id}"\n'
            for dst, srcs in sorted(_by_receiver(links).items())}


def duplicate_scripts(topo: Topology, links: list[LinkFault], fraction: float, fault_id: str) -> dict[str, str]:
    """namespace -> nft script duplicating `fraction` of what each sender sends over the links."""
    per_mille = round(fraction * 1000)
    return {topo.namespace(src): NFT_HEADER + f"add rule ip {TABLE} output ip daddr {_addresses(topo, dsts)} "
            f'numgen random mod 1000 < {per_mille} dup to ip daddr comment "meshpay {fault_id}"\n'
            for src, dsts in sorted(_by_sender(links).items())}


def queue_commands(topo: Topology, links: list[LinkFault], queue: int, fault_id: str) -> dict[str, list[str]]:
    """namespace -> iptables-nft arguments queueing, at each receiver, the links' packets."""
    return {topo.namespace(dst): ["-w", "-A", "INPUT", "-s", ",".join(topo.addresses[s] for s in sorted(srcs)),
                                  "-m", "comment", "--comment", f"meshpay {fault_id}",
                                  "-j", "NFQUEUE", "--queue-num", str(queue), "--queue-bypass"]
            for dst, srcs in sorted(_by_receiver(links).items())}


# ---- the record ---------------------------------------------------------------------------------------
def record_path(devnet: Devnet) -> Path:
    return devnet.root / RECORD


def read(devnet: Devnet) -> dict:
    try:
        doc = json.loads(record_path(devnet).read_text())
    except FileNotFoundError:
        return {"faults": [], "next": 1}
    except (OSError, json.JSONDecodeError) as exc:
        raise FaultError(f"{record_path(devnet)} is unreadable: {exc}") from exc
    return doc


def _write(devnet: Devnet, doc: dict) -> None:
    write_private(record_path(devnet), json.dumps(doc, indent=2) + "\n")


@contextlib.contextmanager
def _locked(devnet: Devnet) -> Iterator[dict]:
    """The record, read under a lock and written back when the block ends (also on failure:
    whatever was recorded before an error stays recorded)."""
    fd = os.open(devnet.root / ".faults.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        doc = read(devnet)
        before = json.dumps(doc)
        try:
            yield doc
        finally:
            if json.dumps(doc) != before:
                _write(devnet, doc)
    finally:
        os.close(fd)


def active(devnet: Devnet) -> list[dict]:
    return read(devnet)["faults"]


def _begin(doc: dict, kind: str, description: str, **fields: object) -> dict:
    fault = {"id": f"F{doc['next']}", "kind": kind, "description": description, "since": time.time(), **fields}
    doc["next"] += 1
    doc["faults"].append(fault)
    return fault


# ---- making faults --------------------------------------------------------------------------------
def _topology(devnet: Devnet, what: str) -> Topology:
    topo = hosts.of(devnet)
    if topo is None:
        raise FaultError(f"{what} needs a devnet with one network namespace per peer (`devnet up --hosts netns`); "
                         f"the devnet in {devnet.root} runs every peer on 127.0.0.1")
    return topo


def _names(devnet: Devnet, groups: list[list[str]]) -> list[list[str]]:
    try:
        return [[devnet.peer(n).name for n in group] for group in groups]
    except DevnetError as exc:
        raise UnknownPeer(str(exc)) from exc


def _run(args: list[str], *, stdin: str | None = None) -> None:
    proc = subprocess.run(args, input=stdin, capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise FaultError(f"`{' '.join(args)}` failed: {proc.stderr.strip() or proc.stdout.strip()}")


def _apply_nft(scripts: dict[str, str]) -> None:
    for ns, script in scripts.items():
        _run(["ip", "netns", "exec", ns, "nft", "-f", "-"], stdin=script)


def partition(devnet: Devnet, groups: list[list[str]], *, one_way: bool = False) -> dict:
    """Cut the links between groups (both ways), or with `one_way` what groups[0] sends groups[1]."""
    what = "a one-way partition" if one_way else "a partition"
    topo = _topology(devnet, what)
    hosts.require(NFT_TOOLS, what)
    groups = _names(devnet, groups)
    if one_way and len(groups) != 2:
        raise FaultError("a one-way partition has two sides: the senders and the receivers that drop them")
    links = one_way_links(groups[0], groups[1]) if one_way else partition_links(groups)
    arrow = " -> " if one_way else " / "
    with _locked(devnet) as doc:
        fault = _begin(doc, "one-way" if one_way else "partition", arrow.join(",".join(g) for g in groups),
                       groups=groups, links=[[link.src, link.dst] for link in links])
        _apply_nft(drop_scripts(topo, links, fault["id"]))
    return fault


def slow(devnet: Devnet, groups: list[list[str]], *, delay: float, jitter: float = 0.0, loss: float = 0.0,
         duplicate: float = 0.0, seed: int | None = None) -> dict:
    """Delay (+- jitter), lose and duplicate packets on the links between groups, both directions.
    A single group [[PEER]] means PEER and every other peer."""
    topo = _topology(devnet, "slowing links")
    hosts.require(QUEUE_TOOLS, "slowing links")
    if not NFQUEUE_PROC.exists():
        raise Unprivileged("slowing links needs the kernel's nfnetlink_queue (NFQUEUE) support, which this "
                         f"kernel lacks ({NFQUEUE_PROC} does not exist)")
    groups = _names(devnet, groups)
    if len(groups) == 1:
        groups = [groups[0], [p.name for p in devnet.peers if p.name not in groups[0]]]
    if not (delay or jitter or loss or duplicate):
        raise FaultError("nothing to do: give --delay, --jitter, --loss or --duplicate")
    if jitter > delay:
        raise FaultError("--jitter cannot exceed --delay (a packet cannot arrive before it was sent)")
    links = slow_links(groups)
    with _locked(devnet) as doc:
        busy = {tuple(link) for f in doc["faults"] if f["kind"] == "slow" for link in f["links"]}
        clash = [f"{link.src}->{link.dst}" for link in links if (link.src, link.dst) in busy]
        if clash:
            raise FaultError(f"already slowed: {', '.join(clash[:4])}; `devnet heal` first")
        description = f"{' / '.join(','.join(g) for g in groups)}: delay {delay * 1000:g}ms +- {jitter * 1000:g}ms, " \
                      f"loss {loss:.1%}, duplicate {duplicate:.1%}"
        fault = _begin(doc, "slow", description, groups=groups, links=[[link.src, link.dst] for link in links],
                       delay=delay, jitter=jitter, loss=loss, duplicate=duplicate, delayer=None)
        queue = int(fault["id"][1:])
        if delay or jitter or loss:
            commands = queue_commands(topo, links, queue, fault["id"])
            fault["delayer"] = _start_delayer(devnet, fault["id"], [
                {"netns": ns, "queue": queue, "delay": delay, "jitter": jitter, "loss": loss} for ns in commands], seed)
            for ns, args in commands.items():
                _run(["ip", "netns", "exec", ns, "iptables-nft", *args])
        if duplicate:
            _apply_nft(duplicate_scripts(topo, links, duplicate, fault["id"]))
    return fault


def _faults_dir(devnet: Devnet) -> Path:
    path = devnet.root / "faults"
    path.mkdir(mode=0o700, exist_ok=True)
    return path


def _start_delayer(devnet: Devnet, fault_id: str, queues: list[dict], seed: int | None) -> dict:
    config = _faults_dir(devnet) / f"{fault_id}.json"
    log = _faults_dir(devnet) / f"{fault_id}.log"
    write_private(config, json.dumps({"queues": queues, "seed": seed}) + "\n")
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        proc = subprocess.Popen([sys.executable, "-m", "devnet.delayer", str(config)], stdout=fd, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    finally:
        os.close(fd)
    started = {"pid": proc.pid, "config": str(config), "log": str(log)}
    deadline = time.monotonic() + 20
    while "delayer ready" not in log.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            _stop_delayer(started)
            raise FaultError(f"the delayer did not start: {log.read_text()[-600:].strip() or 'no output'}")
        time.sleep(0.05)
    return started


def _is_delayer(pid: int, config: str) -> bool:
    argv = processes.command_line(pid).split()
    return "devnet.delayer" in argv and config in argv


def _stop_delayer(delayer: dict) -> bool:
    pid, config = delayer["pid"], delayer["config"]
    if not _is_delayer(pid, config):
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 5
    while _is_delayer(pid, config) and time.monotonic() < deadline:
        processes.reap(pid)
        time.sleep(0.02)
    if _is_delayer(pid, config):
        os.kill(pid, signal.SIGKILL)
    processes.reap(pid)
    return True


def pause(devnet: Devnet, entry: PeerEntry) -> dict:
    with _locked(devnet) as doc:
        fault = _begin(doc, "pause", entry.name, peer=entry.name, pid=None)
        pid = processes.signal_peer(devnet, entry, signal.SIGSTOP)
        if pid is None:
            doc["faults"].remove(fault)
            raise FaultError(f"{entry.name} is not running")
        fault["pid"] = pid
    return fault


def resume(devnet: Devnet, entry: PeerEntry) -> int | None:
    """SIGCONT to the peer (paused by us or not); its pid, or None when not running."""
    with _locked(devnet) as doc:
        pid = processes.signal_peer(devnet, entry, signal.SIGCONT)
        doc["faults"] = [f for f in doc["faults"] if not (f["kind"] == "pause" and f["peer"] == entry.name)]
    return pid


def heal(devnet: Devnet) -> list[str]:
    """Remove every fault: all rules in the devnet's namespaces, every recorded delayer, every
    recorded pause. Returns descriptions of what was undone."""
    undone = []
    with _locked(devnet) as doc:
        topo = hosts.of(devnet)
        if topo is not None and hosts.read_record(devnet) is not None:
            for ns in topo.namespaces:
                if os.path.exists(f"/run/netns/{ns}"):
                    _run(["ip", "netns", "exec", ns, "nft", "flush", "ruleset"])
        for fault in doc["faults"]:
            if fault.get("delayer"):
                _stop_delayer(fault["delayer"])
            if fault["kind"] == "pause":
                with contextlib.suppress(DevnetError):
                    processes.signal_peer(devnet, devnet.peer(fault["peer"]), signal.SIGCONT)
            undone.append(f"{fault['id']} {fault['kind']} {fault['description']}")
        doc["faults"] = []
    return undone


def rules(devnet: Devnet, name: str) -> str:
    """The firewall rules in a peer's namespace now (`nft list ruleset`)."""
    ns = hosts.namespace_of(devnet, name)
    proc = subprocess.run(["ip", "netns", "exec", ns, "nft", "list", "ruleset"], capture_output=True, text=True,
                          timeout=30)
    if proc.returncode != 0:
        raise FaultError(f"cannot list the rules in {ns}: {proc.stderr.strip()}")
    return proc.stdout
