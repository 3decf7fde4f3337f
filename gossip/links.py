"""The boundary between a peer's protocol driver and the network that carries its messages.

The real implementation is `gossip.transport.TcpTransport` (authenticated, encrypted TCP); the
simulator in `tests/sim` provides in-memory links with loss, delay, duplication and partitions.
Both carry whole messages (canonical bytes) between authenticated peer ids.
"""

from __future__ import annotations

from typing import Protocol

import trio

from crypto.errors import MeshpayError


class ConnectError(MeshpayError):
    """Could not reach or authenticate an address."""


class Links(Protocol):
    @property
    def inbound(self) -> trio.MemoryReceiveChannel[tuple[bytes, bytes]]:
        """Messages from peers: (authenticated sender id, message bytes)."""
        ...

    def send(self, peer_id: bytes, payload: bytes) -> bool:
        """Queue one message for a peer; never blocks. False when dropped (no address, full queue, banned)."""
        ...

    def set_address(self, peer_id: bytes, host: str, port: int) -> None:
        """Where to reach a peer (from its signed record)."""
        ...

    def forget(self, peer_id: bytes) -> None:
        """Drop a peer's address and connection (it was reaped)."""
        ...

    def set_committee(self, ids: frozenset[bytes]) -> None:
        """Who is in the committee now: their links are never crowded out by anybody else's."""
        ...

    def penalize(self, peer_id: bytes, penalty: int, reason: str) -> None:
        """The layer above caught the peer misbehaving (forged record, invalid certificate...)."""
        ...

    def is_banned(self, peer_id: bytes) -> bool:
        """Whether the peer is banned for now (its messages are not worth handling)."""
        ...

    async def dial(self, host: str, port: int) -> bytes:
        """Connect and handshake with an address; return the peer id it proved. Raises ConnectError."""
        ...
