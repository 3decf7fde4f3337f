"""`peer epoch`: propose, approve and follow committee changes on the local peer.

Each command talks to the peer's HTTP API at the address its config file gives (`--config`, or
`--api` to name another URL), with the admin token of that config (`api.admin_token`, or the
environment `MESHPAY_API__ADMIN_TOKEN`): proposing and approving are its operator's acts. The protocol
is docs/protocol.md section 11; every committee operator approves on their own peer.

Exit status: the shared table (docs/cli.md): 2 bad usage or configuration, 7 the API cannot be
reached, 10 the peer refused (no or wrong admin token, or the protocol refused the proposal or
approval: the message says why).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from peer import config as peer_config
from peer.cli_exit import CliFailure, Exit
from peer.config import ConfigError

EXIT_USAGE, EXIT_UNREACHABLE, EXIT_REFUSED = Exit.USAGE, Exit.UNREACHABLE, Exit.REFUSED
MIN_PREFIX = 8  # hex characters of a proposal id that `approve` accepts in place of all 64

app = typer.Typer(help="Propose, approve and follow committee changes (epochs).", no_args_is_help=True,
                  add_completion=False)
out = Console()

ConfigOption = Annotated[Path, typer.Option("--config", "-c", help="The peer's peer.toml")]
ApiOverride = Annotated[str | None, typer.Option("--peer", "--api", envvar="MESHPAY_API",
                                                 help="The peer's HTTP API [default: from the config]")]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output")]


class EpochApi:
    """The epoch routes of one peer's API, with its operator's token."""

    def __init__(self, url: str, token: str, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    @classmethod
    def from_config(cls, config: Path, api: str | None = None) -> EpochApi:
        try:
            settings = peer_config.load(config)
        except ConfigError as exc:
            raise CliFailure(str(exc), EXIT_USAGE) from exc
        if api is None:
            host = settings.api.host if settings.api.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
            if not settings.api.port:
                raise CliFailure(f"{config} lets the API pick a free port; pass --api URL", EXIT_USAGE)
            api = f"http://{host}:{settings.api.port}"
        return cls(api, settings.api.admin_token)

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        headers = {"authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            response = httpx.request(method, self.url + path, json=body, headers=headers, timeout=self.timeout)
        except httpx.HTTPError as exc:
            raise CliFailure(f"cannot reach the peer API at {self.url}: {exc}", EXIT_UNREACHABLE) from exc
        try:
            doc = response.json()
        except ValueError as exc:
            raise CliFailure(f"{self.url}{path} answered {response.status_code} without JSON", EXIT_UNREACHABLE) from exc
        if response.status_code in (200, 201):
            return doc
        error = doc.get("error", {}) if isinstance(doc, dict) else {}
        code, message = error.get("code", "?"), error.get("message", response.text[:200])
        if response.status_code in (401, 403):
            hint = ("" if self.token else "; this peer's config has no api.admin_token (set it, or "
                    "MESHPAY_API__ADMIN_TOKEN, and restart the peer)")
            raise CliFailure(f"the peer refused the operator action ({code}): {message}{hint}", EXIT_REFUSED)
        if response.status_code == 409:
            raise CliFailure(f"refused: {message}", EXIT_REFUSED)
        raise CliFailure(f"{self.url}{path} answered {response.status_code} ({code}): {message}", EXIT_UNREACHABLE)

    def status(self) -> dict[str, Any]:
        return self._call("GET", "/v1/epoch")

    def propose(self, add: list[str], remove: list[str], note: str) -> dict[str, Any]:
        return self._call("POST", "/v1/epoch/proposals", {"add": add, "remove": remove, "note": note})

    def approve(self, change_id: str) -> dict[str, Any]:
        return self._call("POST", "/v1/epoch/approvals", {"change_id": change_id})

    def resolve(self, proposal: str) -> str:
        """A full proposal id from an id or a unique prefix of one pending proposal."""
        text = proposal.strip().lower()
        if len(text) == 64:
            return text
        if len(text) < MIN_PREFIX or any(c not in "0123456789abcdef" for c in text):
            raise CliFailure(f"{proposal!r} is not a proposal id (64 hex characters, or a unique prefix of at "
                             f"least {MIN_PREFIX})", EXIT_USAGE)
        ids = [p["change_id"] for p in self.status()["proposals"] if p["change_id"].startswith(text)]
        if len(ids) != 1:
            raise CliFailure(f"{len(ids)} pending proposals start with {text}; give more of the id", EXIT_USAGE)
        return ids[0]


def _peer_id(text: str) -> str:
    text = text.strip().lower()
    try:
        ok = len(bytes.fromhex(text)) == 32
    except ValueError:
        ok = False
    if not ok:
        raise CliFailure(f"{text!r} is not a peer id (64 hex characters: `peer id -c peer.toml` prints one)",
                         EXIT_USAGE)
    return text


@app.command()
def propose(
    add: Annotated[list[str] | None, typer.Option("--add", help="Peer id to add to the committee (repeatable)")] = None,
    remove: Annotated[list[str] | None, typer.Option("--remove", help="Peer id to remove (repeatable)")] = None,
    note: Annotated[str, typer.Option(help="Why (kept in the epoch certificate)")] = "",
    config: ConfigOption = Path("peer.toml"), api: ApiOverride = None, json_out: JsonOption = False,
) -> None:
    """Propose the next committee: the current one with --add and without --remove (this peer approves it)."""
    adds, removes = [_peer_id(a) for a in add or []], [_peer_id(r) for r in remove or []]
    if not adds and not removes:
        raise CliFailure("name at least one peer with --add or --remove", EXIT_USAGE)
    doc = EpochApi.from_config(config, api).propose(adds, removes, note)
    if json_out:
        print(json.dumps(doc))
        return
    out.print(f"proposed epoch {doc.get('epoch')}: change {doc['change_id']}")
    out.print(f"approvals {_approvals(doc)}; each committee operator runs "
              f"`peer epoch approve {doc['change_id'][:16]}` on their own peer")


@app.command()
def approve(
    proposal: Annotated[str, typer.Argument(help="The proposal's change id (or a unique prefix)")],
    config: ConfigOption = Path("peer.toml"), api: ApiOverride = None, json_out: JsonOption = False,
) -> None:
    """Approve a pending proposal with this peer's key (once per epoch: choose carefully)."""
    client = EpochApi.from_config(config, api)
    doc = client.approve(client.resolve(proposal))
    if json_out:
        print(json.dumps(doc))
        return
    if doc.get("certified"):
        out.print(f"approved; epoch {doc['epoch']} is certified (change {doc['change_id'][:16]})")
    else:
        out.print(f"approved change {doc['change_id'][:16]} for epoch {doc.get('epoch')}: approvals {_approvals(doc)}")


