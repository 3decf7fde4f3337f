"""Account addresses: a mistyped address is refused, never decoded to some other key."""

from __future__ import annotations

import hashlib
from typing import Any

import bech32
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crypto.address import ADDRESS_LENGTH, HRP, decode_address, encode_address
from crypto.errors import AddressError
from crypto.keys import SigningKey

CHARSET = bech32.CHARSET
KEYS = [SigningKey.from_seed(hashlib.sha256(name).digest()).public
        for name in (b"zero", b"ones", b"alice", b"bob")]


def refuse(text: Any) -> None:
    with pytest.raises(AddressError):
        decode_address(text)


def checksum_with(hrp: str, data: list[int], const: int) -> str:
    """bech32-style string with an arbitrary checksum constant (1 = bech32, 0x2bc830a3 = bech32m)."""
    values = bech32.bech32_hrp_expand(hrp) + data
    polymod = bech32.bech32_polymod([*values, 0, 0, 0, 0, 0, 0]) ^ const
    return hrp + "1" + "".join(CHARSET[d] for d in data + [(polymod >> 5 * (5 - i)) & 31 for i in range(6)])


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=32, max_size=32).map(lambda seed: SigningKey.from_seed(seed).public))
def test_round_trip(key: bytes) -> None:
    address = encode_address(key)
    assert len(address) == ADDRESS_LENGTH
    assert address.startswith(HRP + "1")
    assert address == address.lower()
    assert decode_address(address) == key
    assert decode_address(address.upper()) == key  # bech32 allows all-upper (e.g. for QR codes)


def test_distinct_keys_give_distinct_addresses() -> None:
    addresses = {encode_address(k) for k in KEYS}
    assert len(addresses) == len(KEYS)


@pytest.mark.parametrize("key", KEYS, ids=["zero", "ones", "alice", "bob"])
def test_every_single_character_substitution_refused(key: bytes) -> None:
    address = encode_address(key)
    # The whole bech32 alphabet, the characters it excludes, and the case-flipped original.
    alphabet = CHARSET + "1bio" + "BIO" + CHARSET.upper() + "-_ .:"
    tried = 0
    for pos, original in enumerate(address):
        for char in alphabet:
            if char == original:
                continue
            refuse(address[:pos] + char + address[pos + 1:])
            tried += 1
    assert tried > ADDRESS_LENGTH * len(CHARSET)


@pytest.mark.parametrize("key", KEYS, ids=["zero", "ones", "alice", "bob"])
def test_adjacent_transpositions_refused(key: bytes) -> None:
    address = encode_address(key)
    swapped = 0
    for i in range(len(address) - 1):
        if address[i] == address[i + 1]:
            continue  # swapping equal characters is not an error
        refuse(address[:i] + address[i + 1] + address[i] + address[i + 2:])
        swapped += 1
    assert swapped > 0


@pytest.mark.parametrize("key", KEYS, ids=["zero", "ones", "alice", "bob"])
def test_single_insertions_and_deletions_refused(key: bytes) -> None:
    address = encode_address(key)
    for pos in range(len(address) + 1):
        for char in "qp" + CHARSET[::5]:
            refuse(address[:pos] + char + address[pos:])
    for pos in range(len(address)):
        refuse(address[:pos] + address[pos + 1:])


def test_q_insertion_before_final_p_refused() -> None:
    # Bech32's known weakness: a "q" inserted or deleted right before a final "p" keeps the
    # checksum valid. Fixed-length addresses must still refuse it.
    key = next(k for k in (hashlib.sha256(bytes([i])).digest() for i in range(10_000))
               if encode_address(k).endswith("p"))
    address = encode_address(key)
    assert bech32.bech32_decode(address[:-1] + "qp")[0] == HRP  # the checksum alone would pass
    refuse(address[:-1] + "qp")
    if address.endswith("qp"):
        refuse(address[:-2] + "p")


