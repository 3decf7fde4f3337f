"""Tests for crypto.keystore: sealing, the file format's strictness, and the on-disk file rules.

Most tests use the minimum scrypt cost so the whole file stays fast; one test checks that the
default cost is what a caller gets when it does not choose one.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crypto import keystore as ks
from crypto.errors import CorruptKeystore, KeystoreError, MeshpayError, WrongPassword
from crypto.keys import SigningKey
from crypto.keystore import InsecureKeystore

FAST_N = ks.MIN_SCRYPT_N  # 1 << 10: ~2 ms per derivation, keeps the file well under a second or two
PASSWORD = "correct horse battery staple"


# --------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def key() -> SigningKey:
    # A fixed seed so a failure is reproducible.
    return SigningKey.from_seed(bytes(range(32)))


@pytest.fixture(scope="module")
def sealed(key: SigningKey) -> bytes:
    return ks.seal(key, PASSWORD, kind="account", name="alice", scrypt_n=FAST_N)


def edit(data: bytes, change: Callable[[dict[str, Any]], None]) -> bytes:
    """Re-encode a keystore after `change` edited its parsed JSON in place."""
    doc = json.loads(data)
    change(doc)
    return json.dumps(doc, indent=2).encode()


def set_path(doc: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    target = doc
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value


def del_path(doc: dict[str, Any], path: tuple[str, ...]) -> None:
    target = doc
    for part in path[:-1]:
        target = target[part]
    del target[path[-1]]


def other_hex(hex_text: str) -> str:
    """The same-length hex string with its first digit changed: a minimal, still well-formed edit."""
    first = "0123456789abcdef"[(int(hex_text[0], 16) + 1) % 16]
    return first + hex_text[1:]


def assert_corrupt(data: bytes, password: str = PASSWORD) -> CorruptKeystore:
    """Unsealing with the RIGHT password must say the file is damaged, never 'wrong password'."""
    with pytest.raises(CorruptKeystore) as excinfo:
        ks.unseal(data, password)
    # CorruptKeystore and WrongPassword are siblings today; this guards against a future
    # hierarchy change that would blur the two for the user.
    assert not isinstance(excinfo.value, WrongPassword)
    return excinfo.value


@pytest.fixture
def no_kdf(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fail loudly if any scrypt work is attempted: proves a refusal happens before the KDF."""

    def forbidden(*args: object, **kwargs: object) -> bytes:
        raise AssertionError("scrypt was run on input that should have been refused first")

    monkeypatch.setattr(ks, "_derive", forbidden)
    monkeypatch.setattr(ks, "Scrypt", forbidden)
    yield


def write_raw(path: Path, data: bytes) -> Path:
    """A file with keystore permissions (0600) but arbitrary contents."""
    path.write_bytes(data)
    path.chmod(0o600)
    return path


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("kind", ["account", "peer"])
@pytest.mark.parametrize("name", ["", "alice", "peer-07", "Zoë 🐝 日本", 'quote " and \\ backslash'])
def test_seal_unseal_round_trip(kind: str, name: str) -> None:
    key = SigningKey.generate()
    data = ks.seal(key, PASSWORD, kind=kind, name=name, scrypt_n=FAST_N)
    assert ks.unseal(data, PASSWORD).seed() == key.seed()
    # info() must report the header without needing the password.
    assert ks.info(data) == ks.KeystoreInfo(kind, name, key.public)


@pytest.mark.parametrize(
    "password",
    ["", "p", "pässwörd", "🔑🗝️", "пароль", "密码", "tab\tnew\nline", "x" * 1000, "\x00nul"],
)
def test_unicode_and_odd_passwords_round_trip(password: str) -> None:
    key = SigningKey.generate()
    data = ks.seal(key, password, scrypt_n=FAST_N)
    assert ks.unseal(data, password).public == key.public


