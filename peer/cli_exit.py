"""What the `peer`, `devnet` (and `wallet`) commands share: exit statuses, errors, `--version`.

The inner program raises `CliFailure` (plain message, exit status from the one table below); `run`
prints it to stderr and exits, as httpie's `main()` does. With `--json` on the command line the
error also goes to stdout as `{"error": {"kind", "exit_status", "message", ...}}`, like the
wallet's. Parser errors (bad option, missing argument) exit 2.

One table for every command: the same failure exits with the same status whichever command met it
(docs/cli.md lists it; `tests/test_cli_conventions.py` checks the wallet's constants against it).
"""

from __future__ import annotations

import json
import sys
from enum import IntEnum
from importlib import metadata
from typing import Any

import typer
from rich.console import Console


class Exit(IntEnum):
    OK = 0
    UNEXPECTED = 1  # a bug: please report it
    USAGE = 2  # bad arguments, options, configuration or parameters; unreadable or damaged local file
    ADDRESS = 3  # bad address
    AMOUNT = 4  # bad amount
    FUNDS = 5  # insufficient funds
    PENDING = 6  # conflicting pending payment
    UNREACHABLE = 7  # a peer (or every peer) cannot be reached or is not serving
    TIMEOUT = 8  # not certified/settled in time
    PASSWORD = 9  # wrong password
    REFUSED = 10  # refused by the owners or the peer for another reason
    INVALID = 11  # a certificate or receipt does not verify
    NETWORK = 12  # the peer serves another network
    PORT = 13  # a port is in use or cannot be bound
    NO_DEVNET = 14  # the directory holds no devnet, or something else
    UNKNOWN_PEER = 15  # no peer of that name in the devnet
    START = 16  # a peer failed to start or did not join in time (nothing is left half-started)
    DATABASE = 17  # the peer's database is foreign, newer, damaged or locked
    VIOLATIONS = 18  # `devnet check` found broken invariants
    BENCH = 19  # `devnet bench` could not run
    BUSY = 20  # processes still use the devnet (`down --wipe` refuses to delete it under them)
    PRIVILEGES = 21  # test hosts or faults need root or a system tool that is missing (named)


KINDS = {
    Exit.UNEXPECTED: "unexpected", Exit.USAGE: "usage", Exit.ADDRESS: "bad_address", Exit.AMOUNT: "bad_amount",
    Exit.FUNDS: "insufficient_funds", Exit.PENDING: "conflicting_pending", Exit.UNREACHABLE: "peer_unreachable",
    Exit.TIMEOUT: "timeout", Exit.PASSWORD: "wrong_password", Exit.REFUSED: "refused",
    Exit.INVALID: "verification_failed", Exit.NETWORK: "network_mismatch", Exit.PORT: "port_in_use",
    Exit.NO_DEVNET: "no_devnet", Exit.UNKNOWN_PEER: "unknown_peer", Exit.START: "start_failed",
    Exit.DATABASE: "database", Exit.VIOLATIONS: "violations", Exit.BENCH: "bench_failed", Exit.BUSY: "busy",
    Exit.PRIVILEGES: "privileges",
}

EXIT_UNEXPECTED, EXIT_USAGE = Exit.UNEXPECTED, Exit.USAGE


class CliFailure(Exception):
    def __init__(self, message: str, code: int, kind: str | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.code = int(code)
        self.kind = kind or _kind(self.code)
        self.extra = extra


def _kind(code: int) -> str:
    try:
        return KINDS.get(Exit(code), "error")
    except ValueError:  # a status outside the table (the daemon's own, say)
        return "error"


def error_console() -> Console:
    """stderr, never hard-wrapped: a long error stays one line in logs and pipes (soft wrap)."""
    return Console(stderr=True, soft_wrap=True, highlight=False)


def version() -> str:
    try:
        return metadata.version("meshpay")
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def version_option(prog: str) -> Any:
    """A `--version` option, used as a parameter's default: `show: bool = version_option("wallet")`."""
    def show(value: bool) -> None:
        if value:
            print(f"{prog} (meshpay) {version()}")
            raise typer.Exit()

    return typer.Option(False, "--version", callback=show, is_eager=True, help="Print the version and exit")


def install_version(app: typer.Typer, prog: str) -> None:
    """Give `app` a `--version` option (for apps without a callback of their own; an app that has
    one adds a `version_option(prog)` parameter to it instead)."""

    def root(show: bool = version_option(prog)) -> None:
        """(the command group itself does nothing)"""

    app.callback()(root)


def _json_mode(argv: list[str]) -> bool:
    head = argv[: argv.index("--")] if "--" in argv else argv
    return "--json" in head


def _emit_json_error(kind: str, code: int, message: str, extra: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps({"error": {"kind": kind, "exit_status": code, "message": message, **extra}}) + "\n")


def run(app: typer.Typer, name: str, err: Console, argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    as_json = _json_mode(args)
    try:
        app(args=args, standalone_mode=False, prog_name=name)
    except CliFailure as exc:
        err.print(f"error: {exc}", markup=False, highlight=False)
        if as_json:
            _emit_json_error(exc.kind, exc.code, str(exc), exc.extra)
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
            if as_json:
                _emit_json_error(KINDS[Exit.USAGE], EXIT_USAGE, message, {})
        sys.exit(EXIT_USAGE)
