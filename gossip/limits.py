"""The transport's limits and the small bookkeeping that enforces them (sans-IO: time is passed in).

`TransportLimits` has defaults fit for a devnet where every peer shares 127.0.0.1; `TokenBucket`
rate-limits frames per connection (and, shared, whole classes of connections); `PenaltyBook` turns
misbehaviour into temporary bans; `LogThrottle` keeps an attacker from filling the log;
`backoff_delay` spaces out reconnection attempts.

Connections come in three classes (see `gossip.admission`): committee peers, other peers
("outsiders": observers, or anyone who knows the network id) and clients. Every limit below that
names a class is shared by that whole class, never granted per key, so fresh keys do not add up.
"""

from __future__ import annotations

import itertools
import logging
import random
from dataclasses import dataclass

from crypto.errors import RemoteProtocolError

# The largest frame a client may send. Clients only submit orders (a Submit is at most 1 KiB), and a
# peer buffers a frame until it is complete: at the peer-to-peer limit (1 MiB) a few hundred client
# sockets that each announce a frame and stop one byte short pinned ~2 MB of memory apiece.
CLIENT_MAX_FRAME = 64 * 1024


@dataclass(frozen=True, slots=True)
class TransportLimits:
    max_frame: int = 1 << 20
    max_frames_per_second: float = 20_000.0
    frame_burst: int = 40_000
    max_queue: int = 10_000  # outbound messages waiting per committee peer
    inbound_queue: int = 4096  # messages waiting for the protocol driver (all peers)
    client_queue: int = 1024  # outbound messages waiting per client session
    handshake_timeout: float = 5.0  # covers connect + handshake
    idle_timeout: float = 60.0
    backoff_min: float = 0.05
    backoff_max: float = 5.0
    penalty_threshold: float = 10.0
    penalty_half_life: float = 60.0
    ban_seconds: float = 60.0
    # -- who may hold a connection (gossip.admission) --------------------------------------------
    # Accepted sockets still in the handshake (nobody is proven yet). When full, the oldest one is
    # dropped for the newcomer, so slow handshakes delay a peer's reconnect but cannot lock it out.
    max_handshakes: int = 64
    # Client sessions and outsider links from one IP address. Committee peers are not counted: a
    # devnet runs every peer (and every client) on 127.0.0.1.
    max_per_address: int = 128
    max_links_per_peer: int = 4  # inbound links from one peer id; a new one replaces the oldest
    max_outsider_links: int = 32  # inbound links from peers outside the committee, all together
    max_client_sessions: int = 256
    client_idle_timeout: float = 30.0  # a session with no message either way for this long is closed
    # A full table makes room by closing its longest-idle session, if that one is idle this long.
    # This also bounds the churn a crowd of idle sessions can cause: at most a table's worth of
    # evictions (and so of new handshakes) per evict_idle seconds.
    evict_idle: float = 5.0
    # Handshakes started per second (refused from the Hello, before any signature work).
    outsider_handshakes_per_second: float = 10.0
    client_handshakes_per_second: float = 5.0
    # What all outsider links together may make this peer read: beyond it their reads wait.
    outsider_messages_per_second: float = 500.0
    outsider_bytes_per_second: float = 256 * 1024
    outsider_dials_per_second: float = 2.0  # connections we open to outsiders, all together
    outsider_queue: int = 64  # outbound messages waiting per outsider
    # Refusals and failures logged per kind per interval; the rest are counted in one summary line.
    log_burst: int = 10
    log_interval: float = 10.0

    def __post_init__(self) -> None:
        if self.max_frame < 1024:
            raise ValueError("max_frame below 1 KiB cannot carry protocol messages")
        for name in self.__slots__:  # type: ignore[attr-defined]
            if name != "max_frame" and getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")


DEFAULT_LIMITS = TransportLimits()


class FrameFlood(RemoteProtocolError):
    """More frames per second than the connection's budget."""

    penalty = 5


