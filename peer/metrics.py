"""Prometheus metrics for one peer (prometheus_client, one registry per peer).

Counters and histograms are fed by payment events as they happen; gauges (queue depths, members
by state, transport bytes) are read from the live objects at scrape time, so they are never stale.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from gossip.transport import TcpTransport
from gossip.wire import STATE_NAMES
from peer.gateway import CERTIFIED, FAILED, SETTLED, PaymentEvent
from peer.node import Node

if TYPE_CHECKING:
    from peer.http_server import HttpServer

LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _Live(Collector):
    def __init__(self, node: Node, transport: TcpTransport | None, http: HttpServer | None = None) -> None:
        self.node = node
        self.transport = transport
        self.http = http

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        node = self.node
        queues = GaugeMetricFamily("meshpay_queue_depth", "Items waiting in a queue", labels=["queue"])
        queues.add_metric(["group_commit"], node.writer.pending)
        queues.add_metric(["gateway_in_flight"], len(node.settlement.gateway.active))
        inbound = node.links.inbound.statistics()
        queues.add_metric(["inbound_messages"], inbound.current_buffer_used)
        yield queues
        members = GaugeMetricFamily("meshpay_members", "Known members by state (self excluded)", labels=["state"])
        counts = dict.fromkeys(STATE_NAMES.values(), 0)
        for m in node.membership.members.values():
            counts[STATE_NAMES[m.state]] += 1
        for state, n in counts.items():
            members.add_metric([state], n)
        yield members
        ledger = CounterMetricFamily("meshpay_settlement", "Owner-side settlement events", labels=["event"])
        for name, value in node.settlement.counters.items():
            ledger.add_metric([name], value)
        yield ledger
        writes = CounterMetricFamily("meshpay_group_commit", "Group-commit writer totals", labels=["what"])
        stats = node.writer.stats
        writes.add_metric(["batches"], stats.batches)
        writes.add_metric(["groups"], stats.groups)
        yield writes
        seconds = CounterMetricFamily("meshpay_group_commit_seconds", "Seconds the group-commit writer spent: "
                                      "from taking a group to its callbacks (round trip), inside the write, "
                                      "and of that syncing the write-ahead log", labels=["what"])
        seconds.add_metric(["round_trip"], stats.write_seconds)
        seconds.add_metric(["write"], stats.disk_seconds)
        seconds.add_metric(["sync"], stats.sync_seconds)
        yield seconds
        accounts = GaugeMetricFamily("meshpay_owned_accounts", "Accounts this peer holds as an owner")
        accounts.add_metric([], len(node.settlement.ledger.accounts))
        yield accounts
        book = node.equivocations
        stuck = GaugeMetricFamily("meshpay_accounts_equivocating",
                                  "Owned accounts at a sequence number for which this owner holds two "
                                  "sender-signed orders (frozen unless one of them can still reach the quorum)")
        stuck.add_metric([], book.equivocating())
        yield stuck
        evidence = CounterMetricFamily("meshpay_equivocation_evidence", "Equivocation evidence recorded, and "
                                       "conflicting orders whose signature did not verify", labels=["what"])
        evidence.add_metric(["evidence"], book.counters["evidence"])
        evidence.add_metric(["forged"], book.counters["forged"])
        yield evidence
        if self.http is not None:
            open_now = GaugeMetricFamily("meshpay_http_connections_open", "Open HTTP API connections")
            open_now.add_metric([], len(self.http.conns))
            yield open_now
            events = CounterMetricFamily("meshpay_http_connections", "HTTP API connections by what became of "
                                         "them at accept time", labels=["event"])
            for name, value in self.http.counters.items():
                events.add_metric([name], value)
            yield events
        if self.transport is not None:
            t = self.transport.stats
            traffic = CounterMetricFamily("meshpay_transport_bytes", "Bytes on the peer port", labels=["direction"])
            traffic.add_metric(["in"], t.bytes_in)
            traffic.add_metric(["out"], t.bytes_out)
            yield traffic
            msgs = CounterMetricFamily("meshpay_transport_messages", "Messages on the peer port", labels=["direction"])
            msgs.add_metric(["in"], t.messages_in)
            msgs.add_metric(["out"], t.messages_out)
            msgs.add_metric(["dropped"], t.messages_dropped)
            yield msgs
            conns = GaugeMetricFamily("meshpay_connections", "Open authenticated connections")
            conns.add_metric([], t.connections_open)
            yield conns


class Metrics:
    def __init__(self, node: Node, transport: TcpTransport | None = None, http: HttpServer | None = None) -> None:
        self.registry = CollectorRegistry()
        self.payments = Counter("meshpay_payments", "Payments finished at this gateway, by outcome",
                                ["outcome"], registry=self.registry)
        self.latency = Histogram("meshpay_payment_latency_seconds",
                                 "Seconds from submission at this gateway to a status", ["status"],
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.http = Counter("meshpay_http_requests", "HTTP API requests by route and status code",
                            ["route", "code"], registry=self.registry)
        self.registry.register(_Live(node, transport, http))
        self.node = node

    def on_event(self, event: object) -> None:
        if type(event) is not PaymentEvent:
            return
        p = self.node.settlement.gateway.lookup(event.order_id)
        if event.status == CERTIFIED:
            self.payments.labels("certified").inc()
            if p is not None and p.certified_at is not None:
                self.latency.labels("certified").observe(p.certified_at - p.created)
        elif event.status == SETTLED:
            self.payments.labels("settled").inc()
            if p is not None and p.settled_at is not None:
                self.latency.labels("settled").observe(p.settled_at - p.created)
        elif event.status == FAILED:
            self.payments.labels(f"failed_{event.code or 'unknown'}").inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
