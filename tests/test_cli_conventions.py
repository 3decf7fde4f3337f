"""What `peer`, `devnet` and `wallet` share (docs/cli.md): --version, shell completion, one exit
status table, JSON errors on stdout with --json, errors never wrapped at 80 columns, and the
packaging metadata setuptools no longer warns about."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

import wallet.cli
from peer.cli_exit import KINDS, Exit, version
from tests.devnet_support import REPO, devnet, env, run


@pytest.mark.parametrize("program", ["peer", "devnet"])
def test_version_and_completion(program: str) -> None:
    proc = run(program, "--version", check=True)
    assert proc.stdout.strip() == f"{program} (meshpay) {version()}" and version()[0].isdigit()
    script = run(program, "--show-completion", "bash", check=True).stdout
    assert f"_{program}_completion" in script and f"_{program.upper()}_COMPLETE" in script


def test_the_wallet_uses_the_same_exit_statuses() -> None:
    pairs = {"EXIT_UNEXPECTED": Exit.UNEXPECTED, "EXIT_USAGE": Exit.USAGE, "EXIT_ADDRESS": Exit.ADDRESS,
             "EXIT_AMOUNT": Exit.AMOUNT, "EXIT_FUNDS": Exit.FUNDS, "EXIT_PENDING": Exit.PENDING,
             "EXIT_UNREACHABLE": Exit.UNREACHABLE, "EXIT_TIMEOUT": Exit.TIMEOUT, "EXIT_PASSWORD": Exit.PASSWORD,
             "EXIT_REFUSED": Exit.REFUSED, "EXIT_INVALID": Exit.INVALID, "EXIT_NETWORK": Exit.NETWORK}
    assert {name: getattr(wallet.cli, name) for name in pairs} == {name: int(code) for name, code in pairs.items()}
    assert len(set(KINDS.values())) == len(KINDS) == len(Exit) - 1  # every failure has one kind of its own
    table = (REPO / "docs" / "cli.md").read_text()
    for code in Exit:
        if code:
            assert f"\n| {int(code)} |" in table, f"docs/cli.md does not list exit status {int(code)}"


def test_devnet_errors_are_json_on_stdout_with_json(tmp_path: Path) -> None:
    proc = devnet("status", "--dir", tmp_path / "nothing", "--json")
    assert proc.returncode == 14
    error = json.loads(proc.stdout)["error"]
    assert error["kind"] == "no_devnet" and error["exit_status"] == 14 and "no devnet" in error["message"]
    assert proc.stderr.startswith("error: no devnet")
    usage = devnet("status", "--dir", tmp_path, "--json", "--bogus")
    assert usage.returncode == 2 and json.loads(usage.stdout)["error"]["kind"] == "usage"
    plain = devnet("status", "--dir", tmp_path / "nothing")
    assert plain.stdout == ""  # without --json, stdout stays empty


def test_errors_are_not_wrapped_when_output_is_not_a_terminal(tmp_path: Path) -> None:
    deep = tmp_path / ("a-rather-long-directory-name-" * 4) / "devnet"
    for program, args in (("devnet", ["status", "--dir", str(deep)]),
                          ("peer", ["run", "--config", str(deep / "peer.toml")])):
        proc = run(program, *args, environ=env(COLUMNS="80"))
        assert proc.returncode in (2, 14), proc.stderr
        lines = proc.stderr.splitlines()
        assert len(lines) == 1 and str(deep) in lines[0] and len(lines[0]) > 120, proc.stderr


def test_pyproject_uses_an_spdx_license_string() -> None:
    doc = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert doc["project"]["license"] == "MIT"
    assert any(req.replace(" ", "").startswith("setuptools>=77") for req in doc["build-system"]["requires"])
