"""The encrypted channel: batching, and refusal of tampered, replayed, reordered or foreign frames."""

from __future__ import annotations

import os
from collections import deque

import pytest
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from hypothesis import given
from hypothesis import strategies as st

from crypto.errors import RemoteProtocolError
from gossip.channel import (
    MESSAGE_OVERHEAD,
    TAG_SIZE,
    ChannelError,
    Opener,
    Sealer,
    max_message,
    pack,
    take_batch,
    unpack,
)

KEY = bytes(range(32))


def pair() -> tuple[Sealer, Opener]:
    return Sealer(KEY), Opener(KEY)


def test_batch_round_trip_in_order() -> None:
    sealer, opener = pair()
    batch = [b"a", b"", b"x" * 1000, bytes(range(256))]
    assert opener.open(sealer.seal(batch)) == batch
    assert opener.open(sealer.seal([b"next"])) == [b"next"]
    assert opener.open(sealer.seal([])) == []


@given(st.lists(st.lists(st.binary(max_size=300), max_size=20), max_size=10))
def test_any_sequence_of_batches_round_trips(batches: list[list[bytes]]) -> None:
    sealer, opener = pair()
    for batch in batches:
        assert opener.open(sealer.seal(batch)) == batch


def test_one_frame_per_batch_and_fresh_nonces() -> None:
    sealer, _ = pair()
    first, second = sealer.seal([b"same"]), sealer.seal([b"same"])
    assert first != second
    assert len(first) == TAG_SIZE + MESSAGE_OVERHEAD + 4


def test_tampered_frame_refused() -> None:
    sealer, opener = pair()
    frame = bytearray(sealer.seal([b"pay 10 to bob"]))
    frame[5] ^= 0x01
    with pytest.raises(ChannelError):
        opener.open(bytes(frame))


def test_replayed_frame_refused() -> None:
    sealer, opener = pair()
    frame = sealer.seal([b"pay 10 to bob"])
    assert opener.open(frame) == [b"pay 10 to bob"]
    with pytest.raises(ChannelError):
        opener.open(frame)


def test_reordered_frames_refused() -> None:
    sealer, opener = pair()
    first, second = sealer.seal([b"1"]), sealer.seal([b"2"])
    with pytest.raises(ChannelError):
        opener.open(second)
    assert opener.open(first) == [b"1"]  # a refused frame does not advance the counter


def test_dropped_frame_detected() -> None:
    sealer, opener = pair()
    sealer.seal([b"lost"])
    with pytest.raises(ChannelError):
        opener.open(sealer.seal([b"after"]))


def test_frame_from_another_key_or_direction_refused() -> None:
    sealer = Sealer(os.urandom(32))
    with pytest.raises(ChannelError):
        Opener(KEY).open(sealer.seal([b"x"]))


@pytest.mark.parametrize("frame", [b"", b"short", bytes(range(7, 7 + TAG_SIZE)), bytes(range(200, 256)) + bytes(8)],
                         ids=["empty", "short", "tag-size", "64-bytes"])
def test_garbage_frames_refused(frame: bytes) -> None:
    with pytest.raises(ChannelError):
        Opener(KEY).open(frame)


@pytest.mark.parametrize("plaintext", [b"\x00\x00", b"\x00\x00\x00\x05abc", b"\x00\x00\x00\x01a\x00"])
def test_authentic_but_badly_batched_plaintext_refused(plaintext: bytes) -> None:
    nonce = bytes(12)
    frame = ChaCha20Poly1305(KEY).encrypt(nonce, plaintext, None)
    with pytest.raises(ChannelError):
        Opener(KEY).open(frame)


def test_channel_error_is_a_remote_error() -> None:
    assert issubclass(ChannelError, RemoteProtocolError)
    assert ChannelError("x").penalty == 10


def test_pack_unpack_inverse() -> None:
    msgs = [b"", b"a", b"bc" * 100]
    assert unpack(pack(msgs)) == msgs


def test_take_batch_fills_one_frame_and_keeps_the_rest_in_order() -> None:
    max_frame = 4096
    queue = deque(bytes([i]) * 500 for i in range(20))
    batch = take_batch(queue, max_frame)
    assert len(batch) == (max_frame - TAG_SIZE) // (500 + MESSAGE_OVERHEAD)
    assert [m[0] for m in batch] == list(range(len(batch)))
    assert queue[0][0] == len(batch)
    sealer = Sealer(KEY, max_frame)
    assert len(sealer.seal(batch)) <= max_frame
    taken = len(batch)
    while queue:
        nxt = take_batch(queue, max_frame)
        assert nxt[0][0] == taken
        taken += len(nxt)
    assert taken == 20


def test_largest_message_fits_exactly() -> None:
    max_frame = 2048
    queue = deque([b"x" * max_message(max_frame), b"y"])
    batch = take_batch(queue, max_frame)
    assert batch == [b"x" * max_message(max_frame)]
    assert len(Sealer(KEY, max_frame).seal(batch)) == max_frame
    with pytest.raises(ValueError):
        take_batch(deque([b"x" * (max_message(max_frame) + 1)]), max_frame)
    with pytest.raises(ValueError):
        Sealer(KEY, max_frame).seal([b"x" * max_frame])
