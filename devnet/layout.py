"""A local devnet on disk: per-peer keys, configs and data dirs, demo wallets, one genesis.

    ROOT/
      devnet.json          what this devnet is (peers, ports, wallets) and the running pids
      genesis.json
      password.txt         the devnet's key password (0600): devnet keys guard play money only
      peers/NAME/{peer.key, peer.toml, data/, peer.log}
      wallets/NAME.key     demo wallets, funded in the genesis

Everything listens on 127.0.0.1. The layout is a library so tests and benchmarks build the same
networks as `devnet up`.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
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
DEVNET_SCRYPT_N = 1 << 12  # devnet keys hold play money; keep start-up quick


class DevnetError(MeshpayError):
    """A devnet command cannot proceed (bad directory, bad parameters, unknown peer...)."""


@dataclass
class PeerEntry:
    name: str
    peer_id: str
    port: int
    api_port: int
    pid: int | None = None

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"


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

    # ---- paths -----------------------------------------------------------------------------------
    @property
    def genesis_path(self) -> Path:
        return self.root / "genesis.json"

    @property
    def password_file(self) -> Path:
        return self.root / "password.txt"

    def peer_dir(self, name: str) -> Path:
        return self.root / "peers" / name

    def config_path(self, name: str) -> Path:
        return self.peer_dir(name) / "peer.toml"

    def log_path(self, name: str) -> Path:
        return self.peer_dir(name) / "peer.log"

    def wallet_dir(self) -> Path:
        return self.root / "wallets"

    def peer(self, name: str) -> PeerEntry:
        for p in self.peers:
            if p.name == name or (p.peer_id.startswith(name) and len(name) >= 6):
                return p
        raise DevnetError(f"no peer named {name!r} in this devnet (peers: {', '.join(p.name for p in self.peers)})")

    def password(self) -> str:
        return self.password_file.read_text().rstrip("\n")

    # ---- persistence ---------------------------------------------------------------------------
    def save(self) -> None:
        doc = {"meshpay_devnet": FORMAT, "network_id": self.network_id, "replication": self.replication,
               "quorum": self.quorum, "peers": [asdict(p) for p in self.peers],
               "wallets": [asdict(w) for w in self.wallets], "extra": self.extra}
        tmp = self.root / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(doc, indent=2) + "\n")
        os.replace(tmp, self.root / STATE_FILE)

    @classmethod
    def load(cls, root: Path) -> Devnet:
        path = Path(root) / STATE_FILE
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError as exc:
            raise DevnetError(f"no devnet in {root} (run `devnet up --dir {root}` first)") from exc
        except (OSError, json.JSONDecodeError) as exc:
            raise DevnetError(f"{path} is unreadable: {exc}") from exc
        if not isinstance(doc, dict) or doc.get("meshpay_devnet") != FORMAT:
            raise DevnetError(f"{path} is not a meshpay devnet state file")
        return cls(Path(root), doc["network_id"], [PeerEntry(**p) for p in doc["peers"]],
                   [WalletEntry(**w) for w in doc["wallets"]], doc["replication"], doc["quorum"],
                   doc.get("extra", {}))


def is_devnet(root: Path) -> bool:
    return (Path(root) / STATE_FILE).is_file()


def free_ports(count: int) -> list[int]:
    """Ports the kernel reports free on 127.0.0.1 right now (bound together so they are distinct)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def create(root: Path, *, peers: int = 5, wallets: int = 10, replication: int = 4, quorum: int = 3,
           balance: int = DEMO_BALANCE, decimals: int = DEFAULT_DECIMALS, fsync: bool = True,
           name: str = "devnet", extra_accounts: list[bytes] | None = None, extra_balance: int = 0,
           ports: list[int] | None = None) -> Devnet:
    """Write a new devnet into an empty (or missing) directory. Refuses anything else."""
    root = Path(root)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise DevnetError(f"{root} is not empty and holds no devnet; choose another --dir")
    if peers < 1 or wallets < 0:
        raise DevnetError("a devnet needs at least one peer")
    try:
        check_parameters(peers, replication, quorum)
    except genesis_file.GenesisError as exc:
        raise DevnetError(str(exc)) from exc
    root.mkdir(parents=True, exist_ok=True)
    password = secrets.token_urlsafe(18)
    keystore.write_file(root / "password.txt", password.encode() + b"\n")
    ports = ports or free_ports(2 * peers)
    keys = [SigningKey.generate() for _ in range(peers)]
    entries = []
    for i, key in enumerate(keys):
        pname = f"peer{i}"
        pdir = root / "peers" / pname
        pdir.mkdir(parents=True)
        keystore.save(pdir / "peer.key", key, password, kind="peer", name=pname, scrypt_n=DEVNET_SCRYPT_N)
        entries.append(PeerEntry(pname, key.public.hex(), ports[2 * i], ports[2 * i + 1]))
    seeds = [f"127.0.0.1:{entries[0].port}"] + ([f"127.0.0.1:{entries[1].port}"] if peers > 1 else [])
    # More peers than cores: each hand-off to a disk thread waits for the OS to schedule it among
    # busy peers, which cost ~15 ms at p99 to certified on 2 cores with 5 peers (see docs).
    sync_in_thread = peers <= (os.cpu_count() or 1)
    admin_token = secrets.token_urlsafe(24)  # devnet epoch commands act as every peer's operator
    for entry in entries:
        text = peer_config.render(genesis="../../genesis.json", password_file="../../password.txt",
                                  listen_port=entry.port, api_port=entry.api_port,
                                  seeds=[s for s in seeds if not s.endswith(f":{entry.port}")],
                                  fsync=fsync, sync_in_thread=sync_in_thread, admin_token=admin_token)
        (root / "peers" / entry.name / "peer.toml").write_text(text)
    wallet_entries = []
    (root / "wallets").mkdir()
    allocations = []
    for i in range(wallets):
        wkey = SigningKey.generate()
        wname = f"demo{i}"
        path = root / "wallets" / f"{wname}.key"
        keystore.save(path, wkey, password, kind="account", name=wname, scrypt_n=DEVNET_SCRYPT_N)
        wallet_entries.append(WalletEntry(wname, encode_address(wkey.public), str(path)))
        allocations.append(Allocation(wkey.public, balance))
    for account in extra_accounts or []:
        allocations.append(Allocation(account, extra_balance))
    genesis = Genesis(name, tuple(k.public for k in keys), replication, quorum, DEFAULT_VNODES, decimals,
                      tuple(allocations), secrets.token_bytes(16)).validate()
    genesis_file.save(root / "genesis.json", genesis)
    devnet = Devnet(root, genesis.network_id.hex(), entries, wallet_entries, replication, quorum)
    devnet.save()
    return devnet
