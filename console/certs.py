"""Certificates checked in the console against the genesis, never on a peer's word.

`check` says whether a certificate proves its payment final (the wallet's own rule,
`wallet.verify.verify_certificate`: the sender's signature on the order, and W valid votes of
distinct owners of the sender's account, all on this network), and also looks at each vote alone so
that the page can point at the one that is wrong. `parse` accepts what people paste: the hex of the
canonical CBOR, or a wallet receipt (JSON with a `certificate` field).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from crypto.address import encode_address
from crypto.messages import Certificate
from peer.genesis import Genesis
from wallet.verify import (
    CommitteeLookup,
    VerificationError,
    checker_for,
    decode_certificate,
    verify_certificate,
)

MAX_TEXT = 64 * 1024


@dataclass(frozen=True)
class VoteCheck:
    voter: str
    owner: bool  # the voter owns the sender's account
    for_order: bool  # the vote is on this certificate's order
    signature: bool


@dataclass(frozen=True)
class Verdict:
    valid: bool
    reason: str
    payment_id: str | None = None
    sender: str | None = None
    recipient: str | None = None
    amount: int | None = None
    seq: int | None = None
    memo: str | None = None
    order_signature: bool | None = None
    votes: tuple[VoteCheck, ...] = ()


class Checker:
    """Checks certificates against one genesis (the checker caches certificates that verified)."""

    def __init__(self, genesis: Genesis, committees: CommitteeLookup | None = None) -> None:
        self.genesis = genesis
        self.checker = checker_for(genesis, committees)

    def check(self, cert: Certificate) -> Verdict:
        order = cert.order
        epoch = cert.votes[0].epoch if cert.votes else 0
        committee = self.checker.committee(epoch)
        owners = set(committee.owners(order.sender)) if committee is not None else set()
        votes = tuple(VoteCheck(v.voter.hex(), v.voter in owners, v.order_id == order.id,
                                v.signature_valid(self.genesis.network_id, order.sig)) for v in cert.votes)
        try:
            verify_certificate(cert, self.genesis, self.checker)
            valid, reason = True, (f"{len(cert.votes)} valid votes of distinct owners of the sender "
                                   f"(quorum {self.genesis.quorum}) and a valid sender signature")
        except VerificationError as exc:
            valid, reason = False, str(exc)
        return Verdict(valid, reason, order.id.hex(), encode_address(order.sender), encode_address(order.recipient),
                       order.amount, order.seq, order.memo, order.signature_valid(), votes)

    def check_hex(self, cbor_hex: str) -> Verdict:
        try:
            raw = bytes.fromhex(cbor_hex)
        except ValueError:
            return Verdict(False, "not hexadecimal")
        try:
            cert = decode_certificate(raw)
        except VerificationError as exc:
            return Verdict(False, str(exc))
        return self.check(cert)

    def check_text(self, text: str) -> Verdict:
        """What someone pasted: certificate hex, or a wallet receipt (JSON)."""
        text = text.strip()
        if len(text) > MAX_TEXT:
            return Verdict(False, f"too long to be a certificate ({len(text)} characters)")
        if text.startswith("{"):
            try:
                doc = json.loads(text)
                cbor_hex = doc["certificate"]
                if not isinstance(cbor_hex, str):
                    raise TypeError("`certificate` is not a string")
            except (json.JSONDecodeError, RecursionError, KeyError, TypeError) as exc:
                return Verdict(False, f"not a wallet receipt: {exc}")
            verdict = self.check_hex(cbor_hex)
            stated = doc.get("payment_id")
            if verdict.valid and stated is not None and stated != verdict.payment_id:
                return Verdict(False, "the receipt names another payment id than its certificate's", verdict.payment_id)
            return verdict
        return self.check_hex("".join(text.split()))
