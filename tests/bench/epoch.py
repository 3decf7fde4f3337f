"""Epoch changes on a real devnet under load: how long until the new epoch serves, what moved, and
what payments felt.

    python -m tests.bench.epoch [--peers 5] [--accounts 2000] [--rate 100] [--seconds 8] [--no-fsync]

A devnet of `--peers` real `peer run` processes starts with `--accounts` extra funded accounts in its
genesis (state to move). One peer is started as an observer; then, while a load at `--rate` payments
per second runs (open loop, through the binary client protocol, as `devnet bench --rate`), it is
added to the committee (`devnet.epochs.change_committee`: propose, approve on every member, wait for
every handoff) after `--seconds` of load, and the load goes on for `--seconds` after the new epoch
serves. The same is then done to remove it again. For each change it prints:

- the time from the proposal to the certificate (every peer in the new epoch) and to the new epoch
  serving (every new-committee peer's handoff complete);
- accounts moved (the new owners' handoff counters) and (account, owner) placements moved, against
  the ideal share k/n of consistent hashing, and the bytes and certificates the handoffs received;
- payment latency to `certified` (p50/p99) of the payments submitted during the change, against
  those submitted before the proposal and after the new epoch served (same run, same load).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import tempfile
import threading
import time
from pathlib import Path

import httpx
import trio

from crypto.keys import SigningKey
from devnet import epochs, layout, processes
from devnet.audit import configured_tokens
from devnet.bench import Bench, BenchConfig, Ticket
from devnet.layout import Devnet
from peer.committee import Committee
from peer.epoch_chain import Chain
from tests.bench.common import percentile


class _Recording(Bench):
    """The devnet bench, keeping each payment's times and running `during` once the load starts."""

    def __init__(self, devnet: Devnet, config: BenchConfig, during=None) -> None:
        super().__init__(devnet, config)
        self.during = during
        self.tickets: list[Ticket] = []
        self.result = None

    async def _load(self, orders):
        async with trio.open_nursery() as nursery:
            if self.during is not None:
                nursery.start_soon(self._change)
            tickets, seconds = await super()._load(orders)
        self.tickets = tickets
        return tickets, seconds

    async def _change(self) -> None:
        self.result = await trio.to_thread.run_sync(self.during)


def _latency(tickets: list[Ticket], start: float = float("-inf"), end: float = float("inf")) -> dict:
    chosen = [t for t in tickets if start <= t.submitted < end]
    ms = [(t.certified - t.submitted) * 1000 for t in chosen if t.certified is not None]
    failed = sum(1 for t in chosen if t.certified is None)
    return {"payments": len(chosen), "failed": failed, "p50_ms": round(percentile(ms, 50), 1),
            "p99_ms": round(percentile(ms, 99), 1)}


def _placements_moved(devnet: Devnet, old: Committee, new: Committee) -> tuple[int, int, int]:
    """(accounts whose owner set changed, (account, owner) placements moved, all placements)."""
    accounts: set[bytes] = set()
    tokens = configured_tokens(devnet)
    with httpx.Client(timeout=30) as client:
        for entry in epochs.running(devnet):
            after = None
            headers = {"Authorization": f"Bearer {tokens[entry.name]}"} if entry.name in tokens else {}
            while True:
                params = {"limit": "5000", **({"after": after} if after else {})}
                doc = client.get(f"{entry.api}/v1/audit/accounts", params=params, headers=headers).json()
                accounts.update(bytes.fromhex(r["account"]) for r in doc["accounts"])
                after = doc["next_after"]
                if after is None:
                    break
    changed = moved = 0
    for account in accounts:
        gained = set(new.owners(account)) - set(old.owners(account))
        changed += bool(gained)
        moved += len(gained)
    return changed, moved, len(accounts) * new.replication


