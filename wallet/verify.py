"""Checking certificates against a genesis, and the receipt file format.

A certificate proves a payment final when its order carries a valid signature of its sender and it
holds votes from `quorum` distinct owners of the sender's account, each a valid signature on the
order's id and its exact signature bytes, all for the genesis network. The committee, replication, quorum and vnodes of the
genesis fix the owners (`peer.ring.Ring`); `peer.certify.CertificateChecker` does the vote checks.
Nothing here touches the network: `wallet verify` runs offline.

A receipt file is JSON:

    {"meshpay_receipt": 1, "network_id": "<hex>", "payment_id": "<hex>",
     "certificate": "<hex canonical CBOR of the Certificate>",
     "order": {"from", "to", "amount", "amount_text", "seq", "memo"}}

Only `certificate` is evidence; the other fields are for people and must agree with it (a receipt
whose readable fields say something else than its certificate is refused). A bare binary
certificate (canonical CBOR) is accepted too.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from crypto.address import encode_address
from crypto.errors import MeshpayError
from crypto.messages import Certificate
from peer.certify import CertificateChecker, CertificateError
from peer.committee import Committee
from peer.genesis import Genesis
from wallet.amounts import format_amount

RECEIPT_FORMAT = 1
MAX_RECEIPT_BYTES = 64 * 1024


class VerificationError(MeshpayError):
    """A certificate or receipt that does not prove what it claims (or is not one at all)."""


class UnverifiedPayment(VerificationError):
    """A peer reported a payment final without a certificate that verifies; `payment_id` names it."""

    def __init__(self, payment_id: str, message: str) -> None:
        self.payment_id = payment_id
        super().__init__(message)


CommitteeLookup = Callable[[int], Committee | None]


def genesis_committees(genesis: Genesis) -> CommitteeLookup:
    """The committee of each epoch this wallet can vouch for: only the genesis one (epoch 0) today.
    Epoch changes replace this with a lookup built by following the chain of epoch-change
    certificates from the pinned genesis; nothing else here changes."""
    return {0: Committee.from_genesis(genesis)}.get


def checker_for(genesis: Genesis, committees: CommitteeLookup | None = None) -> CertificateChecker:
    """The one place certificates are checked from: votes against the committee of their epoch."""
    return CertificateChecker(genesis.network_id, committees or genesis_committees(genesis))


def verify_certificate(cert: Certificate, genesis: Genesis, checker: CertificateChecker | None = None) -> None:
    """Raise `VerificationError` unless `cert` makes its order final on `genesis`'s network."""
    if cert.order.network != genesis.network_id:
        raise VerificationError(f"the certificate is for network {cert.order.network.hex()[:16]}, not "
                                f"{genesis.network_id.hex()[:16]} ({genesis.name})")
    if not cert.order.signature_valid():
        raise VerificationError("the order's sender signature does not verify")
    try:
        (checker or checker_for(genesis)).check(cert)
    except CertificateError as exc:
        raise VerificationError(f"the certificate's votes do not prove the payment: {exc}") from exc


def decode_certificate(raw: bytes) -> Certificate:
    try:
        return Certificate.decode(raw)
    except (MeshpayError, ValueError) as exc:
        raise VerificationError(f"not a valid certificate encoding: {exc}") from exc


def order_summary(cert: Certificate, decimals: int) -> dict[str, Any]:
    order = cert.order
    return {"from": encode_address(order.sender), "to": encode_address(order.recipient),
            "amount": order.amount, "amount_text": format_amount(order.amount, decimals),
            "seq": order.seq, "memo": order.memo}


def receipt_json(cert: Certificate, genesis: Genesis) -> dict[str, Any]:
    return {"meshpay_receipt": RECEIPT_FORMAT, "network_id": genesis.network_id.hex(),
            "payment_id": cert.id.hex(), "certificate": cert.encode().hex(),
            "order": order_summary(cert, genesis.decimals)}


def write_receipt(path: Path, cert: Certificate, genesis: Genesis) -> None:
    try:
        Path(path).write_text(json.dumps(receipt_json(cert, genesis), indent=2) + "\n")
    except OSError as exc:
        raise VerificationError(f"cannot write receipt {path}: {exc.strerror or exc}") from exc


def read_receipt(path: Path, genesis: Genesis) -> Certificate:
    """The certificate in a receipt file, checked against `genesis` (raises `VerificationError`)."""
    try:
        with Path(path).open("rb") as fh:
            data = fh.read(MAX_RECEIPT_BYTES + 1)
    except OSError as exc:
        raise VerificationError(f"cannot read receipt {path}: {exc.strerror or exc}") from exc
    if len(data) > MAX_RECEIPT_BYTES:
        raise VerificationError(f"{path} is too large to be a receipt")
    cert = _from_json(data, path, genesis) if data.lstrip()[:1] == b"{" else decode_certificate(data)
    verify_certificate(cert, genesis)
    return cert


def _from_json(data: bytes, path: Path, genesis: Genesis) -> Certificate:
    try:
        doc = json.loads(data)
        if not isinstance(doc, dict) or doc.get("meshpay_receipt") != RECEIPT_FORMAT:
            raise VerificationError(f"{path} is not a meshpay receipt (version {RECEIPT_FORMAT})")
        raw = bytes.fromhex(doc["certificate"])
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError, KeyError, TypeError, ValueError) as exc:
        raise VerificationError(f"{path} is not a readable receipt: {exc}") from exc
    cert = decode_certificate(raw)
    check_readable(doc, cert, genesis)
    return cert


def check_readable(doc: dict[str, Any], cert: Certificate, genesis: Genesis) -> None:
    """Every field a person reads must say what the certificate says (`amount_text` in the genesis
    decimals too); a field the format does not have is refused, so nothing unbacked can be shown."""
    extra = sorted(set(doc) - set(_RECEIPT_FIELDS))
    if extra:
        raise VerificationError(f"the receipt has fields its format does not: {', '.join(map(str, extra))[:200]}")
    expected = {"payment_id": cert.id.hex(), "network_id": cert.order.network.hex()}
    for key, value in expected.items():
        if key in doc and doc[key] != value:
            raise VerificationError(f"the receipt's {key.replace('_', ' ')} does not match its certificate")
    summary = doc.get("order")
    if summary is None:
        return
    if not isinstance(summary, dict):
        raise VerificationError("the receipt's order summary is malformed")
    actual = order_summary(cert, genesis.decimals)
    unknown = sorted(set(summary) - set(actual))
    if unknown:
        raise VerificationError(f"the receipt's order has fields its format does not: {', '.join(map(str, unknown))[:200]}")
    for key, value in summary.items():
        # `type(...) is` too: JSON true would otherwise pass as the amount 1
        if value != actual[key] or type(value) is not type(actual[key]):
            raise VerificationError(f"the receipt says {key} = {str(value)[:80]!r} but its certificate "
                                    f"says {actual[key]!r}")


_RECEIPT_FIELDS = ("meshpay_receipt", "network_id", "payment_id", "certificate", "order")
