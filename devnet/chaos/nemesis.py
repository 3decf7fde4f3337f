"""Applying and undoing the chaos schedule's windows on a running devnet (blocking calls: the
chaos runner calls them from a worker thread). Each window uses the same code as the matching
command (`devnet kill`/`restart`, `pause`/`resume`, `partition`, `slow`, `heal`)."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

from devnet import faults, processes
from devnet.chaos.schedule import Window, faulted
from devnet.layout import Devnet, DevnetError


class Nemesis:
    def __init__(self, devnet: Devnet, seed: int) -> None:
        self.devnet = devnet
        self.seed = seed
        self.current: Window | None = None  # the window in force (set before it is applied)
        self.applied: list[dict] = []  # each window as scheduled, with when it really began and ended
        self.windows: list[Window] = []  # the same windows, as objects

    def during(self, start: float, end: float) -> tuple[str, frozenset[str]]:
        """The window an op from `start` to `end` (seconds into the run) lived through, and the
        peers it could not count on: a fault that began or ended while the op was in flight
        counts (the one that lost the most peers, when two did). ("healthy", {}) if none."""
        worst: tuple[str, frozenset[str]] = ("healthy", frozenset())
        for record, window in zip(self.applied, self.windows, strict=True):
            ended = record.get("ended", float("inf"))
            if record["began"] <= end and ended >= start:
                lost = faulted(window)
                if worst[0] == "healthy" or len(lost) > len(worst[1]):
                    worst = (window.kind, lost)
        return worst

    def begin(self, window: Window, at: float) -> None:
        self.current = window
        record = {**window.as_dict(), "began": round(at, 2)}
        self.windows.append(window)
        self.applied.append(record)
        try:
            self._apply(window, len(self.applied))
        except DevnetError as exc:
            record["error"] = str(exc)

    def end(self, window: Window, now: Callable[[], float]) -> None:
        try:
            self._undo(window)
        except DevnetError as exc:
            self.applied[-1]["error"] = str(exc)
        self.applied[-1]["ended"] = round(now(), 2)
        self.current = None

    def _apply(self, w: Window, number: int) -> None:
        entries = [self.devnet.peer(name) for name in w.targets]
        if w.kind == "kill":
            for entry in entries:
                pid = processes.signal_peer(self.devnet, entry, signal.SIGKILL)
                if pid is not None:
                    processes.wait_exit(entry, self.devnet, 10.0, pid)
        elif w.kind == "pause":
            for entry in entries:
                faults.pause(self.devnet, entry)
        elif w.kind == "partition":
            faults.partition(self.devnet, [list(w.targets), list(w.rest)], one_way=w.one_way)
        elif w.kind == "slow":
            groups = [list(w.targets), list(w.rest)] if w.between else [list(w.targets)]
            faults.slow(self.devnet, groups, delay=w.delay_ms / 1000, jitter=w.jitter_ms / 1000, loss=w.loss,
                        seed=self.seed * 1000 + number)

    def _undo(self, w: Window) -> None:
        if w.kind == "kill":
            started = [self.devnet.peer(name) for name in w.targets]
            for entry in started:
                if not processes.is_running(entry, self.devnet):
                    processes.start_peer(self.devnet, entry)
            self._wait_answering(started, 90.0)
        else:
            faults.heal(self.devnet)

    def _wait_answering(self, entries: list, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        waiting = list(entries)
        while waiting and time.monotonic() < deadline:
            waiting = [e for e in waiting if processes.status(e, timeout=3.0) is None]
            if waiting:
                time.sleep(0.5)
        if waiting:
            raise DevnetError(f"{', '.join(e.name for e in waiting)} did not answer within {timeout:.0f} s of restarting")

    def restore(self, now: Callable[[], float]) -> None:
        """Heal everything, start whatever is down, and wait for the membership to converge."""
        if self.current is not None:
            self.end(self.current, now)
        faults.heal(self.devnet)
        for entry in self.devnet.peers:
            if not processes.is_running(entry, self.devnet):
                processes.start_peer(self.devnet, entry)
        processes.wait_converged(self.devnet, timeout=120.0)
