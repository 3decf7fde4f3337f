"""A small synchronous client for the peer HTTP API (docs/api.md), for the wallet.

One `PeerClient` talks to the peer the user chose (`--peer`): it is the gateway for payments and
the first stop for reads. Reads of an account then go to *every* owner of the account in parallel
(their API URLs come from the first answer's `owners`, or from a 421 `not_owner` answer, or from the
`/v1/peers` list), because no single peer's word about money is taken: `AccountReading` keeps each
owner's view so the caller can cross-check them.

Errors are typed and carry what the user needs next:
- `PeerUnreachable(url)` — nothing answered; `suggestion` is another peer from the last known
  `/v1/peers` list (or the owners seen), if any. `PeerBusy` is its subclass for a peer that
  answered 503/429 (starting, overloaded, shutting down).
- `Timeout(payment_id)` — a submitted payment did not reach the awaited status in time; it may still
  complete, and the id is how to check it later.
- `Conflict(locked_id)` — another order holds the sender's sequence number at the owners.
- `Refused(code)` — any other error answer, with the API's stable `code`.
- `BadAnswer` — the peer answered something that is not the API (a bug or a hostile peer);
  `NotHttp` when it does not speak HTTP at all (a peer's P2P port, most likely).
- `OutOfTime` — the caller's overall deadline (`PeerClient.deadline`, set from `send --timeout`)
  passed before the peers answered.

A deadline bounds *every* request of a client once set: each one waits at most the time left, so
`wallet send --timeout 10` returns within about 10 s whatever the peers do.
"""

from __future__ import annotations

import os
import socket
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx

from crypto.account_view import CHALLENGE_SIZE, AccountView
from crypto.address import decode_address
from crypto.errors import AddressError, MeshpayError
from crypto.messages import Hello, Order
from peer import genesis as genesis_file
from peer.genesis import Genesis

DEFAULT_PEER = "http://127.0.0.1:8000"
MAX_SERVER_WAIT = 60.0  # the peers' default `api.max_wait_seconds`
READ_TIMEOUT = 3.0
CONNECT_TIMEOUT = 2.0


class ClientError(MeshpayError):
    """A peer could not give the wallet what it asked for."""


class PeerUnreachable(ClientError):
    def __init__(self, url: str, reason: str, suggestion: str | None = None, payment_id: str | None = None,
                 *, lead: str = "is unreachable") -> None:
        self.url, self.reason, self.suggestion, self.payment_id = url, reason, suggestion, payment_id
        text = f"peer {url} {lead}: {reason}"
        if payment_id is not None:
            text += f"; payment {payment_id} may still complete: repeat the same send to re-submit it"
        text += f"; try --peer {suggestion}" if suggestion else "; no other peer is known: pass --peer URL"
        super().__init__(text)


class PeerBusy(PeerUnreachable):
    """The peer answered but will not serve now (503 starting/overloaded/shutting_down, 429)."""

    def __init__(self, url: str, code: str, message: str, suggestion: str | None = None,
                 payment_id: str | None = None) -> None:
        self.code = code
        super().__init__(url, f"{code}: {message}", suggestion, payment_id, lead="is not serving now")


class Timeout(ClientError):
    def __init__(self, payment_id: str, status: str, detail: str) -> None:
        self.payment_id, self.status = payment_id, status
        super().__init__(f"payment {payment_id} is still {status} after the wait ({detail}); it may "
                         f"still complete: check it with `wallet show {payment_id}`")


class Refused(ClientError):
    def __init__(self, url: str, http_status: int, code: str, message: str, extra: dict[str, Any]) -> None:
        self.url, self.http_status, self.code, self.message, self.extra = url, http_status, code, message, extra
        super().__init__(f"{code}: {message}")


class Conflict(Refused):
    """`locked_id` is the payment id of the order that holds the sequence number (if proven)."""

    def __init__(self, url: str, message: str, extra: dict[str, Any], locked_id: str | None) -> None:
        self.locked_id = locked_id
        super().__init__(url, 409, "conflict", message, extra)


class BadAnswer(ClientError):
    def __init__(self, url: str, what: str) -> None:
        self.url = url
        super().__init__(f"peer {url} gave an answer the wallet cannot use: {what}")


