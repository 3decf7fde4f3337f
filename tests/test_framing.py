"""Tests for gossip.framing: length-prefixed frames over a byte stream, decoded sans-IO.

The decoder faces untrusted peers, so besides round trips these tests pin the limits: an oversize
announcement is refused from the header alone, and the buffer stays bounded.
"""

from __future__ import annotations

import itertools
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crypto.errors import MeshpayError, RemoteProtocolError
from gossip.framing import (
    DEFAULT_MAX_FRAME,
    FrameDecoder,
    FrameError,
    FrameTooLarge,
    TruncatedFrame,
    encode_frame,
)

# --------------------------------------------------------------------------- helpers


def split_at(data: bytes, sizes: list[int]) -> list[bytes]:
    """Cut `data` into chunks of the given sizes (cycled), the last chunk taking what is left."""
    chunks: list[bytes] = []
    pos = 0
    for size in itertools.cycle(sizes or [len(data) or 1]):
        if pos >= len(data):
            break
        chunks.append(data[pos : pos + size])
        pos += size
    return chunks


def feed_checked(decoder: FrameDecoder, payloads: list[bytes], chunks: list[bytes]) -> list[bytes]:
    """Feed chunk by chunk, checking after each feed that the decoder is exact and bounded.

    Exact: it yields every frame that is complete so far (it never holds one back) and buffers
    precisely the bytes not yet consumed. Bounded: the buffer never holds more than one maximum
    frame plus its header plus the latest read.
    """
    ends = list(itertools.accumulate(4 + len(p) for p in payloads))
    out: list[bytes] = []
    fed = 0
    for chunk in chunks:
        out.extend(decoder.feed(chunk))
        fed += len(chunk)
        complete = sum(1 for end in ends if end <= fed)
        assert len(out) == complete, "a complete frame was held back or an incomplete one released"
        consumed = ends[complete - 1] if complete else 0
        assert decoder.buffered == fed - consumed
        assert decoder.buffered <= decoder.max_frame + 4 + len(chunk)
        # Between feeds only a partial frame can remain: strictly less than header + max body.
        assert decoder.buffered < decoder.max_frame + 4
    return out


@st.composite
def frames_and_limit(draw: st.DrawFn) -> tuple[int, list[bytes]]:
    """A small max_frame and payloads up to it, with empty and exactly-maximal ones likely."""
    max_frame = draw(st.integers(min_value=0, max_value=64))
    payload = st.one_of(
        st.just(b""),
        st.binary(min_size=max_frame, max_size=max_frame),
        st.binary(max_size=max_frame),
    )
    return max_frame, draw(st.lists(payload, max_size=12))


# --------------------------------------------------------------------------- wire format


def test_wire_format_is_big_endian_length_then_payload() -> None:
    assert encode_frame(b"abc") == b"\x00\x00\x00\x03abc"
    assert encode_frame(b"") == b"\x00\x00\x00\x00"
    assert encode_frame(b"x" * 258) == b"\x00\x00\x01\x02" + b"x" * 258


def test_encode_accepts_exactly_max_frame() -> None:
    assert encode_frame(b"\x01" * 10, max_frame=10)[:4] == struct.pack(">I", 10)
    assert len(encode_frame(b"\x00" * DEFAULT_MAX_FRAME)) == DEFAULT_MAX_FRAME + 4


@pytest.mark.parametrize(("size", "max_frame"), [(11, 10), (1, 0), (DEFAULT_MAX_FRAME + 1, DEFAULT_MAX_FRAME)])
def test_encode_refuses_payload_over_max_frame(size: int, max_frame: int) -> None:
    with pytest.raises(ValueError):
        encode_frame(b"\x00" * size, max_frame=max_frame)


def test_encode_default_limit_is_default_max_frame() -> None:
    with pytest.raises(ValueError):
        encode_frame(b"\x00" * (DEFAULT_MAX_FRAME + 1))


# --------------------------------------------------------------------------- round trips