def _measured_change(devnet: Devnet, args: argparse.Namespace, change) -> dict:
    chain_before: Chain = epochs.verified_chain(devnet)
    marks: dict[str, float] = {}

    stop = threading.Event()

    def during() -> epochs.ChangeReport:
        time.sleep(args.seconds)  # load before the proposal, in the same run
        report = change()
        # The windows as the change measured them (the bench's ticket times are perf_counter's).
        offset = time.perf_counter() - time.time()
        marks["proposed"] = report.proposed_at + offset
        marks["serving"] = marks["proposed"] + report.seconds_to_serving
        time.sleep(args.seconds)  # and load after the new epoch serves
        stop.set()
        return report

    bench = _Recording(devnet, _config(args, 2 * args.seconds + args.change_budget, stop), during)
    trio.run(bench.run)
    report: epochs.ChangeReport = bench.result
    if "serving" not in marks:
        raise SystemExit("the change did not finish within the load; raise --change-budget")
    chain_after = epochs.verified_chain(devnet)
    changed, moved, placements = _placements_moved(devnet, chain_before.current, chain_after.current)
    n_old, n_new = len(chain_before.current.members), len(chain_after.current.members)
    ideal = abs(n_new - n_old) / max(n_old, n_new)
    return {
        "change": f"{n_old} -> {n_new} peers (epoch {report.epoch})",
        "to_certificate_s": report.seconds_to_certificate, "to_serving_s": report.seconds_to_serving,
        "accounts_moved": report.accounts_moved, "accounts_with_new_owners": changed,
        "placements_moved": moved, "placements": placements,
        "fraction_moved": round(moved / placements, 4) if placements else None, "ideal_fraction": round(ideal, 4),
        "vs_ideal": round(moved / placements / ideal, 3) if placements and ideal else None,
        "bytes_received": report.bytes_moved, "certs_received": report.certs_moved,
        "bytes_per_account_moved": round(report.bytes_moved / report.accounts_moved) if report.accounts_moved else None,
        "latency_before": _latency(bench.tickets, end=marks["proposed"]),
        "latency_during": _latency(bench.tickets, marks["proposed"], marks["serving"]),
        "latency_after": _latency(bench.tickets, start=marks["serving"]),
    }


def _config(args: argparse.Namespace, seconds: float, stop: threading.Event) -> BenchConfig:
    return BenchConfig(accounts=args.load_accounts, payments=None, duration=seconds, rate=args.rate, stop=stop)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peers", type=int, default=5)
    parser.add_argument("--accounts", type=int, default=2000, help="extra funded accounts in the genesis")
    parser.add_argument("--load-accounts", type=int, default=40, help="accounts the load sends from")
    parser.add_argument("--rate", type=float, default=40.0, help="offered payments per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="load before and after each change")
    parser.add_argument("--change-budget", type=float, default=60.0, help="most seconds a change may take")
    parser.add_argument("--no-fsync", dest="fsync", action="store_false")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="meshpay-bench-epoch-") as tmp:
        extra = [secrets.token_bytes(32) for _ in range(args.accounts)]
        devnet = layout.create(Path(tmp) / "net", peers=args.peers, wallets=10, fsync=args.fsync,
                               extra_accounts=[SigningKey.from_seed(k).public for k in extra], extra_balance=100)
        try:
            for entry in devnet.peers:
                processes.start_peer(devnet, entry)
            processes.wait_converged(devnet, timeout=60)
            print(f"devnet of {args.peers} peers, {args.accounts} extra genesis accounts, load {args.rate:g}/s "
                  f"from {args.load_accounts} accounts, fsync {'on' if args.fsync else 'off'}; load average "
                  f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
            newcomer = epochs.create_peer(devnet)
            joined = epochs.start_observer(devnet, newcomer, timeout=60)
            print(f"{newcomer.name} joined as an observer in {joined:.1f} s")
            grow = _measured_change(devnet, args, lambda: epochs.change_committee(
                devnet, add=[newcomer], remove=[], note="bench-epoch add", timeout=args.change_budget))
            _print(grow)
            shrink = _measured_change(devnet, args, lambda: epochs.change_committee(
                devnet, add=[], remove=[newcomer], note="bench-epoch remove", timeout=args.change_budget))
            _print(shrink)
        finally:
            for entry in devnet.peers:
                with contextlib.suppress(OSError):
                    processes.stop_peer(devnet, entry, timeout=10)


def _print(doc: dict) -> None:
    print(f"\n{doc['change']}")
    print(f"  proposal -> certificate {doc['to_certificate_s']:.2f} s, -> new epoch serving {doc['to_serving_s']:.2f} s")
    print(f"  accounts moved {doc['accounts_moved']} (accounts with a new owner {doc['accounts_with_new_owners']}); "
          f"placements moved {doc['placements_moved']}/{doc['placements']} = {doc['fraction_moved']} vs ideal "
          f"{doc['ideal_fraction']} ({doc['vs_ideal']}x)")
    print(f"  handoff received {doc['bytes_received']:,} bytes, {doc['certs_received']} certificates "
          f"({doc['bytes_per_account_moved']} bytes per account moved)")
    for label in ("before", "during", "after"):
        lat = doc[f"latency_{label}"]
        print(f"  latency to certified {label:>6}: p50 {lat['p50_ms']} ms, p99 {lat['p99_ms']} ms "
              f"({lat['payments']} payments, {lat['failed']} not certified)")


if __name__ == "__main__":
    main()
