"""`devnet status`, `logs`, `wallets` and `env`: looking at a devnet without changing it."""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.table import Table

from devnet import processes
from devnet.commands.common import (
    DirOption,
    JsonOption,
    amount_text,
    emit,
    genesis_of,
    load,
    out,
    peer_named,
)
from devnet.layout import Devnet, PeerEntry, WalletEntry


def register(app: typer.Typer) -> None:
    app.command()(status)
    app.command()(logs)
    app.command()(wallets)
    app.command()(env)


# ---- shared with `devnet up` -------------------------------------------------------------------------
def balance(devnet: Devnet, address: str) -> int | None:
    """An account's balance from one of its owners (a summary needs no cross-check)."""
    with httpx.Client(timeout=2.0) as client:
        for entry in devnet.peers:
            found, owners = _ask(client, entry.api, address)
            for api in owners:
                if found is None:
                    found, _ = _ask(client, api, address)
            if found is not None:
                return found
    return None


def _ask(client: httpx.Client, api: str, address: str) -> tuple[int | None, list[str]]:
    """The balance `api` holds, or the APIs of the owners it names (421 not_owner)."""
    try:
        r = client.get(f"{api}/v1/accounts/{address}")
    except httpx.HTTPError:
        return None, []
    if r.status_code == 200:
        return r.json()["balance"], []
    if r.status_code == 421:
        return None, [o["api"] for o in r.json()["error"]["owners"] if o["api"]]
    return None, []


def env_vars(devnet: Devnet, peer: PeerEntry | None = None) -> dict[str, str]:
    """The environment the wallet (and devnet) commands read, pointed at this devnet."""
    if peer is None:
        live = processes.running(devnet)
        peer = next((p for p in devnet.peers if p.name in live), devnet.peers[0])
    return {"MESHPAY_DEVNET_DIR": str(devnet.root), "MESHPAY_WALLET_DIR": str(devnet.wallet_dir()),
            "MESHPAY_WALLET_PASSWORD_FILE": str(devnet.password_file),
            "MESHPAY_GENESIS": str(devnet.genesis_path), "MESHPAY_PEER": peer.api}


def export_line(variables: dict[str, str]) -> str:
    return "export " + " ".join(f"{k}={shlex.quote(v)}" for k, v in variables.items())


def activate_line() -> str | None:
    """How a new terminal gets these commands on its PATH (None: not running from a venv)."""
    if sys.prefix == sys.base_prefix:
        return None
    return f". {shlex.quote(str(Path(sys.prefix) / 'bin' / 'activate'))}"


def wallet_rows(devnet: Devnet, decimals: int, *, balances: bool = True) -> list[dict[str, Any]]:
    def row(w: WalletEntry, role: str) -> dict[str, Any]:
        value = balance(devnet, w.address) if balances else None
        return {"name": w.name, "address": w.address, "role": role, "balance": value,
                "balance_text": amount_text(value, decimals), "key_file": w.key_file}

    rows = [row(w, "demo") for w in devnet.wallets]
    if devnet.faucet is not None:
        rows.append(row(devnet.faucet, "faucet"))
    return rows


def wallet_lines(rows: list[dict[str, Any]]) -> list[str]:
    """Plain lines, never cut: a full address must be copyable from an 80-column terminal."""
    width = max((len(r["name"]) for r in rows), default=4)
    lines = []
    for r in rows:
        note = "  (`devnet fund` pays from it)" if r["role"] == "faucet" else ""
        lines.append(f"{r['name']:<{width}}  {r['address']}  {r['balance_text']}{note}")
    return lines


def summary(devnet: Devnet) -> dict[str, Any]:
    genesis = genesis_of(devnet)
    live = processes.running(devnet)
    shares = {}
    for entry in devnet.peers:
        doc = processes.status(entry, timeout=2.0) if entry.name in live else None
        shares[entry.name] = doc["ring_share"] if doc else None
    variables = env_vars(devnet)
    return {
        "dir": str(devnet.root), "name": devnet.name, "network_id": devnet.network_id,
        "decimals": genesis.decimals, "replication": devnet.replication, "quorum": devnet.quorum,
        "peers": [{"name": p.name, "peer_id": p.peer_id, "peer_port": p.port, "api": p.api, "pid": live.get(p.name),
                   "ring_share": shares[p.name]} for p in devnet.peers],
        "wallets": [r for r in wallet_rows(devnet, genesis.decimals) if r["role"] == "demo"],
        "faucet": devnet.faucet.address if devnet.faucet else None,
        "env": variables,
        "commands": {
            "activate": activate_line(),
            "env": export_line(variables),
            "send": "wallet send -a demo0 --to demo1 --amount 12.50",
            "balance": "wallet balance -a demo1",
            "fund": "devnet fund ADDRESS AMOUNT",
            "status_view": f"devnet watch --dir {shlex.quote(str(devnet.root))}",
            "status": f"devnet status --dir {shlex.quote(str(devnet.root))}",
            "stop": f"devnet down --dir {shlex.quote(str(devnet.root))}",
        },
    }