@settings(max_examples=20)
@given(password=st.text(max_size=40), name=st.text(max_size=40), kind=st.sampled_from(ks.KINDS))
def test_round_trip_property(password: str, name: str, kind: str) -> None:
    key = SigningKey.generate()
    data = ks.seal(key, password, kind=kind, name=name, scrypt_n=FAST_N)
    assert ks.unseal(data, password).seed() == key.seed()
    assert ks.info(data).name == name


def test_seal_is_randomised(key: SigningKey) -> None:
    # Fresh salt and nonce each time: two seals of one key must not share either.
    a = json.loads(ks.seal(key, PASSWORD, scrypt_n=FAST_N))
    b = json.loads(ks.seal(key, PASSWORD, scrypt_n=FAST_N))
    assert a["kdf"]["salt"] != b["kdf"]["salt"]
    assert a["cipher"]["nonce"] != b["cipher"]["nonce"]
    assert a["ciphertext"] != b["ciphertext"]


def test_sealed_file_does_not_contain_the_seed(key: SigningKey, sealed: bytes) -> None:
    assert key.seed().hex().encode() not in sealed
    assert key.seed() not in sealed


@pytest.mark.parametrize("kind", ["account", "peer"])
def test_save_load_round_trip(tmp_path: Path, kind: str) -> None:
    key = SigningKey.generate()
    path = tmp_path / f"{kind}.key"
    ks.save(path, key, "sésame 🔐", kind=kind, name="Zoë", scrypt_n=FAST_N)
    loaded = ks.load(path, "sésame 🔐")
    assert loaded.seed() == key.seed()
    assert ks.info(ks.read_file(path)) == ks.KeystoreInfo(kind, "Zoë", key.public)


def test_info_needs_no_kdf(sealed: bytes, key: SigningKey, no_kdf: None) -> None:
    # Listing keystores must not pay the scrypt cost per file.
    assert ks.info(sealed).public_key == key.public


def test_default_scrypt_cost_is_used(tmp_path: Path, key: SigningKey) -> None:
    path = tmp_path / "default.key"
    ks.save(path, key, PASSWORD)
    assert json.loads(path.read_bytes())["kdf"]["n"] == ks.DEFAULT_SCRYPT_N
    assert ks.load(path, PASSWORD).public == key.public
    # seal() on its own has the same default.
    assert json.loads(ks.seal(key, PASSWORD))["kdf"]["n"] == ks.DEFAULT_SCRYPT_N


@pytest.mark.parametrize("scrypt_n", [0, 1, 512, FAST_N - 1, FAST_N + 1, 3 << 10, ks.MAX_SCRYPT_N * 2, 1 << 30])
def test_seal_refuses_bad_scrypt_cost(key: SigningKey, scrypt_n: int, no_kdf: None) -> None:
    with pytest.raises(ValueError):
        ks.seal(key, PASSWORD, scrypt_n=scrypt_n)


@pytest.mark.parametrize("kind", ["wallet", "", "Account", "PEER"])
def test_seal_refuses_unknown_kind(key: SigningKey, kind: str, no_kdf: None) -> None:
    with pytest.raises(ValueError):
        ks.seal(key, PASSWORD, kind=kind, scrypt_n=FAST_N)


# --------------------------------------------------------------------------- wrong password


@pytest.mark.parametrize(
    "wrong",
    ["", "Correct horse battery staple", PASSWORD + " ", " " + PASSWORD, PASSWORD[:-1], PASSWORD.upper()],
)
def test_wrong_password(sealed: bytes, wrong: str) -> None:
    with pytest.raises(WrongPassword) as excinfo:
        ks.unseal(sealed, wrong)
    assert not isinstance(excinfo.value, CorruptKeystore)
    assert isinstance(excinfo.value, KeystoreError)


@settings(max_examples=15)
@given(right=st.text(max_size=20), wrong=st.text(max_size=20))
def test_wrong_password_property(right: str, wrong: str) -> None:
    if right == wrong:
        return
    data = ks.seal(SigningKey.generate(), right, scrypt_n=FAST_N)
    with pytest.raises(WrongPassword):
        ks.unseal(data, wrong)


