"""A local devnet on disk: per-peer keys, configs and data dirs, demo wallets, one genesis.

    ROOT/                  0700, like everything below it (files 0600): it holds keys, the
                           password, the audit token and ledger data
      devnet.json          what this devnet is (name, peers, ports, wallets, audit token)
      genesis.json
      password.txt         the devnet's key password: devnet keys guard play money only
      events.log           what devnet commands did (`down`, `kill`, `restart`...), so a live view
                           can say why a peer went down
      owner.json           the `devnet up` in the foreground whose Ctrl-C stops the devnet
      .lock                flock serialising the commands that start and stop peers
      peers/NAME/{peer.key, peer.toml, peer.pid, peer.log, data/}
      wallets/NAME.key     demo wallets, funded in the genesis (a wallet directory)
      faucet/faucet.key    the faucet account `devnet fund` pays from (a wallet directory)
      bench/benchN.key     accounts `devnet bench` funds its load accounts from

Which process runs a peer is never taken from memory: `peer.pid` is written by whoever starts the
peer and read fresh by everyone (devnet/processes.py checks it against /proc).

Everything listens on 127.0.0.1, unless the devnet was made with test hosts (`--hosts netns`,
devnet/hosts.py): then each peer has its own address in its own network namespace. The layout is
a library so tests and benchmarks build the same networks as `devnet up`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import random
import secrets
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from crypto import keystore
from crypto.address import encode_address
from crypto.errors import MeshpayError
from crypto.keys import SigningKey
from peer import config as peer_config
from peer import genesis as genesis_file
from peer.genesis import DEFAULT_DECIMALS, DEFAULT_VNODES, Allocation, Genesis, check_parameters

STATE_FILE = "devnet.json"
FORMAT = 1
DEMO_BALANCE = 1_000_000_00  # 1,000,000.00 in minor units with 2 decimals
FAUCET_BALANCE = 1_000_000_000_00  # what `devnet fund` can give away
BENCH_FUNDERS = 10  # the bench funds its accounts from these, in parallel
BENCH_FUNDER_BALANCE = 100_000_000_00
DEVNET_SCRYPT_N = 1 << 12  # devnet keys hold play money; keep start-up quick
PRIVATE_UMASK = 0o077  # files 0600, directories 0700
# Ports above this are fine for a devnet (below are well-known and registered services).
LOWEST_PORT = 10_000


class DevnetError(MeshpayError):
    """A devnet command cannot proceed (bad directory, bad parameters, unknown peer...)."""


@dataclass
class PeerEntry:
    name: str
    peer_id: str
    port: int
    api_port: int
    host: str = "127.0.0.1"  # the peer's address (its own namespace's on a `--hosts netns` devnet)
    # Only a hint for the code that started it (tests read it): processes.live_pid() always asks
    # the disk and /proc, never this field.
    pid: int | None = None

    @property
    def api(self) -> str:
        return f"http://{self.host}:{self.api_port}"


@dataclass
class WalletEntry:
    name: str
    address: str
    key_file: str


@dataclass
class Devnet:
    root: Path
    network_id: str
    peers: list[PeerEntry]
    wallets: list[WalletEntry]
    replication: int
    quorum: int
    extra: dict = field(default_factory=dict)
    name: str = "devnet"
    audit_token: str | None = None  # sent by `devnet check` to the peers' /v1/audit endpoints
    faucet: WalletEntry | None = None
    bench_funders: list[WalletEntry] = field(default_factory=list)
    log_level: str = "info"

    # ---- paths -----------------------------------------------------------------------------------
    @property
    def genesis_path(self) -> Path:
        return self.root / "genesis.json"

    @property
    def password_file(self) -> Path:
        return self.root / "password.txt"

    @property
    def events_path(self) -> Path:
        return self.root / "events.log"

    @property
    def owner_path(self) -> Path:
        return self.root / "owner.json"

    def peer_dir(self, name: str) -> Path:
        return self.root / "peers" / name

    def config_path(self, name: str) -> Path:
        return self.peer_dir(name) / "peer.toml"

    def log_path(self, name: str) -> Path:
        return self.peer_dir(name) / "peer.log"

    def pid_path(self, name: str) -> Path:
        return self.peer_dir(name) / "peer.pid"

    def data_dir(self, name: str) -> Path:
        return self.peer_dir(name) / "data"

    def wallet_dir(self) -> Path:
        return self.root / "wallets"

    def faucet_dir(self) -> Path:
        return self.root / "faucet"

    def peer(self, name: str) -> PeerEntry:
        for p in self.peers:
            if p.name == name or (p.peer_id.startswith(name) and len(name) >= 6):
                return p
        raise DevnetError(f"no peer named {name!r} in this devnet (peers: {', '.join(p.name for p in self.peers)})")

    def password(self) -> str:
        return self.password_file.read_text().rstrip("\n")

    # ---- persistence ---------------------------------------------------------------------------
    def save(self) -> None:
        """Write devnet.json (the description only: pids live in each peer's peer.pid)."""
        doc = {"meshpay_devnet": FORMAT, "name": self.name, "network_id": self.network_id,
               "replication": self.replication, "quorum": self.quorum,
               "peers": [{k: v for k, v in asdict(p).items() if k != "pid"} for p in self.peers],
               "wallets": [asdict(w) for w in self.wallets],
               "faucet": asdict(self.faucet) if self.faucet else None,
               "bench_funders": [asdict(w) for w in self.bench_funders],
               "audit_token": self.audit_token, "log_level": self.log_level, "extra": self.extra}
        write_private(self.root / STATE_FILE, json.dumps(doc, indent=2) + "\n")

    @classmethod
    def load(cls, root: Path) -> Devnet:
        root = Path(root).expanduser().absolute()
        path = root / STATE_FILE
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError as exc:
            raise DevnetError(f"no devnet in {root} (run `devnet up --dir {root}` first)") from exc
        except (OSError, json.JSONDecodeError) as exc:
            raise DevnetError(f"{path} is unreadable: {exc}") from exc
        if not isinstance(doc, dict) or doc.get("meshpay_devnet") != FORMAT:
            raise DevnetError(f"{path} is not a meshpay devnet state file")
        peers = [PeerEntry(**{k: v for k, v in p.items() if k != "pid"}) for p in doc["peers"]]
        faucet = doc.get("faucet")
        return cls(root, doc["network_id"], peers, [WalletEntry(**w) for w in doc["wallets"]],
                   doc["replication"], doc["quorum"], doc.get("extra", {}), doc.get("name", "devnet"),
                   doc.get("audit_token"), WalletEntry(**faucet) if faucet else None,
                   [WalletEntry(**w) for w in doc.get("bench_funders", [])], doc.get("log_level", "info"))

    # ---- what devnet commands did ------------------------------------------------------------
    def note(self, action: str, text: str) -> None:
        """Append one line to events.log (read by live views to say why peers went down).
        `action` is the devnet command (up, down, kill, restart...)."""
        line = json.dumps({"t": round(time.time(), 3), "pid": os.getpid(), "action": action, "text": text})
        fd = os.open(self.events_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a") as fh:
            fh.write(line + "\n")

    def events(self, since: float = 0.0) -> list[dict]:
        """Events noted at or after `since` (wall-clock seconds), oldest first."""
        try:
            lines = self.events_path.read_text().splitlines()[-200:]
        except FileNotFoundError:
            return []
        found = []
        for line in lines:
            try:
                doc = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line being written right now
            if isinstance(doc, dict) and doc.get("t", 0) >= since:
                found.append(doc)
        return found

    @contextlib.contextmanager
    def exclusive(self, what: str, timeout: float = 120.0) -> Iterator[None]:
        """Held while a command starts or stops peers, so two commands never race on one peer."""
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise DevnetError(f"another devnet command is still starting or stopping peers of "
                                          f"{self.root}; {what} gave up after {timeout:.0f} s") from None
                    time.sleep(0.1)
            yield
        finally:
            os.close(fd)  # releases the lock


def write_private(path: Path, text: str) -> None:
    """Replace `path` atomically with `text`, mode 0600 from the first byte."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


@contextlib.contextmanager
def private_umask() -> Iterator[None]:
    """Files made meanwhile (by us or a library) are 0600 and directories 0700."""
    old = os.umask(PRIVATE_UMASK)
    try:
        yield
    finally:
        os.umask(old)


def is_devnet(root: Path) -> bool:
    return (Path(root) / STATE_FILE).is_file()


def ephemeral_range() -> tuple[int, int]:
    """The ports the kernel hands to outgoing connections (and so may hold in TIME_WAIT)."""
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
        return low, high
    except (OSError, ValueError):
        # No /proc (macOS, BSD): the IANA dynamic range those systems use.
        return (49152, 65535) if not sys.platform.startswith("linux") else (32768, 60999)


def _bindable(port: int) -> socket.socket | None:
    """A socket bound to 127.0.0.1:port, or None. No SO_REUSEADDR: a port with connections
    lingering in TIME_WAIT counts as taken, so a fresh devnet never starts next to old traffic."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        s.close()
        return None
    return s


def free_ports(count: int, *, rng: random.Random | None = None) -> list[int]:
    """`count` distinct ports free on 127.0.0.1 right now, outside the kernel's ephemeral range.

    Outgoing connections take their local port from the ephemeral range, so a port there can be
    taken by any connection between choosing it and binding it (or sit in TIME_WAIT after one);
    below or above it, only listeners compete, and a random pick keeps two devnets (or two tests)
    started at once apart.
    """
    rng = rng or random.Random()
    low, high = ephemeral_range()
    pool = [(LOWEST_PORT, low - 1), (high + 1, 65535)]
    pool = [(a, b) for a, b in pool if b >= a]
    size = sum(b - a + 1 for a, b in pool)
    socks: list[socket.socket] = []
    try:
        for _ in range(max(200, 20 * count)):
            if len(socks) == count or size < 4 * count:
                break
            pick = rng.randrange(size)
            for a, b in pool:
                if pick <= b - a:
                    port = a + pick
                    break
                pick -= b - a + 1
            if any(s.getsockname()[1] == port for s in socks):
                continue
            s = _bindable(port)
            if s is not None:
                socks.append(s)
        while len(socks) < count:  # the kernel's ephemeral range covers (nearly) everything
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _account(directory: Path, name: str, password: str) -> tuple[SigningKey, WalletEntry]:
    key = SigningKey.generate()
    path = directory / f"{name}.key"
    keystore.save(path, key, password, kind="account", name=name, scrypt_n=DEVNET_SCRYPT_N)
    return key, WalletEntry(name, encode_address(key.public), str(path))


def disk_thread_pays(peers: int) -> bool:
    """Whether peers sharing this machine should wait for the disk in a worker thread. With more
    peers than cores, each hand-off to a disk thread waits for the OS to schedule it among busy
    peers, which cost ~15 ms at p99 to certified on 2 cores with 5 peers (see docs)."""
    return peers <= (os.cpu_count() or 1)


def create(root: Path, *, peers: int = 5, wallets: int = 10, replication: int = 4, quorum: int = 3,
           balance: int = DEMO_BALANCE, decimals: int = DEFAULT_DECIMALS, fsync: bool = True,
           name: str | None = None, extra_accounts: list[bytes] | None = None, extra_balance: int = 0,
           ports: list[int] | None = None, log_level: str = "info", hosts: dict | None = None) -> Devnet:
    """Write a new devnet into an empty (or missing) directory. Refuses anything else.

    `hosts`: None for every peer on 127.0.0.1, or test hosts (devnet/hosts.py `Topology.as_dict()`
    plus "addresses": one per peer): then each peer listens on its own address and every peer
    uses the same two ports (peer0 listens on the wildcard address and advertises its own).

    `name` defaults to `devnet-` and six random hex digits, so a wallet that saw an earlier devnet
    in the same directory can tell the two networks apart."""
    root = Path(root).expanduser().absolute()
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise DevnetError(f"{root} is not empty and holds no devnet; choose another --dir")
    if peers < 1 or wallets < 0:
        raise DevnetError("a devnet needs at least one peer")
    try:
        check_parameters(peers, replication, quorum)
    except genesis_file.GenesisError as exc:
        raise DevnetError(str(exc)) from exc
    with private_umask():
        return _create(root, peers, wallets, replication, quorum, balance, decimals, fsync,
                       name or f"devnet-{secrets.token_hex(3)}", extra_accounts or [], extra_balance, ports,
                       log_level, hosts)


def _create(root: Path, peers: int, wallets: int, replication: int, quorum: int, balance: int, decimals: int,
            fsync: bool, name: str, extra_accounts: list[bytes], extra_balance: int, ports: list[int] | None,
            log_level: str, hosts: dict | None) -> Devnet:
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o700)  # it may have existed (empty) with the caller's umask
    password = secrets.token_urlsafe(18)
    keystore.write_file(root / "password.txt", password.encode() + b"\n")
    audit_token = secrets.token_urlsafe(32)
    ports = ports or free_ports(2 * peers)
    keys = [SigningKey.generate() for _ in range(peers)]
    entries = []
    for i, key in enumerate(keys):
        pname = f"peer{i}"
        pdir = root / "peers" / pname
        pdir.mkdir(parents=True)
        keystore.save(pdir / "peer.key", key, password, kind="peer", name=pname, scrypt_n=DEVNET_SCRYPT_N)
        host = hosts["addresses"][i] if hosts else "127.0.0.1"
        entries.append(PeerEntry(pname, key.public.hex(), ports[2 * i], ports[2 * i + 1], host))
    seeds = [f"{e.host}:{e.port}" for e in entries[:2]]
    sync_in_thread = disk_thread_pays(peers)
    admin_token = secrets.token_urlsafe(24)  # devnet epoch commands act as every peer's operator
    for i, entry in enumerate(entries):
        # On test hosts, peer0 listens on every address of its namespace and advertises its own.
        listen = "0.0.0.0" if hosts and i == 0 else entry.host
        text = peer_config.render(genesis="../../genesis.json", password_file="../../password.txt",
                                  listen_host=listen, advertise_host=entry.host, api_host=listen,
                                  listen_port=entry.port, api_port=entry.api_port,
                                  seeds=[s for s in seeds if s != f"{entry.host}:{entry.port}"],
                                  fsync=fsync, sync_in_thread=sync_in_thread, audit_token=audit_token,
                                  admin_token=admin_token, log_format="text")
        write_private(root / "peers" / entry.name / "peer.toml", text)
    allocations = []
    wallet_entries = []
    for directory in ("wallets", "faucet", "bench"):
        (root / directory).mkdir()
    for i in range(wallets):
        wkey, entry = _account(root / "wallets", f"demo{i}", password)
        wallet_entries.append(entry)
        allocations.append(Allocation(wkey.public, balance))
    fkey, faucet = _account(root / "faucet", "faucet", password)
    allocations.append(Allocation(fkey.public, FAUCET_BALANCE))
    funders = []
    for i in range(BENCH_FUNDERS):
        bkey, entry = _account(root / "bench", f"bench{i}", password)
        funders.append(entry)
        allocations.append(Allocation(bkey.public, BENCH_FUNDER_BALANCE))
    for account in extra_accounts:
        allocations.append(Allocation(account, extra_balance))
    genesis = Genesis(name, tuple(k.public for k in keys), replication, quorum, DEFAULT_VNODES, decimals,
                      tuple(allocations), secrets.token_bytes(16)).validate()
    write_private(root / "genesis.json", json.dumps(genesis_file.to_json(genesis), indent=2) + "\n")
    extra = {"hosts": {k: v for k, v in hosts.items() if k != "addresses"}} if hosts else {}
    devnet = Devnet(root, genesis.network_id.hex(), entries, wallet_entries, replication, quorum, extra, name,
                    audit_token, faucet, funders, log_level)
    devnet.save()
    return devnet
