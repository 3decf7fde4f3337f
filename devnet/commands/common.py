"""What every devnet subcommand module uses: options, output, errors and the devnet lookup."""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path
from typing import Annotated, Any

import platformdirs
import typer
from rich.console import Console

from devnet import processes
from devnet.layout import Devnet, DevnetError, PeerEntry, ephemeral_range
from peer.cli_exit import CliFailure, Exit, error_console
from peer.genesis import Genesis
from peer.genesis import load as load_genesis
from wallet.amounts import format_amount

Fail = CliFailure

# Not a terminal (a pipe, a CI log): never squeeze tables into 80 columns or wrap lines.
out = Console(soft_wrap=True) if sys.stdout.isatty() else Console(width=200, soft_wrap=True)
err = error_console()


def default_dir() -> Path:
    return Path(platformdirs.user_data_dir("meshpay")) / "devnet"


DirOption = Annotated[Path, typer.Option("--dir", envvar="MESHPAY_DEVNET_DIR", help="The devnet's directory",
                                         default_factory=default_dir, show_default="per-user data dir")]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output (errors too, on stdout)")]
LogLevel = Annotated[str | None, typer.Option("--log-level", help="Peer log level: debug (every payment's life), "
                                              "info (summaries), warning or error")]
LOG_LEVELS = ("debug", "info", "warning", "error")


def emit(doc: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(doc) + "\n")


def load(root: Path) -> Devnet:
    try:
        return Devnet.load(root)
    except DevnetError as exc:
        raise Fail(str(exc), Exit.NO_DEVNET) from exc


def peer_named(devnet: Devnet, name: str) -> PeerEntry:
    try:
        return devnet.peer(name)
    except DevnetError as exc:
        raise Fail(str(exc), Exit.UNKNOWN_PEER) from exc


def check_log_level(level: str | None) -> None:
    if level is not None and level not in LOG_LEVELS:
        raise Fail(f"--log-level must be one of {', '.join(LOG_LEVELS)}", Exit.USAGE)


def genesis_of(devnet: Devnet) -> Genesis:
    return load_genesis(devnet.genesis_path)


def amount_text(minor: int | None, decimals: int) -> str:
    """Amounts as everywhere else (the wallet's format: exact, `.`, no thousands separators)."""
    return "?" if minor is None else format_amount(minor, decimals)


def first_running(devnet: Devnet) -> PeerEntry:
    """A running peer to talk to (the first in order), or a clear failure."""
    for entry in devnet.peers:
        if processes.is_running(entry, devnet):
            return entry
    raise Fail(f"no peer of {devnet.root} is running; start it with `devnet up --dir {devnet.root} --detach`",
               Exit.UNREACHABLE)


def check_ports(ports: list[tuple[str, int]], *, fixed: bool) -> None:
    """Refuse ports something else listens on, naming it. `fixed`: the ports belong to an existing
    devnet (so the advice is to free them, not to pick others)."""
    for owner, port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            # As the peer's own listener does (trio sets SO_REUSEADDR): connections of a killed
            # peer lingering in TIME_WAIT must not count as "in use".
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
                continue
            except OSError as exc:
                reason = exc.strerror
        holder = processes.listener(port)
        who = f" by pid {holder[0]} ({holder[1][:120]})" if holder else ""
        low, high = ephemeral_range()
        if fixed:
            advice = ("stop that process and run `devnet up` again (this devnet's ports are fixed; "
                      "`devnet down --wipe` and a new devnet choose new ones)")
        else:
            advice = f"choose another --port-base (ideally below {low}, outside the kernel's ephemeral range {low}-{high})"
        raise Fail(f"port 127.0.0.1:{port} ({owner}) is in use{who} ({reason}); {advice}", Exit.PORT)
