"""`devnet partition`, `slow`, `heal`, `pause`, `resume` and `faults`: faults between test hosts
(devnet/faults.py says how each is made; docs/chaos.md how to use them)."""

from __future__ import annotations

from typing import Annotated

import typer

from devnet import faults
from devnet.commands.common import DirOption, Fail, JsonOption, emit, load, out, peer_named
from devnet.faults import FaultError, UnknownPeer
from devnet.hosts import HostsError, Unprivileged
from devnet.layout import Devnet, DevnetError
from peer.cli_exit import Exit


def register(app: typer.Typer) -> None:
    app.command()(partition)
    app.command()(slow)
    app.command()(heal)
    app.command()(pause)
    app.command()(resume)
    app.command("faults")(list_faults)


def _failure(exc: DevnetError) -> Fail:
    if isinstance(exc, Unprivileged):
        return Fail(str(exc), Exit.PRIVILEGES)
    if isinstance(exc, HostsError):
        return Fail(str(exc), Exit.START)
    if isinstance(exc, UnknownPeer):
        return Fail(str(exc), Exit.UNKNOWN_PEER)
    return Fail(str(exc), Exit.USAGE)


def _report(devnet: Devnet, fault: dict, json_out: bool) -> None:
    devnet.note(fault["kind"], f"{fault['id']}: {fault['description']}")
    if json_out:
        emit(fault)
    else:
        out.print(f"{fault['id']} {fault['kind']}: {fault['description']} (undo with `devnet heal`)", highlight=False)


def partition(
    root: DirOption,
    groups: Annotated[list[str], typer.Argument(help="Peers: `peer0,peer1 / peer2,peer3,peer4`; with --one-way "
                                                "`peer0 / peer1` or 'peer0 -> peer1' (quote the arrow)")],
    one_way: Annotated[bool, typer.Option("--one-way", help="Only what the first group sends the second is lost")] = False,
    json_out: JsonOption = False,
) -> None:
    """Cut the network between groups of peers (test hosts only). Peers in no group stay connected."""
    devnet = load(root)
    try:
        parsed = faults.parse_groups(groups, separators=("->", "/") if one_way else ("/",))
        fault = faults.partition(devnet, parsed, one_way=one_way)
    except DevnetError as exc:
        raise _failure(exc) from exc
    _report(devnet, fault, json_out)


def slow(
    root: DirOption,
    peer: Annotated[str | None, typer.Argument(help="Slow this peer's links to every other peer")] = None,
    between: Annotated[str | None, typer.Option("--between", help="Or the links between two groups: 'peer0,peer1 / peer2'")] = None,
    delay: Annotated[str, typer.Option(help="Added one-way delay per packet, e.g. 50ms")] = "0ms",
    jitter: Annotated[str, typer.Option(help="Uniform +- variation of the delay (reorders packets), e.g. 10ms")] = "0ms",
    loss: Annotated[str, typer.Option(help="Packets lost, e.g. 2%")] = "0%",
    duplicate: Annotated[str, typer.Option(help="Packets sent twice, e.g. 1%")] = "0%",
    seed: Annotated[int | None, typer.Option(help="Seed of the delayer's random choices")] = None,
    json_out: JsonOption = False,
) -> None:
    """Delay, reorder, lose or duplicate packets on links between peers, both ways (test hosts only;
    without netem: an NFQUEUE delayer, see docs/chaos.md)."""
    if (peer is None) == (between is None):
        raise Fail("name one PEER or give --between 'A,B / C,D'", Exit.USAGE)
    devnet = load(root)
    try:
        groups = [[peer_named(devnet, peer).name]] if peer is not None else faults.parse_groups([between or ""])
        fault = faults.slow(devnet, groups, delay=faults.parse_ms(delay), jitter=faults.parse_ms(jitter),
                            loss=faults.parse_percent(loss), duplicate=faults.parse_percent(duplicate), seed=seed)
    except DevnetError as exc:
        raise _failure(exc) from exc
    _report(devnet, fault, json_out)


def heal(root: DirOption, json_out: JsonOption = False) -> None:
    """Undo every fault: partitions, slow links (their delayers stop) and paused peers."""
    devnet = load(root)
    try:
        undone = faults.heal(devnet)
    except DevnetError as exc:
        raise _failure(exc) from exc
    if undone:
        devnet.note("heal", "; ".join(undone))
    if json_out:
        emit({"healed": undone})
        return
    out.print("\n".join(f"healed {u}" for u in undone) if undone else "no fault was active", highlight=False)


def pause(root: DirOption, peer: Annotated[str, typer.Argument(help="Peer name, e.g. peer2")],
          json_out: JsonOption = False) -> None:
    """Freeze a peer (SIGSTOP): its connections stay open but it answers nothing (`resume` or `heal`)."""
    devnet = load(root)
    entry = peer_named(devnet, peer)
    try:
        fault = faults.pause(devnet, entry)
    except FaultError as exc:
        raise Fail(str(exc), Exit.UNREACHABLE) from exc
    _report(devnet, fault, json_out)


def resume(root: DirOption, peer: Annotated[str, typer.Argument(help="Peer name, e.g. peer2")],
           json_out: JsonOption = False) -> None:
    """Let a paused peer run again (SIGCONT)."""
    devnet = load(root)
    entry = peer_named(devnet, peer)
    pid = faults.resume(devnet, entry)
    if pid is None:
        raise Fail(f"{entry.name} is not running", Exit.UNREACHABLE)
    devnet.note("resume", f"resumed {entry.name} (pid {pid})")
    if json_out:
        emit({"peer": entry.name, "pid": pid})
    else:
        out.print(f"resumed {entry.name} (pid {pid})", highlight=False)


def list_faults(root: DirOption, json_out: JsonOption = False) -> None:
    """The faults in place now (made by `partition`, `slow`, `pause` or `chaos`)."""
    devnet = load(root)
    active = faults.active(devnet)
    if json_out:
        emit({"faults": active})
        return
    if not active:
        out.print("no fault is active", highlight=False)
    for fault in active:
        out.print(f"{fault['id']} {fault['kind']}: {fault['description']}", highlight=False)
