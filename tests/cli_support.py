"""Running the `peer` command in this process, as its `main()` does (exit status, output)."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from typer.testing import CliRunner

from peer import cli


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


def peer(*args: str | Path) -> Ran:
    """`peer ARGS` in this process (as `main()` runs it: exit status, message on stderr)."""
    clean: dict[str, str | None] = {k: None for k in os.environ if k.startswith("MESHPAY_")}
    argv = sys.argv
    with CliRunner().isolation(env={**clean, "COLUMNS": "300"}) as (stdout, stderr, _):
        sys.argv = ["peer", *map(str, args)]
        try:
            cli.main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        finally:
            sys.argv = argv
        sys.stdout.flush()
        sys.stderr.flush()
        return Ran(code, stdout.getvalue().decode(), stderr.getvalue().decode())
