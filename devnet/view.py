"""The devnet's live status view (rich): peers alive/suspect/dead/left, payments per second, latency.

Each refresh reads every peer's `/v1/status` and `/metrics`. Rates and latency percentiles come from
the differences between refreshes (counters and histogram buckets), summed over a recent window
(`Window`): long enough that one payment made by hand shows its latency for a minute, short enough
to follow a changing load. The view also shows what devnet commands did meanwhile (events.log), so
a peer that went down says why.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Group
from rich.table import Table
from rich.text import Text

from devnet import processes
from devnet.layout import Devnet

RATE_SPAN = 5.0  # seconds of history behind "settled/s"
LATENCY_SPAN = 60.0  # seconds of history behind the latency percentiles


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


def quantile(buckets: dict[float, float], q: float) -> float | None:
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


class Window:
    """Per-refresh increments (settled payments, certified-latency buckets) over recent seconds."""

    def __init__(self, span: float = LATENCY_SPAN) -> None:
        self.span = span
        self.steps: deque[tuple[float, float, dict[float, float]]] = deque()

    def add(self, now: float, settled: float, buckets: dict[float, float]) -> None:
        self.steps.append((now, settled, buckets))
        while self.steps and self.steps[0][0] < now - self.span:
            self.steps.popleft()

    def rate(self, now: float, span: float = RATE_SPAN) -> float:
        recent = [s for s in self.steps if s[0] > now - span]
        return sum(s[1] for s in recent) / span if recent else 0.0

    def latency(self) -> tuple[int, float | None, float | None]:
        """(payments certified in the window, p50, p99) from the summed bucket increments."""
        merged: dict[float, float] = {}
        for _, _, buckets in self.steps:
            for le, count in buckets.items():
                merged[le] = merged.get(le, 0.0) + count
        count = int(max(merged.values())) if merged else 0
        return count, quantile(merged, 0.5), quantile(merged, 0.99)


def _increments(new: dict[str, PeerSample], old: dict[str, PeerSample]) -> tuple[float, dict[float, float]]:
    settled = 0.0
    merged: dict[float, float] = {}
    for name, sample in new.items():
        before = old.get(name)
        if before is None or before.status is None or sample.status is None:
            continue  # a peer (re)appearing: its counters restarted, no increment to take
        settled += max(0.0, sample.settled - before.settled)
        for le, count in sample.buckets.items():
            merged[le] = merged.get(le, 0.0) + max(0.0, count - before.buckets.get(le, 0.0))
    return settled, merged


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"≤{seconds * 1000:.0f} ms"


class LiveView:
    def __init__(self, devnet: Devnet, *, stops_devnet: bool) -> None:
        self.devnet = devnet
        self.stops_devnet = stops_devnet
        self.started = time.time()
        self.client = httpx.Client(timeout=1.0)
        self.window = Window()
        self._last: dict[str, PeerSample] | None = None
        self.live: dict[str, int] = {}

    def close(self) -> None:
        self.client.close()

    def stopped_by(self) -> dict | None:
        """The `devnet down` (or similar) that stopped every peer since the view opened, if any."""
        if self.live:
            return None
        downs = [e for e in self.devnet.events(self.started) if e.get("action") == "down"]
        return downs[-1] if downs else None

    def render(self) -> Group:
        now = time.monotonic()
        processes.reap()  # peers this process started and another command stopped: no zombies
        self.live = processes.running(self.devnet)
        samples = {p.name: _sample(self.client, p.api) if p.name in self.live else PeerSample(None, 0, {})
                   for p in self.devnet.peers}
        hint = ("Ctrl-C stops the devnet" if self.stops_devnet else
                "Ctrl-C leaves the devnet running (`devnet down` stops it)")
        table = Table(title=f"meshpay {self.devnet.name} in {self.devnet.root}", expand=False)
        for column in ("peer", "pid", "process", "alive", "suspect", "dead", "left", "ring share", "in flight",
                       "settled"):
            table.add_column(column, justify="right" if column not in ("peer", "process") else "left")
        for p in self.devnet.peers:
            s = samples[p.name].status
            running = p.name in self.live
            if s is None:
                table.add_row(p.name, str(self.live.get(p.name, "-")),
                              "[yellow]no answer[/yellow]" if running else "[red]down[/red]",
                              *["-"] * 7)
                continue
            m = s["members"]
            table.add_row(p.name, str(self.live[p.name]), "[green]running[/green]", str(m["alive"]),
                          str(m["suspect"]), str(m["dead"]), str(m.get("left", 0)), f"{s['ring_share']:.0%}",
                          str(s["queues"]["gateway_in_flight"]), str(int(samples[p.name].settled)))
        if self._last is not None:
            self.window.add(now, *_increments(samples, self._last))
        self._last = samples
        count, p50, p99 = self.window.latency()
        lines = [Text(f"payments settled/s {self.window.rate(now):7.1f}    latency to certified over the last "
                      f"{LATENCY_SPAN:.0f} s ({count} payments): p50 {_ms(p50)}  p99 {_ms(p99)}"), Text(hint, style="bold")]
        for event in self.devnet.events(self.started)[-3:]:
            stamp = time.strftime("%H:%M:%S", time.localtime(event.get("t", 0)))
            lines.append(Text(f"{stamp} {event.get('text', '')} (`devnet {event.get('action')}`, pid {event.get('pid')})",
                              style="dim"))
        return Group(table, *lines)
