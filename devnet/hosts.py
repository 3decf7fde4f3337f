"""Test hosts: each peer of a devnet in its own Linux network namespace (`devnet up --hosts netns`).

What gets made, all named with the devnet's tag (`mp` + 5 hex digits, chosen at creation and
checked unused), so two devnets, and namespaces or links other programs make, never collide:

    bridge     mp<tag>br            on the host, address 198.18.S.1/24 (the host's side)
    namespace  mp<tag>-<peer>       one per peer, with `lo` and `eth0` = 198.18.S.(10+i)/24
    veth       mp<tag>v<i>          the host end of the peer's eth0, enslaved to the bridge

The addresses come from 198.18.0.0/15, the block RFC 2544 reserves for benchmarking network
devices: never routed on the Internet, so a devnet cannot shadow a real network. S is chosen at
creation among the /24s no route on this machine uses yet.

The host has an address on the bridge, so every devnet command, the wallet, the bench and the
auditor reach peers by their namespace addresses unchanged (no client runs inside a namespace).
Faults (devnet/faults.py) only ever apply between peers, never to the host's traffic.

Crash safety: before making anything, `ensure()` writes `hosts.json` in the devnet directory
listing every object it is about to make; `teardown()` removes exactly those (whichever exist)
and then the record. So a `devnet up` killed halfway leaves a record that `devnet down` cleans up
from, and nothing that this devnet did not name is ever touched.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import secrets
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from devnet import netns
from devnet.layout import Devnet, DevnetError, PeerEntry, write_private

LOCAL, NETNS = "local", "netns"
KINDS = (LOCAL, NETNS)
RECORD = "hosts.json"
BLOCK = ipaddress.ip_network("198.18.0.0/15")  # RFC 2544: benchmarking, never a real network
PEER_PORT, API_PORT = 7000, 8000  # every peer the same ports: each namespace has its own
FIRST_HOST = 10  # peer i is .(10 + i); .1 is the host
MAX_PEERS = 64
LOCK_FILE = Path("/run/lock/meshpay-hosts.lock")  # serialises choosing and making (machine-wide)
CAP_NET_ADMIN, CAP_SYS_ADMIN = 12, 21


class HostsError(DevnetError):
    """The test hosts cannot be made (a name or subnet in use, an `ip` command failed)."""


class Unprivileged(HostsError):
    """This process lacks the privileges or a system tool that test hosts or faults need."""


@dataclass(frozen=True)
class Topology:
    tag: str  # 5 hex digits
    network: str  # "198.18.S.0/24"
    peers: tuple[str, ...]

    @property
    def prefix(self) -> str:
        return f"mp{self.tag}"

    @property
    def bridge(self) -> str:
        return f"{self.prefix}br"

    def namespace(self, peer: str) -> str:
        return f"{self.prefix}-{peer}"

    def veth(self, index: int) -> str:
        return f"{self.prefix}v{index}"

    def _base(self) -> ipaddress.IPv4Address:
        return ipaddress.ip_network(self.network).network_address

    @property
    def host_address(self) -> str:
        return str(self._base() + 1)

    def address(self, index: int) -> str:
        return str(self._base() + FIRST_HOST + index)

    @property
    def addresses(self) -> dict[str, str]:
        return {name: self.address(i) for i, name in enumerate(self.peers)}

    @property
    def namespaces(self) -> list[str]:
        return [self.namespace(p) for p in self.peers]

    def as_dict(self) -> dict:
        return {"kind": NETNS, "tag": self.tag, "network": self.network, "peers": list(self.peers)}

    @classmethod
    def from_dict(cls, doc: dict) -> Topology:
        return cls(doc["tag"], doc["network"], tuple(doc["peers"]))


# ---- requirements ---------------------------------------------------------------------------------
def missing(cap_eff: int, tools: dict[str, str | None]) -> list[str]:
    """What this process lacks to make test hosts (empty: nothing). Pure, for the tests."""
    problems = []
    caps = [name for bit, name in ((CAP_NET_ADMIN, "CAP_NET_ADMIN (bridges, links, addresses)"),
                                   (CAP_SYS_ADMIN, "CAP_SYS_ADMIN (network namespaces)"))
            if not cap_eff >> bit & 1]
    if caps:
        problems.append("root privileges: this process lacks " + " and ".join(caps)
                        + "; run it as root (e.g. with sudo)")
    problems += [f"the `{tool}` command ({package})" for tool, package in tools.items() if package is not None]
    return problems


def _cap_eff() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    except (OSError, ValueError):
        pass
    return 0


def require(tools: dict[str, str], what: str) -> None:
    """Raise a HostsError naming everything missing for `what` (tools: command -> Debian package)."""
    if not Path("/proc/self/ns/net").exists():
        raise Unprivileged(f"{what} needs Linux network namespaces, which this system does not have")
    problems = missing(_cap_eff(), {t: (None if shutil.which(t) else pkg) for t, pkg in tools.items()})
    if problems:
        raise Unprivileged(f"{what} needs " + "; ".join(problems))


NEEDS = {"ip": "Debian: apt-get install iproute2"}


# ---- choosing names and a subnet -----------------------------------------------------------------
def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise HostsError(f"`ip {' '.join(args)}` failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def _routes() -> list[tuple[ipaddress.IPv4Network, str]]:
    doc = json.loads(_ip("-j", "-4", "route", "show", "table", "all").stdout or "[]")
    found = []
    for route in doc:
        dst = route.get("dst", "")
        if dst in ("default", "") or route.get("type") in ("broadcast", "local", "multicast"):
            continue
        with contextlib.suppress(ValueError):
            found.append((ipaddress.ip_network(dst, strict=False), route.get("dev", "?")))
    return found


def _links() -> set[str]:
    return {link["ifname"] for link in json.loads(_ip("-j", "link", "show").stdout or "[]")}


def plan(peers: list[str]) -> Topology:
    """Choose a tag and a /24 that nothing on this machine uses now."""
    require(NEEDS, "--hosts netns")
    if len(peers) > MAX_PEERS:
        raise HostsError(f"--hosts netns supports at most {MAX_PEERS} peers")
    used = [net for net, _ in _routes() if net.overlaps(BLOCK)]
    links = _links()
    spaces = netns.names()
    subnets = list(BLOCK.subnets(new_prefix=24))
    for _ in range(200):
        tag = secrets.token_hex(3)[:5]
        taken = any(name.startswith(f"mp{tag}") for name in [*links, *spaces])
        net = subnets[secrets.randbelow(len(subnets))]
        if not taken and not any(net.overlaps(u) for u in used):
            return Topology(tag, str(net), tuple(peers))
    raise HostsError(f"no free /24 in {BLOCK} (every one is routed on this machine)")


def of(devnet: Devnet) -> Topology | None:
    doc = devnet.extra.get("hosts")
    return Topology.from_dict(doc) if isinstance(doc, dict) and doc.get("kind") == NETNS else None


def kind(devnet: Devnet) -> str:
    return NETNS if of(devnet) else LOCAL


def exec_prefix(devnet: Devnet, entry: PeerEntry) -> list[str]:
    """How to run a command in the peer's host ([] on a 127.0.0.1 devnet)."""
    topo = of(devnet)
    return netns.exec_prefix(topo.namespace(entry.name)) if topo else []


