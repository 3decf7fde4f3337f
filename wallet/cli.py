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
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import metadata
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
    OutOfTime,
    PeerClient,
    PeerUnreachable,
    Refused,
    Timeout,
)
from wallet.home import ENV_DIR, WalletFileError, WalletHome, default_dir
from wallet.payments import (
    Account,
    AccountFrozen,
    ConflictingPending,
    Found,
    InsufficientFunds,
    Network,
    Outcome,
)
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
                  no_args_is_help=True)
network_app = typer.Typer(help="The network this wallet trusts (its pinned genesis).", no_args_is_help=True)
app.add_typer(network_app, name="network")
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


def _version(value: bool) -> None:
    if value:
        out.print(f"wallet (meshpay) {_package_version()}", markup=False)
        raise typer.Exit(0)


def _package_version() -> str:
    try:
        return metadata.version("meshpay")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


@app.callback()
def _main(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                               help="Print the version and exit")] = False) -> None:
    """Move money on a meshpay network: keys, balances, payments, receipts."""


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


@contextmanager
def _connect(home: WalletHome, peer: str, genesis: Genesis | None, pinned: bool = False, *,
             deadline: float | None = None) -> Iterator[tuple[Genesis, PeerClient, WalletChain]]:
    """A client for `peer`, after checking it serves the wallet's network (pinning its genesis if the
    wallet has none yet), and refreshing the list of peers used to suggest another one and the chain
    of epoch certificates (the current committee owns the accounts). `pinned`: the genesis is the
    wallet's pinned one (a mismatch then offers `wallet network trust`); `deadline`
    (time.monotonic()) bounds everything the client does from here on."""
    with PeerClient(peer, known_peers=home.known_peers()) as client:
        client.deadline = deadline
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
            raise NetworkMismatch(_mismatch(home, client.url, status, genesis, pinned))
        rows = client.peers()
        alive = [r["api"] for r in rows if isinstance(r, dict) and r.get("api") and r.get("state") == "alive"]
        home.remember_peers([client.url, *[a for a in alive if a.rstrip("/") != client.url]])
        chain = WalletChain(home, genesis, client.url)
        chain.refresh()
        yield genesis, client, chain


def _mismatch(home: WalletHome, url: str, status: dict[str, Any], genesis: Genesis, pinned: bool) -> str:
    theirs = f"network {status.get('network')!r} (id {str(status.get('network_id'))[:16]}…)"
    ours = f"network {genesis.name!r} (id {genesis.network_id.hex()[:16]}…)"
    text = f"peer {url} serves {theirs}, but this wallet trusts {ours}"
    if not pinned:
        return text + " from --genesis / MESHPAY_GENESIS; refusing to use it"
    return (text + f", pinned in {home.genesis_path}; refusing to use it. If that network was recreated "
            f"(a new devnet), trust the new one with: wallet network trust --genesis NEW_GENESIS.json "
            f"--wallet-dir {home.root} (or `wallet network trust --from-peer --peer {url}` to take the peer's)")


def _genesis_for(home: WalletHome, genesis_path: Path | None) -> tuple[Genesis | None, bool]:
    """The genesis a command trusts, and whether it is the wallet's pinned one."""
    if genesis_path is not None:
        return genesis_file.load(genesis_path), False
    return home.pinned_genesis(), True


