"""`devnet chaos`: a bank workload under a seeded schedule of faults, then heal, quiesce and audit
(devnet/chaos/ says how; docs/chaos.md how to read the report)."""

from __future__ import annotations

import secrets
from typing import Annotated

import typer
from rich.table import Table

from devnet import faults, hosts, processes
from devnet.chaos import report, schedule
from devnet.commands.common import DirOption, Fail, JsonOption, emit, err, load, out
from devnet.hosts import Unprivileged
from peer.cli_exit import Exit


def register(app: typer.Typer) -> None:
    app.command()(chaos)


def chaos(
    root: DirOption,
    duration: Annotated[float, typer.Option(min=10, help="Seconds of load and faults")] = 120.0,
    nemesis: Annotated[str | None, typer.Option(
        help="Faults to inject, comma-separated: kill, pause, partition, slow "
             "[default: all the devnet supports; a 127.0.0.1 devnet: kill,pause]")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the schedule and the workload (default: random, printed)")] = None,
    clients: Annotated[int, typer.Option(min=2, max=64, help="Client accounts paying each other")] = 8,
    overdrawers: Annotated[int, typer.Option(min=0, help="How many of them also try to overdraw")] = 2,
    op_timeout: Annotated[float, typer.Option(min=1, help="Seconds an op may take before it counts as unavailable")] = 15.0,
    schedule_only: Annotated[bool, typer.Option("--schedule-only", help="Print the schedule and stop")] = False,
    json_out: JsonOption = False,
) -> None:
    """Run a bank workload while killing, pausing, partitioning and slowing peers on a seeded
    schedule; then heal, quiesce and audit. Prints availability and latency per fault window;
    exits 18 on any violated invariant."""
    devnet = load(root)
    local = hosts.kind(devnet) == hosts.LOCAL
    kinds = [k.strip() for k in nemesis.split(",") if k.strip()] if nemesis else \
        list(schedule.LOCAL_KINDS if local else schedule.KINDS)
    unknown = [k for k in kinds if k not in schedule.KINDS]
    if unknown or not kinds:
        raise Fail(f"unknown nemesis {', '.join(unknown) or '(none)'}; choose from {', '.join(schedule.KINDS)}", Exit.USAGE)
    if local and set(kinds) - set(schedule.LOCAL_KINDS):
        raise Fail("partition and slow need a devnet with one network namespace per peer (`devnet up --hosts netns`); "
                   f"on this 127.0.0.1 devnet use --nemesis {','.join(schedule.LOCAL_KINDS)}", Exit.USAGE)
    if overdrawers > clients:
        raise Fail("--overdrawers cannot exceed --clients", Exit.USAGE)
    if not local and set(kinds) & {"partition", "slow"}:
        try:
            hosts.require(faults.QUEUE_TOOLS if "slow" in kinds else faults.NFT_TOOLS, "devnet chaos")
        except Unprivileged as exc:
            raise Fail(str(exc), Exit.PRIVILEGES) from exc
    seed = secrets.randbelow(1_000_000) if seed is None else seed
    plan = schedule.make(seed, duration, kinds, [p.name for p in devnet.peers], devnet.quorum)
    if not json_out:
        out.print(f"seed {seed}: {len(plan)} fault windows over {duration:.0f} s "
                  f"(the same seed, duration, nemeses and devnet size give this same schedule)", highlight=False)
        for window in plan:
            out.print("  " + window.describe(), highlight=False)
    if schedule_only:
        if json_out:
            emit({"seed": seed, "schedule": [w.as_dict() for w in plan]})
        return
    down = [p.name for p in devnet.peers if not processes.is_running(p, devnet)]
    if down:
        raise Fail(f"peers not running: {', '.join(down)}; start them with `devnet up --dir {devnet.root} --detach`",
                   Exit.UNREACHABLE)
    if faults.active(devnet):
        raise Fail("faults are in place already (`devnet faults`); `devnet heal` first", Exit.USAGE)
    import trio  # heavy: only for the run itself

    from devnet.chaos.run import Chaos, ChaosConfig

    runner = Chaos(devnet, ChaosConfig(duration, seed, plan, clients=clients, overdrawers=overdrawers,
                                       op_timeout=op_timeout),
                   say=(lambda text: None) if json_out else (lambda text: err.print(text, markup=False)))
    devnet.note("chaos", f"seed {seed}, {duration:.0f} s, nemeses {','.join(kinds)}")
    try:
        result = trio.run(runner.run)
    finally:
        faults.heal(devnet)  # whatever happened, leave no fault behind
    doc = {"seed": seed, "schedule": [w.as_dict() for w in plan], **result.as_dict()}
    if json_out:
        emit(doc)
    else:
        _print(doc)
    if not result.ok:
        raise typer.Exit(Exit.VIOLATIONS)


def _table(title: str, rows: dict[str, dict], *, overdraws: bool) -> Table:
    table = Table(title=title, title_justify="left")
    columns = ["", "payments", "certified", "settled", "timeouts", "p50 cert ms", "p99 cert ms", "p50 settle ms",
               "p99 settle ms"] + (["overdraws refused"] if overdraws else [])
    for column in columns:
        table.add_column(column, justify="left" if not column else "right")
    for name, r in rows.items():
        cells = [name, str(r["payments"]), report.fmt(r["certified_pct"], "%"), report.fmt(r["settled_pct"], "%"),
                 str(r["timeouts"]), report.fmt(r["certified_ms"]["p50"]), report.fmt(r["certified_ms"]["p99"]),
                 report.fmt(r["settled_ms"]["p50"]), report.fmt(r["settled_ms"]["p99"])]
        table.add_row(*cells, *([f"{r['overdraws_refused']}/{r['overdraws']}"] if overdraws else []))
    return table


def _print(doc: dict) -> None:
    out.print(_table("availability and latency per window (an op counts in the fault it overlapped; healthy: no fault while it ran)", doc["by_window"], overdraws=True))
    out.print(_table("by owners lost while the payment was in flight (of the payer's / of the payee's)", doc["by_lost_owners"], overdraws=False))
    r = doc["replays"]
    out.print(f"acknowledged payments: {doc['acknowledged']}; acknowledged orders sent again: {r['replays']}, "
              f"answered certified: {r['certified']}" + (f" (others: {', '.join(r['other'])})" if r["other"] else ""),
              highlight=False)
    errors = [w for w in doc["windows"] if "error" in w]
    for w in errors:
        out.print(f"note: the {w['kind']} window at {w['began']} s failed: {w['error']}", highlight=False)
    for note in doc["notes"]:
        out.print(f"note: {note}", highlight=False)
    audit = doc["audit"]
    if audit:
        out.print(f"audit: {len(audit['peers_checked'])} peers, {audit['accounts']} accounts, "
                  f"{audit['certificates']} certificates, supply {audit['total_supply']} (genesis {audit['genesis_supply']})",
                  highlight=False)
    for v in doc["violations"]:
        out.print(f"[red]VIOLATION[/red] {v}", highlight=False)
    out.print("[green]verdict: OK[/green]" if doc["ok"] else f"[red]verdict: {len(doc['violations'])} violation(s)[/red]")