def namespace_of(devnet: Devnet, name: str) -> str:
    topo = of(devnet)
    if topo is None:
        raise HostsError("this devnet runs every peer on 127.0.0.1 (no test hosts)")
    return topo.namespace(name)


# ---- making and removing ---------------------------------------------------------------------------
@contextlib.contextmanager
def _machine_lock() -> Iterator[None]:
    LOCK_FILE.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def record_path(devnet: Devnet) -> Path:
    return devnet.root / RECORD


def read_record(devnet: Devnet) -> dict | None:
    try:
        doc = json.loads(record_path(devnet).read_text())
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as exc:
        raise HostsError(f"{record_path(devnet)} is unreadable ({exc}); remove what it named by hand "
                         "(`ip netns list`, `ip link`), then the file") from exc
    return doc if isinstance(doc, dict) else None


def ensure(devnet: Devnet) -> Topology:
    """Make whatever of the devnet's hosts is missing (all of it on a fresh `up`)."""
    topo = of(devnet)
    if topo is None:
        raise HostsError("this devnet has no test hosts")
    require(NEEDS, "a devnet with --hosts netns")
    with _machine_lock():
        links = _links()
        own = topo.bridge in links
        for net, dev in _routes():
            if net.overlaps(ipaddress.ip_network(topo.network)) and dev != topo.bridge:
                raise HostsError(f"{topo.network}, this devnet's subnet, is now routed via {dev}; "
                                 f"`devnet down --wipe --dir {devnet.root}` and create a new devnet")
        if not own and any(n.startswith(topo.prefix) for n in [*links, *netns.names()]) \
                and read_record(devnet) is None:
            raise HostsError(f"names starting with {topo.prefix} exist that this devnet did not record; "
                             "refusing to touch them")
        # The record first: whatever happens next, `down` knows what may exist.
        write_private(record_path(devnet), json.dumps({
            "topology": topo.as_dict(), "bridge": topo.bridge, "namespaces": topo.namespaces,
            "veths": [topo.veth(i) for i in range(len(topo.peers))], "host_address": topo.host_address,
            "made_by": os.getpid()}, indent=2) + "\n")
        _make(topo, links)
    return topo


