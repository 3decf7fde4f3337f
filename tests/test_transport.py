"""TcpTransport over real sockets on 127.0.0.1.

Waits are bounded by `trio.fail_after(10)` and poll for an outcome; nothing asserts on timing.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import random
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import pytest
import trio

from crypto.keys import Purpose, SigningKey
from crypto.messages import PROTOCOL_VERSION, ROLE_PEER, Auth, Hello
from gossip.channel import Sealer
from gossip.client import ClientSession, open_client
from gossip.framing import FrameDecoder, encode_frame
from gossip.handshake import (
    BadHandshakeSignature,
    Handshake,
    HandshakeRefused,
    NetworkMismatch,
    PeerBanned,
    RejectCode,
    WrongPeer,
    auth_body,
    transcript_hash,
)
from gossip.limits import TransportLimits
from gossip.links import ConnectError, Links
from gossip.transport import TcpTransport
from gossip.wire import HandshakeReject

NET = bytes(range(32))
HOST = "127.0.0.1"
WAIT = 10
# Transports made here are committee peers of each other (one key after the other from this
# list); a test that wants an outsider passes its own key. Outsider limits: test_peer_port_limits.
COMMITTEE_KEYS = [SigningKey.from_seed(bytes([i]) * 32) for i in range(1, 33)]
COMMITTEE = frozenset(k.public for k in COMMITTEE_KEYS)
_next_key = itertools.count()


def make(net: bytes = NET, key: SigningKey | None = None, port: int = 0,
         handler: Callable[[ClientSession], Awaitable[None]] | None = None, **limits: Any) -> TcpTransport:
    key = key or COMMITTEE_KEYS[next(_next_key) % len(COMMITTEE_KEYS)]
    return TcpTransport(key, net, port=port, limits=TransportLimits(**limits), client_handler=handler,
                        committee=COMMITTEE)


@asynccontextmanager
async def running(*transports: TcpTransport) -> AsyncIterator[trio.Nursery]:
    async with trio.open_nursery() as nursery:
        for t in transports:
            await nursery.start(t.serve)
        yield nursery
        nursery.cancel_scope.cancel()


async def serve_stoppable(t: TcpTransport, *, task_status: trio.TaskStatus[trio.CancelScope]) -> None:
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as inner:
            await inner.start(t.serve)
            task_status.started(scope)


async def until(predicate: Callable[[], bool]) -> None:
    with trio.fail_after(WAIT):
        while not predicate():
            await trio.sleep(0.01)


async def receive(t: TcpTransport, n: int) -> list[tuple[bytes, bytes]]:
    with trio.fail_after(WAIT):
        return [await t.inbound.receive() for _ in range(n)]


async def link(a: TcpTransport, b: TcpTransport) -> None:
    """Let both sides know each other's address (as signed records would)."""
    a.set_address(b.peer_id, HOST, b.port)
    b.set_address(a.peer_id, HOST, a.port)


async def assert_serves(server: TcpTransport) -> None:
    """A well-behaved newcomer can still connect and exchange messages both ways."""
    async with running(good := make(server.network_id)):
        assert await good.dial(HOST, server.port) == server.peer_id
        server.set_address(good.peer_id, HOST, good.port)
        assert good.send(server.peer_id, b"ping")
        assert await receive(server, 1) == [(good.peer_id, b"ping")]
        assert server.send(good.peer_id, b"pong")
        assert await receive(good, 1) == [(server.peer_id, b"pong")]