@settings(max_examples=300)
@given(data=st.data(), spec=frames_and_limit())
def test_round_trip_random_splits(data: st.DataObject, spec: tuple[int, list[bytes]]) -> None:
    max_frame, payloads = spec
    stream = b"".join(encode_frame(p, max_frame=max_frame) for p in payloads)
    sizes = data.draw(st.lists(st.integers(min_value=1, max_value=max(1, len(stream))), min_size=1, max_size=20))
    chunks = split_at(stream, sizes)
    assert b"".join(chunks) == stream  # the splitter itself must not lose bytes
    decoder = FrameDecoder(max_frame=max_frame)
    assert feed_checked(decoder, payloads, chunks) == payloads
    assert decoder.buffered == 0
    decoder.close()  # a clean end of stream is not an error


@settings(max_examples=100)
@given(spec=frames_and_limit())
def test_round_trip_one_byte_at_a_time(spec: tuple[int, list[bytes]]) -> None:
    max_frame, payloads = spec
    stream = b"".join(encode_frame(p, max_frame=max_frame) for p in payloads)
    decoder = FrameDecoder(max_frame=max_frame)
    chunks = [stream[i : i + 1] for i in range(len(stream))]
    assert feed_checked(decoder, payloads, chunks) == payloads
    decoder.close()


@settings(max_examples=100)
@given(spec=frames_and_limit())
def test_round_trip_single_feed(spec: tuple[int, list[bytes]]) -> None:
    max_frame, payloads = spec
    decoder = FrameDecoder(max_frame=max_frame)
    assert decoder.feed(b"".join(encode_frame(p, max_frame=max_frame) for p in payloads)) == payloads
    assert decoder.buffered == 0


def test_empty_feeds_are_harmless() -> None:
    decoder = FrameDecoder(max_frame=8)
    assert decoder.feed(b"") == []
    out = decoder.feed(encode_frame(b"ab", 8)[:3])
    assert decoder.feed(b"") == []
    out += decoder.feed(encode_frame(b"ab", 8)[3:])
    assert out == [b"ab"]
    assert decoder.feed(b"") == []
    decoder.close()


def test_many_empty_frames() -> None:
    decoder = FrameDecoder(max_frame=0)
    assert decoder.feed(b"\x00\x00\x00\x00" * 1000) == [b""] * 1000
    assert decoder.buffered == 0


def test_max_size_frames_byte_by_byte_at_a_realistic_limit() -> None:
    # Two exactly-maximal frames with an empty one between, dribbled in 1 and 7 byte reads.
    max_frame = 4096
    payloads = [bytes(range(256)) * 16, b"", b"\xaa" * max_frame]
    stream = b"".join(encode_frame(p, max_frame) for p in payloads)
    for sizes in ([1], [7], [4095, 1, 4097]):
        decoder = FrameDecoder(max_frame=max_frame)
        assert feed_checked(decoder, payloads, split_at(stream, sizes)) == payloads


def test_default_limit_round_trip() -> None:
    payload = b"\x5a" * DEFAULT_MAX_FRAME
    decoder = FrameDecoder()
    assert decoder.max_frame == DEFAULT_MAX_FRAME
    frame = encode_frame(payload)
    assert decoder.feed(frame[:100_000]) == []
    assert decoder.feed(frame[100_000:]) == [payload]
    assert decoder.buffered == 0


def test_frames_are_independent_bytes() -> None:
    # Yielded frames must be immutable copies, not views that later feeds could overwrite.
    decoder = FrameDecoder(max_frame=8)
    (first,) = decoder.feed(encode_frame(b"one", 8))
    decoder.feed(encode_frame(b"two", 8))
    assert type(first) is bytes
    assert first == b"one"


# --------------------------------------------------------------------------- limits


@pytest.mark.parametrize("announced", [11, 1 << 20, 0xFFFFFFFF])
def test_oversize_announcement_raises_on_the_header_alone(announced: int) -> None:
    decoder = FrameDecoder(max_frame=10)
    header = struct.pack(">I", announced)
    # Three header bytes tell nothing yet.
    for byte in header[:3]:
        assert decoder.feed(bytes([byte])) == []
    # The fourth completes the header: refuse now, without waiting for (or buffering) the body.
    with pytest.raises(FrameTooLarge) as excinfo:
        decoder.feed(header[3:])
    assert isinstance(excinfo.value, RemoteProtocolError)
    assert decoder.buffered <= 4


def test_oversize_announcement_after_good_frames_in_one_read() -> None:
    decoder = FrameDecoder(max_frame=10)
    with pytest.raises(FrameTooLarge):
        decoder.feed(encode_frame(b"ok", 10) + encode_frame(b"", 10) + struct.pack(">I", 11))


