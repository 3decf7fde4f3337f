"""The chain of epoch certificates a wallet keeps, followed from its pinned genesis (light-client style).

The genesis fixes the committee of epoch 0; each epoch certificate, approved by more than two thirds
of the committee before it, fixes the next (docs/protocol.md section 11.1). A wallet that pinned the
genesis and checks every link in order (`peer.epoch_chain.Chain.extend`) knows the committee of every
epoch without trusting any peer, so it can verify a certificate of any epoch and find the current
owners of an account.

    WALLET_DIR/epochs/NETID.json   {"meshpay_epochs": 1, "network_id": "<hex>",
                                    "certificates": ["<hex CBOR of epoch 1>", ...]}

The stored links are checked again whenever the file is read (it is only a cache of what peers
proved). Missing links are fetched from a peer's `GET /v1/epochs`; a peer that serves a link that
does not follow is an error naming that peer (the links before it, each checked, are kept).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from crypto.errors import MeshpayError
from peer.certify import CertificateChecker
from peer.committee import Committee
from peer.epoch_chain import Chain, EpochCertificate, EpochError
from peer.genesis import Genesis
from wallet.client import BadAnswer, PeerClient
from wallet.home import WalletHome, atomic_write
from wallet.verify import VerificationError

CHAIN_FORMAT = 1
PAGE = 16  # the peers' page size for /v1/epochs
MAX_PAGES = 100_000  # bounds the fetch loop: 1.6 million epochs


class ChainError(VerificationError):
    """A chain of epoch certificates that does not follow from the genesis; `source` names who gave it."""

    def __init__(self, source: str, message: str) -> None:
        self.source = source
        super().__init__(f"{source}: {message}")


def chain_path(home: WalletHome, network_id: bytes) -> Path:
    return home.root / "epochs" / f"{network_id.hex()[:16]}.json"


def follow(chain: Chain, certs: list[EpochCertificate], source: str) -> int:
    """Append the certificates newer than `chain`'s head, checking each link; how many were new."""
    before = chain.epoch
    for cert in certs:
        try:
            chain.extend_all([cert])
        except EpochError as exc:
            raise ChainError(source, f"the certificate of epoch {cert.epoch} does not follow the chain: {exc}") from exc
    return chain.epoch - before


def load(home: WalletHome, genesis: Genesis) -> Chain:
    """The stored chain, every link checked again from the genesis (just the genesis if none is stored)."""
    chain = Chain.from_genesis(genesis)
    path = chain_path(home, genesis.network_id)
    if not path.exists():
        return chain
    try:
        doc: Any = json.loads(path.read_text())
        if doc.get("meshpay_epochs") != CHAIN_FORMAT or doc.get("network_id") != genesis.network_id.hex():
            raise ValueError("not this network's epoch chain")
        certs = [EpochCertificate.decode(bytes.fromhex(raw)) for raw in doc["certificates"]]
    except (OSError, ValueError, KeyError, TypeError, AttributeError, MeshpayError) as exc:
        raise ChainError(str(path), f"unreadable epoch chain ({exc}); move it away and the wallet fetches the "
                         "chain from a peer again") from exc
    follow(chain, certs, str(path))
    return chain


def save(home: WalletHome, chain: Chain) -> None:
    path = chain_path(home, chain.network)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    doc = {"meshpay_epochs": CHAIN_FORMAT, "network_id": chain.network.hex(),
           "certificates": [c.encode().hex() for c in chain.certificates]}
    atomic_write(path, json.dumps(doc, indent=1).encode() + b"\n")


def fetch(client: PeerClient, chain: Chain) -> int:
    """Extend `chain` with every newer link `client`'s peer serves; how many epochs were added.

    Links are checked as they arrive; a peer that serves a bad link, or claims an epoch it does not
    prove, raises `ChainError` naming it.
    """
    added = 0
    claimed = chain.epoch
    for _ in range(MAX_PAGES):
        doc = client.get(f"/v1/epochs?from={chain.epoch + 1}&limit={PAGE}")
        try:
            claimed = max(claimed, int(doc["epoch"]))
            rows = doc["certificates"]
            certs = [EpochCertificate.decode(bytes.fromhex(row["cbor"])) for row in rows]
            more = doc.get("next_from") is not None
        except (KeyError, TypeError, ValueError, MeshpayError) as exc:
            raise ChainError(client.url, f"served an epoch chain the wallet cannot read: {exc}") from exc
        if certs and certs[0].epoch != chain.epoch + 1:
            raise ChainError(client.url, f"asked for epochs from {chain.epoch + 1}, it served epoch {certs[0].epoch}")
        added += follow(chain, certs, client.url)
        if not more or not certs:
            break
    else:
        raise BadAnswer(client.url, "its epoch chain did not end")
    if chain.epoch < claimed:
        raise ChainError(client.url, f"says the network is in epoch {claimed} but proved only up to epoch {chain.epoch}")
    return added


class WalletChain:
    """The wallet's chain for one network: read from its directory, extended from a peer when a later
    epoch is needed (`refresh`, or a certificate whose votes name an epoch not known yet)."""

    def __init__(self, home: WalletHome, genesis: Genesis, peer_url: str | None) -> None:
        self.home = home
        self.genesis = genesis
        self.peer_url = peer_url
        self.chain = load(home, genesis)
        self._fetched = False

    @property
    def current(self) -> Committee:
        return self.chain.current

    def refresh(self) -> None:
        """Fetch the links the peer knows and this wallet does not (once per command)."""
        if self._fetched or self.peer_url is None:
            return
        self._fetched = True
        with PeerClient(self.peer_url, known_peers=self.home.known_peers()) as client:
            if fetch(client, self.chain):
                save(self.home, self.chain)

    def committee(self, epoch: int) -> Committee | None:
        if epoch > self.chain.epoch:
            self.refresh()
        return self.chain.committee(epoch)

    def checker(self) -> CertificateChecker:
        return CertificateChecker(self.genesis.network_id, self.committee)
