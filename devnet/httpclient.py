"""A small HTTP/1.1 keep-alive client for the load generator (`devnet bench --via http`).

The bench runs on the same cores as the peers it measures, so its own CPU per request counts: a
general client (httpx: connection pool, h11 state machine, anyio) cost the bench more than a
request costs the server. This one does only what the bench needs: JSON over keep-alive
connections to one peer, `Content-Length` bodies (what the peer's API sends), a bounded pool.
Wallets and tools keep using httpx.
"""

from __future__ import annotations

import json
from typing import Any

import trio

MAX_HEAD = 16 * 1024
MAX_BODY = 1 << 20
READ_SIZE = 1 << 16


class HttpError(Exception):
    """The request failed on the wire (connection refused or lost, malformed response, timeout)."""


class _Response:
    __slots__ = ("body", "keep_alive", "status")

    def __init__(self, status: int, body: bytes, keep_alive: bool) -> None:
        self.status, self.body, self.keep_alive = status, body, keep_alive


async def _read_response(stream: trio.SocketStream, buffer: bytearray) -> _Response:
    while b"\r\n\r\n" not in buffer:
        if len(buffer) > MAX_HEAD:
            raise HttpError("response head too large")
        data = await stream.receive_some(READ_SIZE)
        if not data:
            raise HttpError("connection closed before the response")
        buffer += data
    end = buffer.index(b"\r\n\r\n")
    lines = bytes(buffer[:end]).decode("latin-1").split("\r\n")
    del buffer[: end + 4]
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise HttpError(f"malformed status line {lines[0][:80]!r}")
    length = None
    keep_alive = parts[0] == "HTTP/1.1"
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            if not value.strip().isdigit() or int(value) > MAX_BODY:
                raise HttpError(f"bad content-length {value.strip()[:20]!r}")
            length = int(value)
        elif name == "connection":
            keep_alive = value.strip().lower() != "close"
        elif name == "transfer-encoding":
            raise HttpError("chunked responses are not supported")
    if length is None:
        raise HttpError("response without content-length")
    while len(buffer) < length:
        data = await stream.receive_some(READ_SIZE)
        if not data:
            raise HttpError("connection closed in the middle of the body")
        buffer += data
    body = bytes(buffer[:length])
    del buffer[:length]
    return _Response(int(parts[1]), body, keep_alive)


class HttpClient:
    """JSON requests to one `host:port` over at most `max_connections` keep-alive connections."""

    def __init__(self, host: str, port: int, *, max_connections: int = 64, timeout: float = 30.0) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self._idle: list[tuple[trio.SocketStream, bytearray]] = []
        self._slots = trio.Semaphore(max_connections)
        self._host_header = f"{host}:{port}".encode()

    async def request(self, method: str, path: str, doc: Any = None) -> tuple[int, Any]:
        """(status, decoded JSON body). Raises HttpError if the exchange failed."""
        body = b"" if doc is None else json.dumps(doc, separators=(",", ":")).encode()
        head = (f"{method} {path} HTTP/1.1\r\nhost: ".encode() + self._host_header
                + b"\r\ncontent-type: application/json\r\ncontent-length: " + str(len(body)).encode()
                + b"\r\n\r\n")
        async with self._slots:
            for attempt in (1, 2):
                reused = bool(self._idle)
                stream, buffer = await self._connection()
                try:
                    with trio.fail_after(self.timeout):
                        await stream.send_all(head + body)
                        response = await _read_response(stream, buffer)
                except (OSError, trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError,
                        HttpError) as exc:
                    stream.socket.close()
                    if reused and attempt == 1 and not isinstance(exc, trio.TooSlowError):
                        continue  # the server closed an idle connection: once more on a new one
                    raise HttpError(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
                break
            if response.keep_alive:
                self._idle.append((stream, buffer))
            else:
                stream.socket.close()
        try:
            return response.status, json.loads(response.body) if response.body else None
        except ValueError as exc:
            raise HttpError(f"{method} {path}: response is not JSON") from exc

    async def _connection(self) -> tuple[trio.SocketStream, bytearray]:
        if self._idle:
            return self._idle.pop()
        try:
            with trio.fail_after(self.timeout):
                stream = await trio.open_tcp_stream(self.host, self.port)
        except (OSError, trio.TooSlowError) as exc:
            raise HttpError(f"cannot connect to {self.host}:{self.port}: {exc}") from exc
        return stream, bytearray()

    def close(self) -> None:
        for stream, _ in self._idle:
            stream.socket.close()
        self._idle.clear()
