"""Configuration: YAML validated once, at start, into typed pydantic models.

Secrets never live in this file. Where a value is secret, the file holds a reference to it
(an environment variable or a file path) or names a path in the secret store. Relative file
paths are taken relative to the config file's own folder.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, Self, TypeVar
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from credbroker.domain import (
    MAX_TTL,
    STS_MIN_TTL,
    Access,
    Client,
    Flavor,
    Role,
    SpaceTarget,
    TtlLimits,
)
from credbroker.errors import ConfigError, InvalidRequest
from credbroker.policy import (
    MAX_POLICY_CHARS,
    normalize_prefix,
    validate_bucket,
    validate_space_key,
    worst_case_policy_chars,
)
from credbroker.rotation.schedule import Schedule


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SecretRef(_Model):
    """Where a secret value comes from: exactly one of an env var or a file."""

    env: str | None = None
    file: Path | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        if (self.env is None) == (self.file is None):
            raise ValueError("give exactly one of 'env' or 'file'")
        return self

    def resolve(self) -> str:
        if self.env is not None:
            value = os.environ.get(self.env, "")
            if not value:
                raise ConfigError(f"environment variable {self.env} is not set")
            return value
        assert self.file is not None
        try:
            return self.file.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read secret file {self.file}: {exc.strerror}") from None


# --- secret stores ----------------------------------------------------------------------------


class EmbeddedStoreConfig(_Model):
    kind: Literal["embedded"] = "embedded"
    path: Path = Path("var/secrets.sealed")
    key_env: str = "CREDBROKER_SEAL_KEY"
    key_file: Path | None = Path("var/seal.key")


class VaultTokenAuth(_Model):
    method: Literal["token"] = "token"
    token: SecretRef = SecretRef(env="VAULT_TOKEN")


class VaultAppRoleAuth(_Model):
    method: Literal["approle"]
    role_id: SecretRef
    secret_id: SecretRef
    mount: str = "approle"


class VaultStoreConfig(_Model):
    kind: Literal["vault"]
    url: Annotated[str, StringConstraints(pattern=r"^https?://")]
    mount: str = "secret"
    namespace: str | None = None
    auth: Annotated[VaultTokenAuth | VaultAppRoleAuth, Field(discriminator="method")] = (
        VaultTokenAuth()
    )
    verify_tls: bool = True
    ca_file: Path | None = None
    timeout_seconds: float = Field(default=5.0, gt=0, le=60)


# A CCP query value: CyberArk's GetPassword refuses `+ & %` in values; `;` separates a Query's
# properties. Refused, never cleaned (spaces are sent encoded as %20).
_CcpValue = Annotated[str, StringConstraints(pattern=r"^[^+&%;\x00-\x1f\x7f]{1,256}$")]
# An account property name in the GetPassword answer (Content, UserName, AWSAccessKeyID, ...).
_CcpProperty = Annotated[str, StringConstraints(pattern=r"^[A-Za-z][A-Za-z0-9_]{0,63}$")]


class CyberArkAccountConfig(_Model):
    """Where one credbroker secret path lives in CyberArk: the GetPassword query (Safe and
    Folder, and Object or UserName/Address), and which answer property holds each field."""

    safe: _CcpValue
    folder: _CcpValue | None = None  # CCP's default: Root
    object: _CcpValue | None = None
    username: _CcpValue | None = None
    address: _CcpValue | None = None
    # credbroker field -> property of the CCP answer. An access key's id is the account's
    # UserName (a MinIO user) or a platform property (AWS Access Keys: AWSAccessKeyID).
    fields: dict[str, _CcpProperty] = Field(
        default_factory=lambda: {"access_key_id": "UserName", "secret_access_key": "Content"},
        min_length=1,
    )

    @model_validator(mode="after")
    def _one_account(self) -> Self:
        if self.object is None and self.username is None:
            raise ValueError("give `object`, or `username` (with `address` if needed)")
        return self

    def query(self) -> dict[str, str]:
        """The GetPassword query parameters naming this account (AppID and Reason apart)."""
        names = {
            "Safe": self.safe,
            "Folder": self.folder,
            "Object": self.object,
            "UserName": self.username,
            "Address": self.address,
        }
        return {name: value for name, value in names.items() if value is not None}


class CyberArkCcpStoreConfig(_Model):
    """CyberArk Central Credential Provider (GET /AIMWebService/api/Accounts): read-only for
    the broker, CyberArk's CPM rotates (vendor/cyberark/README.md)."""

    kind: Literal["cyberark-ccp"]
    url: Annotated[str, StringConstraints(pattern=r"^https?://[^/?#]+/?$")]
    # The IIS application the web service is published under.
    service_path: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._-]{1,64}$")] = (
        "AIMWebService"
    )
    app_id: _CcpValue
    # The application's client certificate (mTLS; CyberArk authenticates the AppID by it),
    # PEM files. Absent: the AppID is authenticated by allowed machines alone.
    client_cert: Path | None = None
    client_key: Path | None = None
    verify_tls: bool = True
    ca_file: Path | None = None  # pins the CA of the CCP's server certificate
    # Sent as Reason (CyberArk's audit log shows it).
    reason: _CcpValue | None = "credbroker"
    # ConnectionTimeout: how long the CCP itself may wait on the CyberArk Vault (CCP default 30).
    connection_timeout_seconds: int | None = Field(default=None, ge=1, le=600)
    # FailRequestOnPasswordChange: while the CPM changes a password, answer 500 APPAP282E
    # (an outage for the broker) instead of the password being replaced.
    fail_request_on_password_change: bool = False
    timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    # Every secret path the broker reads: the object store's key, the fallback's.
    accounts: dict[str, CyberArkAccountConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _cert_and_key(self) -> Self:
        if (self.client_cert is None) != (self.client_key is None):
            raise ValueError("give both client_cert and client_key, or neither")
        return self

    def unreadable_files(self) -> list[str]:
        """Certificate files that cannot be read now (check-config; the server fails too)."""
        problems = []
        for name in ("client_cert", "client_key", "ca_file"):
            path: Path | None = getattr(self, name)
            if path is None:
                continue
            try:
                path.read_bytes()
            except OSError as exc:
                problems.append(f"secret_store.{name} {path}: {exc.strerror}")
        return problems


SecretStoreConfig = Annotated[
    EmbeddedStoreConfig | VaultStoreConfig | CyberArkCcpStoreConfig, Field(discriminator="kind")
]


class SecretStoreResilienceConfig(_Model):
    """Every secret-store call: one deadline, bounded retries with jitter, a circuit breaker."""

    # The whole call, retries included: nothing waits on the store longer than this.
    timeout_seconds: float = Field(default=3.0, gt=0, le=60)
    # Reads and checks only; a write that may have happened is never repeated blind.
    attempts: int = Field(default=3, ge=1, le=10)
    # Full jitter: a random wait in [0, min(backoff_max, backoff * 2**n)] before retry n.
    backoff_seconds: float = Field(default=0.05, ge=0, le=10)
    backoff_max_seconds: float = Field(default=0.5, ge=0, le=30)
    # Consecutive unreachable calls that open the breaker, and how long it stays open before
    # one trial call may go through (half-open).
    failure_threshold: int = Field(default=3, ge=1, le=100)
    open_seconds: float = Field(default=10.0, gt=0, le=600)


class FallbackConfig(_Model):
    """Read-only fallback: an object-store identity whose own policy allows only reads."""

    # Its keys in the secret store (fields access_key_id, secret_access_key).
    credentials_path: str
    # The role its AssumeRole calls name. Ceph RGW requires it (a role that trusts the
    # read-only user and allows only reads); MinIO ignores it.
    role_arn: str | None = None
    # The keys sealed on disk (AES-256-GCM) so a broker restarted during an outage can serve
    # reads. The base64 key: key_env if set and non-empty, else key_file.
    cache_file: Path = Path("var/fallback.sealed")
    key_env: str = "CREDBROKER_FALLBACK_KEY"
    key_file: Path | None = None
    # Re-read from the store this often while it answers.
    refresh_seconds: float = Field(default=300.0, ge=1, le=86400)
    # Past this age (since the keys were last read from the store) reads are refused too.
    max_staleness_seconds: float = Field(default=86400.0, ge=1, le=30 * 86400)

    @model_validator(mode="after")
    def _staleness_above_refresh(self) -> Self:
        if self.max_staleness_seconds <= self.refresh_seconds:
            raise ValueError("max_staleness_seconds must be larger than refresh_seconds")
        return self


# --- object store -----------------------------------------------------------------------------


class ObjectStoreConfig(_Model):
    flavor: Flavor = Flavor.MINIO
    endpoint: Annotated[str, StringConstraints(pattern=r"^https?://[^/?#]+/?$")]
    # The address handed to automations, when it differs from the one the broker uses.
    public_endpoint: Annotated[str, StringConstraints(pattern=r"^https?://[^/?#]+/?$")] | None = (
        None
    )
    region: str = "us-east-1"
    verify_tls: bool = True
    ca_file: Path | None = None
    role_arn: str | None = None
    credentials_path: str = "credbroker/object-store/service"
    timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    ttl: TtlLimits = TtlLimits()
    # How far the store's clock may run ahead of the broker's: a key whose Expiration is later
    # than asked by more than this is refused (MinIO's MINIO_STS_DURATION overrides the TTL).
    clock_skew_seconds: float = Field(default=60.0, ge=0, le=600)

    @model_validator(mode="after")
    def _rgw_needs_role(self) -> Self:
        if self.flavor is Flavor.RGW and not self.role_arn:
            raise ValueError("Ceph RGW requires role_arn (arn:aws:iam:::role/NAME)")
        return self


# --- spaces and clients -----------------------------------------------------------------------


_HEX64 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class ClientConfig(_Model):
    id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._-]{1,64}$")]
    token_sha256: _HEX64
    spaces: list[str] = Field(min_length=1)
    max_access: Access = Access.READ
    max_ttl_seconds: int = Field(default=3600, ge=STS_MIN_TTL, le=MAX_TTL)
    # admin: true is kept as a short form of adding the admin role.
    admin: bool = False
    roles: list[Role] = Field(default_factory=lambda: [Role.RULE], min_length=1)
    # This client's own rate limit; unset: limits.rate_per_second and limits.burst.
    rate_per_second: float | None = Field(default=None, gt=0, le=1_000_000)
    burst: int | None = Field(default=None, ge=1, le=1_000_000)

    @field_validator("spaces")
    @classmethod
    def _space_keys(cls, value: list[str]) -> list[str]:
        return [_as_value_error(validate_space_key, v) for v in value]

    def to_client(self) -> Client:
        return Client(
            id=self.id,
            spaces=frozenset(self.spaces),
            max_access=self.max_access,
            max_ttl_seconds=self.max_ttl_seconds,
            roles=frozenset(self.roles) | ({Role.ADMIN} if self.admin else set()),
        )


