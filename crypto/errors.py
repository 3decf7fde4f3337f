"""The error types meshpay raises on purpose.

Errors say whose fault they are (after h11): a `RemoteProtocolError` means the other side sent
something we refuse, and carries a `penalty` hint for the transport's scoring; everything else is
local misuse or bad user input.
"""

from __future__ import annotations


class MeshpayError(Exception):
    """Base of every error meshpay raises deliberately."""


class RemoteProtocolError(MeshpayError):
    """The remote side sent bytes or a message we refuse.

    `penalty` says how hard to punish the sender: 0 = honest mistake (stale, duplicate),
    1 = suspicious, 10 = certainly malicious or broken (malformed bytes, forged signature).
    """

    penalty: int = 10

    def __init__(self, message: str, *, penalty: int | None = None) -> None:
        super().__init__(message)
        if penalty is not None:
            self.penalty = penalty


class DecodeError(RemoteProtocolError):
    """Bytes that are not exactly the canonical encoding of a valid message."""


class MessageError(MeshpayError, ValueError):
    """A message built locally with invalid fields: our own bug or misuse, never the remote's fault."""


class SignatureError(RemoteProtocolError):
    """A signature that does not verify for the claimed key, purpose and network."""


class AddressError(MeshpayError, ValueError):
    """Text that is not a valid meshpay account address (bad checksum, prefix, length)."""


class KeystoreError(MeshpayError):
    """A keystore file could not be used."""


class WrongPassword(KeystoreError):
    """The password does not open this keystore (authentication tag mismatch)."""


class CorruptKeystore(KeystoreError):
    """The keystore file is truncated, malformed or of an unknown version."""