class TokenBucket:
    """`rate` tokens per second, at most `burst` saved up; one token per frame."""

    __slots__ = ("_last", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate, self.burst = rate, burst
        self._tokens = float(burst)
        self._last = now

    def take(self, now: float, n: int = 1) -> bool:
        self._refill(now)
        if self._tokens < n:
            return False
        self._tokens -= n
        return True

    def debit(self, now: float, n: float) -> float:
        """Take `n` tokens even into debt; seconds until the debt is paid off (0 if there is none).

        For costs known only after the fact (bytes already read): the caller waits that long
        before reading more, so the average rate holds without refusing anything.
        """
        self._refill(now)
        self._tokens -= n
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    def _refill(self, now: float) -> None:
        elapsed = now - self._last
        if elapsed > 0:
            self._tokens = min(self.burst, self._tokens + elapsed * self.rate)
            self._last = now


class PenaltyBook:
    """A decaying misbehaviour score per peer id; crossing the threshold bans the id for a while.

    Scores halve every `half_life` seconds, so occasional honest mistakes never add up to a ban.
    Bans are by peer id only: peers on a devnet share one IP address.
    """

    MAX_ENTRIES = 4096

    def __init__(self, threshold: float, half_life: float, ban_seconds: float) -> None:
        self.threshold, self.half_life, self.ban_seconds = threshold, half_life, ban_seconds
        self._scores: dict[bytes, tuple[float, float]] = {}  # peer -> (score, as of)
        self._banned_until: dict[bytes, float] = {}

    def score(self, peer_id: bytes, now: float) -> float:
        score, since = self._scores.get(peer_id, (0.0, now))
        return score * 0.5 ** (max(0.0, now - since) / self.half_life)

    def penalize(self, peer_id: bytes, penalty: float, now: float) -> bool:
        """Add a penalty; True when this pushed the peer into a new ban."""
        if self.banned(peer_id, now):
            return False
        score = self.score(peer_id, now) + max(0.0, penalty)
        self._scores.pop(peer_id, None)  # re-inserted last: the dict stays in order of last update
        if score >= self.threshold:
            self._banned_until[peer_id] = now + self.ban_seconds
            if len(self._banned_until) > self.MAX_ENTRIES:
                self._prune_bans(now)
            return True
        self._scores[peer_id] = (score, now)
        if len(self._scores) > self.MAX_ENTRIES:
            self._prune_scores()
        return False

    def banned(self, peer_id: bytes, now: float) -> bool:
        until = self._banned_until.get(peer_id)
        if until is None:
            return False
        if now >= until:
            del self._banned_until[peer_id]
            return False
        return True

    def _prune_scores(self) -> None:
        # Drop the quarter updated longest ago in one go, so a stream of fresh ids costs O(1) per
        # penalty on average and cannot grow the book (sorting on every penalty did cost O(n log n)).
        for peer_id in list(itertools.islice(self._scores, self.MAX_ENTRIES // 4)):
            del self._scores[peer_id]

    def _prune_bans(self, now: float) -> None:
        for peer_id in [p for p, until in self._banned_until.items() if until <= now]:
            del self._banned_until[peer_id]
        # Still full of live bans (a flood of fresh ids): forget the ones that end soonest. A
        # fresh id is as cheap as a ban lifted early, so this loses nothing the limits rely on.
        excess = len(self._banned_until) - self.MAX_ENTRIES * 3 // 4
        if excess > 0:
            for peer_id in sorted(self._banned_until, key=self._banned_until.__getitem__)[:excess]:
                del self._banned_until[peer_id]


class LogThrottle:
    """At most `burst` log lines per kind per `interval`; what was held back is summed up in one
    line when the next interval's first line of that kind is written (or by `flush`).

    Refusals and failures caused from outside are logged through this, so a flood of them costs
    a few lines instead of one per attempt (the issue that led here logged 500,000 dial failures).
    """

    def __init__(self, logger: logging.Logger, burst: int, interval: float) -> None:
        self.logger, self.burst, self.interval = logger, burst, interval
        self._windows: dict[str, _Window] = {}  # one per kind; the kinds are a few fixed strings

    def log(self, now: float, level: int, kind: str, msg: str, *args: object) -> None:
        window = self._windows.get(kind)
        if window is None or now - window.start >= self.interval:
            if window is not None and window.suppressed:
                self.logger.log(level, "%d more like '%s' in the last %.0f s (not logged)",
                                window.suppressed, kind, now - window.start)
            window = self._windows[kind] = _Window(now)
        if window.written < self.burst:
            window.written += 1
            self.logger.log(level, msg, *args)
        else:
            window.suppressed += 1

    def suppressed(self, kind: str) -> int:
        window = self._windows.get(kind)
        return 0 if window is None else window.suppressed


@dataclass(slots=True)
class _Window:
    start: float
    written: int = 0
    suppressed: int = 0


def backoff_delay(attempt: int, low: float, high: float, rng: random.Random | None = None) -> float:
    """Exponential backoff with jitter: attempt 1 waits about `low`, doubling up to `high`.

    The jitter (50-100 % of the step) keeps peers that lost the same neighbour from redialing in
    lockstep.
    """
    step = min(high, low * 2.0 ** min(max(0, attempt - 1), 40))
    return step * (rng or random).uniform(0.5, 1.0)
