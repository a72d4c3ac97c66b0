"""One typed settings object, loaded once at start-up and passed down.

Sources, lowest to highest precedence: defaults, a TOML config file (``--config`` or
``OCS_CONFIG``), ``OCS_*`` environment variables, command-line flags.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "ocs"


REDIS_SCHEMES = ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster")
DATABASE_SCHEMES = ("postgresql", "postgres")
FLAGS = frozenset(  # the settings some `ocs` subcommand also takes as a flag
    [
        "host",
        "port",
        "origin_host",
        "origin_realm",
        "redis_url",
        "database_url",
        "data_dir",
        "http_port",
        "nchf_port",
        "metrics_port",
        "log_level",
        "log_format",
        "workers",
        "accept_unknown_peers",
        "nrf_url",
    ]
)
DEMO_NCHF_PORT = 8090  # `ocs demo`'s Nchf_ConvergedCharging port (docs/nchf.md)
DEMO_CATALOG_PACKAGED = "demo_catalog"  # inside the installed package (setup.py puts it there)


def demo_catalog() -> Path:
    """The demo catalogue shipped with ocs, wherever the command runs from: the copy inside
    an installed package (``ocs/demo_catalog``, added by setup.py's build), else the
    ``policies/demo`` folder of the source tree this package was imported from."""
    package = Path(__file__).resolve().parent
    packaged = package / DEMO_CATALOG_PACKAGED
    if packaged.is_dir():
        return packaged
    return package.parent / "policies" / "demo"


class ConfigError(Exception):
    """A configuration problem, reported with the file and field at fault."""


class PeerSettings(BaseModel):
    """A Diameter peer allowed to connect (docs/operations.md, "Diameter peers")."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    origin_host: str = Field(min_length=1)
    realm: str | None = None  # None: the realm its CER names is not checked
    addresses: list[str] = Field(default_factory=list)  # source IPs or networks (CIDR)
    tls_names: list[str] = Field(default_factory=list)  # certificate CN/SAN (origin_host)
    applications: list[int] = Field(default_factory=list)  # empty: every application we serve
    tenants: list[str] = Field(default_factory=list)  # tenants it may charge for; empty: any
    relays_for: list[str] = Field(default_factory=list)  # Origin-Hosts it relays (a DRA)

    @field_validator("addresses")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        for address in value:
            try:
                ipaddress.ip_network(address, strict=False)
            except ValueError:
                raise ValueError(f"{address!r} is not an IP address or network") from None
        return value


class IdentityRange(BaseModel):
    """A range of SUPIs (IMSI digits) or GPSIs (MSISDN digits) this CHF serves, as TS 29.510
    ``SupiRange`` / ``IdentityRange``: ``start`` and ``end`` (digit strings of one length), or
    a regular expression ``pattern`` (docs/nchf.md, "NRF registration")."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    start: str | None = Field(None, pattern=r"^[0-9]+$", max_length=20)
    end: str | None = Field(None, pattern=r"^[0-9]+$", max_length=20)
    pattern: str | None = Field(None, min_length=1, max_length=256)

    @model_validator(mode="after")
    def _one_form(self) -> IdentityRange:
        if self.pattern is not None:
            if self.start is not None or self.end is not None:
                raise ValueError("give start and end, or a pattern, not both")
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ValueError(f"pattern {self.pattern!r}: {exc}") from None
            return self
        if self.start is None or self.end is None:
            raise ValueError("give start and end (digits), or a pattern")
        if len(self.start) != len(self.end) or self.start > self.end:
            raise ValueError(f"{self.start}-{self.end}: start and end of one length, start <= end")
        return self

    def as_json(self) -> dict[str, str]:
        return self.model_dump(exclude_none=True)


def parse_peer_flag(value: str) -> PeerSettings:
    """``ORIGIN-HOST=ADDRESS[,ADDRESS...]`` of ``--peer``; raises ConfigError."""
    host, sep, addresses = value.partition("=")
    if not sep or not host.strip() or not addresses.strip():
        raise ConfigError(f"--peer {value!r}: expected ORIGIN-HOST=ADDRESS")
    try:
        return PeerSettings(
            origin_host=host.strip(), addresses=[a.strip() for a in addresses.split(",")]
        )
    except ValidationError as exc:
        reasons = "; ".join(str(err["msg"]) for err in exc.errors())
        raise ConfigError(f"--peer {value!r}: {reasons}") from None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OCS_", extra="forbid")

    # Diameter identity and listener
    host: str = "127.0.0.1"
    port: int = Field(3868, ge=0, le=65535)
    origin_host: str = "ocs.local"
    origin_realm: str = "local"
    product_name: str = "ocs"
    vendor_id: int = 0
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None
    # Peer behaviour (RFC 6733 / RFC 3539)
    watchdog_interval: float = Field(30.0, gt=0)  # Tw
    cer_timeout: float = Field(10.0, gt=0)  # a connection must send CER within this time
    max_message_size: int = Field(1 << 20, ge=1024, le=0xFFFFFF)
    write_buffer_high: int = Field(4 << 20, ge=65536)  # pause reading above this
    duplicate_cache_size: int = Field(65536, ge=0)
    shutdown_timeout: float = Field(5.0, ge=0)
    # Who may connect, and what a connection may cost (docs/operations.md, "Diameter peers")
    peers: list[PeerSettings] = Field(default_factory=list)
    accept_unknown_peers: bool = False  # any Origin-Host is admitted (and logged); `ocs demo`
    max_cer_size: int = Field(4096, ge=256, le=65536)  # bytes a connection may send before CER
    message_timeout: float = Field(10.0, gt=0)  # seconds from a message's first byte to its last
    max_connections: int = Field(1024, ge=1)  # Diameter connections in all (per process)
    max_connections_per_address: int = Field(64, ge=1)  # from one source address
    # Process model: worker processes sharing the Diameter and HTTP ports (SO_REUSEPORT)
    workers: int = Field(1, ge=1, le=64)
    # Storage
    redis_url: str | None = None
    database_url: str | None = None
    data_dir: Path = Field(default_factory=default_data_dir)
    # Charging (RFC 4006 failure handling, grants, Final-Unit-Indication)
    failure_handling: Literal["grant", "deny"] = "grant"
    failure_grant_bytes: int = Field(1_000_000, ge=0)
    # what failure handling may grant before the store is back and the journal replayed:
    # per session, and in total per payer (per process: a node with N workers grants N x)
    failover_session_bytes: int = Field(10_000_000, ge=0)
    failover_payer_bytes: int = Field(100_000_000, ge=0)
    # the same for CC-Time (seconds, rated as voice) and CC-Service-Specific-Units (events):
    # one grant is a tenth of the default quota (600 s, 1 event: at least one), a session
    # gets 10 grants, a payer 100, as for bytes (docs/charging.md, "Failure handling")
    failure_grant_seconds: int = Field(60, ge=0)
    failover_session_seconds: int = Field(600, ge=0)
    failover_payer_seconds: int = Field(6_000, ge=0)
    failure_grant_events: int = Field(1, ge=0)
    failover_session_events: int = Field(10, ge=0)
    failover_payer_events: int = Field(100, ge=0)
    audit_interval: float = Field(300.0, ge=0)  # seconds between audits in `ocs serve`; 0: none
    # Credit-Control-Failure-Handling (RFC 4006 8.14) sent in every CCA: what the gateway
    # does when it cannot reach us (continue the service, or try another server, or end it)
    credit_control_failure_handling: Literal["terminate", "continue", "retry_and_terminate"] = (
        "retry_and_terminate"
    )
    validity_time: int = Field(600, ge=1)  # Validity-Time of every grant, seconds
    reclaim_grace: int = Field(60, ge=0)  # after Validity-Time before a reservation is reclaimed
    # How long a CCR's answer (for retransmissions) and its balance result (charged once) are
    # kept: a peer retransmits within seconds (RFC 6733 Tx, failover), not hours; every CCR
    # stores both, so this bounds Redis memory (~1 KB a CCR: 600 s at 1,000 CCR/s ~ 0.6 GB).
    answer_ttl: int = Field(600, ge=10)
    reclaim_interval: float = Field(5.0, gt=0)  # how often expired reservations are reclaimed
    lifecycle_interval: float = Field(60.0, gt=0)  # how often due renewals are looked for
    charging_timeout: float = Field(1.0, gt=0)  # per-CCR budget for Redis, then failure handling
    fui_action: Literal["terminate", "redirect", "restrict_access"] = "terminate"
    fui_redirect_url: str = "http://topup.invalid/"
    free_rating_groups: list[int] = Field(default_factory=list)  # answered 4011
    # the CDR drain deletes the stream entries it stored in PostgreSQL (data minimisation:
    # no IMSI/MSISDN of drained usage stays in Redis); false keeps them, acknowledged
    drain_trim: bool = True
    # HTTP / metrics
    http_port: int = Field(8080, ge=0, le=65535)
    # seconds a verified API token is trusted without asking Redis: a token revoked by
    # another process (`ocs token revoke`, another worker) is refused after at most this
    token_cache_ttl: float = Field(5.0, ge=0)
    metrics_port: int = Field(9464, ge=0, le=65535)
    # Nchf_ConvergedCharging (TS 32.291, docs/nchf.md): HTTP/2 (h2c, or TLS with the three
    # nchf_tls_* files) and HTTP/1.1 on this port. None: off in `ocs serve`, DEMO_NCHF_PORT in
    # `ocs demo`; 0: off
    nchf_port: int | None = Field(None, ge=0, le=65535)
    nchf_tls_cert: Path | None = None
    nchf_tls_key: Path | None = None
    nchf_tls_ca: Path | None = None  # given: consumers must present a certificate it signed
    nchf_max_body: int = Field(65536, ge=1024, le=16 << 20)  # bytes of one request body
    nchf_timeout: float = Field(10.0, gt=0)  # seconds for a request to arrive whole
    # quotaHoldingTime of every Nchf grant, seconds (0: not sent; Gy sends none)
    quota_holding_time: int = Field(0, ge=0)
    # seconds `ocs billrun --metrics-port` keeps serving after the run ended, so that a scrape
    # sees its outcome (a failed run, docs/operations.md) before the process exits
    metrics_linger: float = Field(15.0, ge=0)
    # NRF registration (TS 29.510; docs/nchf.md "NRF registration"), once per node: the
    # NRF's apiRoot (http://nrf:8000), None: no registration
    nrf_url: str | None = None
    nf_instance_id: UUID | None = None  # None: a UUID derived from origin_host (stable)
    nrf_heartbeat: int = Field(30, ge=5, le=3600)  # heartBeatTimer proposed; the NRF's rules
    nrf_timeout: float = Field(3.0, gt=0, le=30)  # seconds for one request to the NRF
    # the address (IPv4 or FQDN) the NRF publishes for our Nchf service; None: host
    sbi_address: str | None = Field(None, min_length=1, max_length=253)
    # apiPrefix of the Nchf service in the profile: our apiRoot (http://address:port), which
    # free5GC's SMF takes as the base of its Nchf client; TS 29.510 reads apiPrefix as path
    # segments after the authority, so consumers that follow it need this off
    nrf_api_root_prefix: bool = True
    chf_supi_ranges: list[IdentityRange] = Field(default_factory=list, max_length=256)
    chf_gpsi_ranges: list[IdentityRange] = Field(default_factory=list, max_length=256)
    # Webhooks (docs/webhooks.md): the dispatcher every `ocs serve` runs (one delivers at a
    # time, by a lease in Redis), its pace, request limits and retries
    webhooks: bool = True  # run the dispatcher in this process (false: another one does)
    webhook_interval: float = Field(1.0, gt=0, le=60)  # seconds between passes over outboxes
    webhook_timeout: float = Field(5.0, gt=0, le=60)  # seconds for one request, in all
    webhook_backoff: float = Field(5.0, gt=0, le=3600)  # seconds before the first retry, doubling
    webhook_backoff_max: float = Field(3600.0, gt=0)  # the longest wait between two attempts
    webhook_max_attempts: int = Field(12, ge=1, le=100)  # then the event is a dead letter
    webhook_max_body: int = Field(65_536, ge=1024, le=1 << 20)  # bytes of one event's body
    webhook_retention: float = Field(7 * 86_400.0, ge=60)  # seconds an unneeded event is kept
    # callback URLs naming localhost or a loopback/private/link-local address (`ocs demo`: on)
    webhook_private_targets: bool = False
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = "text"  # json: one object per line

    @field_validator("redis_url")
    @classmethod
    def _redis_url_scheme(cls, value: str | None) -> str | None:
        """A URL the Redis clients accept (ocs.redis_client), refused here in one line."""
        if value and value.partition("://")[0] not in REDIS_SCHEMES:
            raise ValueError(
                f"must start with one of {', '.join(s + '://' for s in REDIS_SCHEMES)}"
            )
        return value

    @field_validator("nrf_url")
    @classmethod
    def _nrf_url(cls, value: str | None) -> str | None:
        """The NRF's apiRoot: ``http://`` (h2c) or ``https://``, a host, no query."""
        if not value:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query:
            raise ValueError(f"{value!r} is not an NRF apiRoot (http://host:port or https://...)")
        return value.rstrip("/")

    @field_validator("database_url")
    @classmethod
    def _database_url_scheme(cls, value: str | None) -> str | None:
        """A PostgreSQL URL (``postgresql://user:password@host:port/database``)."""
        if value and (
            value.partition("://")[0] not in DATABASE_SCHEMES or not value.partition("://")[2]
        ):
            raise ValueError(
                f"{value!r} is not a PostgreSQL URL (postgresql://user:password@host:port/db)"
            )
        return value

    @model_validator(mode="after")
    def _peers_identifiable(self) -> Settings:
        """A peer is known by where it connects from or by its certificate, never by the
        Origin-Host it claims alone."""
        for peer in self.peers:
            if not peer.addresses and not (self.tls_ca and self.tls_cert):
                raise ValueError(
                    f"peer {peer.origin_host!r}: no addresses, so anyone could claim it; give "
                    "its addresses, or serve TLS with client certificates (tls_ca)"
                )
        return self

    @classmethod
    def load(
        cls,
        config_file: str | os.PathLike[str] | None = None,
        *,
        add_peers: Sequence[PeerSettings] = (),
        **overrides: Any,
    ) -> Settings:
        """Merge file, environment and explicit overrides (None values are ignored).
        ``add_peers`` (``--peer``) join the peers of the file or environment; one with the
        Origin-Host of a peer there replaces it."""
        file_values: dict[str, Any] = {}
        path = config_file or os.environ.get("OCS_CONFIG")
        if path:
            try:
                with open(path, "rb") as fh:
                    raw = tomllib.load(fh)
            except OSError as exc:
                raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"{path}: invalid TOML: {exc}") from None
            file_values = dict(raw.get("ocs", raw))
        explicit = {k: v for k, v in overrides.items() if v is not None}
        env_names = {name for name in cls.model_fields if f"OCS_{name.upper()}" in os.environ}
        merged = {k: v for k, v in file_values.items() if k not in env_names} | explicit
        try:
            settings = cls(**merged)
            if add_peers:
                peers = {p.origin_host.lower(): p for p in (*settings.peers, *add_peers)}
                settings = cls(**(merged | {"peers": list(peers.values())}))
            return settings
        except ValidationError as exc:
            where = f"{path}" if path else "settings"
            reasons = "; ".join(
                f"{_where(err['loc'])}: {err['msg'].removeprefix('Value error, ')}"
                for err in exc.errors()
            )
            raise ConfigError(f"{where}: {reasons}") from None


def _where(loc: tuple[int | str, ...]) -> str:
    """A setting's name as a user wrote it: ``database_url (--database-url, OCS_DATABASE_URL)``."""
    name = ".".join(str(p) for p in loc)
    if len(loc) != 1 or name not in Settings.model_fields:
        return name
    flag = f"--{name.replace('_', '-')}, " if name in FLAGS else ""
    return f"{name} ({flag}OCS_{name.upper()})"
