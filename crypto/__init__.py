"""Identities, addresses, canonical CBOR messages, domain-separated signatures and keystores."""

from crypto.address import decode_address, encode_address
from crypto.errors import (
    AddressError,
    CorruptKeystore,
    DecodeError,
    KeystoreError,
    MeshpayError,
    RemoteProtocolError,
    SignatureError,
    WrongPassword,
)
from crypto.keys import Purpose, SigningKey, digest, verify
from crypto.messages import Auth, Certificate, Hello, Order, PeerRecord, Vote

__all__ = [
    "AddressError",
    "Auth",
    "Certificate",
    "CorruptKeystore",
    "DecodeError",
    "Hello",
    "KeystoreError",
    "MeshpayError",
    "Order",
    "PeerRecord",
    "Purpose",
    "RemoteProtocolError",
    "SignatureError",
    "SigningKey",
    "Vote",
    "WrongPassword",
    "decode_address",
    "digest",
    "encode_address",
    "verify",
]
