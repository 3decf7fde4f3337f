"""How accurate `devnet slow` is: the delay, jitter, loss and duplication asked for vs measured.

    sudo python -m tests.bench.linkfaults [--count 1000]

Makes a 2-peer devnet's test hosts (two namespaces on a bridge; no peer is started), then for each
setting applies the fault exactly as `devnet slow --between peer0 / peer1` does and measures the link
with devnet/linkprobe.py: UDP datagrams stamped with the shared monotonic clock, so the one-way delay
of each is known (a ping would mix both directions). Prints requested vs measured p1/p50/p99, loss,
duplicates and reordering, and removes everything it made.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from devnet import faults, hosts, layout, linkprobe

SETTINGS = [  # (delay ms, jitter ms, loss, duplicate)
    (0, 0, 0.0, 0.0),
    (10, 0, 0.0, 0.0),
    (50, 10, 0.0, 0.0),
    (50, 10, 0.02, 0.0),
    (100, 20, 0.0, 0.0),
    (0, 0, 0.05, 0.0),
    (0, 0, 0.0, 0.02),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=1000, help="datagrams per setting (2 ms apart)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="linkfaults-") as tmp:
        topo = hosts.plan(["peer0", "peer1"])
        net = layout.create(Path(tmp) / "net", peers=2, wallets=0, replication=2, quorum=2, fsync=False,
                            ports=[hosts.PEER_PORT, hosts.API_PORT] * 2,
                            hosts={**topo.as_dict(), "addresses": [topo.address(0), topo.address(1)]})
        rows = []
        try:
            hosts.ensure(net)
            for delay, jitter, loss, dup in SETTINGS:
                if delay or jitter or loss or dup:
                    faults.slow(net, [["peer0"], ["peer1"]], delay=delay / 1000, jitter=jitter / 1000, loss=loss,
                                duplicate=dup, seed=1)
                measured = linkprobe.measure(topo.namespace("peer0"), topo.namespace("peer1"), topo.address(1),
                                             count=args.count)
                faults.heal(net)
                rows.append({"asked": {"delay_ms": delay, "jitter_ms": jitter, "loss": loss, "duplicate": dup},
                             **measured.as_dict()})
        finally:
            faults.heal(net)
            hosts.teardown(net)
    if args.json:
        print(json.dumps(rows))
        return
    print(f"{'asked':>26} | {'p1 ms':>7} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} | {'loss':>6} {'dups':>5} {'reord':>5}")
    for r in rows:
        a = r["asked"]
        asked = f"{a['delay_ms']}+-{a['jitter_ms']}ms loss {a['loss']:.0%} dup {a['duplicate']:.0%}"
        print(f"{asked:>26} | {r['p1_ms']:7.2f} {r['p50_ms']:7.2f} {r['p99_ms']:7.2f} {r['max_ms']:7.2f} | "
              f"{r['loss']:6.1%} {r['duplicates']:5d} {r['reordered']:5d}")


if __name__ == "__main__":
    main()
