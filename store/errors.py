"""Errors opening or using a peer's database."""

from __future__ import annotations

from crypto.errors import MeshpayError


class StoreError(MeshpayError):
    """The database cannot be used."""


class NotADatabase(StoreError):
    """The path holds something other than a meshpay database (or nothing, when opening)."""


class SchemaMismatch(StoreError):
    """The database was written by a meshpay with a different storage schema."""


class WrongNetwork(StoreError):
    """The database belongs to a different network (genesis)."""


class StoreCorrupt(StoreError):
    """RocksDB found damage it cannot recover from (checksum mismatch, broken manifest...)."""


class StoreClosed(StoreError):
    """The store was closed (or the writer stopped) while work was still being submitted."""


class StoreOverloaded(StoreError):
    """The group-commit queue is full; the caller should refuse work rather than queue it."""
