"""Encrypted keystore files for wallets and peers.

Format (JSON, version 1): a header naming the key, the scrypt parameters and salt, a password check
value, and the Ed25519 seed sealed with ChaCha20-Poly1305. scrypt derives 64 bytes: the first half is
the encryption key, the second half is stored as the check value. A SHA-256 of the header (which
needs no password) tells a damaged header from a wrong password; with the header intact, a check
mismatch means a wrong password and a failing tag means altered ciphertext. The header is also the
AEAD's associated data, so a deliberate edit of the key or parameters is detected too.

Passwords are NFC-normalised, so the same password typed in composed or decomposed Unicode opens
the file.

The header checksum is unkeyed, so anyone can edit a header and recompute it: the checksum only
catches accidents. What a hostile file could abuse is the KDF cost, so the parser accepts only the
scrypt parameters meshpay itself writes: n a power of two from 2^10 to 2^15 (at most ~32 MiB and
~0.1 s here), r = 8, p = 1; anything else is "damaged or foreign", refused before any KDF work.

Only `KeystoreError` (and its subclasses `CorruptKeystore`, `WrongPassword`, `InsecureKeystore`)
ever escapes this module for any input: callers such as `wallet list` rely on that to report one
bad file and carry on with the others.

Files are written atomically with mode 0600 and refused on load when others can read them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import stat
import tempfile
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from crypto.errors import CorruptKeystore, KeystoreError, WrongPassword
from crypto.keys import SigningKey

FORMAT_VERSION = 1
KINDS = ("account", "peer")
DEFAULT_SCRYPT_N = 1 << 15  # ~32 MiB and ~0.1 s here: a brute-force guess costs the same
MIN_SCRYPT_N = 1 << 10
# Nothing meshpay writes costs more than its default; a file asking for more is not ours (a crafted
# 2^20 took 13 s and ~1 GiB to "unlock", and was then reported as a wrong password).
MAX_SCRYPT_N = DEFAULT_SCRYPT_N
FOREIGN = "damaged or foreign keystore"
_HEX_DIGEST = frozenset("0123456789abcdef")
MAX_FILE_SIZE = 64 * 1024


class InsecureKeystore(KeystoreError):
    """The keystore file can be read by other users."""


@dataclass(frozen=True, slots=True)
class KeystoreInfo:
    """What a keystore says about itself without the password."""

    kind: str
    name: str
    public_key: bytes


def _derive(password: str, salt: bytes, n: int) -> bytes:
    try:
        secret = unicodedata.normalize("NFC", password).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise KeystoreError("the password contains characters that cannot be encoded") from exc
    return Scrypt(salt=salt, length=64, n=n, r=8, p=1).derive(secret)


def _header(kind: str, name: str, public_key: bytes, n: int, salt: bytes, check: bytes, nonce: bytes) -> dict[str, Any]:
    return {
        "meshpay_keystore": FORMAT_VERSION,
        "kind": kind,
        "name": name,
        "public_key": public_key.hex(),
        "kdf": {"name": "scrypt", "n": n, "r": 8, "p": 1, "salt": salt.hex()},
        "check": check.hex(),
        "cipher": {"name": "chacha20-poly1305", "nonce": nonce.hex()},
    }


def _aad(header: dict[str, Any]) -> bytes:
    return json.dumps(header, sort_keys=True, separators=(",", ":")).encode()


def _header_digest(header: dict[str, Any]) -> str:
    return hashlib.sha256(_aad(header)).hexdigest()


def seal(key: SigningKey, password: str, *, kind: str = "account", name: str = "", scrypt_n: int = DEFAULT_SCRYPT_N) -> bytes:
    """The keystore file contents for `key` under `password`."""
    if kind not in KINDS:
        raise ValueError(f"keystore kind must be one of {KINDS}")
    if not MIN_SCRYPT_N <= scrypt_n <= MAX_SCRYPT_N or scrypt_n & (scrypt_n - 1):
        raise ValueError("scrypt n must be a power of two within bounds")
    salt, nonce = os.urandom(16), os.urandom(12)
    derived = _derive(password, salt, scrypt_n)
    header = _header(kind, name, key.public, scrypt_n, salt, derived[32:], nonce)
    ciphertext = ChaCha20Poly1305(derived[:32]).encrypt(nonce, key.seed(), _aad(header))
    doc = {**header, "header_sha256": _header_digest(header), "ciphertext": ciphertext.hex()}
    return json.dumps(doc, indent=2).encode() + b"\n"


def _parse(data: bytes) -> tuple[dict[str, Any], bytes]:
    if len(data) > MAX_FILE_SIZE:
        raise CorruptKeystore("keystore file is too large")
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise CorruptKeystore(f"keystore file is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict) or "meshpay_keystore" not in doc:
        raise CorruptKeystore("not a meshpay keystore file")
    version = doc["meshpay_keystore"]
    if type(version) is not int or version != FORMAT_VERSION:
        raise CorruptKeystore(f"keystore format version {version!r} is not supported")
    try:
        kdf, cipher = doc["kdf"], doc["cipher"]
        if type(kdf["n"]) is not int:
            raise TypeError("kdf n must be an integer")
        header = _header(
            doc["kind"], doc["name"], bytes.fromhex(doc["public_key"]), kdf["n"],
            bytes.fromhex(kdf["salt"]), bytes.fromhex(doc["check"]), bytes.fromhex(cipher["nonce"]),
        )
        ciphertext = bytes.fromhex(doc["ciphertext"])
        stored_digest = doc["header_sha256"]
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise CorruptKeystore(f"keystore file is missing or has a malformed field: {exc}") from exc
    if header != {k: v for k, v in doc.items() if k not in ("ciphertext", "header_sha256")}:
        raise CorruptKeystore("keystore file has unexpected fields")
    # compare_digest raises TypeError on non-ASCII text: check the form first
    if not isinstance(stored_digest, str) or len(stored_digest) != 64 or not _HEX_DIGEST.issuperset(stored_digest) \
            or not hmac.compare_digest(stored_digest, _header_digest(header)):
        raise CorruptKeystore(f"{FOREIGN}: its header checksum does not match")
    if kdf["name"] != "scrypt" or kdf["r"] != 8 or kdf["p"] != 1 or cipher["name"] != "chacha20-poly1305":
        raise CorruptKeystore(f"{FOREIGN}: it uses a KDF or cipher meshpay does not write")
    n = kdf["n"]
    if not isinstance(n, int) or not MIN_SCRYPT_N <= n <= MAX_SCRYPT_N or n & (n - 1):
        raise CorruptKeystore(f"{FOREIGN}: scrypt cost n = {str(n)[:20]} is not one meshpay writes "
                              f"(a power of two from 2^10 to 2^15)")
    if doc["kind"] not in KINDS or not isinstance(doc["name"], str):
        raise CorruptKeystore("keystore kind or name is malformed")
    if len(header["kdf"]["salt"]) != 32 or len(doc["check"]) != 64 or len(cipher["nonce"]) != 24 or len(doc["public_key"]) != 64:
        raise CorruptKeystore("keystore salt, check, nonce or key has the wrong length")
    return header, ciphertext


def info(data: bytes) -> KeystoreInfo:
    header, _ = _parse(data)
    return KeystoreInfo(header["kind"], header["name"], bytes.fromhex(header["public_key"]))


def unseal(data: bytes, password: str) -> SigningKey:
    """The key inside a keystore; `WrongPassword` or `CorruptKeystore` when it cannot be opened."""
    header, ciphertext = _parse(data)
    derived = _derive(password, bytes.fromhex(header["kdf"]["salt"]), header["kdf"]["n"])
    if not hmac.compare_digest(derived[32:], bytes.fromhex(header["check"])):
        raise WrongPassword("wrong password for this keystore")
    try:
        seed = ChaCha20Poly1305(derived[:32]).decrypt(
            bytes.fromhex(header["cipher"]["nonce"]), ciphertext, _aad(header)
        )
    except InvalidTag as exc:
        raise CorruptKeystore("keystore contents were altered (authentication failed)") from exc
    if len(seed) != 32:
        raise CorruptKeystore("keystore holds a key of the wrong size")
    key = SigningKey.from_seed(seed)
    if key.public.hex() != header["public_key"]:
        raise CorruptKeystore("keystore's key does not match its public key")
    return key


def write_file(path: Path, data: bytes, *, overwrite: bool = False) -> None:
    """Write atomically with mode 0600 (never briefly world-readable).

    Without `overwrite`, the final step is a hard link, which fails if the name appeared meanwhile,
    so a concurrent writer's file is never replaced.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise KeystoreError(f"{path} already exists")
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise KeystoreError(f"cannot write {path}: {exc}") from exc
    tmp = Path(tmp_name)  # mkstemp creates it with mode 0600
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError as exc:
                raise KeystoreError(f"{path} already exists") from exc
    except OSError as exc:
        raise KeystoreError(f"cannot write {path}: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_file(path: Path) -> bytes:
    """Read a keystore, refusing files that other users can read."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError as exc:
        raise KeystoreError(f"keystore {path} does not exist") from exc
    except OSError as exc:
        raise KeystoreError(f"cannot read keystore {path}: {exc}") from exc
    if not stat.S_ISREG(mode):
        raise KeystoreError(f"keystore {path} is not a regular file")
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise InsecureKeystore(
            f"keystore {path} is accessible by other users (mode {stat.S_IMODE(mode):o}); run: chmod 600 {path}"
        )
    try:
        with path.open("rb") as fh:
            return fh.read(MAX_FILE_SIZE + 1)
    except OSError as exc:
        raise KeystoreError(f"cannot read keystore {path}: {exc}") from exc


def save(path: Path, key: SigningKey, password: str, *, kind: str = "account", name: str = "",
         scrypt_n: int = DEFAULT_SCRYPT_N, overwrite: bool = False) -> None:
    write_file(path, seal(key, password, kind=kind, name=name, scrypt_n=scrypt_n), overwrite=overwrite)


def load(path: Path, password: str) -> SigningKey:
    return unseal(read_file(path), password)