class NotHttp(PeerUnreachable):
    """The address answers, but not in HTTP: most likely a peer's P2P port, not its API port."""

    def __init__(self, url: str, reason: str, suggestion: str | None) -> None:
        super().__init__(url, reason, suggestion, lead="is not an HTTP API port")


class OutOfTime(ClientError):
    """The overall deadline passed before the peers answered (`payment_id`: the order, if signed)."""

    def __init__(self, what: str, payment_id: str | None = None) -> None:
        self.payment_id = payment_id
        text = f"out of time: {what}"
        if payment_id is not None:
            text += f"; payment {payment_id} may still complete: check it with `wallet show {payment_id}`"
        super().__init__(text)


def normalize(url: str) -> str:
    url = url.strip().rstrip("/")
    return url if "://" in url else "http://" + url


def same_peer(a: str, b: str) -> bool:
    """Whether two API URLs name the same listener (`localhost` and `127.0.0.1` alike, case, default port)."""
    def key(url: str) -> tuple[str, str, int | None]:
        parsed = httpx.URL(normalize(url))
        host = parsed.host.lower()
        host = "127.0.0.1" if host in ("localhost", "::1", "ip6-localhost") else host
        return parsed.scheme, host, parsed.port or (443 if parsed.scheme == "https" else 80)

    try:
        return key(a) == key(b)
    except (httpx.InvalidURL, ValueError):
        return normalize(a) == normalize(b)


def probe_p2p(url: str, timeout: float = 1.0) -> Hello | None:
    """The meshpay handshake Hello a P2P port sends first, if `url` is one (else None).

    Only used to explain a non-HTTP answer: a peer's P2P port speaks length-prefixed CBOR frames."""
    try:
        parsed = httpx.URL(normalize(url))
        with socket.create_connection((parsed.host, parsed.port or 80), timeout=timeout) as sock:
            sock.settimeout(timeout)
            data = b""
            while len(data) < 4 + 256:
                chunk = sock.recv(4 + 256 - len(data))
                if not chunk:
                    break
                data += chunk
                if len(data) >= 4 and len(data) >= 4 + int.from_bytes(data[:4], "big"):
                    break
    except (OSError, httpx.InvalidURL, ValueError):
        return None
    size = int.from_bytes(data[:4], "big") if len(data) >= 4 else 0
    if not 0 < size <= 256 or len(data) < 4 + size:
        return None
    try:
        return Hello.decode(data[4:4 + size])
    except (MeshpayError, ValueError):
        return None


@dataclass(frozen=True)
class OwnerView:
    """One owner's answer to GET /v1/accounts/{address}."""

    peer_id: bytes
    url: str
    balance: int
    next_seq: int
    credits: int
    history_length: int
    pending: tuple[int, str] | None  # (seq, payment id) of the lock at next_seq
    applied: str | None = None  # payment id of the debit it applied at the asked seq, if any

    def summary(self) -> tuple[int, int, int]:
        return (self.balance, self.next_seq, self.credits)


@dataclass
class AccountReading:
    """The views of an account's owners; `errors` says why the others gave none."""

    address: str
    owners: tuple[bytes, ...]
    quorum: int
    seq: int | None = None  # the sequence number each owner was asked what it applied at (`applied`)
    views: dict[bytes, OwnerView] = field(default_factory=dict)
    errors: dict[bytes, str] = field(default_factory=dict)

    @property
    def answered(self) -> list[OwnerView]:
        return [self.views[p] for p in self.owners if p in self.views]

    @property
    def silent(self) -> int:
        return len(self.owners) - len(self.views)

    def agreed(self) -> tuple[OwnerView | None, int]:
        """The view most owners share, and how many share it (ties: the most advanced view)."""
        counts = Counter(v.summary() for v in self.answered)
        if not counts:
            return None, 0
        best = max(counts, key=lambda s: (counts[s], s[1], s[2]))
        return next(v for v in self.answered if v.summary() == best), counts[best]

    @property
    def consistent(self) -> bool:
        """Every owner answered and they all agree."""
        return self.silent == 0 and len({v.summary() for v in self.answered}) == 1

    @property
    def confirmed(self) -> bool:
        """A quorum of owners agree: at most N-W owners can be wrong without the network failing."""
        return self.agreed()[1] >= self.quorum

    def next_seq(self, trusted: int) -> int | None:
        """The highest next_seq that at least `trusted` owners report reaching (None if too few answered).

        With at most `trusted - 1` faulty owners, one of them is honest, and an honest owner only
        advances after applying a certificate: the value never runs ahead of the truth.
        """
        seqs = sorted((v.next_seq for v in self.answered), reverse=True)
        return seqs[trusted - 1] if len(seqs) >= trusted else None

    def max_balance(self) -> int | None:
        return max((v.balance for v in self.answered), default=None)

    def locks_at(self, seq: int) -> Counter[str]:
        """How many answering owners hold a lock at `seq`, per locked payment id."""
        return Counter(v.pending[1] for v in self.answered if v.pending is not None and v.pending[0] == seq)


