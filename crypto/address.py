"""Human account addresses: bech32 over the raw Ed25519 public key, prefix `mp`.

Bech32's BCH checksum detects every error of up to four characters, so a one-character typo is always
refused. Its one known weakness (inserting or deleting `q` before a final `p`) cannot slip through
here because an address has exactly one valid length.
"""

from __future__ import annotations

import bech32

from crypto.errors import AddressError, SignatureError
from crypto.keys import PUBLIC_KEY_SIZE, check_public_key

HRP = "mp"
# hrp + "1" + ceil(256 / 5) data characters + 6 checksum characters
ADDRESS_LENGTH = len(HRP) + 1 + 52 + 6


def encode_address(public_key: bytes) -> str:
    if len(public_key) != PUBLIC_KEY_SIZE:
        raise ValueError(f"an account key is {PUBLIC_KEY_SIZE} bytes, got {len(public_key)}")
    data = bech32.convertbits(list(public_key), 8, 5, True)
    return bech32.bech32_encode(HRP, data)


def decode_address(text: str) -> bytes:
    """The raw public key behind an address; raises `AddressError` saying what is wrong."""
    if not isinstance(text, str):
        raise AddressError("an address must be text")
    candidate = text.strip()
    if len(candidate) != ADDRESS_LENGTH:
        raise AddressError(
            f"address {candidate!r} has {len(candidate)} characters; a meshpay address has {ADDRESS_LENGTH}"
        )
    if not candidate.lower().startswith(HRP + "1"):
        raise AddressError(f"address {candidate!r} does not start with {HRP + '1'!r}")
    hrp, data = bech32.bech32_decode(candidate)
    if hrp is None or data is None:
        raise AddressError(f"address {candidate!r} has a bad checksum or invalid characters (typo?)")
    if hrp != HRP:
        raise AddressError(f"address {candidate!r} has prefix {hrp!r}, expected {HRP!r}")
    raw = bech32.convertbits(data, 5, 8, False)
    if raw is None or len(raw) != PUBLIC_KEY_SIZE:
        raise AddressError(f"address {candidate!r} does not hold a {PUBLIC_KEY_SIZE}-byte key")
    try:
        # Money sent to a weak or impossible key is lost or spendable by anyone: refuse it here.
        check_public_key(bytes(raw))
    except SignatureError as exc:
        raise AddressError(f"address {candidate!r} is not a usable account key: {exc}") from exc
    return bytes(raw)


def short(public_key: bytes) -> str:
    """A short, log-friendly form of a key (not an address: no checksum)."""
    return public_key.hex()[:12]