def _make(topo: Topology, links: set[str]) -> None:
    bits = ipaddress.ip_network(topo.network).prefixlen
    if topo.bridge not in links:
        _ip("link", "add", topo.bridge, "type", "bridge")
    _ip("link", "set", topo.bridge, "up")
    if not _has_address(None, topo.bridge, topo.host_address):
        _ip("addr", "add", f"{topo.host_address}/{bits}", "dev", topo.bridge)
    spaces = set(netns.names())
    for i, peer in enumerate(topo.peers):
        ns = topo.namespace(peer)
        if ns not in spaces:
            _ip("netns", "add", ns)
        _ip("-n", ns, "link", "set", "lo", "up")
        veth = topo.veth(i)
        if veth not in links:
            _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
        _ip("link", "set", veth, "master", topo.bridge, "up")
        if not _has_address(ns, "eth0", topo.address(i)):
            _ip("-n", ns, "addr", "add", f"{topo.address(i)}/{bits}", "dev", "eth0")
        _ip("-n", ns, "link", "set", "eth0", "up")


def _has_address(ns: str | None, dev: str, address: str) -> bool:
    args = (["-n", ns] if ns else []) + ["-j", "-4", "addr", "show", "dev", dev]
    proc = _ip(*args, check=False)
    if proc.returncode != 0:
        return False
    return any(a.get("local") == address for link in json.loads(proc.stdout or "[]") for a in link.get("addr_info", []))


def teardown(devnet: Devnet) -> list[str]:
    """Remove every namespace, link and bridge the record names (those that exist); then the
    record. Returns what was removed. Peers must be stopped first (a process inside a namespace
    keeps it alive, nameless)."""
    doc = read_record(devnet)
    if doc is None:
        return []
    removed = []
    with _machine_lock():
        spaces = set(netns.names())
        for ns in doc.get("namespaces", []):
            if ns in spaces:
                _remove(["netns", "del", ns], lambda name=ns: netns.exists(name))
                removed.append(f"namespace {ns}")
        # A veth goes with its namespace, but the kernel may take a moment to remove it.
        for link in [*doc.get("veths", []), *([doc["bridge"]] if doc.get("bridge") else [])]:
            if link in _links():
                _remove(["link", "del", link], lambda name=link: name in _links())
                removed.append(f"{'bridge' if link == doc.get('bridge') else 'link'} {link}")
        record_path(devnet).unlink()
    return removed


def _remove(args: list[str], still_there: Callable[[], bool]) -> None:
    """Run an `ip` removal; an error only counts if the object is in fact still there."""
    proc = _ip(*args, check=False)
    if proc.returncode != 0 and still_there():
        raise HostsError(f"`ip {' '.join(args)}` failed: {proc.stderr.strip() or proc.stdout.strip()}")


def leftovers(devnet: Devnet) -> list[str]:
    """Objects named with this devnet's tag that exist now (for tests and `down` to verify)."""
    topo = of(devnet)
    if topo is None:
        return []
    return [n for n in [*_links(), *netns.names()] if n.startswith(topo.prefix)]