def test_oversize_announcement_with_partial_body_in_same_read() -> None:
    decoder = FrameDecoder(max_frame=10)
    with pytest.raises(FrameTooLarge):
        decoder.feed(struct.pack(">I", 1000) + b"\x00" * 5)


def test_exactly_max_frame_is_not_too_large() -> None:
    decoder = FrameDecoder(max_frame=10)
    assert decoder.feed(struct.pack(">I", 10)) == []
    assert decoder.feed(b"\x00" * 10) == [b"\x00" * 10]


def test_default_decoder_refuses_one_byte_over_default_limit() -> None:
    with pytest.raises(FrameTooLarge):
        FrameDecoder().feed(struct.pack(">I", DEFAULT_MAX_FRAME + 1))


@settings(max_examples=100)
@given(
    max_frame=st.integers(min_value=0, max_value=64),
    chunks=st.lists(st.binary(min_size=0, max_size=100), max_size=30),
)
def test_buffer_bounded_on_arbitrary_input(max_frame: int, chunks: list[bytes]) -> None:
    # Whatever a hostile peer sends, the decoder either refuses it or holds at most one frame.
    decoder = FrameDecoder(max_frame=max_frame)
    for chunk in chunks:
        try:
            frames = decoder.feed(chunk)
        except FrameTooLarge:
            return
        assert all(len(f) <= max_frame for f in frames)
        assert decoder.buffered <= max_frame + 4 + len(chunk)
        assert decoder.buffered < max_frame + 4


# --------------------------------------------------------------------------- end of stream


@pytest.mark.parametrize(
    "partial",
    [
        b"\x00",  # 1 header byte
        b"\x00\x00\x00",  # 3 header bytes
        b"\x00\x00\x00\x05",  # header, no body
        b"\x00\x00\x00\x05abcd",  # header, body one short
        encode_frame(b"done", 16) + b"\x00\x00",  # a complete frame, then a partial header
    ],
)
def test_close_with_partial_frame_raises_truncated(partial: bytes) -> None:
    decoder = FrameDecoder(max_frame=16)
    decoder.feed(partial)
    assert decoder.buffered > 0
    with pytest.raises(TruncatedFrame) as excinfo:
        decoder.close()
    assert isinstance(excinfo.value, RemoteProtocolError)


def test_close_with_nothing_buffered_is_quiet() -> None:
    FrameDecoder().close()  # never fed
    decoder = FrameDecoder(max_frame=16)
    assert decoder.feed(encode_frame(b"a", 16) + encode_frame(b"", 16)) == [b"a", b""]
    decoder.close()  # only whole frames were received


def test_close_after_truncation_leaves_buffer_empty() -> None:
    # Once reported, the partial bytes are dropped: the decoder does not keep stale data around.
    decoder = FrameDecoder(max_frame=16)
    decoder.feed(b"\x00\x00")
    with pytest.raises(TruncatedFrame):
        decoder.close()
    assert decoder.buffered == 0


# --------------------------------------------------------------------------- error types


@pytest.mark.parametrize("cls", [FrameTooLarge, TruncatedFrame])
def test_errors_are_remote_protocol_errors_with_penalty(cls: type[FrameError]) -> None:
    assert issubclass(cls, FrameError)
    assert issubclass(cls, RemoteProtocolError)
    assert issubclass(cls, MeshpayError)
    error = cls("x")
    assert isinstance(error.penalty, int)
    assert error.penalty >= 0
    assert cls("x", penalty=3).penalty == 3


def test_penalty_levels() -> None:
    # An oversize announcement is malformed input (full penalty); a truncated frame is also what
    # an honest dropped connection produces, so it is only mildly suspicious.
    assert FrameTooLarge("x").penalty == 10
    assert TruncatedFrame("x").penalty == 1
    assert TruncatedFrame("x").penalty < FrameTooLarge("x").penalty


def test_raised_errors_carry_penalty() -> None:
    decoder = FrameDecoder(max_frame=1)
    with pytest.raises(RemoteProtocolError) as too_large:
        decoder.feed(struct.pack(">I", 2))
    assert too_large.value.penalty == 10
    decoder = FrameDecoder(max_frame=1)
    decoder.feed(b"\x00")
    with pytest.raises(RemoteProtocolError) as truncated:
        decoder.close()
    assert truncated.value.penalty == 1