def test_wrong_password_via_file(tmp_path: Path, key: SigningKey) -> None:
    path = tmp_path / "k"
    ks.save(path, key, "pässwörd", scrypt_n=FAST_N)
    with pytest.raises(WrongPassword):
        ks.load(path, "passwort")


# --------------------------------------------------------------------------- corrupt files


def test_truncated_at_every_length(sealed: bytes) -> None:
    # Every prefix that cuts into the JSON document (not just the trailing newline) is damage.
    body_end = len(sealed.rstrip())
    for length in range(body_end):
        assert_corrupt(sealed[:length])


def test_truncated_files_on_disk(tmp_path: Path, sealed: bytes) -> None:
    for length in (0, 1, 10, len(sealed) // 2, len(sealed) - 3):
        path = write_raw(tmp_path / f"trunc{length}", sealed[:length])
        with pytest.raises(CorruptKeystore):
            ks.load(path, PASSWORD)


@settings(max_examples=200)
@given(garbage=st.binary(max_size=512))
def test_random_garbage(garbage: bytes) -> None:
    assert_corrupt(garbage)


@pytest.mark.parametrize(
    "data",
    [b"", b"\n", b"\xff\xfe\x00", b"hello", b"{", b"{'meshpay_keystore': 1}", b"\x00" * 64,
     b"{\"meshpay_keystore\": 1," + b"\xc3\x28}"],
)
def test_not_json(data: bytes) -> None:
    assert_corrupt(data)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=10),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=150)
@given(value=json_values)
def test_json_that_is_not_a_keystore(value: Any) -> None:
    assert_corrupt(json.dumps(value).encode())


@pytest.mark.parametrize(
    "value",
    [[], {}, 1, "keystore", None, {"version": 1}, {"meshpay_keystore": 1},
     {"meshpay_keystore": 1, "kind": "account"}, [{"meshpay_keystore": 1}]],
)
def test_valid_json_not_a_keystore(value: Any) -> None:
    assert_corrupt(json.dumps(value).encode())


@pytest.mark.parametrize("version", [0, 2, -1, 99, "1", None, [1], {"v": 1}])
def test_unknown_format_version(sealed: bytes, version: Any) -> None:
    assert_corrupt(edit(sealed, lambda d: set_path(d, ("meshpay_keystore",), version)))


@pytest.mark.parametrize("version", [True, 1.0])
def test_format_version_must_be_the_integer_1(sealed: bytes, version: Any) -> None:
    assert_corrupt(edit(sealed, lambda d: set_path(d, ("meshpay_keystore",), version)))


def test_ciphertext_altered_at_every_digit(sealed: bytes) -> None:
    ciphertext = json.loads(sealed)["ciphertext"]
    for i in range(len(ciphertext)):
        digit = "0123456789abcdef"[(int(ciphertext[i], 16) + 1) % 16]
        altered = ciphertext[:i] + digit + ciphertext[i + 1 :]
        assert_corrupt(edit(sealed, lambda d, a=altered: set_path(d, ("ciphertext",), a)))


@pytest.mark.parametrize(
    "change",
    [
        lambda c: c[:-2],  # one byte short
        lambda c: c + "00",  # one byte extra
        lambda c: c[2:],  # first byte dropped
        lambda c: "",  # empty
        lambda c: c[:30],  # shorter than the tag
        lambda c: c[:-1],  # odd number of hex digits
        lambda c: "zz" + c[2:],  # not hex
    ],
)
def test_ciphertext_resized_or_malformed(sealed: bytes, change: Callable[[str], str]) -> None:
    assert_corrupt(edit(sealed, lambda d: set_path(d, ("ciphertext",), change(d["ciphertext"]))))


