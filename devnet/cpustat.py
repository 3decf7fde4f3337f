"""CPU time from /proc: per process (all its threads) and for the whole machine.

Benchmarks on a shared machine cannot trust wall-clock rates; CPU time per payment is the steadier
figure. `ProcessCpu` reads a process's user+system time; `MachineCpu` reads the machine's busy and
total time, so a report can say how loaded the box was by others while it ran.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_seconds(pid: int) -> float | None:
    """User + system CPU seconds a process (every thread) has used; None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()
    # Fields after the command: state is [0], utime [11], stime [12] (proc(5) numbers 14 and 15).
    return (int(fields[11]) + int(fields[12])) / _TICK


@dataclass(frozen=True)
class MachineSample:
    busy: float  # CPU-seconds all cores spent not idle since boot
    total: float  # CPU-seconds all cores existed since boot


def machine_sample() -> MachineSample | None:
    try:
        first = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    # cpu user nice system idle iowait irq softirq steal guest guest_nice (guest is inside user)
    values = [int(v) for v in first[1:9]]
    idle = values[3] + values[4]
    return MachineSample((sum(values) - idle) / _TICK, sum(values) / _TICK)


class CpuMeter:
    """CPU used by a set of processes (and by the whole machine) between `start()` and `stop()`.

    Processes may come and go (a peer killed and restarted mid-run): `track(pid)` adds one, and a
    process that vanished keeps the time last sampled for it (`sample()` now and then keeps that
    loss small); `complete` says whether every tracked process was still there at the end.
    """

    def __init__(self) -> None:
        self._base: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._machine: MachineSample | None = None
        self.complete = True

    def track(self, pid: int, *, from_zero: bool = False) -> None:
        if pid in self._base:
            return
        now = process_seconds(pid)
        if now is None:
            return
        self._base[pid] = 0.0 if from_zero else now
        self._last[pid] = now

    def start(self, pids: list[int]) -> None:
        self._machine = machine_sample()
        for pid in pids:
            self.track(pid)

    def sample(self) -> None:
        for pid in self._base:
            now = process_seconds(pid)
            if now is not None:
                self._last[pid] = now

    def stop(self) -> tuple[float, float | None]:
        """(CPU-seconds of the tracked processes, CPU-seconds the whole machine was busy)."""
        self.sample()
        for pid in self._base:
            if process_seconds(pid) is None:
                self.complete = False
        used = sum(self._last[pid] - self._base[pid] for pid in self._base)
        machine = machine_sample()
        busy = None
        if machine is not None and self._machine is not None:
            busy = machine.busy - self._machine.busy
        return used, busy
