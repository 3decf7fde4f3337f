"""Serving the HTTP API: hypercorn's HTTP/1.1 protocol over meshpay's own accept loop, with limits.

hypercorn's `serve` accepts every connection it can and never times out a request body, so a few
hundred connections that send a request's start and stall used up a peer's file descriptors: the API
and the peer port stopped answering. Here each connection still runs hypercorn's `TCPServer` (the
HTTP parsing and the ASGI plumbing), but this module decides who gets a connection:

- At most `max_connections` are open. When they are all taken, a newcomer takes the place of the
  oldest connection that is not in the middle of being answered: one idle between requests, or one
  still sending its request (headers or body). A request arrives in milliseconds, so a stalled one is
  what gets dropped; the newcomer is served. Only when every connection is being answered is the
  newcomer refused with a ready-made 503 and closed (at most `_MAX_REFUSING` refusals at once; past
  that the socket is closed without a word), so the cap never costs more descriptors than it saves.
- `idle_timeout` bounds the time from a connection's start (or the end of its last response) to the
  complete headers of the next request: slow headers and idle keep-alive connections alike.
  (hypercorn's keep-alive timer, which is not restarted by incoming bytes.) The body has its own
  deadline in the API (`api.body_timeout`, 408).
- `send_timeout` bounds each write of a response, so a client that never reads cannot hold a
  connection (hypercorn shields its writes from cancellation; the deadline sits inside the shield).
  A write that fails because the client is gone ends the connection: requests it had pipelined are
  not answered into the dead socket.
- Running out of descriptors while accepting is logged at most once per 10 s, and accepting resumes
  after a short pause instead of spinning.

`guard` is the outermost ASGI layer: it tracks each connection's phase for the eviction rule above,
answers a JSON 500 (one log line, no traceback) if the application raises, and treats a client that
hangs up mid-request as ordinary (debug log only).
"""

from __future__ import annotations

import errno
import logging
import socket
from dataclasses import dataclass
from typing import Any

import trio
from hypercorn.app_wrappers import ASGIWrapper
from hypercorn.config import Config as HypercornConfig
from hypercorn.events import Updated
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState
from starlette.requests import ClientDisconnect

log = logging.getLogger("meshpay.http")

_CAPACITY_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
_MAX_REFUSING = 64  # refusals being written at once; past that, sockets are closed unanswered
_REFUSE_LINGER = 1.0  # seconds a refusal waits for the client to read it before closing
_LOG_EVERY = 10.0  # seconds between two log lines about refused connections


def _json_bytes(status: int, reason: str, code: str, message: str) -> bytes:
    body = b'{"error":{"code":"%s","message":"%s"}}' % (code.encode(), message.encode())
    return (b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\n"
            b"content-length: %d\r\n\r\n%s" % (status, reason.encode(), len(body), body))


REFUSAL = _json_bytes(503, "Service Unavailable", "too_many_connections",
                      "every connection of this peer's API is busy; retry shortly or use another peer")
_INTERNAL = b'{"error":{"code":"internal","message":"the peer failed to answer this request; it is logged"}}'


@dataclass(frozen=True)
class HttpLimits:
    max_connections: int = 256
    idle_timeout: float = 15.0
    send_timeout: float = 15.0
    max_header_bytes: int = 16 * 1024
    backlog: int = 128


# Phases of a connection, for the eviction rule.
IDLE, RECEIVING, ANSWERING = 0, 1, 2


class _Conn:
    __slots__ = ("opened", "phase", "scope")

    def __init__(self, opened: float) -> None:
        self.opened = opened
        self.phase = IDLE
        self.scope = trio.CancelScope()