def test_ciphertext_from_another_keystore(sealed: bytes) -> None:
    # Same password, different salt and nonce: swapping sealed bodies must be detected.
    other = json.loads(ks.seal(SigningKey.generate(), PASSWORD, name="alice", scrypt_n=FAST_N))
    assert_corrupt(edit(sealed, lambda d: set_path(d, ("ciphertext",), other["ciphertext"])))


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("public_key",), SigningKey.from_seed(b"\x07" * 32).public.hex()),
        (("name",), "mallory"),
        (("name",), "alice "),
        (("kind",), "peer"),
        (("cipher", "nonce"), "00" * 12),
    ],
)
def test_header_field_altered_is_detected_by_the_aead(sealed: bytes, path: tuple[str, ...], value: Any) -> None:
    # The header is associated data: with the right password these edits must fail the tag.
    assert_corrupt(edit(sealed, lambda d: set_path(d, path, value)))


def test_nonce_altered_minimally(sealed: bytes) -> None:
    assert_corrupt(edit(sealed, lambda d: set_path(d, ("cipher", "nonce"), other_hex(d["cipher"]["nonce"]))))


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("kdf", "salt"), "00" * 16),
        (("kdf", "n"), FAST_N * 2),
        (("check",), "00" * 32),
    ],
)
def test_kdf_fields_altered_are_refused(sealed: bytes, path: tuple[str, ...], value: Any) -> None:
    # Whatever the error class, a file with an edited salt / cost / check value never opens.
    with pytest.raises(KeystoreError):
        ks.unseal(edit(sealed, lambda d: set_path(d, path, value)), PASSWORD)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("kdf", "salt"), "00" * 16),
        (("kdf", "n"), FAST_N * 2),
        (("check",), "00" * 32),
    ],
)
def test_kdf_fields_altered_report_corruption(sealed: bytes, path: tuple[str, ...], value: Any) -> None:
    assert_corrupt(edit(sealed, lambda d: set_path(d, path, value)))


@pytest.mark.parametrize(
    "path",
    [("extra",), ("ciphertext_",), ("kdf", "extra"), ("kdf", "dklen"), ("cipher", "tag"), ("cipher", "extra")],
)
def test_extra_fields(sealed: bytes, path: tuple[str, ...], no_kdf: None) -> None:
    assert_corrupt(edit(sealed, lambda d: set_path(d, path, 1)))


ALL_FIELDS = [
    ("meshpay_keystore",), ("kind",), ("name",), ("public_key",), ("kdf",), ("check",), ("cipher",),
    ("ciphertext",), ("kdf", "name"), ("kdf", "n"), ("kdf", "r"), ("kdf", "p"), ("kdf", "salt"),
    ("cipher", "name"), ("cipher", "nonce"),
]


@pytest.mark.parametrize("path", ALL_FIELDS)
def test_missing_fields(sealed: bytes, path: tuple[str, ...], no_kdf: None) -> None:
    assert_corrupt(edit(sealed, lambda d: del_path(d, path)))


@pytest.mark.parametrize("path", ALL_FIELDS)
@pytest.mark.parametrize("value", [None, [], {}, 12345, "", "zz"])
def test_wrongly_typed_fields(sealed: bytes, path: tuple[str, ...], value: Any) -> None:
    doc = json.loads(sealed)
    original = doc
    for part in path:
        original = original[part]
    if value == original:
        return
    # A field of the wrong type or shape is damage, whichever check (parser or AEAD) catches it.
    assert_corrupt(edit(sealed, lambda d: set_path(d, path, value)))


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("kdf", "name"), "argon2id"),
        (("kdf", "r"), 16),
        (("kdf", "r"), 1),
        (("kdf", "p"), 2),
        (("cipher", "name"), "aes-256-gcm"),
        (("kdf", "salt"), "00" * 8),  # too short
        (("kdf", "salt"), "00" * 32),  # too long
        (("check",), "00" * 16),
        (("cipher", "nonce"), "00" * 24),
        (("public_key",), "00" * 31),
        (("public_key",), "AB" * 32),  # upper-case hex: not the canonical form the header uses
        (("kind",), "wallet"),
        (("name",), 7),
    ],
)
def test_unsupported_or_malformed_header_values(sealed: bytes, path: tuple[str, ...], value: Any, no_kdf: None) -> None:
    assert_corrupt(edit(sealed, lambda d: set_path(d, path, value)))


