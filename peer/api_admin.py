"""The admin API: what a peer's operator may ask of it over HTTP. Off unless `api.admin_token` is set.

Every request carries `Authorization: Bearer <api.admin_token>`. Without a configured token every
admin route answers 403 `admin_disabled`; a missing or wrong token answers 401 `unauthorized`.

- `GET /v1/admin`: proves the token works; says which actions this peer offers and its process id.
- `POST /v1/admin/stop`: a graceful stop, exactly as SIGTERM (stop accepting payments, let those in
  flight finish within `tuning.shutdown_grace`, announce the departure, flush the store, exit 0).
  Answers 202 before the stop begins.
- `POST /v1/admin/restart`: the same graceful stop, then `peer run` starts again in the same process
  (exec with the same command line) on the same data. Answers 202.
- `POST /v1/admin/pause`, `POST /v1/admin/resume`: stop and start taking new payments from clients
  (HTTP and the binary protocol answer 503 `paused`), for maintenance. The peer keeps voting,
  applying certificates and gossiping meanwhile: its co-owners still count on it. (A process frozen
  with SIGSTOP could not hear "resume": that kind of pause belongs to the supervisor, as `devnet
  kill -s STOP|CONT` does on a devnet.)
"""

from __future__ import annotations

import hmac
import os
import signal

from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from peer.api import Api, ApiError

ACTIONS = ("stop", "restart", "pause", "resume")
_restart = False  # read by `peer run` once the daemon has stopped


def restart_requested() -> bool:
    return _restart
MIN_TOKEN_LENGTH = 16


def _stop_self() -> None:
    # The daemon's own signal handler performs the graceful shutdown; the API adds no second path.
    os.kill(os.getpid(), signal.SIGTERM)


def mount(api: Api, token: str) -> None:
    """Add the admin routes to `api` (they refuse everything when `token` is empty)."""
    api.app.router.routes.extend(Admin(api, token).routes())


class Admin:
    def __init__(self, api: Api, token: str) -> None:
        self.api = api
        self._token = token.encode()

    def routes(self) -> list[Route]:
        wrap = self.api._wrap
        return [Route("/v1/admin", wrap("admin", self.info)),
                Route("/v1/admin/stop", wrap("admin_stop", self.stop), methods=["POST"]),
                Route("/v1/admin/restart", wrap("admin_restart", self.restart), methods=["POST"]),
                Route("/v1/admin/pause", wrap("admin_pause", self.pause), methods=["POST"]),
                Route("/v1/admin/resume", wrap("admin_resume", self.resume), methods=["POST"])]

    def _authorize(self, request: Request) -> None:
        if not self._token:
            raise ApiError(403, "admin_disabled", "this peer's operator has not set api.admin_token; "
                           "the admin API is off")
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self._token):
            raise ApiError(401, "unauthorized", "send the admin token as `Authorization: Bearer <token>`")

    async def info(self, request: Request) -> Response:
        self._authorize(request)
        return JSONResponse({"peer_id": self.api.node.id.hex(), "actions": list(ACTIONS), "pid": os.getpid(),
                             "accepting": self.api.accepting})

    async def stop(self, request: Request) -> Response:
        self._authorize(request)
        return JSONResponse({"peer_id": self.api.node.id.hex(), "stopping": True}, status_code=202,
                            background=BackgroundTask(_stop_self))

    async def restart(self, request: Request) -> Response:
        self._authorize(request)
        global _restart
        _restart = True
        return JSONResponse({"peer_id": self.api.node.id.hex(), "restarting": True}, status_code=202,
                            background=BackgroundTask(_stop_self))

    def _accept(self, accepting: bool) -> Response:
        self.api.paused = not accepting
        return JSONResponse({"peer_id": self.api.node.id.hex(), "paused": self.api.paused})

    async def pause(self, request: Request) -> Response:
        self._authorize(request)
        return self._accept(False)

    async def resume(self, request: Request) -> Response:
        self._authorize(request)
        return self._accept(True)
