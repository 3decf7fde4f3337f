"""A peer's RocksDB (rocksdict): open with schema and network checks, typed reads, atomic batches."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from rocksdict import BlockBasedOptions, DBCompressionType, Options, Rdict, WriteBatch, WriteOptions

from crypto import codec
from crypto.errors import DecodeError
from store import layout
from store.errors import (
    NotADatabase,
    SchemaMismatch,
    StoreClosed,
    StoreCorrupt,
    StoreError,
    WrongNetwork,
)

SCHEMA_VERSION = 2  # 2: epochs (chain, approvals, hold sets, handoff tables)
MAGIC = b"meshpay-store"
WRITE_BUFFER = 8 << 20  # bytes of memtable before a flush to a table file


class Batch:
    """Writes that must land together. Kept as a list so the group-commit writer can merge many."""

    __slots__ = ("ops",)

    def __init__(self) -> None:
        self.ops: list[tuple[bytes, bytes | None]] = []

    def put(self, key: bytes, value: bytes) -> None:
        self.ops.append((key, value))

    def delete(self, key: bytes) -> None:
        self.ops.append((key, None))

    def __len__(self) -> int:
        return len(self.ops)

    # typed helpers
    def put_account(self, account: bytes, state: layout.AccountState) -> None:
        self.put(layout.account_key(account), state.encode())

    def put_cert(self, order_id: bytes, cert: bytes) -> None:
        self.put(layout.cert_key(order_id), cert)

    def put_debit(self, account: bytes, seq: int, order_id: bytes) -> None:
        self.put(layout.debit_key(account, seq), order_id)

    def put_waiting(self, account: bytes, seq: int, order_id: bytes) -> None:
        self.put(layout.waiting_key(account, seq), order_id)

    def delete_waiting(self, account: bytes, seq: int) -> None:
        self.delete(layout.waiting_key(account, seq))

    def put_history(self, account: bytes, index: int, entry: layout.HistoryEntry) -> None:
        self.put(layout.history_key(account, index), entry.encode())

    def put_lock(self, account: bytes, seq: int, lock: layout.Lock) -> None:
        self.put(layout.lock_key(account, seq), lock.encode())

    def delete_lock(self, account: bytes, seq: int) -> None:
        self.delete(layout.lock_key(account, seq))

    def put_applied(self, order_id: bytes, flags: int) -> None:
        self.put(layout.applied_key(order_id), layout.u64(flags))

    def put_peer(self, peer_id: bytes, record: bytes) -> None:
        self.put(layout.peer_key(peer_id), record)

    def delete_peer(self, peer_id: bytes) -> None:
        self.delete(layout.peer_key(peer_id))

    def put_meta(self, name: str, value: object) -> None:
        self.put(layout.meta_key(name), codec.encode(value))

    def put_epoch(self, epoch: int, cert: bytes) -> None:
        self.put(layout.epoch_key(layout.EPOCH, epoch), cert)

    def put_approval(self, epoch: int, approval: bytes) -> None:
        self.put(layout.epoch_key(layout.APPROVAL, epoch), approval)

    def put_epoch_record(self, epoch: int, record: layout.EpochRecord) -> None:
        self.put(layout.epoch_key(layout.EPOCH_RECORD, epoch), record.encode())

    def put_holds(self, account: bytes, seq: int, orders: tuple[bytes, ...]) -> None:
        self.put(layout.hold_key(account, seq), layout.encode_holds(orders))

    def delete_holds(self, account: bytes, seq: int) -> None:
        self.delete(layout.hold_key(account, seq))

    def put_handoff(self, epoch: int, record: layout.HandoffRecord) -> None:
        self.put(layout.epoch_key(layout.HANDOFF, epoch), record.encode())

    def put_stream(self, epoch: int, peer: bytes, record: layout.StreamRecord) -> None:
        self.put(layout.stream_key(epoch, peer), record.encode())

    def put_report(self, epoch: int, account: bytes, peer: bytes, report: bytes) -> None:
        self.put(layout.report_key(epoch, account, peer), report)

    def put_ready(self, epoch: int, account: bytes) -> None:
        self.put(layout.ready_key(epoch, account), b"")


def _next_prefix(prefix: bytes) -> bytes | None:
    """The smallest key greater than every key starting with `prefix` (None if there is none)."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes((stripped[-1] + 1,))