@pytest.mark.parametrize(
    "n",
    [0, 1, -1024, 512, FAST_N - 1, FAST_N + 1, 3 << 10, ks.MAX_SCRYPT_N + 1, ks.MAX_SCRYPT_N * 2, 1 << 30,
     1 << 64, 10**100, "1024", 1024.0, 1e300, True, None, [1024]],
)
def test_scrypt_n_out_of_bounds_is_refused_before_kdf(sealed: bytes, n: Any, no_kdf: None) -> None:
    # A hostile file must not make us allocate gigabytes or spin for minutes.
    started = time.monotonic()
    assert_corrupt(edit(sealed, lambda d: set_path(d, ("kdf", "n"), n)))
    assert time.monotonic() - started < 1.0


@pytest.mark.parametrize("literal", ["Infinity", "-Infinity", "1e999"])
def test_scrypt_n_infinite_is_corrupt(sealed: bytes, literal: str, no_kdf: None) -> None:
    data = sealed.replace(b'"n": 1024', f'"n": {literal}'.encode())
    assert data != sealed
    assert_corrupt(data)


def test_scrypt_n_nan_is_corrupt(sealed: bytes, no_kdf: None) -> None:
    data = sealed.replace(b'"n": 1024', b'"n": NaN')
    assert data != sealed
    assert_corrupt(data)


@pytest.mark.parametrize("data", [b"[" * 5000, b'{"a":' * 5000, b"[" * 5000 + b"]" * 5000])
def test_deeply_nested_json_is_corrupt(data: bytes) -> None:
    assert len(data) <= ks.MAX_FILE_SIZE
    assert_corrupt(data)


def test_oversized_file(tmp_path: Path, sealed: bytes, no_kdf: None) -> None:
    padded = sealed + b" " * (ks.MAX_FILE_SIZE + 1 - len(sealed))
    assert_corrupt(padded)
    with pytest.raises(CorruptKeystore):
        ks.load(write_raw(tmp_path / "big", padded + b" " * 100_000), PASSWORD)


def _forge(password: str, seed_plain: bytes, public: bytes) -> bytes:
    """A keystore whose AEAD is valid but whose sealed contents are wrong: only the key's owner
    (who knows the password) could build it, so this tests the checks that follow decryption."""
    salt, nonce = os.urandom(16), os.urandom(12)
    derived = ks._derive(password, salt, FAST_N)
    header = ks._header("account", "", public, FAST_N, salt, derived[32:], nonce)
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    ciphertext = ChaCha20Poly1305(derived[:32]).encrypt(nonce, seed_plain, ks._aad(header))
    doc = {**header, "header_sha256": ks._header_digest(header), "ciphertext": ciphertext.hex()}
    return json.dumps(doc).encode()


def test_forge_helper_builds_a_valid_keystore(key: SigningKey) -> None:
    # Guards the two tests below: they only mean something if the forger matches the real format.
    assert ks.unseal(_forge(PASSWORD, key.seed(), key.public), PASSWORD).seed() == key.seed()


@pytest.mark.parametrize("size", [0, 31, 33, 64])
def test_sealed_seed_of_wrong_size(key: SigningKey, size: int) -> None:
    assert_corrupt(_forge(PASSWORD, b"\x01" * size, key.public))


def test_sealed_seed_not_matching_public_key(key: SigningKey) -> None:
    other = SigningKey.generate()
    assert_corrupt(_forge(PASSWORD, other.seed(), key.public))


