"""Child process for tests/test_store_crash.py: commit batches through group commit until killed.

    python -m tests.store_crash_child DBPATH

Creates the store (or opens it, continuing after the highest batch already there), runs a
GroupCommitWriter (sync=True, in_thread=True) and several trio tasks that each commit batches in a
loop. Batch i writes KEYS_PER_BATCH keys `batch_key(i, j)` with values `batch_value(i, j)`; once
`await writer.commit(batch)` returns it prints `ack <i>` and flushes stdout, so every acked batch
is one the store promised is durable. The parent SIGKILLs this process at a random moment.

Batch numbers are taken and submitted with no checkpoint in between, so submission order is
batch-number order; the parent relies on that to check that recovery keeps a prefix.
"""

from __future__ import annotations

import contextlib
import struct
import sys
from pathlib import Path

import trio

from store import Batch, GroupCommitWriter, Store

NETWORK = b"crash-test-network".ljust(32, b"\x00")
PREFIX = b"T"
KEYS_PER_BATCH = 5
TASKS = 8
VALUE_PAD = 300  # bytes per value: groups span several pages, so a kill can tear a WAL write
MAX_RUNTIME = 30.0  # never outlive a parent that died without killing us

_I = struct.Struct(">Q")


def batch_key(i: int, j: int) -> bytes:
    return PREFIX + _I.pack(i) + bytes([j])


def batch_value(i: int, j: int) -> bytes:
    # Encodes i and j, padded with bytes derived from both so a mixed-up value is detectable.
    return _I.pack(i) + bytes([j]) + bytes([(i * 31 + j) & 0xFF]) * VALUE_PAD


def parse_key(key: bytes) -> tuple[int, int]:
    return _I.unpack(key[1:9])[0], key[9]


def open_or_create(path: Path) -> Store:
    if path.exists():
        return Store.open(path, NETWORK)
    return Store.create(path, NETWORK)


def next_batch_number(store: Store) -> int:
    last = next(iter(store.scan(PREFIX, reverse=True, limit=1)), None)
    return 0 if last is None else parse_key(last[0])[0] + 1


async def main(path: Path) -> None:
    store = open_or_create(path)
    writer = GroupCommitWriter(store, sync=True, in_thread=True)
    counter = [next_batch_number(store)]
    out = sys.stdout

    async def client() -> None:
        while True:
            i = counter[0]
            counter[0] += 1
            batch = Batch()
            for j in range(KEYS_PER_BATCH):
                batch.put(batch_key(i, j), batch_value(i, j))
            await writer.commit(batch)
            out.write(f"ack {i}\n")
            out.flush()

    with trio.move_on_after(MAX_RUNTIME):
        async with trio.open_nursery() as nursery:
            await nursery.start(writer.run)
            for _ in range(TASKS):
                nursery.start_soon(client)
    store.close()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m tests.store_crash_child DBPATH")
    with contextlib.suppress(BrokenPipeError):  # the parent went away
        trio.run(main, Path(sys.argv[1]))
