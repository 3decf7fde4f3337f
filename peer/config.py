"""The peer's configuration: a TOML file, every value overridable by an environment variable.

Environment variables are `MESHPAY_` followed by the setting's path with `__` between levels, e.g.
`MESHPAY_API__PORT=8081` or `MESHPAY_NETWORK__SEEDS='["127.0.0.1:7001"]'`. Precedence: environment,
then the file, then the defaults. Relative paths in the file are relative to the file's directory.
(pydantic-settings does the layering and the type checking, so a bad value is a clear error.)
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from crypto.errors import MeshpayError
from gossip.broadcast import BroadcastConfig
from gossip.limits import DEFAULT_LIMITS as _PORT
from gossip.limits import TransportLimits
from gossip.membership import MembershipConfig
from peer.hosts import check_host, is_loopback, is_wildcard


class ConfigError(MeshpayError):
    """The configuration file or environment holds an invalid value."""


def parse_hostport(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r} is not HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    check_host(host)
    return host, int(port)


Host = Annotated[str, AfterValidator(check_host)]  # an IP address or a DNS host name


class NetworkSettings(BaseModel):
    listen_host: Host = "127.0.0.1"
    listen_port: int = Field(7000, ge=0, le=65535)
    advertise_host: str = ""  # defaults to listen_host
    seeds: list[str] = Field(default_factory=list)

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, value: list[str]) -> list[str]:
        for seed in value:
            parse_hostport(seed)
        return value

    @field_validator("advertise_host")
    @classmethod
    def _advertise_host(cls, value: str) -> str:
        if value and is_wildcard(check_host(value)):
            raise ValueError(f"{value!r} is a wildcard; advertise an address other peers can dial")
        return value

    def advertised_host(self) -> str:
        """The address put in this peer's signed record. A wildcard listen address cannot be dialled,
        so it needs `advertise_host` (checked when the peer starts, not when the file is read: a
        container image's file gets its advertise address from the environment at start)."""
        if self.advertise_host:
            return self.advertise_host
        if is_wildcard(self.listen_host):
            raise ConfigError(f"listen_host {self.listen_host!r} listens on every interface, so other peers "
                              "cannot be told it: set network.advertise_host to the address they should dial")
        return self.listen_host


class ApiSettings(BaseModel):
    host: Host = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    # Binding beyond loopback must be asked for: the API answers anyone who can reach it.
    allow_public: bool = False
    max_body_bytes: int = Field(64 * 1024, ge=1024)
    max_waiting: int = Field(128, ge=1)  # requests waiting on a payment at once
    max_wait_seconds: float = Field(60.0, gt=0)
    # Connection limits (docs/security.md): open connections, time to a request's complete headers
    # (from connect or the previous response), to its complete body, and for each write.
    max_connections: int = Field(256, ge=1)
    idle_timeout: float = Field(15.0, gt=0)
    body_timeout: float = Field(10.0, gt=0)
    send_timeout: float = Field(15.0, gt=0)
    max_header_bytes: int = Field(16 * 1024, ge=1024)  # request line and headers still incomplete
    # Seconds a status query waits for other peers when this peer does not know the payment.
    lookup_timeout: float = Field(1.0, gt=0)
    # Bearer token for /v1/audit/*; empty: the audit endpoints are off (404).
    audit_token: str = ""
    # Bearer token for the operator's actions over HTTP (epoch proposals and approvals, the admin
    # API); empty: they are off.
    admin_token: str = ""

    @field_validator("audit_token", "admin_token")
    @classmethod
    def _token(cls, value: str) -> str:
        if value and (len(value) < 16 or not value.isascii() or not value.isprintable() or " " in value):
            raise ValueError("a token is empty (off) or at least 16 printable ASCII characters without spaces")
        return value

    @model_validator(mode="after")
    def _public_needs_consent(self) -> ApiSettings:
        if not is_loopback(self.host) and not self.allow_public:
            raise ValueError(f"host {self.host!r} makes the API reachable from other machines; set "
                             "api.allow_public = true to do that deliberately")
        return self

    @property
    def public(self) -> bool:
        return not is_loopback(self.host)


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


class PeerPortSettings(BaseModel):
    """Who may hold a connection on the peer port and what outsiders may cost (docs/security.md)."""

    max_handshakes: int = Field(_PORT.max_handshakes, ge=1)
    max_per_address: int = Field(_PORT.max_per_address, ge=1)
    max_links_per_peer: int = Field(_PORT.max_links_per_peer, ge=1)
    max_outsider_links: int = Field(_PORT.max_outsider_links, ge=1)
    max_client_sessions: int = Field(_PORT.max_client_sessions, ge=1)
    client_idle_timeout: float = Field(_PORT.client_idle_timeout, gt=0)
    evict_idle: float = Field(_PORT.evict_idle, gt=0)
    outsider_handshakes_per_second: float = Field(_PORT.outsider_handshakes_per_second, gt=0)
    client_handshakes_per_second: float = Field(_PORT.client_handshakes_per_second, gt=0)
    outsider_messages_per_second: float = Field(_PORT.outsider_messages_per_second, gt=0)
    outsider_bytes_per_second: float = Field(_PORT.outsider_bytes_per_second, ge=1024)
    outsider_dials_per_second: float = Field(_PORT.outsider_dials_per_second, gt=0)
    outsider_queue: int = Field(_PORT.outsider_queue, ge=1)
    log_burst: int = Field(_PORT.log_burst, ge=1)
    log_interval: float = Field(_PORT.log_interval, gt=0)

    def limits(self) -> TransportLimits:
        return replace(_PORT, **self.model_dump())


class MembershipSettings(BaseModel):
    """How much room peers outside the committee get in membership and broadcast."""

    max_outsiders: int = Field(MembershipConfig.max_outsiders, ge=1)
    outsider_ttl: float = Field(MembershipConfig.outsider_ttl, gt=0)
    observer_fanout: int = Field(BroadcastConfig.observer_fanout, ge=0)


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
    peer_port: PeerPortSettings = Field(default_factory=PeerPortSettings)
    membership: MembershipSettings = Field(default_factory=MembershipSettings)

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
# Peer-to-peer port (authenticated, encrypted TCP). 127.0.0.1 keeps the peer local. An IP address
# or a host name.
listen_host = "{listen_host}"
listen_port = {listen_port}
# Address other peers should use to reach this one (defaults to listen_host; required when
# listen_host is a wildcard such as 0.0.0.0 or ::).
advertise_host = "{advertise_host}"
# One reachable seed is enough to join; more make joining robust.
seeds = [{seeds}]

[api]
# HTTP JSON API for wallets and scripts. Any address other than loopback also needs
# allow_public = true (the peer then warns at start-up that the API is reachable from outside).
host = "{api_host}"
port = {api_port}
allow_public = {allow_public}
# Request bodies larger than this are refused with 413.
max_body_bytes = 65536
# Requests waiting on a payment at once. When all are taken, the oldest wait on a payment the owners
# are turning away for now (e.g. a sequence number ahead) is answered early to make room; otherwise
# the newcomer gets 429 `too_many_waiting` instead of queueing.
max_waiting = 128
max_wait_seconds = 60.0
# Open connections at most. When all are taken, the oldest one that is idle or still sending its
# request is closed for the newcomer; if every one is being answered, the newcomer gets 503.
max_connections = 256
# Seconds from connecting (or the previous response) to a request's complete headers.
idle_timeout = 15.0
# Seconds from a request's headers to its complete body (else 408), and for each write of a response.
body_timeout = 10.0
send_timeout = 15.0
# A request line and headers still incomplete past this many bytes are refused (431).
max_header_bytes = 16384
# Seconds a query for a payment this peer does not know waits for the other peers' answers.
lookup_timeout = 1.0
# Bearer token that opens /v1/audit/* (at least 16 characters); empty keeps them off.
{audit_line}
# Bearer token for the operator's actions over HTTP: epoch proposals and approvals, and the admin
# API (/v1/admin: a graceful stop, used by the web console). Empty keeps them off. Anyone who can
# read this file can act as this peer's operator (the environment, MESHPAY_API__ADMIN_TOKEN, works too).
admin_token = "{admin_token}"

[log]
# debug (every payment's life: received, voted, certified, applied) | info (summaries) | warning | error
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

[peer_port]
# Limits on the peer port. Committee peers (from the genesis) always get a link; other peers
# ("outsiders") and clients share the bounded room below (docs/security.md).
# Sockets still in the handshake; when full the oldest is dropped for the newest.
max_handshakes = 64
# Client sessions plus outsider links from one IP address (committee peers are not counted).
max_per_address = 128
# Inbound links from one peer key; a new one replaces the oldest.
max_links_per_peer = 4
max_outsider_links = 32
max_client_sessions = 256
# A client session with no message either way for this long is closed.
client_idle_timeout = 30.0
# A full table closes its longest-idle session for a newcomer if it has been idle this long.
evict_idle = 5.0
# Handshakes per second from keys outside the committee, and from clients (refused on the Hello).
outsider_handshakes_per_second = 10.0
client_handshakes_per_second = 5.0
# What all outsiders together may make this peer read; beyond it their reads wait.
outsider_messages_per_second = 500.0
outsider_bytes_per_second = 262144
outsider_dials_per_second = 2.0
# Messages waiting to go to one outsider.
outsider_queue = 64
# Refusals and failures logged per kind per interval (the rest are summed up in one line).
log_burst = 10
log_interval = 10.0

[membership]
# Peers outside the committee held at once (only ones that introduced themselves), and for how
# long one stays without talking to us. They are never written to disk.
max_outsiders = 32
outsider_ttl = 60.0
# Extra copies of each relayed broadcast (epoch messages) sent to those peers.
observer_fanout = 1
"""


def render(*, data_dir: str = "data", key_file: str = "peer.key", genesis: str = "genesis.json",
           password_file: str | None = None, listen_host: str = "127.0.0.1", listen_port: int = 7000,
           advertise_host: str = "", seeds: list[str] | None = None, api_port: int = 8000, api_host: str = "127.0.0.1",
           fsync: bool = True, sync_in_thread: bool = True, audit_token: str | None = None,
           log_level: str = "info", log_format: str = "text", admin_token: str = "") -> str:
    password_line = f'password_file = "{password_file}"' if password_file else '# password_file = "password.txt"'
    audit_line = f'audit_token = "{audit_token}"' if audit_token else '# audit_token = ""'
    return TEMPLATE.format(
        data_dir=data_dir, key_file=key_file, genesis=genesis, password_line=password_line,
        listen_host=listen_host, listen_port=listen_port, advertise_host=advertise_host,
        seeds=", ".join(f'"{s}"' for s in (seeds or [])), api_port=api_port, api_host=api_host,
        allow_public=_toml_bool(not is_loopback(api_host)),
        fsync=_toml_bool(fsync), sync_in_thread=_toml_bool(sync_in_thread), audit_line=audit_line,
        log_level=log_level, log_format=log_format, admin_token=admin_token,
    )


def _toml_bool(value: bool) -> str:
    return "true" if value else "false"