def _wrap_rocks_error(path: Path, exc: Exception) -> StoreError:
    text = str(exc)
    if "Corruption" in text or "checksum" in text.lower():
        return StoreCorrupt(f"database at {path} is damaged: {text}")
    if "lock" in text.lower():
        return StoreError(f"database at {path} is in use by another process: {text}")
    return StoreError(f"cannot open database at {path}: {text}")


class Store:
    """One peer's database. Not thread-safe except `write`/`write_ops` and `sync_wal`, which the
    group-commit writer calls from its worker thread."""

    def __init__(self, db: Rdict, path: Path) -> None:
        self._db: Rdict | None = db
        self.path = path
        self._sync = WriteOptions()
        self._sync.sync = True
        self._nosync = WriteOptions()

    # opening -----------------------------------------------------------------------------------
    @staticmethod
    def _options(create: bool) -> Options:
        opts = Options(raw_mode=True)
        opts.create_if_missing(create)
        opts.set_paranoid_checks(True)
        # Bounded background resources: several peers share two cores in a devnet.
        opts.set_max_background_jobs(2)
        opts.set_keep_log_file_num(3)
        # Most point reads are for keys that do not exist yet (is this payment new?): a bloom filter
        # answers those without touching the data blocks.
        table = BlockBasedOptions()
        table.set_bloom_filter(10, False)
        opts.set_block_based_table_factory(table)
        opts.set_memtable_prefix_bloom_ratio(0.1)
        # A small memtable: inserting a random key (order ids are random) into RocksDB's default
        # 64 MiB skiplist got slower as it filled (a 40-key batch cost 220 us CPU on an empty one,
        # 600 us near full on the benchmark machine), so CPU per payment crept up run after run on
        # the same devnet until a flush; 8 MiB keeps it near the bottom of that curve.
        opts.set_write_buffer_size(WRITE_BUFFER)
        # Keys, ids and signatures are random bytes: compressing tables costs CPU and saves nothing.
        opts.set_compression_type(DBCompressionType.none())
        return opts

    @classmethod
    def create(cls, path: Path | str, network_id: bytes) -> Store:
        """Create a new, empty database; refuses a path that already holds anything."""
        path = Path(path)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise NotADatabase(f"{path} already exists and is not empty; refusing to create a database there")
        path.mkdir(parents=True, exist_ok=True)
        try:
            db = Rdict(str(path), cls._options(create=True))
        except Exception as exc:
            raise _wrap_rocks_error(path, exc) from exc
        store = cls(db, path)
        batch = Batch()
        batch.put_meta("magic", MAGIC)
        batch.put_meta("schema", SCHEMA_VERSION)
        batch.put_meta("network", network_id)
        store.write(batch, sync=True)
        return store

    @classmethod
    def open(cls, path: Path | str, network_id: bytes | None = None) -> Store:
        """Open an existing database, checking it is meshpay's, of this schema and this network."""
        path = Path(path)
        if not path.is_dir():
            raise NotADatabase(f"no database at {path}")
        if not (path / "CURRENT").exists():
            raise NotADatabase(f"{path} is not a RocksDB database (no CURRENT file)")
        try:
            db = Rdict(str(path), cls._options(create=False))
        except Exception as exc:
            raise _wrap_rocks_error(path, exc) from exc
        store = cls(db, path)
        try:
            store._check(network_id)
        except BaseException:
            store.close()
            raise
        return store

    def _check(self, network_id: bytes | None) -> None:
        try:
            magic = self.get_meta("magic")
        except DecodeError as exc:
            raise NotADatabase(f"{self.path} is a RocksDB database but not meshpay's") from exc
        if magic != MAGIC:
            raise NotADatabase(f"{self.path} is a RocksDB database but not meshpay's")
        version = self.get_meta("schema")
        if version != SCHEMA_VERSION:
            newer = isinstance(version, int) and version > SCHEMA_VERSION
            older = isinstance(version, int) and version < SCHEMA_VERSION
            hint = ""
            if newer:
                hint = " (it was written by a newer meshpay)"
            elif older:
                hint = (" (it was written by an older meshpay, before epochs; there is no migration: "
                        "start this peer on a fresh data directory, it catches up from the network)")
            raise SchemaMismatch(
                f"database at {self.path} has storage schema {version!r}; this meshpay reads schema "
                f"{SCHEMA_VERSION}" + hint
            )
        stored = self.get_meta("network")
        if network_id is not None and stored != network_id:
            raise WrongNetwork(
                f"database at {self.path} belongs to network {stored.hex()[:16] if isinstance(stored, bytes) else stored!r}, "
                f"not {network_id.hex()[:16]}"
            )

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    @property
    def db(self) -> Rdict:
        if self._db is None:
            raise StoreClosed(f"database at {self.path} is closed")
        return self._db

    # raw access ------------------------------------------------------------------------------------
    def get(self, key: bytes) -> bytes | None:
        try:
            return self.db.get(key)
        except StoreClosed:
            raise
        except Exception as exc:
            raise _wrap_rocks_error(self.path, exc) from exc

    def scan(self, prefix: bytes, *, start: bytes | None = None, reverse: bool = False,
             limit: int | None = None) -> Iterator[tuple[bytes, bytes]]:
        """Keys under `prefix` in order (from `start` when given, inclusive), each with its value.

        Uses a raw iterator and checks its status at the end: RocksDB ends iteration early on a
        checksum error, which must surface as `StoreCorrupt`, not as a silently short result.
        """
        if limit is not None and limit <= 0:
            return
        it = self.db.iter()
        try:
            if reverse:
                if start is not None:
                    it.seek_for_prev(start)
                else:
                    upper = _next_prefix(prefix)
                    if upper is None:
                        it.seek_to_last()
                    else:
                        it.seek_for_prev(upper)
                        if it.valid() and it.key() == upper:
                            it.prev()
            else:
                it.seek(start if start is not None else prefix)
            count = 0
            while it.valid():
                key = it.key()
                if not key.startswith(prefix):
                    break
                yield key, it.value()
                count += 1
                if limit is not None and count >= limit:
                    return
                if reverse:
                    it.prev()
                else:
                    it.next()
            try:
                it.status()
            except Exception as exc:
                raise _wrap_rocks_error(self.path, exc) from exc
        finally:
            del it

    def write(self, batch: Batch, *, sync: bool) -> None:
        self.write_ops(batch.ops, sync=sync)

    def write_ops(self, ops: list[tuple[bytes, bytes | None]], *, sync: bool) -> None:
        wb = WriteBatch(raw_mode=True)
        for key, value in ops:
            if value is None:
                wb.delete(key)
            else:
                wb.put(key, value)
        try:
            self.db.write(wb, self._sync if sync else self._nosync)
        except StoreClosed:
            raise
        except Exception as exc:
            raise StoreError(f"write to {self.path} failed: {exc}") from exc

    def sync_wal(self) -> None:
        """Make every write so far durable by syncing the write-ahead log.

        Unlike a write with `sync=True`, during which rocksdict holds the GIL for the whole fsync
        (freezing every other thread, the event loop included), `flush_wal` releases it.
        """
        try:
            self.db.flush_wal(True)
        except StoreClosed:
            raise
        except Exception as exc:
            raise StoreError(f"sync of {self.path}'s write-ahead log failed: {exc}") from exc

    # typed reads -------------------------------------------------------------------------------
    def get_meta(self, name: str) -> object:
        raw = self.get(layout.meta_key(name))
        return None if raw is None else codec.decode_value(raw)

    def get_account(self, account: bytes) -> layout.AccountState | None:
        raw = self.get(layout.account_key(account))
        return None if raw is None else layout.AccountState.decode(raw)

    def get_cert(self, order_id: bytes) -> bytes | None:
        return self.get(layout.cert_key(order_id))

    def get_debit(self, account: bytes, seq: int) -> bytes | None:
        return self.get(layout.debit_key(account, seq))

    def get_lock(self, account: bytes, seq: int) -> layout.Lock | None:
        raw = self.get(layout.lock_key(account, seq))
        return None if raw is None else layout.Lock.decode(raw)

    def get_applied(self, order_id: bytes) -> int:
        raw = self.get(layout.applied_key(order_id))
        return 0 if raw is None else layout.read_u64(raw)

    def get_peer(self, peer_id: bytes) -> bytes | None:
        return self.get(layout.peer_key(peer_id))

    def accounts(self) -> Iterator[tuple[bytes, layout.AccountState]]:
        for key, value in self.scan(layout.ACCOUNT):
            yield key[1:], layout.AccountState.decode(value)

    def locks(self) -> Iterator[tuple[bytes, int, layout.Lock]]:
        for key, value in self.scan(layout.LOCK):
            yield key[1:33], layout.read_u64(key[33:]), layout.Lock.decode(value)

    def waiting(self) -> Iterator[tuple[bytes, int, bytes]]:
        for key, value in self.scan(layout.WAITING):
            yield key[1:33], layout.read_u64(key[33:]), value

    def history(self, account: bytes, *, before: int | None = None, limit: int = 50) -> list[tuple[int, layout.HistoryEntry]]:
        """Newest first; `before` is an exclusive history index for paging."""
        prefix = layout.HISTORY + account
        start = None if before is None else layout.history_key(account, before - 1) if before > 0 else None
        if before is not None and before <= 0:
            return []
        out = []
        for key, value in self.scan(prefix, start=start, reverse=True, limit=limit):
            out.append((layout.read_u64(key[33:]), layout.HistoryEntry.decode(value)))
        return out

    def peers(self) -> Iterator[tuple[bytes, bytes]]:
        for key, value in self.scan(layout.PEER):
            yield key[1:], value

    # epochs and handoff ----------------------------------------------------------------------------
    def epoch_certificates(self) -> Iterator[tuple[int, bytes]]:
        """(epoch, certificate bytes) in ascending epoch order."""
        for key, value in self.scan(layout.EPOCH):
            yield layout.read_u64(key[1:9]), value

    def approvals(self) -> Iterator[tuple[int, bytes]]:
        for key, value in self.scan(layout.APPROVAL):
            yield layout.read_u64(key[1:9]), value

    def epoch_records(self) -> Iterator[tuple[int, layout.EpochRecord]]:
        for key, value in self.scan(layout.EPOCH_RECORD):
            yield layout.read_u64(key[1:9]), layout.EpochRecord.decode(value)

    def holds(self) -> Iterator[tuple[bytes, int, tuple[bytes, ...]]]:
        for key, value in self.scan(layout.HOLD):
            yield key[1:33], layout.read_u64(key[33:]), layout.decode_holds(value)

    def handoffs(self) -> Iterator[tuple[int, layout.HandoffRecord]]:
        for key, value in self.scan(layout.HANDOFF):
            yield layout.read_u64(key[1:9]), layout.HandoffRecord.decode(value)

    def streams(self, epoch: int) -> Iterator[tuple[bytes, layout.StreamRecord]]:
        prefix = layout.STREAM + layout.u64(epoch)
        for key, value in self.scan(prefix):
            yield key[9:], layout.StreamRecord.decode(value)

    def reports(self, epoch: int) -> Iterator[tuple[bytes, bytes, bytes]]:
        """(account, reporter, report bytes) received in the handoff into `epoch`."""
        prefix = layout.REPORT + layout.u64(epoch)
        for key, value in self.scan(prefix):
            yield key[9:41], key[41:], value

    def ready_accounts(self, epoch: int) -> Iterator[bytes]:
        prefix = layout.READY + layout.u64(epoch)
        for key, _ in self.scan(prefix):
            yield key[9:]

    def keys_under(self, prefix: bytes) -> list[bytes]:
        """Every key under `prefix` (to delete a finished handoff's rows)."""
        return [key for key, _ in self.scan(prefix)]

