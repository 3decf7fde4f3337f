"""`peer init --join` and `peer epoch` without a network: what they write, and how they refuse.

(The commands against running peers are in tests/test_e2e_epochs.py.)
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from starlette.requests import Request

from crypto.keys import SigningKey
from devnet.layout import free_ports
from peer import config as peer_config
from peer import genesis as genesis_file
from peer.api import ApiError
from peer.api_epoch import authorize
from peer.genesis import Genesis
from tests.cli_support import peer


@pytest.fixture
def genesis(tmp_path: Path) -> Path:
    g = Genesis("joiners", tuple(SigningKey.generate().public for _ in range(4)), 4, 3, 64, 2, (), bytes(16)).validate()
    path = tmp_path / "genesis.json"
    genesis_file.save(path, g)
    return path


def test_init_join_writes_an_observer_config_with_a_private_admin_token(tmp_path: Path, genesis: Path) -> None:
    (tmp_path / "pw").write_text("a password\n")
    proc = peer("init", tmp_path / "node7", "--join", "127.0.0.1:7001", "--join", "127.0.0.1:7002",
                "--genesis", genesis, "--password-file", tmp_path / "pw", "--json")
    assert proc.code == 0, proc.err
    made = json.loads(proc.out)
    conf = Path(made["config"])
    settings = peer_config.load(conf)
    assert settings.network.seeds == ["127.0.0.1:7001", "127.0.0.1:7002"]
    # The genesis is copied beside the config and read from there, whatever the directory the peer runs in.
    assert settings.genesis == (tmp_path / "node7" / "genesis.json").resolve()
    assert settings.genesis.read_bytes() == genesis.read_bytes()
    assert len(settings.api.admin_token) >= 16
    assert stat.S_IMODE(conf.stat().st_mode) == 0o600  # the token makes whoever reads it the operator
    # The id printed is the key's, and the genesis does not list it: the peer starts as an observer.
    assert bytes.fromhex(made["peer_id"]) not in genesis_file.load(genesis).committee
    # Two peers never share a token.
    other = peer("init", tmp_path / "node8", "--join", "127.0.0.1:7001", "--genesis", genesis,
                 "--password-file", tmp_path / "pw", "--json")
    assert peer_config.load(json.loads(other.out)["config"]).api.admin_token != settings.api.admin_token


def test_init_refuses_a_genesis_that_is_not_one(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("a password\n")
    bogus = tmp_path / "genesis.json"
    bogus.write_text('{"name": "nope"}')
    proc = peer("init", tmp_path / "node", "--join", "127.0.0.1:7001", "--genesis", bogus, "--password-file",
                tmp_path / "pw")
    assert proc.code == 2 and "--genesis" in proc.err
    assert not (tmp_path / "node" / "peer.key").exists()  # refused before any key was made


def test_epoch_commands_refuse_bad_input_and_name_an_unreachable_peer(tmp_path: Path, genesis: Path) -> None:
    (tmp_path / "pw").write_text("a password\n")
    api_port = free_ports(1)[0]  # nothing listens there
    peer("init", tmp_path / "node", "--api-port", str(api_port), "--genesis", genesis, "--password-file", tmp_path / "pw")
    conf = tmp_path / "node" / "peer.toml"
    proc = peer("epoch", "propose", "--config", conf)
    assert proc.code == 2 and "--add or --remove" in proc.err
    proc = peer("epoch", "propose", "--add", "not-hex", "--config", conf)
    assert proc.code == 2 and "not a peer id" in proc.err
    proc = peer("epoch", "approve", "abc", "--config", conf)
    assert proc.code == 2 and "not a proposal id" in proc.err
    proc = peer("epoch", "status", "--config", conf)
    assert proc.code == 7 and f"127.0.0.1:{api_port}" in proc.err
    proc = peer("epoch", "status", "--config", tmp_path / "missing.toml")
    assert proc.code == 2 and "does not exist" in proc.err


def _request(authorization: str | None) -> Request:
    headers = [(b"authorization", authorization.encode())] if authorization is not None else []
    return Request({"type": "http", "method": "POST", "path": "/v1/epoch/proposals", "headers": headers})


@pytest.mark.parametrize(("token", "header", "status", "code"), [
    ("", "Bearer anything-at-all-here", 403, "admin_disabled"),  # no token set: operator actions are off
    ("s3cret-token-0123456789", None, 401, "unauthorized"),
    ("s3cret-token-0123456789", "Bearer s3cret-token-012345678", 401, "unauthorized"),
    ("s3cret-token-0123456789", "Basic s3cret-token-0123456789", 401, "unauthorized"),
    ("s3cret-token-0123456789", "Bearer s3cret-token-0123456789", None, None),
    ("s3cret-token-0123456789", "bearer  s3cret-token-0123456789 ", None, None),
])
def test_operator_routes_need_the_admin_token(token: str, header: str | None, status: int | None,
                                             code: str | None) -> None:
    if status is None:
        authorize(_request(header), token.encode())
        return
    with pytest.raises(ApiError) as refused:
        authorize(_request(header), token.encode())
    assert (refused.value.http_status, refused.value.code) == (status, code)


def test_a_short_admin_token_is_a_configuration_error(tmp_path: Path) -> None:
    conf = tmp_path / "peer.toml"
    conf.write_text(peer_config.render(admin_token="short"))
    with pytest.raises(peer_config.ConfigError, match="admin_token"):
        peer_config.load(conf)


def test_a_proposal_note_is_shown_as_text_not_markup(monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by an attacker's review: a committee member's proposal note `[/] routine` (printable, so
    accepted) ended `peer epoch status` with a MarkupError on every peer for the whole epoch."""
    from typer.testing import CliRunner

    from peer import cli_epoch

    doc = {"epoch": 0, "committee": ["aa" * 32], "committee_member": True, "ring": {"replication": 1, "quorum": 1},
           "proposals": [{"change_id": "cd" * 32, "epoch": 1, "members": ["aa" * 32, "bb" * 32],
                          "approvals": [], "needed": 1, "note": "[/] routine [bold]x[/bold]"}],
           "handoff": {"epoch": 0, "state": "idle", "accounts_ready": 0, "accounts_pending": 0,
                       "accounts_moved_in": 0}}

    class FakeApi:
        def status(self) -> dict:
            return doc

    monkeypatch.setattr(cli_epoch.EpochApi, "from_config", classmethod(lambda cls, config, api: FakeApi()))
    monkeypatch.setattr(cli_epoch, "out", cli_epoch.Console(width=200, force_terminal=False))
    result = CliRunner().invoke(cli_epoch.app, ["status"])
    assert result.exit_code == 0, result.output
    assert "[/] routine [bold]x[/bold]" in result.output
