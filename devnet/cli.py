"""The `devnet` command: a local meshpay network of real `peer run` processes on 127.0.0.1 (or each
in its own network namespace: `devnet up --hosts netns`).

The subcommands live in devnet/commands/, a few per module; each module is added below with one
line. Exit statuses are the table shared by every meshpay command (peer/cli_exit.py, docs/cli.md):
0 success; 1 unexpected error; 2 bad usage or parameters (e.g. a quorum unsafe for the replication);
13 a port is in use; 14 the directory holds something else / holds no devnet; 15 unknown peer name;
16 a peer failed to start or membership did not converge (everything started is stopped again);
18 `check` or `chaos` found violations; 19 `bench` could not run; 20 processes still use the devnet;
21 test hosts or faults need root or a missing system tool (named);
7 no peer is running or answering; `fund` adds the wallet's (3 bad address, 4 bad amount, 8 timeout...).
"""

from __future__ import annotations

import os

import typer

from devnet.commands import chaos, common, console, epoch, faucet, faults, info, lifecycle, measure
from devnet.layout import PRIVATE_UMASK
from peer.cli_exit import install_version
from peer.cli_exit import run as run_cli

app = typer.Typer(help="A local meshpay network to play and build on (on 127.0.0.1, or on test hosts: "
                  "one network namespace per peer).",
                  no_args_is_help=True)
install_version(app, "devnet")
lifecycle.register(app)  # up, down, watch, kill, restart
info.register(app)  # status, logs, wallets, env
faucet.register(app)  # fund
measure.register(app)  # bench, check
epoch.register(app)  # add-peer, remove-peer, epoch
console.register(app)  # console
faults.register(app)  # partition, slow, heal, pause, resume, faults
chaos.register(app)  # chaos


def main() -> None:
    os.umask(PRIVATE_UMASK)  # whatever a devnet command creates (the faucet's state...) is private
    run_cli(app, "devnet", common.err)
