"""The admin API: what a peer's operator may ask of it over HTTP. Off unless `api.admin_token` is set.

Every request carries `Authorization: Bearer <api.admin_token>`. Without a configured token every
admin route answers 403 `admin_disabled`; a missing or wrong token answers 401 `unauthorized`.

- `GET /v1/admin`: proves the token works; says which actions this peer offers and its process id.
- `POST /v1/admin/stop`: a graceful stop, exactly as SIGTERM (stop accepting payments, let those in
  flight finish within `tuning.shutdown_grace`, announce the departure, flush the store, exit 0).
  Answers 202 before the stop begins.

A peer cannot pause itself (a paused process cannot hear "resume") or start itself again once
stopped: those belong to whatever supervises the process (systemd: `systemctl kill -s STOP|CONT`,
and `Restart=always` to start it again after a stop; a devnet: `devnet kill -s STOP|CONT`,
`devnet restart`). docs/console.md says how the console does both.
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

ACTIONS = ("stop",)
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
                Route("/v1/admin/stop", wrap("admin_stop", self.stop), methods=["POST"])]

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
