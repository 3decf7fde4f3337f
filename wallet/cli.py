"""The `wallet` command: keys, balances and payments on a meshpay network.

Every command takes `--json` (one JSON object on stdout; errors also go to stdout as
`{"error": {"kind", "exit_status", "message", ...}}` besides the plain message on stderr).
Options that can come from the environment: `--wallet-dir` MESHPAY_WALLET_DIR, `--peer`
MESHPAY_PEER, `--genesis` MESHPAY_GENESIS, `--account` MESHPAY_WALLET_ACCOUNT, `--password-file`
MESHPAY_WALLET_PASSWORD_FILE; the password itself may be in MESHPAY_WALLET_PASSWORD. Passwords are
never echoed, printed or logged.

Exit status (stable; scripts may rely on it):

    0  success
    1  unexpected error (a bug: please report it)
    2  usage: bad arguments, unknown account, unreadable or damaged local file, no password
    3  bad address (checksum, length, prefix; or paying yourself)
    4  bad amount (format, zero, negative, too many decimals, too large)
    5  insufficient funds
    6  conflicting pending payment (its payment id is printed)
    7  peer unreachable or not serving (names it and suggests another peer)
    8  timeout: the payment was not certified/settled in time (its payment id is printed)
    9  wrong password
    10 refused by the owners or the peer for another reason (the API's error code is printed)
    11 verification failed: a certificate or receipt does not prove the payment
    12 network mismatch: the peer serves another network than the wallet's genesis

`main()` turns exceptions into these codes; the commands only raise.
"""

from __future__ import annotations

import contextlib
import enum
import getpass
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from crypto import keystore
from crypto.address import decode_address, encode_address
from crypto.errors import AddressError, KeystoreError, MeshpayError, WrongPassword
from crypto.keys import SigningKey
from crypto.messages import MAX_MEMO_BYTES, Certificate, Order
from peer import genesis as genesis_file
from peer.genesis import Genesis, GenesisError
from wallet.amounts import AmountError, format_amount, parse_amount
from wallet.chain import WalletChain
from wallet.client import (
    DEFAULT_PEER,
    BadAnswer,
    ClientError,
    PeerClient,
    PeerUnreachable,
    Refused,
    Timeout,
)
from wallet.home import ENV_DIR, WalletFileError, WalletHome, default_dir
from wallet.payments import Account, ConflictingPending, Found, InsufficientFunds, Network, Outcome
from wallet.verify import (
    UnverifiedPayment,
    VerificationError,
    read_receipt,
    verify_certificate,
    write_receipt,
)

EXIT_UNEXPECTED, EXIT_USAGE, EXIT_ADDRESS, EXIT_AMOUNT, EXIT_FUNDS, EXIT_PENDING = 1, 2, 3, 4, 5, 6
EXIT_UNREACHABLE, EXIT_TIMEOUT, EXIT_PASSWORD, EXIT_REFUSED, EXIT_INVALID, EXIT_NETWORK = 7, 8, 9, 10, 11, 12
ENV_PASSWORD = "MESHPAY_WALLET_PASSWORD"
ENV_NEW_PASSWORD = "MESHPAY_WALLET_NEW_PASSWORD"
MAX_TIMEOUT = 3600.0

app = typer.Typer(help="Move money on a meshpay network: keys, balances, payments, receipts.",
                  no_args_is_help=True, add_completion=False)
out = Console(soft_wrap=True, highlight=False)
err = Console(stderr=True, soft_wrap=True, highlight=False)


class Fail(MeshpayError):
    """An error with its exit status and (for --json) a kind and extra fields."""

    def __init__(self, message: str, exit_status: int, kind: str = "error", **extra: Any) -> None:
        super().__init__(message)
        self.exit_status, self.kind, self.extra = exit_status, kind, extra


class NetworkMismatch(MeshpayError):
    pass


class Wait(enum.StrEnum):
    none = "none"
    certified = "certified"
    settled = "settled"


class _Mode:
    json = False  # whether the running command was asked for --json (main() formats errors by it)