def test_single_byte_damage_never_yields_another_key_or_a_crash(sealed: bytes, key: SigningKey) -> None:
    # Flip bits at every position: the result is refused with a KeystoreError, or (harmless edits
    # such as whitespace or upper-casing ciphertext hex) opens to the very same key.
    for i in range(len(sealed)):
        for mask in (0x01, 0x20):
            damaged = sealed[:i] + bytes([sealed[i] ^ mask]) + sealed[i + 1 :]
            try:
                opened = ks.unseal(damaged, PASSWORD)
            except KeystoreError:
                continue
            assert opened.seed() == key.seed(), f"byte {i} ^ {mask:#x} opened a different key"


def test_all_errors_are_meshpay_errors() -> None:
    for cls in (KeystoreError, WrongPassword, CorruptKeystore, InsecureKeystore):
        assert issubclass(cls, MeshpayError)
    assert issubclass(InsecureKeystore, KeystoreError)
    assert not issubclass(WrongPassword, CorruptKeystore)
    assert not issubclass(CorruptKeystore, WrongPassword)


# --------------------------------------------------------------------------- files on disk


def file_mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    # A umask of 0 would make a naive open() create a world-readable file: save must not rely on it.
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def test_saved_file_is_0600(tmp_path: Path, key: SigningKey, permissive_umask: None) -> None:
    path = tmp_path / "k.json"
    ks.save(path, key, PASSWORD, scrypt_n=FAST_N)
    assert file_mode(path) == 0o600


def test_overwrite_replaces_loose_file_with_0600(tmp_path: Path, key: SigningKey, permissive_umask: None) -> None:
    path = tmp_path / "k.json"
    path.write_bytes(b"old")
    path.chmod(0o644)
    ks.save(path, key, PASSWORD, scrypt_n=FAST_N, overwrite=True)
    assert file_mode(path) == 0o600
    assert ks.load(path, PASSWORD).seed() == key.seed()


def test_save_leaves_no_temp_file(tmp_path: Path, key: SigningKey) -> None:
    ks.save(tmp_path / "a.key", key, PASSWORD, scrypt_n=FAST_N)
    ks.save(tmp_path / "a.key", key, PASSWORD, scrypt_n=FAST_N, overwrite=True)
    assert sorted(os.listdir(tmp_path)) == ["a.key"]


def test_save_does_not_overwrite_by_default(tmp_path: Path, key: SigningKey) -> None:
    path = tmp_path / "k.json"
    ks.save(path, key, PASSWORD, scrypt_n=FAST_N)
    before = path.read_bytes()
    other = SigningKey.generate()
    with pytest.raises(KeystoreError) as excinfo:
        ks.save(path, other, PASSWORD, scrypt_n=FAST_N)
    assert type(excinfo.value) is KeystoreError
    assert path.read_bytes() == before
    assert ks.load(path, PASSWORD).seed() == key.seed()
    assert sorted(os.listdir(tmp_path)) == ["k.json"]


def test_save_overwrite_true_replaces(tmp_path: Path, key: SigningKey) -> None:
    path = tmp_path / "k.json"
    ks.save(path, key, PASSWORD, scrypt_n=FAST_N)
    other = SigningKey.generate()
    ks.save(path, other, "new password", scrypt_n=FAST_N, overwrite=True)
    assert ks.load(path, "new password").seed() == other.seed()
    with pytest.raises(WrongPassword):
        ks.load(path, PASSWORD)


def test_failed_write_keeps_old_file_and_cleans_up(tmp_path: Path, key: SigningKey, monkeypatch: pytest.MonkeyPatch) -> None:
    # Simulate the disk failing mid-write: the old keystore must survive intact (atomic replace).
    path = tmp_path / "k.json"
    ks.save(path, key, PASSWORD, scrypt_n=FAST_N)
    before = path.read_bytes()

    def failing_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ks.os, "fsync", failing_fsync)
    with pytest.raises(KeystoreError):
        ks.save(path, SigningKey.generate(), PASSWORD, scrypt_n=FAST_N, overwrite=True)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["k.json"]


