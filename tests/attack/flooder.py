"""An attacker for the flood tests: NOT part of meshpay, and only ever pointed at a test devnet.

    python -m tests.attack.flooder --network HEX --peer HOST:PORT [--peer ...]
        [--identities N] [--per-sync R] [--concurrency C] [--identity-seconds S]
        [--sessions M] [--session-peer HOST:PORT ...] [--ramp-seconds R] [--retry-seconds T]
        [--hold-seconds H]

Identities: N fresh keys, each with a genuinely signed peer record pointing at 127.0.0.1:1 (where
nothing listens; all made before the flood starts), handshake as peers with the target peers in
turn and push one `Sync` holding their own record and R records of the others: N fake identities
and records in all, each record relayed about R times. At most C at once, for at most S seconds.

Sessions (at the same time): hold M idle client sessions, spread over the session peers (default:
all peers), opened over the first R seconds (default: M/50), reopening any that a peer refuses or
closes after about T seconds, for H seconds or until stdin closes.

stdout, JSON lines: {"event": "identities", ...counts} and {"event": "sessions", ...counts} once a
second, {"event": "identities_done", ...} when that phase ends, and {"event": "done", ...} last.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from collections import Counter
from typing import Any

import trio

from crypto.keys import SigningKey
from crypto.messages import PeerRecord
from gossip.client import CONNECTION_FAILURES, open_client
from gossip.connection import TransportStats, connect
from gossip.handshake import HandshakeRefused
from gossip.limits import DEFAULT_LIMITS
from gossip.links import ConnectError
from gossip.wire import ALIVE, MAX_SYNC_MEMBERS, Sync, Update

CLOSED = ("127.0.0.1", 1)
LINGER = 0.05  # seconds a connection stays open after its Sync (nothing is unread, so close sends FIN)


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def _reason(exc: BaseException) -> str:
    cause = exc.__cause__ if isinstance(exc, ConnectError) else exc
    if isinstance(cause, HandshakeRefused):
        return f"refused:{cause.reason.split(';')[0][:40]}"
    return type(cause or exc).__name__


class Flooder:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.network = bytes.fromhex(args.network)
        self.peers = [_hostport(p) for p in args.peer]
        self.session_peers = [_hostport(p) for p in args.session_peer] or self.peers
        self.rng = random.Random(args.seed)
        self.keys: list[SigningKey] = []
        self.pool: list[Update] = []  # every fake identity's signed record
        self.ids: Counter[str] = Counter()
        self.sessions: Counter[str] = Counter()
        self.open_sessions = 0
        self.started = time.monotonic()
        self.stop = trio.Event()

    def fake(self) -> tuple[SigningKey, Update]:
        key = SigningKey.from_seed(self.rng.randbytes(32))
        record = PeerRecord.create(key, self.network, CLOSED[0], CLOSED[1], 0, 0)
        return key, Update(ALIVE, key.public, 0, key.public, record.encode())

    async def run(self) -> None:
        for _ in range(self.args.identities):
            key, update = self.fake()
            self.keys.append(key)
            self.pool.append(update)
        emit({"event": "ready", "records": len(self.pool), "seconds": round(time.monotonic() - self.started, 2)})
        self.started = time.monotonic()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._watch_stdin)
            nursery.start_soon(self._report)
            ramp = self.args.sessions / 50 if self.args.ramp_seconds is None else self.args.ramp_seconds
            for i in range(self.args.sessions):
                start = ramp * i / max(1, self.args.sessions)
                nursery.start_soon(self._hold_session, self.session_peers[i % len(self.session_peers)], start)
            await self._identities()
            emit({"event": "identities_done", **self._counts()})
            with trio.move_on_after(max(0.0, self.args.hold_seconds - (time.monotonic() - self.started))):
                await self.stop.wait()
            nursery.cancel_scope.cancel()
        emit({"event": "done", **self._counts()})

    def _counts(self) -> dict[str, Any]:
        return {"seconds": round(time.monotonic() - self.started, 2), "identities": dict(self.ids),
                "sessions": dict(self.sessions), "open_sessions": self.open_sessions}

    async def _report(self) -> None:
        while True:
            await trio.sleep(1.0)
            emit({"event": "progress", **self._counts()})

    async def _watch_stdin(self) -> None:
        stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
        async with stdin:
            while await stdin.receive_some(4096):
                pass
        self.stop.set()

    # ---- fake identities pushing fake records -----------------------------------------------------
    async def _identities(self) -> None:
        limiter = trio.Semaphore(self.args.concurrency)
        with trio.move_on_after(self.args.identity_seconds):
            async with trio.open_nursery() as nursery:
                for i, (key, own) in enumerate(zip(self.keys, self.pool, strict=True)):
                    await limiter.acquire()
                    nursery.start_soon(self._one_identity, limiter, key, own, self.peers[i % len(self.peers)])

    async def _one_identity(self, limiter: trio.Semaphore, key: SigningKey, own: Update,
                            peer: tuple[str, int]) -> None:
        try:
            count = min(self.args.per_sync, len(self.pool) - 1, MAX_SYNC_MEMBERS - 1)
            others = self.rng.sample(self.pool, count)
            payload = Sync(True, False, (own, *others)).encode()
            try:
                conn = await connect(peer[0], peer[1], key, self.network, DEFAULT_LIMITS, TransportStats())
            except CONNECTION_FAILURES as exc:
                self.ids[_reason(exc)] += 1
                return
            try:
                await conn.send([payload])
                await trio.sleep(LINGER)
                self.ids["pushed"] += 1
                self.ids["records_pushed"] += 1 + len(others)
            except CONNECTION_FAILURES as exc:
                self.ids[f"send:{type(exc).__name__}"] += 1
            finally:
                conn.close()
        finally:
            limiter.release()

    # ---- idle client sessions ---------------------------------------------------------------------
    async def _hold_session(self, peer: tuple[str, int], start: float) -> None:
        await trio.sleep(start)
        while True:
            try:
                client = await open_client(peer[0], peer[1], self.network)
            except ConnectError as exc:
                self.sessions[_reason(exc)] += 1
                await trio.sleep(self.args.retry_seconds * (0.5 + self.rng.random()))
                continue
            self.sessions["opened"] += 1
            self.open_sessions += 1
            try:
                await client.receive()  # never sends anything: returns only when the peer closes it
            except (trio.EndOfChannel, *CONNECTION_FAILURES):
                pass
            finally:
                self.open_sessions -= 1
                await client.aclose()
            self.sessions["closed_by_peer"] += 1
            await trio.sleep(self.args.retry_seconds * (0.5 + self.rng.random()))


def _hostport(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m tests.attack.flooder")
    p.add_argument("--network", required=True)
    p.add_argument("--peer", action="append", required=True, metavar="HOST:PORT")
    p.add_argument("--session-peer", action="append", default=[], metavar="HOST:PORT")
    p.add_argument("--identities", type=int, default=2000)
    p.add_argument("--per-sync", type=int, default=100)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--identity-seconds", type=float, default=60.0)
    p.add_argument("--sessions", type=int, default=0)
    p.add_argument("--ramp-seconds", type=float, default=None)
    p.add_argument("--retry-seconds", type=float, default=2.0)
    p.add_argument("--hold-seconds", type=float, default=60.0)
    p.add_argument("--seed", type=int, default=0)
    trio.run(Flooder(p.parse_args(argv)).run)


if __name__ == "__main__":
    main()
