"""`peer run`: the daemon that wires transport, node, HTTP API and storage under one nursery.

Start-up binds the peer port and the API port first (so the signed peer record carries the real
ports), then starts the node. SIGINT/SIGTERM begin a graceful shutdown: stop accepting payments,
give those in flight `shutdown_grace` seconds to finish, fail the rest with status
`shutting_down`, announce the departure to the group, flush the store and exit 0. A second signal
exits at once. Restarting on the same data directory resumes from the database; the node then
catches up with what it missed.
"""

from __future__ import annotations

import errno
import logging
import resource
import signal
from dataclasses import dataclass
from typing import Any

import trio

from crypto import keystore
from crypto.address import short
from crypto.errors import MeshpayError
from gossip.broadcast import BroadcastConfig
from gossip.membership import MembershipConfig
from gossip.transport import TcpTransport
from peer import gcpolicy, logs
from peer import genesis as genesis_file
from peer.api import Api
from peer.client_service import ClientService
from peer.config import ConfigError, PeerSettings
from peer.gateway import PENDING, GatewayConfig
from peer.http_server import HttpLimits, HttpServer
from peer.metrics import Metrics
from peer.node import Node, NodeConfig
from peer.sync import SyncConfig
from store.db import Store

log = logging.getLogger("meshpay.daemon")


class StartupError(MeshpayError):
    """The daemon cannot start; `exit_code` says which kind of problem (see peer/cli.py)."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


MAX_OPEN_FILES = 65_536
LEAVE_FLUSH = 3.0  # seconds a graceful stop waits for its departure notices to be sent


def _raise_fd_limit() -> int:
    """Raise the soft open-files limit toward the hard one (at most `MAX_OPEN_FILES`).

    Every API and peer connection is a descriptor; a soft limit of 1,024 (a common default) is
    what a slow-body attack exhausted. The connection caps keep within the limit either way; a higher
    limit gives them room. Returns the soft limit now in force.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = MAX_OPEN_FILES if hard == resource.RLIM_INFINITY else min(hard, MAX_OPEN_FILES)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-files limit from %d: %s", soft, exc)
    return soft


class _Delegate:
    """An ASGI app that answers 503 until the real one is ready (the API port is bound first)."""

    def __init__(self) -> None:
        self.app: Any = None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if self.app is not None:
            await self.app(scope, receive, send)
            return
        if scope["type"] == "lifespan":
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            return
        await send({"type": "http.response.start", "status": 503,
                    "headers": [(b"content-type", b"application/json"), (b"retry-after", b"1")]})
        await send({"type": "http.response.body",
                    "body": b'{"error":{"code":"starting","message":"the peer is starting"}}'})


def open_store(settings: PeerSettings, network_id: bytes) -> Store:
    path = settings.data_dir
    if path.exists() and any(path.iterdir()):
        return Store.open(path, network_id)
    return Store.create(path, network_id)


def node_config(settings: PeerSettings, port: int, api_port: int) -> NodeConfig:
    t = settings.tuning
    return NodeConfig(
        host=settings.network.advertised_host(),
        port=port,
        api_port=api_port,
        seeds=settings.seeds,
        membership=MembershipConfig(probe_interval=t.probe_interval, probe_timeout=t.probe_timeout,
                                    gossip_interval=t.gossip_interval, sync_interval=t.sync_interval,
                                    max_outsiders=settings.membership.max_outsiders,
                                    outsider_ttl=settings.membership.outsider_ttl),
        broadcast=BroadcastConfig(observer_fanout=settings.membership.observer_fanout),
        gateway=GatewayConfig(deadline=t.payment_deadline, max_in_flight=t.max_in_flight,
                              hedge=t.vote_hedge_factor > 0, hedge_factor=t.vote_hedge_factor or 3.0),
        sync=SyncConfig(ae_interval=t.anti_entropy_interval),
        fsync=t.fsync,
        writer_thread=t.sync_in_thread,
    )


