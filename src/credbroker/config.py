"""Configuration: YAML validated once, at start, into typed pydantic models.

Secrets never live in this file. Where a value is secret, the file holds a reference to it
(an environment variable or a file path) or names a path in the secret store. Relative file
paths are taken relative to the config file's own folder.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, Self, TypeVar

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

from credbroker.domain import Access, Client
from credbroker.errors import ConfigError, InvalidRequest
from credbroker.policy import (
    MAX_POLICY_CHARS,
    normalize_prefix,
    validate_bucket,
    validate_space_key,
    worst_case_policy_chars,
)

# MinIO's AssumeRole accepts 900 s to 7 days.
STS_MIN_TTL = 900
STS_MAX_TTL = 7 * 24 * 3600


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


SecretStoreConfig = Annotated[EmbeddedStoreConfig | VaultStoreConfig, Field(discriminator="kind")]


# --- object store -----------------------------------------------------------------------------


class TtlConfig(_Model):
    min_seconds: int = Field(default=STS_MIN_TTL, ge=STS_MIN_TTL, le=STS_MAX_TTL)
    default_seconds: int = Field(default=3600, ge=STS_MIN_TTL, le=STS_MAX_TTL)
    max_seconds: int = Field(default=3600, ge=STS_MIN_TTL, le=STS_MAX_TTL)

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if not self.min_seconds <= self.default_seconds <= self.max_seconds:
            raise ValueError("need min_seconds <= default_seconds <= max_seconds")
        return self


class ObjectStoreConfig(_Model):
    flavor: Literal["minio", "rgw"] = "minio"
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
    ttl: TtlConfig = TtlConfig()

    @model_validator(mode="after")
    def _rgw_needs_role(self) -> Self:
        if self.flavor == "rgw" and not self.role_arn:
            raise ValueError("Ceph RGW requires role_arn (arn:aws:iam:::role/NAME)")
        return self


# --- spaces and clients -----------------------------------------------------------------------


class SpaceConfig(_Model):
    bucket: str
    prefix: str = ""

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, value: str) -> str:
        return _as_value_error(validate_bucket, value)

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        return _as_value_error(lambda v: normalize_prefix(v, what="space_prefix"), value)


_HEX64 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class ClientConfig(_Model):
    id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._-]{1,64}$")]
    token_sha256: _HEX64
    spaces: list[str] = Field(min_length=1)
    max_access: Access = Access.READ
    max_ttl_seconds: int = Field(default=3600, ge=STS_MIN_TTL, le=STS_MAX_TTL)
    admin: bool = False

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
            admin=self.admin,
        )


class ServerConfig(_Model):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    max_body_bytes: int = Field(default=16 * 1024, ge=1024, le=1024 * 1024)


class AuditConfig(_Model):
    # A JSON-lines file; null writes audit events to the log instead.
    path: Path | None = Path("var/audit.jsonl")


class Settings(_Model):
    server: ServerConfig = ServerConfig()
    secret_store: SecretStoreConfig = EmbeddedStoreConfig()
    # 0 disables caching: every request reads the store. Rotation invalidates it anyway.
    secret_cache_seconds: float = Field(default=5.0, ge=0, le=300)
    object_store: ObjectStoreConfig
    spaces: dict[str, SpaceConfig] = Field(min_length=1)
    clients: list[ClientConfig] = Field(default_factory=list)
    audit: AuditConfig = AuditConfig()

    @field_validator("spaces")
    @classmethod
    def _space_keys(cls, value: dict[str, SpaceConfig]) -> dict[str, SpaceConfig]:
        for key, space in value.items():
            _as_value_error(validate_space_key, key)
            size = worst_case_policy_chars(space.bucket, space.prefix)
            if size > MAX_POLICY_CHARS:
                raise ValueError(
                    f"space {key}: its largest session policy would be {size} characters, "
                    f"over MinIO's {MAX_POLICY_CHARS}; shorten the bucket or prefix"
                )
        return value

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
        return self


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
    resolved: Settings = _resolve_paths(settings, path.resolve().parent)
    return resolved


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
