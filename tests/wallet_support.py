"""Helpers for the wallet tests: a running devnet with guaranteed clean-up, running the wallet CLI
in-process or as a subprocess, and a proxy that makes a real peer lie."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from typer.testing import CliRunner

from crypto.messages import Certificate, Order, Vote
from devnet import layout, processes
from devnet.layout import Devnet, PeerEntry
from wallet import cli

REPO = Path(__file__).resolve().parent.parent
WALLET_ENV = ("MESHPAY_WALLET_DIR", "MESHPAY_PEER", "MESHPAY_GENESIS", "MESHPAY_WALLET_ACCOUNT",
              "MESHPAY_WALLET_PASSWORD_FILE", "MESHPAY_WALLET_PASSWORD", "MESHPAY_WALLET_NEW_PASSWORD")


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)

    def __str__(self) -> str:  # shown by pytest when an assertion on a result fails
        return f"exit {self.code}\nstdout: {self.out}\nstderr: {self.err}"


def wallet(*args: str | Path, env: dict[str, str] | None = None) -> Result:
    """`wallet ARGS` in this process (CliRunner's isolation: captured streams, a clean environment)."""
    clean: dict[str, str | None] = dict.fromkeys(WALLET_ENV)
    clean.update(env or {})
    with CliRunner().isolation(env=clean) as (stdout, stderr, _):
        code = cli.run([str(a) for a in args])
        sys.stdout.flush()
        sys.stderr.flush()
        return Result(code, stdout.getvalue().decode(), stderr.getvalue().decode())


def wallet_proc(*args: str | Path, env: dict[str, str] | None = None, timeout: float = 60.0) -> Result:
    """`python -m wallet ARGS` as a real process (what a user runs)."""
    full = {k: v for k, v in os.environ.items() if k not in WALLET_ENV}
    full.update(env or {})
    proc = subprocess.run([sys.executable, "-m", "wallet", *map(str, args)], capture_output=True, text=True,
                          env=full, cwd=REPO, timeout=timeout)
    return Result(proc.returncode, proc.stdout, proc.stderr)


# ---- devnet ---------------------------------------------------------------------------------------
def gone(pid: int, timeout: float) -> bool:
    """Wait until `pid` has exited, reaping it if it is our child.

    Not `processes.wait_exit`: it reports a zombie child as still running (a zombie's
    /proc/PID/cmdline is empty, which `is_running` takes as "trust the pid"), so it never sees a
    peer this process started exit; see test_e2e_wallet's xfail test.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return True
        except ChildProcessError:  # not our child: is it still there at all?
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def stop(devnet: Devnet, entry: PeerEntry, *, timeout: float = 8.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `timeout`."""
    pid = entry.pid
    if pid is not None and processes.is_running(entry, devnet):
        os.kill(pid, signal.SIGTERM)
        if not gone(pid, timeout):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            gone(pid, 5.0)
    entry.pid = None
    devnet.save()


def stop_all(devnet: Devnet) -> None:
    """Stop every peer (never leaves a process behind, even when a test failed half-way)."""
    for entry in devnet.peers:
        stop(devnet, entry)


@contextlib.contextmanager
def running_devnet(root: Path, *, peers: int = 4, wallets: int = 4) -> Iterator[Devnet]:
    devnet = layout.create(root, peers=peers, wallets=wallets, replication=4, quorum=3, fsync=False)
    try:
        for entry in devnet.peers:
            processes.start_peer(devnet, entry)
        processes.wait_converged(devnet, timeout=40)
        yield devnet
    finally:
        stop_all(devnet)


def demo_env(devnet: Devnet, peer: int = 0) -> dict[str, str]:
    """The environment that points the wallet at a devnet's demo wallets, through one peer."""
    return {"MESHPAY_WALLET_DIR": str(devnet.wallet_dir()), "MESHPAY_PEER": devnet.peers[peer].api,
            "MESHPAY_WALLET_PASSWORD_FILE": str(devnet.password_file)}


def kill(devnet: Devnet, entry: PeerEntry) -> None:
    """SIGKILL a peer and wait until it is gone."""
    assert entry.pid is not None and processes.signal_peer(devnet, entry, signal.SIGKILL), f"{entry.name} was not running"
    assert gone(entry.pid, 10.0), f"{entry.name} survived SIGKILL"
    entry.pid = None
    devnet.save()


def restart(devnet: Devnet, *entries: PeerEntry) -> None:
    for entry in entries:
        processes.start_peer(devnet, entry)
    processes.wait_converged(devnet, timeout=40)


def spawn(devnet: Devnet, entry: PeerEntry) -> subprocess.Popen[bytes]:
    """Start a peer like `processes.start_peer`, but keep the Popen: `start_peer` drops it, so the
    exit status of a peer it started cannot be read (subprocess's own clean-up may reap it first)."""
    log = devnet.log_path(entry.name).open("ab")
    env = {**os.environ, "MESHPAY_LOG__FORMAT": "text"}
    env.pop("MESHPAY_PASSWORD", None)
    proc = subprocess.Popen([sys.executable, "-m", "peer", "run", "--config", str(devnet.config_path(entry.name))],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True, cwd=devnet.peer_dir(entry.name), env=env)
    log.close()
    entry.pid = proc.pid
    devnet.save()
    return proc


def account_views(devnet: Devnet, address: str) -> list[dict[str, Any]]:
    """GET /v1/accounts/ADDRESS on every peer (all of them own every account with N = 4 peers)."""
    return [httpx.get(f"{p.api}/v1/accounts/{address}", timeout=5.0).json() for p in devnet.peers]


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def tamper_vote(cert: Certificate, index: int = 0, byte: int = 10) -> Certificate:
    """The same certificate with one byte of one vote signature altered."""
    vote = cert.votes[index]
    sig = bytearray(vote.sig)
    sig[byte] ^= 0x01
    votes = list(cert.votes)
    votes[index] = Vote(vote.order_id, vote.epoch, vote.voter, bytes(sig))
    return Certificate(cert.order, tuple(votes))


# ---- a lying peer -------------------------------------------------------------------------------------
class _JsonHandler(BaseHTTPRequestHandler):
    """A test proxy's request handler: quiet, and answers with JSON bytes."""

    def log_message(self, *args: Any) -> None:  # keep pytest output clean
        pass

    def _answer(self, status: int, data: bytes) -> None:
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class LyingProxy:
    """An HTTP proxy in front of one real peer that alters its answers:
    `inflate` adds to the balance it reports for accounts; `forge` corrupts the certificates it
    returns for payments (one vote signature), `zero_sig` replaces their order signature with zeros;
    `drop` passes a payment on to the peer, then closes the connection without answering; `fail`
    passes it on, then answers this `(http status, code)` error instead of the peer's answer;
    `swallow` keeps a payment from the peer and answers this `(http status, code)` error;
    `apis` maps real API URLs to others in every answer (to point the wallet at more proxies).
    Everything else is passed through unchanged."""

    def __init__(self, upstream: str, *, inflate: int = 0, forge: bool = False, zero_sig: bool = False,
                 drop: bool = False, fail: tuple[int, str] | None = None, swallow: tuple[int, str] | None = None,
                 apis: dict[str, str] | None = None) -> None:
        self.upstream = upstream
        self.swallow = swallow
        self.swallowed: list[str] = []  # payment ids kept from the peer
        self.inflate = inflate
        self.forge = forge
        self.zero_sig = zero_sig
        self.drop = drop
        self.fail = fail
        self.apis = apis if apis is not None else {}
        self.submitted: list[str] = []  # payment ids passed on to the peer
        proxy = self

        class Handler(_JsonHandler):
            def _relay(self, method: str) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0)) if method == "POST" else None
                if method == "POST" and self.path.startswith("/v1/payments") and body and proxy.swallow:
                    pid = Order.decode(bytes.fromhex(json.loads(body)["order"])).id.hex()
                    proxy.swallowed.append(pid)
                    status, code = proxy.swallow
                    self._answer(status, json.dumps({"error": {"code": code, "message": "refused (a lie)",
                                                               "payment_id": pid}}).encode())
                    return
                upstream = httpx.request(method, proxy.upstream + self.path, content=body, timeout=70.0,
                                         headers={"content-type": "application/json"} if body else None)
                status, data = upstream.status_code, proxy.alter(self.path, upstream.content)
                if method == "POST" and self.path.startswith("/v1/payments"):
                    proxy.submitted.append(str(upstream.json().get("payment_id")))
                    if proxy.drop:
                        self.close_connection = True
                        self.connection.shutdown(socket.SHUT_RDWR)
                        return
                    if proxy.fail is not None:
                        status, code = proxy.fail
                        data = json.dumps({"error": {"code": code, "message": "refused (a lie)", "status": "failed",
                                                     "payment_id": upstream.json().get("payment_id")}}).encode()
                self._answer(status, data)

            def do_GET(self) -> None:
                self._relay("GET")

            def do_POST(self) -> None:
                self._relay("POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def alter(self, path: str, data: bytes) -> bytes:
        try:
            doc = json.loads(data)
        except ValueError:
            return data
        if self.inflate and path.startswith("/v1/accounts/") and "/history" not in path and "balance" in doc:
            doc["balance"] += self.inflate
        if (self.forge or self.zero_sig) and path.startswith("/v1/payments") and isinstance(doc.get("certificate"), dict):
            cert = Certificate.decode(bytes.fromhex(doc["certificate"]["cbor"]))
            if self.forge:
                cert = tamper_vote(cert)
            if self.zero_sig:
                o = cert.order
                cert = Certificate(Order(o.network, o.sender, o.recipient, o.amount, o.seq, o.memo, bytes(64)), cert.votes)
            doc["certificate"] = {"cbor": cert.encode().hex(),
                                  "votes": [{"voter": v.voter.hex(), "sig": v.sig.hex()} for v in cert.votes]}
        text = json.dumps(doc)
        for real, fake in self.apis.items():
            text = text.replace(json.dumps(real), json.dumps(fake))
        return text.encode()

    def __enter__(self) -> LyingProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


class ImpersonatingGateway:
    """A Byzantine gateway (an HTTP proxy in front of one real peer) that answers in the owners'
    place: every owner's API address it hands out points back at itself, it keeps the first order
    it is given and answers `seq_too_low`, and while it holds that order it tells the wallet, in
    each owner's name, that the order's seq was used by another payment (its next_seq past it, no
    lock, another payment applied there). When the wallet then submits a different order, it
    releases the one it kept first: a wallet that believed it would pay twice."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.apis: dict[str, str] = {}  # peer id hex -> real API URL
        self.kept: dict[str, Any] | None = None  # {"order": hex, "seq": int, "id": hex}
        self.released = False
        self.orders: list[tuple[int, str]] = []  # (seq, payment id) of every order it was given
        proxy = self

        class Handler(_JsonHandler):
            protocol_version = "HTTP/1.1"

            def _any(self) -> None:
                size = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(size) if size else None
                status, doc = proxy.answer(self.command, self.path, body)
                self._answer(status, json.dumps(doc).encode())

            do_GET = do_POST = _any

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _point_here(self, doc: Any) -> Any:
        if isinstance(doc, dict):
            return {k: (f"{self.url}/o/{doc['peer_id']}" if k == "api" and isinstance(doc.get("peer_id"), str)
                        else self._point_here(v)) for k, v in doc.items()}
        if isinstance(doc, list):
            return [self._point_here(v) for v in doc]
        return doc

    def answer(self, method: str, path: str, body: bytes | None) -> tuple[int, Any]:
        base = self.upstream
        as_owner = path.startswith("/o/")
        if as_owner:
            _, _, pid, rest = path.split("/", 3)
            base, path = self.apis[pid], "/" + rest
        kept = self.kept
        if as_owner and kept is not None and not self.released and "/history" in path:
            return 200, {"address": path.split("/")[3], "next_before": None, "entries": [
                {"index": 0, "payment_id": "ff" * 32, "direction": "out", "amount": 1, "seq": kept["seq"], "memo": ""}]}
        if as_owner and kept is not None and not self.released and path.startswith("/v1/accounts/"):
            upstream = httpx.get(base + path, timeout=10.0)
            doc = upstream.json()
            if upstream.status_code == 200:
                doc["next_seq"] = kept["seq"] + 1
                doc["pending"] = doc["lock"] = None
                if isinstance(doc.get("applied_at"), dict):
                    doc["applied_at"]["payment_id"] = "ff" * 32
            return upstream.status_code, self._point_here(doc)
        if method == "POST" and path == "/v1/payments" and body:
            order = Order.decode(bytes.fromhex(json.loads(body)["order"]))
            self.orders.append((order.seq, order.id.hex()))
            if kept is None:
                self.kept = {"order": order.encode().hex(), "seq": order.seq, "id": order.id.hex()}
                return 422, {"error": {"code": "seq_too_low", "message": "sequence number already used",
                                       "payment_id": order.id.hex()}}
            if not self.released and order.id.hex() != kept["id"]:
                self.released = True
                httpx.post(self.upstream + "/v1/payments", json={"order": kept["order"], "wait": "settled",
                                                                 "timeout": 20}, timeout=30.0)
        upstream = httpx.request(method, base + path, content=body, timeout=70.0,
                                 headers={"content-type": "application/json"} if body else None)
        try:
            doc = upstream.json()
        except ValueError:
            doc = {}
        return upstream.status_code, self._point_here(doc)

    def __enter__(self) -> ImpersonatingGateway:
        for row in httpx.get(self.upstream + "/v1/peers", timeout=5.0).json()["peers"]:
            if isinstance(row.get("api"), str):
                self.apis[row["peer_id"]] = row["api"].rstrip("/")
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextlib.contextmanager
def lying_network(devnet: Devnet, **lies: Any) -> Iterator[list[LyingProxy]]:
    """A LyingProxy in front of every peer, each answer pointing at the proxies instead of the
    peers: a wallet on proxies[0] sees the whole network only through liars."""
    proxies = [LyingProxy(p.api, **lies) for p in devnet.peers]
    apis = {p.api: proxy.url for p, proxy in zip(devnet.peers, proxies, strict=True)}
    with contextlib.ExitStack() as stack:
        for proxy in proxies:
            proxy.apis = apis
            stack.enter_context(proxy)
        yield proxies
