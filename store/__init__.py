"""The peer's RocksDB store: key layout, typed access, atomic batches and group commit."""

from store.db import SCHEMA_VERSION, Batch, Store
from store.errors import (
    NotADatabase,
    SchemaMismatch,
    StoreClosed,
    StoreCorrupt,
    StoreError,
    StoreOverloaded,
    WrongNetwork,
)
from store.group_commit import GroupCommitWriter
from store.layout import AccountState, HistoryEntry, Lock

__all__ = [
    "SCHEMA_VERSION",
    "AccountState",
    "Batch",
    "GroupCommitWriter",
    "HistoryEntry",
    "Lock",
    "NotADatabase",
    "SchemaMismatch",
    "Store",
    "StoreClosed",
    "StoreCorrupt",
    "StoreError",
    "StoreOverloaded",
    "WrongNetwork",
]
