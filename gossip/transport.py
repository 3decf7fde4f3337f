"""`TcpTransport`: the real `gossip.links.Links` — authenticated, encrypted, rate-limited TCP.

Shape of the connections: per peer we dial (on demand, with the peer id we expect) one outbound
connection and send only on it; we read from every connection we have, dialed or accepted. So two
peers that dial each other at once simply end up with two connections, one per direction, and no
tie-breaking is needed.

Every task lives in the nursery `serve()` owns: the listener, one handler per accepted connection,
one writer per peer with queued messages, one reader per outbound connection. `send()` is
synchronous and never blocks; it appends to the peer's bounded queue and wakes (or starts) that
peer's writer, which seals everything queued into one frame per write.

Nothing a remote sends can stop the transport: each connection's task catches the failures a
network or a hostile peer can cause (`CONNECTION_FAILURES`), for that connection only. A
`RemoteProtocolError` after the handshake penalises the authenticated peer; before it, the
connection is just closed (there is nobody proven to blame, and all devnet peers share one IP).

Who may connect is `gossip.admission`'s decision: committee peers always get a link; outsiders and
clients share bounded classes. Outsiders also share one budget of messages and bytes read per
second (their reads wait beyond it), one budget of dials per second, and a short send queue each.
Refusals and failures caused from outside are logged through a `LogThrottle`.
"""

from __future__ import annotations

import logging
import random
from collections import Counter, OrderedDict, deque
from functools import partial

import trio

from crypto.errors import RemoteProtocolError
from crypto.keys import SigningKey
from crypto.messages import ROLE_CLIENT, ROLE_PEER
from gossip.admission import Admission, Kind
from gossip.channel import max_message, take_batch
from gossip.client import CONNECTION_FAILURES, ClientHandler, serve_client
from gossip.connection import Connection, TransportStats, accept, connect, remote_address
from gossip.handshake import Busy, NetworkMismatch, PeerBanned, WrongPeer
from gossip.limits import (
    DEFAULT_LIMITS,
    LogThrottle,
    PenaltyBook,
    TokenBucket,
    TransportLimits,
    backoff_delay,
)
from gossip.links import ConnectError

log = logging.getLogger("meshpay.transport")

# The dialer closes an idle connection after idle_timeout; the accepting side waits longer, so in
# the normal case it is never the one to cut a connection the other side is about to write on.
INBOUND_IDLE_FACTOR = 2.0


def _short(peer_id: bytes) -> str:
    return peer_id.hex()[:12]


def _describe(host: str, port: int, exc: BaseException) -> str:
    where = f"{host}:{port}"
    if isinstance(exc, (NetworkMismatch, WrongPeer)):
        return f"{where} {exc}"
    if isinstance(exc, OSError):
        return f"cannot reach {where}: {exc.strerror or exc}"
    return f"{where}: {type(exc).__name__}: {exc}"


class _Wakeup:
    """Wakes one waiting task from synchronous code: a lean, reusable `trio.Event` for a writer
    (a fresh Event and its parking lot per wait cost a good share of a message hop)."""

    __slots__ = ("_pending", "_task")

    def __init__(self) -> None:
        self._task: trio.lowlevel.Task | None = None
        self._pending = False

    def set(self) -> None:
        task = self._task
        if task is not None:
            self._task = None
            trio.lowlevel.reschedule(task)
        else:
            self._pending = True

    async def wait(self) -> None:
        if self._pending:
            self._pending = False
            await trio.lowlevel.checkpoint()
            return
        self._task = trio.lowlevel.current_task()

        def abort(_: object) -> trio.lowlevel.Abort:
            self._task = None
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)


class _Handshaking:
    """An inbound handshake holding a slot: where from, how to drop it, whether its Hello came."""

    __slots__ = ("heard", "host", "scope")

    def __init__(self, host: str, scope: trio.CancelScope) -> None:
        self.host = host
        self.scope = scope
        self.heard = False