class ClientCertificateConfig(_Model):
    """A client certificate (verified against server.tls.client_ca_file) that names a client:
    exactly one of its subject common name or a subject alternative name, matched exactly."""

    cn: str | None = None
    dns: str | None = None
    uri: str | None = None
    email: str | None = None
    client: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._-]{1,64}$")]

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        if sum(v is not None for v in (self.cn, self.dns, self.uri, self.email)) != 1:
            raise ValueError("give exactly one of cn, dns, uri, email")
        return self

    def match(self) -> tuple[Literal["cn", "dns", "uri", "email"], str]:
        for name in ("cn", "dns", "uri", "email"):
            value = getattr(self, name)
            if value is not None:
                return name, value
        raise AssertionError("validated: one is set")


class ServerTlsConfig(_Model):
    """HTTPS on the listener. The files are read at start and again on SIGHUP (new
    connections get the new certificate; open ones keep theirs)."""

    cert_file: Path
    key_file: Path
    min_version: Literal["1.2", "1.3"] = "1.2"
    # off: no client certificates asked; optional: verified if sent (mapped below);
    # required: the handshake fails without one signed by client_ca_file.
    client_certs: Literal["off", "optional", "required"] = "off"
    client_ca_file: Path | None = None
    client_certificates: list[ClientCertificateConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _client_ca(self) -> Self:
        if self.client_certs != "off" and self.client_ca_file is None:
            raise ValueError(f"client_certs: {self.client_certs} needs client_ca_file")
        if self.client_certificates and self.client_certs == "off":
            raise ValueError("client_certificates need client_certs: optional or required")
        return self


class ServerConfig(_Model):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    max_body_bytes: int = Field(default=16 * 1024, ge=1024, le=1024 * 1024)
    # /readyz answers from a result this old at most (one upstream probe in flight at a time).
    readiness_cache_seconds: float = Field(default=1.0, ge=0.1, le=60)
    # HTTPS (absent: plain HTTP, for loopback behind a TLS-terminating proxy, or dev.sh).
    tls: ServerTlsConfig | None = None
    # Broker processes on this port (SO_REUSEPORT; web/workers.py); fair-use rates are split
    # among them.
    workers: int = Field(default=1, ge=1, le=64)


class ReadinessConfig(_Model):
    """/readyz's vend canary (web/readiness.py): an AssumeRole and one list, this often."""

    canary_seconds: float = Field(default=60.0, ge=1, le=3600)


class LimitsConfig(_Model):
    """Fair use, counted by each replica alone (README "Limits")."""

    # Per client: a token bucket of `burst` vends/presigns refilled at `rate_per_second`.
    rate_per_second: float = Field(default=50.0, gt=0, le=1_000_000)
    burst: int = Field(default=100, ge=1, le=1_000_000)
    # Vends and presigns being worked on at once (all clients); past it 503 overloaded.
    max_in_flight: int = Field(default=256, ge=1, le=100_000)
    # Open client connections (`credbroker serve`); past it a new one gets 503 overloaded.
    max_connections: int = Field(default=1024, ge=1, le=1_000_000)
    # A new connection's first request line and headers must arrive within this, else closed.
    header_timeout_seconds: float = Field(default=10.0, gt=0, le=600)
    # A request body must arrive within this (else 408, connection closed).
    body_timeout_seconds: float = Field(default=30.0, gt=0, le=600)
    # An idle keep-alive connection, or one that has not finished sending a later request's
    # headers, is closed after this.
    keepalive_timeout_seconds: float = Field(default=15.0, gt=0, le=3600)


# --- identities: OIDC callers, the Confluence actor ---------------------------------------------

_OIDC_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384")
_OIDC_ALGORITHMS_ALL = (*_OIDC_ALGORITHMS, "ES512", "EdDSA")


class OidcMappingConfig(_Model):
    """One value of the mapped claim (a group or policy name) and what it grants."""

    value: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    roles: list[Role] = Field(default_factory=lambda: [Role.RULE], min_length=1)
    spaces: list[str] = Field(default_factory=list)
    max_access: Access = Access.READ
    max_ttl_seconds: int = Field(default=3600, ge=STS_MIN_TTL, le=MAX_TTL)

    @field_validator("spaces")
    @classmethod
    def _space_keys(cls, value: list[str]) -> list[str]:
        return [_as_value_error(validate_space_key, v) for v in value]


class OidcConfig(_Model):
    """Callers with a JWT from the organisation's identity provider (README "Identities")."""

    issuer: Annotated[str, StringConstraints(pattern=r"^https?://[^?#]+$")]
    # The key set's URL; absent: the jwks_uri of {issuer}/.well-known/openid-configuration.
    jwks_url: Annotated[str, StringConstraints(pattern=r"^https?://[^#]+$")] | None = None
    audience: Annotated[str, StringConstraints(min_length=1)]
    # Asymmetric only: none and HS* are refused here, whatever a token says.
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256"], min_length=1)
    # The claim naming the caller's groups or policies (authentik/Keycloak: groups; MinIO's
    # convention: policy), and the claim that names the person or service (id oidc:<value>).
    claim: Annotated[str, StringConstraints(min_length=1, max_length=128)] = "groups"
    name_claim: Annotated[str, StringConstraints(min_length=1, max_length=128)] = "sub"
    mappings: list[OidcMappingConfig] = Field(min_length=1)
    clock_skew_seconds: float = Field(default=60.0, ge=0, le=300)
    jwks_cache_seconds: float = Field(default=3600.0, ge=10, le=86400)
    # An unknown kid refreshes the key set at most this often (random kids cannot hammer it).
    jwks_min_refresh_seconds: float = Field(default=30.0, ge=1, le=3600)
    timeout_seconds: float = Field(default=3.0, gt=0, le=30)
    verify_tls: bool = True
    ca_file: Path | None = None

    @field_validator("algorithms")
    @classmethod
    def _asymmetric_only(cls, value: list[str]) -> list[str]:
        bad = [a for a in value if a not in _OIDC_ALGORITHMS_ALL]
        if bad:
            raise ValueError(
                f"algorithms {bad} not allowed: only {', '.join(_OIDC_ALGORITHMS_ALL)} "
                "(never none or HS*: a key set holds public keys)"
            )
        return value


class ConfluenceConfig(_Model):
    """The Confluence site asked whether a rule's actor may view or edit a space."""

    url: Annotated[str, StringConstraints(pattern=r"^https?://[^?#]+$")]
    # cloud: https://SITE.atlassian.net (REST under /wiki); the actor is an account id.
    # datacenter: https://wiki.example.internal (Data Center / Server 7.9+); the actor is a
    # username or a user key (actor_id), the credential a personal access token (auth: bearer).
    deployment: Literal["cloud", "datacenter"] = "cloud"
    # basic: an Atlassian account's email + API token; bearer: an OAuth 2.0 access token
    # (cloud) or a personal access token (datacenter, which takes only bearer).
    auth: Literal["basic", "bearer"] = "basic"
    # Secret-store path: fields email and api_token (basic), or token (bearer).
    credentials_path: Annotated[str, StringConstraints(min_length=1)]
    # datacenter only: what the rule sends as `actor`, a username or a user key.
    actor_id: Literal["username", "key"] = "username"
    timeout_seconds: float = Field(default=3.0, gt=0, le=30)
    # An answer (yes or no) is reused this long per space, actor and access.
    cache_seconds: float = Field(default=60.0, ge=0, le=3600)
    # A 429 whose Retry-After is at most this is waited out once; longer is "unavailable".
    max_retry_after_seconds: float = Field(default=2.0, ge=0, le=30)
    verify_tls: bool = True
    ca_file: Path | None = None

    @model_validator(mode="after")
    def _deployment_auth(self) -> ConfluenceConfig:
        if self.deployment == "datacenter" and self.auth != "bearer":
            raise ValueError(
                "confluence.deployment datacenter authenticates with a personal access token: "
                "set auth: bearer (field token at credentials_path)"
            )
        if self.deployment == "cloud" and self.actor_id != "username":
            raise ValueError("confluence.actor_id applies to deployment datacenter only")
        return self


class SyslogSinkConfig(_Model):
    """RFC 5424 messages to a syslog server (a SIEM): UDP (RFC 5426) or TCP (RFC 6587)."""

    host: Annotated[str, StringConstraints(min_length=1, max_length=253)]
    port: int = Field(default=514, ge=1, le=65535)
    protocol: Literal["udp", "tcp"] = "udp"
    facility: int = Field(default=10, ge=0, le=23)  # 10: authpriv
    app_name: Annotated[str, StringConstraints(pattern=r"^[!-~]{1,48}$")] = "credbroker"
    timeout_seconds: float = Field(default=5.0, gt=0, le=60)


class AuditConfig(_Model):
    # A JSON-lines file; null writes audit events to the log instead.
    path: Path | None = Path("var/audit.jsonl")
    # Where the chained records go, each record to every one (README "Audit trail").
    sinks: list[Literal["file", "stdout", "syslog"]] = Field(default=["file"], min_length=1)
    syslog: SyslogSinkConfig | None = None
    # Sequence numbers and hash links (audit/chain.py); false: plain records as before.
    chain: bool = True
    # A signed checkpoint this often (and at shutdown), when a signing key is configured.
    checkpoint_seconds: float = Field(default=300.0, ge=1, le=86400)
    # The Ed25519 signing key: a file (PEM, or base64 raw; `credbroker audit keygen`) or a
    # secret-store path (field ed25519_private_key). Neither: records are chained, unsigned.
    signing_key_file: Path | None = None
    signing_key_secret_path: str | None = None
    # The public key for verifiers; default: next to the audit file, NAME.pub.
    public_key_file: Path | None = None

    @model_validator(mode="after")
    def _sinks_consistent(self) -> Self:
        if len(set(self.sinks)) != len(self.sinks):
            raise ValueError("audit.sinks: each sink may appear once")
        if "syslog" in self.sinks and self.syslog is None:
            raise ValueError("audit.sinks names syslog: give audit.syslog (host, port)")
        if self.signing_key_file is not None and self.signing_key_secret_path is not None:
            raise ValueError("give at most one of signing_key_file and signing_key_secret_path")
        return self

    def public_key_path(self) -> Path | None:
        if self.public_key_file is not None:
            return self.public_key_file
        return None if self.path is None else self.path.with_name(self.path.name + ".pub")

    def signed(self) -> bool:
        return self.signing_key_file is not None or self.signing_key_secret_path is not None


class ComplianceConfig(_Model):
    """The daily compliance check (README "Compliance check", docs/audit.md)."""

    # JSON and HTML reports, one pair per run.
    report_dir: Path = Path("var/compliance")
    # Run once a day inside `credbroker serve` (one replica runs it: the state store's lock).
    scheduler: bool = True
    daily_at: Annotated[str, StringConstraints(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")] = (
        "02:00"
    )
    # The key that reads bucket policies and ACLs (the buckets' owner or an admin); default:
    # object_store.credentials_path.
    inspect_credentials_path: str | None = None
    # Clients unused, or holding write unused, this long fail the check.
    unused_days: int = Field(default=30, ge=1, le=3650)
    # A usable token of a store principal older than this fails the check (token_age).
    token_max_age_days: int = Field(default=90, ge=1, le=3650)
    # Config-file tokens carry no date: listed as not checkable; true makes them fail too.
    require_dated_tokens: bool = False
    # Insecure transport targets (as check-config names them, e.g. "object_store.endpoint")
    # accepted on purpose: the control passes for them, with the acceptance as evidence.
    accept_insecure_transport: list[str] = Field(default_factory=list)
    # Where the read-only probe tries to write (inside the first space's prefix).
    canary_name: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._-]{1,64}$")] = (
        ".credbroker-canary"
    )


