"""Length-prefixed frames over a byte stream (sans-IO).

A frame is a 4-byte big-endian length followed by that many bytes. The decoder takes whatever a
read returned, however it is split, and yields whole frames; it never buffers more than one
maximum-size frame plus one read.
"""

from __future__ import annotations

import struct

from crypto.errors import RemoteProtocolError

HEADER = struct.Struct(">I")
DEFAULT_MAX_FRAME = 1 << 20


class FrameError(RemoteProtocolError):
    """The byte stream does not hold well-formed frames."""


class FrameTooLarge(FrameError):
    """A frame header announced more bytes than the limit allows."""


class TruncatedFrame(FrameError):
    """The stream ended in the middle of a frame."""

    penalty = 1  # a dropped connection does this too


def encode_frame(payload: bytes, max_frame: int = DEFAULT_MAX_FRAME) -> bytes:
    if len(payload) > max_frame:
        raise ValueError(f"frame of {len(payload)} bytes exceeds the limit of {max_frame}")
    return HEADER.pack(len(payload)) + payload


class FrameDecoder:
    """Feed bytes in, get complete frames out."""

    __slots__ = ("_buf", "max_frame")

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buf = bytearray()

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return every frame now complete, in order."""
        buf = self._buf
        buf += data
        frames = []
        pos = 0
        end = len(buf)
        while end - pos >= 4:
            (size,) = HEADER.unpack_from(buf, pos)
            if size > self.max_frame:
                raise FrameTooLarge(f"frame of {size} bytes announced; the limit is {self.max_frame}")
            if end - pos - 4 < size:
                break
            frames.append(bytes(buf[pos + 4 : pos + 4 + size]))
            pos += 4 + size
        if pos:
            del buf[:pos]
        return frames

    def close(self) -> None:
        """The stream ended: anything still buffered is a truncated frame."""
        if self._buf:
            pending = len(self._buf)
            self._buf.clear()
            raise TruncatedFrame(f"stream ended with {pending} bytes of an incomplete frame")