async def assert_closed(stream: trio.SocketStream) -> None:
    """The other side closes the connection (we may get a reject frame first); then we close ours."""
    try:
        with trio.fail_after(WAIT):
            while await stream.receive_some(65536):
                pass
    except trio.BrokenResourceError:
        pass  # a reset is as good as a close here
    finally:
        await stream.aclose()


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class RawPeer:
    """A hand-driven peer: real handshake via the sans-IO machine, then arbitrary bytes."""

    def __init__(self, stream: trio.SocketStream, sealer: Sealer, key: SigningKey) -> None:
        self.stream, self.sealer, self.key = stream, sealer, key

    @classmethod
    async def connect(cls, port: int, key: SigningKey | None = None) -> RawPeer:
        key = key or SigningKey.generate()
        stream = await trio.open_tcp_stream(HOST, port)
        hs = Handshake(key, NET, initiator=True)
        await stream.send_all(encode_frame(hs.start()))
        decoder = FrameDecoder()
        with trio.fail_after(WAIT):
            while not hs.done:
                for frame in decoder.feed(await stream.receive_some(65536)):
                    for reply in hs.receive(frame):
                        await stream.send_all(encode_frame(reply))
        return cls(stream, Sealer(hs.result.send_key), key)


def test_transport_implements_links() -> None:
    t = make()
    assert isinstance(t, TcpTransport)
    links: Links = t  # checked by the type checker; the attributes below by the test
    for name in ("inbound", "send", "set_address", "forget", "set_committee", "penalize", "is_banned", "dial"):
        assert hasattr(links, name)


async def test_two_transports_exchange_both_ways() -> None:
    a, b = make(), make()
    async with running(a, b):
        assert await a.dial(HOST, b.port) == b.peer_id
        assert a.connected(b.peer_id)
        b.set_address(a.peer_id, HOST, a.port)
        assert a.send(b.peer_id, b"from a")
        assert b.send(a.peer_id, b"from b")
        assert await receive(b, 1) == [(a.peer_id, b"from a")]
        assert await receive(a, 1) == [(b.peer_id, b"from b")]
        # Each side dialed once and accepted once: one connection per direction.
        await until(lambda: a.stats.connections_accepted == 1 and b.stats.connections_accepted == 1)
        assert a.stats.connections_dialed == b.stats.connections_dialed == 1


async def test_many_messages_in_order_from_several_peers() -> None:
    a, b, c = make(), make(), make()
    n = 3000
    async with running(a, b, c):
        await link(a, c)
        await link(b, c)
        for i in range(n):
            assert a.send(c.peer_id, b"a%d" % i)
            assert b.send(c.peer_id, b"b%d" % i)
        got = await receive(c, 2 * n)
        assert [m for src, m in got if src == a.peer_id] == [b"a%d" % i for i in range(n)]
        assert [m for src, m in got if src == b.peer_id] == [b"b%d" % i for i in range(n)]
        assert a.stats.frames_out < n  # queued messages were batched into shared frames
        assert c.stats.messages_in == 2 * n


async def test_restarted_peer_on_the_same_port_is_redialed() -> None:
    a, key = make(), SigningKey.generate()
    b = make(key=key)
    async with running(a) as nursery:
        scope = await nursery.start(serve_stoppable, b)
        await link(a, b)
        assert a.send(b.peer_id, b"before")
        assert await receive(b, 1) == [(a.peer_id, b"before")]
        scope.cancel()
        await until(lambda: not a.connected(b.peer_id))

        b2 = make(key=key, port=b.port)
        await nursery.start(serve_stoppable, b2)
        with trio.fail_after(WAIT):
            got = None
            while got is None:
                a.send(b.peer_id, b"after")
                with trio.move_on_after(0.2):
                    got = await b2.inbound.receive()
        assert got == (a.peer_id, b"after")
        assert a.stats.connections_dialed >= 2


async def test_dial_wrong_network_is_refused_and_server_keeps_serving() -> None:
    server, stranger = make(), make(net=os.urandom(32))
    async with running(server, stranger):
        with pytest.raises(ConnectError) as info:
            await stranger.dial(HOST, server.port)
        assert isinstance(info.value.__cause__, NetworkMismatch)
        assert f"{HOST}:{server.port} is on network {NET.hex()[:8]}" in str(info.value)
        await until(lambda: server.stats.handshake_failures["NetworkMismatch"] == 1)
        await assert_serves(server)