class _Peer:
    """What we know about one remote peer id: where to dial it and what waits to go there."""

    __slots__ = ("addr", "failures", "inbound", "out", "peer_id", "queue", "retry", "wake", "writing")

    def __init__(self, peer_id: bytes) -> None:
        self.peer_id = peer_id
        self.addr: tuple[str, int] | None = None
        self.queue: deque[bytes] = deque()
        self.wake = _Wakeup()
        self.writing = False
        self.out: Connection | None = None
        self.inbound: set[Connection] = set()
        self.failures = 0  # consecutive failed dials/sends, for backoff
        self.retry: trio.Event | None = None  # set to cut a backoff short (the peer dialed us)

    def connected(self) -> bool:
        return self.out is not None and not self.out.closed

    def unused(self) -> bool:
        return not (self.addr or self.out or self.inbound or self.queue or self.writing)

    def notify(self) -> None:
        self.wake.set()


class TcpTransport:
    """Peer links over TCP on 127.0.0.1 (or `host`). Start with `await nursery.start(t.serve)`."""

    def __init__(
        self,
        identity: SigningKey,
        network_id: bytes,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        limits: TransportLimits = DEFAULT_LIMITS,
        client_handler: ClientHandler | None = None,
        committee: frozenset[bytes] = frozenset(),
    ) -> None:
        self.identity = identity
        self.peer_id = identity.public
        self.network_id = network_id
        self.host = host
        self.port = port
        self.limits = limits
        self.client_handler = client_handler
        self.stats = TransportStats()
        self._inbound_send, self._inbound = trio.open_memory_channel[tuple[bytes, bytes]](
            limits.inbound_queue
        )
        self._peers: dict[bytes, _Peer] = {}
        self._book = PenaltyBook(limits.penalty_threshold, limits.penalty_half_life, limits.ban_seconds)
        self._nursery: trio.Nursery | None = None
        self._admission = Admission(limits, committee)
        self._handshaking: OrderedDict[object, _Handshaking] = OrderedDict()  # oldest first
        self._log = LogThrottle(log, limits.log_burst, limits.log_interval)
        # Class budgets for outsiders; made in serve(), where there is a clock.
        self._outsider_messages: TokenBucket | None = None
        self._outsider_bytes: TokenBucket | None = None
        self._outsider_dials: TokenBucket | None = None
        self._max_message = max_message(limits.max_frame)
        self._rng = random.Random()

    # ---- the Links interface -------------------------------------------------------------

    @property
    def inbound(self) -> trio.MemoryReceiveChannel[tuple[bytes, bytes]]:
        return self._inbound

    def send(self, peer_id: bytes, payload: bytes) -> bool:
        peer = self._peers.get(peer_id)
        nursery = self._nursery
        if (
            nursery is None
            or peer is None
            or peer.addr is None
            or len(peer.queue) >= self._queue_limit(peer_id)
            or len(payload) > self._max_message
            or self.is_banned(peer_id)
        ):
            self.stats.messages_dropped += 1
            return False
        peer.queue.append(payload)
        if peer.writing:
            peer.notify()
        else:
            peer.writing = True
            nursery.start_soon(self._write_loop, peer)
        return True

    def set_address(self, peer_id: bytes, host: str, port: int) -> None:
        if peer_id == self.peer_id:
            return
        peer = self._peer(peer_id)
        if peer.addr != (host, port):
            peer.addr = (host, port)
            peer.failures = 0

    def forget(self, peer_id: bytes) -> None:
        peer = self._peers.pop(peer_id, None)
        if peer is not None:
            peer.addr = None
            self._disconnect(peer)

    def set_committee(self, ids: frozenset[bytes]) -> None:
        """The committee changed: links whose class changed are closed (they reconnect and are
        classed afresh)."""
        for conn in self._admission.set_committee(ids):
            conn.close()

    def penalize(self, peer_id: bytes, penalty: int, reason: str) -> None:
        self._log.log(trio.current_time(), logging.INFO if penalty > 0 else logging.DEBUG, "penalty",
                      "penalty %s for %s: %s", penalty, _short(peer_id), reason)
        if self._book.penalize(peer_id, penalty, trio.current_time()):
            self.stats.bans += 1
            log.warning("banning %s for %.0f s: %s", _short(peer_id), self.limits.ban_seconds, reason)
            peer = self._peers.get(peer_id)
            if peer is not None:
                self._disconnect(peer)

    async def dial(self, host: str, port: int, *, expect: bytes | None = None) -> bytes:
        """Connect and handshake; the connection becomes our outbound link to the peer it proved."""
        if self._nursery is None:
            raise RuntimeError("dial() needs serve() running")
        try:
            conn = await connect(host, port, self.identity, self.network_id, self.limits, self.stats,
                                 expect=expect, admit=self._admit)
        except CONNECTION_FAILURES as exc:
            self.stats.handshake_failures[type(exc).__name__] += 1
            raise ConnectError(_describe(host, port, exc)) from exc
        peer = self._peer(conn.peer_id)
        peer.addr = (host, port)
        self._adopt_outbound(peer, conn)
        return conn.peer_id

    # ---- public helpers ------------------------------------------------------------------

    def is_banned(self, peer_id: bytes) -> bool:
        return self._book.banned(peer_id, trio.current_time())

    def is_committee(self, peer_id: bytes) -> bool:
        return peer_id in self._admission.committee

    def sessions(self, kind: Kind) -> int:
        """Inbound connections of a class now open."""
        return self._admission.count(kind)

    def connected(self, peer_id: bytes) -> bool:
        """Whether we hold an open outbound connection to the peer."""
        peer = self._peers.get(peer_id)
        return peer is not None and peer.connected()

    def queued(self, peer_id: bytes) -> int:
        peer = self._peers.get(peer_id)
        return len(peer.queue) if peer is not None else 0

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen, then run every connection's task until cancelled."""
        if self._nursery is not None:
            raise RuntimeError("serve() is already running")
        listeners = await trio.open_tcp_listeners(self.port, host=self.host)
        self.port = listeners[0].socket.getsockname()[1]
        now, limits = trio.current_time(), self.limits
        self._outsider_messages = TokenBucket(limits.outsider_messages_per_second,
                                              2 * limits.outsider_messages_per_second, now)
        self._outsider_bytes = TokenBucket(limits.outsider_bytes_per_second, 2 * limits.outsider_bytes_per_second, now)
        self._outsider_dials = TokenBucket(limits.outsider_dials_per_second,
                                           max(1.0, 2 * limits.outsider_dials_per_second), now)
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(partial(trio.serve_listeners, self._handle_inbound, listeners,
                                           handler_nursery=nursery))
                nursery.start_soon(self._reap_idle)
                log.info("%s listening on %s:%d", _short(self.peer_id), self.host, self.port)
                task_status.started(self.port)
        finally:
            self._nursery = None
            for peer in self._peers.values():
                self._close_connections(peer)

    # ---- outbound ------------------------------------------------------------------------

    def _peer(self, peer_id: bytes) -> _Peer:
        peer = self._peers.get(peer_id)
        if peer is None:
            peer = self._peers[peer_id] = _Peer(peer_id)
        return peer

    def _admit(self, peer_id: bytes, role: int) -> None:
        if role == ROLE_PEER and self.is_banned(peer_id):
            raise PeerBanned("banned here for misbehaviour; try again later")

    async def _write_loop(self, peer: _Peer) -> None:
        try:
            while True:
                if not peer.queue:
                    if not await self._wait_for_messages(peer):
                        return
                    continue
                conn = peer.out if peer.connected() else await self._reconnect(peer)
                if conn is None:
                    return
                # No extra scheduler pass before sealing: `send()` wakes this task while the
                # protocol task works through everything that arrived, so by the time it runs the
                # whole turn's messages for this peer are queued and go out as one frame.
                batch = take_batch(peer.queue, self.limits.max_frame)
                try:
                    await conn.send(batch)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                    # The write raised, so the frame was not completely written and the other side
                    # cannot have opened it: resending on a new connection cannot duplicate.
                    if peer.addr is not None and not self.is_banned(peer.peer_id):
                        peer.queue.extendleft(reversed(batch))
                    else:
                        self.stats.messages_dropped += len(batch)
                    peer.failures += 1
                    if not conn.closed:
                        log.info("send to %s failed: %s: %s", _short(peer.peer_id), type(exc).__name__, exc)
                        conn.close()
                    continue
                peer.failures = 0
        finally:
            peer.writing = False
            self._drop_if_unused(peer)

    async def _wait_for_messages(self, peer: _Peer) -> bool:
        """Wait for something to send; False when the writer should stop (disconnected: the idle
        reaper closes connections that carried nothing for `idle_timeout`)."""
        while not peer.queue:
            if not peer.connected():
                return False
            await peer.wake.wait()
        return True

    async def _reconnect(self, peer: _Peer) -> Connection | None:
        """Dial the peer's address until it works, with backoff; None when there is no point any
        more (nothing queued, address forgotten, peer banned)."""
        while True:
            if not peer.queue or peer.addr is None:
                return None
            if self.is_banned(peer.peer_id):
                self._drop_queue(peer)
                return None
            if peer.connected():  # dial() got there first
                return peer.out
            if peer.failures:
                peer.retry = trio.Event()
                with trio.move_on_after(backoff_delay(peer.failures, self.limits.backoff_min,
                                                      self.limits.backoff_max, self._rng)):
                    await peer.retry.wait()
                peer.retry = None
                if not peer.queue or peer.addr is None or peer.connected():
                    continue  # things changed while we slept: re-check from the top
            host, port = peer.addr
            if not self._may_dial(peer.peer_id):
                self.stats.connections_refused["outsider_dial_rate"] += 1
                self._drop_queue(peer)
                return None
            try:
                conn = await connect(host, port, self.identity, self.network_id, self.limits,
                                     self.stats, expect=peer.peer_id, admit=self._admit)
            except CONNECTION_FAILURES as exc:
                peer.failures += 1
                self.stats.handshake_failures[type(exc).__name__] += 1
                self._log.log(trio.current_time(), logging.INFO, "dial failed",
                              "dial %s at %s:%d failed (attempt %d): %s: %s", _short(peer.peer_id), host,
                              port, peer.failures, type(exc).__name__, exc)
                continue
            if peer.addr is None or self._peers.get(peer.peer_id) is not peer:
                conn.close()  # forgotten while we were dialing
                return None
            return self._adopt_outbound(peer, conn)

    def _adopt_outbound(self, peer: _Peer, conn: Connection) -> Connection:
        if peer.connected():
            conn.close()
            assert peer.out is not None
            return peer.out
        nursery = self._nursery
        if nursery is None:
            conn.close()
            raise trio.ClosedResourceError("the transport stopped")
        peer.out = conn
        self.stats.connections_dialed += 1
        self.stats.connections_open += 1
        nursery.start_soon(self._read_outbound, peer, conn)
        if peer.queue and not peer.writing:
            peer.writing = True
            nursery.start_soon(self._write_loop, peer)
        return conn

    async def _read_outbound(self, peer: _Peer, conn: Connection) -> None:
        # The other side sends on its own connection, but reading this one is how we learn that
        # it closed (so the writer redials) and it accepts whatever the other side sends here.
        try:
            await self._read_loop(conn)
        finally:
            if peer.out is conn:
                peer.out = None
            self.stats.connections_open -= 1
            peer.notify()
            self._drop_if_unused(peer)

    # ---- inbound -------------------------------------------------------------------------

    async def _handle_inbound(self, stream: trio.SocketStream) -> None:
        host, port = remote_address(stream)
        self.stats.inbound_sockets += 1
        try:
            conn = await self._handshake_inbound(stream, host, port)
            if conn is None:
                return
            try:
                victims = self._admission.admit(conn, trio.current_time())
            except Busy as exc:  # the class filled up while this handshake ran
                self._refused(host, port, exc.reason)
                conn.close()
                return
            for victim in victims:
                self.stats.connections_evicted["client" if victim.role == ROLE_CLIENT else "peer"] += 1
                victim.close()
            self.stats.connections_accepted += 1
            self.stats.connections_open += 1
            try:
                if conn.role == ROLE_CLIENT:
                    await self._run_client(conn)
                else:
                    await self._run_inbound_peer(conn)
            finally:
                self.stats.connections_open -= 1
                self._admission.release(conn)
        finally:
            self.stats.inbound_sockets -= 1
            stream.socket.close()

    async def _handshake_inbound(self, stream: trio.SocketStream, host: str, port: int) -> Connection | None:
        """Run the responder's handshake under the handshake-slot limit; None if it did not finish.

        Nobody is proven before the handshake, so no key can be preferred here. When all slots are
        taken, one handshake is dropped for the newest: from the address holding the most slots,
        the oldest that has not even sent its Hello, else that address's oldest. A flood of silent
        sockets, however fast it reconnects, then evicts its own, never a client that has spoken
        (an attacker's review found 400 reconnecting silent sockets locked clients out when the
        plain oldest was dropped), and a flood from one address never evicts another address's.
        """
        if len(self._handshaking) >= self.limits.max_handshakes:
            self._evict_handshake()
        token = object()
        with trio.CancelScope() as scope:
            pending = self._handshaking[token] = _Handshaking(host, scope)
            try:
                return await accept(stream, self.identity, self.network_id, self.limits, self.stats,
                                    accept_roles=self._accept_roles(),
                                    admit=partial(self._admit_inbound, host),
                                    screen=partial(self._screen_heard, host, pending))
            except Busy as exc:
                self._refused(host, port, exc.reason)
            except CONNECTION_FAILURES as exc:
                self.stats.handshake_failures[type(exc).__name__] += 1
                self._log.log(trio.current_time(), logging.INFO, "handshake failed",
                              "handshake from %s:%d failed: %s: %s", host, port, type(exc).__name__, exc)
            finally:
                self._handshaking.pop(token, None)
        if scope.cancelled_caught:
            self._log.log(trio.current_time(), logging.INFO, "handshake evicted",
                          "dropped the handshake from %s:%d: %d newer ones were waiting", host, port,
                          self.limits.max_handshakes)
        return None

    def _evict_handshake(self) -> None:
        counts = Counter(h.host for h in self._handshaking.values())
        heaviest = max(counts, key=lambda host: counts[host])
        mine = [(token, h) for token, h in self._handshaking.items() if h.host == heaviest]
        token, victim = next(((t, h) for t, h in mine if not h.heard), mine[0])
        del self._handshaking[token]
        victim.scope.cancel()
        self.stats.connections_evicted["handshake"] += 1

    def _screen_heard(self, host: str, pending: _Handshaking, peer_id: bytes, role: int) -> None:
        self._screen(host, peer_id, role)
        pending.heard = True  # its Hello came and passed the screen

    def _refused(self, host: str, port: int, reason: str) -> None:
        self.stats.connections_refused[reason] += 1
        self._log.log(trio.current_time(), logging.INFO, f"refused ({reason})",
                      "refusing %s:%d: %s", host, port, reason)

    def _screen(self, host: str, peer_id: bytes, role: int) -> None:
        self._admission.screen(peer_id, role, host, trio.current_time())

    def _admit_inbound(self, host: str, peer_id: bytes, role: int) -> None:
        self._admit(peer_id, role)
        self._admission.check(peer_id, role, host, trio.current_time())

    def _accept_roles(self) -> frozenset[int]:
        return frozenset({ROLE_PEER, ROLE_CLIENT}) if self.client_handler else frozenset({ROLE_PEER})

    async def _run_inbound_peer(self, conn: Connection) -> None:
        peer = self._peer(conn.peer_id)
        peer.inbound.add(conn)
        if peer.failures:
            # It just proved it is up (a restart): dial it now rather than after the backoff.
            peer.failures = 0
            if peer.retry is not None:
                peer.retry.set()
        try:
            await self._read_loop(conn)
        finally:
            peer.inbound.discard(conn)
            self._drop_if_unused(peer)

    async def _run_client(self, conn: Connection) -> None:
        assert self.client_handler is not None
        try:
            await serve_client(conn, self.client_handler, self.limits, self._log)
        finally:
            conn.close()

    async def _read_loop(self, conn: Connection) -> None:
        """Deliver a connection's messages to `inbound` until it ends; never raises for it."""
        who = _short(conn.peer_id)
        deliver = self._inbound_send
        try:
            while True:
                messages = await conn.receive()
                if messages is None:
                    log.debug("%s closed its connection", who)
                    return
                if conn.peer_id not in self._admission.committee:
                    await self._outsider_budget(messages)
                for msg in messages:
                    try:
                        deliver.send_nowait((conn.peer_id, msg))
                    except trio.WouldBlock:
                        await deliver.send((conn.peer_id, msg))  # backpressure on the sender's TCP
        except RemoteProtocolError as exc:
            if not conn.closed:
                self.stats.protocol_errors[type(exc).__name__] += 1
                self._log.log(trio.current_time(), logging.WARNING, "protocol error",
                              "%s broke the protocol: %s: %s", who, type(exc).__name__, exc)
                conn.close()
                self.penalize(conn.peer_id, exc.penalty, f"{type(exc).__name__}: {exc}")
        except CONNECTION_FAILURES as exc:
            if not conn.closed:
                self._log.log(trio.current_time(), logging.INFO, "connection failed",
                              "connection with %s failed: %s: %s", who, type(exc).__name__, exc)
        finally:
            conn.close()

    async def _outsider_budget(self, messages: list[bytes]) -> None:
        """Charge what an outsider's link delivered to the shared outsider budget; wait (and so
        stop reading from this link: TCP pushes back on the sender) while the class is in debt."""
        assert self._outsider_messages is not None and self._outsider_bytes is not None
        now = trio.current_time()
        wait = max(self._outsider_messages.debit(now, len(messages)),
                   self._outsider_bytes.debit(now, sum(map(len, messages))))
        if wait > 0:
            self.stats.outsider_waits += 1
            await trio.sleep(wait)

    def _queue_limit(self, peer_id: bytes) -> int:
        return self.limits.max_queue if peer_id in self._admission.committee else self.limits.outsider_queue

    def _may_dial(self, peer_id: bytes) -> bool:
        if peer_id in self._admission.committee:
            return True
        assert self._outsider_dials is not None
        return self._outsider_dials.take(trio.current_time())
    async def _reap_idle(self) -> None:
        """Close peer connections that carried nothing for a while, all from one task (a timeout
        scope around every receive and every wait to send cost more than the rest of a hop).

        The dialer's side closes after `idle_timeout`; the accepting side only after
        `INBOUND_IDLE_FACTOR` times that, so it is normally never the one to cut a connection the
        other side is about to write on.
        """
        idle = self.limits.idle_timeout
        while True:
            await trio.sleep(idle / 4)
            now = trio.current_time()
            for peer in list(self._peers.values()):
                out = peer.out
                if out is not None and not out.closed and not peer.queue and now - out.last_active >= idle:
                    log.debug("closing idle connection to %s", _short(peer.peer_id))
                    out.close()
                    peer.notify()
                for conn in list(peer.inbound):
                    if not conn.closed and now - conn.last_active >= idle * INBOUND_IDLE_FACTOR:
                        log.debug("closing connection from %s idle for %.0f s", _short(conn.peer_id),
                                  now - conn.last_active)
                        conn.close()

    # ---- teardown ------------------------------------------------------------------------

    def _disconnect(self, peer: _Peer) -> None:
        self._drop_queue(peer)
        self._close_connections(peer)
        peer.notify()

    def _drop_queue(self, peer: _Peer) -> None:
        self.stats.messages_dropped += len(peer.queue)
        peer.queue.clear()

    def _close_connections(self, peer: _Peer) -> None:
        if peer.out is not None:
            peer.out.close()
        for conn in list(peer.inbound):
            conn.close()

    def _drop_if_unused(self, peer: _Peer) -> None:
        if peer.unused() and self._peers.get(peer.peer_id) is peer:
            del self._peers[peer.peer_id]