# --- rotation of the broker's own keys, and where its state lives ------------------------------


class ScheduleConfig(_Model):
    """Exactly one of a fixed interval or a crontab line (UTC; weekday 0 and 7 are Sunday)."""

    interval_seconds: int | None = Field(default=None, ge=60)
    cron: str | None = None

    @model_validator(mode="after")
    def _one_valid_schedule(self) -> Self:
        self.to_schedule()  # raises ValueError with the reason
        return self

    def to_schedule(self) -> Schedule:
        return Schedule(interval_seconds=self.interval_seconds, cron=self.cron)


_UserName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._@=,+-]{0,127}$")]


class KeyDriverConfig(_Model):
    """The object store's admin API that creates and deletes the user's keys.

    rgw, minio: keys of one `user` (RGW user keys; MinIO access keys, for direct S3 use).
    minio-users: the MinIO STS parent key, two built-in users with the same policy used in
    turn (`users`); the one the store does not hold gets a new secret at each rotation.
    """

    kind: Literal["rgw", "minio", "minio-users"]
    # The object-store user that owns the rotated key (RGW uid, MinIO user name).
    user: _UserName | None = None
    # minio-users: the pair, e.g. [credbroker-a, credbroker-b] (vendor/minio/setup.sh).
    users: list[_UserName] | None = None
    # minio-users: the policy the standby user must have (attached if missing).
    policy: _UserName | None = None
    # Secret-store path of the admin keys (fields access_key_id, secret_access_key). RGW: a
    # user with caps users=write (vendor/rgw). MinIO access keys: the managed user's own keys.
    # minio-users: a third user allowed to set the pair's secrets (vendor/minio).
    admin_credentials_path: Annotated[str, StringConstraints(min_length=1)]
    # The admin API's address when it is not object_store.endpoint.
    endpoint: Annotated[str, StringConstraints(pattern=r"^https?://[^/?#]+/?$")] | None = None
    timeout_seconds: float = Field(default=10.0, gt=0, le=120)

    @model_validator(mode="after")
    def _user_or_pair(self) -> Self:
        if self.kind == "minio-users":
            if self.user is not None or not self.users or len(set(self.users)) != 2:
                raise ValueError("driver minio-users needs `users`: two different user names")
        elif self.user is None or self.users is not None or self.policy is not None:
            raise ValueError(f"driver {self.kind} needs `user` (and no `users` or `policy`)")
        return self