def _recipient(home: WalletHome, to: str) -> tuple[bytes, str | None]:
    """`--to` as an address, or as the name of an account in this wallet (its address then)."""
    text = to.strip()
    try:
        return decode_address(text), None
    except AddressError as exc:
        if text in home.names():
            try:
                return home.info(text).public_key, text
            except (KeystoreError, WalletFileError) as damaged:
                raise Fail(f"--to {text!r} names an account of this wallet whose keystore is unusable: {damaged}",
                           EXIT_USAGE, "usage") from damaged
        raise AddressError(f"{exc} (and {text!r} is not the name of an account in {home.root})") from exc


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
            # one bad file is reported, never lets the listing of the others fail
            rows.append({"name": name, "address": None, "key_file": str(home.key_path(name)), "damaged": True,
                         "problem": str(exc)})
    width = max((len(r["name"]) for r in rows), default=4)
    lines = [f"{r['name']:<{width}}  {r['address'] or '(damaged, unusable: ' + r['problem'] + ')'}" for r in rows]
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
    already = home.holding(found.public_key)
    if already is not None:
        raise Fail(f"this key is already in the wallet as account {already!r} (address "
                   f"{encode_address(found.public_key)}); not importing it again as {chosen!r}", EXIT_USAGE, "usage",
                   account=already, address=encode_address(found.public_key))
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
    with _connect(home, peer, *_genesis_for(home, genesis)) as (gen, client, chain):
        network = Network(gen, client, chain)
        reading = network.read(raw)
    view, agree = reading.agreed()
    assert view is not None
    stuck = network.frozen(reading, view.next_seq)
    dec = gen.decimals
    views = [{"peer_id": v.peer_id.hex(), "api": v.url, "balance": v.balance,
              "balance_text": format_amount(v.balance, dec), "next_seq": v.next_seq, "credits": v.credits}
             for v in reading.answered]
    errors = {pid.hex(): why for pid, why in reading.errors.items()}
    doc = {"address": target, "balance": view.balance, "balance_text": format_amount(view.balance, dec),
           "next_seq": view.next_seq, "owners": len(reading.owners), "answered": len(reading.answered),
           "agree": agree, "confirmed": reading.confirmed, "consistent": reading.consistent,
           "views": views, "errors": errors,
           "frozen": None if stuck is None else {"seq": stuck.seq, "locks": stuck.locks, "reason": stuck.reason}}
    if stuck is not None:
        _warn(f"account {target} is FROZEN at sequence number {stuck.seq}: {stuck.reason}; its money cannot "
              "move until an epoch change")
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
                f"{'' if reading.confirmed else ', NOT confirmed'}; next seq {view.next_seq}"
                f"{'; FROZEN at seq ' + str(stuck.seq) if stuck else ''})"])


ToOption = Annotated[str, typer.Option("--to", help="Recipient: an address, or the name of an account of this wallet")]
AmountOption = Annotated[str, typer.Option("--amount", help="Amount in units, e.g. 12.50")]
MemoOption = Annotated[str, typer.Option(help=f"Text for the recipient (≤ {MAX_MEMO_BYTES} bytes)")]
WaitOption = Annotated[Wait, typer.Option(help="Wait until the payment is certified or settled")]
TimeoutOption = Annotated[float, typer.Option(help="Seconds the whole command may take, owner reads included")]


@app.command()
def send(to: ToOption, amount: AmountOption, memo: MemoOption = "", wait: WaitOption = Wait.certified,
         timeout: TimeoutOption = 30.0,
         dry_run: Annotated[bool, typer.Option("--dry-run", help="Sign and print the order; do not submit it "
                                                                "(it is kept as this account's pending order)")] = False,
         account: AccountName = None, password_file: PasswordFile = None, peer: PeerUrl = DEFAULT_PEER,
         genesis: GenesisPath = None, wallet_dir: WalletDir = None, json_out: JsonOut = False) -> None:
    """Pay someone. Safe to repeat: the same request re-submits the same signed order."""
    _mode(json_out)
    _pay(to, amount, memo, wait, timeout, not dry_run, account, password_file, peer, genesis, wallet_dir)


@app.command()
def sign(to: ToOption, amount: AmountOption, memo: MemoOption = "", wait: WaitOption = Wait.certified,
         timeout: TimeoutOption = 30.0, account: AccountName = None, password_file: PasswordFile = None,
         peer: PeerUrl = DEFAULT_PEER, genesis: GenesisPath = None, wallet_dir: WalletDir = None,
         json_out: JsonOut = False) -> None:
    """Sign a payment and print its POST /v1/payments request, without submitting it.

    Same as `send --dry-run`. The order is kept as pending: submit it with curl, or with the same
    `wallet send`, which re-submits those exact bytes."""
    _mode(json_out)
    _pay(to, amount, memo, wait, timeout, False, account, password_file, peer, genesis, wallet_dir)


def _pay(to: str, amount: str, memo: str, wait: Wait, timeout: float, submit: bool, account: str | None,
         password_file: Path | None, peer: str, genesis: Path | None, wallet_dir: Path | None) -> None:
    started = time.monotonic()  # --timeout counts from here, not from the first request
    home = _home(wallet_dir)
    recipient, to_name = _recipient(home, to)
    if len(memo.encode("utf-8")) > MAX_MEMO_BYTES:
        raise Fail(f"the memo is {len(memo.encode())} bytes; at most {MAX_MEMO_BYTES} are allowed", EXIT_USAGE, "usage")
    if not 0 < timeout <= MAX_TIMEOUT:
        raise Fail(f"--timeout must be in (0, {MAX_TIMEOUT:.0f}] seconds", EXIT_USAGE, "usage")
    name, sender = _account_address(home, account)
    if decode_address(sender) == recipient:
        raise AddressError(f"{to} is the address of account {name!r} itself; a payment needs another recipient")
    local, pinned = _genesis_for(home, genesis)
    minor = parse_amount(amount, local.decimals) if local is not None else None  # refuse before any network
    with _connect(home, peer, local, pinned=pinned, deadline=started + timeout) as (gen, client, chain):
        if minor is None:
            minor = parse_amount(amount, gen.decimals)
        outcome = Account(home, gen, client, sender, chain).send(
            recipient, minor, memo, wait=wait.value, timeout=timeout, unlock=_unlocker(home, name, password_file),
            submit=submit)
    _report_send(gen, outcome, client.url, to_name, wait.value, timeout)


