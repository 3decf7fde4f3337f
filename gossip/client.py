"""Client sessions: wallets and load generators speaking the binary protocol on the peer port.

A client runs the same handshake with role ROLE_CLIENT and a throwaway key; it is not a peer
(it never joins gossip and is never dialed back). On the peer, each session gets a reader task, a
writer task, an idle watch and the application's handler, all in one nursery that dies with the
connection. A session with no message either way for `client_idle_timeout` is closed; how many
sessions may be open at once is `gossip.admission`'s business.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable
from types import TracebackType

import trio

from crypto.errors import MeshpayError, RemoteProtocolError
from crypto.keys import SigningKey
from crypto.messages import ROLE_CLIENT
from gossip.channel import max_message, take_batch
from gossip.connection import Connection, TransportStats, connect
from gossip.limits import CLIENT_MAX_FRAME, DEFAULT_LIMITS, LogThrottle, TransportLimits
from gossip.links import ConnectError

log = logging.getLogger("meshpay.transport")

# What a connection may fail with because of the network or the other side (never our bugs).
CONNECTION_FAILURES = (MeshpayError, trio.BrokenResourceError, trio.ClosedResourceError, OSError,
                       trio.TooSlowError)
_SESSION_INBOX = 64


class ClientSession:
    """The peer's side of one client connection, handed to the transport's `client_handler`."""

    def __init__(self, conn: Connection, limits: TransportLimits, throttle: LogThrottle | None = None) -> None:
        self._conn = conn
        self._throttle = throttle
        self._max_queue = limits.client_queue
        self._max_frame = limits.max_frame
        self._max_message = max_message(limits.max_frame)
        self._queue: deque[bytes] = deque()
        self._wake = trio.Event()
        self._inbox_send, self._inbox = trio.open_memory_channel[bytes](_SESSION_INBOX)
        self.overloaded = False
        self._finishing = False

    @property
    def peer(self) -> tuple[str, int]:
        return self._conn.remote

    @property
    def closed(self) -> bool:
        return self._conn.closed

    async def receive(self) -> bytes:
        """The next message from the client; trio.EndOfChannel once it has gone."""
        return await self._inbox.receive()

    def note(self, kind: str, msg: str, *args: object) -> None:
        """Log what a client did wrong or what failed, rate-limited per `kind` together with the
        transport's other refusals (a client must not be able to fill the log)."""
        if self._throttle is None:
            log.info(msg, *args)
        else:
            self._throttle.log(trio.current_time(), logging.INFO, kind, msg, *args)

    def send(self, payload: bytes) -> None:
        """Queue a reply. A client that does not read fast enough is disconnected (overloaded)."""
        if len(payload) > self._max_message:
            raise ValueError(f"reply of {len(payload)} bytes exceeds the {self._max_message}-byte limit")
        if self._conn.closed:
            return
        if len(self._queue) >= self._max_queue:
            self.overloaded = True
            self.note("client overloaded", "client %s:%d overloaded (%d replies queued): closing", *self.peer,
                      len(self._queue))
            self.close()
            return
        self._queue.append(payload)
        self._wake.set()

    def close(self) -> None:
        self._conn.close()
        self._wake.set()

    async def _read(self) -> None:
        async with self._inbox_send:
            try:
                while True:
                    messages = await self._conn.receive()
                    if messages is None:
                        return
                    for msg in messages:
                        await self._inbox_send.send(msg)
            except CONNECTION_FAILURES as exc:
                if not self._conn.closed:
                    if isinstance(exc, RemoteProtocolError):
                        self._conn.stats.protocol_errors[type(exc).__name__] += 1
                    self.note("client failed", "client %s:%d: %s: %s", *self.peer, type(exc).__name__, exc)
                self._conn.close()

    async def _watch_idle(self, idle: float) -> None:
        while not self._conn.closed:
            remaining = self._conn.last_active + idle - trio.current_time()
            if remaining <= 0:
                log.debug("client %s:%d idle for %.0f s: closing", *self.peer, idle)
                self.close()
                return
            await trio.sleep(remaining)

    async def _write(self, done: trio.Event) -> None:
        try:
            while not self._conn.closed:
                if not self._queue:
                    if self._finishing:
                        return
                    self._wake = trio.Event()
                    await self._wake.wait()
                    continue
                await trio.sleep(0)  # let more replies queue up: one frame for many (see transport)
                await self._conn.send(take_batch(self._queue, self._max_frame))
        except CONNECTION_FAILURES as exc:
            if not self._conn.closed:
                self.note("client failed", "client %s:%d: %s: %s", *self.peer, type(exc).__name__, exc)
            self._conn.close()
        finally:
            done.set()


# Runs once per client connection, in its own task. MeshpayError and connection failures it
# raises end that session only; anything else is a bug in the handler and propagates.
ClientHandler = Callable[[ClientSession], Awaitable[None]]


async def serve_client(conn: Connection, handler: ClientHandler, limits: TransportLimits,
                       throttle: LogThrottle | None = None) -> None:
    """Run one client session until the handler returns or the connection ends."""
    session = ClientSession(conn, limits, throttle)
    writer_done = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(session._read)
        nursery.start_soon(session._write, writer_done)
        nursery.start_soon(session._watch_idle, limits.client_idle_timeout)
        try:
            await handler(session)
        except CONNECTION_FAILURES as exc:
            session.note("client failed", "client %s:%d: handler ended: %s: %s", *session.peer,
                         type(exc).__name__, exc)
        # Let the replies already queued go out before closing, but not forever.
        session._finishing = True
        session._wake.set()
        with trio.move_on_after(limits.handshake_timeout):
            await writer_done.wait()
        nursery.cancel_scope.cancel()


class ClientConnection:
    """The client's side: one connection to a peer, used directly by the wallet or load generator."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._send_lock = trio.Lock()
        self._recv_lock = trio.Lock()
        self._received: deque[bytes] = deque()

    @property
    def peer_id(self) -> bytes:
        return self._conn.peer_id

    async def send(self, payload: bytes) -> None:
        await self.send_many([payload])

    async def send_many(self, payloads: list[bytes]) -> None:
        """Send several messages, as few sealed frames as a client may send (`CLIENT_MAX_FRAME`)."""
        queue = deque(payloads)
        async with self._send_lock:
            while queue:
                await self._conn.send(take_batch(queue, CLIENT_MAX_FRAME))

    async def receive(self) -> bytes:
        """The next message from the peer; trio.EndOfChannel when it closed the connection."""
        async with self._recv_lock:
            while not self._received:
                messages = await self._conn.receive()
                if messages is None:
                    raise trio.EndOfChannel
                self._received.extend(messages)
            return self._received.popleft()

    async def aclose(self) -> None:
        self._conn.close()
        await trio.lowlevel.checkpoint()

    async def __aenter__(self) -> ClientConnection:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None,
    ) -> None:
        await self.aclose()


async def open_client(
    host: str, port: int, network_id: bytes, *, limits: TransportLimits = DEFAULT_LIMITS,
) -> ClientConnection:
    """Connect to a peer as a client (with a throwaway key). Raises ConnectError."""
    try:
        conn = await connect(host, port, SigningKey.generate(), network_id, limits, TransportStats(),
                             role=ROLE_CLIENT)
    except CONNECTION_FAILURES as exc:
        raise ConnectError(f"cannot open a client connection to {host}:{port}: {exc}") from exc
    return ClientConnection(conn)
