"""Framed authenticated transport, SWIM membership, epidemic broadcast, anti-entropy plumbing."""

from gossip.client import ClientConnection, ClientSession, open_client
from gossip.connection import TransportStats
from gossip.limits import TransportLimits
from gossip.links import ConnectError, Links
from gossip.transport import TcpTransport

__all__ = [
    "ClientConnection",
    "ClientSession",
    "ConnectError",
    "Links",
    "TcpTransport",
    "TransportLimits",
    "TransportStats",
    "open_client",
]