async def test_dial_with_expected_id_that_differs() -> None:
    server, dialer = make(), make()
    async with running(server, dialer):
        with pytest.raises(ConnectError) as info:
            await dialer.dial(HOST, server.port, expect=SigningKey.generate().public)
        assert isinstance(info.value.__cause__, WrongPeer)
        # The server learns why from the reject the dialer sent.
        await until(lambda: server.stats.handshake_failures["HandshakeRefused"] == 1)
        await assert_serves(server)


async def test_stale_address_gives_wrong_peer_on_send() -> None:
    server, dialer = make(), make()
    async with running(server, dialer):
        ghost = SigningKey.generate().public
        dialer.set_address(ghost, HOST, server.port)
        assert dialer.send(ghost, b"for the ghost")
        await until(lambda: dialer.stats.handshake_failures["WrongPeer"] >= 1)
        assert server.stats.messages_in == 0


async def test_claiming_another_peers_id_is_refused() -> None:
    server, victim, attacker = make(), SigningKey.generate(), SigningKey.generate()
    async with running(server):
        stream = await trio.open_tcp_stream(HOST, server.port)
        forged = Hello(NET, PROTOCOL_VERSION, victim.public, ROLE_PEER, os.urandom(32), os.urandom(32)).encode()
        await stream.send_all(encode_frame(forged))
        decoder = FrameDecoder()
        with trio.fail_after(WAIT):
            frames: list[bytes] = []
            while not frames:
                frames = decoder.feed(await stream.receive_some(65536))
        body = auth_body(transcript_hash(forged, frames[0]), initiator=True)
        await stream.send_all(encode_frame(Auth(attacker.sign(Purpose.HANDSHAKE, NET, body)).encode()))
        await assert_closed(stream)
        await until(lambda: server.stats.handshake_failures["BadHandshakeSignature"] == 1)
        assert not server.is_banned(victim.public)  # nothing was proven about the victim
        await assert_serves(server)


async def _oversize_before_handshake(server: TcpTransport) -> bytes | None:
    stream = await trio.open_tcp_stream(HOST, server.port)
    await stream.send_all(b"\xff\xff\xff\xff")
    await assert_closed(stream)
    return None


async def _garbage_before_handshake(server: TcpTransport) -> bytes | None:
    stream = await trio.open_tcp_stream(HOST, server.port)
    await stream.send_all(encode_frame(b"\xa1\x01\x02 certainly not a Hello"))
    await assert_closed(stream)
    return None


async def _oversize_after_handshake(server: TcpTransport) -> bytes | None:
    raw = await RawPeer.connect(server.port)
    await raw.stream.send_all((server.limits.max_frame + 1).to_bytes(4, "big") + b"x" * 100)
    await assert_closed(raw.stream)
    return raw.key.public


async def _garbage_after_handshake(server: TcpTransport) -> bytes | None:
    raw = await RawPeer.connect(server.port)
    await raw.stream.send_all(encode_frame(os.urandom(300)))
    await assert_closed(raw.stream)
    return raw.key.public


async def _frame_flood(server: TcpTransport) -> bytes | None:
    raw = await RawPeer.connect(server.port)
    flood = b"".join(encode_frame(raw.sealer.seal([b"spam"])) for _ in range(1000))
    with contextlib.suppress(trio.BrokenResourceError):  # the server may cut us off mid-flood
        await raw.stream.send_all(flood)
    await assert_closed(raw.stream)
    return raw.key.public


