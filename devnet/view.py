"""The devnet's live status view (rich): peers alive/suspect/dead, payments per second, latency.

Each refresh reads every peer's `/v1/status` and `/metrics`; rates and latency percentiles come from
the differences between two refreshes (counters and histogram buckets), so they describe the last
interval, not the whole run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Group
from rich.table import Table
from rich.text import Text

from devnet.layout import Devnet
from devnet.processes import is_running


@dataclass
class PeerSample:
    status: dict | None
    settled: float
    buckets: dict[float, float]  # le -> cumulative count (certified latency)


def _sample(client: httpx.Client, api: str) -> PeerSample:
    try:
        status = client.get(f"{api}/v1/status").json()
        text = client.get(f"{api}/metrics").text
    except (httpx.HTTPError, ValueError):
        return PeerSample(None, 0.0, {})
    settled = 0.0
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "meshpay_payments_total" and sample.labels.get("outcome") == "settled":
                settled = sample.value
            elif sample.name == "meshpay_payment_latency_seconds_bucket" and sample.labels.get("status") == "certified":
                buckets[float(sample.labels["le"])] = sample.value
    return PeerSample(status, settled, buckets)


def _quantile(buckets: dict[float, float], q: float) -> float | None:
    """Upper bound of the bucket holding the q-quantile (None without observations)."""
    if not buckets:
        return None
    total = max(buckets.values())
    if total <= 0:
        return None
    for le in sorted(buckets):
        if buckets[le] >= q * total:
            return le
    return None


class LiveView:
    def __init__(self, devnet: Devnet) -> None:
        self.devnet = devnet
        self.client = httpx.Client(timeout=1.0)
        self._last: tuple[float, dict[str, PeerSample]] | None = None

    def close(self) -> None:
        self.client.close()

    def render(self) -> Group:
        now = time.monotonic()
        samples = {p.name: _sample(self.client, p.api) if is_running(p, self.devnet) else PeerSample(None, 0, {})
                   for p in self.devnet.peers}
        table = Table(title=f"meshpay devnet {self.devnet.root}  (Ctrl-C stops it)", expand=False)
        for column in ("peer", "pid", "process", "alive", "suspect", "dead", "ring share", "in flight", "settled"):
            table.add_column(column, justify="right" if column not in ("peer", "process") else "left")
        for p in self.devnet.peers:
            s = samples[p.name].status
            running = is_running(p, self.devnet)
            if s is None:
                table.add_row(p.name, str(p.pid or "-"), "[red]down[/red]" if not running else "[yellow]no answer[/yellow]",
                              "-", "-", "-", "-", "-", "-")
                continue
            m = s["members"]
            table.add_row(p.name, str(p.pid), "[green]running[/green]", str(m["alive"]), str(m["suspect"]),
                          str(m["dead"] + m["left"]), f"{s['ring_share']:.0%}", str(s["queues"]["gateway_in_flight"]),
                          str(int(samples[p.name].settled)))
        rate, p50, p99 = 0.0, None, None
        if self._last is not None:
            then, old = self._last
            dt = max(1e-6, now - then)
            rate = sum(max(0.0, samples[n].settled - old[n].settled) for n in samples if n in old) / dt
            merged: dict[float, float] = {}
            for n, sample in samples.items():
                before = old.get(n)
                for le, count in sample.buckets.items():
                    prior = before.buckets.get(le, 0.0) if before else 0.0
                    merged[le] = merged.get(le, 0.0) + max(0.0, count - prior)
            p50, p99 = _quantile(merged, 0.5), _quantile(merged, 0.99)
        self._last = (now, samples)
        summary = Text(f"payments settled/s {rate:7.1f}    latency to certified "
                       f"p50 {'≤' + format(p50 * 1000, '.0f') + ' ms' if p50 else '-'}  "
                       f"p99 {'≤' + format(p99 * 1000, '.0f') + ' ms' if p99 else '-'}")
        return Group(table, summary)
