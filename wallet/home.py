"""The wallet directory: keystores, the pinned genesis, per-account local state, receipts.

    WALLET_DIR/                 default: platformdirs user data dir / "wallet"; or --wallet-dir /
      NAME.key                  MESHPAY_WALLET_DIR. Created mode 0700.
      genesis.json              the pinned genesis (the network this wallet trusts)
      peers.json                API URLs of the last /v1/peers list (to suggest another peer)
      state/NETID-ADDRESS.json  next_seq and the pending signed order of one account on one network
      state/NETID-ADDRESS.lock  flock held while a command sends from that account
      receipts/PAYMENT_ID.cert  verified certificates (canonical CBOR) of payments this wallet made

Keystores are the crypto.keystore format with kind "account"; the file name (without `.key`) is the
account's name. The demo wallets of a devnet (`devnet.wallet_dir()`) are such a directory already.

The local state is what makes sending idempotent: the signed order is written here (atomically:
temp file, fsync, rename, fsync of the directory) *before* it is submitted, so a retry after a
timeout or a crash finds it and re-submits the same bytes. It is keyed by network id, so a wallet
directory reused after a devnet is recreated never carries a stale sequence number over.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import platformdirs

from crypto import keystore
from crypto.address import encode_address
from crypto.errors import MeshpayError
from crypto.messages import Certificate, Order
from peer import genesis as genesis_file
from peer.genesis import Genesis

ENV_DIR = "MESHPAY_WALLET_DIR"
KEY_SUFFIX = ".key"
STATE_FORMAT = 1
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}", re.ASCII)


class WalletFileError(MeshpayError):
    """A wallet file or directory cannot be used (missing, malformed, unwritable, bad name)."""


class UnknownAccount(WalletFileError):
    """No keystore of that name (or no way to choose one)."""


def default_dir() -> Path:
    return Path(platformdirs.user_data_dir("meshpay", appauthor=False)) / "wallet"


def atomic_write(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so that a crash leaves either the old or the new file (mode 0600)."""
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise WalletFileError(f"cannot write {path}: {exc.strerror or exc}") from exc
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the rename itself must survive a crash, not only the bytes
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise WalletFileError(f"cannot write {path}: {exc.strerror or exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)


@dataclass
class PendingOrder:
    """A signed order submitted (or about to be) and not yet known to be final or dead."""

    order: str  # hex of the signed order's canonical CBOR: exactly what is re-submitted
    payment_id: str
    to: str
    amount: int
    memo: str
    seq: int
    gateway: str  # the peer it was handed to (where its status is best known)

    def decode(self) -> Order:
        return Order.decode(bytes.fromhex(self.order))

    @classmethod
    def of(cls, order: Order, gateway: str) -> PendingOrder:
        return cls(order.encode().hex(), order.id.hex(), encode_address(order.recipient), order.amount,
                   order.memo, order.seq, gateway)


@dataclass
class AccountState:
    """What this wallet remembers about one account on one network."""

    address: str
    network_id: str
    next_seq: int = 0  # the lowest seq not yet used by a certificate this wallet knows of
    pending: PendingOrder | None = None


class WalletHome:
    def __init__(self, root: Path) -> None:
        self.root = Path(root).expanduser()

    # ---- directories -----------------------------------------------------------------------------
    def ensure(self) -> None:
        for path in (self.root, self.root / "state", self.root / "receipts"):
            try:
                path.mkdir(mode=0o700, parents=True, exist_ok=True)
            except OSError as exc:
                raise WalletFileError(f"cannot create wallet directory {path}: {exc.strerror or exc}") from exc

    # ---- keystores -------------------------------------------------------------------------------
    @staticmethod
    def check_name(name: str) -> str:
        if not _NAME.fullmatch(name) or name.endswith(KEY_SUFFIX):
            raise WalletFileError(f"account name {name!r} is not allowed: use 1-64 letters, digits, "
                                  "'_', '-' or '.', not starting with '.' or '-'")
        return name

    def key_path(self, name: str) -> Path:
        return self.root / (self.check_name(name) + KEY_SUFFIX)

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name[: -len(KEY_SUFFIX)] for p in self.root.glob("*" + KEY_SUFFIX)
                      if p.is_file() and _NAME.fullmatch(p.name[: -len(KEY_SUFFIX)]))

    def read_key(self, name: str) -> bytes:
        path = self.key_path(name)
        if not path.exists():
            known = ", ".join(self.names()) or "none"
            raise UnknownAccount(f"no account named {name!r} in {self.root} (accounts: {known})")
        return keystore.read_file(path)

    def info(self, name: str) -> keystore.KeystoreInfo:
        found = keystore.info(self.read_key(name))
        if found.kind != "account":
            raise WalletFileError(f"{self.key_path(name)} holds a {found.kind} key, not an account key")
        return found

    def holding(self, public_key: bytes) -> str | None:
        """The name of the account that holds this key already, if any (damaged keystores are skipped)."""
        for name in self.names():
            try:
                if self.info(name).public_key == public_key:
                    return name
            except (keystore.KeystoreError, WalletFileError):
                continue  # `wallet list` reports it; it holds no usable key
        return None

    def choose(self, name: str | None) -> str:
        """The account a command acts on: the one named, or the only one there is."""
        if name is not None:
            self.check_name(name)
            if not self.key_path(name).exists():
                known = ", ".join(self.names()) or "none"
                raise UnknownAccount(f"no account named {name!r} in {self.root} (accounts: {known})")
            return name
        names = self.names()
        if len(names) == 1:
            return names[0]
        if not names:
            raise UnknownAccount(f"no accounts in {self.root}; create one with `wallet new NAME`")
        raise UnknownAccount(f"{len(names)} accounts in {self.root} ({', '.join(names)}); "
                             "choose one with --account NAME")

    def write_key(self, name: str, data: bytes) -> Path:
        self.ensure()
        path = self.key_path(name)
        keystore.write_file(path, data)  # refuses to replace an existing account
        return path

    # ---- the pinned genesis ------------------------------------------------------------------------
    @property
    def genesis_path(self) -> Path:
        return self.root / "genesis.json"

    def pinned_genesis(self) -> Genesis | None:
        if not self.genesis_path.exists():
            return None
        return genesis_file.load(self.genesis_path)

    def pin_genesis(self, genesis: Genesis) -> None:
        self.ensure()
        atomic_write(self.genesis_path, (json.dumps(genesis_file.to_json(genesis), indent=2) + "\n").encode())

    # ---- the last known peers ----------------------------------------------------------------------
    @property
    def peers_path(self) -> Path:
        return self.root / "peers.json"

    def known_peers(self) -> list[str]:
        try:
            doc = json.loads(self.peers_path.read_text())
        except (OSError, json.JSONDecodeError):
            return []  # only ever a hint for an error message: a missing or bad cache means no hint
        peers = doc.get("peers") if isinstance(doc, dict) else None
        return [p for p in peers if isinstance(p, str)] if isinstance(peers, list) else []

    def remember_peers(self, urls: list[str]) -> None:
        if not urls or urls == self.known_peers():
            return
        self.ensure()
        atomic_write(self.peers_path, json.dumps({"peers": urls}, indent=2).encode() + b"\n")

    # ---- per-account state -------------------------------------------------------------------------
    def _state_path(self, network_id: bytes, address: str, suffix: str = ".json") -> Path:
        return self.root / "state" / f"{network_id.hex()[:16]}-{address}{suffix}"

    def load_state(self, network_id: bytes, address: str) -> AccountState:
        path = self._state_path(network_id, address)
        if not path.exists():
            return AccountState(address, network_id.hex())
        try:
            doc: Any = json.loads(path.read_text())
            if doc.get("meshpay_wallet_state") != STATE_FORMAT or doc["address"] != address \
                    or doc["network_id"] != network_id.hex():
                raise ValueError("not this account's state")
            pending = PendingOrder(**doc["pending"]) if doc["pending"] is not None else None
            state = AccountState(address, network_id.hex(), int(doc["next_seq"]), pending)
            if pending is not None:
                order = pending.decode()  # refuse a state whose order does not match its summary
                if order.id.hex() != pending.payment_id or order.seq != pending.seq:
                    raise ValueError("the pending order does not match its payment id")
        except (OSError, ValueError, KeyError, TypeError, AttributeError, MeshpayError) as exc:
            raise WalletFileError(f"wallet state {path} is damaged ({exc}); move it away and the "
                                  "wallet will recover the sequence number from the network") from exc
        return state

    def save_state(self, network_id: bytes, state: AccountState) -> None:
        self.ensure()
        doc = {"meshpay_wallet_state": STATE_FORMAT, "address": state.address, "network_id": state.network_id,
               "next_seq": state.next_seq, "pending": asdict(state.pending) if state.pending else None}
        atomic_write(self._state_path(network_id, state.address), json.dumps(doc, indent=2).encode() + b"\n")

    @contextlib.contextmanager
    def account_lock(self, network_id: bytes, address: str) -> Iterator[None]:
        """Exclusive while held: two `wallet send` from one account never sign two orders at once."""
        self.ensure()
        path = self._state_path(network_id, address, ".lock")
        with path.open("a") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    # ---- receipts ----------------------------------------------------------------------------------
    def receipt_path(self, payment_id: bytes) -> Path:
        return self.root / "receipts" / f"{payment_id.hex()}.cert"

    def save_certificate(self, cert: Certificate) -> None:
        self.ensure()
        atomic_write(self.receipt_path(cert.id), cert.encode())

    def certificate(self, payment_id: bytes) -> Certificate | None:
        path = self.receipt_path(payment_id)
        try:
            return Certificate.decode(path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, MeshpayError):
            return None  # a damaged local copy: the caller fetches the certificate again