class ManagedKeyConfig(_Model):
    name: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")]
    # The secret holding the key (object_store.credentials_path, or the fallback's).
    secret_path: Annotated[str, StringConstraints(min_length=1)]
    driver: KeyDriverConfig
    schedule: ScheduleConfig
    # How long the old key keeps working after the new one is stored. Longer than every
    # cache of the key: secret_cache_seconds here, and other replicas' (check-config checks).
    grace_seconds: float = Field(default=3600.0, gt=0, le=7 * 24 * 3600)
    # How the new key is proven before it is stored: "sts" (AssumeRole, what the broker does
    # with it) or "s3" (a signed ListBuckets: MinIO access keys cannot call AssumeRole).
    verify: Literal["sts", "s3"] = "sts"
    # The role "sts" assumes; default object_store.role_arn (fallback.role_arn for the
    # fallback's credentials_path).
    role_arn: str | None = None
    # false: no scheduled runs (a rotation in progress is still finished); --now still works.
    enabled: bool = True


class RotationRetryConfig(_Model):
    """Backoff between failed runs: initial, doubled per failure, capped."""

    initial_seconds: float = Field(default=60.0, gt=0, le=86400)
    max_seconds: float = Field(default=3600.0, gt=0, le=7 * 86400)


class RotationConfig(_Model):
    credentials: list[ManagedKeyConfig] = Field(default_factory=list)
    # Run due rotations inside `credbroker serve` (false: only `credbroker rotate`, e.g. cron).
    scheduler: bool = True
    # How often the scheduler re-reads the state store (runs by the CLI or other replicas).
    resync_seconds: float = Field(default=60.0, ge=1, le=3600)
    # How long a new key may take to work, and a deleted one to be refused (eventual
    # consistency), retried with backoff before the run fails.
    verify_timeout_seconds: float = Field(default=120.0, gt=0, le=3600)
    retry: RotationRetryConfig = RotationRetryConfig()

    @model_validator(mode="after")
    def _unique(self) -> Self:
        for what in ("name", "secret_path"):
            values = [getattr(c, what) for c in self.credentials]
            if len(values) != len(set(values)):
                raise ValueError(f"rotation.credentials: each {what} may appear once")
        for credential in self.credentials:
            if credential.secret_path == credential.driver.admin_credentials_path:
                raise ValueError(
                    f"rotation {credential.name}: admin_credentials_path must differ from "
                    "secret_path"
                )
        return self


