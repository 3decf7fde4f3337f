"""crypto.codec strictness: every non-canonical or exotic CBOR input is a DecodeError, nothing else.

`pytest.raises(DecodeError)` lets any other exception type propagate as a test error, so each
refusal test also checks that no other exception escapes.
"""

from __future__ import annotations

from typing import Any

import cbor2
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from crypto import codec
from crypto.errors import DecodeError
from crypto.schema import Message, decode_any, registered
from tests.strategies import any_message

# Fuzz tests run at least 1000 examples; the soak profile (20k) raises that.
FUZZ_EXAMPLES = max(1000, settings.default.max_examples)  # `make fuzz` runs a million
FUZZ = settings(max_examples=FUZZ_EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


def same(a: Any, b: Any) -> bool:
    """Equality that also compares types (True == 1 in Python, but not on the wire)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return (len(a) == len(b)
                and all(any(same(k, k2) for k2 in b) for k in a)
                and all(same(v, b[k]) for k, v in a.items()))
    return bool(a == b)


def refuse(data: Any, **kwargs: Any) -> None:
    with pytest.raises(DecodeError):
        codec.decode_value(data, **kwargs)


# ---- what must be accepted (so the refusals below are not trivially "refuse everything") -------

@pytest.mark.parametrize(("hexdata", "value"), [
    ("00", 0), ("17", 23), ("1818", 24), ("18ff", 255), ("190100", 256), ("19ffff", 65535),
    ("1a00010000", 65536), ("1affffffff", 2**32 - 1), ("1b0000000100000000", 2**32),
    ("1bffffffffffffffff", 2**64 - 1), ("20", -1), ("3bffffffffffffffff", -(2**64)),
    ("40", b""), ("4401020304", b"\x01\x02\x03\x04"), ("60", ""), ("6449455446", "IETF"),
    ("80", []), ("83010203", [1, 2, 3]), ("a0", {}), ("a201020304", {1: 2, 3: 4}),
    ("f4", False), ("f5", True), ("f6", None),
    ("81" * 16 + "00", [[[[[[[[[[[[[[[[0]]]]]]]]]]]]]]]]),  # exactly MAX_DEPTH levels
])
def test_accepts_canonical(hexdata: str, value: Any) -> None:
    decoded = codec.decode_value(h(hexdata))
    assert same(decoded, value)
    assert codec.encode(decoded) == h(hexdata)


def test_accepts_bytearray_and_memoryview() -> None:
    assert codec.decode_value(bytearray(h("83010203"))) == [1, 2, 3]
    assert codec.decode_value(memoryview(h("83010203"))) == [1, 2, 3]


# ---- non-canonical integers and lengths ---------------------------------------------------------

@pytest.mark.parametrize("hexdata", [
    "1800", "1817", "190000", "1900ff", "1a00000000", "1a0000ffff", "1b0000000000000000",
    "1b00000000ffffffff",                     # non-minimal unsigned ints
    "3800", "3817", "390000", "3a00000000", "3b0000000000000000",  # non-minimal negative ints
    "5800", "580141", "59000141", "5a0000000141", "5b000000000000000141",  # byte string lengths
    "7800", "780161", "79000161",       # text string lengths
    "9800", "980100", "99000100",             # array lengths
    "b800", "b8010000",                       # map lengths
    "82011800",                              # array holding 1 then a non-minimal 0
])
def test_refuses_non_minimal_integers_and_lengths(hexdata: str) -> None:
    refuse(h(hexdata))


# ---- indefinite lengths -------------------------------------------------------------------------

@pytest.mark.parametrize("hexdata", [
    "5fff", "5f4101ff", "5f41014102ff",       # indefinite byte strings
    "7fff", "7f6161ff",                       # indefinite text strings
    "9fff", "9f01ff", "9f0102ff",             # indefinite arrays
    "bfff", "bf0102ff",                       # indefinite maps
    "819f01ff",                               # nested inside a definite array
    "ff", "8101ff",                           # stray break codes
])
def test_refuses_indefinite_lengths(hexdata: str) -> None:
    refuse(h(hexdata))


# ---- tags ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("hexdata", [
    "c074323031332d30332d32315432303a30343a30305a",   # 0: RFC 3339 datetime
    "c11a514b67b0",                                   # 1: epoch datetime
    "c1fb41d452d9ec200000",                           # 1: epoch datetime as float
    "c249010000000000000000",                         # 2: positive bignum 2**64
    "c249000000000000000001",                         # 2: bignum with a small value
    "c349010000000000000000",                         # 3: negative bignum
    "c48221196ab3",                                   # 4: decimal fraction 273.15
    "c5822003",                                       # 5: bigfloat
    "d50102", "d6420102", "d7420102",                 # 21-23: expected base conversions
    "d818420100",                                     # 24: embedded CBOR
    "d81900",                                         # 25: stringref
    "d81a83000000",                                   # 26: serialised object
    "d81c8101",                                       # 28: shareable
    "d81d00",                                         # 29: shared reference
    "d81e820103",                                     # 30: rational
    "d82076687474703a2f2f7777772e6578616d706c652e636f6d",  # 32: URI
    "d8216161", "d8226161",                           # 33/34: base64url / base64
    "d82363616263",                                   # 35: regex
    "d8246161",                                       # 36: MIME message
    "d82550000102030405060708090a0b0c0d0e0f",         # 37: UUID
    "d9010080",                                       # 256: stringref namespace
    "d9010280",                                       # 258: set
    "d9d9f700", "d9d9f78101",                         # 55799: self-describe CBOR
    "da0001000000", "dbffffffffffffffff00",           # huge tag numbers
    "c0c000",                                         # tag of a tag
    "8101c100",                                       # tag inside an array
    "a1c10000",                                       # tag as a map key
    "a100c100",                                       # tag as a map value
])
def test_refuses_tags(hexdata: str) -> None:
    refuse(h(hexdata))


def test_refuses_every_small_tag_with_any_content() -> None:
    # No tag number may be special-cased by cbor2 and slip through (stringrefs, shared refs, sets).
    contents = [b"\x00", b"\x40", b"\x60", b"\x80", b"\xa0", b"\x41\x01", b"\x82\x00\x00",
                b"\x1a\x51\x4b\x67\xb0", b"\x63abc", b"\xf6"]
    tags = [*range(0, 300), 55799, 55800, 2**16, 2**32 - 1, 2**32, 2**63, 2**64 - 1]
    for tag in tags:
        head = cbor2.dumps(cbor2.CBORTag(tag, None))[:-1]  # tag header without the None payload
        for content in contents:
            refuse(head + content)


# ---- floats, undefined, simple values, reserved encodings ---------------------------------------

@pytest.mark.parametrize("hexdata", [
    "f90000", "f98000", "f93c00", "f97bff", "f97c00", "f9fc00", "f97e00",  # half
    "fa00000000", "fa3f800000", "fa7f800000", "fa7fc00000",                # single
    "fb0000000000000000", "fb3ff0000000000000", "fb7ff8000000000000",      # double
    "8201f93c00", "a101fa3f800000", "a1f93c0001",                          # nested floats
])
def test_refuses_floats(hexdata: str) -> None:
    refuse(h(hexdata))


@pytest.mark.parametrize("hexdata", [
    "f7",                                   # undefined
    "e0", "ef", "f0", "f3",                 # simple values 0..19
    "f820", "f8ff",                         # one-byte simple values 32..255
    "f800", "f818", "f81f",                 # invalid two-byte simple values (< 32)
    "fc", "fd", "fe",                       # reserved additional info in major type 7
    "8101f7", "a101f0",                     # nested
])
def test_refuses_undefined_and_simple_values(hexdata: str) -> None:
    refuse(h(hexdata))


@pytest.mark.parametrize("major", range(8))
@pytest.mark.parametrize("info", [28, 29, 30])
def test_refuses_reserved_additional_info(major: int, info: int) -> None:
    refuse(bytes([(major << 5) | info]) + b"\x00" * 8)


# ---- maps ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("hexdata", [
    "a201000100", "a2616100616101", "a241004100", "a220002001",
    "a3010002000101",                       # duplicate key not adjacent to its twin
    "a201f5f500",                           # 1 and true collide as Python dict keys
])
def test_refuses_duplicate_map_keys(hexdata: str) -> None:
    refuse(h(hexdata))


@pytest.mark.parametrize("hexdata", [
    "a202000100",                           # 2 before 1
    "a2616200616100",                       # "b" before "a"
    "a3010003000200",                       # 1, 3, 2
    "a21820000100",                         # longer key encoding before a shorter one
])
def test_refuses_unsorted_map_keys(hexdata: str) -> None:
    refuse(h(hexdata))


@pytest.mark.parametrize("hexdata", ["a18000", "a182010200", "a1a000", "a1f93c0000"])
def test_refuses_non_scalar_map_keys(hexdata: str) -> None:
    refuse(h(hexdata))


def test_canonical_map_order_is_what_encode_produces() -> None:
    # The refusal above relies on the decoder and encoder agreeing on the order.
    value = {b"b": 1, "a": 2, 10: 3, -1: 4, 300: 5, "aa": 6}
    data = codec.encode(value)
    assert codec.decode_value(data) == value


# ---- framing: trailing bytes, truncation, empty, oversize, wrong input type ---------------------

@pytest.mark.parametrize("suffix", [b"\x00", b"\xff", b"\x80", b"\x01\x02", b"\x00" * 100])
def test_refuses_trailing_bytes(suffix: bytes) -> None:
    refuse(h("83010203") + suffix)
    refuse(h("00") + suffix)


def test_refuses_every_truncation() -> None:
    data = codec.encode([1, b"\x00" * 40, "text", {1: [2, 3]}, True, None, 2**40, -(2**33)])
    assert codec.decode_value(data) is not None
    for cut in range(len(data)):
        refuse(data[:cut])


def test_refuses_empty_input() -> None:
    refuse(b"")
    refuse(bytearray())


def test_refuses_oversize_input() -> None:
    data = codec.encode(b"x" * 100)
    assert codec.decode_value(data, max_size=len(data)) == b"x" * 100
    refuse(data, max_size=len(data) - 1)
    big = codec.encode(b"\x00" * codec.DEFAULT_MAX_SIZE)  # over the default by its header
    refuse(big)


@pytest.mark.parametrize("hexdata", [
    "5b7fffffffffffffff", "5bffffffffffffffff", "7b7fffffffffffffff", "9b7fffffffffffffff",
    "bb7fffffffffffffff", "5affffffff00", "9affffffff00", "baffffffff0000",
])
def test_refuses_absurd_declared_lengths(hexdata: str) -> None:
    # Must fail fast on the missing data, not try to allocate gigabytes.
    refuse(h(hexdata))


@pytest.mark.parametrize("data", ["83010203", 7, None, [1, 2], bytearray, object()],
                         ids=["str", "int", "None", "list", "type", "object"])
def test_refuses_non_bytes_input(data: Any) -> None:
    refuse(data)


@pytest.mark.parametrize("hexdata", ["62c328", "61ff", "61c3", "63eda080", "62c0af", "64f8888080"])
def test_refuses_invalid_utf8(hexdata: str) -> None:
    refuse(h(hexdata))


@pytest.mark.parametrize("depth", [17, 18, 100, 100_000])
@pytest.mark.parametrize("opener", ["81", "a100"])
def test_refuses_deep_nesting(depth: int, opener: str) -> None:
    refuse(h(opener) * depth + b"\x00")


def test_refuses_deep_nesting_in_map_values_and_mixed() -> None:
    refuse(h("81a100") * 9 + b"\x00")   # 18 levels alternating arrays and maps


# ---- property tests -----------------------------------------------------------------------------

_SCALARS = st.one_of(
    st.integers(-(2**64), 2**64 - 1), st.binary(max_size=40), st.text(max_size=20),
    st.booleans(), st.none(),
)
_KEYS = st.one_of(st.integers(-(2**64), 2**64 - 1), st.binary(max_size=8), st.text(max_size=8))
PLAIN = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(_KEYS, inner, max_size=5)),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(PLAIN)
def test_plain_values_round_trip(value: Any) -> None:
    data = codec.encode(value)
    decoded = codec.decode_value(data)
    assert same(decoded, value)
    assert codec.encode(decoded) == data


def _check_decode_value(data: bytes) -> None:
    try:
        value = codec.decode_value(data)
    except DecodeError:
        return
    # Success means the bytes were exactly the canonical encoding of the value.
    assert codec.encode(value) == data


def _check_decode_any(data: bytes) -> None:
    try:
        msg = decode_any(data)
    except DecodeError:
        return
    assert isinstance(msg, Message)
    assert registered()[msg.KIND] is type(msg)
    assert msg.encode() == data
    assert type(msg).decode(data) == msg


@FUZZ
@given(st.binary(max_size=2000))
def test_random_bytes_decode_value_only_decode_error(data: bytes) -> None:
    _check_decode_value(data)


@FUZZ
@given(st.binary(max_size=2000))
def test_random_bytes_decode_any_only_decode_error(data: bytes) -> None:
    _check_decode_any(data)


# Random bytes rarely get past the first byte; sequences of CBOR heads reach deeper decoder paths.
_HEADS = st.one_of(
    st.integers(0, 255).map(lambda b: bytes([b])),
    st.tuples(st.integers(0, 7), st.sampled_from([24, 25, 26, 27]), st.binary(min_size=8, max_size=8))
    .map(lambda t: bytes([(t[0] << 5) | t[1]]) + t[2][: 1 << (t[1] - 24)]),
    st.sampled_from([b"\x82\x01\x01", b"\x87\x01\x01", b"\x83\x02\x01", b"\x5820" + bytes(32),
                     b"\x5840" + bytes(64), b"\x60", b"\xa1", b"\xc2", b"\xd9\xd9\xf7", b"\xf9\x3c\x00"]),
)


@FUZZ
@given(st.lists(_HEADS, min_size=1, max_size=30).map(b"".join))
def test_cbor_shaped_garbage_only_decode_error(data: bytes) -> None:
    _check_decode_value(data)
    _check_decode_any(data)


_MUTATION = st.tuples(st.sampled_from(["flip", "insert", "delete", "truncate", "set"]),
                      st.integers(0, 10_000), st.integers(1, 255))


def _mutate(data: bytes, mutations: list[tuple[str, int, int]]) -> bytes:
    buf = bytearray(data)
    for op, pos, byte in mutations:
        if not buf:
            break
        i = pos % len(buf)
        if op == "flip":
            buf[i] ^= byte
        elif op == "set":
            buf[i] = byte
        elif op == "insert":
            buf.insert(pos % (len(buf) + 1), byte)
        elif op == "delete":
            del buf[i]
        else:
            del buf[i:]
    return bytes(buf)


@FUZZ
@given(any_message(), st.lists(_MUTATION, min_size=1, max_size=3))
def test_mutated_messages_only_decode_error(msg: Message, mutations: list[tuple[str, int, int]]) -> None:
    original = msg.encode()
    data = _mutate(original, mutations)
    assume(data != original)
    _check_decode_value(data)
    _check_decode_any(data)
    # The class-specific decoder must agree: refuse, or give a valid message of that class.
    try:
        other = type(msg).decode(data)
    except DecodeError:
        return
    assert type(other) is type(msg)
    assert other != msg
    assert other.encode() == data
