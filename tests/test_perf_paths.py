"""The fast paths keep their meaning: libsodium verification agrees with OpenSSL's, bounded
anti-entropy replies still cover every account, frames larger than a socket buffer cross intact,
the GC policy freezes survivors, the bench's CPU meter and HTTP client measure what they claim."""

from __future__ import annotations

import gc
import os
import random
import time
from pathlib import Path

import trio

from crypto.keys import VERIFIERS, Purpose, SigningKey, signing_bytes, verify
from devnet.cpustat import CpuMeter, process_seconds
from devnet.httpclient import HttpClient
from gossip.effects import Outbox, Send
from peer import gcpolicy
from peer.ledger import Ledger
from peer.ring import Ring
from peer.sync import Sync, SyncConfig
from peer.wire import AE_BUCKETS, AEAccounts, AEDigest
from store.db import Store
from store.layout import AccountState
from tests.test_transport import link, make, receive, running

NETWORK = bytes(range(32))


def test_libsodium_and_openssl_agree_on_valid_and_invalid_signatures() -> None:
    rng = random.Random(7)
    for i in range(40):
        key = SigningKey.from_seed(rng.randbytes(32))
        body = rng.randbytes(i * 7)
        sig = key.sign(Purpose.VOTE, NETWORK, body)
        signed = signing_bytes(Purpose.VOTE, NETWORK, body)
        bad_sig = bytes([sig[0] ^ 1]) + sig[1:]
        for s, message, expected in ((sig, signed, True), (bad_sig, signed, False), (sig, signed + b"x", False)):
            assert {name: fn(key.public, message, s) for name, fn in VERIFIERS.items()} == \
                {"cryptography": expected, "libsodium": expected}
        assert verify(key.public, sig, Purpose.VOTE, NETWORK, body)
        assert not verify(key.public, sig, Purpose.ORDER, NETWORK, body)  # another purpose
    identity = bytes([1]) + bytes(31)  # a small-order key "signs" anything with R = identity, S = 0
    assert not verify(identity, identity + bytes(32), Purpose.VOTE, NETWORK, b"anything")


def test_bounded_anti_entropy_replies_still_cover_every_shared_account(tmp_path: Path) -> None:
    """A difference that persists gets bounded replies that still, turn by turn, offer every account."""
    committee = [SigningKey.from_seed(bytes([i]) * 32).public for i in range(5)]
    me, src = committee[0], committee[1]
    ring = Ring(committee, 4, 64)
    store = Store.create(tmp_path / "db", NETWORK)
    try:
        ledger = Ledger(store, ring, me)
        rng = random.Random(3)
        shared = set()
        while len(shared) < 3000:
            account = rng.randbytes(32)
            if ring.owns(me, account):
                ledger.accounts[account] = AccountState(balance=5, next_seq=1, credits=1,
                                                        credit_digest=rng.randbytes(32))
                ledger.changed.add(account)
                if ring.owns(src, account):
                    shared.add(account)
        out = Outbox()
        sync = Sync(ledger, out, random.Random(1), lambda: committee[1:], lambda cert, peer: None,
                    SyncConfig(ae_quiet=0.0, max_ae_scan=256))
        differs = AEDigest(tuple(b"\xff" * 8 for _ in range(AE_BUCKETS)))  # every bucket differs
        sync.on_digest(src, differs, 99.0)
        assert out.drain() == []  # one differing digest may be a lag (payments in flight): no reply yet
        seen: set[bytes] = set()
        for turn in range(200):
            sync.on_digest(src, differs, 100.0 + turn)
            replies = [e.msg for e in out.drain() if isinstance(e, Send)]
            assert len(replies) == 1 and isinstance(replies[0], AEAccounts)
            assert len(replies[0].entries) <= 256  # max_ae_scan, spread over the differing buckets
            seen.update(e.account for e in replies[0].entries)
            if seen >= shared:
                break
        assert seen == shared, f"{len(shared - seen)} shared accounts never offered"
        assert turn < 40, f"covering {len(shared)} accounts took {turn + 1} rounds"
    finally:
        store.close()


async def test_a_message_larger_than_socket_buffers_crosses_intact() -> None:
    a, b = make(), make()
    async with running(a, b):
        await link(a, b)
        big = os.urandom(900_000)
        small = [os.urandom(100) for _ in range(50)]
        assert a.send(b.peer_id, big)
        for m in small:
            assert a.send(b.peer_id, m)
        got = await receive(b, 51)
        assert [m for _, m in got] == [big, *small]


def test_gc_policy_freezes_what_survives_a_full_collection() -> None:
    gcpolicy.install()
    try:
        before = gc.get_freeze_count()
        kept = [[i] for i in range(5000)]
        gc.collect()
        assert gc.get_freeze_count() >= before + len(kept)
        assert gc.get_count()[2] == 0
    finally:
        gc.callbacks.remove(gcpolicy._freeze_survivors)
        gc.unfreeze()
        gc.set_threshold(700, 10, 10)


def test_cpu_meter_counts_this_process_busy_and_not_idle() -> None:
    meter = CpuMeter()
    meter.start([os.getpid()])
    deadline = time.process_time() + 0.2
    while time.process_time() < deadline:
        pass
    used, busy = meter.stop()
    assert 0.15 <= used <= 2.0
    assert busy is None or busy >= 0.1
    assert process_seconds(2**22 + 12345) is None  # no such process


async def test_bench_http_client_reuses_connections_and_parses_json() -> None:
    accepted = 0

    async def handler(stream: trio.SocketStream) -> None:
        nonlocal accepted
        accepted += 1
        buffer = b""
        while True:
            data = await stream.receive_some(4096)
            if not data:
                return
            buffer += data
            while b"\r\n\r\n" in buffer:
                head, _, rest = buffer.partition(b"\r\n\r\n")
                length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                                  if line.lower().startswith(b"content-length")))
                if len(rest) < length:
                    break
                body, buffer = rest[:length], rest[length:]
                reply = b'{"echo":' + (body or b"null") + b"}"
                await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(reply) + reply)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(trio.serve_tcp, handler, 0)
        port = listeners[0].socket.getsockname()[1]
        client = HttpClient("127.0.0.1", port, max_connections=2)
        for i in range(5):
            assert await client.request("POST", "/x", {"n": i}) == (200, {"echo": {"n": i}})
        assert await client.request("GET", "/y") == (200, {"echo": None})
        assert accepted == 1
        client.close()
        nursery.cancel_scope.cancel()