@app.command()
def status(config: ConfigOption = Path("peer.toml"), api: ApiOverride = None, json_out: JsonOption = False) -> None:
    """The current epoch and committee, pending proposals with their approvals, and the handoff."""
    doc = EpochApi.from_config(config, api).status()
    if json_out:
        print(json.dumps(doc))
        return
    ring = doc["ring"]
    out.print(f"epoch {doc['epoch']}: {len(doc['committee'])} members, replication {ring['replication']}, "
              f"quorum {ring['quorum']}; this peer is {'a member' if doc['committee_member'] else 'an observer'}")
    members = set(doc["committee"])
    if doc["proposals"]:
        table = Table("proposal", "epoch", "adds", "removes", "approvals", "note", title="pending proposals")
        for p in doc["proposals"]:
            proposed = set(p.get("members", []))
            table.add_row(p["change_id"][:16], str(p.get("epoch")),
                          ", ".join(m[:12] for m in sorted(proposed - members)) or "-",
                          ", ".join(m[:12] for m in sorted(members - proposed)) or "-",
                          _approvals(p), Text(str(p.get("note") or "")))  # a proposer's words, not markup
        out.print(table)
    else:
        out.print("no pending proposals")
    h = doc["handoff"]
    out.print(f"handoff into epoch {h.get('epoch')}: {h.get('state')}; accounts ready {h.get('accounts_ready')}, "
              f"pending {h.get('accounts_pending')}, moved in {h.get('accounts_moved_in')}; "
              f"{h.get('certs_received')} certificates, {h.get('bytes_received')} bytes received"
              + (f"; frozen {h['frozen']}" if h.get("frozen") else ""))


def _approvals(doc: dict[str, Any]) -> str:
    approvals = doc.get("approvals")
    count = len(approvals) if isinstance(approvals, list) else approvals
    needed = doc.get("needed")
    return f"{count}/{needed}" if needed is not None else str(count)