# ---- option types --------------------------------------------------------------------------------
WalletDir = Annotated[Path | None, typer.Option("--wallet-dir", envvar=ENV_DIR, show_default=False,
                                               help="Wallet directory [default: the user data dir]")]
PeerUrl = Annotated[str, typer.Option("--peer", envvar="MESHPAY_PEER", help="The peer's HTTP API URL")]
GenesisPath = Annotated[Path | None, typer.Option("--genesis", envvar="MESHPAY_GENESIS",
                                                  help="Trust this genesis file [default: the pinned one]")]
JsonOut = Annotated[bool, typer.Option("--json", help="Machine-readable output")]
AccountName = Annotated[str | None, typer.Option("--account", "-a", envvar="MESHPAY_WALLET_ACCOUNT",
                                                 help="Account (keystore) name [default: the only one]")]
PasswordFile = Annotated[Path | None, typer.Option("--password-file", envvar="MESHPAY_WALLET_PASSWORD_FILE",
                                                   help=f"Read the password from this file [or {ENV_PASSWORD}]")]


# ---- helpers ---------------------------------------------------------------------------------------
def _mode(json_out: bool) -> None:
    _Mode.json = json_out


def _emit(doc: dict[str, Any], lines: list[str]) -> None:
    if _Mode.json:
        sys.stdout.write(json.dumps(doc) + "\n")
    else:
        for line in lines:
            out.print(line, markup=False)


def _warn(text: str) -> None:
    err.print(f"warning: {text}", markup=False)


def _home(wallet_dir: Path | None) -> WalletHome:
    return WalletHome(wallet_dir or default_dir())