class SqliteStateConfig(_Model):
    kind: Literal["sqlite"] = "sqlite"
    # One host only (a file lock guards each rotation); several replicas need postgres.
    path: Path = Path("var/rotation-state.sqlite3")


class PostgresStateConfig(_Model):
    kind: Literal["postgres"]
    # postgresql://user@host/db: a reference, since a DSN may hold a password.
    dsn: SecretRef
    schema_name: Annotated[str, StringConstraints(pattern=r"^[a-z_][a-z0-9_]{0,62}$")] = (
        "credbroker"
    )
    timeout_seconds: float = Field(default=10.0, gt=0, le=120)


StateConfig = Annotated[SqliteStateConfig | PostgresStateConfig, Field(discriminator="kind")]


class LeasesConfig(_Model):
    """Leases (every key and URL handed out, in the state store) and revocation."""

    # The batched writer: a batch every flush_seconds, or at once when batch_size wait.
    flush_seconds: float = Field(default=0.1, gt=0, le=10)
    batch_size: int = Field(default=256, ge=1, le=10_000)
    # The pruning job (one replica at a time): how often, and how long ended rows are kept.
    prune_seconds: float = Field(default=300.0, ge=5, le=86_400)
    keep_seconds: float = Field(default=7 * 86_400.0, ge=0)
    # How revocation reaches keys already out. rgw-role-policy: a Deny in the vend role's
    # permission policy (Ceph RGW). none: recorded and audited, the keys live to their expiry.
    # minio-sts-revoke: each AssumeRole carries TokenRevokeType = lease id, and a revocation
    # deletes those keys with MinIO's admin call revoke-tokens (docs/revocation.md).
    enforcer: Literal["none", "rgw-role-policy", "minio-sts-revoke"] = "none"
    # rgw-role-policy: secret-store path of an admin key with caps roles=* (IAM PutRolePolicy).
    # minio-sts-revoke: of a MinIO key allowed admin:RemoveServiceAccount.
    admin_credentials_path: Annotated[str, StringConstraints(min_length=1)] | None = None
    # minio-sts-revoke: MinIO users whose keys sign AssumeRole, besides those the broker finds
    # itself (the users of object_store.credentials_path and fallback.credentials_path as
    # they are now, and every minio-users pair in rotation.credentials).
    parent_users: list[_UserName] = Field(default_factory=list, max_length=16)
    # The vend role's name (default: the last part of object_store.role_arn).
    role_name: _UserName | None = None
    policy_name: _UserName = "credbroker-revocations"

    @model_validator(mode="after")
    def _enforcer_needs_admin(self) -> Self:
        if self.enforcer != "none" and self.admin_credentials_path is None:
            raise ValueError(f"leases.enforcer {self.enforcer} needs admin_credentials_path")
        return self