@pytest.mark.parametrize(("attack", "counter", "error", "bans"), [
    (_oversize_before_handshake, "handshake_failures", "FrameTooLarge", 0),
    (_garbage_before_handshake, "handshake_failures", "MalformedHandshake", 0),
    (_oversize_after_handshake, "protocol_errors", "FrameTooLarge", 1),
    (_garbage_after_handshake, "protocol_errors", "ChannelError", 1),
    (_frame_flood, "protocol_errors", "FrameFlood", 0),
])
async def test_misbehaving_connection_is_cut_and_server_keeps_serving(
    attack: Callable[[TcpTransport], Awaitable[bytes | None]], counter: str, error: str, bans: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="meshpay.transport")
    server = make(max_frames_per_second=100, frame_burst=200)
    async with running(server):
        attacker = await attack(server)
        failures = getattr(server.stats, counter)
        await until(lambda: failures[error] == 1)
        assert sum(failures.values()) == 1
        assert server.stats.bans == bans
        if attacker is not None:
            assert any(attacker.hex()[:12] in r.getMessage() and error in r.getMessage()
                       for r in caplog.records)
            assert server.is_banned(attacker) == bool(bans)
        await assert_serves(server)


async def test_random_bytes_never_stop_the_server() -> None:
    rng = random.Random(1234)
    server = make(handshake_timeout=0.5)
    async with running(server):
        for i in range(30):
            stream = await trio.open_tcp_stream(HOST, server.port)
            junk = rng.randbytes(rng.randrange(1, 400))
            if i % 2:  # a plausible length prefix, so the junk reaches the handshake parser
                junk = encode_frame(junk)
            await stream.send_all(junk)
            await assert_closed(stream)
        assert sum(server.stats.handshake_failures.values()) == 30
        await assert_serves(server)


async def test_handshake_timeout_closes_silent_connection() -> None:
    server = make(handshake_timeout=0.2)
    async with running(server):
        stream = await trio.open_tcp_stream(HOST, server.port)
        await assert_closed(stream)
        assert server.stats.handshake_failures["HandshakeTimeout"] == 1
        await assert_serves(server)


async def test_penalised_peer_is_banned_then_allowed_again() -> None:
    a, b = make(), make(ban_seconds=1.0)
    async with running(a, b):
        await link(a, b)
        assert a.send(b.peer_id, b"hello")
        assert await receive(b, 1) == [(a.peer_id, b"hello")]

        b.penalize(a.peer_id, 4, "suspicious")
        assert not b.is_banned(a.peer_id)
        b.penalize(a.peer_id, 7, "forged record")  # the 4 has decayed a little
        assert b.is_banned(a.peer_id) and b.stats.bans == 1
        assert not b.send(a.peer_id, b"dropped while banned")
        await until(lambda: not a.connected(b.peer_id))  # b cut a's connection
        with pytest.raises(ConnectError) as info:
            await a.dial(HOST, b.port)
        assert isinstance(info.value.__cause__, HandshakeRefused)
        assert info.value.__cause__.refusal_code == RejectCode.BANNED

        # After the ban a's writer gets through on its own (backoff and retry).
        assert a.send(b.peer_id, b"after the ban")
        assert await receive(b, 1) == [(a.peer_id, b"after the ban")]
        assert not b.is_banned(a.peer_id)
        assert b.send(a.peer_id, b"welcome back")
        assert await receive(a, 1) == [(b.peer_id, b"welcome back")]


async def test_dialing_a_peer_we_banned_is_refused_without_blame() -> None:
    a, b = make(), make()
    async with running(a, b):
        a.penalize(b.peer_id, 10, "invalid certificate")
        with pytest.raises(ConnectError) as info:
            await a.dial(HOST, b.port)
        assert isinstance(info.value.__cause__, PeerBanned)
        await until(lambda: b.stats.handshake_failures["HandshakeRefused"] == 1)
        assert b.stats.bans == 0
        assert sum(b.stats.protocol_errors.values()) == 0


