"""The trio driver that runs a peer's sans-IO cores over a set of links.

One task receives messages, decodes them once, routes them by type to the core that handles
them, and performs the effects the core asked for; timers are the cores' own deadlines. Effects
are performed synchronously from a queue, so a core's message to its own peer (a gateway that is
also an owner) is handled in order without re-entrancy, and a `Persist` whose write becomes durable
later (in the group-commit writer's task) performs its follow-up effects the same way.

The daemon and the simulator run this same code; they differ only in the `Links` and the clock.
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from collections.abc import Callable, Iterable
from typing import Protocol

import trio

from crypto.errors import RemoteProtocolError
from crypto.schema import Message, decode_any
from gossip.broadcast import Broadcast
from gossip.effects import (
    Committee,
    Dial,
    Forget,
    Learn,
    Notify,
    Outbox,
    Penalize,
    Persist,
    Publish,
    Seen,
    Send,
)
from gossip.links import ConnectError, Links
from gossip.membership import Membership
from store.db import Batch, Store
from store.group_commit import GroupCommitWriter

log = logging.getLogger("meshpay.runtime")

MAX_DRAIN = 256  # messages handled per wake-up before timers get a look-in


class Service(Protocol):
    out: Outbox

    def handle(self, src: bytes, msg: Message, now: float) -> None: ...

    def tick(self, now: float) -> None: ...

    def next_deadline(self) -> float: ...


class Runtime:
    def __init__(
        self,
        links: Links,
        membership: Membership,
        broadcast: Broadcast,
        *,
        writer: GroupCommitWriter | None = None,
        store: Store | None = None,
    ) -> None:
        self.links = links
        self.membership = membership
        self.broadcast = broadcast
        self.writer = writer
        self.store = store
        self.id = membership.id
        self._services: list[Service] = []
        self._routes: dict[type[Message], Service] = {}
        self._subscribers: list[Callable[[object], None]] = []
        self._pending: deque[object] = deque()
        self._performing = False
        self._nursery: trio.Nursery | None = None
        self._dialing: set[tuple[str, int]] = set()
        self.received: Counter[str] = Counter()
        self.sent: Counter[str] = Counter()
        self.dropped = 0
        self.decode_errors = 0
        from gossip import wire

        self.add_service(membership, (wire.Ping, wire.Ack, wire.PingReq, wire.Nack, wire.Gossip, wire.Sync))
        self.add_service(broadcast, (wire.Push, wire.IHave, wire.IWant))

    def add_service(self, service: Service, kinds: Iterable[type[Message]]) -> None:
        self._services.append(service)
        for kind in kinds:
            if kind in self._routes:
                raise ValueError(f"{kind.__name__} is already routed")
            self._routes[kind] = service

    def subscribe(self, handler: Callable[[object], None]) -> None:
        """`handler(event)` for every `Notify` any core emits (member changes, deliveries...)."""
        self._subscribers.append(handler)

    # ---- running ---------------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            now = trio.current_time()
            self.membership.start(now)
            self.broadcast.start(now)
            self._drain_services()
            task_status.started()
            await self._loop()

    async def _loop(self) -> None:
        inbound = self.links.inbound
        services = self._services
        while True:
            # Everything already queued first, without a timeout scope (entering and leaving one
            # per wake-up was a measurable share of a message's cost); wait with one only when
            # there is nothing to do.
            handled = 0
            while handled < MAX_DRAIN:
                try:
                    src, payload = inbound.receive_nowait()
                except trio.WouldBlock:
                    break
                self.deliver(src, payload)
                handled += 1
            deadline = min(s.next_deadline() for s in services)
            due = deadline <= trio.current_time()
            if due:
                self.tick()
            if handled == MAX_DRAIN:
                await trio.lowlevel.checkpoint()  # a long backlog: let other tasks run too
            elif not due:
                with trio.move_on_at(deadline):
                    src, payload = await inbound.receive()
                    self.deliver(src, payload)

    def tick(self) -> None:
        now = trio.current_time()
        for service in self._services:
            if service.next_deadline() <= now:
                service.tick(now)
                self._perform(service.out.drain())

    def deliver(self, src: bytes, payload: bytes) -> None:
        """Handle one message from an authenticated peer."""
        if self.links.is_banned(src):
            # Its link is cut, but what it sent before the ban may still be queued: a fresh key's
            # first invalid message must be its last, not the first of a frameful.
            self.dropped += 1
            return
        try:
            msg = decode_any(payload)
        except RemoteProtocolError as exc:
            self.decode_errors += 1
            self.links.penalize(src, exc.penalty, str(exc))
            return
        self._handle(src, msg)

    def _handle(self, src: bytes, msg: Message) -> None:
        kind = type(msg)
        self.received[kind.__name__] += 1
        if log.isEnabledFor(logging.DEBUG):
            log.debug("handle %s from %s", kind.__name__, src.hex()[:8])
        service = self._routes.get(kind)
        if service is None:
            self.links.penalize(src, 1, f"unexpected {kind.__name__} on a peer link")
            return
        try:
            service.handle(src, msg, trio.current_time())
        except RemoteProtocolError as exc:
            if src == self.id:
                # Our own message (a gateway that is also an owner) failed a check: a local bug.
                log.error("own %s refused: %s", kind.__name__, exc)
            else:
                self.links.penalize(src, exc.penalty, str(exc))
        self._perform(service.out.drain())

    def _drain_services(self) -> None:
        for service in self._services:
            self._perform(service.out.drain())

    # ---- effects -----------------------------------------------------------------------------
    def perform(self, effects: Iterable[object]) -> None:
        """Perform effects produced outside a message or timer (API calls into a core)."""
        self._perform(effects)

    def _perform(self, effects: Iterable[object]) -> None:
        self._pending.extend(effects)
        if self._performing:
            return
        self._performing = True
        encoded: dict[int, bytes] = {}
        try:
            while self._pending:
                effect = self._pending.popleft()
                kind = type(effect)
                if kind is Send:
                    self._send(effect, encoded)
                elif kind is Persist:
                    self._persist(effect)
                elif kind is Publish:
                    self.broadcast.publish(effect.payload, trio.current_time(), exclude=effect.exclude)
                    self._pending.extend(self.broadcast.out.drain())
                elif kind is Seen:
                    self.broadcast.mark_seen(effect.payload, trio.current_time())
                elif kind is Notify:
                    for handler in self._subscribers:
                        handler(effect.event)
                    self._drain_services_into_pending()
                elif kind is Learn:
                    self._learn(effect)
                elif kind is Dial:
                    self._dial(effect)
                elif kind is Forget:
                    self.links.forget(effect.peer_id)
                elif kind is Committee:
                    self.links.set_committee(effect.ids)
                elif kind is Penalize:
                    if effect.peer_id != self.id:
                        self.links.penalize(effect.peer_id, effect.penalty, effect.reason)
                else:
                    raise TypeError(f"unknown effect {effect!r}")
        finally:
            self._performing = False

    def _drain_services_into_pending(self) -> None:
        for service in self._services:
            if service.out.effects:
                self._pending.extend(service.out.drain())

    def _send(self, effect: Send, encoded: dict[int, bytes]) -> None:
        msg = effect.msg
        if effect.dst == self.id:
            self._handle(self.id, msg)
            return
        key = id(msg)
        payload = encoded.get(key)
        if payload is None:
            payload = encoded[key] = msg.encode()
        self.sent[type(msg).__name__] += 1
        if not self.links.send(effect.dst, payload):
            self.dropped += 1

    def _persist(self, effect: Persist) -> None:
        if self.writer is None:
            self._pending.extend(effect.then)
            return
        then = effect.then
        self.writer.submit(effect.batch, (lambda: self._perform(then)) if then else None)

    def _learn(self, effect: Learn) -> None:
        record = effect.record
        self.links.set_address(record.peer_id, record.host, record.port)
        if effect.persist and self.writer is not None:
            batch = Batch()
            batch.put_peer(record.peer_id, record.encode())
            self.writer.submit(batch)
        for handler in self._subscribers:
            handler(effect)

    def _dial(self, effect: Dial) -> None:
        target = (effect.host, effect.port)
        if target in self._dialing or self._nursery is None:
            return
        self._dialing.add(target)
        self._nursery.start_soon(self._dial_task, effect.host, effect.port)

    async def _dial_task(self, host: str, port: int) -> None:
        try:
            peer_id = await self.links.dial(host, port)
        except ConnectError as exc:
            log.info("seed %s:%d unreachable: %s", host, port, exc)
            self.membership.on_dial_failed(trio.current_time())
        else:
            self.membership.on_dialed(peer_id, trio.current_time())
        finally:
            self._dialing.discard((host, port))
        self._perform(self.membership.out.drain())
