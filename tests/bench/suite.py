"""The whole benchmark set in one command, one table (`make bench`), or one JSON object (`--json`).

    python -m tests.bench.suite [--json] [--only devnet scaling ...] [--quick]

Sections, in order:
- foundation: Ed25519 sign, and verify with both backends (CPU time), codec, one durable write;
- settlement: the payment protocol in one process (no sockets), CPU per payment;
- devnet: a fresh 5-peer devnet (N=4, W=3) in a temporary directory, at full load
  (`devnet bench --payments 4000 --accounts 250`) and at half of the throughput it reached, with
  CPU per payment from /proc for the peers and for the client, the fraction of the signature bound,
  latency to certified; then HTTP vs the binary protocol at the same concurrency; then what the
  devnet costs idle after all of that; then the same half load on a fresh devnet without fsync
  (what the tail owes to the disk);
- scaling: CPU per payment on 5, 10 and 20 peers (in one process);
- idle: anti-entropy's idle cost with 1,000 vs 100,000 accounts held (simulated time).

The machine is usually shared: CPU time per payment is the steadier figure, and each devnet row
says how busy the whole machine was while it ran.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from devnet import layout, processes, sigcost
from devnet.bench import Bench, BenchConfig, BenchReport
from devnet.cpustat import CpuMeter
from devnet.layout import Devnet
from tests.bench import idle, scaling
from tests.bench.foundation import verify_after_idle, verify_backends

SECTIONS = ("foundation", "settlement", "devnet", "scaling", "idle")
Rows = list[tuple[str, str, str]]


def _log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


# ---- sections --------------------------------------------------------------------------------------


def foundation(quick: bool) -> dict[str, Any]:
    repeats = 3 if quick else 5
    cost = sigcost.measure(repeats=repeats, n=1000)
    backends = verify_backends(repeats)
    from crypto.keys import SigningKey
    from crypto.messages import Certificate, Order, Vote

    net = os.urandom(32)
    keys = [SigningKey.generate() for _ in range(3)]
    order = Order.create(keys[0], net, os.urandom(32), 12_345, 7, "rent")
    cert = Certificate(order, tuple(Vote.create(k, net, order) for k in keys))
    raw = cert.encode()
    return {
        "sign_us": cost.sign_us,
        "verify_us": cost.verify_us,
        "verify_cryptography_us": backends["cryptography"],
        "verify_libsodium_us": backends["libsodium"],
        "verify_after_idle_us": {f"{gap:g} ms": us for gap, us in verify_after_idle().items()},
        "decode_certificate_us": sigcost.median_us(lambda: Certificate.decode(raw), 2000, repeats),
        "encode_certificate_us": sigcost.median_us(cert.encode, 2000, repeats),
    }


def settlement(quick: bool) -> dict[str, Any]:
    rows = scaling.run([5], 300 if quick else 800, 32)
    return {"payments_per_second": rows[0].payments_per_second, "cpu_us": rows[0].cpu_us,
            "vote_checks": rows[0].vote_checks, "messages": rows[0].messages}


def _start(root: Path, *, fsync: bool = True) -> Devnet:
    devnet = layout.create(root, peers=5, wallets=10, replication=4, quorum=3, fsync=fsync)
    for entry in devnet.peers:
        processes.start_peer(devnet, entry)
    processes.wait_converged(devnet, timeout=90)
    return devnet


def _stop(devnet: Devnet) -> None:
    for entry in devnet.peers:
        processes.stop_peer(devnet, entry, timeout=15)


def _bench(devnet: Devnet, config: BenchConfig) -> BenchReport:
    return trio.run(Bench(devnet, config).run)


def _summary(report: BenchReport) -> dict[str, Any]:
    return {"offered": report.offered, "payments": report.payments, "settled": report.settled,
            "throughput": report.throughput, "certified_p50_ms": report.certified_ms["p50"],
            "certified_p99_ms": report.certified_ms["p99"], "settled_p99_ms": report.settled_ms["p99"],
            "server_cpu_us": report.server_cpu_us, "client_cpu_us": report.client_cpu_us,
            "fraction_of_bound": report.fraction_of_bound, "bound_per_second": report.bound_per_second,
            "signature_share": report.signature_share, "machine_busy_cores": report.machine_busy_cores,
            "others_cores": report.others_cores, "failures": report.failures}


def _idle_devnet(devnet: Devnet, seconds: float) -> float:
    meter = CpuMeter()
    meter.start([pid for pid in (processes.live_pid(devnet, p) for p in devnet.peers) if pid is not None])
    time.sleep(seconds)
    used, _ = meter.stop()
    return used / seconds / len(devnet.peers) * 100


def devnet_section(quick: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="meshpay-bench-suite-") as tmp:
        _log("devnet: starting 5 peers")
        devnet = _start(Path(tmp) / "devnet")
        try:
            out["idle_fresh_pct_per_peer"] = _idle_devnet(devnet, 10.0)
            full_payments, full_accounts = (1500, 150) if quick else (4000, 250)
            _log(f"devnet: full load ({full_payments} payments, {full_accounts} accounts)")
            full = _bench(devnet, BenchConfig(accounts=full_accounts, payments=full_payments))
            out["full"] = _summary(full)
            rate = max(5.0, full.throughput / 2)
            _log(f"devnet: half load ({rate:.0f}/s)")
            half_load = BenchConfig(accounts=100, payments=max(500, int(rate * (10 if quick else 25))), rate=rate)
            half = _bench(devnet, half_load)
            out["half"] = _summary(half)
            http_payments = 600 if quick else 1500
            for via in ("binary", "http"):
                _log(f"devnet: {via} at concurrency 100")
                report = _bench(devnet, BenchConfig(accounts=100, payments=http_payments, via=via))
                out[via] = _summary(report)
            out["http_over_binary"] = out["http"]["throughput"] / out["binary"]["throughput"]
            many = 1000
            _log(f"devnet: http with {many} accounts at once (about {many // 5} requests waiting per peer)")
            crowd = _bench(devnet, BenchConfig(accounts=many, payments=2 * many if quick else 3 * many, via="http"))
            out["http_crowd"] = _summary(crowd)
            _log("devnet: idle after the loads")
            out["idle_after_pct_per_peer"] = _idle_devnet(devnet, 20.0)
        finally:
            _stop(devnet)
        # The same half load on a fresh devnet that does not sync its write-ahead logs (`devnet up
        # --no-fsync`): what the tail owes to the disk's sync latency rather than to CPU.
        _log(f"devnet without fsync: half load ({rate:.0f}/s)")
        devnet = _start(Path(tmp) / "devnet-no-fsync", fsync=False)
        try:
            out["half_no_fsync"] = _summary(_bench(devnet, half_load))
        finally:
            _stop(devnet)
    return out


def scaling_section(quick: bool) -> dict[str, Any]:
    rows = scaling.run([5, 10, 20], 300 if quick else 600, 16)
    return {"rows": [r.__dict__ for r in rows]}


def idle_section(quick: bool) -> dict[str, Any]:
    rows = idle.run([1_000, 20_000 if quick else 100_000], 60.0)
    return {"rows": [r.__dict__ for r in rows]}


RUNNERS: dict[str, Callable[[bool], dict[str, Any]]] = {
    "foundation": foundation, "settlement": settlement, "devnet": devnet_section,
    "scaling": scaling_section, "idle": idle_section,
}


# ---- the table -------------------------------------------------------------------------------------


def _devnet_rows(name: str, d: dict[str, Any]) -> Rows:
    busy = d["machine_busy_cores"]
    return [
        (name, "throughput (settled/s) / fraction of signature bound",
         f"{d['throughput']:.1f} / {d['fraction_of_bound']:.1%} of {d['bound_per_second']:.0f}"),
        (name, "CPU per payment: peers / client (us)",
         f"{d['server_cpu_us']:,.0f} / {d['client_cpu_us']:,.0f} (signatures {d['signature_share']:.0%} of peers')"),
        (name, "latency to certified p50 / p99 (ms)", f"{d['certified_p50_ms']:.1f} / {d['certified_p99_ms']:.1f}"),
        (name, "machine busy while it ran (cores) / by others",
         "?" if busy is None else f"{busy:.2f} / {d['others_cores']:.2f}"),
    ]


def table(results: dict[str, Any]) -> Rows:
    rows: Rows = []
    f = results.get("foundation")
    if f:
        rows += [("foundation", "Ed25519 sign, CPU (us)", f"{f['sign_us']:.1f}"),
                 ("foundation", "Ed25519 verify libsodium / cryptography (us)",
                  f"{f['verify_libsodium_us']:.1f} / {f['verify_cryptography_us']:.1f} "
                  f"({f['verify_cryptography_us'] / f['verify_libsodium_us']:.2f}x)"),
                 ("foundation", "verify after sleeping 0 / 2 / 10 ms, CPU (us)",
                  " / ".join(f"{us:.1f}" for us in f["verify_after_idle_us"].values())),
                 ("foundation", "certificate decode / encode (us)",
                  f"{f['decode_certificate_us']:.1f} / {f['encode_certificate_us']:.1f}")]
    s = results.get("settlement")
    if s:
        rows += [("settlement", "in-process, 5 peers: payments/s, CPU per payment",
                  f"{s['payments_per_second']:.0f}/s, {s['cpu_us']:,.0f} us"),
                 ("settlement", "vote checks / messages per payment", f"{s['vote_checks']:.1f} / {s['messages']:.1f}")]
    d = results.get("devnet")
    if d:
        rows.append(("devnet", "idle fresh, CPU per peer", f"{d['idle_fresh_pct_per_peer']:.2f}% of a core"))
        rows += _devnet_rows("devnet full", d["full"])
        rows += _devnet_rows("devnet half", d["half"])
        if "half_no_fsync" in d:
            rows += _devnet_rows("half, no fsync", d["half_no_fsync"])
        rows.append(("http vs binary", "throughput at concurrency 100 (settled/s)",
                     f"http {d['http']['throughput']:.1f} / binary {d['binary']['throughput']:.1f} "
                     f"= {d['http_over_binary']:.2f}"))
        rows.append(("http vs binary", "peers' CPU per payment http / binary (us)",
                     f"{d['http']['server_cpu_us']:,.0f} / {d['binary']['server_cpu_us']:,.0f}"))
        c = d["http_crowd"]
        rows.append(("http crowd", "1000 accounts at once: settled/s, failures",
                     f"{c['throughput']:.1f}, {sum(c['failures'].values()) if c['failures'] else 0}"))
        rows.append(("devnet", "idle after the loads, CPU per peer", f"{d['idle_after_pct_per_peer']:.2f}% of a core"))
    sc = results.get("scaling")
    if sc:
        for r in sc["rows"]:
            rows.append(("scaling", f"{r['peers']} peers: CPU per payment (minus idle), vs 5 peers",
                         f"{r['payment_cpu_us']:,.0f} us, {r['ratio']:.2f}x (vote checks {r['vote_checks']:.1f})"))
            rows.append(("scaling", f"{r['peers']} peers: owners applying, CPU per applying owner",
                         f"{r['owners_applying']:.2f}, {r['cpu_per_owner_us']:,.0f} us, {r['owner_ratio']:.2f}x"))
    i = results.get("idle")
    if i:
        for r in i["rows"]:
            rows.append(("idle sim", f"{r['accounts']:,} accounts: CPU per peer, AE replies",
                         f"{r['idle_pct_per_peer']:.3f}% of a core, {r['ae_entries_sent']}"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="one JSON object instead of the table")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, help="run only these sections")
    parser.add_argument("--quick", action="store_true", help="smaller runs (a smoke test, not a measurement)")
    args = parser.parse_args()
    started = time.monotonic()
    load_before = os.getloadavg()
    results: dict[str, Any] = {}
    for name in args.only or SECTIONS:
        _log(f"{name}…")
        results[name] = RUNNERS[name](args.quick)
    results["meta"] = {"seconds": time.monotonic() - started, "load_average_before": load_before,
                       "load_average_after": os.getloadavg(), "cpus": os.cpu_count(), "pid": os.getpid()}
    if args.json:
        print(json.dumps(results, default=str))
        return
    meta = results["meta"]
    print(f"meshpay benchmarks: {meta['seconds'] / 60:.1f} min on {meta['cpus']} CPUs, load average "
          f"{meta['load_average_before'][0]:.1f} before / {meta['load_average_after'][0]:.1f} after")
    rows = table(results)
    width = max(len(r[1]) for r in rows)
    for section, metric, value in rows:
        print(f"  {section:<15} {metric:<{width}}  {value}")
    if "scaling" in results:
        ratios = [r["ratio"] for r in results["scaling"]["rows"]]
        print(f"  scaling spread (max/min CPU per payment): {max(ratios) / min(ratios):.2f}x; "
              f"median {statistics.median(ratios):.2f}x")


if __name__ == "__main__":
    main()
