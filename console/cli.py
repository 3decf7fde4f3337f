"""`meshpay-console`: the web console, watching peers given by URL or a devnet directory.

Exit status (the table every meshpay command shares, docs/cli.md): 0 stopped by Ctrl-C; 1 unexpected
error; 2 bad usage; 14 no devnet in that directory or an unreadable genesis; 13 the console's port
is in use.
"""

from __future__ import annotations

import errno
import logging
from functools import partial
from pathlib import Path
from typing import Annotated

import trio
import typer
from rich.console import Console

from console.server import LOOPBACK, Options, serve
from devnet.layout import DevnetError
from peer.cli_exit import CliFailure, Exit, version_option
from peer.cli_exit import run as run_cli
from peer.genesis import GenesisError

EXIT_USAGE, EXIT_SOURCE, EXIT_PORT = Exit.USAGE, Exit.NO_DEVNET, Exit.PORT  # the shared table (docs/cli.md)
DEFAULT_PORT = 8700

err = Console(stderr=True)
app = typer.Typer(help=__doc__.split("\n\n")[0])

HostOption = Annotated[str, typer.Option(help="Address to serve on; anything but loopback lets others act on "
                                              "your network through it")]
PortOption = Annotated[int, typer.Option(min=0, max=65535, help="Port to serve on (0: any free port)")]
TokenOption = Annotated[str | None, typer.Option("--admin-token", envvar="MESHPAY_CONSOLE_ADMIN_TOKEN",
                                                 help="The peers' api.admin_token, for stopping them from the console")]
ReadOnlyOption = Annotated[bool, typer.Option("--read-only", help="Show everything, act on nothing")]


def run_console(options: Options) -> None:
    """Serve until Ctrl-C, printing the URL once it is bound (shared with `devnet console`)."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if options.host not in LOOPBACK:
        err.print(f"warning: serving on {options.host}: anyone who can reach it can see the network"
                  + ("" if options.read_only else " and stop peers (add --read-only?)"), markup=False)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            url = await nursery.start(partial(serve, options))
            print(f"meshpay console: {url}", flush=True)

    try:
        trio.run(main)
    except BaseException as group:
        exc = _leaf(group)
        if isinstance(exc, KeyboardInterrupt):
            return
        if isinstance(exc, (DevnetError, GenesisError)):
            raise CliFailure(str(exc), EXIT_SOURCE) from exc
        if isinstance(exc, ValueError):
            raise CliFailure(str(exc), EXIT_USAGE) from exc
        if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
            raise CliFailure(f"port {options.port} on {options.host} is in use; choose another with --port",
                             EXIT_PORT) from exc
        raise


def _leaf(exc: BaseException) -> BaseException:
    """The one exception inside nested single-member groups (trio's nurseries wrap what they raise)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


@app.command()
def main(
    peer: Annotated[list[str] | None, typer.Option("--peer", envvar="MESHPAY_PEER",
                                                   help="A peer's API URL (repeat; the others are found from it)")] = None,
    devnet: Annotated[Path | None, typer.Option("--devnet", help="A devnet directory (instead of --peer)")] = None,
    genesis: Annotated[Path | None, typer.Option("--genesis", envvar="MESHPAY_GENESIS",
                                                 help="The genesis to verify certificates against (default: a "
                                                      "devnet's own, else the peers')")] = None,
    host: HostOption = "127.0.0.1",
    port: PortOption = DEFAULT_PORT,
    admin_token: TokenOption = None,
    audit_token: Annotated[str | None, typer.Option("--audit-token", envvar="MESHPAY_CONSOLE_AUDIT_TOKEN",
                                                    help="The peers' api.audit_token, for the supply audit "
                                                         "(a devnet's is read from its configs)")] = None,
    read_only: ReadOnlyOption = False,
    interval: Annotated[float, typer.Option(min=0.2, max=60, help="Seconds between polls of each peer")] = 1.0,
    version: bool = version_option("meshpay-console"),
) -> None:
    """Serve the web console: the network, traffic, payments, accounts, alerts, and controls."""
    if devnet is not None and peer:
        raise CliFailure("give either --devnet or --peer, not both", EXIT_USAGE)
    run_console(Options(peers=peer or [], devnet=devnet, genesis=genesis, host=host, port=port,
                        admin_token=admin_token, audit_token=audit_token, read_only=read_only,
                        interval=interval))


def entry() -> None:
    run_cli(app, "meshpay-console", err)


if __name__ == "__main__":
    entry()
