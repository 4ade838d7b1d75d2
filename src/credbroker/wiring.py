"""The one place that knows the concrete adapters and builds them from settings."""

from __future__ import annotations

from credbroker.audit.jsonl import JsonLinesAudit
from credbroker.callers.tokens import TokenAuth
from credbroker.config import EmbeddedStoreConfig, Settings, VaultAppRoleAuth, VaultStoreConfig
from credbroker.issuers.sts import StsIssuer
from credbroker.ports import AuditSink, CallerAuth, Issuer, SecretStore
from credbroker.secrets.embedded import EmbeddedSecretStore
from credbroker.secrets.sealing import load_key
from credbroker.vend import SpaceTarget, TtlLimits


def build_secret_store(settings: Settings) -> SecretStore:
    config = settings.secret_store
    if isinstance(config, EmbeddedStoreConfig):
        key = load_key(env_var=config.key_env, key_file=config.key_file)
        return EmbeddedSecretStore(config.path, key)
    if isinstance(config, VaultStoreConfig):
        return _build_vault(config)
    raise AssertionError(f"unknown secret store {config!r}")


def _build_vault(config: VaultStoreConfig) -> SecretStore:
    from credbroker.secrets.vault import VaultKV2Store

    verify: bool | str = str(config.ca_file) if config.ca_file else config.verify_tls
    if isinstance(config.auth, VaultAppRoleAuth):
        return VaultKV2Store(
            url=config.url,
            mount_point=config.mount,
            token=None,
            approle_role_id=config.auth.role_id.resolve(),
            approle_secret_id=config.auth.secret_id.resolve(),
            approle_mount=config.auth.mount,
            namespace=config.namespace,
            verify=verify,
            timeout_seconds=config.timeout_seconds,
        )
    return VaultKV2Store(
        url=config.url,
        mount_point=config.mount,
        token=config.auth.token.resolve(),
        namespace=config.namespace,
        verify=verify,
        timeout_seconds=config.timeout_seconds,
    )


def build_issuer(settings: Settings) -> Issuer:
    config = settings.object_store
    return StsIssuer(
        endpoint=config.endpoint,
        public_endpoint=config.public_endpoint,
        region=config.region,
        role_arn=config.role_arn,
        verify_tls=config.verify_tls,
        ca_file=str(config.ca_file) if config.ca_file else None,
        timeout_seconds=config.timeout_seconds,
    )


def build_caller_auth(settings: Settings) -> CallerAuth:
    return TokenAuth((c.token_sha256, c.to_client()) for c in settings.clients)


def build_audit(settings: Settings) -> AuditSink:
    return JsonLinesAudit(settings.audit.path)


def space_targets(settings: Settings) -> dict[str, SpaceTarget]:
    return {key: SpaceTarget(s.bucket, s.prefix) for key, s in settings.spaces.items()}


def ttl_limits(settings: Settings) -> TtlLimits:
    ttl = settings.object_store.ttl
    return TtlLimits(ttl.min_seconds, ttl.default_seconds, ttl.max_seconds)
