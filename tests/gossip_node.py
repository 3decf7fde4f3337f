"""A gossip-only node for tests and benchmarks — NOT the peer daemon (no settlement, no store).

    python -m tests.gossip_node --key-seed HEX --network HEX [--port P] [--seed HOST:PORT ...]
                                [--incarnation N] [--probe-interval S ...] [--quiet]

It runs the daemon's own classes — `TcpTransport` on 127.0.0.1, `Membership`, `Broadcast` and
`Runtime` — and talks JSON lines so a test or benchmark can drive several of them as separate OS
processes. Broadcast payloads must be signed `Order`s (kind 1, self-verifying like a certificate);
the `validate` hook decodes and verifies each one before it is delivered or relayed, so what is
measured is signed broadcast.

stdout, one JSON object per line:
    {"event":"ready","id":HEX,"port":P,"incarnation":N}
    {"event":"member","peer":HEX,"state":"alive|suspect|dead|left","incarnation":N}
    {"event":"delivered","id":HEX,"hops":H,"t":UNIX_TIME}   (not with --quiet)
    {"event":"published","id":HEX,"t":UNIX_TIME}
    replies to commands: "members", "stats", "deliveries", "flood_done", "error"
stdin, one JSON object per line:
    {"cmd":"publish","payload_hex":HEX}
    {"cmd":"vote"}                      sign a fresh Order with this node's key and publish it
    {"cmd":"flood","count":N,"rate":R,"max_seconds":S}
                                        publish N fresh signed Orders at R per second (bounded by S)
    {"cmd":"members"} | {"cmd":"stats"}
    {"cmd":"deliveries","clear":BOOL}  every delivery since start (or the last clear): [[id, t, hops], ...]
    {"cmd":"exit"}                      (EOF on stdin also exits)

Nothing is persisted: a restarted process must be given a higher `--incarnation` by whoever
restarts it (the daemon keeps it in its store). Membership timings default to the library's
`MembershipConfig`; the flags exist so tests can run faster timings.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import trio

from crypto.errors import DecodeError
from crypto.keys import SigningKey
from crypto.messages import Order
from gossip.broadcast import Broadcast, BroadcastConfig, Delivered, Verdict
from gossip.membership import MemberChanged, Membership, MembershipConfig
from gossip.runtime import Runtime
from gossip.transport import TcpTransport
from gossip.wire import STATE_NAMES

HOST = "127.0.0.1"


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def validate_signed(network_id: bytes) -> Callable[[bytes], Verdict]:
    def validate(payload: bytes) -> Verdict:
        try:
            order = Order.decode(payload)
        except DecodeError:
            return Verdict.REJECT
        ok = order.network == network_id and order.signature_valid()
        return Verdict.ACCEPT if ok else Verdict.REJECT

    return validate


class StandaloneNode:
    def __init__(self, args: argparse.Namespace) -> None:
        self.key = SigningKey.from_seed(bytes.fromhex(args.key_seed))
        self.network_id = bytes.fromhex(args.network)
        self.args = args
        self.transport = TcpTransport(self.key, self.network_id, host=HOST, port=args.port)
        self.membership: Membership | None = None
        self.broadcast: Broadcast | None = None
        self.runtime: Runtime | None = None
        self.deliveries: list[tuple[str, float, int]] = []
        self._vote_counter = 0
        self._nonce = os.urandom(16)
        self._recipient = SigningKey.from_seed(self._nonce * 2).public

    def _config(self) -> MembershipConfig:
        a = self.args
        overrides = {name: getattr(a, name) for name in (
            "probe_interval", "probe_timeout", "gossip_interval", "suspicion_mult",
            "sync_interval", "reconnect_interval", "seed_retry_max") if getattr(a, name) is not None}
        return MembershipConfig(**overrides)

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(self.transport.serve)
            seeds = [(h, int(p)) for h, p in (s.rsplit(":", 1) for s in self.args.seed)]
            self.membership = Membership(self.key, self.network_id, HOST, port,
                                         incarnation=self.args.incarnation, seeds=seeds,
                                         config=self._config())
            self.broadcast = Broadcast(self.network_id, self.membership.alive, self.key.public,
                                       validate=validate_signed(self.network_id),
                                       config=BroadcastConfig(fanout=self.args.fanout))
            self.runtime = Runtime(self.transport, self.membership, self.broadcast)
            self.runtime.subscribe(self._on_event)
            await nursery.start(self.runtime.run)
            _emit({"event": "ready", "id": self.key.public.hex(), "port": port,
                   "incarnation": self.args.incarnation})
            await self._commands(nursery)
            nursery.cancel_scope.cancel()

    def _on_event(self, event: object) -> None:
        if type(event) is Delivered:
            now = time.time()
            mid = event.id.hex()
            self.deliveries.append((mid, now, event.hops))
            if not self.args.quiet:
                _emit({"event": "delivered", "id": mid, "hops": event.hops, "t": now})
        elif type(event) is MemberChanged:
            assert self.membership is not None
            m = self.membership.members.get(event.peer_id)
            _emit({"event": "member", "peer": event.peer_id.hex(), "state": STATE_NAMES[event.new],
                   "incarnation": m.incarnation if m else None})

    # ---- commands ----------------------------------------------------------------------------
    async def _commands(self, nursery: trio.Nursery) -> None:
        stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
        buf = b""
        async with stdin:
            while True:
                data = await stdin.receive_some(65536)
                if not data:
                    return
                buf += data
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    if not line.strip():
                        continue
                    try:
                        cmd = json.loads(line)
                        if cmd.get("cmd") == "exit":
                            return
                        self._command(cmd, nursery)
                    except Exception as exc:  # a bad command must not kill the node
                        _emit({"event": "error", "error": f"{type(exc).__name__}: {exc}"})

    def _command(self, cmd: dict[str, Any], nursery: trio.Nursery) -> None:
        name = cmd.get("cmd")
        if name in ("publish", "vote"):
            payload = bytes.fromhex(cmd["payload_hex"]) if name == "publish" else self.signed_vote()
            mid = self.publish(payload)
            _emit({"event": "published", "id": mid, "t": time.time()})
        elif name == "flood":
            count = int(cmd["count"])
            rate = float(cmd["rate"])
            nursery.start_soon(self._flood, count, rate, float(cmd.get("max_seconds", 60.0)))
        elif name == "members":
            assert self.membership is not None
            _emit({"event": "members", "id": self.key.public.hex(),
                   "incarnation": self.membership.incarnation,
                   "members": {pid.hex(): {"state": STATE_NAMES[m.state], "incarnation": m.incarnation}
                               for pid, m in self.membership.members.items()}})
        elif name == "stats":
            assert self.runtime is not None and self.membership is not None and self.broadcast is not None
            s = self.transport.stats
            _emit({"event": "stats", "received": dict(self.runtime.received), "sent": dict(self.runtime.sent),
                   "dropped": self.runtime.dropped, "membership": self.membership.counters,
                   "broadcast": self.broadcast.counters,
                   "transport": {"frames_in": s.frames_in, "frames_out": s.frames_out,
                                 "messages_in": s.messages_in, "messages_out": s.messages_out,
                                 "messages_dropped": s.messages_dropped, "bytes_out": s.bytes_out},
                   "cpu_s": time.process_time()})
        elif name == "deliveries":
            _emit({"event": "deliveries", "items": self.deliveries})
            if cmd.get("clear"):
                self.deliveries = []
        else:
            raise ValueError(f"unknown command {name!r}")

    def signed_vote(self) -> bytes:
        self._vote_counter += 1
        # A fresh signed message per call (the nonce keeps restarted nodes' payloads distinct).
        return Order.create(self.key, self.network_id, self._recipient, 1, self._vote_counter,
                            self._nonce.hex()).encode()

    def publish(self, payload: bytes) -> str:
        assert self.broadcast is not None and self.runtime is not None
        mid = self.broadcast.publish(payload, trio.current_time())
        self.runtime.perform(self.broadcast.out.drain())
        return mid.hex()

    async def _flood(self, count: int, rate: float, max_seconds: float) -> None:
        """Publish `count` fresh signed votes at `rate` per second; never longer than max_seconds."""
        published: list[tuple[str, float]] = []
        interval = 1.0 / rate
        start = trio.current_time()
        with trio.move_on_after(max_seconds):
            for i in range(count):
                # Catch up in bursts if we fell behind, but never run ahead of the schedule.
                due = start + i * interval
                if due > trio.current_time():
                    await trio.sleep_until(due)
                payload = self.signed_vote()
                mid = self.publish(payload)
                published.append((mid, time.time()))
        _emit({"event": "flood_done", "published": published,
               "seconds": trio.current_time() - start})


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="gossip-only test/benchmark node (not the peer daemon)")
    p.add_argument("--key-seed", required=True, help="32-byte Ed25519 seed, hex")
    p.add_argument("--network", required=True, help="32-byte network id, hex")
    p.add_argument("--port", type=int, default=0, help="listen port on 127.0.0.1 (0: any)")
    p.add_argument("--seed", action="append", default=[], metavar="HOST:PORT")
    p.add_argument("--incarnation", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no per-delivery events (use the deliveries command)")
    p.add_argument("--fanout", type=int, default=None, help="broadcast fanout (default: about ln n + 1)")
    for flag in ("probe-interval", "probe-timeout", "gossip-interval", "sync-interval",
                 "reconnect-interval", "seed-retry-max"):
        p.add_argument(f"--{flag}", type=float, default=None)
    p.add_argument("--suspicion-mult", type=int, default=None)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        trio.run(StandaloneNode(args).run)


if __name__ == "__main__":
    main()
