"""The transport's limits and the small bookkeeping that enforces them (sans-IO: time is passed in).

`TransportLimits` has defaults fit for a devnet where every peer shares 127.0.0.1; `TokenBucket`
rate-limits frames per connection; `PenaltyBook` turns misbehaviour into temporary bans;
`backoff_delay` spaces out reconnection attempts.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from crypto.errors import RemoteProtocolError


@dataclass(frozen=True, slots=True)
class TransportLimits:
    max_frame: int = 1 << 20
    max_frames_per_second: float = 20_000.0
    frame_burst: int = 40_000
    max_connections: int = 1024  # inbound, total
    max_per_address: int = 256  # inbound from one host; a devnet runs every peer on 127.0.0.1
    max_queue: int = 10_000  # outbound messages waiting per peer
    inbound_queue: int = 4096  # messages waiting for the protocol driver (all peers)
    client_queue: int = 1024  # outbound messages waiting per client session
    handshake_timeout: float = 5.0  # covers connect + handshake
    idle_timeout: float = 60.0
    backoff_min: float = 0.05
    backoff_max: float = 5.0
    penalty_threshold: float = 10.0
    penalty_half_life: float = 60.0
    ban_seconds: float = 60.0

    def __post_init__(self) -> None:
        if self.max_frame < 1024:
            raise ValueError("max_frame below 1 KiB cannot carry protocol messages")
        for name in ("max_frames_per_second", "frame_burst", "max_connections", "max_per_address",
                     "max_queue", "inbound_queue", "client_queue", "handshake_timeout",
                     "idle_timeout", "backoff_min", "backoff_max", "penalty_threshold",
                     "penalty_half_life", "ban_seconds"):
            if getattr(self, name) <= 0:
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
        elapsed = now - self._last
        if elapsed > 0:
            self._tokens = min(self.burst, self._tokens + elapsed * self.rate)
            self._last = now
        if self._tokens < n:
            return False
        self._tokens -= n
        return True


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
        if score >= self.threshold:
            self._scores.pop(peer_id, None)
            self._banned_until[peer_id] = now + self.ban_seconds
            return True
        self._scores[peer_id] = (score, now)
        if len(self._scores) > self.MAX_ENTRIES:
            self._prune(now)
        return False

    def banned(self, peer_id: bytes, now: float) -> bool:
        until = self._banned_until.get(peer_id)
        if until is None:
            return False
        if now >= until:
            del self._banned_until[peer_id]
            return False
        return True

    def _prune(self, now: float) -> None:
        # Forget scores that have decayed to nothing, then the oldest, so a stream of fresh ids
        # cannot grow the book without bound.
        for peer_id in [p for p in self._scores if self.score(p, now) < 0.01]:
            del self._scores[peer_id]
        for peer_id in [p for p, until in self._banned_until.items() if until <= now]:
            del self._banned_until[peer_id]
        excess = len(self._scores) - self.MAX_ENTRIES
        if excess > 0:
            oldest = sorted(self._scores, key=lambda p: self._scores[p][1])[:excess]
            for peer_id in oldest:
                del self._scores[peer_id]


def backoff_delay(attempt: int, low: float, high: float, rng: random.Random | None = None) -> float:
    """Exponential backoff with jitter: attempt 1 waits about `low`, doubling up to `high`.

    The jitter (50-100 % of the step) keeps peers that lost the same neighbour from redialing in
    lockstep.
    """
    step = min(high, low * 2.0 ** min(max(0, attempt - 1), 40))
    return step * (rng or random).uniform(0.5, 1.0)
