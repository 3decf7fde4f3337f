"""Group commit: many callers' write batches become one durable RocksDB write.

Callers `submit` a batch with a callback (or `await commit(batch)`). A single writer task takes
everything waiting, in submission order, merges it into one WriteBatch, applies it and syncs the
write-ahead log (in a worker thread by default, so the event loop keeps running while the disk
flushes); whatever arrives during that flush forms the next group. Submission order is write
order, so a later batch is never durable before an earlier one.

A failed write is fatal: the writer raises, which tears down the peer's nursery. A peer that
cannot persist must not keep voting.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import trio

from store.db import Batch, Store
from store.errors import StoreClosed, StoreOverloaded

Callback = Callable[[], None]


@dataclass
class GroupCommitStats:
    batches: int = 0
    groups: int = 0
    ops: int = 0
    largest_group: int = 0
    write_seconds: float = 0.0  # from taking a group to its callbacks (thread hand-offs included)
    disk_seconds: float = 0.0  # inside the write itself (the write and the log sync)
    sync_seconds: float = 0.0  # of which syncing the write-ahead log


class GroupCommitWriter:
    """Durable, ordered, batched writes for one store.

    `in_thread=False` writes from the event loop itself (simulations under MockClock, where a
    thread would let the clock jump while the disk is busy); `flush_delay` then stands in for the
    time a synced write takes, so grouping still happens.
    """

    def __init__(self, store: Store, *, sync: bool = True, in_thread: bool = True,
                 max_pending: int = 100_000, max_group_ops: int = 50_000, flush_delay: float = 0.0) -> None:
        self.store = store
        self.sync = sync
        self.in_thread = in_thread
        self.max_pending = max_pending
        self.max_group_ops = max_group_ops
        self.flush_delay = flush_delay
        self.stats = GroupCommitStats()
        self._pending: deque[tuple[Batch, Callback | None, Callback | None]] = deque()
        self._in_flight: list[tuple[Batch, Callback | None, Callback | None]] = []
        self._wakeup = trio.Event()
        self._closed = False

    @property
    def pending(self) -> int:
        return len(self._pending)

    def submit(self, batch: Batch, on_durable: Callback | None = None,
               on_abort: Callback | None = None) -> None:
        """Queue a batch; `on_durable` runs (in the writer task) once it is on disk, or `on_abort`
        if the writer stops first (the batch may or may not have reached the disk)."""
        if self._closed:
            raise StoreClosed("group-commit writer is closed")
        if len(self._pending) >= self.max_pending:
            raise StoreOverloaded(f"{len(self._pending)} write batches already waiting")
        self._pending.append((batch, on_durable, on_abort))
        self._wakeup.set()

    async def commit(self, batch: Batch) -> None:
        """Submit and wait until the batch is durable; `StoreClosed` if the writer stops first."""
        done = trio.Event()
        aborted = False

        def abort() -> None:
            nonlocal aborted
            aborted = True
            done.set()

        self.submit(batch, done.set, abort)
        await done.wait()
        if aborted:
            raise StoreClosed("the group-commit writer stopped before this batch was confirmed durable")

    async def drain(self) -> None:
        """Wait until everything submitted so far is durable (including a group being written now:
        the empty marker batch completes only after every group before it)."""
        await self.commit(Batch())

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        try:
            while True:
                if not self._pending:
                    self._wakeup = trio.Event()
                    await self._wakeup.wait()
                await self._write_group()
        finally:
            self._closed = True
            for _, _, on_abort in [*self._in_flight, *self._pending]:
                if on_abort is not None:
                    on_abort()
            self._in_flight = []
            self._pending.clear()

    async def _write_group(self) -> None:
        group = self._in_flight = []
        ops: list[tuple[bytes, bytes | None]] = []
        while self._pending and (not ops or len(ops) + len(self._pending[0][0]) <= self.max_group_ops):
            entry = self._pending.popleft()
            group.append(entry)
            ops.extend(entry[0].ops)
        start = trio.current_time()
        if ops:
            if self.in_thread:
                # abandon_on_cancel=False: a write that started is finished before we unwind.
                await trio.to_thread.run_sync(self._write, ops, abandon_on_cancel=False)
            else:
                self._write(ops)
        if self.flush_delay:
            await trio.sleep(self.flush_delay)
        self.stats.write_seconds += trio.current_time() - start
        self.stats.groups += 1
        self.stats.batches += len(group)
        self.stats.ops += len(ops)
        self.stats.largest_group = max(self.stats.largest_group, len(group))
        self._in_flight = []
        for _, callback, _ in group:
            if callback is not None:
                callback()

    def _write(self, ops: list[tuple[bytes, bytes | None]]) -> None:
        # Not one synced write: rocksdict holds the GIL through a synced write's fsync, which would
        # freeze the event loop. Applying unsynced is quick (memtable and OS buffer), and syncing
        # the write-ahead log afterwards releases the GIL while the disk flushes.
        start = time.perf_counter()
        self.store.write_ops(ops, sync=False)
        if self.sync:
            synced = time.perf_counter()
            self.store.sync_wal()
            self.stats.sync_seconds += time.perf_counter() - synced
        self.stats.disk_seconds += time.perf_counter() - start

    @property
    def mean_group(self) -> float:
        return self.stats.batches / self.stats.groups if self.stats.groups else math.nan
