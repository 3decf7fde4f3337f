"""The `peer` command: create, run and inspect a meshpay peer (docs/operator.md).

Exit statuses are the table shared by every meshpay command (peer/cli_exit.py, docs/cli.md):
0 success; 1 unexpected error; 2 bad usage, configuration, genesis or an unreadable key file;
7 the peer's API cannot be reached; 9 wrong password; 13 a port is in use or cannot be bound;
17 database problem (foreign, newer, damaged or locked).
"""

from __future__ import annotations

import getpass
import json
import os
import secrets
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.table import Table

from crypto import keystore
from crypto.errors import KeystoreError, MeshpayError, WrongPassword
from crypto.keys import SigningKey
from peer import cli_epoch, cli_genesis
from peer import config as peer_config
from peer import genesis as genesis_file
from peer.cli_exit import CliFailure, Exit, error_console, install_version
from peer.cli_exit import run as run_cli
from peer.config import ConfigError

if TYPE_CHECKING:
    from peer.daemon import StartupError

EXIT_USAGE, EXIT_PASSWORD, EXIT_DB, EXIT_PORT, EXIT_UNREACHABLE = (
    Exit.USAGE, Exit.PASSWORD, Exit.DATABASE, Exit.PORT, Exit.UNREACHABLE)
# The daemon's start-up failures (peer/daemon.py StartupError.exit_code) in the shared table.
_STARTUP_EXIT = {2: Exit.USAGE, 3: Exit.USAGE, 4: Exit.DATABASE, 5: Exit.PORT}
DEFAULT_API = "http://127.0.0.1:8000"
LOG_LEVELS = ("debug", "info", "warning", "error")

app = typer.Typer(help="Run and inspect a meshpay peer (docs/operator.md).", no_args_is_help=True)
install_version(app, "peer")
err = error_console()
out = Console(soft_wrap=True)


Fail = CliFailure


def read_password(password_file: Path | None, *, confirm: bool = False, what: str = "peer key") -> str:
    """From a file, then MESHPAY_PASSWORD, then a prompt (never echoed)."""
    if password_file is not None:
        try:
            return password_file.read_text().rstrip("\n")
        except OSError as exc:
            raise Fail(f"cannot read password file {password_file}: {exc.strerror}", EXIT_USAGE) from exc
    env = os.environ.get("MESHPAY_PASSWORD")
    if env is not None:
        return env
    if not sys.stdin.isatty():
        raise Fail("no password: use --password-file, set MESHPAY_PASSWORD, or run in a terminal", EXIT_USAGE)
    password = getpass.getpass(f"Password for the {what}: ")
    if confirm and getpass.getpass("Repeat the password: ") != password:
        raise Fail("the passwords do not match", EXIT_USAGE)
    return password