async def test_silent_handshakes_fill_their_slots_but_never_lock_a_peer_out() -> None:
    server = make(max_handshakes=2)
    async with running(server):
        held = [await trio.open_tcp_stream(HOST, server.port) for _ in range(2)]
        # The server has accepted these (they wait in the handshake) before it takes the next.
        await until(lambda: server.stats.inbound_sockets == 2)
        extra = await trio.open_tcp_stream(HOST, server.port)
        await assert_closed(held[0])  # the oldest silent handshake made room for the newest
        await until(lambda: server.stats.connections_evicted["handshake"] == 1)
        # With both slots still taken by silent sockets, a real peer gets in all the same.
        await assert_serves(server)
        for stream in (*held[1:], extra):
            await stream.aclose()
        await until(lambda: server.stats.inbound_sockets == 0)


async def test_idle_connections_are_closed_and_reopened_on_demand() -> None:
    a, b = make(idle_timeout=0.2), make(idle_timeout=0.2)
    async with running(a, b):
        await link(a, b)
        assert a.send(b.peer_id, b"one")
        await receive(b, 1)
        await until(lambda: a.stats.connections_open == 0 and b.stats.connections_open == 0)
        assert not a.connected(b.peer_id)
        assert a.send(b.peer_id, b"two")
        assert await receive(b, 1) == [(a.peer_id, b"two")]
        assert a.stats.connections_dialed == 2


async def test_send_drops_when_queue_full_address_unknown_or_oversize() -> None:
    a = make(max_queue=3, handshake_timeout=1.0)
    async with running(a):
        nobody = COMMITTEE_KEYS[-1].public  # a committee peer (outsiders have their own, shorter queue)
        assert not a.send(nobody, b"no address")
        a.set_address(nobody, HOST, free_port())  # nothing listens there
        assert [a.send(nobody, b"%d" % i) for i in range(4)] == [True, True, True, False]
        assert not a.send(nobody, b"x" * (a.limits.max_frame + 1))
        assert a.stats.messages_dropped == 3
        await until(lambda: a.stats.handshake_failures["OSError"] >= 1)
        a.forget(nobody)
        assert a.queued(nobody) == 0
        assert not a.send(nobody, b"forgotten")


async def test_send_before_serve_is_dropped() -> None:
    a = make()
    peer = SigningKey.generate().public
    a.set_address(peer, HOST, 1)
    assert not a.send(peer, b"x")


async def test_forget_closes_the_connection() -> None:
    a, b = make(), make()
    async with running(a, b):
        await a.dial(HOST, b.port)
        assert a.connected(b.peer_id)
        a.forget(b.peer_id)
        assert not a.connected(b.peer_id)
        assert not a.send(b.peer_id, b"x")
        await until(lambda: b.stats.connections_open == 0)


async def test_client_session_round_trip() -> None:
    ended = trio.Event()

    async def echo(session: ClientSession) -> None:
        assert session.peer[0] == HOST
        while True:
            try:
                msg = await session.receive()
            except trio.EndOfChannel:
                ended.set()
                return
            session.send(b"echo:" + msg)

    server = make(handler=echo)
    async with running(server):
        async with await open_client(HOST, server.port, NET) as client:
            assert client.peer_id == server.peer_id
            await client.send(b"one")
            await client.send_many([b"two", b"three"])
            with trio.fail_after(WAIT):
                assert [await client.receive() for _ in range(3)] == [b"echo:one", b"echo:two", b"echo:three"]
        with trio.fail_after(WAIT):
            await ended.wait()
        await until(lambda: server.stats.connections_open == 0)
        assert server.stats.connections_accepted == 1


async def test_overloaded_client_session_is_closed() -> None:
    sessions: list[ClientSession] = []

    async def firehose(session: ClientSession) -> None:
        sessions.append(session)
        for i in range(100):
            session.send(b"%d" % i)
        await trio.sleep_forever()

    server = make(handler=firehose, client_queue=4)
    async with running(server):
        client = await open_client(HOST, server.port, NET)
        with trio.fail_after(WAIT), pytest.raises(trio.EndOfChannel):
            while True:
                await client.receive()
        assert sessions[0].overloaded and sessions[0].closed
        await client.aclose()


