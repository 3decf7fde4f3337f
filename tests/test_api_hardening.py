"""Attacks on a peer's HTTP API, tried against real `peer run` processes over real sockets.

- Slow bodies and slow headers: many connections that send a request's start and then stall. The
  peer runs with a small file-descriptor limit (what the attack exhausts); it must keep answering
  `/v1/status`, keep its peer port accepting, answer connections over its cap with a quick 503,
  time out the stalled ones, and log no traceback when the attackers hang up mid-body.
- The default suite runs a scaled-down attack (a 512-descriptor peer, 600 connections); `--soak`
  runs the issue's size (a 1,024-descriptor peer, 1,100 connections, default limits).
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import httpx
import pytest
import trio

from gossip.client import open_client
from tests.hardening_support import Net, open_fds, running, status

pytestmark = pytest.mark.slow

SLOW_HEAD = (b"POST /v1/payments HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
             b"Content-Length: 1000\r\n\r\n{\"order\": \"")


async def _open_slow_bodies(port: int, count: int, budget: float) -> tuple[list[trio.SocketStream], int]:
    """Open up to `count` connections that each send a request's headers and the start of its body,
    then stall. Returns the streams and how many connects failed outright (a peer out of
    descriptors stops accepting; every further connect then waits for its timeout, so the attack
    stops when `budget` seconds are spent). A connection the peer closes at once still counts as
    opened: that is the peer defending itself, and `_fates` tells it apart."""
    streams: list[trio.SocketStream] = []
    failed = 0
    deadline = trio.current_time() + budget
    for _ in range(count):
        if trio.current_time() >= deadline:
            failed += count - len(streams) - failed
            break
        try:
            with trio.fail_after(2.0):
                stream = await trio.open_tcp_stream("127.0.0.1", port)
        except (OSError, trio.TooSlowError):
            failed += 1
            continue
        streams.append(stream)
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await stream.send_all(SLOW_HEAD)  # may fail: the peer closed it at once
    return streams, failed


async def _fates(streams: list[trio.SocketStream], within: float) -> dict[str, int]:
    """What became of each connection after `within` s: "held" (open, no answer), "closed"
    (EOF or reset with no answer), or the status code of the answer it got."""
    fates: dict[str, int] = {}

    async def read(stream: trio.SocketStream) -> None:
        data = b""
        fate = "held"
        with trio.move_on_after(within):
            try:
                while b"\r\n" not in data:
                    more = await stream.receive_some(4096)
                    if not more:
                        break
                    data += more
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            fate = "closed"
        if data.startswith(b"HTTP/1.1 "):
            fate = data.split()[1].decode()
        fates[fate] = fates.get(fate, 0) + 1

    async with trio.open_nursery() as nursery:
        for stream in streams:
            nursery.start_soon(read, stream)
    return fates


async def _status_latency(api: str, timeout: float) -> float:
    async with httpx.AsyncClient(timeout=timeout) as client:
        began = time.monotonic()
        response = await client.get(f"{api}/v1/status")
        took = time.monotonic() - began
    assert response.status_code == 200, response.text
    return took


async def _slow_body_attack(net: Net, count: int, cap: int) -> None:
    entry = net.peers[0]
    pid = entry.pid
    assert pid is not None and net.nofile is not None
    log_before = len(net.log(entry))
    fds_before = open_fds(pid)
    began = time.monotonic()
    streams, failed = await _open_slow_bodies(entry.api_port, count, budget=60.0)
    opened = time.monotonic() - began
    try:
        fds_during = open_fds(pid)
        latencies = sorted([await _status_latency(entry.api, timeout=10.0) for _ in range(5)])
        with trio.fail_after(10):
            async with await open_client("127.0.0.1", entry.port, net.nid) as session:
                assert session.peer_id.hex() == entry.peer_id
        fates = await _fates(streams, within=2.0)
        print(f"\nslow-body attack: {count} connections in {opened:.1f} s ({failed} could not connect); "
              f"peer fds {fds_before} -> {fds_during} (limit {net.nofile}); /v1/status during the attack: "
              f"median {latencies[2] * 1000:.0f} ms, max {latencies[-1] * 1000:.0f} ms; fates: {fates}")
        assert fds_during < net.nofile - 64, "the attack took the peer near its descriptor limit"
        assert fates.get("held", 0) <= cap, fates
    finally:
        for stream in streams:
            await stream.aclose()
    # Hanging up mid-body is ordinary: nothing is logged as an error, the peer answers on.
    await trio.sleep(1.0)
    await _status_latency(entry.api, timeout=10.0)
    log = net.log(entry)[log_before:]
    assert "Traceback" not in log and "Error in ASGI" not in log, log[-3000:]


HTTP_ENV = {"MESHPAY_API__BODY_TIMEOUT": "30", "MESHPAY_API__IDLE_TIMEOUT": "30"}


async def test_slow_bodies_leave_the_api_and_the_peer_port_answering(tmp_path: Path) -> None:
    # Scaled down from the 1,024 descriptors and 1,100 connections (see the soak test).
    env = {**HTTP_ENV, "MESHPAY_API__MAX_CONNECTIONS": "200"}
    with running(tmp_path / "net", peers=1, replication=1, quorum=1, wallets=1, env=env, nofile=512) as net:
        await _slow_body_attack(net, count=600, cap=200)


@pytest.mark.soak
async def test_slow_bodies_at_full_size(tmp_path: Path) -> None:
    with running(tmp_path / "net", peers=1, replication=1, quorum=1, wallets=1, env=HTTP_ENV,
                 nofile=1024) as net:
        await _slow_body_attack(net, count=1100, cap=256)


async def test_stalled_bodies_and_headers_time_out(tmp_path: Path) -> None:
    env = {"MESHPAY_API__BODY_TIMEOUT": "2", "MESHPAY_API__IDLE_TIMEOUT": "2"}
    with running(tmp_path / "net", peers=1, replication=1, quorum=1, wallets=1, env=env) as net:
        entry = net.peers[0]
        port = entry.api_port
        body = await trio.open_tcp_stream("127.0.0.1", port)
        await body.send_all(SLOW_HEAD)
        # Headers that trickle in a byte at a time never complete: the idle timeout counts from
        # the connection's start, not from the last byte.
        head = await trio.open_tcp_stream("127.0.0.1", port)
        began = time.monotonic()
        closed_after = None
        with trio.move_on_after(15):
            for byte in b"GET /v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: " + b"a" * 100:
                try:
                    await head.send_all(bytes([byte]))
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    closed_after = time.monotonic() - began
                    break
                await trio.sleep(0.25)
        assert closed_after is not None and closed_after < 8, "slow headers were never cut off"
        with trio.fail_after(10):
            data = b""
            while b"\r\n\r\n" not in data:
                more = await body.receive_some(4096)
                assert more, data
                data += more
        assert data.startswith(b"HTTP/1.1 408 "), data
        doc = json.loads(data.split(b"\r\n\r\n", 1)[1] or b"{}") if b"content-length: 0" not in data.lower() else {}
        assert doc.get("error", {}).get("code") == "body_timeout", data
        await body.aclose()
        await head.aclose()
        assert status(entry) is not None
