"""Ed25519 identities and domain-separated signatures.

Every signature meshpay makes covers `purpose || network_id || body`, so a signature made for one
kind of message or one network never verifies as another. Purposes are a closed enum.
"""

from __future__ import annotations

import enum
import hashlib
from functools import lru_cache

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from crypto.errors import SignatureError

PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64
SEED_SIZE = 32
NETWORK_ID_SIZE = 32
HASH_SIZE = 32


class Purpose(enum.Enum):
    """What a signature or hash is for; the tag is part of the signed bytes."""

    ORDER = b"meshpay/order/1\x00"
    VOTE = b"meshpay/vote/1\x00"
    PEER_RECORD = b"meshpay/peer-record/1\x00"
    HANDSHAKE = b"meshpay/handshake/1\x00"
    GENESIS = b"meshpay/genesis/1\x00"
    MESSAGE_ID = b"meshpay/message-id/1\x00"


def signing_bytes(purpose: Purpose, network_id: bytes, body: bytes) -> bytes:
    """The exact bytes an Ed25519 signature covers."""
    if len(network_id) != NETWORK_ID_SIZE:
        raise ValueError(f"network id must be {NETWORK_ID_SIZE} bytes, got {len(network_id)}")
    return purpose.value + network_id + body


def digest(purpose: Purpose, network_id: bytes, body: bytes) -> bytes:
    """SHA-256 over the domain-separated bytes: used for order ids and message ids."""
    return hashlib.sha256(signing_bytes(purpose, network_id, body)).digest()


class SigningKey:
    """An Ed25519 private key. Peer id / account id = its raw 32-byte public key."""

    __slots__ = ("_key", "public")

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key
        self.public: bytes = key.public_key().public_bytes_raw()

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> SigningKey:
        if len(seed) != SEED_SIZE:
            raise ValueError(f"an Ed25519 seed is {SEED_SIZE} bytes, got {len(seed)}")
        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    def seed(self) -> bytes:
        return self._key.private_bytes_raw()

    def sign(self, purpose: Purpose, network_id: bytes, body: bytes) -> bytes:
        return self._key.sign(signing_bytes(purpose, network_id, body))

    def __repr__(self) -> str:
        return f"SigningKey(public={self.public.hex()[:16]}...)"


@lru_cache(maxsize=65536)
def _public_key(raw: bytes) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(raw)


def load_public_key(raw: bytes) -> Ed25519PublicKey:
    """Parse a raw 32-byte public key; refuses wrong sizes and invalid points."""
    if len(raw) != PUBLIC_KEY_SIZE:
        raise SignatureError(f"public key must be {PUBLIC_KEY_SIZE} bytes, got {len(raw)}")
    try:
        return _public_key(bytes(raw))
    except ValueError as exc:
        raise SignatureError(f"not an Ed25519 public key: {exc}") from exc


def verify(public: bytes, signature: bytes, purpose: Purpose, network_id: bytes, body: bytes) -> bool:
    """True when `signature` is `public`'s signature over this purpose, network and body."""
    if len(signature) != SIGNATURE_SIZE or len(public) != PUBLIC_KEY_SIZE:
        return False
    try:
        key = _public_key(bytes(public))
    except ValueError:
        return False
    try:
        key.verify(signature, signing_bytes(purpose, network_id, body))
    except InvalidSignature:
        return False
    return True


def require_valid(public: bytes, signature: bytes, purpose: Purpose, network_id: bytes, body: bytes) -> None:
    """Like `verify` but raises `SignatureError` naming the purpose."""
    if not verify(public, signature, purpose, network_id, body):
        raise SignatureError(f"invalid {purpose.name.lower()} signature by {public.hex()[:16]}")