class _TimedStream:
    """The accepted socket stream, with a deadline on every write (see the module docstring)."""

    def __init__(self, stream: trio.SocketStream, send_timeout: float, scope: trio.CancelScope) -> None:
        self._stream = stream
        self._send_timeout = send_timeout
        self._scope = scope
        self._stalled = False
        self.socket = stream.socket

    async def send_all(self, data: bytes) -> None:
        if self._stalled:
            raise trio.BrokenResourceError("the client stopped reading")
        try:
            with trio.fail_after(self._send_timeout):
                await self._stream.send_all(data)
        except trio.TooSlowError as exc:
            # Close for good: the application may go on writing, and each write must fail at once
            # (the reader task sees the close too and ends the connection).
            self._stalled = True
            self._scope.cancel()
            await self._stream.aclose()
            raise trio.BrokenResourceError("the client did not read the response in time") from exc
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            # The client is gone. hypercorn would go on answering every request it had already
            # received (pipelined ones included) into the dead socket: a few KB of pipelined
            # requests from a client that hangs up at once cost a minute of CPU. End the connection.
            self._stalled = True
            self._scope.cancel()
            raise

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        return await self._stream.receive_some(max_bytes)

    async def send_eof(self) -> None:
        await self._stream.send_eof()

    async def aclose(self) -> None:
        await self._stream.aclose()


class _Connection(TCPServer):
    """hypercorn's connection, ended as soon as its reading ends (the client hung up, or the socket
    was closed after a send timeout). hypercorn's own would wait for its idle timer first, holding
    the socket open for up to `idle_timeout` after the client left."""

    _finished = False

    async def _read_data(self) -> None:
        await super()._read_data()
        self._finished = True
        await self.idle_task.stop()

    async def protocol_send(self, event: Any) -> None:
        if self._finished and isinstance(event, Updated) and event.idle:
            return  # nothing more will be read: no idle timer to wait for
        await super().protocol_send(event)


