"""Ed25519 identities and domain-separated signatures.

Every signature meshpay makes covers `purpose || network_id || body`, so a signature made for one
kind of message or one network never verifies as another. Purposes are a closed enum.

Keys, signing and everything else use pyca/cryptography; verification, the bulk of a payment's
signature work (about fifteen checks per payment against three signatures), uses libsodium through
PyNaCl, which verifies about twice as fast on the machines measured (`make bench-foundation` prints
both side by side, in CPU time). libsodium is also the stricter of the two: besides what OpenSSL
refuses, it refuses small-order keys and small-order R, so it accepts a subset of what OpenSSL
accepts, and no signature meshpay relies on changes meaning. Our own weak-key checks stay in front
of it either way.
"""

from __future__ import annotations

import enum
import hashlib
from functools import lru_cache

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from nacl.bindings import crypto_sign_open
from nacl.exceptions import BadSignatureError

from crypto.errors import SignatureError

PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64
SEED_SIZE = 32
NETWORK_ID_SIZE = 32
HASH_SIZE = 32


class Purpose(enum.Enum):
    """What a signature or hash is for; the tag is part of the signed bytes."""

    ORDER = b"meshpay/order/1\x00"
    VOTE = b"meshpay/vote/2\x00"  # 2: binds epoch and the order signature
    PEER_RECORD = b"meshpay/peer-record/1\x00"
    HANDSHAKE = b"meshpay/handshake/1\x00"
    GENESIS = b"meshpay/genesis/1\x00"
    MESSAGE_ID = b"meshpay/message-id/1\x00"
    EPOCH_CHANGE = b"meshpay/epoch-change/1\x00"
    EPOCH_APPROVAL = b"meshpay/epoch-approval/1\x00"
    ACCOUNT_VIEW = b"meshpay/account-view/1\x00"  # an owner's signed answer about an account


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


_P = 2**255 - 19
_D = (-121665 * pow(121666, -1, _P)) % _P
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)

# Encodings (sign bit cleared) of the eight small-order points, canonical or not; libsodium refuses
# the same set. A small-order key signs nearly anything: with the identity point as key, R = identity
# and S = 0 verify for every message.
_SMALL_ORDER = frozenset(bytes.fromhex(h) for h in (
    "0000000000000000000000000000000000000000000000000000000000000000",
    "0100000000000000000000000000000000000000000000000000000000000000",
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
))


def is_weak_key(raw: bytes) -> bool:
    """A small-order point or a non-canonical encoding (y >= p): never a usable identity."""
    masked = raw[:31] + bytes((raw[31] & 0x7F,))
    return masked in _SMALL_ORDER or int.from_bytes(masked, "little") >= _P


def is_on_curve(raw: bytes) -> bool:
    """Whether 32 bytes decode to a point of edwards25519 (RFC 8032 section 5.1.3)."""
    y = int.from_bytes(raw, "little") & ((1 << 255) - 1)
    if y >= _P:
        return False
    u = (y * y - 1) % _P
    v = (_D * y * y + 1) % _P
    x = (u * pow(v, 3, _P) * pow(u * pow(v, 7, _P), (_P - 5) // 8, _P)) % _P
    vx2 = (v * x * x) % _P
    if vx2 != u:
        if vx2 != (-u) % _P:
            return False
        x = (x * _SQRT_M1) % _P
    return not (x == 0 and raw[31] >> 7)


def check_public_key(raw: bytes) -> None:
    """Raise `SignatureError` unless `raw` is a usable Ed25519 public key."""
    if len(raw) != PUBLIC_KEY_SIZE:
        raise SignatureError(f"public key must be {PUBLIC_KEY_SIZE} bytes, got {len(raw)}")
    if is_weak_key(raw):
        raise SignatureError("public key is a small-order or non-canonical point")
    if not is_on_curve(raw):
        raise SignatureError("public key is not a point on edwards25519")


def load_public_key(raw: bytes) -> Ed25519PublicKey:
    """Parse a raw 32-byte public key; refuses wrong sizes, weak keys and points off the curve."""
    check_public_key(raw)
    try:
        return _public_key(bytes(raw))
    except ValueError as exc:
        raise SignatureError(f"not an Ed25519 public key: {exc}") from exc


def verify_openssl(public: bytes, signed: bytes, signature: bytes) -> bool:
    """Ed25519 verification by pyca/cryptography (OpenSSL); kept for comparison in benchmarks."""
    try:
        _public_key(public).verify(signature, signed)
    except (InvalidSignature, ValueError):
        return False
    return True


def verify_sodium(public: bytes, signed: bytes, signature: bytes) -> bool:
    """Ed25519 verification by libsodium (PyNaCl): what `verify` uses."""
    try:
        crypto_sign_open(signature + signed, public)
    except BadSignatureError:
        return False
    return True


VERIFIERS = {"cryptography": verify_openssl, "libsodium": verify_sodium}


def verify(public: bytes, signature: bytes, purpose: Purpose, network_id: bytes, body: bytes) -> bool:
    """True when `signature` is `public`'s signature over this purpose, network and body."""
    if len(signature) != SIGNATURE_SIZE or len(public) != PUBLIC_KEY_SIZE or is_weak_key(public):
        return False
    return verify_sodium(bytes(public), signing_bytes(purpose, network_id, body), bytes(signature))


def require_valid(public: bytes, signature: bytes, purpose: Purpose, network_id: bytes, body: bytes) -> None:
    """Like `verify` but raises `SignatureError` naming the purpose."""
    if not verify(public, signature, purpose, network_id, body):
        raise SignatureError(f"invalid {purpose.name.lower()} signature by {public.hex()[:16]}")