@dataclass
class Daemon:
    settings: PeerSettings
    password: str

    async def run(self, *, task_status: trio.TaskStatus[dict] = trio.TASK_STATUS_IGNORED) -> int:
        s = self.settings
        try:
            s.network.advertised_host()
        except ConfigError as exc:
            raise StartupError(str(exc), 2) from exc
        try:
            key = keystore.load(s.key_file, self.password)
        except keystore.KeystoreError as exc:
            raise StartupError(f"cannot open the peer key {s.key_file}: {exc}", 3) from exc
        try:
            genesis = genesis_file.load(s.genesis)
        except genesis_file.GenesisError as exc:
            raise StartupError(str(exc), 2) from exc
        logs.setup(short(key.public), s.log.level, s.log.format)
        open_files = _raise_fd_limit()
        if open_files < 2 * s.api.max_connections + 256:
            log.warning("the open-files limit is %d: low for api.max_connections = %d plus peer connections and "
                        "the database", open_files, s.api.max_connections)
        try:
            store = open_store(s, genesis.network_id)
        except MeshpayError as exc:
            raise StartupError(str(exc), 4) from exc
        try:
            return await self._serve(key, genesis, store, task_status)
        finally:
            store.close()

    async def _serve(self, key, genesis, store: Store, task_status) -> int:
        s = self.settings
        clients: list[ClientService] = []

        async def client_handler(session) -> None:
            if clients:
                await clients[0].handle(session)
            else:
                session.close()

        transport = TcpTransport(key, genesis.network_id, host=s.network.listen_host, port=s.network.listen_port,
                                 limits=s.peer_port.limits(), client_handler=client_handler,
                                 committee=frozenset(genesis.committee))
        delegate = _Delegate()
        http = HttpServer(delegate, HttpLimits(max_connections=s.api.max_connections, idle_timeout=s.api.idle_timeout,
                                               send_timeout=s.api.send_timeout,
                                               max_header_bytes=s.api.max_header_bytes), graceful_timeout=1.0)
        api_stop = trio.Event()
        async with trio.open_nursery() as nursery:
            try:
                port = await nursery.start(transport.serve)
            except OSError as exc:
                raise StartupError(self._bind_error("peer", s.network.listen_host, s.network.listen_port, exc), 5) from exc
            try:
                api_port = await nursery.start(http.serve, s.api.host, s.api.port, api_stop)
            except OSError as exc:
                raise StartupError(self._bind_error("API", s.api.host, s.api.port, exc), 5) from exc
            if s.api.public:
                log.warning("the HTTP API listens on %s:%d, reachable from other machines (api.allow_public); "
                            "it answers anyone who can connect", s.api.host, api_port)
            node = Node(key, genesis, store, transport, node_config(s, port, api_port))
            metrics = Metrics(node, transport, http)
            node.runtime.subscribe(metrics.on_event)
            node.runtime.subscribe(logs.PaymentLog(node).on_event)  # payment life at debug, summaries at info
            api = Api(node, metrics=metrics, max_body=s.api.max_body_bytes, max_waiting=s.api.max_waiting,
                      max_wait=s.api.max_wait_seconds, peer_port=port, body_timeout=s.api.body_timeout,
                      audit_token=s.api.audit_token, lookup_timeout=s.api.lookup_timeout,
                      admin_token=s.api.admin_token)
            service = ClientService(node)
            service.paused = lambda: api.paused
            clients.append(service)
            await nursery.start(node.run)
            delegate.app = api.app
            gcpolicy.install()
            info = {"peer_id": key.public.hex(), "peer_port": port, "api_port": api_port,
                    "api": f"http://{s.api.host}:{api_port}", "network_id": genesis.network_id.hex()}
            log.info("peer ready", extra={"fields": info})
            task_status.started(info)
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for signum in signals:
                    log.info("shutting down", extra={"fields": {"signal": signal.Signals(signum).name}})
                    break
            with trio.CancelScope() as hurry:
                nursery.start_soon(self._second_signal, hurry)
                await self._shutdown(node, api, service)
            api_stop.set()
            nursery.cancel_scope.cancel()
        log.info("stopped")
        return 0

    async def _second_signal(self, hurry: trio.CancelScope) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                log.warning("second signal: stopping now")
                hurry.cancel()
                return

    async def _shutdown(self, node: Node, api: Api, service: ClientService) -> None:
        api.accepting = False
        service.accepting = False
        gateway = node.settlement.gateway
        with trio.move_on_after(self.settings.tuning.shutdown_grace):
            while any(p.status == PENDING for p in gateway.active.values()):
                await trio.sleep(0.05)
        now = trio.current_time()
        gateway.abort_pending("shutting_down", "the gateway shut down before a quorum voted; resubmit the "
                              "same order to another peer", now)
        node.runtime.perform(node.settlement.out.drain())
        node.membership.leave(now)
        node.runtime.perform(node.membership.out.drain())
        # Let the departure notices reach the wire (a connection may need dialling first): until the
        # queues to the members are empty, within LEAVE_FLUSH seconds, or the others take us for dead.
        queued = getattr(node.links, "queued", None)
        with trio.move_on_after(LEAVE_FLUSH):
            while queued is not None and any(queued(m) for m in node.membership.alive()):
                await trio.sleep(0.05)
        await trio.sleep(0.2)
        await node.writer.drain()

    @staticmethod
    def _bind_error(what: str, host: str, port: int, exc: OSError) -> str:
        if exc.errno == errno.EADDRINUSE:
            return f"the {what} port {host}:{port} is already in use"
        return f"cannot listen on {host}:{port} for the {what}: {exc.strerror or exc}"
