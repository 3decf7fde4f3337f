"""`devnet fund ADDRESS AMOUNT`: pay anyone from the devnet's faucet account.

The faucet is an account funded in the genesis, with its keystore in ROOT/faucet/ (a wallet
directory of its own). Paying from it goes through the wallet's own sending code, so a `fund` that
times out or is interrupted is completed (never doubled) by the next one, and the payment is
reported only with a certificate verified against the genesis. Errors exit with the wallet's
statuses (bad address 3, bad amount 4, peer unreachable 7, timeout 8...).
"""

from __future__ import annotations

from typing import Annotated

import typer

from crypto import keystore
from crypto.address import decode_address, encode_address
from crypto.errors import AddressError
from crypto.keys import SigningKey
from devnet.commands.common import (
    DirOption,
    Fail,
    JsonOption,
    amount_text,
    emit,
    first_running,
    genesis_of,
    load,
    out,
)
from peer.cli_exit import Exit
from wallet.amounts import parse_amount
from wallet.client import PeerClient
from wallet.home import WalletHome
from wallet.payments import Account

MEMO = "devnet faucet"


def register(app: typer.Typer) -> None:
    app.command()(fund)


def fund(root: DirOption,
         recipient: Annotated[str, typer.Argument(metavar="ADDRESS", help="Address to pay (or a demo wallet's name)")],
         amount: Annotated[str, typer.Argument(metavar="AMOUNT", help="Amount in units, e.g. 250 or 12.50")],
         wait: Annotated[str, typer.Option(help="Return once the payment is certified or settled")] = "settled",
         timeout: Annotated[float, typer.Option(min=0.1, max=3600, help="Seconds to wait")] = 30.0,
         json_out: JsonOption = False) -> None:
    """Pay AMOUNT to ADDRESS from the devnet's faucet (play money, as much as you like)."""
    if wait not in ("certified", "settled"):
        raise Fail("--wait must be certified or settled", Exit.USAGE)
    devnet = load(root)
    if devnet.faucet is None:
        raise Fail(f"the devnet in {devnet.root} was created before devnets had a faucet; create a new one "
                   f"(`devnet down --dir {devnet.root} --wipe`, then `devnet up`)", Exit.USAGE)
    faucet = devnet.faucet
    genesis = genesis_of(devnet)
    named = {w.name: w.address for w in devnet.wallets}
    try:
        to = decode_address(named.get(recipient, recipient).strip())
        if encode_address(to) == faucet.address:
            raise AddressError("that is the faucet's own address; pay someone else")
        minor = parse_amount(amount, genesis.decimals)
        gateway = first_running(devnet)

        def unlock() -> SigningKey:
            return keystore.load(faucet.key_file, devnet.password())

        with PeerClient(gateway.api) as client:
            outcome = Account(WalletHome(devnet.faucet_dir()), genesis, client, faucet.address).send(
                to, minor, MEMO, wait=wait, timeout=timeout, unlock=unlock)
    except Fail:
        raise
    except Exception as exc:
        failure = _as_failure(exc)
        if failure is None:
            raise
        raise failure from exc
    order = outcome.order
    doc = {"payment_id": order.id.hex(), "status": outcome.status, "from": faucet.address,
           "to": encode_address(order.recipient), "amount": order.amount,
           "amount_text": amount_text(order.amount, genesis.decimals), "gateway": gateway.api, "notes": outcome.notes}
    if json_out:
        emit(doc)
        return
    for note in outcome.notes:
        out.print(f"note: {note}", highlight=False)
    out.print(f"{outcome.status}: paid {doc['amount_text']} to {doc['to']} from the faucet (payment {doc['payment_id']})",
              highlight=False)


def _as_failure(exc: Exception) -> Fail | None:
    """The wallet's exit status and kind for a wallet error (one table for every command)."""
    from wallet.cli import classify  # the wallet CLI's own mapping: the same error, the same status

    found = classify(exc)
    if found is None:
        return None
    return Fail(str(found), found.exit_status, found.kind, **found.extra)