def _payment_id(value: Any) -> bytes:
    """A payment id as an owner writes it: exactly 64 lower-case hex digits (the one spelling
    `bytes.hex` gives back; `bytes.fromhex` alone also reads upper case and spaces)."""
    raw = bytes.fromhex(value) if isinstance(value, str) else b""
    if len(raw) != 32 or raw.hex() != value:
        raise ValueError("a payment id is 64 lower-case hex digits")
    return raw


def _int(doc: dict[str, Any], key: str) -> int:
    value = doc.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"`{key}` is not a non-negative integer")
    return value


class PeerClient:
    def __init__(self, url: str, *, known_peers: list[str] | None = None, timeout: float = READ_TIMEOUT,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.url = normalize(url)
        self.known_peers = [normalize(u) for u in known_peers or []]
        self.timeout = timeout
        self.peer_urls: dict[bytes, str] = {}  # peer id -> API URL, from /v1/peers and owner lists
        self.deadline: float | None = None  # time.monotonic() after which no request may wait
        # `transport` lets tests stand in for peers (httpx.MockTransport)
        self.http = httpx.Client(timeout=httpx.Timeout(timeout, connect=CONNECT_TIMEOUT), transport=transport)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> PeerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- plumbing ----------------------------------------------------------------------------------
    def suggestion(self, failed: str | None = None) -> str | None:
        """Another peer to try: from the last /v1/peers list, then the owners seen; never the one
        that failed, nor the one the user chose (however either was spelled)."""
        avoid = [failed or self.url, self.url]
        for url in [*self.known_peers, *self.peer_urls.values()]:
            if not any(same_peer(url, bad) for bad in avoid):
                return normalize(url)
        return None

    def remaining(self, cap: float) -> float:
        """How long the next request may wait: `cap`, or less when the deadline is nearer."""
        if self.deadline is None:
            return cap
        left = self.deadline - time.monotonic()
        if left <= 0.0:
            raise OutOfTime("the time given (--timeout) ran out while waiting for the peers")
        return min(cap, left)

    def _limit(self, cap: float) -> httpx.Timeout:
        wait = self.remaining(cap)
        return httpx.Timeout(wait, connect=min(CONNECT_TIMEOUT, wait))

    def _request(self, method: str, url: str, path: str, *, body: Any = None) -> httpx.Response:
        try:
            return self.http.request(method, url + path, json=body, timeout=self._limit(self.timeout))
        except httpx.TimeoutException as exc:
            raise PeerUnreachable(url, f"no answer ({type(exc).__name__})", self.suggestion(url)) from exc
        except httpx.TransportError as exc:
            raise self._unreachable(url, exc) from exc

    def _unreachable(self, url: str, exc: httpx.TransportError, payment_id: str | None = None) -> PeerUnreachable:
        if isinstance(exc, httpx.RemoteProtocolError):
            # A peer's P2P port waits for the caller's handshake and hangs up on anything else; a
            # peer that still greets first says who it is. Either way: say what the address is.
            hello = None if "disconnected" in str(exc).lower() else probe_p2p(url)
            if hello is not None:
                api = self.peer_urls.get(hello.peer_id) or self._api_of(hello.peer_id, url)
                where = f"; that peer's API is {api}" if api else ""
                return NotHttp(url, f"it is the P2P port of meshpay peer {hello.peer_id.hex()[:12]}… (network "
                                    f"{hello.network.hex()[:16]}…), not its HTTP API port{where}",
                               api or self.suggestion(url))
            listed = self._p2p_listed(url)
            if listed is not None:
                peer_id, api = listed
                where = f"; that peer's API is {api}" if api else ""
                return NotHttp(url, f"it is the P2P port of meshpay peer {peer_id[:12]}…, not its HTTP API "
                                    f"port{where}", api or self.suggestion(url))
            if "disconnected" in str(exc).lower():
                return PeerUnreachable(url, _describe(exc), self.suggestion(url), payment_id)
            return NotHttp(url, f"it does not answer in HTTP ({exc}); is this a peer's P2P port rather than "
                                "its HTTP API port ([api] in peer.toml)?", self.suggestion(url))
        return PeerUnreachable(url, _describe(exc), self.suggestion(url), payment_id)

    def _json(self, url: str, response: httpx.Response) -> dict[str, Any]:
        try:
            doc = response.json()
        except ValueError as exc:
            raise BadAnswer(url, f"HTTP {response.status_code} with a body that is not JSON") from exc
        if not isinstance(doc, dict):
            raise BadAnswer(url, "the JSON answer is not an object")
        return doc

    def _p2p_listed(self, url: str) -> tuple[str, str | None] | None:
        """(peer id, API URL) of the peer whose P2P address `url` is, as another known peer lists it."""
        rows = self._listed_peers(url)
        try:
            parsed = httpx.URL(normalize(url))
            wanted = {info[4][0] for info in socket.getaddrinfo(parsed.host, parsed.port or 80, type=socket.SOCK_STREAM)}
        except (OSError, httpx.InvalidURL, ValueError):
            return None
        for row in rows:
            if row.get("port") == parsed.port and row.get("host") in wanted and isinstance(row.get("peer_id"), str):
                api = row.get("api")
                return row["peer_id"], normalize(api) if isinstance(api, str) else None
        return None

    def _listed_peers(self, failed: str) -> list[dict]:
        """The members list of another known peer (one short request; empty if none answers)."""
        other = self.suggestion(failed)
        if other is None:
            return []
        try:
            rows = self.http.get(other + "/v1/peers", timeout=self._limit(1.0)).json().get("peers")
        except (httpx.HTTPError, ValueError, AttributeError, OutOfTime):
            return []  # only an explanation is lost
        return [row for row in rows if isinstance(row, dict)] if isinstance(rows, list) else []

    def _api_of(self, peer_id: bytes, failed: str) -> str | None:
        """A peer's API URL, from the members list of another known peer (one short request)."""
        for row in self._listed_peers(failed):
            if row.get("peer_id") == peer_id.hex() and isinstance(row.get("api"), str):
                return normalize(row["api"])
        return None

    def _error(self, url: str, response: httpx.Response, payment_id: str | None = None) -> ClientError:
        doc = self._json(url, response)
        error = doc.get("error")
        if not isinstance(error, dict) or not isinstance(error.get("code"), str):
            return BadAnswer(url, f"HTTP {response.status_code} without an error code")
        code, message = error["code"], str(error.get("message", ""))
        extra = {k: v for k, v in error.items() if k not in ("code", "message")}
        if response.status_code in (429, 503) or code == "shutting_down":
            return PeerBusy(url, code, message, self.suggestion(url), payment_id)
        return Refused(url, response.status_code, code, message, extra)

    def get(self, path: str, url: str | None = None) -> dict[str, Any]:
        url = url or self.url
        response = self._request("GET", url, path)
        if response.status_code != 200:
            raise self._error(url, response)
        return self._json(url, response)

    # ---- node --------------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        return self.get("/v1/status")

    def peers(self) -> list[dict[str, Any]]:
        rows = self.get("/v1/peers").get("peers")
        if not isinstance(rows, list):
            raise BadAnswer(self.url, "/v1/peers has no `peers` list")
        for row in rows:
            if isinstance(row, dict) and isinstance(row.get("api"), str) and isinstance(row.get("peer_id"), str):
                try:
                    self.peer_urls[bytes.fromhex(row["peer_id"])] = normalize(row["api"])
                except ValueError:
                    continue
        return rows

    def genesis(self) -> Genesis:
        try:
            return genesis_file.from_json(self.get("/v1/genesis"))
        except genesis_file.GenesisError as exc:
            raise BadAnswer(self.url, f"its genesis is invalid: {exc}") from exc

    # ---- accounts ------------------------------------------------------------------------------------
    def _learn_owners(self, doc: dict[str, Any]) -> None:
        for row in doc.get("owners") or []:
            if isinstance(row, dict) and isinstance(row.get("api"), str) and isinstance(row.get("peer_id"), str):
                try:
                    self.peer_urls[bytes.fromhex(row["peer_id"])] = normalize(row["api"])
                except ValueError:
                    continue

    @staticmethod
    def _view(url: str, address: str, doc: dict[str, Any], network_id: bytes, challenge: bytes,
              seq: int | None) -> OwnerView:
        """An owner's answer, accepted only with that owner's signature over it and our challenge
        (crypto/account_view.py): the peer that told us where the owners are cannot answer for them."""
        try:
            if doc.get("address") != address:
                raise ValueError("it answered for another address")
            account = decode_address(address)
            pending = doc.get("pending")
            lock_id = None
            if pending is not None:
                lock_seq, lock_id = _int(pending, "seq"), _payment_id(pending.get("payment_id"))
            applied_id = None
            if seq is not None:
                at = doc.get("applied_at")
                if not isinstance(at, dict) or type(at.get("seq")) is not int or at["seq"] != seq:
                    raise ValueError("it did not say what it applied at the sequence number asked")
                if at.get("payment_id") is not None:
                    applied_id = _payment_id(at["payment_id"])
            # Ids are kept as the canonical hex of the bytes the signature covers: the wallet compares
            # them as text, and `bytes.fromhex` also reads other spellings of the same id.
            view = OwnerView(bytes.fromhex(doc["peer_id"]), url, _int(doc, "balance"), _int(doc, "next_seq"),
                             _int(doc, "credits"), _int(doc, "history_length"),
                             None if lock_id is None else (lock_seq, lock_id.hex()),
                             None if applied_id is None else applied_id.hex())
            attestation = doc.get("attestation")
            if not isinstance(attestation, dict) or attestation.get("challenge") != challenge.hex():
                raise ValueError("the answer is not signed for this request")
            signature = bytes.fromhex(str(attestation.get("signature")))
            signed = AccountView(view.peer_id, account, view.balance, view.next_seq, view.credits,
                                 view.history_length, None if lock_id is None else (lock_seq, lock_id),
                                 seq, applied_id, challenge)
        except (KeyError, TypeError, ValueError, AddressError) as exc:
            raise BadAnswer(url, f"malformed account answer: {exc}") from exc
        if not signed.signature_valid(network_id, signature):
            raise BadAnswer(url, f"the answer is not signed by the owner it names ({view.peer_id.hex()[:12]})")
        return view

    def _ask_owner(self, url: str, address: str, query: str, network_id: bytes, challenge: bytes,
                   seq: int | None) -> OwnerView | str:
        """One owner's view, or why there is none (never raises: one silent owner is expected)."""
        try:
            doc = self.get(f"/v1/accounts/{address}{query}", url)
            return self._view(url, address, doc, network_id, challenge, seq)
        except ClientError as exc:
            return str(exc)

    def read_account(self, address: str, owners: tuple[bytes, ...], quorum: int, network_id: bytes, *,
                     seq: int | None = None) -> AccountReading:
        """Every owner's signed view of `address` (with `seq`: also the debit each applied there).

        `owners` comes from the wallet's own ring, and each answer must carry the signature of the
        owner it names over a fresh challenge: a peer can point the wallet at wrong addresses (then
        those owners count as silent), never answer in an owner's place."""
        reading = AccountReading(address, owners, quorum, seq)
        challenge = os.urandom(CHALLENGE_SIZE)
        query = f"?challenge={challenge.hex()}" + ("" if seq is None else f"&seq={seq}")
        response = self._request("GET", self.url, f"/v1/accounts/{address}{query}")
        if response.status_code not in (200, 421):
            raise self._error(self.url, response)
        doc = self._json(self.url, response)
        if response.status_code == 421:
            doc = doc.get("error") if isinstance(doc.get("error"), dict) else {}
            self._learn_owners(doc)
        else:
            self._learn_owners(doc)
            try:
                view = self._view(self.url, address, doc, network_id, challenge, seq)
            except BadAnswer:
                view = None  # the chosen peer's own answer does not count; the owners are asked below
            if view is not None and view.peer_id in owners:
                reading.views[view.peer_id] = view
        todo = [p for p in owners if p not in reading.views]
        missing = [p for p in todo if p not in self.peer_urls]
        for pid in missing:
            reading.errors[pid] = "no API address known for this owner"
        asks = [p for p in todo if p in self.peer_urls]
        if asks:
            with ThreadPoolExecutor(max_workers=len(asks)) as pool:
                answers = list(pool.map(
                    lambda p: self._ask_owner(self.peer_urls[p], address, query, network_id, challenge, seq), asks))
            for pid, answer in zip(asks, answers, strict=True):
                if isinstance(answer, str):
                    reading.errors[pid] = answer
                elif answer.peer_id != pid:
                    reading.errors[pid] = f"{answer.url} answered as another peer ({answer.peer_id.hex()[:12]})"
                else:
                    reading.views[pid] = answer
        return reading

    def history(self, address: str, urls: list[str], limit: int) -> tuple[str, dict[str, Any]]:
        """(url, history answer) from the first of `urls` that serves it."""
        last: ClientError | None = None
        for url in urls:
            try:
                return url, self.get(f"/v1/accounts/{address}/history?limit={limit}", url)
            except ClientError as exc:
                last = exc
        raise last or ClientError("no owner of the account is known")

    # ---- payments --------------------------------------------------------------------------------------
    def submit(self, order: Order, wait: str, timeout: float) -> dict[str, Any]:
        """Hand `order` to this peer (the gateway) and wait up to `timeout` s for `wait` (the peer
        waits that long; the HTTP request a little longer, within the deadline)."""
        payment_id = order.id.hex()
        server_wait = round(min(max(timeout, 0.05), MAX_SERVER_WAIT), 3)
        body = {"order": order.encode().hex(), "wait": wait, "timeout": server_wait}
        # The HTTP wait must outlast the peer's, or a slow certificate looks like a dead peer.
        try:
            limit = self._limit(server_wait + 5.0)
        except OutOfTime as exc:
            raise Timeout(payment_id, "unknown", "no time was left to submit it") from exc
        try:
            response = self.http.post(self.url + "/v1/payments", json=body, timeout=limit)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise PeerUnreachable(self.url, _describe(exc), self.suggestion(), payment_id) from exc
        except httpx.TimeoutException as exc:
            raise Timeout(payment_id, "unknown", f"{self.url} did not answer within {limit.read:.1f} s") from exc
        except httpx.TransportError as exc:
            raise self._unreachable(self.url, exc, payment_id) from exc
        if response.status_code in (200, 202):
            doc = self._json(self.url, response)
            if doc.get("payment_id") != payment_id:
                raise BadAnswer(self.url, "it answered about another payment")
            return doc
        error = self._error(self.url, response, payment_id)
        if isinstance(error, Refused) and error.http_status == 504:
            raise Timeout(payment_id, str(error.extra.get("status", "pending")), error.message)
        if isinstance(error, Refused) and error.http_status == 409:
            raise Conflict(self.url, error.message, error.extra, _locked_id(error.extra.get("evidence"), order))
        raise error

    def payment(self, payment_id: str, url: str | None = None) -> dict[str, Any] | None:
        """GET /v1/payments/{id} at one peer; None when that peer has no record of it."""
        url = url or self.url
        response = self._request("GET", url, f"/v1/payments/{payment_id}")
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise self._error(url, response)
        doc = self._json(url, response)
        if doc.get("payment_id") != payment_id:
            raise BadAnswer(url, "it answered about another payment")
        return doc


def _locked_id(evidence: Any, ours: Order) -> str | None:
    """The id of the order a conflict names, if the evidence proves it: signed by our sender, same seq."""
    if not isinstance(evidence, str):
        return None
    try:
        locked = Order.decode(bytes.fromhex(evidence))
    except (MeshpayError, ValueError):
        return None
    if locked.sender != ours.sender or locked.seq != ours.seq or not locked.signature_valid():
        return None
    return locked.id.hex()


def _describe(exc: httpx.TransportError) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.ConnectError) and "refused" in text.lower():
        return "connection refused (is it running?)"
    return text