@pytest.mark.parametrize("hrp", ["bc", "tb", "mq", "np", "m", "mpp", "Mx"])
def test_wrong_prefix_refused(hrp: str) -> None:
    data = bech32.convertbits(list(KEYS[2]), 8, 5, True)
    refuse(bech32.bech32_encode(hrp, data))


@pytest.mark.parametrize("size", [0, 1, 20, 31, 33, 40, 64])
def test_wrong_key_length_refused(size: int) -> None:
    data = bech32.convertbits(list(b"\x07" * size), 8, 5, True)
    text = bech32.bech32_encode(HRP, data)
    assert bech32.bech32_decode(text)[0] == HRP  # well-formed bech32, only the payload is wrong
    refuse(text)


def test_nonzero_padding_bits_refused() -> None:
    # 52 data characters hold 260 bits: the last 4 must be zero, or one key has 16 addresses.
    key = KEYS[2]
    data = bech32.convertbits(list(key), 8, 5, True)
    for pad in range(1, 16):
        variant = [*data[:-1], data[-1] | pad]
        text = bech32.bech32_encode(HRP, variant)
        assert len(text) == ADDRESS_LENGTH
        refuse(text)


def test_bech32m_checksum_refused() -> None:
    data = bech32.convertbits(list(KEYS[2]), 8, 5, True)
    assert checksum_with(HRP, data, 1) == encode_address(KEYS[2])  # the helper is right
    refuse(checksum_with(HRP, data, 0x2BC830A3))


def test_wrong_length_refused() -> None:
    address = encode_address(KEYS[2])
    for text in ["", "mp1", address[:-1], address + "q", address * 2, address[:ADDRESS_LENGTH - 6]]:
        refuse(text)


@pytest.mark.parametrize("key", KEYS, ids=["zero", "ones", "alice", "bob"])
def test_mixed_case_refused(key: bytes) -> None:
    address = encode_address(key)
    changed = 0
    for pos, char in enumerate(address):
        if char.isalpha():
            refuse(address[:pos] + char.upper() + address[pos + 1:])
            upper = address.upper()
            refuse(upper[:pos] + char.lower() + upper[pos + 1:])
            changed += 1
    assert changed > 0


def test_all_upper_case_accepted() -> None:
    for key in KEYS:
        assert decode_address(encode_address(key).upper()) == key


@pytest.mark.parametrize("value", [None, 42, b"mp1qqqq", bytearray(b"mp1"), ["mp1"], 3.5, object()],
                         ids=["None", "int", "bytes", "bytearray", "list", "float", "object"])
def test_non_string_refused(value: Any) -> None:
    refuse(value)


def test_non_string_address_bytes_refused() -> None:
    # The correct address as bytes is still not an address.
    refuse(encode_address(KEYS[2]).encode())


def test_internal_whitespace_and_unicode_refused() -> None:
    address = encode_address(KEYS[2])
    for pos in (3, 30, 60):
        refuse(address[:pos] + " " + address[pos + 1:])
    refuse(address.replace("q", "\u0071\u0307", 1))      # combining mark
    refuse(address[:-1] + "\uff50")                       # full-width letter


def test_address_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        decode_address("mp1notanaddress")


@pytest.mark.parametrize("size", [0, 31, 33])
def test_encode_refuses_wrong_key_size(size: int) -> None:
    with pytest.raises(ValueError):
        encode_address(b"\x01" * size)


@pytest.mark.parametrize("raw", [
    bytes(32),                                  # small order (and the obvious "burn" address)
    bytes([1]) + bytes(31),                     # the identity point: signs anything
    (2).to_bytes(32, "little"),                 # y = 2 is not on the curve
    b"\xff" * 31 + b"\x7f",                   # y >= p: a non-canonical encoding
], ids=["zero", "identity", "off-curve", "non-canonical"])
def test_unusable_keys_have_no_address(raw: bytes) -> None:
    # Such an address may encode fine (bech32 does not know about curves) but must never be paid.
    data = bech32.convertbits(list(raw), 8, 5, True)
    refuse(bech32.bech32_encode(HRP, data))
