"""Hypothesis strategies derived from message schemas, for every registered message kind.

`messages(cls)` reads `cls._specs` and builds a strategy of valid instances, so a new message type
is covered by the generic tests as soon as it is registered. `any_message()` is lazy: it looks at
`crypto.schema.registered()` on first draw (i.e. after pytest has imported every test module), so
gossip/settlement/client kinds registered by other packages are included as long as some test
module imports them.

A package that adds a new `FieldSpec` subclass registers its generator with `@spec_strategy`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

import crypto.messages  # noqa: F401  (registers the core message kinds)
import gossip.wire  # noqa: F401  (gossip kinds)
import peer.client_wire
import peer.genesis
import peer.wire  # noqa: F401  (settlement kinds)
from crypto.schema import (
    Bool,
    Bytes,
    FieldSpec,
    ListOf,
    Message,
    Nested,
    Text,
    UInt,
    registered,
)

M = TypeVar("M", bound=Message)
S = TypeVar("S", bound=FieldSpec)

# Small collections keep examples fast; bounds at the limits are tested with maximal_message().
MAX_LIST = 5
MAX_VAR_BYTES = 64
MAX_TEXT_CHARS = 300

_BUILDERS: dict[type[FieldSpec], Callable[[Any], SearchStrategy[Any]]] = {}


def spec_strategy(
    spec_type: type[S],
) -> Callable[[Callable[[S], SearchStrategy[Any]]], Callable[[S], SearchStrategy[Any]]]:
    """Register how to generate valid values for one FieldSpec subclass."""

    def wrap(fn: Callable[[S], SearchStrategy[Any]]) -> Callable[[S], SearchStrategy[Any]]:
        _BUILDERS[spec_type] = fn
        return fn

    return wrap


def field_values(spec: FieldSpec) -> SearchStrategy[Any]:
    """Valid Python values for one field spec (looked up along the spec's MRO)."""
    for klass in type(spec).__mro__:
        builder = _BUILDERS.get(klass)
        if builder is not None:
            return builder(spec)
    raise TypeError(
        f"no strategy for {type(spec).__name__}; register one with tests.strategies.spec_strategy"
    )


# Printable per str.isprintable(): no Other (C*) or Separator (Z*) categories except ASCII space.
_PRINTABLE_CHARS = st.one_of(
    st.characters(codec="utf-8", exclude_categories=("C", "Z")),
    st.just(" "),
)


def _trim_utf8(text: str, max_bytes: int) -> str:
    # Cut at a byte budget without splitting a character (a dropped partial char stays printable).
    return text.encode("utf-8")[:max_bytes].decode("utf-8", "ignore")


def printable_text(max_bytes: int) -> SearchStrategy[str]:
    """Printable text whose UTF-8 encoding is at most `max_bytes` bytes."""
    ascii_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E),
                         max_size=min(max_bytes, MAX_TEXT_CHARS))
    unicode_text = st.text(_PRINTABLE_CHARS, max_size=min(max_bytes, MAX_TEXT_CHARS)).map(
        lambda s: _trim_utf8(s, max_bytes)
    )
    return st.one_of(ascii_text, unicode_text, st.just("a" * min(max_bytes, MAX_TEXT_CHARS)))


@spec_strategy(UInt)
def _uint(spec: UInt) -> SearchStrategy[int]:
    # Boundaries explicitly: hypothesis does find them, but not reliably for 64-bit ranges.
    return st.one_of(st.sampled_from(sorted({spec.low, spec.high})), st.integers(spec.low, spec.high))


@spec_strategy(Bytes)
def _bytes(spec: Bytes) -> SearchStrategy[bytes]:
    if spec.size is not None:
        return st.binary(min_size=spec.size, max_size=spec.size)
    return st.binary(max_size=min(spec.max_size, MAX_VAR_BYTES))


@spec_strategy(Text)
def _text(spec: Text) -> SearchStrategy[str]:
    return printable_text(spec.max_bytes)


@spec_strategy(Bool)
def _bool(spec: Bool) -> SearchStrategy[bool]:
    return st.booleans()


@spec_strategy(Nested)
def _nested(spec: Nested) -> SearchStrategy[Message]:
    # deferred: a message type may (indirectly) contain itself through a list.
    return st.deferred(lambda: messages(spec.cls))


@spec_strategy(ListOf)
def _list(spec: ListOf) -> SearchStrategy[tuple[Any, ...]]:
    high = max(spec.min_len, min(spec.max_len, MAX_LIST))
    return st.lists(field_values(spec.item), min_size=spec.min_len, max_size=high).map(tuple)


_CACHE: dict[type[Message], SearchStrategy[Message]] = {}


def messages(cls: type[M]) -> SearchStrategy[M]:
    """Valid instances of a registered message class, derived from `cls._specs`."""
    cached = _CACHE.get(cls)
    if cached is None:
        fields = [field_values(spec) for _, spec in cls._specs]
        cached = st.tuples(*fields).map(lambda args: cls(*args))
        _CACHE[cls] = cached
    return cached  # type: ignore[return-value]


def any_message() -> SearchStrategy[Message]:
    """Any registered message; the registry is read on first draw, not at import time."""

    def build() -> SearchStrategy[Message]:
        classes = [cls for _, cls in sorted(registered().items())]
        return st.one_of(*(messages(cls) for cls in classes))

    return st.deferred(build)


# ---- deterministic extremes, for the bounds that random examples rarely reach -----------------

def _extreme_value(spec: FieldSpec, biggest: bool) -> Any:
    if isinstance(spec, UInt):
        return spec.high if biggest else spec.low
    if isinstance(spec, Bytes):
        if spec.size is not None:
            return b"\xff" * spec.size if biggest else bytes(spec.size)
        return b"\xff" * spec.max_size if biggest else b""
    if isinstance(spec, Text):
        return "a" * spec.max_bytes if biggest else ""
    if isinstance(spec, Bool):
        return biggest
    if isinstance(spec, Nested):
        return _extreme_message(spec.cls, biggest)
    if isinstance(spec, ListOf):
        count = spec.max_len if biggest else spec.min_len
        return tuple(_extreme_value(spec.item, biggest) for _ in range(count))
    raise TypeError(f"no extreme value for {type(spec).__name__}")


def _extreme_message(cls: type[M], biggest: bool) -> M:
    return cls(*(_extreme_value(spec, biggest) for _, spec in cls._specs))


def minimal_message(cls: type[M]) -> M:
    """The smallest valid instance: low ints, empty text, shortest lists."""
    return _extreme_message(cls, biggest=False)


def maximal_message(cls: type[M]) -> M:
    """The largest valid instance: every field at its upper bound (must still fit MAX_SIZE)."""
    return _extreme_message(cls, biggest=True)


def minimal_value(spec: FieldSpec) -> Any:
    return _extreme_value(spec, biggest=False)


def maximal_value(spec: FieldSpec) -> Any:
    return _extreme_value(spec, biggest=True)