def test_failed_first_write_leaves_nothing(tmp_path: Path, key: SigningKey, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_fsync(fd: int) -> None:
        raise OSError(5, "I/O error")

    monkeypatch.setattr(ks.os, "fsync", failing_fsync)
    with pytest.raises(KeystoreError):
        ks.save(tmp_path / "k.json", key, PASSWORD, scrypt_n=FAST_N)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == []


def test_stale_temp_file_does_not_block_save(tmp_path: Path, key: SigningKey) -> None:
    path = tmp_path / "k.json"
    (tmp_path / f".k.json.{os.getpid()}.tmp").write_bytes(b"left over by a crash")
    ks.save(path, key, PASSWORD, scrypt_n=FAST_N)
    assert ks.load(path, PASSWORD).seed() == key.seed()


def test_no_overwrite_holds_against_a_concurrent_creator(tmp_path: Path, key: SigningKey, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "k.json"
    real_fsync = os.fsync
    created = []

    def fsync_then_race(fd: int) -> None:
        # Another process creates the keystore while ours is being written.
        if not created:
            path.write_bytes(b"someone else's keystore")
            created.append(True)
        real_fsync(fd)

    monkeypatch.setattr(ks.os, "fsync", fsync_then_race)
    with pytest.raises(KeystoreError):
        ks.save(path, key, PASSWORD, scrypt_n=FAST_N)
    assert path.read_bytes() == b"someone else's keystore"


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o606, 0o666, 0o620, 0o602, 0o610, 0o601, 0o770, 0o777])
def test_load_refuses_file_readable_by_others(tmp_path: Path, sealed: bytes, mode: int, no_kdf: None) -> None:
    # `sealed` is module-scoped, so it is built before no_kdf patches the KDF out; the refusal
    # must then come before any scrypt work (no password guessing against a leaked file's mode).
    path = tmp_path / "k.json"
    path.write_bytes(sealed)
    path.chmod(mode)
    with pytest.raises(InsecureKeystore) as excinfo:
        ks.load(path, PASSWORD)
    assert f"chmod 600 {path}" in str(excinfo.value)
    assert isinstance(excinfo.value, KeystoreError)
    assert not isinstance(excinfo.value, (WrongPassword, CorruptKeystore))


def test_load_refuses_0644_with_chmod_fix(tmp_path: Path, key: SigningKey) -> None:
    path = tmp_path / "wallet.key"
    ks.save(path, key, PASSWORD, scrypt_n=FAST_N)
    path.chmod(0o644)
    with pytest.raises(InsecureKeystore, match="chmod 600"):
        ks.load(path, PASSWORD)
    # Following the advice makes it loadable again.
    path.chmod(0o600)
    assert ks.load(path, PASSWORD).seed() == key.seed()


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_load_accepts_owner_only_modes(tmp_path: Path, key: SigningKey, mode: int) -> None:
    path = tmp_path / "k.json"
    ks.save(path, key, PASSWORD, scrypt_n=FAST_N)
    path.chmod(mode)
    assert ks.load(path, PASSWORD).seed() == key.seed()


@pytest.mark.parametrize("relative", ["missing.key", "no/such/dir/missing.key"])
def test_missing_file(tmp_path: Path, relative: str, no_kdf: None) -> None:
    path = tmp_path / relative
    with pytest.raises(KeystoreError) as excinfo:
        ks.load(path, PASSWORD)
    assert not isinstance(excinfo.value, (WrongPassword, CorruptKeystore, InsecureKeystore))
    assert str(path) in str(excinfo.value)


# --------------------------------------------------------------------------- hostile files (issue 10, item 4)


