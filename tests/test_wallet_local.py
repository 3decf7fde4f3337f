"""The `wallet` CLI on its own files, no network: damaged keystores, duplicate imports, receipts'
readable fields, conventions (--version, completion, JSON errors, unwrapped messages)."""

from __future__ import annotations

import json
from pathlib import Path

from crypto import keystore
from crypto.keys import SigningKey
from tests.wallet_support import wallet, wallet_proc
from wallet import cli

FAST_N = keystore.MIN_SCRYPT_N


def _make(home: Path, name: str, pw: Path) -> str:
    made = wallet("new", name, "--wallet-dir", home, "--password-file", pw, "--json")
    assert made.code == 0, made
    return made.json()["address"]


def _non_ascii_checksum(path: Path) -> None:
    doc = json.loads(path.read_text())
    doc["header_sha256"] = "é" * 64
    path.write_text(json.dumps(doc))


def test_one_damaged_keystore_never_breaks_the_listing(tmp_path: Path) -> None:
    home, pw = tmp_path / "w", tmp_path / "pw"
    pw.write_text("pw\n")
    good = _make(home, "good", pw)
    _make(home, "bad", pw)
    _non_ascii_checksum(home / "bad.key")
    listed = wallet("list", "--wallet-dir", home, "--json")
    assert listed.code == 0, listed
    rows = {r["name"]: r for r in listed.json()["accounts"]}
    assert rows["good"]["address"] == good and "problem" not in rows["good"]
    assert rows["bad"]["address"] is None and rows["bad"]["damaged"] is True
    assert "damaged or foreign keystore" in rows["bad"]["problem"]
    human = wallet("list", "--wallet-dir", home)
    assert human.code == 0 and good in human.out and "damaged" in human.out


def test_import_of_a_crafted_keystore_is_refused_as_foreign(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("pw\n")
    crafted = tmp_path / "crafted.key"
    keystore.save(crafted, SigningKey.generate(), "pw", name="x", scrypt_n=FAST_N)
    _non_ascii_checksum(crafted)
    result = wallet("import", crafted, "--wallet-dir", tmp_path / "w", "--password-file", pw, "--json")
    assert result.code == cli.EXIT_USAGE, result
    assert "damaged or foreign keystore" in result.err and result.json()["error"]["kind"] == "usage"
    # The scrypt cost raised to 2^20 with the checksum recomputed: refused at once, not "wrong password".
    costly = tmp_path / "costly.key"
    keystore.save(costly, SigningKey.generate(), "pw", name="y", scrypt_n=FAST_N)
    doc = json.loads(costly.read_text())
    doc["kdf"]["n"] = 1 << 20
    header = {k: v for k, v in doc.items() if k not in ("ciphertext", "header_sha256")}
    doc["header_sha256"] = keystore._header_digest(header)
    costly.write_text(json.dumps(doc))
    refused = wallet_proc("import", costly, "--wallet-dir", tmp_path / "w", "--password-file", pw, timeout=20)
    assert refused.code == cli.EXIT_USAGE, refused
    assert "damaged or foreign keystore" in refused.err and "wrong password" not in refused.err
