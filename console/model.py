"""What the console concludes from what the peers said: pure functions, no I/O, no clock.

- `health`: every peer's state as each other peer sees it (the matrix), what the console concludes
  from that and from whether it can reach the peer itself, and where the views disagree.
- `rate`, `quantile`, `traffic`: payments/s, latency percentiles, queue depths and bytes/s from
  successive `/metrics` samples (counter differences, so they describe an interval, not all time).
- `frozen_at`: whether an account's owners hold locks that no order can turn into a certificate.
- `supply`: the auditor's money checks over the owners' account states.
- `alerts`: the list the Alerts page shows, worst first.
"""

from __future__ import annotations

import bisect
import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

# ---- health -----------------------------------------------------------------------------------------
STATES = ("alive", "suspect", "dead", "left")
LETTER = {"alive": "a", "suspect": "s", "dead": "d", "left": "l", None: "?"}
# what the console concludes about a peer, worst first
VERDICTS = ("down", "suspect", "unreachable", "dead", "left", "alive")


@dataclass(frozen=True)
class Observation:
    """One peer as the console sees it: can it reach the API, and that peer's view of the others."""

    key: str  # the peer's id (hex) when known, else its API URL
    name: str
    reachable: bool | None  # None: the console has no API address for it
    views: Mapping[str, str] | None  # subject key -> state, from this peer's /v1/peers (None: no list)


@dataclass(frozen=True)
class HealthRow:
    key: str
    name: str
    verdict: str
    views: str  # one letter per observer (a/s/d/l, ? unknown, - itself), in `Health.observers` order
    counts: dict[str, int]
    disagree: bool
    why: str


@dataclass(frozen=True)
class Health:
    observers: list[str]  # keys of the peers whose views make the columns
    rows: list[HealthRow]

    def counts(self) -> dict[str, int]:
        return dict(Counter(r.verdict for r in self.rows))


def health(observations: Sequence[Observation]) -> Health:
    """The matrix and a verdict per peer. A peer the console cannot reach is `down`; one it reaches
    but that some peers report suspect or dead is `suspect`; one the console has no address for is
    judged by the majority of the others' views."""
    observers = [o for o in observations if o.reachable and o.views is not None]
    subjects: dict[str, str] = {o.key: o.name for o in observations}
    for o in observers:
        for key in o.views or {}:
            subjects.setdefault(key, key[:12])
    by_key = {o.key: o for o in observations}
    rows = []
    for key, name in subjects.items():
        letters = []
        counts: Counter[str] = Counter()
        for o in observers:
            if o.key == key:
                letters.append("-")
                continue
            state = (o.views or {}).get(key)
            letters.append(LETTER.get(state, "?"))
            counts[state if state in STATES else "unknown"] += 1
        seen = {s for s in STATES if counts[s]}
        me = by_key.get(key)
        reach = None if me is None else me.reachable
        verdict, why = _verdict(reach, counts)
        disagree = len(seen) > 1 or (reach is False and counts["alive"] > 0) or \
            (reach is True and bool(counts["dead"] + counts["suspect"]))
        rows.append(HealthRow(key, name, verdict, "".join(letters), {s: counts[s] for s in (*STATES, "unknown")},
                              disagree, why))
    rows.sort(key=lambda r: (VERDICTS.index(r.verdict), not r.disagree, r.name))
    return Health([o.key for o in observers], rows)


def _verdict(reach: bool | None, counts: Counter[str]) -> tuple[str, str]:
    others = sum(counts[s] for s in STATES)
    bad = counts["dead"] + counts["suspect"]
    if reach is False:
        if counts["alive"]:
            return "down", f"no answer from its API, yet {counts['alive']} of {others} peers see it alive"
        return "down", "no answer from its API"
    if reach is True:
        if bad:
            return "suspect", f"{bad} of {others} peers see it suspect or dead"
        return "alive", "answers; seen alive by every peer that reports"
    if not others:
        return "unreachable", "no API address known and no peer reports it"
    top = max(STATES, key=lambda s: (counts[s], -STATES.index(s)))
    return top, f"no API address known; {counts[top]} of {others} peers see it {top}"


# ---- metrics: rates, quantiles ----------------------------------------------------------------------
def increase(before: float, after: float) -> float:
    """A counter's increase between two samples; a smaller value means the peer restarted."""
    return after - before if after >= before else after


def quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """The q-quantile of a histogram (cumulative counts by upper bound, +Inf included), interpolating
    linearly inside the bucket as Prometheus's `histogram_quantile` does. None without observations."""
    bounds = sorted(buckets)
    if not bounds:
        return None
    total = buckets[bounds[-1]]
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for le in bounds:
        count = buckets[le]
        if count >= rank:
            if math.isinf(le):
                return lower  # beyond the last finite bound: its value is all that is known
            if count == below:
                return le
            return lower + (le - lower) * (rank - below) / (count - below)
        lower, below = le, count
    return bounds[-1]


@dataclass(frozen=True)
class Sample:
    """The parts of one `/metrics` scrape the console uses (see console/peerapi.py)."""

    payments: Mapping[str, float]  # outcome -> count
    latency: Mapping[str, Mapping[float, float]]  # status -> le -> cumulative count
    queues: Mapping[str, float]
    bytes_in: float
    bytes_out: float
    http: Mapping[str, float]  # status code -> requests, over all routes


Series = list[tuple[float, Sample]]  # (time, sample), oldest first


def _at(series: Series, t: float) -> int:
    """Index of the latest sample taken at or before t (-1 if none)."""
    return bisect.bisect_right(series, t, key=lambda s: s[0]) - 1


def window_delta(series: Series, start: float, end: float) -> tuple[float, Sample, Sample] | None:
    """(seconds, first, last) samples spanning [start, end] as closely as the series allows."""
    i, j = _at(series, start), _at(series, end)
    if j < 0:
        return None
    i = max(i, 0)
    if j <= i:
        return None
    return series[j][0] - series[i][0], series[i][1], series[j][1]


@dataclass
class Rates:
    """Per-second rates and latency over one window, for one peer or for all together."""

    payments: dict[str, float] = field(default_factory=dict)  # certified, settled, failed
    failures: dict[str, float] = field(default_factory=dict)  # failed_<code> -> per second
    latency: dict[str, Counter[float]] = field(default_factory=dict)  # status -> bucket increases
    bytes_in: float = 0.0
    bytes_out: float = 0.0
    overload: float = 0.0  # HTTP 429 + 503 answers per second
    http: float = 0.0  # all HTTP answers per second

    def add(self, other: Rates) -> None:
        for name, value in other.payments.items():
            self.payments[name] = self.payments.get(name, 0.0) + value
        for name, value in other.failures.items():
            self.failures[name] = self.failures.get(name, 0.0) + value
        for status, buckets in other.latency.items():
            self.latency.setdefault(status, Counter()).update(buckets)
        self.bytes_in += other.bytes_in
        self.bytes_out += other.bytes_out
        self.overload += other.overload
        self.http += other.http

    def percentile(self, status: str, q: float) -> float | None:
        return quantile(q, self.latency.get(status, {}))


def rates(seconds: float, first: Sample, last: Sample) -> Rates:
    out = Rates()
    per = 1.0 / seconds
    for outcome in set(first.payments) | set(last.payments):
        delta = increase(first.payments.get(outcome, 0.0), last.payments.get(outcome, 0.0)) * per
        if outcome.startswith("failed"):
            out.failures[outcome] = delta
            out.payments["failed"] = out.payments.get("failed", 0.0) + delta
        else:
            out.payments[outcome] = delta
    for name in ("certified", "settled", "failed"):
        out.payments.setdefault(name, 0.0)
    for status, buckets in last.latency.items():
        before = first.latency.get(status, {})
        restarted = any(buckets.get(le, 0.0) < count for le, count in before.items())
        out.latency[status] = Counter({le: count - (0.0 if restarted else before.get(le, 0.0))
                                       for le, count in buckets.items()})
    out.bytes_in = increase(first.bytes_in, last.bytes_in) * per
    out.bytes_out = increase(first.bytes_out, last.bytes_out) * per
    codes = set(first.http) | set(last.http)
    changes = {c: increase(first.http.get(c, 0.0), last.http.get(c, 0.0)) * per for c in codes}
    out.overload = changes.get("429", 0.0) + changes.get("503", 0.0)
    out.http = sum(changes.values())
    return out


def peer_rates(series: Series, now: float, window: float) -> Rates | None:
    span = window_delta(series, now - window, now)
    return None if span is None else rates(*span)