def _read_secret(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise Fail(f"cannot read password file {path}: {reason}", EXIT_USAGE, "usage") from exc
    return text[:-2] if text.endswith("\r\n") else text[:-1] if text.endswith("\n") else text


def read_password(password_file: Path | None, *, confirm: bool = False, what: str = "the account key",
                  env: str = ENV_PASSWORD) -> str:
    """From --password-file, then the environment, then a prompt (getpass: never echoed)."""
    if password_file is not None:
        password = _read_secret(password_file)
    elif os.environ.get(env) is not None:
        password = os.environ[env]
    elif sys.stdin.isatty():
        password = getpass.getpass(f"Password for {what}: ")
        if confirm and getpass.getpass("Repeat the password: ") != password:
            raise Fail("the passwords do not match", EXIT_USAGE, "usage")
    else:
        raise Fail(f"no password: use --password-file, set {env}, or run in a terminal", EXIT_USAGE, "usage")
    if confirm and not password:
        raise Fail("refusing an empty password", EXIT_USAGE, "usage")
    return password


def _local_genesis(home: WalletHome, genesis_path: Path | None) -> Genesis | None:
    if genesis_path is not None:
        return genesis_file.load(genesis_path)
    return home.pinned_genesis()


@contextmanager
def _connect(home: WalletHome, peer: str, genesis: Genesis | None) -> Iterator[tuple[Genesis, PeerClient, WalletChain]]:
    """A client for `peer`, after checking it serves the wallet's network (pinning its genesis if the
    wallet has none yet), and refreshing the list of peers used to suggest another one and the chain
    of epoch certificates (the current committee owns the accounts)."""
    with PeerClient(peer, known_peers=home.known_peers()) as client:
        status = client.status()
        if genesis is None:
            genesis = client.genesis()
            if genesis.network_id.hex() != status.get("network_id"):
                raise BadAnswer(client.url, "its genesis does not hash to the network id it reports")
            home.pin_genesis(genesis)
            err.print(f"notice: pinned the genesis of network {genesis.name!r} (id {genesis.network_id.hex()[:16]}…) "
                      f"from {client.url} in {home.genesis_path}; this wallet now trusts that network only",
                      markup=False)
        if status.get("network_id") != genesis.network_id.hex():
            raise NetworkMismatch(f"peer {client.url} serves network {str(status.get('network_id'))[:16]}… "
                                  f"({status.get('network')}), but the wallet's genesis is network "
                                  f"{genesis.network_id.hex()[:16]}… ({genesis.name}); refusing to use it")
        rows = client.peers()
        alive = [r["api"] for r in rows if isinstance(r, dict) and r.get("api") and r.get("state") == "alive"]
        home.remember_peers([client.url, *[a for a in alive if a.rstrip("/") != client.url]])
        chain = WalletChain(home, genesis, client.url)
        chain.refresh()
        yield genesis, client, chain


def _account_address(home: WalletHome, name: str | None) -> tuple[str, str]:
    chosen = home.choose(name)
    return chosen, encode_address(home.info(chosen).public_key)


def _unlocker(home: WalletHome, name: str, password_file: Path | None) -> Callable[[], SigningKey]:
    """The key, opened only when a new order must be signed (a re-submission needs no password)."""
    def unlock() -> SigningKey:
        data = home.read_key(name)
        return keystore.unseal(data, read_password(password_file, what=f"account {name!r}"))

    return unlock


def _payment_id(text: str) -> str:
    candidate = text.strip().lower()
    try:
        ok = len(bytes.fromhex(candidate)) == 32
    except ValueError:
        ok = False
    if not ok:
        raise Fail(f"{text!r} is not a payment id (64 hex characters)", EXIT_USAGE, "usage")
    return candidate


def _payment_doc(genesis: Genesis, status: str, cert: Certificate | None, order: Order, **extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"payment_id": order.id.hex(), "status": status, "from": encode_address(order.sender),
                           "to": encode_address(order.recipient), "amount": order.amount,
                           "amount_text": format_amount(order.amount, genesis.decimals), "seq": order.seq,
                           "memo": order.memo, "verified": cert is not None,
                           "votes": [v.voter.hex() for v in cert.votes] if cert else [],
                           "certificate": cert.encode().hex() if cert else None}
    doc.update(extra)
    return doc


# ---- keys -----------------------------------------------------------------------------------------
@app.command()
def new(name: Annotated[str, typer.Argument(help="Name of the new account")],
        wallet_dir: WalletDir = None, password_file: PasswordFile = None, json_out: JsonOut = False) -> None:
    """Create an account: a new Ed25519 key in an encrypted keystore NAME.key."""
    _mode(json_out)
    home = _home(wallet_dir)
    if home.key_path(name).exists():
        raise Fail(f"an account named {name!r} already exists in {home.root}", EXIT_USAGE, "usage")
    password = read_password(password_file, confirm=True, what=f"the new account {name!r}")
    key = SigningKey.generate()
    path = home.write_key(name, keystore.seal(key, password, kind="account", name=name))
    address = encode_address(key.public)
    _emit({"name": name, "address": address, "key_file": str(path)},
          [f"created account {name}", f"address   {address}", f"key file  {path}"])


@app.command("list")
def list_accounts(wallet_dir: WalletDir = None, json_out: JsonOut = False) -> None:
    """List the accounts (no password needed)."""
    _mode(json_out)
    home = _home(wallet_dir)
    rows = []
    for name in home.names():
        try:
            rows.append({"name": name, "address": encode_address(home.info(name).public_key),
                         "key_file": str(home.key_path(name))})
        except (KeystoreError, WalletFileError) as exc:
            rows.append({"name": name, "address": None, "key_file": str(home.key_path(name)), "problem": str(exc)})
    width = max((len(r["name"]) for r in rows), default=4)
    lines = [f"{r['name']:<{width}}  {r['address'] or '(unusable: ' + r['problem'] + ')'}" for r in rows]
    _emit({"wallet_dir": str(home.root), "accounts": rows}, lines or [f"no accounts in {home.root}"])


@app.command()
def address(name: Annotated[str | None, typer.Argument(help="Account name [default: --account / the only one]")] = None,
            account: AccountName = None, wallet_dir: WalletDir = None, json_out: JsonOut = False) -> None:
    """Print an account's address."""
    _mode(json_out)
    chosen, addr = _account_address(_home(wallet_dir), name or account)
    _emit({"name": chosen, "address": addr}, [addr])


@app.command("import")
def import_key(file: Annotated[Path, typer.Argument(help="An encrypted account keystore file")],
               name: Annotated[str | None, typer.Option(help="Account name [default: the keystore's own]")] = None,
               wallet_dir: WalletDir = None, password_file: PasswordFile = None, json_out: JsonOut = False) -> None:
    """Import a keystore file (checked with its password, stored as is)."""
    _mode(json_out)
    home = _home(wallet_dir)
    try:
        with file.open("rb") as fh:
            data = fh.read(keystore.MAX_FILE_SIZE + 1)
    except OSError as exc:
        raise Fail(f"cannot read {file}: {exc.strerror or exc}", EXIT_USAGE, "usage") from exc
    found = keystore.info(data)
    if found.kind != "account":
        raise Fail(f"{file} holds a {found.kind} key, not an account key", EXIT_USAGE, "usage")
    chosen = name or found.name or file.stem
    home.check_name(chosen)
    if home.key_path(chosen).exists():
        raise Fail(f"an account named {chosen!r} already exists in {home.root}; pass --name", EXIT_USAGE, "usage")
    keystore.unseal(data, read_password(password_file, what=f"the keystore {file.name}"))  # proves it is usable
    path = home.write_key(chosen, data)
    addr = encode_address(found.public_key)
    _emit({"name": chosen, "address": addr, "key_file": str(path)}, [f"imported account {chosen}", f"address   {addr}"])


@app.command()
def export(name: Annotated[str, typer.Argument(help="Account to export")],
           output: Annotated[Path, typer.Option("--output", "-o", help="Keystore file to write")],
           new_password_file: Annotated[Path | None, typer.Option(
               help=f"Password for the exported file [or {ENV_NEW_PASSWORD}; default: unchanged]")] = None,
           wallet_dir: WalletDir = None, password_file: PasswordFile = None, json_out: JsonOut = False) -> None:
    """Write an account's key to an encrypted keystore file (optionally under a new password)."""
    _mode(json_out)
    home = _home(wallet_dir)
    data = home.read_key(name)
    password = read_password(password_file, what=f"account {name!r}")
    key = keystore.unseal(data, password)
    if new_password_file is not None or os.environ.get(ENV_NEW_PASSWORD) is not None:
        password = read_password(new_password_file, confirm=True, env=ENV_NEW_PASSWORD)
    elif sys.stdin.isatty():
        fresh = getpass.getpass("Password for the exported file (empty: keep the current one): ")
        if fresh:
            if getpass.getpass("Repeat the password: ") != fresh:
                raise Fail("the passwords do not match", EXIT_USAGE, "usage")
            password = fresh
    keystore.write_file(output, keystore.seal(key, password, kind="account", name=name))
    addr = encode_address(key.public)
    _emit({"name": name, "address": addr, "file": str(output)}, [f"exported account {name} ({addr}) to {output}"])


# ---- money ----------------------------------------------------------------------------------------
@app.command()
def balance(address_arg: Annotated[str | None, typer.Argument(metavar="[ADDRESS]",
                                                                help="Any address [default: your account]")] = None,
            account: AccountName = None, peer: PeerUrl = DEFAULT_PEER, genesis: GenesisPath = None,
            wallet_dir: WalletDir = None, json_out: JsonOut = False) -> None:
    """An account's balance, read from all its owners and cross-checked."""
    _mode(json_out)
    home = _home(wallet_dir)
    target = address_arg.strip() if address_arg else _account_address(home, account)[1]
    raw = decode_address(target)
    with _connect(home, peer, _local_genesis(home, genesis)) as (gen, client, chain):
        reading = Network(gen, client, chain).read(raw)
    view, agree = reading.agreed()
    assert view is not None
    dec = gen.decimals
    views = [{"peer_id": v.peer_id.hex(), "api": v.url, "balance": v.balance,
              "balance_text": format_amount(v.balance, dec), "next_seq": v.next_seq, "credits": v.credits}
             for v in reading.answered]
    errors = {pid.hex(): why for pid, why in reading.errors.items()}
    doc = {"address": target, "balance": view.balance, "balance_text": format_amount(view.balance, dec),
           "next_seq": view.next_seq, "owners": len(reading.owners), "answered": len(reading.answered),
           "agree": agree, "confirmed": reading.confirmed, "consistent": reading.consistent,
           "views": views, "errors": errors}
    if not reading.consistent:
        differing = [v for v in reading.answered if v.summary() != view.summary()]
        if differing:
            _warn("the owners disagree: " + "; ".join(
                f"{v.peer_id.hex()[:12]} at {v.url} says {format_amount(v.balance, dec)} (next seq {v.next_seq})"
                for v in differing) + f"; showing the view {agree} of them share")
        for pid, why in reading.errors.items():
            _warn(f"owner {pid.hex()[:12]} did not answer: {why}")
        if not reading.confirmed:
            _warn(f"only {agree} of {len(reading.owners)} owners agree (a quorum is {gen.quorum}): "
                  "this balance is not confirmed")
    _emit(doc, [f"{format_amount(view.balance, dec)}  ({target}; {agree} of {len(reading.owners)} owners agree"
                f"{'' if reading.confirmed else ', NOT confirmed'}; next seq {view.next_seq})"])


@app.command()
def send(to: Annotated[str, typer.Option("--to", help="Recipient address")],
         amount: Annotated[str, typer.Option("--amount", help="Amount in units, e.g. 12.50")],
         memo: Annotated[str, typer.Option(help=f"Text for the recipient (≤ {MAX_MEMO_BYTES} bytes)")] = "",
         wait: Annotated[Wait, typer.Option(help="Wait until the payment is certified or settled")] = Wait.certified,
         timeout: Annotated[float, typer.Option(help="Seconds to wait")] = 30.0,
         account: AccountName = None, password_file: PasswordFile = None, peer: PeerUrl = DEFAULT_PEER,
         genesis: GenesisPath = None, wallet_dir: WalletDir = None, json_out: JsonOut = False) -> None:
    """Pay someone. Safe to repeat: the same request re-submits the same signed order."""
    _mode(json_out)
    home = _home(wallet_dir)
    recipient = decode_address(to)
    if len(memo.encode("utf-8")) > MAX_MEMO_BYTES:
        raise Fail(f"the memo is {len(memo.encode())} bytes; at most {MAX_MEMO_BYTES} are allowed", EXIT_USAGE, "usage")
    if not 0 < timeout <= MAX_TIMEOUT:
        raise Fail(f"--timeout must be in (0, {MAX_TIMEOUT:.0f}] seconds", EXIT_USAGE, "usage")
    name, sender = _account_address(home, account)
    if decode_address(sender) == recipient:
        raise AddressError(f"{to} is the address of account {name!r} itself; a payment needs another recipient")
    local = _local_genesis(home, genesis)
    minor = parse_amount(amount, local.decimals) if local is not None else None  # refuse before any network
    with _connect(home, peer, local) as (gen, client, chain):
        if minor is None:
            minor = parse_amount(amount, gen.decimals)
        outcome = Account(home, gen, client, sender, chain).send(
            recipient, minor, memo, wait=wait.value, timeout=timeout, unlock=_unlocker(home, name, password_file))
    _report_send(gen, outcome, client.url)


def _report_send(gen: Genesis, outcome: Outcome, gateway: str) -> None:
    for note in outcome.notes:
        err.print(f"note: {note}", markup=False)
    order = outcome.order
    doc = _payment_doc(gen, outcome.status, outcome.cert, order, resubmitted=outcome.resubmitted,
                       gateway=gateway, notes=outcome.notes)
    amount_text = format_amount(order.amount, gen.decimals)
    if outcome.status == "pending":
        lines = [f"submitted payment {order.id.hex()} ({amount_text} to {encode_address(order.recipient)}, seq "
                 f"{order.seq}); not waiting: check it with `wallet show {order.id.hex()}`"]
    else:
        assert outcome.cert is not None
        lines = [f"{outcome.status}: payment {order.id.hex()}",
                 f"  {amount_text} to {encode_address(order.recipient)} (seq {order.seq})",
                 f"  certificate verified: {len(outcome.cert.votes)} votes of the genesis committee"]
    _emit(doc, lines)


@app.command()
def history(address_arg: Annotated[str | None, typer.Argument(metavar="[ADDRESS]",
                                                                help="Any address [default: your account]")] = None,
            limit: Annotated[int, typer.Option(min=1, max=500, help="Most recent entries to show")] = 20,
            account: AccountName = None, peer: PeerUrl = DEFAULT_PEER, genesis: GenesisPath = None,
            wallet_dir: WalletDir = None, json_out: JsonOut = False) -> None:
    """Recent payments of an account (from one of its owners), and the local pending one."""
    _mode(json_out)
    home = _home(wallet_dir)
    target = address_arg.strip() if address_arg else _account_address(home, account)[1]
    raw = decode_address(target)
    with _connect(home, peer, _local_genesis(home, genesis)) as (gen, client, chain):
        reading = Network(gen, client, chain).read(raw)
        urls = [v.url for v in sorted(reading.answered, key=lambda v: (-v.history_length, v.url))]
        source, answer = client.history(target, urls, limit)
        pending = home.load_state(gen.network_id, target).pending
    entries = []
    for row in answer.get("entries") or []:
        if not isinstance(row, dict):
            continue
        amount_value = row.get("amount")
        entries.append({**row, "amount_text": format_amount(amount_value, gen.decimals)
                        if isinstance(amount_value, int) else None})
    lines = [f"history of {target} (from {source}):"]
    for e in entries:
        sign = "-" if e.get("direction") == "out" else "+"
        lines.append(f"  {sign}{e.get('amount_text')}  {'to' if sign == '-' else 'from'} {e.get('counterparty')}  "
                     f"seq {e.get('seq')}  {e.get('payment_id')}" + (f"  {e['memo']!r}" if e.get("memo") else ""))
    if not entries:
        lines.append("  (no payments)")
    if pending is not None:
        lines.append(f"pending (signed here, not yet final): -{format_amount(pending.amount, gen.decimals)} to "
                     f"{pending.to}  seq {pending.seq}  {pending.payment_id}")
    _emit({"address": target, "source": source, "entries": entries,
           "pending": None if pending is None else {"payment_id": pending.payment_id, "to": pending.to,
                                                    "amount": pending.amount, "seq": pending.seq,
                                                    "memo": pending.memo}}, lines)


def _lookup(home: WalletHome, gen: Genesis, client: PeerClient, pid: str, account: str | None,
            chain: WalletChain) -> tuple[Found, Account | None]:
    """Find a payment: the local receipt, else the peers (the chosen one, a local pending order's
    gateway, the owners of this wallet's account, then the owners of the payment's sender)."""
    acct = None
    names = home.names()
    if account is not None or len(names) == 1:
        acct = Account(home, gen, client, _account_address(home, account)[1], chain)
    local = home.certificate(bytes.fromhex(pid))
    if local is not None:
        verify_certificate(local, gen, chain.checker())  # a local copy is re-checked too: it is only a cache
        return Found("certified", local, None, str(home.receipt_path(bytes.fromhex(pid)))), acct
    also = []
    if acct is not None:
        state = home.load_state(gen.network_id, acct.address)
        if state.pending is not None and state.pending.payment_id == pid:
            also.append(state.pending.gateway)
    finder = acct or Network(gen, client, chain)
    found = finder.find(pid, also, decode_address(acct.address) if acct else None)
    if found.cert is None and found.doc is not None:
        sender = (found.doc.get("order") or {}).get("from")
        if isinstance(sender, str):
            with contextlib.suppress(AddressError):  # no valid sender named: keep what we have
                found = finder.find(pid, [found.source or client.url], decode_address(sender))
    if found.cert is not None and acct is not None:
        acct.record_if_ours(found.cert)
    return found, acct


@app.command()
def show(payment_id: Annotated[str, typer.Argument(help="The payment id (64 hex characters)")],
         account: AccountName = None, peer: PeerUrl = DEFAULT_PEER, genesis: GenesisPath = None,
         wallet_dir: WalletDir = None, json_out: JsonOut = False) -> None:
    """A payment's status, reported certified only with a verified certificate."""
    _mode(json_out)
    pid = _payment_id(payment_id)
    home = _home(wallet_dir)
    with _connect(home, peer, _local_genesis(home, genesis)) as (gen, client, chain):
        found, acct = _lookup(home, gen, client, pid, account, chain)
        pending = home.load_state(gen.network_id, acct.address).pending if acct is not None else None
    for problem in found.problems:
        _warn(problem)
    if found.cert is not None:
        order = found.cert.order
        applied = (found.doc or {}).get("applied")
        doc = _payment_doc(gen, found.status, found.cert, order, source=found.source, applied=applied)
        lines = [f"{found.status}: payment {pid}", f"  {format_amount(order.amount, gen.decimals)} from "
                 f"{encode_address(order.sender)} to {encode_address(order.recipient)} (seq {order.seq})",
                 f"  certificate verified: {len(found.cert.votes)} votes of the genesis committee"]
        if order.memo:
            lines.append(f"  memo {order.memo!r}")
        if isinstance(applied, dict):
            lines.append(f"  applied by {applied.get('debit')} sender owners, {applied.get('credit')} recipient owners")
        _emit(doc, lines)
        return
    if pending is not None and pending.payment_id == pid:
        order = pending.decode()
        status = found.status if found.doc is not None else "unknown"
        doc = _payment_doc(gen, status, None, order, source=found.source, local_pending=True,
                           code=(found.doc or {}).get("code"), detail=(found.doc or {}).get("detail"))
        _emit(doc, [f"{status} (not final): payment {pid}, signed by this wallet",
                    f"  {format_amount(order.amount, gen.decimals)} to {pending.to} (seq {order.seq}); "
                    "repeat the same send to re-submit it"])
        return
    if found.doc is None:
        raise Refused(client.url, 404, "unknown_payment", f"no peer asked knows payment {pid}", {})
    summary = found.doc.get("order") or {}
    doc = {"payment_id": pid, "status": found.status, "verified": False, "source": found.source,
           "order": summary, "code": found.doc.get("code"), "detail": found.doc.get("detail")}
    _emit(doc, [f"{found.status} (not final): payment {pid} (as reported by {found.source}, unverified)"]
          + ([f"  {found.doc.get('code')}: {found.doc.get('detail')}"] if found.doc.get("code") else []))


@app.command()
def receipt(payment_id: Annotated[str, typer.Argument(help="The payment id")],
            output: Annotated[Path, typer.Option("--output", "-o", help="Receipt file to write")],
            account: AccountName = None, peer: PeerUrl = DEFAULT_PEER, genesis: GenesisPath = None,
            wallet_dir: WalletDir = None, json_out: JsonOut = False) -> None:
    """Export a payment's certificate as a receipt anyone can verify offline."""
    _mode(json_out)
    pid = _payment_id(payment_id)
    home = _home(wallet_dir)
    gen = _local_genesis(home, genesis)
    local = home.certificate(bytes.fromhex(pid)) if gen is not None else None
    if local is not None and gen is not None:
        verify_certificate(local, gen, WalletChain(home, gen, peer).checker())
        cert = local
    else:
        with _connect(home, peer, gen) as (gen, client, chain):
            found, _ = _lookup(home, gen, client, pid, account, chain)
        if found.cert is None:
            raise Refused(client.url, 409, "not_final", f"payment {pid} is {found.status}, not certified: no "
                          "certificate to export yet", {"payment_id": pid})
        cert = found.cert
    assert gen is not None
    write_receipt(output, cert, gen)
    _emit({"payment_id": pid, "file": str(output), "votes": len(cert.votes)},
          [f"wrote the receipt of payment {pid} to {output} ({len(cert.votes)} votes)"])


@app.command()
def verify(file: Annotated[Path, typer.Argument(help="A receipt (or a binary certificate)")],
           genesis: GenesisPath = None, wallet_dir: WalletDir = None, json_out: JsonOut = False,
           peer: Annotated[str, typer.Option("--peer", envvar="MESHPAY_PEER", help="Where to fetch epoch "
                                             "certificates this wallet lacks (only then)")] = DEFAULT_PEER) -> None:
    """Check a receipt against the genesis, following the wallet's chain of epoch certificates
    (offline, unless the receipt's epoch is newer than the chain: then the missing links are fetched)."""
    _mode(json_out)
    gen = _local_genesis(_home(wallet_dir), genesis)
    if gen is None:
        raise Fail("no genesis to verify against: pass --genesis FILE (or set MESHPAY_GENESIS)", EXIT_USAGE, "usage")
    cert = read_receipt(file, gen, WalletChain(_home(wallet_dir), gen, peer).checker())
    order = cert.order
    epoch = cert.votes[0].epoch
    doc = _payment_doc(gen, "certified", cert, order, valid=True, network=gen.name,
                       network_id=gen.network_id.hex(), epoch=epoch)
    _emit(doc, [f"valid: payment {order.id.hex()} is final on network {gen.name!r}",
                f"  {format_amount(order.amount, gen.decimals)} from {encode_address(order.sender)} to "
                f"{encode_address(order.recipient)} (seq {order.seq})" + (f", memo {order.memo!r}" if order.memo else ""),
                f"  {len(cert.votes)} valid votes from owners of the sender in epoch {epoch} (quorum {gen.quorum})"])


# ---- exit codes -------------------------------------------------------------------------------------
def classify(exc: BaseException) -> Fail | None:
    """The exit status, kind and extra fields for an exception (None: not one we expected)."""
    if isinstance(exc, Fail):
        return exc
    table: list[tuple[type[BaseException], int, str]] = [
        (AddressError, EXIT_ADDRESS, "bad_address"), (AmountError, EXIT_AMOUNT, "bad_amount"),
        (InsufficientFunds, EXIT_FUNDS, "insufficient_funds"), (ConflictingPending, EXIT_PENDING, "conflicting_pending"),
        (PeerUnreachable, EXIT_UNREACHABLE, "peer_unreachable"), (Timeout, EXIT_TIMEOUT, "timeout"),
        (WrongPassword, EXIT_PASSWORD, "wrong_password"), (VerificationError, EXIT_INVALID, "verification_failed"),
        (NetworkMismatch, EXIT_NETWORK, "network_mismatch"), (Refused, EXIT_REFUSED, "refused"),
        (ClientError, EXIT_REFUSED, "peer_error"), (GenesisError, EXIT_USAGE, "usage"),
        (KeystoreError, EXIT_USAGE, "usage"), (WalletFileError, EXIT_USAGE, "usage"),
    ]
    for kind, code, name in table:
        if isinstance(exc, kind):
            return Fail(str(exc), code, name, **_extra(exc))
    return None


def _extra(exc: BaseException) -> dict[str, Any]:
    """Fields a script needs to act on an error (--json)."""
    extra: dict[str, Any] = {}
    if isinstance(exc, (ConflictingPending, Timeout, UnverifiedPayment)):
        extra["payment_id"] = exc.payment_id
    if isinstance(exc, PeerUnreachable):
        extra.update(url=exc.url, suggestion=exc.suggestion)
        if exc.payment_id is not None:
            extra["payment_id"] = exc.payment_id
    if isinstance(exc, AmountError):
        extra["reason"] = exc.kind
    if isinstance(exc, Refused):
        extra["code"] = exc.code
    return extra


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit status (main() exits with it; tests call it directly)."""
    _Mode.json = False
    try:
        status = app(args=argv, standalone_mode=False, prog_name="wallet")
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        err.print("aborted")
        return EXIT_UNEXPECTED
    except KeyboardInterrupt:
        return 130
    except typer.TyperException as exc:  # usage errors from the parser: bad option, missing argument
        message = exc.format_message()
        if message:  # (no message: `wallet` alone, which has printed the help already)
            err.print(f"error: {message}", markup=False)
            err.print("try 'wallet --help' or 'wallet COMMAND --help'", markup=False)
        return EXIT_USAGE
    except Exception as exc:
        fail = classify(exc)
        if fail is None:
            raise
        err.print(f"error: {fail}", markup=False)
        if _Mode.json:
            sys.stdout.write(json.dumps({"error": {"kind": fail.kind, "exit_status": fail.exit_status,
                                                   "message": str(fail), **fail.extra}}) + "\n")
        return fail.exit_status
    return status if isinstance(status, int) else 0  # --help and the like return their status


def main() -> None:
    sys.exit(run())
