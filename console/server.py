"""Running the console: the collector and the web server under one nursery, on trio."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import httpx
import hypercorn.trio
import trio
from hypercorn.config import Config as HypercornConfig

from console.app import Console, allowed_hosts, build_app
from console.collector import Collector
from console.control import DevnetControl
from console.sources import DevnetSource, Source, UrlSource
from peer import genesis as genesis_file

log = logging.getLogger("meshpay.console")
LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass
class Options:
    peers: list[str]
    devnet: Path | None = None
    genesis: Path | None = None
    host: str = "127.0.0.1"
    port: int = 8700
    admin_token: str | None = None
    audit_token: str | None = None  # opens /v1/audit/* (the supply audit); a devnet's is read from its configs
    read_only: bool = False
    interval: float = 1.0
    audit_interval: float = 10.0


def make_source(options: Options) -> Source:
    """Raises `DevnetError` (no devnet there) or `ValueError` (nothing to watch)."""
    if options.devnet is not None:
        return DevnetSource(options.devnet)
    if not options.peers:
        raise ValueError("give --devnet DIR or at least one --peer URL")
    return UrlSource(options.peers, genesis_path=options.genesis)


def _devnet_audit_token(root: Path | None) -> str | None:
    """A devnet gives all its peers one audit token (devnet/layout.py): the one in their configs."""
    if root is None:
        return None
    from devnet.audit import configured_tokens
    from devnet.layout import Devnet, DevnetError

    try:
        tokens = configured_tokens(Devnet.load(root))
    except DevnetError:
        return None
    return next(iter(tokens.values()), None)


async def serve(options: Options, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
                transport: httpx.AsyncBaseTransport | None = None) -> None:
    """Serve until cancelled; `task_status.started(url)` once the port is bound.

    `transport` lets tests stand in for peers (httpx.MockTransport), as the wallet's client allows.
    """
    source = make_source(options)
    genesis_path = options.genesis or source.genesis_path
    genesis = genesis_file.load(genesis_path) if genesis_path is not None else None
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=128)
    async with httpx.AsyncClient(limits=limits, transport=transport) as http, trio.open_nursery() as nursery:
        audit_token = options.audit_token or _devnet_audit_token(options.devnet)
        collector = Collector(source, http, genesis=genesis, admin_token=options.admin_token, interval=options.interval,
                              audit_interval=options.audit_interval,
                              audit_headers={"Authorization": f"Bearer {audit_token}"} if audit_token else None)
        control = DevnetControl(options.devnet) if options.devnet is not None else None
        console = Console(collector, control=control, read_only=options.read_only)
        console.nursery = nursery
        await nursery.start(collector.run)
        config = HypercornConfig()
        config.bind = [f"{options.host}:{options.port}"]
        config.accesslog = None
        config.errorlog = logging.getLogger("meshpay.console.http")
        config.graceful_timeout = 1.0
        binds = await nursery.start(lambda task_status: hypercorn.trio.serve(
            build_app(console, hosts=allowed_hosts(options.host)), config, task_status=task_status))
        task_status.started(binds[0].rstrip("/") + "/")
