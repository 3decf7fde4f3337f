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


def test_duplicate_key_under_another_name_is_refused(tmp_path: Path) -> None:
    """Issue 15, item 12."""
    home, pw = tmp_path / "w", tmp_path / "pw"
    pw.write_text("pw\n")
    address = _make(home, "alice", pw)
    exported = tmp_path / "alice.key"
    assert wallet("export", "alice", "-o", exported, "--wallet-dir", home, "--password-file", pw).code == 0
    again = wallet("import", exported, "--name", "alice2", "--wallet-dir", home, "--password-file", pw, "--json")
    assert again.code == cli.EXIT_USAGE, again
    assert "already in the wallet as account 'alice'" in again.err and address in again.err
    assert again.json()["error"]["account"] == "alice" and not (home / "alice2.key").exists()


def test_version_completion_and_json_usage_errors(tmp_path: Path) -> None:
    """Issue 15, item 18: --version, Typer's shell completion, a parser error as JSON with --json,
    and an error line longer than 80 columns left whole when the output is not a terminal."""
    version = wallet_proc("--version")
    assert version.code == 0 and version.out.startswith("wallet (meshpay) ")
    completion = wallet_proc("--show-completion", "bash")
    assert completion.code == 0 and "_wallet_completion" in completion.out
    missing = wallet_proc("send", "--to", "x", "--json", env={"COLUMNS": "80"})
    assert missing.code == cli.EXIT_USAGE
    assert json.loads(missing.out)["error"] == {"kind": "usage", "exit_status": cli.EXIT_USAGE,
                                               "message": "Missing option '--amount'."}
    deep = tmp_path / ("a-rather-long-directory-name-" * 4)
    unknown = wallet_proc("address", "nobody", "--wallet-dir", deep, env={"COLUMNS": "80"})
    assert unknown.code == cli.EXIT_USAGE
    line = unknown.err.splitlines()[0]
    assert len(line) > 80 and str(deep) in line and "nobody" in line
