"""Running the `peer` and `devnet` commands in this process, as their `main()` does (exit status,
output): a Python start-up costs seconds on a busy 2-core machine, so tests that run many commands
run them here. (The commands' own processes, `peer run`, are real processes all the same.)"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

from typer.testing import CliRunner

from devnet import cli as devnet_cli
from peer import cli as peer_cli
from tests.wallet_support import Result


def peer(*args: str | Path) -> Result:
    """`peer ARGS` in this process (as `main()` runs it: exit status, message on stderr)."""
    return _run("peer", peer_cli.main, args)


def devnet(*args: str | Path) -> Result:
    """`devnet ARGS` in this process."""
    return _run("devnet", devnet_cli.main, args)


def _run(name: str, main: Callable[[], None], args: tuple[str | Path, ...]) -> Result:
    clean: dict[str, str | None] = {k: None for k in os.environ if k.startswith("MESHPAY_")}
    argv = sys.argv
    with CliRunner().isolation(env={**clean, "COLUMNS": "300"}) as (stdout, stderr, _):
        sys.argv = [name, *map(str, args)]
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        finally:
            sys.argv = argv
        sys.stdout.flush()
        sys.stderr.flush()
        return Result(code, stdout.getvalue().decode(), stderr.getvalue().decode())