class ControlConfig(_Model):
    """The live control plane (principals, tokens, freezes in the state store): each replica
    reloads its in-memory copy when the store's change number moves, checked this often (and at
    once on a PostgreSQL NOTIFY). A change holds on every replica within this plus one reload:
    below 2 s with the default."""

    poll_seconds: float = Field(default=1.0, ge=0.05, le=1.5)


# --- break-glass ------------------------------------------------------------------------------


class WebhookConfig(_Model):
    """Where every break-glass step is announced: a JSON POST (a chat or incident tool)."""

    url: Annotated[str, StringConstraints(pattern=r"^https?://[^\s]+$")]
    # HMAC-SHA256 of the body with this key, in X-Credbroker-Signature: sha256=<hex>.
    secret: SecretRef | None = None
    # Bounded retries (tenacity): attempts in all, exponential backoff between them.
    attempts: int = Field(default=5, ge=1, le=20)
    backoff_seconds: float = Field(default=0.5, gt=0, le=60)
    backoff_max_seconds: float = Field(default=10.0, gt=0, le=600)
    timeout_seconds: float = Field(default=5.0, gt=0, le=60)


class BreakGlassConfig(_Model):
    """Dual-control break-glass requests (docs/break-glass.md)."""

    # Approvals by approvers other than the requester before the key can be collected.
    approvals_required: int = Field(default=2, ge=1, le=10)
    # An open request expires after this; an approved one if not collected within this.
    approve_window_seconds: float = Field(default=3600.0, ge=60, le=7 * 86400)
    collect_window_seconds: float = Field(default=900.0, ge=60, le=86400)
    # No break-glass key lives longer (the object store's 900 s minimum is the floor).
    ttl_cap_seconds: int = Field(default=3600, ge=STS_MIN_TTL, le=12 * 3600)
    # The escrow of the service key (credbroker escrow init); absent: no writes while the
    # vault is down. Its public key's fingerprint, pinned here, refuses a swapped file.
    escrow_file: Path | None = None
    escrow_fingerprint: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{16}$")] | None = None
    webhook: WebhookConfig | None = None