def _resum(doc: dict[str, Any]) -> None:
    """Recompute the (unkeyed) header checksum, as an attacker crafting a file can."""
    header = {k: v for k, v in doc.items() if k not in ("ciphertext", "header_sha256")}
    doc["header_sha256"] = ks._header_digest(header)


@pytest.mark.parametrize("n", [1 << 16, 1 << 20])
def test_raised_scrypt_cost_with_recomputed_checksum_is_foreign(sealed: bytes, n: int, no_kdf: None) -> None:
    # A crafted file asking for 2^20 took 13 s and ~1 GiB, then said "wrong password".
    def craft(doc: dict[str, Any]) -> None:
        doc["kdf"]["n"] = n
        _resum(doc)

    error = assert_corrupt(edit(sealed, craft))
    assert "damaged or foreign keystore" in str(error)


def test_every_cost_meshpay_writes_is_accepted(key: SigningKey, no_kdf: None) -> None:
    assert ks.MAX_SCRYPT_N == ks.DEFAULT_SCRYPT_N
    for n in (ks.MIN_SCRYPT_N, 1 << 12, ks.DEFAULT_SCRYPT_N):  # tests, devnets, the wallet
        assert ks.info(_sealed_header_only(key, n)).public_key == key.public


def _sealed_header_only(key: SigningKey, n: int) -> bytes:
    """A well-formed keystore with cost `n` whose ciphertext is junk: enough for `info` (no KDF)."""
    header = ks._header("account", "x", key.public, n, b"\x01" * 16, b"\x02" * 32, b"\x03" * 12)
    return json.dumps({**header, "header_sha256": ks._header_digest(header), "ciphertext": "00" * 48}).encode()


@pytest.mark.parametrize("digest", ["é" * 64, "\u0660" * 64, "A" * 64, "ab", "\ud800" + "0" * 63])
def test_non_ascii_or_malformed_checksum_is_corrupt_not_a_crash(sealed: bytes, digest: str, no_kdf: None) -> None:
    # compare_digest raised TypeError on non-ASCII text: `wallet list --json` crashed with no JSON.
    data = edit(sealed, lambda d: d.__setitem__("header_sha256", digest))
    with pytest.raises(CorruptKeystore):
        ks.info(data)
    assert_corrupt(data)


_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.floats(allow_nan=False)
    | st.text(max_size=70),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)
_PATHS = st.sampled_from([(f,) for f in ("meshpay_keystore", "kind", "name", "public_key", "kdf", "check", "cipher",
                                          "header_sha256", "ciphertext", "extra")]
                         + [("kdf", f) for f in ("name", "n", "r", "p", "salt")]
                         + [("cipher", f) for f in ("name", "nonce")])


@settings(max_examples=100, deadline=None)
@given(path=_PATHS, value=_JSON_VALUES, resum=st.booleans())
def test_fuzz_fields_only_documented_errors_escape(sealed: bytes, path: tuple[str, ...], value: Any,
                                                  resum: bool) -> None:
    # A short fuzz run in the default suite: any field replaced by any JSON value, with or without
    # the checksum recomputed. `info` and `unseal` raise KeystoreError subclasses only.
    def change(doc: dict[str, Any]) -> None:
        target = doc
        for part in path[:-1]:
            if not isinstance(target.get(part), dict):
                return
            target = target[part]
        target[path[-1]] = value
        if resum:
            _resum(doc)

    data = edit(sealed, change)
    for attempt in (lambda: ks.info(data), lambda: ks.unseal(data, PASSWORD)):
        with contextlib.suppress(KeystoreError):  # anything else fails the test
            attempt()


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_fuzz_bytes_only_documented_errors_escape(sealed: bytes, data: st.DataObject) -> None:
    raw = bytearray(sealed)
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i:i + 1] = data.draw(st.binary(min_size=0, max_size=3) | st.text(max_size=2).map(str.encode))
    with contextlib.suppress(KeystoreError):  # anything else fails the test
        ks.info(bytes(raw))
        ks.unseal(bytes(raw), PASSWORD)
