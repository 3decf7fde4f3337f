"""Peer-port limits over real sockets on 127.0.0.1: who may hold a connection, and what it costs.

Committee peers, outsiders (any other peer key) and clients share one IP here, as on a devnet. What
must hold: client sessions idle out and have their own cap, where idle ones make room for new ones;
outsiders share a bounded number of links, handshakes, dials and reads; a committee peer always
gets in, however full the other classes are; refusals are logged at a bounded rate; and every
limit can be set in the peer config. Waits are bounded (`trio.fail_after`), never asserted on,
except where a rate limit must make something take at least so long.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest
import trio

from crypto.keys import SigningKey
from gossip.admission import Kind
from gossip.broadcast import Broadcast, Verdict, message_id
from gossip.client import ClientConnection, ClientSession, open_client
from gossip.connection import TransportStats, connect
from gossip.handshake import HandshakeRefused, RejectCode
from gossip.limits import DEFAULT_LIMITS, LogThrottle, TransportLimits
from gossip.links import ConnectError
from gossip.membership import Membership, MembershipConfig
from gossip.runtime import Runtime
from gossip.transport import TcpTransport
from gossip.wire import Push
from peer import config as peer_config
from peer.daemon import node_config

NET = bytes(range(32))
HOST = "127.0.0.1"
WAIT = 10
KEYS = [SigningKey.from_seed(bytes([i + 1]) * 32) for i in range(4)]
COMMITTEE = frozenset(k.public for k in KEYS)


async def idle_handler(session: ClientSession) -> None:
    """A client service that answers every message with b'ok' until the client goes."""
    try:
        while True:
            await session.receive()
            session.send(b"ok")
    except trio.EndOfChannel:
        return


def make(key: SigningKey | None = None, **limits: Any) -> TcpTransport:
    return TcpTransport(key or KEYS[0], NET, limits=TransportLimits(**limits), client_handler=idle_handler,
                        committee=COMMITTEE)


@asynccontextmanager
async def serving(*transports: TcpTransport) -> AsyncIterator[trio.Nursery]:
    async with trio.open_nursery() as nursery:
        for t in transports:
            await nursery.start(t.serve)
        yield nursery
        nursery.cancel_scope.cancel()


async def until(predicate: Any) -> None:
    with trio.fail_after(WAIT):
        while not predicate():
            await trio.sleep(0.01)


async def ask(client: ClientConnection) -> bytes:
    with trio.fail_after(WAIT):
        await client.send(b"hello")
        return await client.receive()


async def refused_code(coro: Any) -> int | None:
    """The HandshakeReject code a connection attempt got (None if it was not refused that way)."""
    try:
        conn = await coro
    except ConnectError as exc:
        cause = exc.__cause__
        return cause.refusal_code if isinstance(cause, HandshakeRefused) else None
    await conn.aclose()
    return None


async def exchange(server: TcpTransport, peer: TcpTransport) -> None:
    """`peer` dials `server` and they trade a message each way."""
    with trio.fail_after(WAIT):
        assert await peer.dial(HOST, server.port) == server.peer_id
        server.set_address(peer.peer_id, HOST, peer.port)
        assert peer.send(server.peer_id, b"ping")
        assert await server.inbound.receive() == (peer.peer_id, b"ping")
        assert server.send(peer.peer_id, b"pong")
        assert await peer.inbound.receive() == (server.peer_id, b"pong")


async def test_committee_peer_gets_in_past_a_full_address_of_idle_clients() -> None:
    # On 4e5f373 every connection from an address counted against max_per_address: 1,260 idle
    # clients on 127.0.0.1 locked every peer out (`devnet restart` exited 5).
    server = make(max_per_address=8, max_client_sessions=8, evict_idle=60.0)
    async with serving(server), AsyncExitStack() as stack:
        for _ in range(8):
            stack.push_async_callback((await open_client(HOST, server.port, NET)).aclose)
        await until(lambda: server.stats.connections_open == 8)
        async with serving(member := make(KEYS[1])):
            await exchange(server, member)
        # ...while another client, and an outsider, are refused (the clients are not idle long enough).
        assert await refused_code(open_client(HOST, server.port, NET)) == RejectCode.BUSY
        async with serving(outsider := make(SigningKey.generate())):
            with pytest.raises(ConnectError):
                await outsider.dial(HOST, server.port)
        # (The server counts a refusal once its reject is on the wire: wait for it.)
        await until(lambda: server.stats.connections_refused["per_address"] == 1)
        await until(lambda: server.stats.connections_refused["client_capacity"] == 1)


async def test_idle_client_sessions_time_out() -> None:
    server = make(client_idle_timeout=0.3)
    async with serving(server):
        idle = await open_client(HOST, server.port, NET)
        busy = await open_client(HOST, server.port, NET)
        await until(lambda: server.sessions(Kind.CLIENT) == 2)
        with trio.fail_after(WAIT):
            for _ in range(8):  # 0.8 s of a session that keeps talking
                assert await ask(busy) == b"ok"
                await trio.sleep(0.1)
        await until(lambda: server.sessions(Kind.CLIENT) == 1)  # the idle one was closed
        with pytest.raises((trio.EndOfChannel, trio.BrokenResourceError, trio.ClosedResourceError)):
            await ask(idle)
        assert await ask(busy) == b"ok"
        await idle.aclose()
        await busy.aclose()


async def test_full_client_table_makes_room_by_closing_the_longest_idle_session() -> None:
    server = make(max_client_sessions=3, evict_idle=0.2)
    async with serving(server):
        sessions = [await open_client(HOST, server.port, NET) for _ in range(3)]
        await until(lambda: server.sessions(Kind.CLIENT) == 3)
        await trio.sleep(0.3)
        for s in sessions[1:]:
            assert await ask(s) == b"ok"  # sessions[0] is now the idlest
        newcomer = await open_client(HOST, server.port, NET)
        assert await ask(newcomer) == b"ok"
        assert server.sessions(Kind.CLIENT) == 3
        assert server.stats.connections_evicted["client"] == 1
        with pytest.raises((trio.EndOfChannel, trio.BrokenResourceError, trio.ClosedResourceError)):
            await ask(sessions[0])
        for s in [*sessions, newcomer]:
            await s.aclose()


async def test_outsider_links_are_capped_and_committee_links_are_not() -> None:
    server = make(max_outsider_links=2, evict_idle=60.0)
    outsiders = [make(SigningKey.generate()) for _ in range(3)]
    members = [make(k) for k in KEYS[1:]]
    async with serving(server, *outsiders, *members):
        for o in outsiders[:2]:
            await exchange(server, o)
        with pytest.raises(ConnectError) as info:
            await outsiders[2].dial(HOST, server.port)
        assert isinstance(info.value.__cause__, HandshakeRefused)
        assert info.value.__cause__.refusal_code == RejectCode.BUSY
        for m in members:
            await exchange(server, m)
        assert server.sessions(Kind.OUTSIDER) == 2 and server.sessions(Kind.COMMITTEE) == 3


async def test_a_new_link_from_one_key_replaces_its_oldest() -> None:
    server = make(max_links_per_peer=2)
    async with serving(server):
        links = [await connect(HOST, server.port, KEYS[1], NET, DEFAULT_LIMITS, TransportStats())
                 for _ in range(3)]
        await until(lambda: server.stats.connections_evicted["peer"] == 1)
        assert server.sessions(Kind.COMMITTEE) == 2
        with trio.fail_after(WAIT):
            assert await links[0].receive() is None  # the oldest was closed by the server
        for link in links:
            link.close()


async def test_outsider_handshakes_are_rate_limited_before_any_signature_work() -> None:
    server = make(outsider_handshakes_per_second=1.0)  # a burst of 2, then one a second
    async with serving(server):
        codes = []
        for _ in range(6):
            async with serving(outsider := make(SigningKey.generate())):
                try:
                    await outsider.dial(HOST, server.port)
                    codes.append(None)
                except ConnectError as exc:
                    cause = exc.__cause__
                    codes.append(cause.refusal_code if isinstance(cause, HandshakeRefused) else "other")
        assert codes.count(RejectCode.BUSY) >= 3, codes
        await until(lambda: server.stats.connections_refused["outsider_handshake_rate"] == codes.count(RejectCode.BUSY))
        # Refused on the Hello: the outsider never got to send its signature.
        assert server.stats.handshake_failures.get("BadHandshakeSignature", 0) == 0
        async with serving(member := make(KEYS[1])):
            await exchange(server, member)  # committee keys are never rate-limited


async def test_client_handshakes_are_rate_limited() -> None:
    server = make(client_handshakes_per_second=1.0)  # a burst of 2, then one a second
    async with serving(server):
        codes = [await refused_code(open_client(HOST, server.port, NET)) for _ in range(6)]
        assert codes.count(RejectCode.BUSY) >= 3, codes
        await until(lambda: server.stats.connections_refused["client_handshake_rate"] == codes.count(RejectCode.BUSY))
        async with serving(member := make(KEYS[1])):
            await exchange(server, member)  # peers are not charged for clients


async def test_outsider_reads_wait_for_the_class_budget() -> None:
    # What outsiders can make us read in a second is the class budget, however fast they send.
    server = make(outsider_messages_per_second=200.0)
    async with serving(server, outsider := make(SigningKey.generate())):
        outsider.set_address(server.peer_id, HOST, server.port)
        for i in range(1000):
            assert outsider.send(server.peer_id, b"%d" % i)
        started = trio.current_time()
        with trio.fail_after(WAIT * 3):
            for _ in range(1000):
                await server.inbound.receive()
        # 400 on credit, then 200 a second: the other 600 cannot take less than 3 s.
        assert trio.current_time() - started >= 2.9
        assert server.stats.outsider_waits > 0
    # Committee members are not charged.
    server = make(outsider_messages_per_second=200.0)
    async with serving(server, member := make(KEYS[1])):
        member.set_address(server.peer_id, HOST, server.port)
        for i in range(1000):
            assert member.send(server.peer_id, b"%d" % i)
        with trio.fail_after(WAIT):
            for _ in range(1000):
                await server.inbound.receive()
        assert server.stats.outsider_waits == 0


async def test_what_a_banned_outsider_had_queued_is_not_handled() -> None:
    validated: list[bytes] = []

    def reject(payload: bytes) -> Verdict:  # every broadcast is invalid: each would cost a check
        validated.append(payload)
        return Verdict.REJECT

    server = make()
    membership = Membership(KEYS[0], NET, HOST, 1, committee=COMMITTEE)
    runtime = Runtime(server, membership, Broadcast(NET, membership.alive, KEYS[0].public, validate=reject))
    async with serving(server) as nursery, serving(outsider := make(SigningKey.generate())):
        await nursery.start(runtime.run)
        outsider.set_address(server.peer_id, HOST, server.port)
        for i in range(50):  # one frame: all of it is read before the first one is judged
            payload = b"junk %d" % i
            assert outsider.send(server.peer_id, Push(message_id(NET, payload), 0, (), payload).encode())
        await until(lambda: len(validated) + runtime.dropped >= 50)
        assert server.is_banned(outsider.peer_id)
        assert len(validated) == 1, "messages from a banned key were still checked"


async def test_outsider_dials_are_rate_limited_and_committee_dials_are_not() -> None:
    server = make(outsider_dials_per_second=1.0)  # a burst of 2
    async with serving(server):
        closed = [trio.socket.socket() for _ in range(10)]
        try:
            for sock in closed:
                await sock.bind((HOST, 0))  # bound, never listening: a dial there is refused
            for sock in closed:
                outsider = SigningKey.generate().public
                server.set_address(outsider, HOST, sock.getsockname()[1])
                server.send(outsider, b"x")
            await until(lambda: server.stats.connections_refused["outsider_dial_rate"] >= 7)
            assert sum(server.stats.handshake_failures.values()) <= 3  # only the burst was dialled
            # A committee member is dialled whatever the outsiders used up.
            async with serving(member := make(KEYS[1])):
                server.set_address(member.peer_id, HOST, member.port)
                assert server.send(member.peer_id, b"still")
                with trio.fail_after(WAIT):
                    assert await member.inbound.receive() == (server.peer_id, b"still")
        finally:
            for sock in closed:
                sock.close()


async def test_refusals_are_logged_at_a_bounded_rate(caplog: pytest.LogCaptureFixture) -> None:
    server = make(max_client_sessions=1, evict_idle=60.0, client_handshakes_per_second=1000.0, log_burst=3,
                  log_interval=600.0)
    caplog.set_level(logging.INFO, logger="meshpay.transport")
    async with serving(server):
        keep = await open_client(HOST, server.port, NET)
        await until(lambda: server.sessions(Kind.CLIENT) == 1)
        for _ in range(40):
            assert await refused_code(open_client(HOST, server.port, NET)) == RejectCode.BUSY
        await until(lambda: server.stats.connections_refused["client_capacity"] == 40)
        refusing = [r for r in caplog.records if r.getMessage().startswith("refusing")]
        assert len(refusing) == 3, len(refusing)
        await keep.aclose()


async def test_client_protocol_errors_are_logged_at_a_bounded_rate(caplog: pytest.LogCaptureFixture) -> None:
    """Found by an attacker's review: each client session that sent one undecryptable frame wrote a
    log line (191 lines in 30 s), past the promised `log_burst` per kind per `log_interval`."""
    server = make(client_handshakes_per_second=1000.0, log_burst=3, log_interval=600.0)
    caplog.set_level(logging.INFO, logger="meshpay.transport")
    async with serving(server):
        for _ in range(30):
            client = await open_client(HOST, server.port, NET)
            raw = client._conn.stream
            await raw.send_all(len(b"garbage!" * 8).to_bytes(4, "big") + b"garbage!" * 8)  # fails to open
            with trio.fail_after(WAIT):
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    assert await client._conn.receive() is None
            await client.aclose()
        await until(lambda: server.stats.connections_open == 0)
        lines = [r for r in caplog.records if r.getMessage().startswith("client ")]
        assert 1 <= len(lines) <= 3, [r.getMessage() for r in lines]


def test_log_throttle_sums_up_what_it_held_back(caplog: pytest.LogCaptureFixture) -> None:
    throttle = LogThrottle(logging.getLogger("test.throttle"), burst=2, interval=10.0)
    caplog.set_level(logging.INFO, logger="test.throttle")
    for i in range(50):
        throttle.log(i * 0.1, logging.INFO, "dial failed", "dial %d failed", i)
        throttle.log(i * 0.1, logging.INFO, "refused", "refused %d", i)
    assert [r.getMessage() for r in caplog.records] == ["dial 0 failed", "refused 0", "dial 1 failed", "refused 1"]
    assert throttle.suppressed("dial failed") == 48
    throttle.log(12.0, logging.INFO, "dial failed", "dial %d failed", 50)
    assert [r.getMessage() for r in caplog.records[4:]] == [
        "48 more like 'dial failed' in the last 12 s (not logged)", "dial 50 failed"]


def test_every_limit_is_a_peer_config_setting(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "peer.toml"
    path.write_text(peer_config.render())
    settings = peer_config.load(path)
    # The template states the library defaults, and every transport limit of the peer port is there.
    assert settings.peer_port.limits() == DEFAULT_LIMITS
    port_fields = set(peer_config.PeerPortSettings.model_fields)
    assert port_fields == set(TransportLimits.__slots__) - {  # type: ignore[attr-defined]
        "max_frame", "max_frames_per_second", "frame_burst", "max_queue", "inbound_queue", "client_queue",
        "handshake_timeout", "idle_timeout", "backoff_min", "backoff_max", "penalty_threshold",
        "penalty_half_life", "ban_seconds"}
    config = node_config(settings, 7000, 8000)
    assert config.membership.max_outsiders == MembershipConfig.max_outsiders
    assert config.broadcast.observer_fanout == settings.membership.observer_fanout
    monkeypatch.setenv("MESHPAY_PEER_PORT__MAX_CLIENT_SESSIONS", "7")
    monkeypatch.setenv("MESHPAY_MEMBERSHIP__MAX_OUTSIDERS", "5")
    monkeypatch.setenv("MESHPAY_MEMBERSHIP__OUTSIDER_TTL", "9.5")
    settings = peer_config.load(path)
    assert settings.peer_port.limits().max_client_sessions == 7
    config = node_config(settings, 7000, 8000)
    assert (config.membership.max_outsiders, config.membership.outsider_ttl) == (5, 9.5)
    monkeypatch.setenv("MESHPAY_PEER_PORT__MAX_HANDSHAKES", "0")
    with pytest.raises(peer_config.ConfigError, match="max_handshakes"):
        peer_config.load(path)