def traffic(all_series: Mapping[str, Series], now: float, *, minutes: float = 5.0, step: float = 2.0,
            smooth: float = 6.0) -> dict[str, object]:
    """Time series for the Traffic page over the last `minutes`, summed over `all_series`.

    Each point looks back `smooth` seconds (rates and latency), so single scrapes do not make spikes.
    """
    points = int(minutes * 60 / step)
    times = [now - (points - 1 - k) * step for k in range(points)]
    out: dict[str, list[float | None]] = {k: [] for k in (
        "certified", "settled", "failed", "certified_p50", "certified_p99", "settled_p50", "settled_p99",
        "bytes_in", "bytes_out", "overload", "group_commit", "gateway_in_flight", "inbound_messages")}
    for t in times:
        total = Rates()
        seen = False
        queues: Counter[str] = Counter()
        for series in all_series.values():
            span = window_delta(series, t - smooth, t)
            if span is not None:
                total.add(rates(*span))
                seen = True
            i = _at(series, t)
            if i >= 0 and t - series[i][0] <= 3 * step:
                queues.update(series[i][1].queues)
        for name in ("certified", "settled", "failed"):
            out[name].append(total.payments.get(name) if seen else None)
        for status in ("certified", "settled"):
            for q, label in ((0.5, "p50"), (0.99, "p99")):
                value = total.percentile(status, q)
                out[f"{status}_{label}"].append(None if value is None else value * 1000.0)
        out["bytes_in"].append(total.bytes_in if seen else None)
        out["bytes_out"].append(total.bytes_out if seen else None)
        out["overload"].append(total.overload if seen else None)
        for name in ("group_commit", "gateway_in_flight", "inbound_messages"):
            out[name].append(queues.get(name) if seen or queues else None)
    return {"t": times, **out}


# ---- accounts ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class OwnerState:
    """One owner's answer about an account (None fields: it did not answer)."""

    peer: str
    balance: int | None
    next_seq: int | None
    credits: int | None
    pending: tuple[int, str] | None  # (seq, payment id) locked at next_seq


def frozen_at(views: Sequence[OwnerState], quorum: int) -> int | None:
    """The seq at which an account is provably stuck, else None.

    At the highest next_seq any owner reports, each owner either holds a lock for one order or is
    free. An order can still be certified only if the owners locked to it, plus the free and the
    silent owners (who might vote for it), reach the quorum. When no order can, nothing will ever
    move that seq: the sender signed two orders for it (FastPay's equivocation).
    """
    answered = [v for v in views if v.next_seq is not None]
    if not answered:
        return None
    seq = max(v.next_seq for v in answered)  # type: ignore[type-var]
    locks: Counter[str] = Counter()
    free = len(views) - len(answered)  # silent owners might vote for anything
    for v in answered:
        if v.next_seq == seq and v.pending is not None and v.pending[0] == seq:
            locks[v.pending[1]] += 1
        elif v.next_seq == seq:
            free += 1
        else:
            free += 1  # behind: it may still catch up and vote
    if len(locks) < 2:
        return None  # one order (or none) holds locks: it can still gather a quorum
    best = max(locks.values())
    return seq if best + free < quorum else None


def disagreement(views: Sequence[OwnerState]) -> bool:
    states = {(v.balance, v.next_seq, v.credits) for v in views if v.balance is not None}
    return len(states) > 1


# ---- supply ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SupplyCheck:
    total: int
    genesis: int
    accounts: int
    disagreeing: list[str]  # account hex
    unowned: int  # accounts with no answering owner

    @property
    def balanced(self) -> bool:
        return self.total == self.genesis


def supply(states: Mapping[str, Mapping[str, tuple]], owners: Callable[[bytes], Iterable[bytes]],
           genesis_total: int, genesis_accounts: Iterable[str]) -> SupplyCheck:
    """`states`: peer id hex -> account hex -> (balance, next_seq, credits, digest) from every peer
    that answered. Each account counts with the state most of its answering owners report."""
    accounts = set(genesis_accounts)
    for per_peer in states.values():
        accounts.update(per_peer)
    total, unowned = 0, 0
    disagreeing = []
    for account in sorted(accounts):
        views = [states[o.hex()].get(account) for o in owners(bytes.fromhex(account)) if o.hex() in states]
        if not views:
            unowned += 1
            continue
        tally = Counter(views)
        if len(tally) > 1:
            disagreeing.append(account)
        agreed, _ = max(tally.items(), key=lambda kv: (kv[1], kv[0] is not None))
        total += agreed[0] if agreed is not None else 0
    return SupplyCheck(total, genesis_total, len(accounts), disagreeing, unowned)


# ---- alerts ------------------------------------------------------------------------------------------
SEVERITIES = ("critical", "warning", "info")


@dataclass(frozen=True)
class Alert:
    severity: str
    kind: str
    subject: str
    message: str
    link: str | None = None

    def key(self) -> tuple[str, str]:
        return (self.kind, self.subject)


def sort_alerts(alerts: Iterable[Alert]) -> list[Alert]:
    return sorted(alerts, key=lambda a: (SEVERITIES.index(a.severity), a.kind, a.subject))