async def test_client_refused_without_handler() -> None:
    server = make()
    async with running(server):
        with pytest.raises(ConnectError) as info:
            await open_client(HOST, server.port, NET)
        cause = info.value.__cause__
        assert isinstance(cause, HandshakeRefused) and cause.refusal_code == RejectCode.ROLE
        await until(lambda: server.stats.handshake_failures["RoleRefused"] == 1)
        await assert_serves(server)


async def test_client_on_wrong_network_refused() -> None:
    server = make(handler=lambda session: trio.sleep(0))
    async with running(server):
        with pytest.raises(ConnectError) as info:
            await open_client(HOST, server.port, os.urandom(32))
        assert isinstance(info.value.__cause__, NetworkMismatch)


async def test_dial_unreachable_address() -> None:
    a = make()
    async with running(a):
        with pytest.raises(ConnectError) as info:
            await a.dial(HOST, free_port())
        assert isinstance(info.value.__cause__, OSError)
        assert "cannot reach" in str(info.value)


async def test_dial_self_is_refused() -> None:
    a = make()
    async with running(a):
        with pytest.raises(ConnectError):
            await a.dial(HOST, a.port)


async def test_server_reject_reaches_the_dialer_as_a_reason() -> None:
    """What a raw dialer on the wrong network reads back: our Hello, then a reject with the reason."""
    server = make()
    async with running(server):
        stream = await trio.open_tcp_stream(HOST, server.port)
        hs = Handshake(SigningKey.generate(), os.urandom(32), initiator=True)
        await stream.send_all(encode_frame(hs.start()))
        decoder, frames = FrameDecoder(), []
        with trio.fail_after(WAIT):
            while len(frames) < 2:
                data = await stream.receive_some(65536)
                assert data
                frames += decoder.feed(data)
        assert Hello.decode(frames[0]).peer_id == server.peer_id
        reject = HandshakeReject.decode(frames[1])
        assert reject.code == RejectCode.NETWORK and "wrong network" in reject.reason
        await assert_closed(stream)


async def test_signature_check_uses_the_claimed_key_on_the_dialer_side() -> None:
    """A listener that claims another peer's id cannot sign for it: the dialer refuses."""
    victim, impostor = SigningKey.generate(), SigningKey.generate()

    async def fake_server(stream: trio.SocketStream) -> None:
        hello = Hello(NET, PROTOCOL_VERSION, victim.public, ROLE_PEER, os.urandom(32), os.urandom(32)).encode()
        await stream.send_all(encode_frame(hello))
        decoder = FrameDecoder()
        frames: list[bytes] = []
        while len(frames) < 2:
            data = await stream.receive_some(65536)
            if not data:
                return
            frames += decoder.feed(data)
        body = auth_body(transcript_hash(frames[0], hello), initiator=False)
        try:
            await stream.send_all(encode_frame(Auth(impostor.sign(Purpose.HANDSHAKE, NET, body)).encode()))
            await stream.receive_some(65536)
        except trio.BrokenResourceError:
            pass

    dialer = make()
    async with running(dialer) as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, fake_server, 0, host=HOST))
        port = listeners[0].socket.getsockname()[1]
        with pytest.raises(ConnectError) as info:
            await dialer.dial(HOST, port)
        assert isinstance(info.value.__cause__, BadHandshakeSignature)
        assert dialer.stats.handshake_failures["BadHandshakeSignature"] == 1


def test_package_exports_what_it_claims() -> None:
    import gossip

    for name in gossip.__all__:
        obj = getattr(gossip, name)
        assert obj.__module__.startswith("gossip."), name
    assert gossip.TcpTransport is TcpTransport