@app.command()
def init(
    directory: Annotated[Path, typer.Argument(help="Directory for the peer's key, config, genesis and data")],
    port: Annotated[int, typer.Option(help="Peer-to-peer port")] = 7000,
    api_port: Annotated[int, typer.Option(help="HTTP API port")] = 8000,
    seed: Annotated[list[str] | None, typer.Option(
        "--seed", "--join", help="HOST:PORT of a peer to join through (repeatable)")] = None,
    genesis: Annotated[Path | None, typer.Option(
        help="The network's genesis file: checked and copied into the directory as genesis.json")] = None,
    password_file: Annotated[Path | None, typer.Option(help="Read the new key's password from this file")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
) -> None:
    """Create a peer: an encrypted Ed25519 key, a commented peer.toml and (with --genesis) the
    network's genesis, in a directory only you can read; then print the next steps."""
    for s in seed or []:
        try:
            peer_config.parse_hostport(s)
        except ValueError as exc:
            raise Fail(f"--seed {exc}", EXIT_USAGE) from exc
    key_path, conf_path, genesis_path = directory / "peer.key", directory / "peer.toml", directory / "genesis.json"
    for path in (key_path, conf_path):
        if path.exists():
            raise Fail(f"{path} already exists; refusing to overwrite a peer", EXIT_USAGE)
    network = None
    if genesis is not None:
        try:
            network = genesis_file.load(genesis)
        except (OSError, genesis_file.GenesisError) as exc:
            raise Fail(f"--genesis {genesis}: {exc}", EXIT_USAGE) from exc
    password = read_password(password_file, confirm=True)
    os.umask(0o077)  # the key, the config (it may hold the audit token) and the ledger are private
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    key = SigningKey.generate()
    keystore.save(key_path, key, password, kind="peer", name=directory.name)
    if genesis is not None and genesis.resolve() != genesis_path.resolve():
        shutil.copyfile(genesis, genesis_path)
    conf_path.write_text(peer_config.render(
        genesis="genesis.json", listen_port=port, api_port=api_port, seeds=list(seed or []),
        password_file=str(password_file.resolve()) if password_file else None,
        admin_token=secrets.token_urlsafe(24)))
    steps = _next_steps(directory, conf_path, genesis_path, api_port, seeded=bool(seed),
                        member=network is not None and key.public in network.committee)
    result = {"peer_id": key.public.hex(), "key_file": str(key_path), "config": str(conf_path),
              "genesis": str(genesis_path) if genesis_path.exists() else None,
              "network": network.name if network else None, "next": steps}
    if json_out:
        print(json.dumps(result))
        return
    out.print(f"peer id   {result['peer_id']}\nkey file  {key_path}\nconfig    {conf_path}", highlight=False)
    out.print(f"genesis   {genesis_path}" + (f" (network {network.name!r})" if network else " (missing)"),
              highlight=False)
    out.print("next:", highlight=False)
    for i, step in enumerate(steps, 1):
        out.print(f"  {i}. {step}", highlight=False, markup=False)


def _next_steps(directory: Path, conf: Path, genesis: Path, api_port: int, *, seeded: bool, member: bool) -> list[str]:
    steps = []
    if not genesis.exists():
        steps.append(f"put the network's genesis file at {genesis} (any peer operator of the network has it; "
                     "a devnet's is ROOT/genesis.json)")
    if not seeded:
        steps.append(f"add a running peer's HOST:PORT to `seeds` under [network] in {conf} (unless this is the "
                     "network's first peer)")
    if not member:
        steps.append("this peer id is not in the genesis committee, so it joins as an observer: it relays "
                     "certificates, serves the API and hands payments to their owners, but owns no accounts")
    steps.append(f"peer run --config {conf}")
    steps.append(f"peer status --peer http://127.0.0.1:{api_port}   (docs/operator.md: logs, upgrade, backup)")
    return steps


@app.command("id")
def peer_id(config: Annotated[Path, typer.Option("--config", "-c", help="peer.toml")] = Path("peer.toml"),
            json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Print the peer id (no password needed)."""
    settings = _settings(config)
    try:
        info = keystore.info(keystore.read_file(settings.key_file))
    except KeystoreError as exc:
        raise Fail(str(exc), EXIT_USAGE) from exc
    print(json.dumps({"peer_id": info.public_key.hex()}) if json_out else info.public_key.hex())


@app.command()
def run(
    config: Annotated[Path, typer.Option("--config", "-c", help="peer.toml")] = Path("peer.toml"),
    password_file: Annotated[Path | None, typer.Option(help="File holding the key's password")] = None,
    log_level: Annotated[str | None, typer.Option(
        help="debug (every payment's life), info (summaries), warning or error [default: the config's]")] = None,
) -> None:
    """Run the peer until SIGINT/SIGTERM (graceful: exits 0 after flushing)."""
    if log_level is not None and log_level not in LOG_LEVELS:
        raise Fail(f"--log-level must be one of {', '.join(LOG_LEVELS)}", EXIT_USAGE)
    os.umask(0o077)  # RocksDB files, logs: the ledger is nobody else's to read
    settings = _settings(config)
    if log_level is not None:
        settings.log.level = log_level  # type: ignore[assignment]
    _make_private(settings.data_dir)
    _warn_without_seeds(settings)
    password = read_password(password_file or settings.password_file)
    import trio

    from peer import api_admin
    from peer.daemon import Daemon  # the whole peer: only `run` needs it (status, init stay light)

    try:
        code = trio.run(Daemon(settings, password).run)
    except (MeshpayError, BaseExceptionGroup) as exc:  # StartupError, maybe inside a group
        failure = _startup_failure(exc)
        if failure is None:
            raise
        status = EXIT_PASSWORD if isinstance(failure.__cause__, WrongPassword) else \
            _STARTUP_EXIT.get(failure.exit_code, failure.exit_code)
        raise Fail(str(failure), status) from exc
    if code == 0 and api_admin.restart_requested():
        # The operator asked for a restart (admin API): the same command line, a fresh process image.
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(sys.executable, [sys.executable, "-m", "peer", *sys.argv[1:]])
    raise typer.Exit(code)


def _startup_failure(exc: BaseException) -> StartupError | None:
    """The StartupError behind `exc`, also when trio's nursery wrapped it in an exception group
    (a port taken is found inside the daemon's nursery), provided nothing else went wrong."""
    from peer.daemon import StartupError

    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc if isinstance(exc, StartupError) else None


def _make_private(data_dir: Path) -> None:
    """A data directory made before peers kept their files private is closed to others now."""
    if data_dir.is_dir() and data_dir.stat().st_mode & 0o077:
        os.chmod(data_dir, 0o700)
        err.print(f"notice: made {data_dir} private (mode 0700): it holds the ledger", highlight=False)


def _warn_without_seeds(settings: peer_config.PeerSettings) -> None:
    if settings.network.seeds:
        return
    try:
        alone = len(genesis_file.load(settings.genesis).committee) == 1
    except (OSError, genesis_file.GenesisError):
        alone = False  # the daemon reports an unreadable genesis itself
    if not alone:
        err.print("warning: no seeds ([network] seeds is empty): this peer starts alone and joins the network only "
                  "when another peer dials it; add a running peer's HOST:PORT (see docs/operator.md)",
                  highlight=False)


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


# One name for the peer's URL in every command: --peer / MESHPAY_PEER (as the wallet's). The old
# --api / MESHPAY_API still work, hidden. An explicit option beats the environment.
PeerOption = Annotated[str | None, typer.Option("--peer", show_default=False,
                                                help=f"The peer's HTTP API URL [env var: MESHPAY_PEER; default: {DEFAULT_API}]")]
OldApiOption = Annotated[str | None, typer.Option("--api", hidden=True)]


def _peer_url(peer: str | None, api: str | None) -> str:
    return peer or api or os.environ.get("MESHPAY_PEER") or os.environ.get("MESHPAY_API") or DEFAULT_API


@app.command()
def status(peer: PeerOption = None, api: OldApiOption = None,
           json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Ask a running peer for its state."""
    doc = _get(_peer_url(peer, api), "/v1/status")
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
def info(peer: PeerOption = None, api: OldApiOption = None,
         json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Members, ring share, queue depths and counters of a running peer."""
    url = _peer_url(peer, api)
    doc = {"status": _get(url, "/v1/status"), "peers": _get(url, "/v1/peers")["peers"]}
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


app.add_typer(cli_genesis.app, name="genesis")
app.add_typer(cli_epoch.app, name="epoch")


def main() -> None:
    run_cli(app, "peer", err)
