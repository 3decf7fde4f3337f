"""One authenticated, encrypted TCP connection: the trio driver of the handshake and the channel.

`connect()` dials and runs the handshake as initiator, `accept()` runs it as responder on a stream
the listener accepted; both return a `Connection` or raise a typed error (a `HandshakeError`, a
`FrameError`, or the stream's own OSError / trio.BrokenResourceError). `Connection.close()` is
synchronous so a ban can cut connections from non-async code.

After the handshake, frames move with plain `os.read`/`os.write` on the socket's descriptor and
trio's `wait_readable`/`wait_writable` only when the socket would block. trio's stream methods
yield to the scheduler after every successful call and wrap each in several context managers:
with one frame per message hop that was most of a hop's CPU (about 300 us of Python per hop on the
2-core machine the benchmarks run on, against about 60 us this way). Fairness is kept by yielding
at least every `_READS_PER_YIELD` reads, and by the bounded queue behind the reader.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import trio

from crypto.keys import SigningKey
from crypto.messages import ROLE_CLIENT, ROLE_PEER
from gossip.channel import Opener, Sealer
from gossip.framing import FrameDecoder, encode_frame
from gossip.handshake import (
    MAX_HANDSHAKE_FRAME,
    Admit,
    Handshake,
    HandshakeClosed,
    HandshakeError,
    HandshakeResult,
    HandshakeTimeout,
)
from gossip.limits import CLIENT_MAX_FRAME, FrameFlood, TokenBucket, TransportLimits

READ_SIZE = 1 << 16
_READS_PER_YIELD = 16  # successful reads in a row before the reader lets other tasks run
# Errors of a read or write that mean the other side went away (not our bug).
_GONE = frozenset({errno.ECONNRESET, errno.EPIPE, errno.ENOTCONN, errno.ETIMEDOUT, errno.ECONNABORTED})
REJECT_GRACE = 0.5  # how long we try to deliver a HandshakeReject before closing anyway


@dataclass(slots=True)
class TransportStats:
    """Counters for /metrics. Failure counts are keyed by error class name."""

    bytes_in: int = 0
    bytes_out: int = 0
    frames_in: int = 0
    frames_out: int = 0
    messages_in: int = 0
    messages_out: int = 0
    messages_dropped: int = 0
    connections_open: int = 0  # authenticated connections, both directions, clients included
    inbound_sockets: int = 0  # accepted TCP connections, from accept to close
    connections_accepted: int = 0
    connections_dialed: int = 0
    connections_refused: collections.Counter[str] = field(default_factory=collections.Counter)  # by limit
    connections_evicted: collections.Counter[str] = field(default_factory=collections.Counter)  # by kind
    outsider_waits: int = 0  # times outsider reads waited for the class budget
    handshake_failures: collections.Counter[str] = field(default_factory=collections.Counter)
    protocol_errors: collections.Counter[str] = field(default_factory=collections.Counter)
    bans: int = 0


class Connection:
    """A stream after a successful handshake. One task sends, one task receives."""

    __slots__ = ("_bucket", "_decoder", "_fd", "_opener", "_pending", "_reads", "_sealer", "closed",
                 "last_active", "outbound", "peer_id", "remote", "role", "stats", "stream")

    def __init__(
        self, stream: trio.SocketStream, result: HandshakeResult, decoder: FrameDecoder,
        pending: list[bytes], limits: TransportLimits, stats: TransportStats, remote: tuple[str, int],
    ) -> None:
        self.stream = stream
        self._fd = stream.socket.fileno()
        self.peer_id = result.peer_id
        self.role = result.role
        self.outbound = result.initiator
        self.remote = remote
        self.stats = stats
        self.closed = False
        self._sealer = Sealer(result.send_key, limits.max_frame)
        self._opener = Opener(result.recv_key)
        decoder.max_frame = limits.max_frame
        if result.role == ROLE_CLIENT and not result.initiator:
            decoder.max_frame = min(limits.max_frame, CLIENT_MAX_FRAME)  # what a client may send us
        self._decoder = decoder
        self._pending = pending
        now = trio.current_time()
        self._bucket = TokenBucket(limits.max_frames_per_second, limits.frame_burst, now)
        self._reads = 0
        self.last_active = now  # last message either way (idle limits and the idle reaper read it)

    def _check_open(self) -> None:
        # Checked right before every read or write: once closed, the descriptor number may already
        # belong to another socket.
        if self.closed:
            raise trio.ClosedResourceError("the connection was closed")

    @staticmethod
    def _broken(exc: OSError) -> BaseException:
        if exc.errno in _GONE:
            return trio.BrokenResourceError(f"connection lost: {exc.strerror or exc}")
        return exc

    async def send(self, messages: Sequence[bytes]) -> None:
        """Seal `messages` into one frame and write it. Raises trio.BrokenResourceError /
        trio.ClosedResourceError when the connection is gone; a raise means the frame was not
        completely written, so the other side cannot have opened it."""
        self._check_open()
        frame = encode_frame(self._sealer.seal(messages), self._sealer.max_frame)
        view = memoryview(frame)
        fd = self._fd
        while view:
            try:
                sent = os.write(fd, view)
            except BlockingIOError:
                await trio.lowlevel.wait_writable(fd)
                self._check_open()
                continue
            except OSError as exc:
                raise self._broken(exc) from exc
            view = view[sent:]
        stats = self.stats
        stats.bytes_out += len(frame)
        stats.frames_out += 1
        stats.messages_out += len(messages)
        self.last_active = trio.current_time()

    async def receive(self) -> list[bytes] | None:
        """The messages of the next frames to arrive; None at a clean end of stream.

        Raises RemoteProtocolError subclasses (FrameTooLarge, TruncatedFrame, ChannelError,
        FrameFlood) for anything the other side did wrong.
        """
        while True:
            frames = self._pending
            if frames:
                self._pending = []
            else:
                data = await self._read()
                if not data:
                    self._decoder.close()
                    return None
                self.stats.bytes_in += len(data)
                frames = self._decoder.feed(data)
                if not frames:
                    continue
            now = trio.current_time()
            if not self._bucket.take(now, len(frames)):
                raise FrameFlood(f"more than {self._bucket.rate:.0f} frames/s")
            self.stats.frames_in += len(frames)
            messages: list[bytes] = []
            for frame in frames:
                messages.extend(self._opener.open(frame))
            if messages:
                self.stats.messages_in += len(messages)
                self.last_active = now
                return messages

    async def _read(self) -> bytes:
        fd = self._fd
        if self._reads >= _READS_PER_YIELD:
            self._reads = 0
            await trio.lowlevel.checkpoint()
        elif self._reads < 0:
            # The last read drained the socket: waiting first saves a read that would fail.
            self._reads = 0
            self._check_open()
            await trio.lowlevel.wait_readable(fd)
        while True:
            self._check_open()
            try:
                data = os.read(fd, READ_SIZE)
            except BlockingIOError:
                self._reads = 0
                await trio.lowlevel.wait_readable(fd)
                continue
            except OSError as exc:
                raise self._broken(exc) from exc
            self._reads = self._reads + 1 if len(data) == READ_SIZE else -1
            return data

    def close(self) -> None:
        """Close now; tasks blocked on this stream get trio.ClosedResourceError."""
        if not self.closed:
            self.closed = True
            self.stream.socket.close()


def remote_address(stream: trio.SocketStream) -> tuple[str, int]:
    try:
        host, port = stream.socket.getpeername()[:2]
    except OSError:
        return ("?", 0)
    return str(host), int(port)


async def _run_handshake(
    stream: trio.SocketStream, hs: Handshake, limits: TransportLimits, stats: TransportStats,
) -> Connection:
    decoder = FrameDecoder(MAX_HANDSHAKE_FRAME)
    pending: list[bytes] = []

    async def frames_in() -> list[bytes]:
        while True:
            data = await stream.receive_some(READ_SIZE)
            if not data:
                raise HandshakeClosed("the other side closed the connection during the handshake")
            frames = decoder.feed(data)
            if frames:
                return frames

    try:
        if hs.initiator:
            await stream.send_all(encode_frame(hs.start()))
            frames = await frames_in()
        else:
            # The responder looks at the initiator's Hello before making its own, so an initiator
            # its `screen` refuses (a flood of fresh keys) costs no key generation here.
            frames = await frames_in()
            hs.screen_hello(frames[0])
            await stream.send_all(encode_frame(hs.start()))
        while True:
            for i, frame in enumerate(frames):
                if hs.done:
                    # The other side may pipeline its first sealed frames after its last
                    # handshake frame; they belong to the channel.
                    pending = frames[i:]
                    break
                for reply in hs.receive(frame):
                    await stream.send_all(encode_frame(reply))
            if hs.done:
                break
            frames = await frames_in()
    except HandshakeError as exc:
        if exc.reject is not None:
            # The reject is a courtesy; the other side may have hung up first.
            with trio.move_on_after(REJECT_GRACE), contextlib.suppress(
                    trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                await stream.send_all(encode_frame(exc.reject))
        raise
    return Connection(stream, hs.result, decoder, pending, limits, stats, remote_address(stream))


async def connect(
    host: str, port: int, identity: SigningKey, network_id: bytes, limits: TransportLimits,
    stats: TransportStats, *, role: int = ROLE_PEER, expect: bytes | None = None,
    admit: Admit | None = None,
) -> Connection:
    """Dial and handshake as initiator within `limits.handshake_timeout`."""
    hs = Handshake(identity, network_id, initiator=True, role=role, expect=expect, admit=admit)
    stream: trio.SocketStream | None = None
    try:
        with trio.fail_after(limits.handshake_timeout):
            stream = await trio.open_tcp_stream(host, port)
            return await _run_handshake(stream, hs, limits, stats)
    except trio.TooSlowError as exc:
        if stream is not None:
            stream.socket.close()
        raise HandshakeTimeout(f"no handshake with {host}:{port} within {limits.handshake_timeout} s") from exc
    except BaseException:
        if stream is not None:
            stream.socket.close()
        raise


async def accept(
    stream: trio.SocketStream, identity: SigningKey, network_id: bytes, limits: TransportLimits,
    stats: TransportStats, *, accept_roles: frozenset[int], admit: Admit | None = None,
    screen: Admit | None = None,
) -> Connection:
    """Handshake as responder on an accepted stream; the caller owns (and closes) the stream."""
    hs = Handshake(identity, network_id, initiator=False, accept_roles=accept_roles, admit=admit,
                   screen=screen)
    try:
        with trio.fail_after(limits.handshake_timeout):
            return await _run_handshake(stream, hs, limits, stats)
    except trio.TooSlowError as exc:
        raise HandshakeTimeout(f"no handshake within {limits.handshake_timeout} s") from exc
