"""The group-commit writer: durability, order, grouping, back-pressure and shutdown.

Tests run under trio (pytest-trio in trio mode). Tests that take `autojump_clock` (a
pytest-trio fixture returning `MockClock(autojump_threshold=0)`) run under that clock: pytest-trio
uses any Clock-valued fixture a test requests as the run's clock.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import trio.testing

from store import Batch, GroupCommitWriter, Store, StoreClosed, StoreError, StoreOverloaded

NET = b"\x07" * 32


def key(task: int, n: int, j: int = 0) -> bytes:
    return b"G" + task.to_bytes(4, "big") + n.to_bytes(4, "big") + bytes([j])


def value(task: int, n: int, j: int = 0) -> bytes:
    return b"v%d/%d/%d" % (task, n, j)


def batch_for(task: int, n: int, ops: int = 1) -> Batch:
    b = Batch()
    for j in range(ops):
        b.put(key(task, n, j), value(task, n, j))
    return b


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.create(tmp_path / "db", NET)
    yield s
    s.close()


class SlowWriter(GroupCommitWriter):
    """A writer whose disk takes `delay` seconds per group (in the worker thread), so a group is
    reliably in flight while the test looks at the writer."""

    def __init__(self, store: Store, delay: float, **kw: object) -> None:
        super().__init__(store, **kw)  # type: ignore[arg-type]
        self.delay = delay

    def _write(self, ops: list[tuple[bytes, bytes | None]]) -> None:
        time.sleep(self.delay)
        super()._write(ops)


# ------------------------------------------------------------------------------------------------
# durability and order


async def test_many_concurrent_commits_are_durable_and_readable(store: Store) -> None:
    n_tasks, per_task, ops = 40, 15, 3
    writer = GroupCommitWriter(store, sync=True, in_thread=True)
    acked: list[tuple[int, int]] = []

    async def client(t: int) -> None:
        for n in range(per_task):
            await writer.commit(batch_for(t, n, ops))
            # commit returned: the batch must be readable right now, not eventually.
            assert store.get(key(t, n, ops - 1)) == value(t, n, ops - 1)
            acked.append((t, n))

    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        async with trio.open_nursery() as clients:
            for t in range(n_tasks):
                clients.start_soon(client, t)
        nursery.cancel_scope.cancel()

    assert len(acked) == n_tasks * per_task
    assert writer.stats.batches == n_tasks * per_task
    assert writer.stats.ops == n_tasks * per_task * ops
    assert writer.pending == 0
    # Durable: still there after closing and reopening the database.
    path = store.path
    store.close()
    s = Store.open(path, NET)
    try:
        for t in range(n_tasks):
            for n in range(per_task):
                for j in range(ops):
                    assert s.get(key(t, n, j)) == value(t, n, j), (t, n, j)
    finally:
        s.close()


async def test_callbacks_run_in_submission_order(store: Store) -> None:
    # A small max_group_ops forces many groups, so order must hold across group boundaries too.
    writer = GroupCommitWriter(store, sync=False, in_thread=True, max_group_ops=7)
    submitted: list[int] = []
    durable: list[int] = []
    counter = iter(range(10**9))
    rng = random.Random(1)

    async def client() -> None:
        for _ in range(30):
            i = next(counter)
            # No checkpoint between recording and submitting: `submitted` is submission order.
            submitted.append(i)
            writer.submit(batch_for(0, i, rng.randint(1, 4)), lambda i=i: durable.append(i))
            await trio.sleep(0)

    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        async with trio.open_nursery() as clients:
            for _ in range(20):
                clients.start_soon(client)
        await writer.drain()
        nursery.cancel_scope.cancel()

    assert len(submitted) == 600
    assert durable == submitted
    assert writer.stats.groups > 1


async def test_later_batch_never_durable_before_earlier(store: Store) -> None:
    """When batch i is reported durable, every batch submitted before it is already in the store.

    Each callback checks the store for all earlier batches; callbacks also record order, which
    must be submission order even with many tasks racing."""
    writer = GroupCommitWriter(store, sync=True, in_thread=True)
    order: list[int] = []
    violations: list[str] = []
    seq = iter(range(10**9))

    def on_durable(i: int) -> None:
        if order and order[-1] > i:
            violations.append(f"{i} reported after {order[-1]}")
        order.append(i)
        # Every earlier batch (spot-check the latest few and the first) must be in the store.
        for earlier in {0, *range(max(0, i - 5), i + 1)}:
            if store.get(key(0, earlier)) != value(0, earlier):
                violations.append(f"batch {earlier} missing when {i} was durable")

    async def client() -> None:
        for _ in range(25):
            i = next(seq)
            done = trio.Event()

            def cb(i: int = i, done: trio.Event = done) -> None:
                on_durable(i)
                done.set()

            writer.submit(batch_for(0, i), cb)
            await done.wait()

    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        async with trio.open_nursery() as clients:
            for _ in range(30):
                clients.start_soon(client)
        nursery.cancel_scope.cancel()

    assert not violations, violations[:5]
    assert order == list(range(750))


async def test_concurrent_commits_are_grouped(store: Store) -> None:
    n = 300
    writer = GroupCommitWriter(store, sync=True, in_thread=True)

    async def client(t: int) -> None:
        for r in range(3):
            await writer.commit(batch_for(t, r))

    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        async with trio.open_nursery() as clients:
            for t in range(n):
                clients.start_soon(client, t)
        nursery.cancel_scope.cancel()

    stats = writer.stats
    assert stats.batches == 3 * n
    # Everything that arrives while a synced write is in flight rides the next group.
    assert stats.groups * 10 <= stats.batches, stats
    assert stats.largest_group >= 50, stats
    assert writer.mean_group == stats.batches / stats.groups


async def test_max_group_ops_bounds_groups_but_oversized_batch_still_goes(store: Store) -> None:
    writer = GroupCommitWriter(store, sync=False, in_thread=True, max_group_ops=7)
    for i in range(10):
        writer.submit(batch_for(1, i, 3))  # 3 ops each: at most 2 batches per group
    big = batch_for(2, 0, 20)  # larger than max_group_ops on its own
    writer.submit(big)
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        await writer.drain()
        nursery.cancel_scope.cancel()
    assert writer.stats.largest_group <= 2
    assert writer.stats.groups >= 6
    assert writer.stats.ops == 30 + 20
    assert store.get(key(2, 0, 19)) == value(2, 0, 19)
    assert all(store.get(key(1, i, 2)) == value(1, i, 2) for i in range(10))


async def test_empty_batch_commit_completes(store: Store) -> None:
    writer = GroupCommitWriter(store, sync=True, in_thread=True)
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        with trio.fail_after(5):
            await writer.commit(Batch())
        nursery.cancel_scope.cancel()
    assert writer.stats.batches == 1


async def test_batch_deletes_go_through_the_writer(store: Store) -> None:
    writer = GroupCommitWriter(store, sync=True, in_thread=True)
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        await writer.commit(batch_for(3, 0, 2))
        b = Batch()
        b.delete(key(3, 0, 0))
        await writer.commit(b)
        nursery.cancel_scope.cancel()
    assert store.get(key(3, 0, 0)) is None
    assert store.get(key(3, 0, 1)) == value(3, 0, 1)


# ------------------------------------------------------------------------------------------------
# back-pressure, drain and shutdown


async def test_submit_beyond_max_pending_is_overloaded(store: Store) -> None:
    writer = GroupCommitWriter(store, sync=False, in_thread=True, max_pending=5)
    done: list[int] = []
    # The writer is not running yet, so nothing leaves the queue.
    for i in range(5):
        writer.submit(batch_for(4, i), lambda i=i: done.append(i))
    assert writer.pending == 5
    with pytest.raises(StoreOverloaded):
        writer.submit(batch_for(4, 99))
    with pytest.raises(StoreOverloaded):
        await writer.commit(batch_for(4, 98))
    assert writer.pending == 5  # refused work was not queued
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        await writer.drain()
        # Once drained there is room again.
        await writer.commit(batch_for(4, 5))
        nursery.cancel_scope.cancel()
    assert done == [0, 1, 2, 3, 4]
    assert store.get(key(4, 99)) is None
    assert store.get(key(4, 98)) is None
    assert store.get(key(4, 5)) == value(4, 5)


async def test_drain_waits_for_everything_submitted(store: Store) -> None:
    writer = SlowWriter(store, 0.02, sync=True, in_thread=True, max_group_ops=10)
    done: list[int] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        for i in range(100):
            writer.submit(batch_for(5, i), lambda i=i: done.append(i))
        await writer.drain()
        assert done == list(range(100))
        assert all(store.get(key(5, i)) == value(5, i) for i in range(100))
        assert writer.pending == 0
        with trio.fail_after(1):
            await writer.drain()  # nothing pending: returns at once
        nursery.cancel_scope.cancel()


async def test_drain_waits_for_the_group_in_flight(store: Store) -> None:
    writer = SlowWriter(store, 0.3, sync=True, in_thread=True)
    done: list[int] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        writer.submit(batch_for(6, 0), lambda: done.append(0))
        # Let the writer take the batch: it is now in the (slow) disk write.
        with trio.fail_after(5):
            while writer.pending:
                await trio.sleep(0.001)
        assert not done
        await writer.drain()
        # Checked before cancelling: the writer finishes its write while unwinding anyway.
        drained = list(done)
        nursery.cancel_scope.cancel()
    assert drained == [0], "drain() returned while a submitted batch was not yet durable"


async def test_drain_waits_for_the_group_in_flight_mock_clock(
        store: Store, autojump_clock: trio.testing.MockClock) -> None:
    writer = GroupCommitWriter(store, sync=False, in_thread=False, flush_delay=1.0)
    done: list[int] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        writer.submit(batch_for(6, 1), lambda: done.append(1))
        await trio.sleep(0.5)  # the writer took the group and is flushing until t=1.0
        assert writer.pending == 0 and not done
        await writer.drain()
        drained = list(done)
        nursery.cancel_scope.cancel()
    assert drained == [1], "drain() returned while a submitted batch was not yet durable"


async def test_submit_after_writer_stopped_is_store_closed(store: Store) -> None:
    writer = GroupCommitWriter(store, sync=True, in_thread=True)
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        await writer.commit(batch_for(7, 0))
        nursery.cancel_scope.cancel()
    with pytest.raises(StoreClosed):
        writer.submit(batch_for(7, 1))
    with pytest.raises(StoreClosed):
        await writer.commit(batch_for(7, 2))
    assert store.get(key(7, 0)) == value(7, 0)
    assert store.get(key(7, 1)) is None
    assert store.get(key(7, 2)) is None


async def test_failed_write_stops_the_writer(store: Store) -> None:
    """A write error is fatal (the peer must not keep voting): run() raises and submit refuses."""
    writer = GroupCommitWriter(store, sync=True, in_thread=True)
    done: list[int] = []
    writer.submit(batch_for(8, 0), lambda: done.append(0))
    store.close()  # every write now fails
    with pytest.raises(StoreError):
        with trio.fail_after(5):
            await writer.run()
    assert done == [], "a batch that was not written must not be reported durable"
    with pytest.raises(StoreClosed):
        writer.submit(batch_for(8, 1))


async def test_disk_sync_leaves_the_event_loop_free(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """The sync here cannot finish until a task on the event loop runs: it would hang (and fail
    after 5 s) if the writer waited for the disk in the loop."""
    started, released = threading.Event(), threading.Event()
    real_sync = store.sync_wal

    def sync_wal() -> None:
        started.set()
        assert released.wait(5), "the event loop did not run while the disk synced"
        real_sync()

    monkeypatch.setattr(store, "sync_wal", sync_wal)
    writer = GroupCommitWriter(store, sync=True, in_thread=True)
    durable = trio.Event()
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        writer.submit(batch_for(11, 0), durable.set)
        assert await trio.to_thread.run_sync(started.wait, 5), "the writer never began to sync"
        assert not durable.is_set(), "reported durable before the log was synced"
        released.set()
        with trio.fail_after(5):
            await durable.wait()
        nursery.cancel_scope.cancel()
    assert store.get(key(11, 0)) == value(11, 0)


async def test_cancelling_the_writer_mid_write_finishes_the_write(store: Store) -> None:
    # abandon_on_cancel=False: a write that started completes before the writer unwinds.
    writer = SlowWriter(store, 0.2, sync=True, in_thread=True)
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        writer.submit(batch_for(9, 0, 4))
        while writer.pending:
            await trio.sleep(0.001)
        nursery.cancel_scope.cancel()
    assert all(store.get(key(9, 0, j)) == value(9, 0, j) for j in range(4))


# ------------------------------------------------------------------------------------------------
# in_thread=False under a mock clock (simulations)


async def test_in_loop_writer_groups_under_mock_clock(
        store: Store, autojump_clock: trio.testing.MockClock) -> None:
    delay = 0.005
    writer = GroupCommitWriter(store, sync=False, in_thread=False, flush_delay=delay)
    rng = random.Random(7)
    latencies: list[float] = []
    order: list[int] = []
    submitted: list[int] = []
    seq = iter(range(10**9))

    async def client() -> None:
        for _ in range(20):
            await trio.sleep(rng.uniform(0, 0.01))
            i = next(seq)
            submitted.append(i)
            t0 = trio.current_time()
            done = trio.Event()

            def cb(i: int = i, done: trio.Event = done) -> None:
                order.append(i)
                done.set()

            writer.submit(batch_for(10, i), cb)
            await done.wait()
            latencies.append(trio.current_time() - t0)

    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        async with trio.open_nursery() as clients:
            for _ in range(50):
                clients.start_soon(client)
        nursery.cancel_scope.cancel()

    stats = writer.stats
    assert stats.batches == 1000
    assert order == submitted
    # flush_delay stands in for the sync: each commit waits at least one of it, and grouping
    # means far fewer flushes than batches.
    assert min(latencies) >= delay
    assert stats.groups * 5 <= stats.batches, stats
    assert stats.write_seconds == pytest.approx(stats.groups * delay)
    # The mock clock advanced by about the flushes (plus the clients' random sleeps), no more.
    assert trio.current_time() - start <= stats.groups * delay + 20 * 0.01 + 1e-6
    assert all(store.get(key(10, i)) == value(10, i) for i in range(1000))


async def test_in_loop_writer_without_delay_still_completes(
        store: Store, autojump_clock: trio.testing.MockClock) -> None:
    writer = GroupCommitWriter(store, sync=False, in_thread=False)
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        with trio.fail_after(10):
            async with trio.open_nursery() as clients:
                for t in range(20):
                    clients.start_soon(writer.commit, batch_for(11, t))
        nursery.cancel_scope.cancel()
    assert writer.stats.batches == 20
    assert trio.current_time() == 0  # no time passes without a flush_delay
    assert all(store.get(key(11, t)) == value(11, t) for t in range(20))


def test_mean_group_is_nan_before_any_write(store: Store) -> None:
    import math

    assert math.isnan(GroupCommitWriter(store).mean_group)



async def test_commit_waiters_fail_when_the_writer_stops(tmp_path: Path) -> None:
    # A caller awaiting durability must hear that the writer is gone, not wait forever.
    store = Store.create(tmp_path / "db", bytes(32))
    writer = GroupCommitWriter(store, sync=False, in_thread=False, flush_delay=1.0)
    outcomes: list[str] = []

    async def waiter(i: int) -> None:
        batch = Batch()
        batch.put(b"T" + bytes([i]), b"v")
        try:
            await writer.commit(batch)
            outcomes.append("durable")
        except StoreClosed:
            outcomes.append("closed")

    async with trio.open_nursery() as outer:
        with trio.CancelScope() as writer_scope:
            async with trio.open_nursery() as inner:
                await inner.start(writer.run)
                for i in range(3):
                    outer.start_soon(waiter, i)
                await trio.sleep(0.01)  # the first group is in its flush delay, the rest queued
                writer_scope.cancel()
    assert sorted(outcomes) == ["closed", "closed", "closed"]
    store.close()
