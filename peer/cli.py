"""The `peer` command: create, run and inspect a meshpay peer.

Exit status: 0 success; 1 unexpected error; 2 bad usage, configuration or genesis; 3 key or
password problem; 4 database problem; 5 a port is in use or cannot be bound; 6 the peer's API
cannot be reached.
"""

from __future__ import annotations

import getpass
import json
import os
import secrets
import sys
from pathlib import Path
from typing import Annotated, Any

import httpx
import trio
import typer
from rich.console import Console
from rich.table import Table

from crypto import keystore
from crypto.errors import KeystoreError
from crypto.keys import SigningKey
from peer import cli_epoch
from peer import config as peer_config
from peer.cli_exit import CliFailure
from peer.cli_exit import run as run_cli
from peer.config import ConfigError
from peer.daemon import Daemon, StartupError

EXIT_USAGE, EXIT_KEY, EXIT_DB, EXIT_PORT, EXIT_UNREACHABLE = 2, 3, 4, 5, 6

app = typer.Typer(help="Run and inspect a meshpay peer.", no_args_is_help=True, add_completion=False)
err = Console(stderr=True)
out = Console()
app.add_typer(cli_epoch.app, name="epoch")


Fail = CliFailure


def read_password(password_file: Path | None, *, confirm: bool = False, what: str = "peer key") -> str:
    """From a file, then MESHPAY_PASSWORD, then a prompt (never echoed)."""
    if password_file is not None:
        try:
            return password_file.read_text().rstrip("\n")
        except OSError as exc:
            raise Fail(f"cannot read password file {password_file}: {exc.strerror}", EXIT_KEY) from exc
    env = os.environ.get("MESHPAY_PASSWORD")
    if env is not None:
        return env
    if not sys.stdin.isatty():
        raise Fail("no password: use --password-file, set MESHPAY_PASSWORD, or run in a terminal", EXIT_KEY)
    password = getpass.getpass(f"Password for the {what}: ")
    if confirm and getpass.getpass("Repeat the password: ") != password:
        raise Fail("the passwords do not match", EXIT_KEY)
    return password


@app.command()
def init(
    directory: Annotated[Path, typer.Argument(help="Directory for the peer's key, config and data")],
    port: Annotated[int, typer.Option(help="Peer-to-peer port")] = 7000,
    api_port: Annotated[int, typer.Option(help="HTTP API port")] = 8000,
    seed: Annotated[list[str] | None, typer.Option("--seed", "--join", help="HOST:PORT of a peer to join through (repeatable)")] = None,
    genesis: Annotated[str, typer.Option(help="Path of the network's genesis file")] = "genesis.json",
    password_file: Annotated[Path | None, typer.Option(help="Read the new key's password from this file")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
) -> None:
    """Create a peer: an encrypted Ed25519 key and a commented peer.toml."""
    for s in seed or []:
        try:
            peer_config.parse_hostport(s)
        except ValueError as exc:
            raise Fail(f"--seed {exc}", EXIT_USAGE) from exc
    genesis = cli_epoch.genesis_for_config(genesis)  # absolute, and a readable genesis if it exists
    key_path, conf_path = directory / "peer.key", directory / "peer.toml"
    for path in (key_path, conf_path):
        if path.exists():
            raise Fail(f"{path} already exists; refusing to overwrite a peer", EXIT_USAGE)
    password = read_password(password_file, confirm=True)
    directory.mkdir(parents=True, exist_ok=True)
    key = SigningKey.generate()
    keystore.save(key_path, key, password, kind="peer", name=directory.name)
    conf_path.write_text(peer_config.render(
        genesis=genesis, listen_port=port, api_port=api_port, seeds=list(seed or []),
        password_file=str(password_file.resolve()) if password_file else None,
        admin_token=secrets.token_urlsafe(24)))
    conf_path.chmod(0o600)  # it holds the admin token
    result = {"peer_id": key.public.hex(), "key_file": str(key_path), "config": str(conf_path)}
    if json_out:
        print(json.dumps(result))
    else:
        out.print(f"peer id   {result['peer_id']}\nkey file  {key_path}\nconfig    {conf_path}")


@app.command("id")
def peer_id(config: Annotated[Path, typer.Option("--config", "-c", help="peer.toml")] = Path("peer.toml"),
            json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Print the peer id (no password needed)."""
    settings = _settings(config)
    try:
        info = keystore.info(keystore.read_file(settings.key_file))
    except KeystoreError as exc:
        raise Fail(str(exc), EXIT_KEY) from exc
    print(json.dumps({"peer_id": info.public_key.hex()}) if json_out else info.public_key.hex())


@app.command()
def run(
    config: Annotated[Path, typer.Option("--config", "-c", help="peer.toml")] = Path("peer.toml"),
    password_file: Annotated[Path | None, typer.Option(help="File holding the key's password")] = None,
) -> None:
    """Run the peer until SIGINT/SIGTERM (graceful: exits 0 after flushing)."""
    settings = _settings(config)
    password = read_password(password_file or settings.password_file)
    try:
        code = trio.run(Daemon(settings, password).run)
    except StartupError as exc:
        raise Fail(str(exc), exc.exit_code) from exc
    raise typer.Exit(code)


def _settings(config: Path) -> peer_config.PeerSettings:
    try:
        return peer_config.load(config)
    except ConfigError as exc:
        raise Fail(str(exc), EXIT_USAGE) from exc


def _get(api: str, path: str) -> Any:
    try:
        response = httpx.get(api.rstrip("/") + path, timeout=5.0)
    except httpx.HTTPError as exc:
        raise Fail(f"cannot reach the peer API at {api}: {exc}", EXIT_UNREACHABLE) from exc
    if response.status_code != 200:
        raise Fail(f"{api}{path} answered {response.status_code}: {response.text[:200]}", EXIT_UNREACHABLE)
    return response.json()


ApiOption = Annotated[str, typer.Option("--api", envvar="MESHPAY_API", help="The peer's HTTP API")]


@app.command()
def status(api: ApiOption = "http://127.0.0.1:8000",
           json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Ask a running peer for its state."""
    doc = _get(api, "/v1/status")
    if json_out:
        print(json.dumps(doc))
        return
    table = Table(show_header=False, box=None)
    for key in ("peer_id", "network", "network_id", "accepting", "committee_member", "ring_share",
                "owned_accounts", "incarnation", "uptime_seconds"):
        table.add_row(key, str(doc[key]))
    table.add_row("members", ", ".join(f"{k} {v}" for k, v in doc["members"].items()))
    table.add_row("queues", ", ".join(f"{k} {v}" for k, v in doc["queues"].items()))
    out.print(table)


@app.command()
def info(api: ApiOption = "http://127.0.0.1:8000",
         json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Members, ring share, queue depths and counters of a running peer."""
    doc = {"status": _get(api, "/v1/status"), "peers": _get(api, "/v1/peers")["peers"]}
    if json_out:
        print(json.dumps(doc))
        return
    peers = Table("peer", "state", "address", "api", "committee", "incarnation")
    for p in doc["peers"]:
        peers.add_row(p["peer_id"][:16] + (" (this)" if p["self"] else ""), p["state"],
                      f"{p['host']}:{p['port']}", p["api"] or "-", str(p["committee"]), str(p["incarnation"]))
    out.print(peers)
    counters = Table("counter", "value")
    for k, v in sorted(doc["status"]["counters"].items()):
        counters.add_row(k, str(v))
    out.print(counters)
    out.print(f"ring share {doc['status']['ring_share']:.1%}   queues {doc['status']['queues']}")


def main() -> None:
    run_cli(app, "peer", err)