def _report_send(gen: Genesis, outcome: Outcome, gateway: str, to_name: str | None, wait: str, timeout: float) -> None:
    for note in outcome.notes:
        err.print(f"note: {note}", markup=False)
    order = outcome.order
    pid = order.id.hex()
    extra: dict[str, Any] = {"resubmitted": outcome.resubmitted, "gateway": gateway, "notes": outcome.notes,
                             "earlier": outcome.earlier, "to_name": to_name}
    if outcome.applied_by:
        extra["applied_by"] = outcome.applied_by
    amount_text = format_amount(order.amount, gen.decimals)
    to_text = encode_address(order.recipient) + (f" ({to_name})" if to_name else "")
    if outcome.status == "signed":
        body = {"order": order.encode().hex(), "wait": wait, "timeout": min(timeout, 60.0)}
        extra.update(order_cbor=body["order"], request=body,
                     curl=f"curl -s -X POST {gateway}/v1/payments -H 'content-type: application/json' "
                          f"-d '{json.dumps(body)}'")
        lines = [f"signed (not submitted): payment {pid} ({amount_text} to {to_text}, seq {order.seq})",
                 "  kept as this account's pending order; submit it with:", f"  {extra['curl']}"]
    elif outcome.status == "pending":
        lines = [f"submitted payment {pid} ({amount_text} to {to_text}, seq "
                 f"{order.seq}); not waiting: check it with `wallet show {pid}`"]
    elif outcome.cert is not None:
        lines = [f"{outcome.status}: payment {pid}", f"  {amount_text} to {to_text} (seq {order.seq})",
                 f"  certificate verified: {len(outcome.cert.votes)} votes of the genesis committee"]
    else:
        lines = [f"{outcome.status}: payment {pid}", f"  {amount_text} to {to_text} (seq {order.seq})",
                 f"  applied by {outcome.applied_by} of the sender's owners (no certificate could be verified yet)"]
    _emit(_payment_doc(gen, outcome.status, outcome.cert, order, **extra), lines)


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
    with _connect(home, peer, *_genesis_for(home, genesis)) as (gen, client, chain):
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
    """Find a payment: the network first (the chosen peer, a local pending order's gateway, the
    owners of this wallet's account, then the owners of the payment's sender), so a settled payment
    is shown settled; the local receipt only when no peer proves it."""
    acct = None
    names = home.names()
    if account is not None or len(names) == 1:
        acct = Account(home, gen, client, _account_address(home, account)[1], chain)
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
    local = home.certificate(bytes.fromhex(pid)) if found.cert is None else None
    if local is not None:
        verify_certificate(local, gen, chain.checker())  # a local copy is re-checked too: it is only a cache
        found = Found("certified", local, None, str(home.receipt_path(bytes.fromhex(pid))), found.problems)
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
    with _connect(home, peer, *_genesis_for(home, genesis)) as (gen, client, chain):
        found, acct = _lookup(home, gen, client, pid, account, chain)
        pending = home.load_state(gen.network_id, acct.address).pending if acct is not None else None
        res = None
        if found.cert is None and pending is not None and pending.payment_id == pid and acct is not None:
            # this wallet's own pending order: what the sender's owners applied decides, not a gateway
            order = pending.decode()
            res, _ = acct.outcome(order, acct.read(order.sender, seq=order.seq), [pending.gateway])
            if res.kind == "final":
                acct.record_paid(order)
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
    if pending is not None and res is not None:
        order = pending.decode()
        status = found.status if found.doc is not None else "unknown"
        if res.kind == "final":
            status = "certified"
        doc = _payment_doc(gen, status, None, order, source=found.source, local_pending=True,
                           code=(found.doc or {}).get("code"), detail=(found.doc or {}).get("detail"),
                           outcome=res.kind, reason=res.reason, applied_by=res.applied_by)
        _emit(doc, [f"{status} ({'final: ' + res.reason if res.kind == 'final' else 'not final'}): payment "
                    f"{pid}, signed by this wallet; owners: {res.kind} ({res.reason})",
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
    gen, pinned = _genesis_for(home, genesis)
    local = home.certificate(bytes.fromhex(pid)) if gen is not None else None
    if local is not None and gen is not None:
        verify_certificate(local, gen, WalletChain(home, gen, peer).checker())
        cert = local
    else:
        with _connect(home, peer, gen, pinned) as (gen, client, chain):
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
    gen = _genesis_for(_home(wallet_dir), genesis)[0]
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


# ---- the trusted network ----------------------------------------------------------------------------
@network_app.command("show")
def network_show(wallet_dir: WalletDir = None, json_out: JsonOut = False) -> None:
    """The network this wallet trusts (its pinned genesis)."""
    _mode(json_out)
    home = _home(wallet_dir)
    gen = home.pinned_genesis()
    if gen is None:
        raise Fail(f"no genesis is pinned in {home.root} yet (the first networked command pins its peer's)",
                   EXIT_USAGE, "usage")
    _emit({"network": gen.name, "network_id": gen.network_id.hex(), "genesis": str(home.genesis_path)},
          [f"network {gen.name!r} (id {gen.network_id.hex()}), pinned in {home.genesis_path}"])


@network_app.command("trust")
def network_trust(genesis: Annotated[Path | None, typer.Option("--genesis", help="The genesis file to trust")] = None,
                  from_peer: Annotated[bool, typer.Option("--from-peer", help="Trust the genesis --peer serves "
                                                          "(check its id with the network's operator)")] = False,
                  peer: PeerUrl = DEFAULT_PEER, wallet_dir: WalletDir = None, json_out: JsonOut = False) -> None:
    """Pin another network's genesis (after a devnet was recreated, say). Account state is kept per
    network, so nothing of the old network is carried over; keys stay as they are."""
    _mode(json_out)
    if (genesis is None) == (not from_peer):
        raise Fail("give exactly one of --genesis FILE and --from-peer", EXIT_USAGE, "usage")
    home = _home(wallet_dir)
    try:
        old = home.pinned_genesis()
    except GenesisError as exc:  # a damaged pin is what this command replaces
        _warn(f"the pinned genesis was unreadable: {exc}")
        old = None
    if genesis is not None:
        new = genesis_file.load(genesis)
    else:
        with PeerClient(peer, known_peers=home.known_peers()) as client:
            status = client.status()
            new = client.genesis()
            if new.network_id.hex() != status.get("network_id"):
                raise BadAnswer(client.url, "its genesis does not hash to the network id it reports")
    home.pin_genesis(new)
    before = None if old is None else {"network": old.name, "network_id": old.network_id.hex()}
    lines = [f"now trusting network {new.name!r} (id {new.network_id.hex()})"]
    if old is not None and old.network_id != new.network_id:
        lines.append(f"  instead of network {old.name!r} (id {old.network_id.hex()})")
    _emit({"network": new.name, "network_id": new.network_id.hex(), "previous": before,
           "genesis": str(home.genesis_path)}, lines)


# ---- exit codes -------------------------------------------------------------------------------------
def classify(exc: BaseException) -> Fail | None:
    """The exit status, kind and extra fields for an exception (None: not one we expected)."""
    if isinstance(exc, Fail):
        return exc
    table: list[tuple[type[BaseException], int, str]] = [
        (AddressError, EXIT_ADDRESS, "bad_address"), (AmountError, EXIT_AMOUNT, "bad_amount"),
        (InsufficientFunds, EXIT_FUNDS, "insufficient_funds"), (AccountFrozen, EXIT_PENDING, "account_frozen"),
        (ConflictingPending, EXIT_PENDING, "conflicting_pending"),
        (PeerUnreachable, EXIT_UNREACHABLE, "peer_unreachable"), (Timeout, EXIT_TIMEOUT, "timeout"),
        (OutOfTime, EXIT_TIMEOUT, "timeout"),
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
    if isinstance(exc, (ConflictingPending, Timeout, UnverifiedPayment)) or \
            (isinstance(exc, OutOfTime) and exc.payment_id is not None):
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
            if "--json" in (argv if argv is not None else sys.argv[1:]):  # the parser never saw the flag
                sys.stdout.write(json.dumps({"error": {"kind": "usage", "exit_status": EXIT_USAGE,
                                                       "message": message}}) + "\n")
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