def print_summary(doc: dict[str, Any]) -> None:
    peers = Table("peer", "id", "pid", "peer port", "api", "ring share", title="peers")
    for p in doc["peers"]:
        share = "?" if p["ring_share"] is None else f"{p['ring_share']:.0%}"
        peers.add_row(p["name"], p["peer_id"][:16], str(p["pid"] or "-"), str(p["peer_port"]), p["api"], share)
    out.print(peers)
    out.print("[bold]demo wallets[/bold] (`devnet wallets` prints them again)")
    for line in wallet_lines(doc["wallets"]):
        print(line)
    out.print(f"network [bold]{doc['name']}[/bold] (id {doc['network_id'][:16]}…), replication "
              f"{doc['replication']}, quorum {doc['quorum']}; amounts have {doc['decimals']} decimals")
    c = doc["commands"]
    out.print("\n[bold]pay from another terminal[/bold] (`devnet env` prints the export line again):")
    for line in (c["activate"], c["env"], c["send"], c["balance"]):
        if line:
            print("  " + line)
    out.print(f"[bold]more money[/bold]  {c['fund']}   (from the devnet's faucet)")
    out.print(f"[bold]status[/bold]      {c['status']}   [bold]stop[/bold]  {c['stop']}")


# ---- commands ------------------------------------------------------------------------------------------
def status(root: DirOption, json_out: JsonOption = False) -> None:
    """Each peer: process, ports, membership view (alive/suspect/dead/left) and ring share."""
    devnet = load(root)
    live = processes.running(devnet)
    rows = []
    for p in devnet.peers:
        running = p.name in live
        doc = processes.status(p, timeout=2.0) if running else None
        rows.append({"name": p.name, "peer_id": p.peer_id, "pid": live.get(p.name), "running": running,
                     "peer_port": p.port, "api": p.api, "members": doc["members"] if doc else None,
                     "ring_share": doc["ring_share"] if doc else None,
                     "in_flight": doc["queues"]["gateway_in_flight"] if doc else None})
    if json_out:
        emit({"dir": str(devnet.root), "name": devnet.name, "network_id": devnet.network_id, "peers": rows})
        return
    table = Table("peer", "id", "pid", "process", "peer port", "api", "alive", "suspect", "dead", "left",
                  "ring share", title=f"{devnet.name} in {devnet.root}")
    for r in rows:
        m = r["members"] or {}
        counts = [str(m[k]) if k in m else "-" for k in ("alive", "suspect", "dead", "left")]
        table.add_row(r["name"], r["peer_id"][:12], str(r["pid"] or "-"),
                      "running" if r["running"] else "stopped", str(r["peer_port"]), r["api"], *counts,
                      f"{r['ring_share']:.0%}" if r["ring_share"] is not None else "-")
    out.print(table)
    out.print("(members as each peer sees the others; `left` peers shut down cleanly, `dead` ones stopped answering)")


def logs(root: DirOption,
         peer: Annotated[str | None, typer.Argument(help="Peer name (default: all)")] = None,
         follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines")] = False,
         lines: Annotated[int, typer.Option("--lines", "-n", min=0)] = 40) -> None:
    """Print (and follow) peer logs."""
    devnet = load(root)
    entries = [peer_named(devnet, peer)] if peer else devnet.peers
    offsets = {}
    for e in entries:
        path = devnet.log_path(e.name)
        text = processes.tail(devnet, e.name, lines)
        for line in text.splitlines():
            print(f"{e.name}| {line}" if len(entries) > 1 else line)
        offsets[e.name] = path.stat().st_size if path.exists() else 0
    try:
        while follow:
            time.sleep(0.3)
            for e in entries:
                path = devnet.log_path(e.name)
                if not path.exists():
                    continue
                with path.open("rb") as fh:
                    fh.seek(offsets[e.name])
                    chunk = fh.read()
                offsets[e.name] += len(chunk)
                for line in chunk.decode(errors="replace").splitlines():
                    print(f"{e.name}| {line}" if len(entries) > 1 else line, flush=True)
    except KeyboardInterrupt:
        pass


def wallets(root: DirOption, json_out: JsonOption = False) -> None:
    """The demo wallets and the faucet: names, full addresses and balances."""
    devnet = load(root)
    decimals = genesis_of(devnet).decimals
    rows = wallet_rows(devnet, decimals)
    if json_out:
        emit({"dir": str(devnet.root), "name": devnet.name, "decimals": decimals, "wallets": rows})
        return
    for line in wallet_lines(rows):
        print(line)


def env(root: DirOption,
        peer: Annotated[str | None, typer.Argument(help="Peer whose API the wallet uses "
                                                   "(default: the first running one)")] = None,
        json_out: JsonOption = False) -> None:
    """Print the `export` line that points the wallet (and devnet) commands at this devnet.

    Use it as `eval "$(devnet env)"`; then `wallet send -a demo0 --to demo1 --amount 12.50`."""
    devnet = load(root)
    variables = env_vars(devnet, peer_named(devnet, peer) if peer else None)
    if json_out:
        emit(variables)
        return
    print(export_line(variables))
