"""The genesis: a network's name, committee, replication and quorum, and initial allocations.

Its canonical CBOR encoding hashes to the network id, which every signature binds, so a genesis
names exactly one network. On disk it is JSON (addresses and hex keys people can read); the JSON is
converted to the message field by field, so the id does not depend on JSON formatting.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any

from crypto.address import decode_address, encode_address
from crypto.errors import AddressError, DecodeError, MeshpayError
from crypto.keys import Purpose
from crypto.messages import MAX_AMOUNT, Key
from crypto.schema import Bytes, ListOf, Message, Nested, Text, UInt, message

MAX_COMMITTEE = 1024
MAX_ALLOCATIONS = 20_000  # keeps a genesis within one 1 MiB message
DEFAULT_REPLICATION = 4
DEFAULT_QUORUM = 3
DEFAULT_VNODES = 256  # max/mean ownership <= 1.07 for 5-50 peers (tests/bench/settlement.py)
DEFAULT_DECIMALS = 2


class GenesisError(MeshpayError, ValueError):
    """A genesis that is malformed or unsafe."""


@message(10, max_size=64)
class Allocation(Message):
    account: Key
    amount: Annotated[int, UInt(1, MAX_AMOUNT)]


@message(11, max_size=1 << 20)
class Genesis(Message):
    name: Annotated[str, Text(64)]
    committee: Annotated[tuple[bytes, ...], ListOf(Bytes(size=32), MAX_COMMITTEE, min_len=1)]
    replication: Annotated[int, UInt(1, 64)]
    quorum: Annotated[int, UInt(1, 64)]
    vnodes: Annotated[int, UInt(1, 4096)]
    decimals: Annotated[int, UInt(0, 18)]  # how many minor units make one unit, as a power of ten
    allocations: Annotated[tuple[Allocation, ...], ListOf(Nested(Allocation), MAX_ALLOCATIONS)]
    nonce: Annotated[bytes, Bytes(size=16)]  # two networks with equal parameters still differ

    @property
    def network_id(self) -> bytes:
        return hashlib.sha256(Purpose.GENESIS.value + self.encode()).digest()

    @property
    def total_supply(self) -> int:
        return sum(a.amount for a in self.allocations)

    @property
    def faults_tolerated(self) -> int:
        """Byzantine owners per account that cannot break safety: any two quorums share 2W-N owners."""
        return 2 * self.quorum - self.replication - 1

    def validate(self) -> Genesis:
        check_parameters(len(self.committee), self.replication, self.quorum)
        if len(set(self.committee)) != len(self.committee):
            raise GenesisError("the committee lists a peer twice")
        accounts = [a.account for a in self.allocations]
        if len(set(accounts)) != len(accounts):
            raise GenesisError("an account is allocated twice")
        if self.total_supply > MAX_AMOUNT:
            raise GenesisError(f"total supply {self.total_supply} exceeds {MAX_AMOUNT}")
        return self


def check_parameters(committee_size: int, replication: int, quorum: int) -> None:
    """Refuse replication/quorum settings that are impossible or unsafe."""
    if replication < 1 or quorum < 1:
        raise GenesisError("replication and quorum must be at least 1")
    if replication > committee_size:
        raise GenesisError(f"replication {replication} exceeds the committee of {committee_size} peers")
    if quorum > replication:
        raise GenesisError(f"quorum {quorum} exceeds replication {replication}: no payment could settle")
    if 2 * quorum <= replication:
        raise GenesisError(
            f"quorum {quorum} is unsafe for replication {replication}: two quorums of {quorum} out of "
            f"{replication} owners need not overlap, so one account could be spent twice "
            f"(need quorum > {replication // 2})"
        )


def to_json(genesis: Genesis) -> dict[str, Any]:
    return {
        "meshpay_genesis": 1,
        "name": genesis.name,
        "network_id": genesis.network_id.hex(),
        "committee": [pid.hex() for pid in genesis.committee],
        "replication": genesis.replication,
        "quorum": genesis.quorum,
        "vnodes": genesis.vnodes,
        "decimals": genesis.decimals,
        "nonce": genesis.nonce.hex(),
        "allocations": [{"account": encode_address(a.account), "amount": a.amount} for a in genesis.allocations],
    }


def from_json(doc: Any) -> Genesis:
    if not isinstance(doc, dict) or doc.get("meshpay_genesis") != 1:
        raise GenesisError("not a meshpay genesis (version 1)")
    try:
        genesis = Genesis(
            doc["name"],
            tuple(bytes.fromhex(p) for p in doc["committee"]),
            doc["replication"],
            doc["quorum"],
            doc["vnodes"],
            doc["decimals"],
            tuple(Allocation(decode_address(a["account"]), a["amount"]) for a in doc["allocations"]),
            bytes.fromhex(doc["nonce"]),
        )
    except (KeyError, TypeError, ValueError, AttributeError, DecodeError, AddressError) as exc:
        raise GenesisError(f"malformed genesis: {exc}") from exc
    genesis.validate()
    stated = doc.get("network_id")
    if stated is not None and stated != genesis.network_id.hex():
        raise GenesisError(f"genesis says network {stated} but its contents hash to {genesis.network_id.hex()}")
    return genesis


def load(path: Path | str) -> Genesis:
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise GenesisError(f"genesis file {path} does not exist") from exc
    except OSError as exc:
        raise GenesisError(f"cannot read genesis {path}: {exc}") from exc
    try:
        return parse(data)
    except GenesisError as exc:
        raise GenesisError(f"genesis {path}: {exc}") from exc


def parse(data: bytes) -> Genesis:
    """A genesis from its JSON file's bytes; `GenesisError` for anything else."""
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # ValueError: also Python's int-digit limit
        raise GenesisError(f"not JSON: {str(exc)[:200]}") from exc
    return from_json(doc)


def save(path: Path | str, genesis: Genesis) -> None:
    Path(path).write_text(json.dumps(to_json(genesis), indent=2) + "\n")