class Settings(_Model):
    server: ServerConfig = ServerConfig()
    secret_store: SecretStoreConfig = EmbeddedStoreConfig()
    # 0 disables caching: every request reads the store. Rotation invalidates it anyway.
    secret_cache_seconds: float = Field(default=5.0, ge=0, le=300)
    object_store: ObjectStoreConfig
    spaces: dict[str, SpaceTarget] = Field(min_length=1)
    clients: list[ClientConfig] = Field(default_factory=list)
    audit: AuditConfig = AuditConfig()
    compliance: ComplianceConfig = ComplianceConfig()
    limits: LimitsConfig = LimitsConfig()
    readiness: ReadinessConfig = ReadinessConfig()
    secret_store_resilience: SecretStoreResilienceConfig = SecretStoreResilienceConfig()
    # Absent: no fallback; while the secret store is unreachable every vend gets 503.
    fallback: FallbackConfig | None = None
    rotation: RotationConfig = RotationConfig()
    state: StateConfig = SqliteStateConfig()
    control: ControlConfig = ControlConfig()
    oidc: OidcConfig | None = None
    confluence: ConfluenceConfig | None = None
    break_glass: BreakGlassConfig = BreakGlassConfig()
    leases: LeasesConfig = LeasesConfig()
    # Plain http, or TLS without verification, toward Vault or the object store on an address
    # that is not loopback is refused unless this is true; `serve` then warns at every start.
    allow_insecure_transport: bool = False

    @field_validator("spaces")
    @classmethod
    def _spaces(cls, value: dict[str, SpaceTarget]) -> dict[str, SpaceTarget]:
        """Space keys, buckets and prefixes are refused, never cleaned; prefixes come out in
        canonical form ("" or "a/b/")."""
        checked = {}
        for key, space in value.items():
            _as_value_error(validate_space_key, key)
            field = "bucket"
            try:
                bucket = validate_bucket(space.bucket)
                field = "prefix"
                prefix = normalize_prefix(space.prefix, what="space_prefix")
            except InvalidRequest as exc:
                # Named like pydantic's own locations, so the operator sees which field.
                raise ValueError(f"spaces.{key}.{field}: {exc.message}") from None
            checked[key] = dataclasses.replace(space, bucket=bucket, prefix=prefix)
        return checked

    @model_validator(mode="after")
    def _space_policies_fit(self) -> Self:
        """The largest policy a request could produce fits, as this flavor counts it."""
        flavor = self.object_store.flavor
        for key, space in self.spaces.items():
            size = worst_case_policy_chars(space.bucket, space.prefix, flavor)
            if size > MAX_POLICY_CHARS:
                raise ValueError(
                    f"space {key}: its largest session policy would be {size} characters as "
                    f"{flavor.value} counts them, over {MAX_POLICY_CHARS}; shorten the bucket "
                    "or prefix"
                )
        return self

    @model_validator(mode="after")
    def _clients_consistent(self) -> Self:
        ids = [c.id for c in self.clients]
        if len(ids) != len(set(ids)):
            raise ValueError("client ids must be unique")
        hashes = [c.token_sha256 for c in self.clients]
        if len(hashes) != len(set(hashes)):
            raise ValueError("two clients share a token")
        for client in self.clients:
            unknown = sorted(set(client.spaces) - set(self.spaces))
            if unknown:
                raise ValueError(f"client {client.id} names unknown spaces: {', '.join(unknown)}")
            if client.max_ttl_seconds > self.object_store.ttl.max_seconds:
                raise ValueError(
                    f"client {client.id}: max_ttl_seconds exceeds object_store.ttl.max_seconds"
                )
            if client.max_ttl_seconds < self.object_store.ttl.min_seconds:
                # No key lives shorter than the store's minimum: the client would get longer.
                raise ValueError(
                    f"client {client.id}: max_ttl_seconds is below object_store.ttl.min_seconds"
                )
        return self

    @model_validator(mode="after")
    def _identities_consistent(self) -> Self:
        checked = sorted(k for k, s in self.spaces.items() if s.actor_check is not None)
        if checked and self.confluence is None:
            raise ValueError(f"spaces {', '.join(checked)} check actors: add a confluence section")
        if self.oidc is not None:
            for mapping in self.oidc.mappings:
                unknown = sorted(set(mapping.spaces) - set(self.spaces))
                if unknown:
                    raise ValueError(
                        f"oidc mapping {mapping.value} names unknown spaces: {', '.join(unknown)}"
                    )
                if mapping.max_ttl_seconds > self.object_store.ttl.max_seconds:
                    raise ValueError(
                        f"oidc mapping {mapping.value}: max_ttl_seconds exceeds "
                        "object_store.ttl.max_seconds"
                    )
        tls = self.server.tls
        ids = {c.id for c in self.clients}
        for rule in tls.client_certificates if tls is not None else []:
            if rule.client not in ids:
                raise ValueError(
                    f"server.tls.client_certificates names unknown client {rule.client}"
                )
        return self

    @model_validator(mode="after")
    def _fallback_consistent(self) -> Self:
        if self.fallback is None:
            return self
        if self.fallback.credentials_path == self.object_store.credentials_path:
            raise ValueError(
                "fallback.credentials_path must name a read-only identity, "
                "not object_store.credentials_path"
            )
        if self.object_store.flavor is Flavor.RGW and not self.fallback.role_arn:
            raise ValueError("Ceph RGW requires fallback.role_arn (the read-only role)")
        return self

    @model_validator(mode="after")
    def _rotation_consistent(self) -> Self:
        for credential in self.rotation.credentials:
            where = f"rotation {credential.name}"
            if credential.driver.kind.split("-")[0] != self.object_store.flavor:
                raise ValueError(
                    f"{where}: driver {credential.driver.kind} does not match "
                    f"object_store.flavor {self.object_store.flavor}"
                )
            if credential.driver.kind == "minio" and credential.verify == "sts":
                raise ValueError(
                    f"{where}: MinIO refuses AssumeRole signed by an access key; a MinIO "
                    "access key cannot be the STS parent key: rotate it with driver kind "
                    "minio-users (two users used in turn), or use verify: s3 for a key used "
                    "directly"
                )
            if credential.grace_seconds <= self.secret_cache_seconds:
                raise ValueError(f"{where}: grace_seconds must exceed secret_cache_seconds")
            fallback = self.fallback
            if (
                fallback is not None
                and credential.secret_path == fallback.credentials_path
                and credential.grace_seconds <= fallback.refresh_seconds
            ):
                raise ValueError(
                    f"{where}: grace_seconds must exceed fallback.refresh_seconds, or the sealed "
                    "fallback copy could hold a deleted key"
                )
        return self

    @model_validator(mode="after")
    def _cyberark_owns_rotation(self) -> Self:
        """A CCP store is read-only for the broker: CyberArk's CPM rotates, the broker
        follows. Every path the broker reads must be mapped to a CyberArk account."""
        store = self.secret_store
        if not isinstance(store, CyberArkCcpStoreConfig):
            return self
        if self.rotation.credentials:
            names = ", ".join(c.name for c in self.rotation.credentials)
            raise ValueError(
                f"rotation.credentials ({names}) with secret_store kind cyberark-ccp: CyberArk's "
                "CPM rotates these keys and the broker only follows them (a key the object "
                "store refuses is read again from CCP); remove rotation.credentials "
                "(vendor/cyberark/README.md)"
            )
        paths = {"object_store.credentials_path": self.object_store.credentials_path}
        if self.fallback is not None:
            paths["fallback.credentials_path"] = self.fallback.credentials_path
        if self.audit.signing_key_secret_path is not None:
            paths["audit.signing_key_secret_path"] = self.audit.signing_key_secret_path
        if self.compliance.inspect_credentials_path is not None:
            paths["compliance.inspect_credentials_path"] = self.compliance.inspect_credentials_path
        for field, path in paths.items():
            if path not in store.accounts:
                raise ValueError(
                    f"{field} {path!r} is not mapped to a CyberArk account in secret_store.accounts"
                )
        return self

    @model_validator(mode="after")
    def _transport_secure(self) -> Self:
        targets = self.insecure_transport()
        if targets and not self.allow_insecure_transport:
            raise ValueError(
                "insecure transport outside loopback: "
                + "; ".join(targets)
                + ". Use https with verify_tls: true, or set allow_insecure_transport: true"
            )
        return self

    def insecure_transport(self) -> list[str]:
        """Each connection to Vault, CyberArk CCP or the object store that is plain http or
        unverified TLS, to an address outside loopback: the field and scheme://host[:port],
        never a secret."""
        found: list[str] = []
        store = self.secret_store
        if isinstance(store, VaultStoreConfig):
            # A ca_file turns verification on whatever verify_tls says (wiring.py).
            found += _insecure(
                "secret_store.url", store.url, store.verify_tls or bool(store.ca_file)
            )
        if isinstance(store, CyberArkCcpStoreConfig):
            found += _insecure(
                "secret_store.url", store.url, store.verify_tls or bool(store.ca_file)
            )
        objects = self.object_store
        found += _insecure("object_store.endpoint", objects.endpoint, objects.verify_tls)
        if objects.public_endpoint is not None:
            # Handed to automations, never called by the broker: only its scheme counts.
            found += _insecure("object_store.public_endpoint", objects.public_endpoint, True)
        for credential in self.rotation.credentials:
            if credential.driver.endpoint is not None:
                where = f"rotation {credential.name}: driver.endpoint"
                found += _insecure(where, credential.driver.endpoint, objects.verify_tls)
        if self.oidc is not None:
            oidc_verify = self.oidc.verify_tls or bool(self.oidc.ca_file)
            found += _insecure("oidc.issuer", self.oidc.issuer, oidc_verify)
            if self.oidc.jwks_url is not None:
                found += _insecure("oidc.jwks_url", self.oidc.jwks_url, oidc_verify)
        if self.confluence is not None:
            found += _insecure(
                "confluence.url",
                self.confluence.url,
                self.confluence.verify_tls or bool(self.confluence.ca_file),
            )
        webhook = self.break_glass.webhook
        if webhook is not None:  # incident details, signed: never in the clear
            found += _insecure("break_glass.webhook.url", webhook.url, True)
        return found


