"""The nemesis schedule of `devnet chaos`: which fault, on which peers, when. Pure and seeded.

The same (seed, duration, nemeses, peers, quorum) always gives the same schedule, so a run that
found a problem can be replayed (the schedule is printed before anything happens). Shape: a
healthy lead-in, then fault windows separated by healthy gaps, with the kinds taken in turn from
a reshuffled list (every kind appears early), and a healthy tail before the end.

Targets: one peer, or sometimes two (never so many that fewer than a quorum of the committee is
left reachable): one shows that every account still settles with one owner lost, two show what
happens to the accounts that had both as owners. A partition cuts the targets off from the rest
(sometimes one way only: the targets' packets are lost, the rest's are not); slow puts 50 +- 10 ms
and 2% loss on the targets' links (to everyone, or between the two sides).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

KINDS = ("kill", "pause", "partition", "slow")
LOCAL_KINDS = ("kill", "pause")  # what a 127.0.0.1 devnet can do (no links to cut)
HEALTHY = "healthy"


@dataclass(frozen=True)
class Timing:
    lead_in: float = 10.0  # healthy seconds before the first fault
    fault: tuple[float, float] = (10.0, 20.0)  # a fault lasts this long (uniform)
    gap: tuple[float, float] = (6.0, 12.0)  # healthy seconds between faults (uniform)
    tail: float = 5.0  # healthy seconds before the end
    two_targets: float = 1 / 3  # chance a kill/pause/partition takes two peers
    one_way: float = 1 / 4  # chance a partition is one-way
    between: float = 1 / 3  # chance slow is between two sides rather than around one peer


@dataclass(frozen=True)
class Window:
    start: float  # seconds from the start of the run
    end: float
    kind: str
    targets: tuple[str, ...] = ()
    one_way: bool = False  # partition: only what the targets send is lost
    between: bool = False  # slow: only the links between the targets and the rest
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss: float = 0.0
    rest: tuple[str, ...] = field(default=())  # the other side (partition, slow --between)

    def describe(self) -> str:
        who = ",".join(self.targets)
        if self.kind == "partition":
            sep = " -> " if self.one_way else " / "
            what = f"partition {who}{sep}{','.join(self.rest)}"
        elif self.kind == "slow":
            where = f"{who} / {','.join(self.rest)}" if self.between else f"{who} (all its links)"
            what = f"slow {where}: {self.delay_ms:g}ms +- {self.jitter_ms:g}ms, loss {self.loss:.0%}"
        else:
            what = f"{self.kind} {who}"
        return f"{self.start:7.1f}s-{self.end:7.1f}s  {what}"

    def as_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


def make(seed: int, duration: float, kinds: list[str], peers: list[str], quorum: int,
         timing: Timing | None = None) -> list[Window]:
    """The fault windows (healthy time is everything between them)."""
    t = timing or Timing()
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise ValueError(f"unknown nemesis {', '.join(unknown) or '(none)'}; choose from {', '.join(KINDS)}")
    rng = random.Random(seed)
    # Two targets only if a quorum of the committee stays reachable.
    most = 2 if len(peers) - 2 >= quorum else 1
    windows: list[Window] = []
    turn: list[str] = []
    now = min(t.lead_in, duration / 4)
    while True:
        length = rng.uniform(*t.fault)
        if now + length > duration - t.tail:
            return windows
        if not turn:
            turn = list(dict.fromkeys(kinds))
            rng.shuffle(turn)
        kind = turn.pop()
        count = 2 if most == 2 and kind != "slow" and rng.random() < t.two_targets else 1
        targets = tuple(sorted(rng.sample(peers, count)))
        rest = tuple(p for p in peers if p not in targets)
        if kind == "partition":
            windows.append(Window(now, now + length, kind, targets, one_way=rng.random() < t.one_way, rest=rest))
        elif kind == "slow":
            between = rng.random() < t.between
            windows.append(Window(now, now + length, kind, targets, between=between, delay_ms=50.0, jitter_ms=10.0,
                                  loss=0.02, rest=rest))
        else:
            windows.append(Window(now, now + length, kind, targets))
        now += length + rng.uniform(*t.gap)


def faulted(window: Window | None) -> frozenset[str]:
    """Peers that a payment cannot count on during the window (slow peers still answer)."""
    if window is None or window.kind in ("slow", HEALTHY):
        return frozenset()
    return frozenset(window.targets)