async def test_client_frames_are_capped_far_below_peer_frames() -> None:
    """Found by an attacker's review: a client socket announcing a 1 MiB frame and stopping one byte
    short pinned ~2 MB at the peer (a few hundred sockets: hundreds of MB). A client may send frames
    of at most CLIENT_MAX_FRAME; a bigger announcement closes the session before anything is
    buffered, and `send_many` splits a large batch into frames that fit."""
    from gossip.limits import CLIENT_MAX_FRAME

    got: list[bytes] = []

    async def collect(session: ClientSession) -> None:
        while True:
            try:
                got.append(await session.receive())
            except trio.EndOfChannel:
                return

    server = make(handler=collect)
    async with running(server):
        payloads = [bytes([i % 251]) * 1000 for i in range(200)]  # 200 KB: several client frames
        async with await open_client(HOST, server.port, NET) as client:
            await client.send_many(payloads)
            await until(lambda: len(got) == len(payloads))
        assert got == payloads
        async with await open_client(HOST, server.port, NET) as client:
            with trio.fail_after(WAIT):
                await client._conn.send([b"z" * (CLIENT_MAX_FRAME + 1024)])  # one frame over the cap
                with contextlib.suppress(trio.BrokenResourceError):  # reset, our bytes unread, or:
                    assert await client._conn.receive() is None  # the peer closed the session
        assert not got[len(payloads):]  # nothing of the oversized frame was handled
        await until(lambda: server.stats.connections_open == 0)


async def _spoken(port: int, source: str = HOST) -> trio.SocketStream:
    """A connection that sends a valid Hello (an outsider's) and then stalls before its Auth."""
    sock = trio.socket.socket()
    await sock.bind((source, 0))
    await sock.connect((HOST, port))
    stream = trio.SocketStream(sock)
    hello = Handshake(SigningKey.generate(), NET, initiator=True, role=ROLE_PEER).start()
    await stream.send_all(encode_frame(hello))
    with trio.fail_after(WAIT):
        assert await stream.receive_some(4096)  # the server's own Hello: ours was heard
    return stream


async def _still_open(stream: trio.SocketStream) -> bool:
    with trio.move_on_after(0.3):
        try:
            return bool(await stream.receive_some(4096))  # nothing more is due from the server
        except trio.BrokenResourceError:
            return False
    return True


async def test_a_flood_of_silent_sockets_evicts_its_own_never_a_handshake_that_has_spoken() -> None:
    """Found by an attacker's review: 400 silent sockets reconnecting as soon as they were dropped
    churned the handshake slots so fast that clients' handshakes were evicted before they could
    finish (0 of 15 got in). The silent ones now go first, from the address holding the most slots."""
    server = make(max_handshakes=4)
    async with running(server):
        spoken = await _spoken(server.port)
        silent = []
        for _ in range(20):
            silent.append(await trio.open_tcp_stream(HOST, server.port))
            await trio.sleep(0.005)
        await until(lambda: server.stats.connections_evicted["handshake"] >= 17)
        assert await _still_open(spoken), "a handshake that had spoken was evicted by silent sockets"
        for stream in (spoken, *silent):
            await stream.aclose()
        await until(lambda: server.stats.inbound_sockets == 0)


async def test_a_handshake_flood_from_one_address_never_evicts_another_address() -> None:
    """Even a flood whose Hellos pass the screen evicts from its own address first (the address
    holding the most slots), so a client elsewhere keeps its slot."""
    server = make(max_handshakes=4, outsider_handshakes_per_second=1000.0)
    async with running(server):
        elsewhere = await _spoken(server.port, source="127.0.0.2")
        flood = [await _spoken(server.port) for _ in range(12)]
        await until(lambda: server.stats.connections_evicted["handshake"] >= 9)
        assert await _still_open(elsewhere), "the flood from 127.0.0.1 evicted 127.0.0.2's handshake"
        for stream in (elsewhere, *flood):
            await stream.aclose()
        await until(lambda: server.stats.inbound_sockets == 0)
