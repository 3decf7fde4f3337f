"""Delay, jitter and loss on chosen links without netem: a userspace NFQUEUE delayer.

Why: this machine's kernel (and many container hosts') has no `netem` queueing discipline, but it
has netfilter's NFQUEUE. A fault rule in a receiving namespace sends the packets of a slowed link to
a numbered queue (`-j NFQUEUE --queue-num Q --queue-bypass`); this process reads each queued
packet's id from netlink (metadata only, never the payload), decides its fate from the link's
parameters, and gives the kernel its verdict when the time comes: ACCEPT after `delay ± jitter`
(uniform), or DROP with probability `loss`. Verdicts may be given in any order, so jitter reorders
packets as netem does. `--queue-bypass` means packets flow undelayed if this process is gone (a
dead delayer never becomes an accidental partition); the queue fails open when full for the same
reason.

Layout: `Plan` is the sans-IO core (packet in, verdict time out; its own seeded random source);
the netlink codec is a handful of pure functions; `serve()` is the one driver (select loop over
one netlink socket per (namespace, queue), a heap of pending verdicts). Run as
`python -m devnet.delayer CONFIG.json` (devnet/faults.py starts it and records its pid).
"""

from __future__ import annotations

import heapq
import json
import os
import random
import select
import signal
import socket
import struct
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from devnet import netns

# ---- the core --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LinkSpec:
    """What one queue does to its packets. Seconds and a probability."""

    delay: float
    jitter: float = 0.0
    loss: float = 0.0

    def __post_init__(self) -> None:
        if self.delay < 0 or self.jitter < 0 or not 0 <= self.loss <= 1:
            raise ValueError("delay and jitter must be >= 0 and loss within [0, 1]")


class Plan:
    """Decides each packet's verdict: `None` (drop) or the time to accept it."""

    def __init__(self, specs: dict[int, LinkSpec], seed: int | None = None) -> None:
        self.specs = specs
        self.rng = random.Random(seed)

    def on_packet(self, queue: int, now: float) -> float | None:
        spec = self.specs[queue]
        if spec.loss and self.rng.random() < spec.loss:
            return None
        held = spec.delay + (self.rng.uniform(-spec.jitter, spec.jitter) if spec.jitter else 0.0)
        return now + max(0.0, held)


# ---- nfnetlink_queue codec (linux/netfilter/nfnetlink_queue.h) -------------------------------------
NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET, NFQNL_MSG_VERDICT, NFQNL_MSG_CONFIG = 0, 1, 2
NFQA_PACKET_HDR = 1
NFQA_VERDICT_HDR = 2
NFQA_CFG_CMD, NFQA_CFG_PARAMS, NFQA_CFG_QUEUE_MAXLEN, NFQA_CFG_MASK, NFQA_CFG_FLAGS = 1, 2, 3, 4, 5
NFQNL_CFG_CMD_BIND = 1
NFQNL_COPY_META = 1
NFQA_CFG_F_FAIL_OPEN, NFQA_CFG_F_GSO = 1, 4
NF_DROP, NF_ACCEPT = 0, 1
NLM_F_REQUEST, NLM_F_ACK = 1, 4
NLMSG_ERROR = 2
QUEUE_MAXLEN = 16384  # packets held at once per queue (50 ms of a busy link is far fewer)


class NetlinkError(OSError):
    """The kernel refused a netlink request (e.g. the queue is bound by another process)."""


def _attr(kind: int, payload: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(payload), kind) + payload
    return raw + b"\0" * (-len(raw) % 4)


def _message(msg_type: int, queue: int, attrs: bytes, *, flags: int = NLM_F_REQUEST, seq: int = 0) -> bytes:
    body = struct.pack("=BBH", socket.AF_UNSPEC, 0, socket.htons(queue)) + attrs
    return struct.pack("=IHHII", 16 + len(body), (NFNL_SUBSYS_QUEUE << 8) | msg_type, flags, seq, 0) + body


def bind_request(queue: int, seq: int) -> bytes:
    return _message(NFQNL_MSG_CONFIG, queue, _attr(NFQA_CFG_CMD, struct.pack("!BxH", NFQNL_CFG_CMD_BIND, 0)),
                    flags=NLM_F_REQUEST | NLM_F_ACK, seq=seq)


def params_request(queue: int, seq: int) -> bytes:
    flags = struct.pack("!I", NFQA_CFG_F_FAIL_OPEN | NFQA_CFG_F_GSO)
    attrs = (_attr(NFQA_CFG_PARAMS, struct.pack("!IB", 0, NFQNL_COPY_META))
             + _attr(NFQA_CFG_QUEUE_MAXLEN, struct.pack("!I", QUEUE_MAXLEN))
             + _attr(NFQA_CFG_FLAGS, flags) + _attr(NFQA_CFG_MASK, flags))
    return _message(NFQNL_MSG_CONFIG, queue, attrs, flags=NLM_F_REQUEST | NLM_F_ACK, seq=seq)


def verdict(queue: int, packet_id: int, accept: bool) -> bytes:
    return _message(NFQNL_MSG_VERDICT, queue,
                    _attr(NFQA_VERDICT_HDR, struct.pack("!II", NF_ACCEPT if accept else NF_DROP, packet_id)))


