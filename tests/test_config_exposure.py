"""What the peer configuration accepts for addresses, and what it needs before it exposes anything:
hosts are IP addresses or host names; the API binds beyond loopback only with `api.allow_public`;
a wildcard listen needs an address to advertise; the audit token comes from the file or from
`MESHPAY_API__AUDIT_TOKEN`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from peer import config as peer_config
from peer.config import ConfigError
from peer.hosts import check_host, is_loopback, is_wildcard
from tests.wallet_support import REPO


def _write(tmp_path: Path, network: str = "", api: str = "") -> Path:
    path = tmp_path / "peer.toml"
    path.write_text(f"[network]\n{network}\n[api]\n{api}\n")
    return path


def _load(tmp_path: Path, network: str = "", api: str = "") -> peer_config.PeerSettings:
    return peer_config.load(_write(tmp_path, network, api))


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "10.1.2.3", "fe80::1", "localhost", "peer-3.example.org",
                                  "example.org.", "0.0.0.0", "::"])
def test_addresses_and_names_are_hosts(host: str) -> None:
    assert check_host(host) == host


@pytest.mark.parametrize("host", ["evil host", "", "a..b", "-lead.example", "trail-.example", "1.2.3",
                                  "300.1.1.1", "x" * 64 + ".org", "a/b", "host:80", "ünï.example", "a" * 300])
def test_anything_else_is_refused(host: str) -> None:
    with pytest.raises(ValueError):
        check_host(host)


def test_loopback_and_wildcard() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("127.8.9.10") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.2") and not is_loopback("example.org")
    assert is_wildcard("0.0.0.0") and is_wildcard("::") and not is_wildcard("127.0.0.1")


@pytest.mark.parametrize("section,line", [("network", 'listen_host = "evil host"'),
                                          ("network", 'advertise_host = "evil host"'),
                                          ("network", 'seeds = ["evil host:7000"]'),
                                          ("api", 'host = "evil host"')])
def test_config_refuses_a_bad_host(tmp_path: Path, section: str, line: str) -> None:
    with pytest.raises(ConfigError, match="neither an IP address nor a valid host name"):
        _load(tmp_path, **{section: line})


def test_a_public_api_needs_consent(tmp_path: Path) -> None:
    for host in ("0.0.0.0", "192.168.1.2", "peer.example.org"):
        with pytest.raises(ConfigError, match="allow_public"):
            _load(tmp_path, api=f'host = "{host}"')
        settings = _load(tmp_path, api=f'host = "{host}"\nallow_public = true')
        assert settings.api.public
    assert not _load(tmp_path, api='host = "localhost"').api.public


def test_a_wildcard_listen_needs_an_address_to_advertise(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="advertise_host"):
        _load(tmp_path, network='listen_host = "0.0.0.0"').network.advertised_host()
    with pytest.raises(ConfigError, match="wildcard"):
        _load(tmp_path, network='listen_host = "0.0.0.0"\nadvertise_host = "::"')
    settings = _load(tmp_path, network='listen_host = "0.0.0.0"\nadvertise_host = "peer1.example.org"')
    assert settings.network.advertised_host() == "peer1.example.org"
    assert _load(tmp_path, network='listen_host = "10.0.0.7"').network.advertised_host() == "10.0.0.7"
    # `peer run` refuses to start (exit 2) before opening any port.
    path = _write(tmp_path, network='listen_host = "0.0.0.0"')
    proc = subprocess.run([sys.executable, "-m", "peer", "run", "--config", str(path)], capture_output=True,
                          text=True, cwd=REPO, timeout=60, env={**os.environ, "MESHPAY_PASSWORD": "x"})
    assert proc.returncode == 2, proc.stderr
    assert "advertise_host" in proc.stderr and "Traceback" not in proc.stderr


def test_the_audit_token_comes_from_the_file_or_the_environment(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    assert _load(tmp_path).api.audit_token == ""  # off by default
    assert _load(tmp_path, api='audit_token = "from-the-file-0123456789"').api.audit_token == "from-the-file-0123456789"
    monkeypatch.setenv("MESHPAY_API__AUDIT_TOKEN", "from-the-environment-0123")
    assert _load(tmp_path, api='audit_token = "from-the-file-0123456789"').api.audit_token == "from-the-environment-0123"
    monkeypatch.setenv("MESHPAY_API__AUDIT_TOKEN", "short")
    with pytest.raises(ConfigError, match="at least 16"):
        _load(tmp_path)


def test_the_rendered_template_round_trips_every_new_setting(tmp_path: Path) -> None:
    path = tmp_path / "peer.toml"
    path.write_text(peer_config.render(audit_token="rendered-token-0123456789"))
    api = peer_config.load(path).api
    assert (api.audit_token, api.allow_public, api.max_connections, api.idle_timeout, api.body_timeout,
            api.send_timeout, api.max_waiting) == ("rendered-token-0123456789", False, 256, 15.0, 10.0, 15.0, 128)
    path.write_text(peer_config.render())
    assert peer_config.load(path).api.audit_token == ""


def test_peer_run_refuses_a_public_api_without_consent(tmp_path: Path) -> None:
    path = _write(tmp_path, api='host = "0.0.0.0"')
    proc = subprocess.run([sys.executable, "-m", "peer", "run", "--config", str(path)], capture_output=True,
                          text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "allow_public" in proc.stderr and "Traceback" not in proc.stderr
