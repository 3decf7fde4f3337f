"""The wallet's chain of epoch certificates (wallet/chain.py): followed link by link from the pinned
genesis, kept in the wallet directory and checked again on every read, fetched page by page from a
peer; a peer that serves a forged link, or claims an epoch it does not prove, is an error naming it;
a certificate of a later epoch verifies only through the chain."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import httpx
import pytest

from crypto.keys import SigningKey
from crypto.messages import Certificate, Order, Vote
from peer.api_epoch import epoch_cert_json
from peer.epoch_chain import Chain, EpochApproval, EpochCertificate, EpochChange
from peer.genesis import Genesis
from wallet import chain as wallet_chain
from wallet.chain import ChainError, WalletChain
from wallet.client import PeerClient
from wallet.home import WalletHome
from wallet.verify import VerificationError, verify_certificate


def key(label: str) -> SigningKey:
    return SigningKey.from_seed(hashlib.sha256(b"wallet-chain/" + label.encode()).digest())


PEERS = [key(f"peer{i}") for i in range(8)]
BY_ID = {k.public: k for k in PEERS}
GENESIS = Genesis("chain", tuple(k.public for k in PEERS[:5]), 4, 3, 64, 2, (), bytes(16)).validate()
NET = GENESIS.network_id
URL = "http://peer.test:8000"


def grow(chain: Chain, members: list[bytes], signers: list[bytes] | None = None) -> EpochCertificate:
    ch = EpochChange(NET, chain.epoch + 1, chain.head_id(), tuple(sorted(members)), 4, 3, 64,
                     chain.current.members[0], 0, "test")
    approvers = signers if signers is not None else list(chain.current.members)
    return EpochCertificate(ch, tuple(EpochApproval.create(BY_ID[s], NET, ch.id) for s in approvers))


def two_epochs() -> Chain:
    """Epoch 1 adds two peers, epoch 2 removes the first genesis member."""
    chain = Chain.from_genesis(GENESIS)
    chain.extend(grow(chain, [k.public for k in PEERS[:7]]))
    chain.extend(grow(chain, [k.public for k in PEERS[1:7]]))
    return chain


def epoch_cert(chain: Chain, epoch: int) -> Certificate:
    sender, recipient = key("alice"), key("bob")
    order = Order.create(sender, NET, recipient.public, 5, 0)
    owners = chain.committee(epoch).owners(sender.public)
    return Certificate(order, tuple(Vote.create(BY_ID[o], NET, order, epoch) for o in owners[:3]))


def serving(certs: list[EpochCertificate], *, claimed: int | None = None, page: int = 2) -> PeerClient:
    """A client whose peer serves `certs` through GET /v1/epochs, `page` at a time."""
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/epochs"
        first = int(request.url.params["from"])
        rows = certs[first - 1:first - 1 + page]
        more = first - 1 + page < len(certs)
        return httpx.Response(200, json={"network_id": NET.hex(), "epoch": len(certs) if claimed is None else claimed,
                                         "from": first, "certificates": [epoch_cert_json(c) for c in rows],
                                         "next_from": first + page if more else None})
    return PeerClient(URL, transport=httpx.MockTransport(handler))


def test_a_certificate_of_epoch_2_verifies_only_through_the_chain(tmp_path: Path) -> None:
    truth = two_epochs()
    cert = epoch_cert(truth, 2)
    with pytest.raises(VerificationError, match="epoch 2"):
        verify_certificate(cert, GENESIS)  # the genesis alone knows epoch 0 only
    home = WalletHome(tmp_path)
    chain = Chain.from_genesis(GENESIS)
    with serving(truth.certificates, page=1) as client:
        assert wallet_chain.fetch(client, chain) == 2
    wallet_chain.save(home, chain)
    # A new command reads the stored chain (checking every link again) and verifies offline.
    stored = WalletChain(home, GENESIS, peer_url=None)
    assert stored.chain.epoch == 2 and stored.current.members == truth.current.members
    verify_certificate(cert, GENESIS, stored.checker())


@pytest.mark.parametrize("forgery", ["outsider_approval", "too_few", "bad_signature", "wrong_prev"])
def test_a_peer_serving_a_forged_link_is_named_and_nothing_after_it_is_kept(forgery: str) -> None:
    truth = two_epochs()
    first, second = truth.certificates
    members = list(truth.committee(1).members)
    if forgery == "outsider_approval":  # the peer removed in epoch 2 is replaced by an outsider's approval
        outsider = key("outsider")
        BY_ID[outsider.public] = outsider
        bad = grow(_prefix(truth, 1), [k.public for k in PEERS[1:7]], [*members[:4], outsider.public])
    elif forgery == "too_few":
        bad = grow(_prefix(truth, 1), [k.public for k in PEERS[1:7]], members[:4])  # 4 of 7 is not > 2/3
    elif forgery == "bad_signature":
        forged = dataclasses.replace(second.approvals[0], sig=bytes(64))
        bad = dataclasses.replace(second, approvals=(forged, *second.approvals[1:5]))  # 5 of 7, one of them bad
    else:
        change = dataclasses.replace(second.change, prev=bytes(32))
        bad = EpochCertificate(change, tuple(EpochApproval.create(BY_ID[s], NET, change.id) for s in members))
    chain = Chain.from_genesis(GENESIS)
    with serving([first, bad]) as client, pytest.raises(ChainError) as caught:
        wallet_chain.fetch(client, chain)
    assert caught.value.source == URL and URL in str(caught.value) and "epoch 2" in str(caught.value)
    assert chain.epoch == 1  # the valid first link is kept, the forged one is not


def _prefix(chain: Chain, epochs: int) -> Chain:
    copy = Chain.from_genesis(GENESIS)
    copy.extend_all(chain.certificates[:epochs])
    return copy


def test_a_peer_claiming_an_epoch_it_does_not_prove_is_named() -> None:
    truth = two_epochs()
    chain = Chain.from_genesis(GENESIS)
    with serving(truth.certificates[:1], claimed=2) as client, pytest.raises(ChainError, match="proved only up to epoch 1"):
        wallet_chain.fetch(client, chain)


def test_a_tampered_stored_chain_is_refused_naming_the_file(tmp_path: Path) -> None:
    home = WalletHome(tmp_path)
    wallet_chain.save(home, two_epochs())
    path = wallet_chain.chain_path(home, NET)
    doc = json.loads(path.read_text())
    forged = grow(_prefix(two_epochs(), 1), [k.public for k in PEERS[2:7]], list(two_epochs().committee(1).members[:4]))
    doc["certificates"][1] = forged.encode().hex()
    path.write_text(json.dumps(doc))
    with pytest.raises(ChainError) as caught:
        WalletChain(home, GENESIS, peer_url=None)
    assert str(path) in str(caught.value)
    path.write_text("not json")
    with pytest.raises(ChainError, match="unreadable epoch chain"):
        wallet_chain.load(home, GENESIS)


def test_without_a_stored_chain_the_wallet_knows_the_genesis_committee(tmp_path: Path) -> None:
    chain = WalletChain(WalletHome(tmp_path), GENESIS, peer_url=None)
    assert chain.chain.epoch == 0 and chain.current.members == GENESIS.committee
    assert chain.committee(1) is None  # and with no peer to ask, a later epoch stays unknown
    with pytest.raises(VerificationError, match="unknown"):
        verify_certificate(epoch_cert(two_epochs(), 1), GENESIS, chain.checker())