def is_loopback_url(url: str) -> bool:
    """The URL's host is 127.0.0.0/8, ::1 or exactly `localhost`; anything unusual is not."""
    parts = urlsplit(url)
    if "@" in parts.netloc or "\\" in url:
        return False  # user info or a backslash: clients disagree on which host that is
    host = parts.hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _insecure(field: str, url: str, verify_tls: bool) -> list[str]:
    parts = urlsplit(url)
    if is_loopback_url(url):
        return []
    address = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"
    if parts.scheme == "http":
        return [f"{field} {address} (plain http)"]
    if not verify_tls:
        return [f"{field} {address} (verify_tls: false)"]
    return []


_T = TypeVar("_T")
_R = TypeVar("_R")


def _as_value_error(check: Callable[[_T], _R], value: _T) -> _R:
    try:
        return check(value)
    except InvalidRequest as exc:
        raise ValueError(exc.message) from None


def _resolve_paths(node: Any, base: Path) -> Any:
    """Make every Path in the validated tree absolute, relative to the config file's folder."""
    if isinstance(node, BaseModel):
        updates = {
            name: _resolve_paths(getattr(node, name), base) for name in type(node).model_fields
        }
        return node.model_copy(update=updates)
    if isinstance(node, Path):
        return node if node.is_absolute() else (base / node).resolve()
    if isinstance(node, dict):
        return {k: _resolve_paths(v, base) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve_paths(v, base) for v in node]
    return node


def format_validation_error(source: str, error: ValidationError) -> str:
    lines = [f"{source}: invalid configuration"]
    for item in error.errors(include_url=False, include_input=False):
        where = ".".join(str(p) for p in item["loc"]) or "(top level)"
        lines.append(f"  {where}: {item['msg']}")
    return "\n".join(lines)


# Where the files the broker writes go when the config does not name them: the image sets it
# to /var/lib/credbroker (the config folder, /etc/credbroker, is mounted read-only there).
STATE_DIR_ENV = "CREDBROKER_STATE_DIR"


def _writable_defaults(settings: Settings, state_dir: Path) -> Settings:
    """Put every file the broker writes whose path the config leaves at its default (the
    rotation state, the audit log, the embedded store, the fallback's sealed cache) under
    `state_dir`, by its default file name. Paths the config names are kept as written."""
    updates: dict[str, Any] = {}
    state = settings.state
    if isinstance(state, SqliteStateConfig) and "path" not in state.model_fields_set:
        updates["state"] = state.model_copy(update={"path": state_dir / state.path.name})
    audit = settings.audit
    if "path" not in audit.model_fields_set and audit.path is not None:
        updates["audit"] = audit.model_copy(update={"path": state_dir / audit.path.name})
    store = settings.secret_store
    if isinstance(store, EmbeddedStoreConfig) and "path" not in store.model_fields_set:
        updates["secret_store"] = store.model_copy(update={"path": state_dir / store.path.name})
    fallback = settings.fallback
    if fallback is not None and "cache_file" not in fallback.model_fields_set:
        cache = state_dir / fallback.cache_file.name
        updates["fallback"] = fallback.model_copy(update={"cache_file": cache})
    return settings.model_copy(update=updates) if updates else settings


def load_settings(path: Path) -> Settings:
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(str(path), exc)) from None
    state_dir = os.environ.get(STATE_DIR_ENV, "")
    if state_dir:
        settings = _writable_defaults(settings, Path(state_dir))
    resolved: Settings = _resolve_paths(settings, path.resolve().parent)
    return resolved


# sha256 of the empty string: a token nobody should be able to send.
_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def placeholder_token_hashes(settings: Settings) -> list[str]:
    """Clients whose token_sha256 is a placeholder (a digit or two repeated, as the shipped
    examples have, or the hash of an empty token): `check-config` refuses them."""
    return [
        client.id
        for client in settings.clients
        if len(set(client.token_sha256)) <= 2 or client.token_sha256 == _EMPTY_SHA256
    ]


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
