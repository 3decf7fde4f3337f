"""`devnet bench` (load, throughput, latency) and `devnet check` (the auditor)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import httpx
import typer
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn
from rich.table import Table

from devnet.audit import audit
from devnet.commands.common import (
    DirOption,
    Fail,
    JsonOption,
    amount_text,
    emit,
    err,
    first_running,
    genesis_of,
    load,
    out,
)
from peer.cli_exit import Exit


def register(app: typer.Typer) -> None:
    app.command()(bench)
    app.command()(check)


def bench(
    root: DirOption,
    rate: Annotated[float | None, typer.Option(min=0.1, help="Offered payments per second (open loop)")] = None,
    concurrency: Annotated[int | None, typer.Option(min=1, help="Accounts busy at once (closed loop)")] = None,
    duration: Annotated[float | None, typer.Option(min=0.5, help="Seconds of load")] = None,
    payments: Annotated[int | None, typer.Option(min=1, help="Number of payments")] = None,
    accounts: Annotated[int, typer.Option(min=2, max=20_000, help="Accounts generating load")] = 200,
    ids_out: Annotated[Path | None, typer.Option("--ids-out", help="Write the certified payment ids here")] = None,
    via: Annotated[str, typer.Option(help="binary (peer port) or http (the JSON API)")] = "binary",
    json_out: JsonOption = False,
) -> None:
    """Load the devnet and report throughput, latency and the fraction of the signature-cost bound.

    The load accounts are new ones, funded from the devnet's own bench accounts (never from the
    demo wallets, whose balances stay as you left them)."""
    if rate is not None and concurrency is not None:
        raise Fail("use either --rate or --concurrency, not both", Exit.USAGE)
    if duration is not None and payments is not None:
        raise Fail("use either --duration or --payments, not both", Exit.USAGE)
    if duration is None and payments is None:
        payments = 2000
    if via not in ("binary", "http"):
        raise Fail("--via must be binary or http", Exit.USAGE)
    # Imported here: the load generator (trio, the binary client) is heavy for every other command.
    import trio

    from devnet.bench import Bench, BenchConfig
    from gossip.links import ConnectError

    devnet = load(root)
    first_running(devnet)
    config = BenchConfig(accounts=accounts, payments=payments, duration=duration, rate=rate, concurrency=concurrency,
                         via=via)
    progress = Progress(TextColumn("{task.description:<9}"), BarColumn(), TaskProgressColumn(),
                        TextColumn("{task.completed}/{task.total}"), console=err, disable=json_out, transient=True)
    tasks: dict[str, int] = {}

    def report(phase: str, done: int, total: int) -> None:
        if phase not in tasks:
            tasks[phase] = progress.add_task(phase, total=total)
        progress.update(tasks[phase], completed=done, total=total)

    runner = Bench(devnet, config, report)
    try:
        with progress:
            result = trio.run(runner.run)
    except ConnectError as exc:
        raise Fail(f"bench failed: {exc}", Exit.BENCH) from exc
    doc = result.as_dict()
    doc["funded_from"] = runner.funded_from
    ids = doc.pop("certified_ids")
    if ids_out is not None:
        ids_out.write_text("\n".join(ids) + ("\n" if ids else ""))
    if json_out:
        emit(doc)
        return
    table = Table(show_header=False, box=None)
    table.add_row("offered load", result.offered)
    table.add_row("payments", f"{result.payments} submitted, {result.certified} certified, {result.settled} settled")
    table.add_row("throughput", f"{result.throughput:.1f} settled payments/s over {result.seconds:.2f} s")
    for label, pct in (("to certified", result.certified_ms), ("to settled", result.settled_ms)):
        table.add_row(f"latency {label}", "  ".join(f"{k} {v:.1f} ms" for k, v in pct.items()))
    table.add_row("failures", ", ".join(f"{k}: {v}" for k, v in result.failures.items()) or "none")
    table.add_row("resubmitted", f"{result.resubmits} (after a gateway was lost)")
    table.add_row("signature bound", f"{result.bound_per_second:.0f} payments/s = {result.bound_formula}")
    table.add_row("fraction of bound", f"{result.fraction_of_bound:.1%}")
    table.add_row("CPU per payment", f"peers {result.server_cpu_us:,.0f} us (all peers, from /proc), client "
                  f"{result.client_cpu_us:,.0f} us; signatures are {result.signature_share:.0%} of the peers' CPU"
                  + ("" if result.cpu_complete else " (a peer vanished mid-run: its CPU is partly missing)"))
    busy = "?" if result.machine_busy_cores is None else f"{result.machine_busy_cores:.2f}"
    others = "?" if result.others_cores is None else f"{result.others_cores:.2f}"
    table.add_row("cores busy", f"peers {result.server_cores:.2f}, whole machine {busy} (others {others})")
    table.add_row("funded from", f"{accounts} new accounts, paid by the devnet's {runner.funded_from}")
    out.print(table)


def check(root: DirOption, quiet_timeout: Annotated[float, typer.Option(min=0)] = 30.0,
          acknowledged: Annotated[Path | None, typer.Option(
              "--acknowledged", help="A file of payment ids clients were told are certified (one per line, "
              "e.g. from `bench --ids-out`): each must be held and applied")] = None,
          json_out: JsonOption = False) -> None:
    """The auditor: supply, no negative balance, replica agreement, one certificate per (sender, seq), all applied."""
    devnet = load(root)
    first_running(devnet)
    decimals = genesis_of(devnet).decimals
    try:
        ids = acknowledged.read_text().split() if acknowledged is not None else []
    except OSError as exc:
        raise Fail(f"cannot read {acknowledged}: {exc.strerror}", Exit.USAGE) from exc
    try:
        report = audit(devnet, quiet_timeout=quiet_timeout, token=devnet.audit_token, acknowledged=ids)
    except httpx.HTTPError as exc:
        raise Fail(f"a peer did not answer the audit: {exc}", Exit.UNREACHABLE) from exc
    if json_out:
        doc = report.as_dict()
        doc.update(decimals=decimals, total_supply_text=amount_text(report.total_supply, decimals),
                   genesis_supply_text=amount_text(report.genesis_supply, decimals))
        emit(doc)
    else:
        out.print(f"checked {len(report.peers_checked)} peers, {report.accounts} accounts, "
                  f"{report.certificates} certificates; total supply {amount_text(report.total_supply, decimals)} "
                  f"(genesis {amount_text(report.genesis_supply, decimals)})", highlight=False)
        for note in report.notes:
            out.print(f"note: {note}", highlight=False)
        for v in report.violations:
            out.print(f"[red]VIOLATION[/red] {v}", highlight=False)
        out.print("[green]verdict: OK[/green]" if report.ok else f"[red]verdict: {len(report.violations)} violation(s)[/red]")
    if not report.ok:
        raise typer.Exit(Exit.VIOLATIONS)

