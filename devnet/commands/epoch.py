"""`devnet add-peer`, `devnet remove-peer`, `devnet epoch`: change a running devnet's committee.

The work is in devnet/epochs.py; these commands add the options, the output and the exit status
from the shared table (docs/cli.md): 14 no devnet in the directory, 16 a new peer failed to start or
a change did not complete in time, 15 unknown peer, 10 a peer refused the change (the message says why).
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Annotated

import httpx
import typer
from rich.table import Table

from devnet import epochs
from devnet.commands.common import DirOption, JsonOption, err, out
from devnet.layout import Devnet, DevnetError
from peer.cli_exit import CliFailure, Exit

EXIT_DIR, EXIT_START, EXIT_PEER, EXIT_REFUSED = Exit.NO_DEVNET, Exit.START, Exit.UNKNOWN_PEER, Exit.REFUSED

TimeoutOption = Annotated[float, typer.Option(min=1, help="Seconds to wait for the change to complete")]


def register(app: typer.Typer) -> None:
    app.command("add-peer")(add_peer)
    app.command("remove-peer")(remove_peer)
    app.command("epoch")(epoch)


def _load(root: Path) -> Devnet:
    try:
        return Devnet.load(root)
    except DevnetError as exc:
        raise CliFailure(str(exc), EXIT_DIR) from exc


def _run(what: str, action, json_out: bool):
    """Run a change, turning its failures into exit statuses (and a hint where the logs are)."""
    try:
        return action(None if json_out else lambda text: err.print(text, markup=False, highlight=False))
    except DevnetError as exc:
        code = EXIT_REFUSED if isinstance(exc, epochs.ChangeRefused) else EXIT_START
        raise CliFailure(f"{what}: {exc}", code) from exc
    except httpx.HTTPError as exc:
        raise CliFailure(f"{what}: a peer stopped answering: {exc}", EXIT_START) from exc


def _print_report(report: epochs.ChangeReport) -> None:
    table = Table(show_header=False, box=None)
    table.add_row("epoch", f"{report.epoch} (change {report.change_id[:16]})")
    if report.added:
        table.add_row("added", ", ".join(report.added))
    if report.removed:
        table.add_row("removed", ", ".join(report.removed))
    table.add_row("committee", f"{len(report.committee)}: {', '.join(report.committee)}")
    table.add_row("approvals", str(report.approvals))
    table.add_row("certificate", f"{report.seconds_to_certificate:.1f} s after the proposal")
    table.add_row("serving", f"{report.seconds_to_serving:.1f} s after the proposal (every handoff complete)")
    table.add_row("moved", f"{report.accounts_moved} accounts, {report.certs_moved} certificates, "
                  f"{report.bytes_moved:,} bytes")
    out.print(table)


def add_peer(root: DirOption,
             count: Annotated[int, typer.Option(min=1, max=16, help="Peers to add (in one epoch change)")] = 1,
             timeout: TimeoutOption = 180.0, json_out: JsonOption = False) -> None:
    """Start new peers as observers, then add them to the committee.

    Proposes on a committee peer, approves on every committee peer, waits for the epoch certificate
    and for every handoff to complete."""
    devnet = _load(root)
    report = _run("add-peer", lambda say: epochs.add_peers(devnet, count, timeout=timeout, progress=say), json_out)
    if json_out:
        print(json.dumps(report.as_dict()))
    else:
        _print_report(report)


def remove_peer(root: DirOption, peer: Annotated[str, typer.Argument(help="Peer name, e.g. peer2")],
                timeout: TimeoutOption = 180.0, json_out: JsonOption = False) -> None:
    """Take a peer out of the committee; once the new owners hold its accounts, stop it."""
    devnet = _load(root)
    try:
        entry = devnet.peer(peer)
    except DevnetError as exc:
        raise CliFailure(str(exc), EXIT_PEER) from exc
    report = _run("remove-peer", lambda say: epochs.remove_peer(devnet, entry, timeout=timeout, progress=say),
                  json_out)
    if json_out:
        print(json.dumps(report.as_dict()))
    else:
        _print_report(report)
        out.print(f"{entry.name} is stopped and recorded as removed (its data stays in {devnet.peer_dir(entry.name)})")


def epoch(root: DirOption, json_out: JsonOption = False) -> None:
    """The epoch history: each epoch's committee, when it started, accounts moved into it."""
    devnet = _load(root)
    try:
        rows = epochs.history(devnet)
    except DevnetError as exc:
        raise CliFailure(str(exc), EXIT_REFUSED) from exc
    if json_out:
        print(json.dumps({"epoch": rows[-1]["epoch"], "epochs": rows, "removed": devnet.extra.get("removed", [])}))
        return
    table = Table("epoch", "started", "committee", "added", "removed", "accounts moved", "serving after")
    for r in rows:
        started = "genesis" if r["started"] is None else _when(r["started"])
        table.add_row(str(r["epoch"]), started, f"{len(r['committee'])}: {', '.join(r['committee'])}",
                      ", ".join(r["added"]) or "-", ", ".join(r["removed"]) or "-",
                      "-" if r["accounts_moved"] is None else str(r["accounts_moved"]),
                      "-" if r["seconds_to_serving"] is None else f"{r['seconds_to_serving']:.1f} s")
    out.print(table)


def _when(unix: int) -> str:
    return datetime.datetime.fromtimestamp(unix).strftime("%Y-%m-%d %H:%M:%S")