def parse(data: bytes) -> list[tuple[str, int, int]]:
    """Netlink messages in one datagram: ("packet", queue, packet id) or ("ack", seq, errno)."""
    found = []
    offset = 0
    while offset + 16 <= len(data):
        length, msg_type, _flags, seq, _pid = struct.unpack_from("=IHHII", data, offset)
        if length < 16 or offset + length > len(data):
            break
        if msg_type == NLMSG_ERROR:
            (code,) = struct.unpack_from("=i", data, offset + 16)
            found.append(("ack", seq, -code))
        elif msg_type == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:
            queue = socket.ntohs(struct.unpack_from("=H", data, offset + 18)[0])
            pos = offset + 20
            while pos + 4 <= offset + length:
                alen, akind = struct.unpack_from("=HH", data, pos)
                if alen < 4:
                    break
                if akind & 0x3FFF == NFQA_PACKET_HDR:
                    found.append(("packet", queue, struct.unpack_from("!I", data, pos + 4)[0]))
                    break
                pos += (alen + 3) & ~3
        offset += (length + 3) & ~3
    return found


# ---- the driver --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class QueueConfig:
    netns: str  # namespace name (in /run/netns)
    queue: int
    spec: LinkSpec


def load_config(path: Path) -> tuple[list[QueueConfig], int | None]:
    doc = json.loads(path.read_text())
    queues = [QueueConfig(q["netns"], int(q["queue"]), LinkSpec(q["delay"], q.get("jitter", 0.0), q.get("loss", 0.0)))
              for q in doc["queues"]]
    return queues, doc.get("seed")


def _open(config: QueueConfig) -> socket.socket:
    sock = netns.socket_in(config.netns, socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    sock.bind((0, 0))
    sock.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)  # SO_RCVBUFFORCE (root): bursts wait here, not dropped
    for seq, request in ((1, bind_request(config.queue, 1)), (2, params_request(config.queue, 2))):
        sock.send(request)
        deadline = time.monotonic() + 5.0
        while True:
            ready, _, _ = select.select([sock], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise NetlinkError(f"no answer binding queue {config.queue} in {config.netns}")
            acks = [m for m in parse(sock.recv(65536)) if m[0] == "ack" and m[1] == seq]
            if acks:
                if acks[0][2]:
                    raise NetlinkError(acks[0][2], f"binding queue {config.queue} in {config.netns} was refused")
                break
    sock.setblocking(False)
    return sock


def serve(queues: list[QueueConfig], seed: int | None) -> None:
    """Hold and release packets until SIGTERM/SIGINT; then accept whatever is still held."""
    plan = Plan({q.queue: q.spec for q in queues}, seed)
    socks = {_open(q): q for q in queues}
    stopping = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.append(True))
    held: list[tuple[float, int, int, socket.socket]] = []  # (release time, tiebreak, packet id, socket)
    order = 0
    print(f"delayer ready ({_realtime()})", flush=True)
    while not stopping:
        now = time.monotonic()
        due: dict[socket.socket, list[bytes]] = {}
        while held and held[0][0] <= now:
            _, _, packet_id, sock = heapq.heappop(held)
            due.setdefault(sock, []).append(verdict(socks[sock].queue, packet_id, True))
        for sock, verdicts in due.items():
            _send_all(sock, verdicts)
        timeout = max(0.0, held[0][0] - time.monotonic()) if held else 1.0
        try:
            ready, _, _ = select.select(list(socks), [], [], timeout)
        except InterruptedError:
            continue
        for sock in ready:
            for _ in range(256):  # drain what is there, bounded so verdicts are never starved
                try:
                    data = sock.recv(65536)
                except BlockingIOError:
                    break
                now = time.monotonic()
                drops = []
                for kind, queue, packet_id in parse(data):
                    if kind != "packet":
                        continue
                    release = plan.on_packet(queue, now)
                    if release is None:
                        drops.append(verdict(queue, packet_id, False))
                    else:
                        order += 1
                        heapq.heappush(held, (release, order, packet_id, sock))
                if drops:
                    _send_all(sock, drops)
    for _, _, packet_id, sock in held:  # leaving: let everything still held through
        _send_all(sock, [verdict(socks[sock].queue, packet_id, True)])


def _realtime() -> str:
    """Run at the lowest real-time priority when allowed: on a loaded machine an ordinary process
    wakes up late, and every millisecond late is delay nobody asked for (measured under load 15 on
    2 cores, 50 +- 10 ms asked: median 54.9 / p99 70.9 ms as an ordinary process, 50.6 / 61.0 ms
    real-time). The process sleeps between packets and does microseconds of work per packet."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
    except (OSError, AttributeError) as exc:
        return f"ordinary scheduling: {exc}"
    return "real-time scheduling"


def _send_all(sock: socket.socket, messages: list[bytes]) -> None:
    # Many netlink messages fit in one datagram (the kernel walks them all), ~32 bytes each.
    for start in range(0, len(messages), 512):
        chunk = b"".join(messages[start:start + 512])
        while True:
            try:
                sock.send(chunk)
                break
            except BlockingIOError:
                select.select([], [sock], [], 0.01)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m devnet.delayer CONFIG.json", file=sys.stderr)
        return 2
    queues, seed = load_config(Path(argv[0]))
    serve(queues, seed)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
