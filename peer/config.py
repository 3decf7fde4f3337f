"""The peer's configuration: a TOML file, every value overridable by an environment variable.

Environment variables are `MESHPAY_` followed by the setting's path with `__` between levels, e.g.
`MESHPAY_API__PORT=8081` or `MESHPAY_NETWORK__SEEDS='["127.0.0.1:7001"]'`. Precedence: environment,
then the file, then the defaults. Relative paths in the file are relative to the file's directory.
(pydantic-settings does the layering and the type checking, so a bad value is a clear error.)
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from crypto.errors import MeshpayError


class ConfigError(MeshpayError):
    """The configuration file or environment holds an invalid value."""


def parse_hostport(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r} is not HOST:PORT")
    return host, int(port)


class NetworkSettings(BaseModel):
    listen_host: str = "127.0.0.1"
    listen_port: int = Field(7000, ge=0, le=65535)
    advertise_host: str = ""  # defaults to listen_host
    seeds: list[str] = Field(default_factory=list)

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, value: list[str]) -> list[str]:
        for seed in value:
            parse_hostport(seed)
        return value


class ApiSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    max_body_bytes: int = Field(64 * 1024, ge=1024)
    max_waiting: int = Field(4096, ge=1)  # requests waiting on a payment at once
    max_wait_seconds: float = Field(60.0, gt=0)


class LogSettings(BaseModel):
    level: Literal["debug", "info", "warning", "error"] = "info"
    # text for people at a terminal; json (one object per line) for log collectors
    format: Literal["json", "text"] = "text"


class TuningSettings(BaseModel):
    fsync: bool = True
    # Wait for the disk in a worker thread (the event loop keeps running) or in the loop itself
    # (no thread hand-off: better when more peers than cores share one machine, as on a devnet).
    sync_in_thread: bool = True
    probe_interval: float = Field(1.0, gt=0)
    probe_timeout: float = Field(0.5, gt=0)
    gossip_interval: float = Field(0.2, gt=0)
    sync_interval: float = Field(15.0, gt=0)
    anti_entropy_interval: float = Field(2.0, gt=0)
    payment_deadline: float = Field(20.0, gt=0)
    max_in_flight: int = Field(20_000, ge=1)
    # Ask a quorum of owners first and the rest after this many times the recent time to certify
    # (0: ask every owner at once: more work per payment, shorter tail when an owner is slow).
    vote_hedge_factor: float = Field(3.0, ge=0)
    shutdown_grace: float = Field(5.0, ge=0)


class PeerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MESHPAY_", env_nested_delimiter="__", extra="forbid")

    data_dir: Path = Path("data")
    key_file: Path = Path("peer.key")
    genesis: Path = Path("genesis.json")
    password_file: Path | None = None
    network: NetworkSettings = Field(default_factory=NetworkSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    tuning: TuningSettings = Field(default_factory=TuningSettings)

    _toml_file: ClassVar[Path | None] = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [env_settings, init_settings]
        if cls._toml_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=cls._toml_file))
        return tuple(sources)

    @property
    def seeds(self) -> list[tuple[str, int]]:
        return [parse_hostport(s) for s in self.network.seeds]


def load(path: Path | str) -> PeerSettings:
    """Read a config file (with environment overrides); paths become absolute."""
    path = Path(path).resolve()
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")

    class _FromFile(PeerSettings):
        _toml_file: ClassVar[Path | None] = path

    try:
        settings = _FromFile()
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid configuration in {path} (or MESHPAY_* environment): {problems}") from exc
    except ValueError as exc:  # malformed TOML
        raise ConfigError(f"cannot parse {path}: {exc}") from exc
    base = path.parent
    for name in ("data_dir", "key_file", "genesis", "password_file"):
        value = getattr(settings, name)
        if value is not None and not value.is_absolute():
            setattr(settings, name, base / value)
    return settings


TEMPLATE = """\
# meshpay peer configuration.
# Every value can be overridden by an environment variable: MESHPAY_<SECTION>__<KEY>, for example
# MESHPAY_API__PORT=8081 or MESHPAY_NETWORK__SEEDS='["127.0.0.1:7001"]'. Relative paths are relative
# to this file.

# RocksDB database of this peer (created on first run).
data_dir = "{data_dir}"
# This peer's encrypted Ed25519 key (made by `peer init`).
key_file = "{key_file}"
# The network's genesis: committee, replication, quorum, allocations.
genesis = "{genesis}"
# File holding the key's password; or set MESHPAY_PASSWORD. Leave empty to be prompted.
{password_line}

[network]
# Peer-to-peer port (authenticated, encrypted TCP). 127.0.0.1 keeps the peer local.
listen_host = "{listen_host}"
listen_port = {listen_port}
# Address other peers should use to reach this one (defaults to listen_host).
advertise_host = "{advertise_host}"
# One reachable seed is enough to join; more make joining robust.
seeds = [{seeds}]

[api]
# HTTP JSON API for wallets and scripts (binds to 127.0.0.1 unless you change it).
host = "{api_host}"
port = {api_port}
# Request bodies larger than this are refused with 413.
max_body_bytes = 65536
# Requests waiting on a payment at once; more are refused with 429 `too_many_waiting` instead
# of queueing.
max_waiting = 4096
max_wait_seconds = 60.0
# Bearer token the /v1/audit/* endpoints require (`Authorization: Bearer <token>`).
{audit_token_line}

[log]
# debug (every payment's life: received, certified, applied) | info (summaries) | warning | error
level = "{log_level}"
# text (for people) | json (one object per line, for log collectors)
format = "{log_format}"

[tuning]
# Sync votes and locks to disk before they leave the peer. Only turn off for throwaway tests.
fsync = {fsync}
# Wait for the disk in a worker thread so the peer keeps serving meanwhile. false waits in the
# event loop instead: no thread hand-off, which is faster when more peers than cores share a machine.
sync_in_thread = {sync_in_thread}
probe_interval = 1.0
probe_timeout = 0.5
gossip_interval = 0.2
sync_interval = 15.0
anti_entropy_interval = 2.0
payment_deadline = 20.0
max_in_flight = 20000
# Ask a quorum of owners first, the rest after this many times the recent time to certify
# (0 asks every owner at once).
vote_hedge_factor = 3.0
# Seconds a shutdown waits for payments in flight before failing them.
shutdown_grace = 5.0
"""


def render(*, data_dir: str = "data", key_file: str = "peer.key", genesis: str = "genesis.json",
           password_file: str | None = None, listen_host: str = "127.0.0.1", listen_port: int = 7000,
           advertise_host: str = "", seeds: list[str] | None = None, api_port: int = 8000, api_host: str = "127.0.0.1",
           fsync: bool = True, sync_in_thread: bool = True, audit_token: str | None = None,
           log_level: str = "info", log_format: str = "text") -> str:
    password_line = f'password_file = "{password_file}"' if password_file else '# password_file = "password.txt"'
    audit_token_line = f'audit_token = "{audit_token}"' if audit_token else '# audit_token = ""'
    return TEMPLATE.format(
        data_dir=data_dir, key_file=key_file, genesis=genesis, password_line=password_line,
        listen_host=listen_host, listen_port=listen_port, advertise_host=advertise_host,
        seeds=", ".join(f'"{s}"' for s in (seeds or [])), api_port=api_port, api_host=api_host,
        fsync=_toml_bool(fsync), sync_in_thread=_toml_bool(sync_in_thread),
        audit_token_line=audit_token_line, log_level=log_level, log_format=log_format,
    )


def _toml_bool(value: bool) -> str:
    return "true" if value else "false"
