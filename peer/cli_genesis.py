"""`peer genesis`: create and inspect a network's genesis outside a devnet.

An operator collects every founding peer's id (`peer id`), decides the initial allocations, and
writes one genesis file that every peer and wallet of the network then uses (its hash is the
network id, so every copy must be byte-for-byte the same file or at least the same content).
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Annotated

import typer

from crypto.address import decode_address, encode_address
from crypto.errors import AddressError
from crypto.keys import is_on_curve, is_weak_key
from peer import genesis as genesis_file
from peer.cli_exit import EXIT_USAGE, CliFailure
from peer.genesis import (
    DEFAULT_DECIMALS,
    DEFAULT_QUORUM,
    DEFAULT_REPLICATION,
    DEFAULT_VNODES,
    Allocation,
    Genesis,
    GenesisError,
)
from wallet.amounts import AmountError, format_amount, parse_amount

app = typer.Typer(help="Create and inspect a network's genesis file.", no_args_is_help=True)


def _member(text: str) -> bytes:
    try:
        raw = bytes.fromhex(text)
    except ValueError as exc:
        raise CliFailure(f"--member {text!r} is not a peer id (64 hex digits, from `peer id`)",
                         EXIT_USAGE) from exc
    if len(raw) != 32:
        raise CliFailure(f"--member {text!r} is not a peer id (64 hex digits, from `peer id`)", EXIT_USAGE)
    if is_weak_key(raw) or not is_on_curve(raw):
        raise CliFailure(f"--member {text[:16]}… is not a usable Ed25519 public key", EXIT_USAGE)
    return raw


def _allocation(text: str, decimals: int) -> Allocation:
    address, sep, amount = text.partition("=")
    if not sep:
        raise CliFailure(f"--alloc {text!r} must be ADDRESS=AMOUNT", EXIT_USAGE)
    try:
        return Allocation(decode_address(address.strip()), parse_amount(amount.strip(), decimals))
    except (AddressError, AmountError) as exc:
        raise CliFailure(f"--alloc {text!r}: {exc}", EXIT_USAGE) from exc


@app.command()
def create(
    name: Annotated[str, typer.Option(help="The network's name (shown to wallets; up to 64 characters)")],
    member: Annotated[list[str], typer.Option(help="A founding committee member's peer id (repeat)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the genesis")] = Path("genesis.json"),
    alloc: Annotated[list[str] | None, typer.Option(
        help="Initial balance ADDRESS=AMOUNT, the amount in units with up to --decimals decimals (repeat)")] = None,
    replication: Annotated[int, typer.Option(help="Owners per account (N)")] = DEFAULT_REPLICATION,
    quorum: Annotated[int, typer.Option(help="Votes that certify a payment (W)")] = DEFAULT_QUORUM,
    decimals: Annotated[int, typer.Option(min=0, max=18, help="Decimal places of the unit")] = DEFAULT_DECIMALS,
    vnodes: Annotated[int, typer.Option(min=1, max=4096, help="Ring points per member")] = DEFAULT_VNODES,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
) -> None:
    """Write a new genesis (committee, N, W, allocations); refuses unsafe or malformed parameters."""
    if out.exists():
        raise CliFailure(f"{out} already exists; refusing to overwrite a genesis", EXIT_USAGE)
    members = tuple(sorted({_member(m) for m in member}))
    allocations = tuple(_allocation(a, decimals) for a in alloc or [])
    try:
        genesis = Genesis(name, members, replication, quorum, vnodes, decimals, allocations,
                          secrets.token_bytes(16)).validate()
    except (GenesisError, ValueError) as exc:
        raise CliFailure(str(exc), EXIT_USAGE) from exc
    genesis_file.save(out, genesis)
    _report(genesis, out, json_out)


@app.command()
def show(path: Annotated[Path, typer.Argument(help="A genesis file")] = Path("genesis.json"),
         json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False) -> None:
    """Check a genesis file and print its network id, committee and parameters."""
    try:
        genesis = genesis_file.load(path)
    except GenesisError as exc:
        raise CliFailure(str(exc), EXIT_USAGE) from exc
    _report(genesis, path, json_out)


def _report(genesis: Genesis, path: Path, json_out: bool) -> None:
    doc = {"file": str(path), "name": genesis.name, "network_id": genesis.network_id.hex(),
           "committee": [m.hex() for m in genesis.committee], "replication": genesis.replication,
           "quorum": genesis.quorum, "faults_tolerated": genesis.faults_tolerated,
           "decimals": genesis.decimals, "vnodes": genesis.vnodes,
           "allocations": len(genesis.allocations),
           "total_supply": format_amount(genesis.total_supply, genesis.decimals)}
    if json_out:
        print(json.dumps(doc))
        return
    print(f"genesis     {path}\nnetwork     {genesis.name} {doc['network_id']}")
    print(f"committee   {len(genesis.committee)} peers; N = {genesis.replication} owners per account, "
          f"W = {genesis.quorum} votes certify (tolerates {genesis.faults_tolerated} Byzantine owner(s))")
    for m in genesis.committee:
        print(f"  {m.hex()}")
    print(f"supply      {doc['total_supply']} in {len(genesis.allocations)} allocation(s)")
    for a in genesis.allocations[:20]:
        print(f"  {encode_address(a.account)}  {format_amount(a.amount, genesis.decimals)}")
