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
import gc
import logging
import signal
from dataclasses import dataclass
from typing import Any

import hypercorn.trio
import trio
from hypercorn.config import Config as HypercornConfig

from crypto import keystore
from crypto.address import short
from crypto.errors import MeshpayError
from gossip.broadcast import BroadcastConfig
from gossip.limits import TransportLimits
from gossip.membership import MembershipConfig
from gossip.transport import TcpTransport
from peer import genesis as genesis_file
from peer import logs
from peer.api import Api
from peer.client_service import ClientService
from peer.config import PeerSettings
from peer.gateway import PENDING, GatewayConfig
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


def _tune_gc() -> None:
    """Keep garbage-collector pauses out of payment latency.

    Nearly everything a peer allocates dies by reference counting; the cyclic collector mostly
    rescans long-lived state (ledger, caches, membership). Freezing what exists after start-up and
    collecting the young generation less often cut full-collection pauses of 40-60 ms (measured
    with gc.callbacks under load) out of the tail.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 50)


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
        host=settings.network.advertise_host or settings.network.listen_host,
        port=port,
        api_port=api_port,
        seeds=settings.seeds,
        membership=MembershipConfig(probe_interval=t.probe_interval, probe_timeout=t.probe_timeout,
                                    gossip_interval=t.gossip_interval, sync_interval=t.sync_interval),
        broadcast=BroadcastConfig(),
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
            key = keystore.load(s.key_file, self.password)
        except keystore.KeystoreError as exc:
            raise StartupError(f"cannot open the peer key {s.key_file}: {exc}", 3) from exc
        try:
            genesis = genesis_file.load(s.genesis)
        except genesis_file.GenesisError as exc:
            raise StartupError(str(exc), 2) from exc
        logs.setup(short(key.public), s.log.level, s.log.format)
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
                                 limits=TransportLimits(), client_handler=client_handler)
        delegate = _Delegate()
        hconfig = HypercornConfig()
        hconfig.bind = [f"{s.api.host}:{s.api.port}"]
        hconfig.accesslog = None
        hconfig.errorlog = logging.getLogger("meshpay.http")
        hconfig.graceful_timeout = 1.0
        hconfig.keep_alive_timeout = 30.0
        api_stop = trio.Event()
        async with trio.open_nursery() as nursery:
            try:
                port = await nursery.start(transport.serve)
            except OSError as exc:
                raise StartupError(self._bind_error("peer", s.network.listen_host, s.network.listen_port, exc), 5) from exc
            try:
                binds = await nursery.start(lambda task_status: hypercorn.trio.serve(
                    delegate, hconfig, shutdown_trigger=api_stop.wait, task_status=task_status))
            except OSError as exc:
                raise StartupError(self._bind_error("API", s.api.host, s.api.port, exc), 5) from exc
            api_port = int(binds[0].rsplit(":", 1)[1])
            node = Node(key, genesis, store, transport, node_config(s, port, api_port))
            metrics = Metrics(node, transport)
            node.runtime.subscribe(metrics.on_event)
            api = Api(node, metrics=metrics, max_body=s.api.max_body_bytes, max_waiting=s.api.max_waiting,
                      max_wait=s.api.max_wait_seconds, peer_port=port, admin_token=s.api.admin_token)
            service = ClientService(node)
            clients.append(service)
            await nursery.start(node.run)
            delegate.app = api.app
            _tune_gc()
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
        await trio.sleep(0.2)  # let the departure notices reach the wire
        await node.writer.drain()

    @staticmethod
    def _bind_error(what: str, host: str, port: int, exc: OSError) -> str:
        if exc.errno == errno.EADDRINUSE:
            return f"the {what} port {host}:{port} is already in use"
        return f"cannot listen on {host}:{port} for the {what}: {exc.strerror or exc}"
