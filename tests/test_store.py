"""The peer's RocksDB store: opening checks, typed tables, atomic batches, scans and damage.

Every test works under tmp_path. Stores are closed (and scan generators exhausted or dropped)
before the same path is reopened: rocksdict holds the RocksDB LOCK while any iterator lives.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from rocksdict import Options, Rdict

from crypto import codec
from store import (
    SCHEMA_VERSION,
    AccountState,
    Batch,
    HistoryEntry,
    Lock,
    NotADatabase,
    SchemaMismatch,
    Store,
    StoreClosed,
    StoreCorrupt,
    StoreError,
    WrongNetwork,
    layout,
)

NET = bytes(range(32))
OTHER_NET = bytes(range(100, 132))


def acct(n: int) -> bytes:
    """A 32-byte account id whose byte order follows `n` (so sorted ids are sorted numbers)."""
    return n.to_bytes(32, "big")


def oid(n: int) -> bytes:
    """A 32-byte order id distinct from account ids of the same number."""
    return b"\x0a" + n.to_bytes(31, "big")


def write(store: Store, *fill: tuple[bytes, bytes | None]) -> None:
    batch = Batch()
    for key, value in fill:
        if value is None:
            batch.delete(key)
        else:
            batch.put(key, value)
    store.write(batch, sync=True)


def keys(it: Iterator[tuple[bytes, bytes]]) -> list[bytes]:
    return [k for k, _ in it]


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "db"


@pytest.fixture
def store(db_path: Path) -> Iterator[Store]:
    s = Store.create(db_path, NET)
    yield s
    s.close()


def reopen(store: Store, network_id: bytes | None = NET) -> Store:
    store.close()
    return Store.open(store.path, network_id)


# ------------------------------------------------------------------------------------------------
# create / open round trip


def test_create_writes_meta_and_open_round_trips(db_path: Path) -> None:
    s = Store.create(db_path, NET)
    assert s.get_meta("schema") == SCHEMA_VERSION
    assert s.get_meta("network") == NET
    assert s.get_meta("magic") == b"meshpay-store"
    batch = Batch()
    batch.put_account(acct(1), AccountState(balance=42, next_seq=3))
    batch.put_cert(oid(9), b"certificate bytes")
    s.write(batch, sync=True)
    s.close()

    s = Store.open(db_path, NET)
    try:
        assert s.get_meta("schema") == SCHEMA_VERSION
        assert s.get_meta("network") == NET
        assert s.get_account(acct(1)) == AccountState(balance=42, next_seq=3)
        assert s.get_cert(oid(9)) == b"certificate bytes"
    finally:
        s.close()


def test_open_without_network_id_accepts_any_network(db_path: Path) -> None:
    Store.create(db_path, NET).close()
    s = Store.open(db_path)
    try:
        assert s.get_meta("network") == NET
    finally:
        s.close()


def test_create_makes_missing_parents(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "db"
    Store.create(path, NET).close()
    s = Store.open(path, NET)
    s.close()
    assert (path / "CURRENT").exists()


def test_create_accepts_an_existing_empty_directory(db_path: Path) -> None:
    db_path.mkdir()
    Store.create(db_path, NET).close()
    Store.open(db_path, NET).close()


# ------------------------------------------------------------------------------------------------
# typed tables


def test_typed_batch_helpers_use_the_documented_key_layout() -> None:
    # The layout doc is a contract (prefix scans and paging depend on it): check each helper's key.
    b = Batch()
    b.put_account(acct(1), AccountState())
    b.put_cert(oid(2), b"c")
    b.put_debit(acct(1), 258, oid(3))
    b.put_waiting(acct(1), 7, oid(4))
    b.delete_waiting(acct(1), 7)
    b.put_history(acct(1), 5, HistoryEntry(oid(5), layout.DIRECTION_DEBIT))
    b.put_lock(acct(1), 9, Lock(b"o", b"v"))
    b.delete_lock(acct(1), 9)
    b.put_applied(oid(6), layout.APPLIED_DEBIT)
    b.put_peer(b"p" * 32, b"rec")
    b.put_meta("x", 1)
    u = (258).to_bytes(8, "big")
    assert [k for k, _ in b.ops] == [
        b"A" + acct(1),
        b"C" + oid(2),
        b"S" + acct(1) + u,
        b"W" + acct(1) + (7).to_bytes(8, "big"),
        b"W" + acct(1) + (7).to_bytes(8, "big"),
        b"H" + acct(1) + (5).to_bytes(8, "big"),
        b"L" + acct(1) + (9).to_bytes(8, "big"),
        b"L" + acct(1) + (9).to_bytes(8, "big"),
        b"X" + oid(6),
        b"P" + b"p" * 32,
        b"Mx",
    ]
    # Deletes are recorded as value None, puts never are.
    assert [v is None for _, v in b.ops] == [False, False, False, False, True, False, False, True,
                                             False, False, False]
    assert len(b) == 11


def test_accounts_table(store: Store) -> None:
    states = {
        acct(3): AccountState(balance=-5, next_seq=2, credits=1, credit_digest=b"\x11" * 32, history=3),
        acct(1): AccountState(balance=10**15),
        acct(2): AccountState(),
    }
    b = Batch()
    for a, st in states.items():
        b.put_account(a, st)
    store.write(b, sync=True)
    assert store.get_account(acct(9)) is None
    for a, st in states.items():
        assert store.get_account(a) == st
    # accounts() walks the table in account order and yields decoded states.
    assert list(store.accounts()) == sorted(states.items())

    b = Batch()
    b.put_account(acct(2), AccountState(balance=7))
    store.write(b, sync=True)
    store = reopen(store)
    try:
        assert store.get_account(acct(2)) == AccountState(balance=7)
        assert len(list(store.accounts())) == 3
    finally:
        store.close()


def test_account_state_copy_is_independent() -> None:
    st = AccountState(balance=1, next_seq=2, credits=3, credit_digest=b"\x01" * 32, history=4)
    cp = st.copy()
    assert cp == st
    cp.balance = 99
    assert st.balance == 1


def test_certs_table(store: Store) -> None:
    b = Batch()
    b.put_cert(oid(1), b"cert-1")
    b.put_cert(oid(2), b"cert-2" * 100)
    store.write(b, sync=True)
    store = reopen(store)
    try:
        assert store.get_cert(oid(1)) == b"cert-1"
        assert store.get_cert(oid(2)) == b"cert-2" * 100
        assert store.get_cert(oid(3)) is None
    finally:
        store.close()


def test_debit_index(store: Store) -> None:
    b = Batch()
    b.put_debit(acct(1), 0, oid(10))
    b.put_debit(acct(1), 1, oid(11))
    b.put_debit(acct(2), 0, oid(20))
    store.write(b, sync=True)
    assert store.get_debit(acct(1), 0) == oid(10)
    assert store.get_debit(acct(1), 1) == oid(11)
    assert store.get_debit(acct(2), 0) == oid(20)
    assert store.get_debit(acct(2), 1) is None
    assert store.get_debit(acct(3), 0) is None


def test_waiting_table_order_and_delete(store: Store) -> None:
    b = Batch()
    # Insert out of order, with seqs whose little-endian order would differ from numeric order.
    b.put_waiting(acct(2), 1, oid(21))
    b.put_waiting(acct(1), 256, oid(12))
    b.put_waiting(acct(1), 1, oid(11))
    b.put_waiting(acct(1), 255, oid(13))
    store.write(b, sync=True)
    assert list(store.waiting()) == [
        (acct(1), 1, oid(11)),
        (acct(1), 255, oid(13)),
        (acct(1), 256, oid(12)),
        (acct(2), 1, oid(21)),
    ]
    b = Batch()
    b.delete_waiting(acct(1), 255)
    store.write(b, sync=True)
    assert [(a, s) for a, s, _ in store.waiting()] == [(acct(1), 1), (acct(1), 256), (acct(2), 1)]


def test_locks_table(store: Store) -> None:
    l1 = Lock(order=b"order-1", vote=b"vote-1")
    l2 = Lock(order=b"order-2", vote=b"vote-2" * 20)
    b = Batch()
    b.put_lock(acct(1), 65536, l2)
    b.put_lock(acct(1), 2, l1)
    b.put_lock(acct(3), 0, l1)
    store.write(b, sync=True)
    assert store.get_lock(acct(1), 2) == l1
    assert store.get_lock(acct(1), 65536) == l2
    assert store.get_lock(acct(1), 3) is None
    assert list(store.locks()) == [(acct(1), 2, l1), (acct(1), 65536, l2), (acct(3), 0, l1)]
    b = Batch()
    b.delete_lock(acct(1), 2)
    store.write(b, sync=True)
    store = reopen(store)
    try:
        assert store.get_lock(acct(1), 2) is None
        assert [(a, s) for a, s, _ in store.locks()] == [(acct(1), 65536), (acct(3), 0)]
    finally:
        store.close()


def test_applied_flags(store: Store) -> None:
    assert store.get_applied(oid(1)) == 0
    b = Batch()
    b.put_applied(oid(1), layout.APPLIED_DEBIT)
    b.put_applied(oid(2), layout.APPLIED_CREDIT)
    store.write(b, sync=True)
    assert store.get_applied(oid(1)) == layout.APPLIED_DEBIT
    assert store.get_applied(oid(2)) == layout.APPLIED_CREDIT
    b = Batch()
    b.put_applied(oid(1), layout.APPLIED_DEBIT | layout.APPLIED_CREDIT)
    store.write(b, sync=True)
    assert store.get_applied(oid(1)) == 3


def test_peers_table(store: Store) -> None:
    b = Batch()
    b.put_peer(b"\x02" * 32, b"record-2")
    b.put_peer(b"\x01" * 32, b"record-1")
    store.write(b, sync=True)
    assert store.get_peer(b"\x01" * 32) == b"record-1"
    assert store.get_peer(b"\x03" * 32) is None
    assert list(store.peers()) == [(b"\x01" * 32, b"record-1"), (b"\x02" * 32, b"record-2")]


def test_meta_values_round_trip(store: Store) -> None:
    b = Batch()
    b.put_meta("incarnation", 7)
    b.put_meta("name", "peer-a")
    b.put_meta("blob", b"\x00\xff")
    b.put_meta("list", [1, b"x", "y"])
    store.write(b, sync=True)
    store = reopen(store)
    try:
        assert store.get_meta("incarnation") == 7
        assert store.get_meta("name") == "peer-a"
        assert store.get_meta("blob") == b"\x00\xff"
        assert store.get_meta("list") == [1, b"x", "y"]
        assert store.get_meta("missing") is None
    finally:
        store.close()


def test_history_entries_decode(store: Store) -> None:
    e0 = HistoryEntry(oid(1), layout.DIRECTION_DEBIT)
    e1 = HistoryEntry(oid(2), layout.DIRECTION_CREDIT)
    b = Batch()
    b.put_history(acct(1), 0, e0)
    b.put_history(acct(1), 1, e1)
    store.write(b, sync=True)
    assert store.history(acct(1)) == [(1, e1), (0, e0)]
    assert store.history(acct(2)) == []


def test_malformed_stored_record_is_a_decode_error(store: Store) -> None:
    # A record of the wrong shape must not decode into a wrong-but-plausible value.
    from crypto.errors import DecodeError

    write(store, (layout.account_key(acct(1)), codec.encode([1, 2])))
    with pytest.raises(DecodeError):
        store.get_account(acct(1))


# ------------------------------------------------------------------------------------------------
# atomic batches


def test_batch_ops_apply_in_order(store: Store) -> None:
    # Put-then-delete leaves nothing; delete-then-put leaves the value; last put wins.
    write(store, (b"Tk1", b"v"), (b"Tk1", None), (b"Tk2", None), (b"Tk2", b"w"),
          (b"Tk3", b"a"), (b"Tk3", b"b"))
    assert store.get(b"Tk1") is None
    assert store.get(b"Tk2") == b"w"
    assert store.get(b"Tk3") == b"b"


def test_batch_with_a_bad_op_writes_nothing(store: Store) -> None:
    # The bad op is last: if ops were written one by one, the first two would already be in.
    batch = Batch()
    batch.put(b"Tgood1", b"1")
    batch.put(b"Tgood2", b"2")
    batch.ops.append(("not-bytes", b"3"))  # type: ignore[arg-type]
    with pytest.raises(KeyError, match="bytes"):  # rocksdict refuses it while building the batch
        store.write(batch, sync=True)
    assert store.get(b"Tgood1") is None
    assert store.get(b"Tgood2") is None


def test_batches_are_atomic_to_concurrent_readers(store: Store) -> None:
    """A reader's scan (an implicit snapshot) sees every batch whole or not at all.

    A writer thread commits batches of K keys (and deletes the previous batch's keys in the same
    batch) while the main thread scans: any scan seeing a partial batch, or two batches at once,
    would mean batches are not applied atomically.
    """
    k = 40
    n_batches = 300
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            for i in range(n_batches):
                b = Batch()
                if i:
                    for j in range(k):
                        b.delete(b"T" + (i - 1).to_bytes(8, "big") + j.to_bytes(2, "big"))
                for j in range(k):
                    b.put(b"T" + i.to_bytes(8, "big") + j.to_bytes(2, "big"), i.to_bytes(8, "big"))
                store.write(b, sync=False)
        except BaseException as exc:  # surfaced by the main thread
            errors.append(exc)
        finally:
            stop.set()

    t = threading.Thread(target=writer)
    t.start()
    scans = 0
    try:
        while not stop.is_set() or scans == 0:
            seen = list(store.scan(b"T"))
            scans += 1
            if not seen:
                continue
            batches = {key[1:9] for key, _ in seen}
            assert len(batches) == 1, f"scan saw {len(batches)} batches at once"
            assert len(seen) == k, f"scan saw a partial batch: {len(seen)} of {k} keys"
            assert all(v == key[1:9] for key, v in seen)
    finally:
        t.join()
    assert not errors, errors
    assert scans > 1
    assert {key[1:9] for key in keys(store.scan(b"T"))} == {(n_batches - 1).to_bytes(8, "big")}


# ------------------------------------------------------------------------------------------------
# scan


@pytest.fixture
def scan_store(store: Store) -> Store:
    """Keys under prefixes 'A' and neighbours that sort right next to it ('@' < 'A' < 'B')."""
    write(
        store,
        (b"@", b"at"), (b"@\xff\xff", b"at-ff"),
        (b"A", b"a-bare"), (b"A\x00", b"a0"), (b"A\x01", b"a1"), (b"A\x01\x00", b"a10"),
        (b"A\x05", b"a5"), (b"A\x7f\xff", b"a7fff"), (b"A\xfe", b"afe"),
        (b"B", b"b-bare"), (b"B\x00", b"b0"),
        # Multi-byte prefixes: 'H'+acct(1) sits right next to 'H'+acct(2) and 'H'+acct(1)+... .
        (b"H" + acct(1) + (0).to_bytes(8, "big"), b"h10"),
        (b"H" + acct(1) + (1).to_bytes(8, "big"), b"h11"),
        (b"H" + acct(2) + (0).to_bytes(8, "big"), b"h20"),
        (b"H" + acct(0) + (2**64 - 1).to_bytes(8, "big"), b"h0max"),
    )
    return store


A_KEYS = [b"A", b"A\x00", b"A\x01", b"A\x01\x00", b"A\x05", b"A\x7f\xff", b"A\xfe"]


def test_scan_forward_stays_inside_prefix(scan_store: Store) -> None:
    assert keys(scan_store.scan(b"A")) == A_KEYS
    assert [v for _, v in scan_store.scan(b"A")][:2] == [b"a-bare", b"a0"]
    assert keys(scan_store.scan(b"@")) == [b"@", b"@\xff\xff"]
    assert keys(scan_store.scan(b"B")) == [b"B", b"B\x00"]
    assert keys(scan_store.scan(b"A\x01")) == [b"A\x01", b"A\x01\x00"]
    assert keys(scan_store.scan(b"Z")) == []


def test_scan_reverse_stays_inside_prefix(scan_store: Store) -> None:
    assert keys(scan_store.scan(b"A", reverse=True)) == A_KEYS[::-1]
    assert keys(scan_store.scan(b"@", reverse=True)) == [b"@\xff\xff", b"@"]
    assert keys(scan_store.scan(b"A\x01", reverse=True)) == [b"A\x01\x00", b"A\x01"]
    assert keys(scan_store.scan(b"Z", reverse=True)) == []
    # 'C' has no keys: the reverse scan must not leak 'B' keys that sort just below it.
    assert keys(scan_store.scan(b"C", reverse=True)) == []


def test_scan_multibyte_prefixes_do_not_leak(scan_store: Store) -> None:
    h1 = b"H" + acct(1)
    assert keys(scan_store.scan(h1)) == [h1 + (0).to_bytes(8, "big"), h1 + (1).to_bytes(8, "big")]
    assert keys(scan_store.scan(h1, reverse=True)) == [h1 + (1).to_bytes(8, "big"),
                                                       h1 + (0).to_bytes(8, "big")]
    assert keys(scan_store.scan(b"H" + acct(0), reverse=True)) == [
        b"H" + acct(0) + (2**64 - 1).to_bytes(8, "big")]
    assert keys(scan_store.scan(b"H" + acct(3), reverse=True)) == []
    assert keys(scan_store.scan(b"H" + acct(3))) == []


def test_scan_start_forward_and_reverse(scan_store: Store) -> None:
    # start is inclusive when the key exists, and the next key in scan direction when not.
    assert keys(scan_store.scan(b"A", start=b"A\x01")) == A_KEYS[2:]
    assert keys(scan_store.scan(b"A", start=b"A\x02")) == [b"A\x05", b"A\x7f\xff", b"A\xfe"]
    assert keys(scan_store.scan(b"A", start=b"A\x05", reverse=True)) == [
        b"A\x05", b"A\x01\x00", b"A\x01", b"A\x00", b"A"]
    assert keys(scan_store.scan(b"A", start=b"A\x04", reverse=True)) == [
        b"A\x01\x00", b"A\x01", b"A\x00", b"A"]
    # A start past the end of the prefix gives nothing forward and everything in reverse.
    assert keys(scan_store.scan(b"A", start=b"A\xff")) == []
    assert keys(scan_store.scan(b"A", start=b"A\xff", reverse=True)) == A_KEYS[::-1]


def test_scan_limit(scan_store: Store) -> None:
    assert keys(scan_store.scan(b"A", limit=3)) == A_KEYS[:3]
    assert keys(scan_store.scan(b"A", limit=1, reverse=True)) == [b"A\xfe"]
    assert keys(scan_store.scan(b"A", limit=100)) == A_KEYS
    assert keys(scan_store.scan(b"A", start=b"A\x01", limit=2)) == [b"A\x01", b"A\x01\x00"]


def test_scan_limit_zero_yields_nothing(scan_store: Store) -> None:
    assert keys(scan_store.scan(b"A", limit=0)) == []


def test_scan_reverse_includes_keys_after_prefix_plus_ff16(store: Store) -> None:
    top = b"\xff" * 32
    b = Batch()
    b.put_account(acct(1), AccountState(balance=1))
    b.put_account(top, AccountState(balance=2))
    store.write(b, sync=True)
    assert keys(store.scan(layout.ACCOUNT, reverse=True)) == [b"A" + top, b"A" + acct(1)]


# ------------------------------------------------------------------------------------------------
# history paging


def _fill_history(store: Store, account: bytes, n: int) -> None:
    b = Batch()
    for i in range(n):
        b.put_history(account, i, HistoryEntry(oid(i), i % 2))
    store.write(b, sync=True)


@pytest.mark.parametrize("n,page", [(137, 10), (40, 40), (41, 40), (1, 5), (300, 1)])
def test_history_pages_newest_first_covering_all_once(store: Store, n: int, page: int) -> None:
    # Neighbour accounts on both sides must never show up in acct(5)'s pages.
    _fill_history(store, acct(4), 7)
    _fill_history(store, acct(6), 9)
    _fill_history(store, acct(5), n)
    seen: list[int] = []
    before: int | None = None
    pages = 0
    while True:
        got = store.history(acct(5), before=before, limit=page)
        if not got:
            break
        pages += 1
        assert len(got) <= page
        idx = [i for i, _ in got]
        assert idx == sorted(idx, reverse=True), "a page must be newest first"
        for i, entry in got:
            assert entry == HistoryEntry(oid(i), i % 2)
        seen.extend(idx)
        before = idx[-1]
    assert seen == list(range(n - 1, -1, -1))
    assert pages == -(-n // page)


def test_history_before_edges(store: Store) -> None:
    _fill_history(store, acct(5), 10)
    _fill_history(store, acct(6), 3)
    assert store.history(acct(5), before=0) == []
    assert [i for i, _ in store.history(acct(5), before=1)] == [0]
    assert [i for i, _ in store.history(acct(5), before=5, limit=2)] == [4, 3]
    # A cursor past the newest entry starts from the newest.
    assert [i for i, _ in store.history(acct(5), before=1000, limit=3)] == [9, 8, 7]
    assert [i for i, _ in store.history(acct(5), limit=3)] == [9, 8, 7]
    assert store.history(acct(7)) == []
    assert store.history(acct(7), before=5) == []


# ------------------------------------------------------------------------------------------------
# refusing what is not ours


def test_create_refuses_non_empty_directory(db_path: Path) -> None:
    db_path.mkdir()
    (db_path / "something").write_text("keep me")
    with pytest.raises(NotADatabase):
        Store.create(db_path, NET)
    assert (db_path / "something").read_text() == "keep me"
    assert not (db_path / "CURRENT").exists()


def test_create_refuses_existing_database(db_path: Path) -> None:
    Store.create(db_path, NET).close()
    with pytest.raises(NotADatabase):
        Store.create(db_path, OTHER_NET)
    s = Store.open(db_path, NET)  # untouched
    s.close()


def test_create_refuses_a_file(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_bytes(b"x")
    with pytest.raises(NotADatabase):
        Store.create(f, NET)


def test_open_refuses_missing_path(tmp_path: Path) -> None:
    with pytest.raises(NotADatabase):
        Store.open(tmp_path / "nope", NET)
    # Opening must not create anything.
    assert not (tmp_path / "nope").exists()


def test_open_refuses_a_file(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_bytes(b"x")
    with pytest.raises(NotADatabase):
        Store.open(f, NET)


def test_open_refuses_empty_and_junk_directories(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(NotADatabase):
        Store.open(empty, NET)
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("hello")
    (junk / "000001.log").write_bytes(b"\x00" * 100)
    with pytest.raises(NotADatabase):
        Store.open(junk, NET)
    assert sorted(p.name for p in junk.iterdir()) == ["000001.log", "notes.txt"]


def test_open_junk_current_file_is_a_store_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "CURRENT").write_text("garbage\n")
    with pytest.raises(StoreError) as info:
        Store.open(junk, NET)
    assert str(junk) in str(info.value)


def _foreign_db(path: Path, items: dict[bytes, bytes]) -> None:
    db = Rdict(str(path), Options(raw_mode=True))
    for k, v in items.items():
        db[k] = v
    db.close()


def test_open_refuses_foreign_rocksdb(tmp_path: Path) -> None:
    path = tmp_path / "foreign"
    _foreign_db(path, {b"hello": b"world"})
    with pytest.raises(NotADatabase) as info:
        Store.open(path, NET)
    assert "not meshpay" in str(info.value)
    # The refusal closed the database: it can be opened again (the LOCK was released).
    db = Rdict(str(path), Options(raw_mode=True))
    assert db[b"hello"] == b"world"
    db.close()


@pytest.mark.parametrize("magic", [b"\xff\xfe\xfd", codec.encode(b"other-store"), codec.encode(1)])
def test_open_refuses_foreign_rocksdb_with_a_magic_key(tmp_path: Path, magic: bytes) -> None:
    # Undecodable or different magic values are refused the same way, never with a decode error.
    path = tmp_path / "foreign"
    _foreign_db(path, {layout.meta_key("magic"): magic, layout.meta_key("schema"): codec.encode(1)})
    with pytest.raises(NotADatabase):
        Store.open(path, NET)


def test_open_refuses_non_raw_rocksdict(tmp_path: Path) -> None:
    path = tmp_path / "pickled"
    db = Rdict(str(path))
    db["key"] = {"a": 1}
    db.close()
    with pytest.raises(NotADatabase):
        Store.open(path, NET)


def test_newer_schema_is_refused(store: Store) -> None:
    b = Batch()
    b.put_meta("schema", SCHEMA_VERSION + 1)
    store.write(b, sync=True)
    store.close()
    with pytest.raises(SchemaMismatch) as info:
        Store.open(store.path, NET)
    assert "newer" in str(info.value)
    assert str(SCHEMA_VERSION + 1) in str(info.value)


def test_older_schema_is_refused_without_claiming_newer(store: Store) -> None:
    b = Batch()
    b.put_meta("schema", SCHEMA_VERSION - 1)
    store.write(b, sync=True)
    store.close()
    with pytest.raises(SchemaMismatch) as info:
        Store.open(store.path, NET)
    assert "newer" not in str(info.value)


def test_missing_schema_is_refused(store: Store) -> None:
    write(store, (layout.meta_key("schema"), None))
    store.close()
    with pytest.raises(SchemaMismatch):
        Store.open(store.path, NET)


def test_wrong_network_is_refused_and_db_is_released(store: Store) -> None:
    store.close()
    with pytest.raises(WrongNetwork) as info:
        Store.open(store.path, OTHER_NET)
    assert NET.hex()[:16] in str(info.value)
    assert OTHER_NET.hex()[:16] in str(info.value)
    # A refused open must close what it opened, or the right open would hit the LOCK.
    s = Store.open(store.path, NET)
    s.close()


def test_open_while_open_is_a_store_error(store: Store) -> None:
    with pytest.raises(StoreError) as info:
        Store.open(store.path, NET)
    assert "in use" in str(info.value)
    assert store.get_meta("network") == NET  # the first handle is unaffected


# ------------------------------------------------------------------------------------------------
# damage


def _flip(path: Path, offset: int, n: int = 8) -> None:
    data = bytearray(path.read_bytes())
    if offset < 0:
        offset += len(data)
    for k in range(offset, min(offset + n, len(data))):
        data[k] ^= 0xFF
    path.write_bytes(bytes(data))


def _flushed_store(path: Path, n_accounts: int) -> Path:
    """A closed store whose data (meta included) is in exactly one SST file; returns that file."""
    s = Store.create(path, NET)
    b = Batch()
    for i in range(n_accounts):
        # Varied balances so blocks do not compress into something tiny.
        b.put_account(acct(i), AccountState(balance=i * 7919, credit_digest=i.to_bytes(32, "little")))
    s.write(b, sync=True)
    s.db.flush()
    s.close()
    ssts = sorted(path.glob("*.sst"))
    assert len(ssts) == 1
    return ssts[0]


def _open_and_read_all(path: Path, n_accounts: int) -> None:
    """Open and read every record both ways; raise whatever the store raises."""
    s = Store.open(path, NET)
    try:
        for i in range(n_accounts):
            assert s.get_account(acct(i)) == AccountState(balance=i * 7919,
                                                          credit_digest=i.to_bytes(32, "little"))
        assert [a for a, _ in s.accounts()] == [acct(i) for i in range(n_accounts)]
    finally:
        s.close()


def test_corrupt_sst_footer_is_store_corrupt(db_path: Path) -> None:
    sst = _flushed_store(db_path, 20)
    _flip(sst, -8)  # the table magic number at the very end of the file
    with pytest.raises(StoreCorrupt) as info:
        Store.open(db_path, NET)
    assert "damaged" in str(info.value)
    assert str(db_path) in str(info.value)


@pytest.mark.parametrize("offset", [-30, -60, -200])
def test_corrupt_sst_tail_blocks_are_store_errors(db_path: Path, offset: int) -> None:
    # Index, properties and footer sit at the end of the file; RocksDB reads them when opening.
    sst = _flushed_store(db_path, 20)
    _flip(sst, offset)
    with pytest.raises(StoreError) as info:
        _open_and_read_all(db_path, 20)
    assert str(db_path) in str(info.value)


def test_corrupt_sst_data_block_holding_meta_is_store_corrupt_at_open(db_path: Path) -> None:
    sst = _flushed_store(db_path, 3)  # small: meta and accounts share the first data block
    _flip(sst, 10)
    try:
        Store.open(db_path, NET).close()
    except StoreError as exc:
        assert "damaged" in str(exc)
        return
    except Exception as exc:
        raise AssertionError(f"raw {type(exc).__name__} escaped Store.open: {exc}") from exc
    raise AssertionError("a damaged data block went unnoticed at open")


def test_corrupt_data_block_get_is_store_corrupt(db_path: Path) -> None:
    # Many accounts: the first data block holds only accounts, so open (meta reads) succeeds.
    sst = _flushed_store(db_path, 2000)
    _flip(sst, 10)
    s = Store.open(db_path, NET)
    try:
        s.get_account(acct(0))
    except StoreError:
        return
    except Exception as exc:
        raise AssertionError(f"raw {type(exc).__name__} escaped Store.get: {exc}") from exc
    finally:
        s.close()
    raise AssertionError("reading a damaged block returned data")


def test_corrupt_data_block_scan_is_not_silently_truncated(db_path: Path) -> None:
    sst = _flushed_store(db_path, 2000)
    _flip(sst, 10)
    s = Store.open(db_path, NET)
    try:
        got = [a for a, _ in s.accounts()]
    except StoreError:
        return
    finally:
        s.close()
    assert len(got) == 2000, f"scan silently returned {len(got)} of 2000 accounts"


# ------------------------------------------------------------------------------------------------
# after close


def test_use_after_close_raises_store_closed(store: Store) -> None:
    store.close()
    store.close()  # idempotent
    with pytest.raises(StoreClosed):
        store.get(b"x")
    with pytest.raises(StoreClosed):
        store.get_account(acct(1))
    with pytest.raises(StoreClosed):
        store.get_meta("schema")
    with pytest.raises(StoreClosed):
        store.write(Batch(), sync=True)
    with pytest.raises(StoreClosed):
        store.write_ops([(b"k", b"v")], sync=False)
    with pytest.raises(StoreClosed):
        list(store.scan(b"A"))
    with pytest.raises(StoreClosed):
        list(store.accounts())
    with pytest.raises(StoreClosed):
        store.history(acct(1))
    with pytest.raises(StoreClosed):
        _ = store.db
    # StoreClosed is a StoreError, so callers catching the family catch it too.
    assert issubclass(StoreClosed, StoreError)
