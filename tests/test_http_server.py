"""The HTTP server's last line of defence, in-process over real sockets: whatever fails inside, the
client gets a JSON 500 and the log gets one line, no traceback.

A real `Node` (one peer, simulated links, a real store) behind the real `Api` and `HttpServer`; one
piece of the node is then broken on purpose to stand for a bug.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

import httpx
import pytest
import trio

from crypto.address import encode_address
from crypto.keys import SigningKey
from peer.api import Api
from peer.genesis import DEFAULT_VNODES, Allocation, Genesis
from peer.http_server import HttpLimits, HttpServer
from peer.node import Node, NodeConfig
from store.db import Store
from tests.sim.network import SimNetwork


def _genesis(peer: SigningKey, account: bytes) -> Genesis:
    return Genesis("http-test", (peer.public,), 1, 1, DEFAULT_VNODES, 2, (Allocation(account, 100),),
                   bytes(16)).validate()


async def _serve(nursery: trio.Nursery, app: object) -> tuple[HttpServer, str, trio.Event]:
    server = HttpServer(app, HttpLimits())
    stop = trio.Event()
    port = await nursery.start(server.serve, "127.0.0.1", 0, stop)
    return server, f"http://127.0.0.1:{port}", stop


def _no_traceback(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert all(r.exc_info is None and "Traceback" not in r.getMessage() for r in caplog.records), errors
    return errors


async def test_a_failing_route_answers_json_500_and_logs_one_line(tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    key, account = SigningKey.generate(), SigningKey.generate().public
    genesis = _genesis(key, account)
    store = Store.create(tmp_path / "db", genesis.network_id)
    try:
        async with trio.open_nursery() as nursery:
            sim = SimNetwork(1)
            await nursery.start(sim.run)
            node = Node(key, genesis, store, sim.attach(key.public, "sim", 1),
                        NodeConfig(host="sim", port=1, fsync=False, writer_thread=False), rng=random.Random(1))
            await nursery.start(node.run)
            api = Api(node)
            _, url, stop = await _serve(nursery, api.app)
            async with httpx.AsyncClient(timeout=10) as client:
                path = f"{url}/v1/accounts/{encode_address(account)}"
                assert (await client.get(path)).json()["balance"] == 100

                def broken(account: bytes) -> None:
                    raise RuntimeError("a bug stands here")

                node.settlement.ledger.peek = broken  # type: ignore[method-assign]
                caplog.clear()
                with caplog.at_level(logging.INFO):
                    resp = await client.get(path)
                assert resp.status_code == 500
                assert resp.headers["content-type"] == "application/json"
                assert resp.json()["error"]["code"] == "internal"
                errors = _no_traceback(caplog)
                assert len(errors) == 1 and "a bug stands here" in errors[0].getMessage()
                assert (await client.get(f"{url}/v1/status")).status_code == 200  # and it answers on
            stop.set()
            nursery.cancel_scope.cancel()
    finally:
        store.close()


async def test_an_application_that_raises_outside_any_route_still_answers_json(
        caplog: pytest.LogCaptureFixture) -> None:
    async def app(scope: dict, receive: object, send: object) -> None:
        raise ValueError("broken before answering")

    async with trio.open_nursery() as nursery:
        server, url, stop = await _serve(nursery, app)
        with caplog.at_level(logging.INFO):
            async with httpx.AsyncClient(timeout=10) as client:
                resp = await client.post(f"{url}/anything", content=b'{"x": 1}')
        assert resp.status_code == 500 and resp.json()["error"]["code"] == "internal"
        errors = _no_traceback(caplog)
        assert len(errors) == 1 and "broken before answering" in errors[0].getMessage()
        stop.set()
    assert not server.conns
