"""Where the console finds its peers: a devnet directory, or API URLs given on the command line.

A devnet's `devnet.json` is read afresh on every look, so peers that `devnet restart` (or the
console itself) started are found by their current process id; it also names the peers and tells
whether each process runs, is paused (SIGSTOP) or is stopped. With URLs, the console starts from
those and learns the others from the peers' member lists (their `api` addresses).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

from devnet import processes
from devnet.layout import Devnet, DevnetError, PeerEntry


@dataclass(frozen=True)
class PeerRef:
    url: str
    name: str
    peer_id: str | None = None  # when the source knows it; otherwise learned from /v1/status
    process: str | None = None  # devnet only: running | paused | stopped


def normalize(url: str) -> str:
    url = url.strip().rstrip("/")
    return url if "://" in url else "http://" + url


def process_state(entry: PeerEntry, devnet: Devnet) -> str:
    pid = processes.live_pid(devnet, entry)
    if pid is None:
        return "stopped"
    try:  # state letter after the command name in /proc/PID/stat: T = stopped by a signal
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][:1]
    except (OSError, IndexError):
        return "running"
    return "paused" if state in ("T", "t") else "running"


class DevnetSource:
    kind = "devnet"
    discover = False  # a devnet lists every peer itself

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.devnet = Devnet.load(self.root)  # refuses a directory that holds no devnet

    @property
    def genesis_path(self) -> Path:
        return self.root / "genesis.json"

    def describe(self) -> str:
        return f"devnet {self.root}"

    def load(self) -> Devnet:
        # devnet.json is replaced atomically; if it is gone (the devnet was wiped), keep the last copy
        with contextlib.suppress(DevnetError):
            self.devnet = Devnet.load(self.root)
        return self.devnet

    def refs(self) -> list[PeerRef]:
        devnet = self.load()
        return [PeerRef(e.api, e.name, e.peer_id, process_state(e, devnet)) for e in devnet.peers]


class UrlSource:
    kind = "peers"
    genesis_path: Path | None = None

    def __init__(self, urls: list[str], *, discover: bool = True, genesis_path: Path | None = None) -> None:
        self.urls = [normalize(u) for u in urls]
        self.discover = discover
        self.genesis_path = genesis_path

    def describe(self) -> str:
        return ", ".join(self.urls) + (" and the peers they know" if self.discover else "")

    def refs(self) -> list[PeerRef]:
        return [PeerRef(u, u.split("://", 1)[1]) for u in self.urls]


Source = DevnetSource | UrlSource
