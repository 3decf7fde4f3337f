"""Canonical CBOR: the only encoding meshpay signs, hashes or sends.

`decode_value` is strict: no tags, no indefinite lengths, no floats or simple values other than
true/false/null, no duplicate map keys, bounded depth and size, and the input must be exactly the
canonical encoding of what it decodes to (so one value never has two encodings and message ids
are not malleable). Any failure is a `DecodeError`; nothing else escapes.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, NoReturn

import cbor2

from crypto.errors import DecodeError

MAX_DEPTH = 16
DEFAULT_MAX_SIZE = 1 << 20  # one message; frames and schemas set tighter limits


class _DenyAllTags(Mapping[int, Any]):
    """Replaces cbor2's built-in semantic decoders: every tag is refused.

    Tags are how CBOR smuggles in datetimes, regexes, bignums and shared references (which would
    let a small input expand into a huge structure when re-encoded); meshpay uses none of them.
    """

    def __getitem__(self, tag: int) -> Any:
        def refuse(*_args: object) -> NoReturn:
            raise DecodeError(f"CBOR tag {tag} is not allowed")

        return refuse

    def __contains__(self, tag: object) -> bool:
        return True

    def __iter__(self) -> Iterator[int]:
        return iter(())

    def __len__(self) -> int:
        return 0


_DENY_TAGS = _DenyAllTags()


def _refuse_unknown_tag(_decoder: object, tag: object) -> NoReturn:
    raise DecodeError("CBOR tags are not allowed")


def encode(value: Any) -> bytes:
    """Canonical (deterministic) CBOR encoding of plain values: int, bytes, str, list, dict, bool, None."""
    try:
        return cbor2.dumps(value, canonical=True)
    except (cbor2.CBOREncodeError, TypeError, ValueError) as exc:
        raise ValueError(f"cannot encode {type(value).__name__}: {exc}") from exc


def _check_plain(value: Any, depth: int) -> None:
    # Floats, undefined and simple values decode fine in cbor2 but have no place in a message.
    kind = type(value)
    if kind in (int, bytes, str, bool) or value is None:
        return
    if depth > MAX_DEPTH:
        raise DecodeError("CBOR nesting too deep")
    if kind is list:
        for item in value:
            _check_plain(item, depth + 1)
        return
    if kind is dict:
        for key, item in value.items():
            _check_plain(key, depth + 1)
            _check_plain(item, depth + 1)
        return
    raise DecodeError(f"CBOR value of type {kind.__name__} is not allowed")


def decode_value(data: bytes, *, max_size: int = DEFAULT_MAX_SIZE, typed: bool = False) -> Any:
    """Decode untrusted bytes into plain values, refusing anything non-canonical or exotic.

    `typed=True` skips the walk that refuses floats and simple values: the caller (a message
    schema) checks the exact type of every element itself.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise DecodeError(f"expected bytes, got {type(data).__name__}")
    if len(data) > max_size:
        raise DecodeError(f"message of {len(data)} bytes exceeds the limit of {max_size}")
    if not data:
        raise DecodeError("empty message")
    raw = bytes(data)
    try:
        value = cbor2.loads(
            raw,
            semantic_decoders=_DENY_TAGS,
            tag_hook=_refuse_unknown_tag,
            allow_indefinite=False,
            allow_duplicate_keys=False,
            max_depth=MAX_DEPTH,
            str_errors="strict",
        )
    except DecodeError:
        raise
    except RecursionError as exc:
        raise DecodeError("CBOR nesting too deep") from exc
    except Exception as exc:
        # cbor2's C decoder raises assorted types (CBORDecodeError, ValueError, OverflowError,
        # UnicodeDecodeError, MemoryError on absurd lengths); all mean "malformed input".
        raise DecodeError(f"malformed CBOR: {exc}") from exc
    if not typed:
        _check_plain(value, 0)
    try:
        canonical = cbor2.dumps(value, canonical=True)
    except Exception as exc:
        raise DecodeError(f"value cannot be re-encoded: {exc}") from exc
    if canonical != raw:
        # Covers trailing bytes, non-minimal integers/lengths and unsorted map keys alike.
        raise DecodeError("bytes are not the canonical encoding of their value")
    return value
