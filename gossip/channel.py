"""The encrypted channel after the handshake (sans-IO).

Each outer frame (gossip.framing) is ChaCha20-Poly1305 ciphertext under the direction's session
key. The nonce is a 64-bit per-direction frame counter that both sides advance in step, so it is
never reused and never sent: a replayed, reordered, dropped or tampered frame simply fails to
authenticate. The plaintext is a batch of inner messages, each a 4-byte big-endian length and
the bytes, so the writer seals everything queued with one AEAD call and one send.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from crypto.errors import RemoteProtocolError
from gossip.framing import DEFAULT_MAX_FRAME

TAG_SIZE = 16
INNER = struct.Struct(">I")
MESSAGE_OVERHEAD = INNER.size
_MAX_COUNTER = (1 << 64) - 1


class ChannelError(RemoteProtocolError):
    """A frame that does not open: tampered, replayed, reordered, or badly batched."""


def _nonce(counter: int) -> bytes:
    return b"\x00\x00\x00\x00" + counter.to_bytes(8, "big")


def pack(messages: Sequence[bytes]) -> bytes:
    parts: list[bytes] = []
    for msg in messages:
        parts.append(INNER.pack(len(msg)))
        parts.append(msg)
    return b"".join(parts)


def unpack(plaintext: bytes) -> list[bytes]:
    out: list[bytes] = []
    view = memoryview(plaintext)
    pos, end = 0, len(plaintext)
    while pos < end:
        if end - pos < MESSAGE_OVERHEAD:
            raise ChannelError(f"batch ends with {end - pos} stray bytes")
        (size,) = INNER.unpack_from(view, pos)
        pos += MESSAGE_OVERHEAD
        if size > end - pos:
            raise ChannelError(f"inner message of {size} bytes overruns its batch")
        out.append(bytes(view[pos : pos + size]))
        pos += size
    return out


def max_message(max_frame: int = DEFAULT_MAX_FRAME) -> int:
    """The largest single message that fits in one frame."""
    return max_frame - TAG_SIZE - MESSAGE_OVERHEAD


def take_batch(queue: deque[bytes], max_frame: int = DEFAULT_MAX_FRAME) -> list[bytes]:
    """Pop from the left as many queued messages as fit in one sealed frame (at least one)."""
    budget = max_frame - TAG_SIZE
    batch: list[bytes] = []
    while queue:
        cost = MESSAGE_OVERHEAD + len(queue[0])
        if cost > budget and batch:
            break
        if cost > budget:
            raise ValueError(f"message of {len(queue[0])} bytes cannot fit in a {max_frame}-byte frame")
        budget -= cost
        batch.append(queue.popleft())
    return batch


class Sealer:
    """Our direction: seals batches into frame payloads."""

    __slots__ = ("_aead", "_counter", "max_frame")

    def __init__(self, key: bytes, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self._aead = ChaCha20Poly1305(key)
        self._counter = 0
        self.max_frame = max_frame

    def seal(self, messages: Sequence[bytes]) -> bytes:
        plaintext = pack(messages)
        if len(plaintext) + TAG_SIZE > self.max_frame:
            raise ValueError(f"batch of {len(plaintext)} bytes exceeds the {self.max_frame}-byte frame")
        if self._counter > _MAX_COUNTER:
            raise RuntimeError("channel nonce space exhausted; reconnect for fresh keys")
        frame = self._aead.encrypt(_nonce(self._counter), plaintext, None)
        self._counter += 1
        return frame


class Opener:
    """The other direction: opens frame payloads into messages, strictly in order."""

    __slots__ = ("_aead", "_counter")

    def __init__(self, key: bytes) -> None:
        self._aead = ChaCha20Poly1305(key)
        self._counter = 0

    def open(self, frame: bytes) -> list[bytes]:
        if len(frame) < TAG_SIZE:
            raise ChannelError(f"frame of {len(frame)} bytes is shorter than its tag")
        if self._counter > _MAX_COUNTER:
            raise ChannelError("the other side exhausted its nonce space")
        try:
            plaintext = self._aead.decrypt(_nonce(self._counter), frame, None)
        except InvalidTag:
            raise ChannelError(
                f"frame {self._counter} fails authentication (tampered, replayed, reordered or foreign)"
            ) from None
        self._counter += 1
        return unpack(plaintext)
