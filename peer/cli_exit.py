"""Turning a typer app's exceptions into exit statuses (shared by the `peer` and `devnet` commands).

The inner program raises `CliFailure` (plain message, documented exit status); this wrapper prints
to stderr and exits, as httpie's `main()` does. Parser errors (bad option, missing argument) exit 2.
"""

from __future__ import annotations

import sys

import typer
from rich.console import Console

EXIT_UNEXPECTED, EXIT_USAGE = 1, 2


class CliFailure(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def run(app: typer.Typer, name: str, err: Console) -> None:
    try:
        app(standalone_mode=False, prog_name=name)
    except CliFailure as exc:
        err.print(f"error: {exc}", markup=False, highlight=False)
        sys.exit(exc.code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        err.print("aborted")
        sys.exit(EXIT_UNEXPECTED)
    except KeyboardInterrupt:
        sys.exit(130)
    except typer.TyperException as exc:  # usage errors from the parser
        message = exc.format_message()
        if message:
            err.print(f"error: {message}\ntry '{name} --help' or '{name} COMMAND --help'", markup=False,
                      highlight=False)
        sys.exit(EXIT_USAGE)