class HttpServer:
    """Serves one ASGI application on one address until `shutdown` is set."""

    def __init__(self, app: Any, limits: HttpLimits, *, graceful_timeout: float = 1.0) -> None:
        self.app = app
        self.limits = limits
        self.config = HypercornConfig()
        self.config.accesslog = None
        self.config.errorlog = log
        self.config.keep_alive_timeout = limits.idle_timeout
        self.config.h11_max_incomplete_size = limits.max_header_bytes
        self.config.graceful_timeout = graceful_timeout
        self.config.include_server_header = False
        self.context = WorkerContext(None)
        self.conns: dict[int, _Conn] = {}
        self.refusing = 0
        self.counters = {"accepted": 0, "evicted": 0, "refused": 0, "dropped": 0, "accept_errors": 0}
        self._last_log = -_LOG_EVERY
        self._next_id = 0

    # ---- serving -------------------------------------------------------------------------------
    async def serve(self, host: str, port: int, shutdown: trio.Event,
                    *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listener = await _listen(host, port, self.limits.backlog)
        bound = listener.socket.getsockname()[1]
        async with trio.open_nursery() as conns:
            async with trio.open_nursery() as accepting:
                accepting.start_soon(self._accept_loop, listener, conns)
                task_status.started(bound)
                await shutdown.wait()
                accepting.cancel_scope.cancel()
            await listener.aclose()
            # Idle keep-alive connections close now; requests being answered get a grace period.
            await self.context.terminated.set()
            conns.cancel_scope.deadline = trio.current_time() + self.config.graceful_timeout

    async def _accept_loop(self, listener: trio.SocketListener, conns: trio.Nursery) -> None:
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno not in _CAPACITY_ERRNOS:
                    raise
                self.counters["accept_errors"] += 1
                self._log_refusal(f"cannot accept an API connection: {exc.strerror}")
                await trio.sleep(0.1)
                continue
            if len(self.conns) >= self.limits.max_connections and not self._evict_one():
                self._refuse(stream, conns)
                continue
            self.counters["accepted"] += 1
            self._next_id += 1
            conn = _Conn(trio.current_time())
            self.conns[self._next_id] = conn
            conns.start_soon(self._run, self._next_id, conn, stream)

    def _evict_one(self) -> bool:
        """Close the oldest connection that is not being answered; False if every one is."""
        victim = min((c for c in self.conns.values() if c.phase != ANSWERING and not c.scope.cancel_called),
                     key=lambda c: c.opened, default=None)
        if victim is None:
            return False
        victim.scope.cancel()
        self.counters["evicted"] += 1
        self._log_refusal(f"{self.limits.max_connections} API connections open: closing the oldest that "
                          "is idle or still sending its request")
        return True

    def _refuse(self, stream: trio.SocketStream, conns: trio.Nursery) -> None:
        if self.refusing >= _MAX_REFUSING:
            self.counters["dropped"] += 1
            stream.socket.close()
            return
        self.counters["refused"] += 1
        self._log_refusal(f"{self.limits.max_connections} API connections busy: answering 503")
        self.refusing += 1
        conns.start_soon(self._send_refusal, stream)

    async def _send_refusal(self, stream: trio.SocketStream) -> None:
        try:
            with trio.move_on_after(_REFUSE_LINGER):
                await stream.send_all(REFUSAL)
                await stream.send_eof()
                # Read what the client sent until it hangs up: closing a socket with unread data
                # resets the connection, and the client might lose the 503 before reading it.
                while await stream.receive_some(4096):
                    pass
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass  # the client went away first: nothing to tell it
        finally:
            self.refusing -= 1
            await stream.aclose()

    async def _run(self, key: int, conn: _Conn, stream: trio.SocketStream) -> None:
        try:
            with conn.scope:
                timed = _TimedStream(stream, self.limits.send_timeout, conn.scope)
                server = _Connection(_Guard(self.app, conn), self.config, self.context,
                                     ConnectionState({}), timed)  # type: ignore[arg-type]
                await server.run()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            log.debug("API connection ended: %s", exc)
        except Exception as exc:
            # hypercorn failing on one connection must not take the API down; one line, no trace.
            log.error("API connection failed: %s: %s", type(exc).__name__, exc)
        finally:
            self.conns.pop(key, None)
            stream.socket.close()

    def _log_refusal(self, text: str) -> None:
        now = trio.current_time()
        if now - self._last_log >= _LOG_EVERY:
            self._last_log = now
            log.warning("%s (counts so far: %s)", text, self.counters)


class _Guard(ASGIWrapper):
    """The outermost ASGI layer of one connection (see the module docstring)."""

    def __init__(self, app: Any, conn: _Conn) -> None:
        super().__init__(app)
        self.conn = conn

    async def __call__(self, scope: dict, receive: Any, send: Any, sync_spawn: Any, call_soon: Any) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1003})
            return
        conn = self.conn
        conn.phase = ANSWERING if not _has_body(scope) else RECEIVING
        started = False

        async def guarded_receive() -> dict:
            message = await receive()
            if message["type"] == "http.request" and not message.get("more_body", False):
                conn.phase = ANSWERING
            return message

        async def guarded_send(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, guarded_receive, guarded_send)
        except ClientDisconnect:
            log.debug("client hung up during %s %s", scope.get("method"), scope.get("path"))
        except Exception as exc:
            log.error("API %s %s failed: %s: %s", scope.get("method"), scope.get("path"),
                      type(exc).__name__, exc)
            if not started:
                await send({"type": "http.response.start", "status": 500,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(_INTERNAL)).encode())]})
                await send({"type": "http.response.body", "body": _INTERNAL})
        finally:
            conn.phase = IDLE


async def _listen(host: str, port: int, backlog: int) -> trio.SocketListener:
    """One listening socket on the first address `host` resolves to (one port, even for port 0)."""
    infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = infos[0]
    sock = trio.socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        await sock.bind(address)
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    return trio.SocketListener(sock)


def _has_body(scope: dict) -> bool:
    for name, value in scope.get("headers", ()):
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() not in (b"0", b"")):
            return True
    return False
