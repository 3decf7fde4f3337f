"""`devnet console`: the web console for a devnet, and the one `devnet up` serves beside its live view.

The console itself is the `console` package (`meshpay-console --devnet DIR` is the same app); it is
imported only when used, so other `devnet` commands start as fast as before.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Annotated

import typer

from devnet.commands.common import DirOption
from devnet.layout import Devnet, free_ports

DEFAULT_PORT = 8700  # the console's own default (console/cli.py)


def register(app: typer.Typer) -> None:
    app.command(name="console")(console)


def console(
    root: DirOption,
    host: Annotated[str, typer.Option(help="Address to serve on (keep 127.0.0.1: the console can stop peers)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to serve on (0: any free port)")] = DEFAULT_PORT,
    read_only: Annotated[bool, typer.Option("--read-only", help="Show everything, act on nothing")] = False,
) -> None:
    """Serve the web console for this devnet and print its URL (opens no browser; Ctrl-C stops it)."""
    from console.cli import run_console
    from console.server import Options

    run_console(Options(peers=[], devnet=root, host=host, port=port, read_only=read_only))


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _answers(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@contextlib.contextmanager
def alongside(devnet: Devnet, *, quiet: bool = False, wait: float = 20.0) -> Iterator[str | None]:
    """Serve the console in a child process while the caller runs (`devnet up`'s live view); print
    its URL (to stderr when `quiet`, so JSON on stdout stays clean). A console that fails to start
    is reported and does not stop the devnet."""
    port = DEFAULT_PORT if _port_free(DEFAULT_PORT) else free_ports(1)[0]
    log_path = devnet.root / "console.log"
    stream = sys.stderr if quiet else sys.stdout
    with log_path.open("ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "console", "--devnet", str(devnet.root), "--port", str(port)],
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + wait
        while proc.poll() is None and not _answers(port) and time.monotonic() < deadline:
            time.sleep(0.1)
        url = f"http://127.0.0.1:{port}/" if proc.poll() is None and _answers(port) else None
        if url:
            print(f"web console: {url}  (open it in a browser; it stops with the devnet)", file=stream, flush=True)
        else:
            print(f"the web console did not start; see {log_path}", file=stream, flush=True)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
