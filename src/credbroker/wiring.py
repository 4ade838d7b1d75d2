"""The composition root: the one module that names concrete classes and builds them from
settings. Entry points (the web app, the CLI) call `runtime()` or `standalone_rotation()`
and get ready objects; closing is done here too, with one AsyncExitStack, so a failing close
never leaks the rest."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from credbroker.audit.chain import ChainedAudit, LineSink, load_private_key
from credbroker.audit.context import RequestAudit
from credbroker.audit.jsonl import JsonLinesAudit
from credbroker.audit.stdout import StdoutLines
from credbroker.audit.syslog import SyslogLines
from credbroker.audit.trail import FileTrail, read_records
from credbroker.breakglass import BreakGlass, BreakGlassRules
from credbroker.callers.certificates import CertificateAuth, CertificateRule
from credbroker.callers.composite import CallerAuthChain
from credbroker.callers.oidc import ClaimMapping, OidcAuth, OidcSettings
from credbroker.callers.tokens import LiveTokenAuth, TokenAuth, new_token
from credbroker.compliance.check import ComplianceCheck, RotationPolicy
from credbroker.compliance.html import write_report
from credbroker.compliance.job import DailyCompliance
from credbroker.compliance.model import ComplianceResult
from credbroker.compliance.trail import TrailUsage
from credbroker.compliance.usage import LatestUsage, LeaseUsage
from credbroker.config import (
    CyberArkCcpStoreConfig,
    EmbeddedStoreConfig,
    ManagedKeyConfig,
    PostgresStateConfig,
    Settings,
    VaultAppRoleAuth,
    VaultStoreConfig,
)
from credbroker.control import ControlPlane, Seed, freeze_dict
from credbroker.domain import (
    Access,
    AccessKey,
    BreakerState,
    Flavor,
    Principal,
    PrincipalSource,
    Scope,
    SecretVersion,
)
from credbroker.errors import (
    ConfigError,
    CredbrokerError,
    RotationBusy,
    SecretNotFound,
    SecretStoreCircuitOpen,
    SecretStoreError,
)
from credbroker.escrow.file import EscrowFile, NewEscrow
from credbroker.fallback import ReadOnlyFallback
from credbroker.leases import LeaseJobs, Revoker, Unenforced
from credbroker.limits import InFlightCap, Limits, Rate, TokenBuckets
from credbroker.notify.webhook import NullNotifier, WebhookNotifier
from credbroker.objectstore.exposure import ReadOnlyWriteProbe, S3BucketExposure
from credbroker.objectstore.probe import SignedCallProbe
from credbroker.objectstore.sts import StsIssuer
from credbroker.objectstore.tls import TlsPolicy
from credbroker.observability import Metrics
from credbroker.parent_key import ParentKeySource
from credbroker.ports import (
    ActorDirectory,
    AuditSink,
    CallerAuth,
    Issuer,
    KeyDriver,
    LeaseLog,
    Notifier,
    PrincipalStore,
    RevocationEnforcer,
    SecretStore,
    StateStore,
    TokenCheck,
)
from credbroker.rotation.model import Checkpoint, ManagedKey, RetryPolicy
from credbroker.rotation.rotate import Rotator
from credbroker.rotation.scheduler import RotationScheduler
from credbroker.secrets.embedded import EmbeddedSecretStore
from credbroker.secrets.resilient import CircuitBreaker, ResilientSecretStore
from credbroker.secrets.sealing import SealedFile, load_key
from credbroker.state.lease_writer import BatchedLeaseWriter
from credbroker.state.watermark import LazyWatermark
from credbroker.vend import Broker
from credbroker.web.readiness import Canary, Readiness

if TYPE_CHECKING:
    from credbroker.state.control_postgres import PostgresControlStore
    from credbroker.state.control_sqlite import SqliteControlStore
    from credbroker.state.postgres import PostgresStateStore
    from credbroker.state.sqlite import SqliteStateStore

log = logging.getLogger("credbroker.wiring")


def build_secret_store(
    settings: Settings, *, metrics: Metrics | None = None
) -> ResilientSecretStore:
    """The configured store behind a deadline, retries with jitter and a circuit breaker."""
    resilience = settings.secret_store_resilience
    breaker = CircuitBreaker(
        failure_threshold=resilience.failure_threshold, open_seconds=resilience.open_seconds
    )
    if metrics is not None:
        breaker.subscribe(lambda state: metrics.secret_store_breaker.state(state.value))
    return ResilientSecretStore(
        _build_store(settings, metrics),
        breaker=breaker,
        timeout_seconds=resilience.timeout_seconds,
        attempts=resilience.attempts,
        backoff_seconds=resilience.backoff_seconds,
        backoff_max_seconds=resilience.backoff_max_seconds,
    )


def build_credentials(settings: Settings, store: ResilientSecretStore) -> ParentKeySource:
    """The service key, read at call time. When the store's breaker opens, the cached key is
    dropped: a store known to be unreachable must not keep authorising writes from a cache
    (reads then go read-only through the fallback, writes get 503)."""
    source = ParentKeySource(
        store, settings.object_store.credentials_path, cache_seconds=settings.secret_cache_seconds
    )

    def forget_on_outage(state: BreakerState) -> None:
        if state is BreakerState.OPEN:
            source.invalidate()

    store.breaker.subscribe(forget_on_outage)
    return source


def build_fallback(
    settings: Settings, store: ResilientSecretStore, metrics: Metrics
) -> ReadOnlyFallback | None:
    """The read-only fallback (None if not configured), following the store's breaker."""
    config = settings.fallback
    if config is None:
        return None
    fallback = ReadOnlyFallback(
        store,
        path=config.credentials_path,
        role_arn=config.role_arn,
        cache=SealedFile(
            config.cache_file,
            load_key(env_var=config.key_env, key_file=config.key_file),
            purpose="read-only-fallback",
        ),
        refresh_seconds=config.refresh_seconds,
        # While the store is down, try twice per breaker interval: a try that finds the
        # breaker half-open is its trial call, so recovery is noticed without traffic.
        retry_seconds=min(config.refresh_seconds, store.breaker.open_seconds / 2),
        max_staleness_seconds=config.max_staleness_seconds,
        metrics=metrics,
    )
    store.breaker.subscribe(fallback.store_state_changed)
    return fallback


def _build_store(settings: Settings, metrics: Metrics | None = None) -> SecretStore:
    config = settings.secret_store
    if isinstance(config, EmbeddedStoreConfig):
        key = load_key(env_var=config.key_env, key_file=config.key_file)
        # The highest version seen of each secret lives in the state store, outside the file:
        # a rolled-back file is refused (the server and `credbroker secrets` alike).
        return EmbeddedSecretStore(
            config.path,
            key,
            watermark=LazyWatermark(lambda: _open_state_store(settings)),
            on_refused=metrics.count_secret_refused if metrics is not None else None,
        )
    if isinstance(config, VaultStoreConfig):
        return _build_vault(config)
    if isinstance(config, CyberArkCcpStoreConfig):
        return _build_cyberark_ccp(config, settings.object_store.credentials_path)
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


def _build_cyberark_ccp(config: CyberArkCcpStoreConfig, check_path: str) -> SecretStore:
    """CyberArk CCP, read-only; `check` reads the object store's key (check_path)."""
    from credbroker.secrets.cyberark import CcpAccount, CyberArkCcpStore

    return CyberArkCcpStore(
        config.url,
        app_id=config.app_id,
        accounts={
            path: CcpAccount(query=account.query(), fields=dict(account.fields))
            for path, account in config.accounts.items()
        },
        check_path=check_path,
        service_path=config.service_path,
        client_cert=config.client_cert,
        client_key=config.client_key,
        verify=config.verify_tls,
        ca_file=config.ca_file,
        reason=config.reason,
        connection_timeout_seconds=config.connection_timeout_seconds,
        fail_request_on_password_change=config.fail_request_on_password_change,
        timeout_seconds=config.timeout_seconds,
    )


def object_store_tls(settings: Settings) -> TlsPolicy:
    config = settings.object_store
    return TlsPolicy(config.verify_tls, str(config.ca_file) if config.ca_file else None)


def build_issuer(settings: Settings) -> Issuer:
    config = settings.object_store
    return StsIssuer(
        endpoint=config.endpoint,
        public_endpoint=config.public_endpoint,
        region=config.region,
        role_arn=config.role_arn,
        tls=object_store_tls(settings),
        timeout_seconds=config.timeout_seconds,
        tag_revoke_type=config.flavor is Flavor.MINIO,
    )


def _outbound_tls(verify: bool, ca_file: Path | None) -> ssl.SSLContext | bool:
    """The identity provider's and Confluence's TLS, pinned like Vault's and the object
    store's: a ca_file is trusted alone (and turns verification on), else certifi's bundle."""
    return TlsPolicy(verify or ca_file is not None, str(ca_file) if ca_file else None).for_aiohttp()


def build_token_check(settings: Settings) -> TokenCheck:
    return TokenAuth((c.token_sha256, c.to_client()) for c in settings.clients)


def build_oidc(settings: Settings) -> OidcAuth | None:
    config = settings.oidc
    if config is None:
        return None
    return OidcAuth(
        OidcSettings(
            issuer=config.issuer,
            jwks_url=config.jwks_url,
            audience=config.audience,
            algorithms=frozenset(config.algorithms),
            claim=config.claim,
            name_claim=config.name_claim,
            mappings=[
                ClaimMapping(
                    value=m.value,
                    roles=frozenset(m.roles),
                    spaces=frozenset(m.spaces),
                    max_access=m.max_access,
                    max_ttl_seconds=m.max_ttl_seconds,
                )
                for m in config.mappings
            ],
            leeway_seconds=config.clock_skew_seconds,
            min_refresh_seconds=config.jwks_min_refresh_seconds,
            cache_seconds=config.jwks_cache_seconds,
            timeout_seconds=config.timeout_seconds,
            ssl=_outbound_tls(config.verify_tls, config.ca_file),
        )
    )


def build_audit(
    settings: Settings,
    *,
    metrics: Metrics | None = None,
    store: SecretStore | None = None,
) -> AuditSink:
    """The audit sink: chained records (audit/chain.py) to each configured sink; inside an API
    request each record also names the caller. The signing key comes from its file now, or
    from the secret store (`store`, else one opened for the read) at the first checkpoint."""
    config = settings.audit
    sinks: list[LineSink] = []
    for kind in config.sinks:
        if kind == "file":
            sinks.append(JsonLinesAudit(config.path))
        elif kind == "stdout":
            sinks.append(StdoutLines())
        else:
            syslog = config.syslog
            assert syslog is not None  # validated
            sinks.append(
                SyslogLines(
                    syslog.host,
                    syslog.port,
                    protocol=syslog.protocol,
                    facility=syslog.facility,
                    app_name=syslog.app_name,
                    timeout_seconds=syslog.timeout_seconds,
                )
            )
    return RequestAudit(
        ChainedAudit(
            sinks,
            signer=_audit_signer(settings, store),
            checkpoint_seconds=config.checkpoint_seconds,
            publish=_publish_public_key(settings),
            metrics=metrics,
            chained=config.chain,
        )
    )


def build_certificate_auth(settings: Settings) -> CertificateAuth | None:
    tls = settings.server.tls
    if tls is None or not tls.client_certificates:
        return None
    clients = {c.id: c.to_client() for c in settings.clients}
    rules = []
    for rule in tls.client_certificates:
        field, value = rule.match()
        rules.append(CertificateRule(field=field, value=value, client=clients[rule.client]))
    return CertificateAuth(rules)


def build_caller_auth(settings: Settings, tokens: TokenCheck | None = None) -> CallerAuthChain:
    """Static tokens (`tokens`, or the configured clients' hashes), OIDC JWTs when `oidc:` is
    set, client certificates when server.tls maps them."""
    return CallerAuthChain(
        tokens if tokens is not None else build_token_check(settings),
        oidc=build_oidc(settings),
        certificates=build_certificate_auth(settings),
    )


def build_actor_directory(settings: Settings, store: SecretStore) -> ActorDirectory | None:
    """Confluence, asked whether a rule's actor may view or edit a space (None without a
    `confluence:` section). Its credentials are read from the secret store at call time."""
    config = settings.confluence
    if config is None:
        return None
    from credbroker.confluence.cloud import ConfluenceCloudDirectory
    from credbroker.confluence.datacenter import ConfluenceDataCenterDirectory

    path = config.credentials_path

    async def credentials() -> SecretVersion:
        return await store.read(path)

    if config.deployment == "datacenter":
        return ConfluenceDataCenterDirectory(
            url=config.url,
            credentials=credentials,
            actor_id=config.actor_id,
            ssl=_outbound_tls(config.verify_tls, config.ca_file),
            timeout_seconds=config.timeout_seconds,
            cache_seconds=config.cache_seconds,
            max_retry_after_seconds=config.max_retry_after_seconds,
        )
    return ConfluenceCloudDirectory(
        url=config.url,
        credentials=credentials,
        auth=config.auth,
        ssl=_outbound_tls(config.verify_tls, config.ca_file),
        timeout_seconds=config.timeout_seconds,
        cache_seconds=config.cache_seconds,
        max_retry_after_seconds=config.max_retry_after_seconds,
    )


def _audit_signer(
    settings: Settings, store: SecretStore | None
) -> Ed25519PrivateKey | Callable[[], Awaitable[Ed25519PrivateKey]] | None:
    config = settings.audit
    if config.signing_key_file is not None:
        try:
            return load_private_key(config.signing_key_file.read_bytes())
        except OSError as exc:
            raise ConfigError(
                f"cannot read audit.signing_key_file {config.signing_key_file}: {exc.strerror}"
            ) from None
    path = config.signing_key_secret_path
    if path is None:
        return None

    async def from_store() -> Ed25519PrivateKey:
        own = store is None
        source = store if store is not None else build_secret_store(settings)
        try:
            secret = await source.read(path)
        finally:
            if own:
                await source.close()
        value = secret.data.get("ed25519_private_key")
        if not value:
            raise ConfigError(f"{path}: no field ed25519_private_key")
        return load_private_key(value.encode())

    return from_store


def _publish_public_key(settings: Settings) -> Callable[[Ed25519PublicKey], None] | None:
    """Write the public key where verifiers look (audit.public_key_file, or NAME.pub)."""
    target = settings.audit.public_key_path()
    if target is None:
        return None
    pub_path: Path = target

    def publish(public: Ed25519PublicKey) -> None:
        pem = public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        try:
            if pub_path.exists() and pub_path.read_bytes() == pem:
                return
            pub_path.parent.mkdir(parents=True, exist_ok=True)
            pub_path.write_bytes(pem)
            pub_path.chmod(0o644)
        except OSError as exc:
            log.error("cannot publish the audit public key at %s: %s", pub_path, exc.strerror)

    return publish


# --- rotation -----------------------------------------------------------------------------------


async def build_state_store(settings: Settings) -> StateStore:
    return await _open_state_store(settings)


# --- leases and revocation ------------------------------------------------------------------


def build_revocation_enforcer(settings: Settings, store: SecretStore) -> RevocationEnforcer:
    """How a revocation reaches keys already out (leases.enforcer)."""
    config = settings.leases
    object_store = settings.object_store
    if config.enforcer == "none" or config.admin_credentials_path is None:
        if object_store.flavor.value == "rgw":
            reason = (
                "not enforced by the object store: leases.enforcer is none (RGW can refuse "
                "revoked keys with enforcer rgw-role-policy); the keys work until they expire"
            )
        else:
            reason = (
                "not enforced by the object store: leases.enforcer is none (MinIO can delete "
                "revoked leases' keys with enforcer minio-sts-revoke); the keys work until "
                "they expire"
            )
        return Unenforced(reason)
    path = config.admin_credentials_path

    async def admin_credentials() -> AccessKey:
        return AccessKey.from_secret(await store.read(path))

    if config.enforcer == "minio-sts-revoke":
        if object_store.flavor is not Flavor.MINIO:
            raise ConfigError("leases.enforcer minio-sts-revoke needs object_store.flavor minio")
        from credbroker.objectstore.minio_revocation import MinioTokenRevoker

        return MinioTokenRevoker(
            endpoint=object_store.endpoint,
            parent_users=minio_parent_users(settings, store),
            admin_credentials=admin_credentials,
            region=object_store.region,
            tls=object_store_tls(settings),
            timeout_seconds=object_store.timeout_seconds,
        )
    from credbroker.objectstore.rgw_revocation import RgwRolePolicyEnforcer

    role_name = config.role_name or (object_store.role_arn or "").rsplit("/", 1)[-1]
    return RgwRolePolicyEnforcer(
        endpoint=object_store.endpoint,
        region=object_store.region,
        role_name=role_name,
        policy_name=config.policy_name,
        admin_credentials=admin_credentials,
        tls=object_store_tls(settings),
        timeout_seconds=object_store.timeout_seconds,
    )


def minio_parent_users(
    settings: Settings, store: SecretStore
) -> Callable[[], Awaitable[list[str]]]:
    """The MinIO users whose keys sign AssumeRole (a built-in user's name is its access key
    id): leases.parent_users, every minio-users pair, and the users of the service key and the
    fallback's key as the secret store holds them at the call (a rotation moves them)."""
    fixed = set(settings.leases.parent_users)
    for managed in settings.rotation.credentials:
        if managed.driver.kind == "minio-users":
            fixed.update(managed.driver.users or [])
    paths = [settings.object_store.credentials_path]
    if settings.fallback is not None:
        paths.append(settings.fallback.credentials_path)

    async def users() -> list[str]:
        found = set(fixed)
        for path in paths:
            try:
                found.add(AccessKey.from_secret(await store.read(path)).access_key_id)
            except SecretNotFound:
                continue
        return sorted(found)

    return users


def build_revoker(
    settings: Settings,
    leases: LeaseLog,
    enforcer: RevocationEnforcer,
    audit: AuditSink,
    writer: BatchedLeaseWriter | None = None,
) -> Revoker:
    return Revoker(
        leases=leases,
        enforcer=enforcer,
        audit=audit,
        max_ttl_seconds=settings.object_store.ttl.max_seconds,
        flush=writer.flush if writer is not None else None,
    )


@dataclass(frozen=True, slots=True)
class LeaseTools:
    """What `credbroker leases` and `credbroker revoke` use outside the server."""

    leases: LeaseLog
    revoker: Revoker


@asynccontextmanager
async def standalone_leases(settings: Settings) -> AsyncIterator[LeaseTools]:
    async with AsyncExitStack() as stack:
        store = build_secret_store(settings)
        stack.push_async_callback(store.close)
        audit = build_audit(settings)
        stack.push_async_callback(audit.close)
        state = await _open_state_store(settings)
        stack.push_async_callback(state.close)
        enforcer = build_revocation_enforcer(settings, store)
        stack.push_async_callback(enforcer.close)
        yield LeaseTools(state, build_revoker(settings, state, enforcer, audit))


async def _open_state_store(settings: Settings) -> SqliteControlStore | PostgresControlStore:
    """The configured state store, every table of it: rotation records and locks, the embedded
    store's watermark, leases, break-glass requests, principals and freezes (the control store
    is the state store with the control plane's tables)."""
    config = settings.state
    if isinstance(config, PostgresStateConfig):
        from credbroker.state.control_postgres import PostgresControlStore

        return await PostgresControlStore.open(
            config.dsn.resolve(),
            schema=config.schema_name,
            timeout_seconds=config.timeout_seconds,
        )
    from credbroker.state.control_sqlite import SqliteControlStore

    return await SqliteControlStore.open(config.path)


# --- the live control plane (principals, tokens, freezes) ---------------------------------------


async def build_principal_store(settings: Settings) -> PrincipalStore:
    """The state store's principals, token hashes and freezes: built by `serve` whether or not
    rotation is configured, and by the `clients`, `tokens` and `freeze` commands."""
    return await _open_state_store(settings)


def config_seeds(settings: Settings) -> list[Seed]:
    """The config file's clients: a read-only seed of the control plane."""
    return [
        Seed(
            Principal(
                client=c.to_client(),
                rate_per_second=c.rate_per_second,
                burst=c.burst,
                source=PrincipalSource.CONFIG,
            ),
            c.token_sha256,
        )
        for c in settings.clients
    ]


@asynccontextmanager
async def control_plane(
    settings: Settings, audit: AuditSink, metrics: Metrics | None = None, *, watch: bool = True
) -> AsyncIterator[ControlPlane]:
    """The control plane over the state store, loaded; with `watch` (the server) it keeps its
    snapshot current in a background task until exit. The store is closed on exit."""
    async with AsyncExitStack() as stack:
        store = await build_principal_store(settings)
        stack.push_async_callback(store.close)
        control = ControlPlane(
            store,
            seed=config_seeds(settings),
            spaces=settings.spaces,
            audit=audit,
            mint=new_token,
            metrics=metrics,
            poll_seconds=settings.control.poll_seconds,
        )
        await control.refresh(force=True)
        if watch:
            task = asyncio.create_task(control.run(), name="credbroker-control-refresh")

            async def stop() -> None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

            stack.push_async_callback(stop)
        yield control


def managed_credential(
    settings: Settings, config: ManagedKeyConfig, driver: KeyDriver
) -> ManagedKey:
    role_arn = config.role_arn
    if role_arn is None:
        fallback = settings.fallback
        if fallback is not None and config.secret_path == fallback.credentials_path:
            role_arn = fallback.role_arn
        else:
            role_arn = settings.object_store.role_arn
    return ManagedKey(
        proof=proof_scope(settings) if config.verify == "sts" else None,
        name=config.name,
        secret_path=config.secret_path,
        user=driver.owner,
        schedule=config.schedule.to_schedule(),
        grace_seconds=config.grace_seconds,
        verify_via=config.verify,
        role_arn=role_arn,
        enabled=config.enabled,
    )


def proof_scope(settings: Settings) -> Scope | None:
    """What a rotated STS parent key must prove it can serve: reading the first space."""
    if not settings.spaces:
        return None
    _, space = min(settings.spaces.items())
    return Scope(bucket=space.bucket, prefix=space.prefix, access=Access.READ)


def build_key_driver(settings: Settings, config: ManagedKeyConfig, store: SecretStore) -> KeyDriver:
    """The credential's admin-API driver; its admin keys are read from `store` at call time."""
    path = config.driver.admin_credentials_path

    async def admin_credentials() -> AccessKey:
        return AccessKey.from_secret(await store.read(path))

    object_store = settings.object_store
    endpoint = config.driver.endpoint or object_store.endpoint
    tls = object_store_tls(settings)
    if config.driver.kind == "minio-users":
        from credbroker.objectstore.minio_admin import MinioUserPairDriver

        return MinioUserPairDriver(
            users=config.driver.users or [],
            policy=config.driver.policy,
            endpoint=endpoint,
            admin_credentials=admin_credentials,
            region=object_store.region,
            tls=tls,
            timeout_seconds=config.driver.timeout_seconds,
        )
    if config.driver.kind == "minio":
        from credbroker.objectstore.minio_admin import MinioKeyDriver

        return MinioKeyDriver(
            endpoint=endpoint,
            owner=str(config.driver.user),
            admin_credentials=admin_credentials,
            region=object_store.region,
            tls=tls,
            timeout_seconds=config.driver.timeout_seconds,
        )
    from credbroker.objectstore.rgw_admin import RgwKeyDriver

    return RgwKeyDriver(
        endpoint=endpoint,
        user=str(config.driver.user),
        admin_credentials=admin_credentials,
        tls=tls,
        timeout_seconds=config.driver.timeout_seconds,
    )


@asynccontextmanager
async def rotation(
    settings: Settings,
    *,
    store: SecretStore,
    issuer: Issuer,
    metrics: Metrics,
    audit: AuditSink | None = None,
    on_switch: Callable[[str], Awaitable[None]] | None = None,
    checkpoint: Checkpoint | None = None,
) -> AsyncIterator[Rotator]:
    """A Rotator over the given store and issuer; its own state store, drivers and probe are
    closed on exit (the store, issuer and audit sink belong to the caller)."""
    config = settings.rotation
    object_store = settings.object_store
    async with AsyncExitStack() as stack:
        state = await build_state_store(settings)
        stack.push_async_callback(state.close)
        probe = SignedCallProbe(
            issuer=issuer,
            endpoint=object_store.endpoint,
            region=object_store.region,
            flavor=object_store.flavor,
            tls=object_store_tls(settings),
            timeout_seconds=object_store.timeout_seconds,
        )
        stack.push_async_callback(probe.close)
        drivers: dict[str, KeyDriver] = {}
        for credential in config.credentials:
            drivers[credential.name] = build_key_driver(settings, credential, store)
            stack.push_async_callback(drivers[credential.name].close)
        yield Rotator(
            credentials=[
                managed_credential(settings, c, drivers[c.name]) for c in config.credentials
            ],
            drivers=drivers,
            store=store,
            state=state,
            probe=probe,
            metrics=metrics,
            audit=audit,
            retry=RetryPolicy(config.retry.initial_seconds, config.retry.max_seconds),
            verify_timeout_seconds=config.verify_timeout_seconds,
            on_switch=on_switch,
            checkpoint=checkpoint,
        )


@asynccontextmanager
async def standalone_rotation(settings: Settings, metrics: Metrics) -> AsyncIterator[Rotator]:
    """Everything a Rotator needs, outside the server (`credbroker rotate`), closed on exit."""
    async with AsyncExitStack() as stack:
        store = build_secret_store(settings, metrics=metrics)
        stack.push_async_callback(store.close)
        issuer = build_issuer(settings)
        stack.push_async_callback(issuer.close)
        audit = build_audit(settings, metrics=metrics, store=store)
        stack.push_async_callback(audit.close)
        # The break-glass escrow follows the service key here too (cron, the CLI).
        on_switch = _follow_switch(
            settings,
            build_credentials(settings, store),
            None,
            escrow=build_escrow(settings),
        )
        rotator = await stack.enter_async_context(
            rotation(
                settings,
                store=store,
                issuer=issuer,
                metrics=metrics,
                audit=audit,
                on_switch=on_switch,
            )
        )
        yield rotator


# --- the compliance check -----------------------------------------------------------------------


def _compliance(
    settings: Settings,
    *,
    store: SecretStore,
    issuer: Issuer,
    audit: AuditSink | None,
    state: SqliteControlStore | PostgresControlStore,
) -> ComplianceCheck:
    """The check over the real systems: the object store asked with the inspect key and the
    read-only identity's key (both read from the secret store at call time), the state store
    (rotation records, leases, principals and their tokens), and the audit files."""
    object_store = settings.object_store
    config = settings.compliance
    tls = object_store_tls(settings)

    def reader(path: str) -> Callable[[], Awaitable[AccessKey]]:
        async def read() -> AccessKey:
            return AccessKey.from_secret(await store.read(path))

        return read

    fallback = settings.fallback
    probe = None
    if fallback is not None:
        probe = ReadOnlyWriteProbe(
            endpoint=object_store.endpoint,
            region=object_store.region,
            tls=tls,
            flavor=object_store.flavor,
            issuer=issuer,
            role_arn=fallback.role_arn,
            credentials=reader(fallback.credentials_path),
        )
    trail = FileTrail(settings.audit.path, settings.audit.public_key_path())
    return ComplianceCheck(
        spaces=settings.spaces,
        clients=[c.to_client() for c in settings.clients],
        ttl=object_store.ttl,
        clock_skew_seconds=object_store.clock_skew_seconds,
        exposure=S3BucketExposure(
            endpoint=object_store.endpoint,
            region=object_store.region,
            tls=tls,
            credentials=reader(config.inspect_credentials_path or object_store.credentials_path),
        ),
        write_probe=probe,
        canary_name=config.canary_name,
        state=state,
        rotations=[
            RotationPolicy(c.name, c.schedule.to_schedule(), c.grace_seconds, c.enabled)
            for c in settings.rotation.credentials
        ],
        trail=trail,
        usage=LatestUsage([LeaseUsage(state), TrailUsage(trail)]),
        unused_days=config.unused_days,
        principals=state,
        token_max_age_days=config.token_max_age_days,
        require_dated_tokens=config.require_dated_tokens,
        insecure_transport=settings.insecure_transport(),
        accepted_insecure=config.accept_insecure_transport,
        audit=audit,
    )


@asynccontextmanager
async def compliance_check(
    settings: Settings, *, metrics: Metrics | None = None
) -> AsyncIterator[ComplianceCheck]:
    """Everything the check needs outside the server (`credbroker compliance check`)."""
    async with AsyncExitStack() as stack:
        store = build_secret_store(settings, metrics=metrics)
        stack.push_async_callback(store.close)
        issuer = build_issuer(settings)
        stack.push_async_callback(issuer.close)
        audit = build_audit(settings, metrics=metrics, store=store)
        stack.push_async_callback(audit.close)
        state = await _open_state_store(settings)
        stack.push_async_callback(state.close)
        yield _compliance(settings, store=store, issuer=issuer, audit=audit, state=state)


def write_compliance_report(result: ComplianceResult, folder: Path) -> tuple[Path, Path]:
    return write_report(result, folder)


def audit_records(files: list[Path]) -> list[dict[str, Any]]:
    return read_records(files)


def build_daily_compliance(
    settings: Settings, *, store: SecretStore, issuer: Issuer, audit: AuditSink, metrics: Metrics
) -> DailyCompliance:
    """The daily run inside `serve` (one per day across replicas: the state store's lock)."""

    async def run() -> ComplianceResult:
        state = await _open_state_store(settings)
        try:
            check = _compliance(settings, store=store, issuer=issuer, audit=audit, state=state)
            result = await check.run()
        finally:
            await state.close()
        metrics.compliance_failed.set(len(result.failed()))
        return result

    async def publish(result: ComplianceResult) -> None:
        await asyncio.to_thread(write_report, result, settings.compliance.report_dir)

    return DailyCompliance(
        run,
        publish,
        lambda: build_state_store(settings),
        at=settings.compliance.daily_at,
    )


# --- the whole service ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Runtime:
    """Everything `credbroker serve` runs, built once from the settings. Starting the
    background work (the fallback's refresh, the rotation scheduler) is the entry point's
    lifecycle; building and closing are here."""

    caller_auth: CallerAuth
    broker: Broker
    audit: AuditSink  # the process's one sink (refusals the web layer answers go here too)
    secret_store: SecretStore
    issuer: Issuer
    fallback: ReadOnlyFallback | None
    rotator: Rotator | None
    scheduler: RotationScheduler | None
    readiness: Readiness
    limits: Limits
    # Leases and revocation: the state store is opened even without rotation.
    leases: LeaseLog | None = None
    lease_writer: BatchedLeaseWriter | None = None
    revoker: Revoker | None = None
    lease_jobs: LeaseJobs | None = None
    control: ControlPlane | None = None
    compliance: DailyCompliance | None = None  # the daily check (compliance.scheduler)
    break_glass: BreakGlass | None = None


def build_limits(settings: Settings, control: ControlPlane | None = None) -> Limits:
    """Fair use, in memory (each replica counts alone): a rate per client, the in-flight cap."""
    config = settings.limits
    default = Rate(config.rate_per_second, config.burst)
    per_client = {
        c.id: Rate(c.rate_per_second or default.per_second, c.burst or default.burst)
        for c in settings.clients
        if c.rate_per_second is not None or c.burst is not None
    }
    return Limits(
        rate=TokenBuckets(
            default,
            per_client,
            live=control.rate_of if control else None,
            processes=settings.server.workers,
        ),
        in_flight=InFlightCap(config.max_in_flight),
        body_timeout_seconds=config.body_timeout_seconds,
    )


def configured_secret_paths(settings: Settings) -> list[str]:
    """Every object-store key a vend, a rotation or the compliance check reads: the service key,
    the read-only fallback key, each managed credential's key and its object-store admin key,
    the compliance check's inspecting key (in that order, once each)."""
    paths = [settings.object_store.credentials_path]
    if settings.fallback is not None:
        paths.append(settings.fallback.credentials_path)
    for credential in settings.rotation.credentials:
        paths += [credential.secret_path, credential.driver.admin_credentials_path]
    if settings.compliance.inspect_credentials_path is not None:
        paths.append(settings.compliance.inspect_credentials_path)
    return list(dict.fromkeys(paths))


def other_secret_paths(settings: Settings) -> list[str]:
    """Configured secrets that are not object-store keys (their own fields): the audit
    signing key, the Confluence credentials of actor checks."""
    paths = []
    if settings.audit.signing_key_secret_path is not None:
        paths.append(settings.audit.signing_key_secret_path)
    if settings.confluence is not None:
        paths.append(settings.confluence.credentials_path)
    return [p for p in dict.fromkeys(paths) if p not in configured_secret_paths(settings)]


async def _read_around_breaker(
    store: ResilientSecretStore, path: str, *, key: bool = True
) -> AccessKey | None:
    """A readiness read: no retries, around the breaker (its outcome moves nothing); with
    `key`, the keys must be usable (both fields). While the breaker is open, its answer."""
    wait = store.breaker.retry_after()
    if wait > 0:
        raise SecretStoreCircuitOpen(
            f"the secret store is unreachable (circuit breaker open, next try in {wait:.1f}s)",
            retry_after=wait,
        )
    secret = await store.inner.read(path)
    if not key:
        return None
    try:
        return AccessKey.from_secret(secret)
    except KeyError:
        raise SecretStoreError(
            f"secret {path!r} needs the fields access_key_id and secret_access_key"
        ) from None


def build_readiness(
    settings: Settings,
    store: ResilientSecretStore,
    issuer: Issuer,
    fallback: ReadOnlyFallback | None,
    control: ControlPlane | None = None,
    *,
    metrics: Metrics | None = None,
) -> Readiness:
    """/readyz: cached, single-flight, and around the breaker (its probes never move it). A
    breaker state change drops the cached answer, so readiness follows degraded mode.

    Checks: secret_store, object_store, secrets (every configured secret present and usable),
    read_only_fallback (present and fresh), vend_canary (scheduled: the service key assumes the
    vend role with a session policy for the first space and lists it with the minted key)."""
    keys, others = configured_secret_paths(settings), other_secret_paths(settings)

    async def secrets() -> None:
        failures: list[CredbrokerError] = []
        for path, is_key in [(p, True) for p in keys] + [(p, False) for p in others]:
            try:
                await _read_around_breaker(store, path, key=is_key)
            except CredbrokerError as exc:
                failures.append(exc)
        if failures:
            first = failures[0]
            message = "; ".join(f.message for f in failures)
            raise CredbrokerError(message, code=first.code)

    object_store = settings.object_store
    probe = SignedCallProbe(
        issuer=issuer,
        endpoint=object_store.endpoint,
        region=object_store.region,
        flavor=object_store.flavor,
        tls=object_store_tls(settings),
        timeout_seconds=object_store.timeout_seconds,
    )
    scope = proof_scope(settings)

    async def vend_canary() -> None:
        try:
            key = await _read_around_breaker(store, object_store.credentials_path)
            assert key is not None
            await probe.accepts(key, via="sts", role_arn=object_store.role_arn, proof=scope)
        finally:
            await probe.close()  # one run now and then: no pooled connection in between

    readiness = Readiness(
        secret_store=store.probe,
        object_store=issuer.check,
        fallback=fallback,
        freezes=control_report(control) if control is not None else None,
        checks={"secrets": secrets},
        canary=Canary(vend_canary, interval_seconds=settings.readiness.canary_seconds),
        on_check=metrics.set_readiness_check if metrics is not None else None,
        cache_seconds=settings.server.readiness_cache_seconds,
        deadline_seconds=settings.secret_store_resilience.timeout_seconds,
    )
    store.breaker.subscribe(readiness.invalidate)
    return readiness


def control_report(control: ControlPlane) -> Callable[[], dict[str, Any]]:
    def report() -> dict[str, Any]:
        snapshot = control.snapshot
        glob = control.global_freeze()
        return {
            "check": {
                "ok": True,
                "generation": snapshot.generation,
                "age_seconds": round(control.age_seconds(), 1),
            },
            "freezes": [freeze_dict(f) for f in snapshot.freezes],
            "global": glob.describe() if glob is not None else None,
        }

    return report


@asynccontextmanager
async def runtime(settings: Settings, metrics: Metrics) -> AsyncIterator[Runtime]:
    """Build the service; on exit close it, newest first (rotation, then audit, issuer and
    store), each close run even if an earlier one failed."""
    async with AsyncExitStack() as stack:
        store = build_secret_store(settings, metrics=metrics)
        stack.push_async_callback(store.close)
        issuer = build_issuer(settings)
        stack.push_async_callback(issuer.close)
        # One sink per process (one chain): vends and rotations alike.
        audit = build_audit(settings, metrics=metrics, store=store)
        stack.push_async_callback(audit.close)
        credentials = build_credentials(settings, store)
        fallback = build_fallback(settings, store, metrics)
        control = await stack.enter_async_context(control_plane(settings, audit, metrics))
        readiness = build_readiness(settings, store, issuer, fallback, control, metrics=metrics)
        stack.push_async_callback(readiness.close)
        actors = build_actor_directory(settings, store)
        if actors is not None:
            stack.push_async_callback(actors.close)
        # Leases and break-glass requests need it always (principals: control_plane above).
        state = await _open_state_store(settings)
        stack.push_async_callback(state.close)
        lease_writer = BatchedLeaseWriter(
            state,
            flush_seconds=settings.leases.flush_seconds,
            batch_size=settings.leases.batch_size,
        )  # started and flushed by the app's lifecycle (web/admin_leases.lifecycle)
        enforcer = build_revocation_enforcer(settings, store)
        stack.push_async_callback(enforcer.close)
        revoker = build_revoker(settings, state, enforcer, audit, lease_writer)
        broker = Broker(
            spaces=settings.spaces,
            ttl=settings.object_store.ttl,
            credentials=credentials,
            issuer=issuer,
            audit=audit,
            metrics=metrics,
            flavor=settings.object_store.flavor,
            fallback=fallback,
            freezes=control,
            actors=actors,
            leases=lease_writer,
            clock_skew_seconds=settings.object_store.clock_skew_seconds,
        )
        caller_auth = build_caller_auth(settings, LiveTokenAuth(control))
        stack.push_async_callback(caller_auth.close)
        rotator: Rotator | None = None
        scheduler: RotationScheduler | None = None
        escrow = build_escrow(settings)
        if settings.rotation.credentials:
            rotator = await stack.enter_async_context(
                rotation(
                    settings,
                    store=store,
                    issuer=issuer,
                    metrics=metrics,
                    audit=audit,
                    on_switch=_follow_switch(settings, credentials, fallback, escrow=escrow),
                )
            )
            if settings.rotation.scheduler:
                scheduler = RotationScheduler(
                    rotator, resync_seconds=settings.rotation.resync_seconds
                )
        notifier = build_notifier(settings, metrics)
        stack.push_async_callback(notifier.close)
        break_glass = build_break_glass(
            settings,
            state=state,
            issuer=issuer,
            credentials=credentials,
            audit=audit,
            notifier=notifier,
            metrics=metrics,
            fallback=fallback,
            escrow=escrow,
            rotator=rotator,
        )
        if escrow is not None:
            await refresh_escrow(escrow, credentials)
        yield Runtime(
            break_glass=break_glass,
            caller_auth=caller_auth,
            audit=audit,
            broker=broker,
            secret_store=store,
            issuer=issuer,
            fallback=fallback,
            rotator=rotator,
            scheduler=scheduler,
            readiness=readiness,
            limits=build_limits(settings, control),
            control=control,
            leases=state,
            lease_writer=lease_writer,
            revoker=revoker,
            lease_jobs=LeaseJobs(
                revoker,
                state,
                interval_seconds=settings.leases.prune_seconds,
                keep_seconds=settings.leases.keep_seconds,
            ),
            compliance=build_daily_compliance(
                settings, store=store, issuer=issuer, audit=audit, metrics=metrics
            )
            if settings.compliance.scheduler
            else None,
        )


def _follow_switch(
    settings: Settings,
    credentials: ParentKeySource,
    fallback: ReadOnlyFallback | None,
    *,
    escrow: EscrowFile | None = None,
) -> Callable[[str], Awaitable[None]]:
    """What a rotation's switch means here: the broker drops its cached service key at once,
    the break-glass escrow is re-sealed with the new key (replacing the old one: no custodian
    needed, it seals to a public key), and the read-only fallback re-reads (and re-seals) its
    key when that one rotated."""
    fallback_path = settings.fallback.credentials_path if settings.fallback else None

    async def switched(path: str) -> None:
        if path == settings.object_store.credentials_path:
            credentials.invalidate()
            if escrow is not None:
                await refresh_escrow(escrow, credentials)
        if fallback is not None and path == fallback_path:
            with contextlib.suppress(CredbrokerError):
                await fallback.refresh()  # the sealed copy follows the new key now

    return switched


# --- break-glass --------------------------------------------------------------------------------


def build_escrow(settings: Settings) -> EscrowFile | None:
    config = settings.break_glass
    if config.escrow_file is None:
        return None
    return EscrowFile(config.escrow_file, pinned_fingerprint=config.escrow_fingerprint)


async def init_escrow(
    settings: Settings, *, shares: int, threshold: int, replace: bool
) -> tuple[NewEscrow, str | None]:
    """A new escrow at break_glass.escrow_file (`credbroker escrow init`), sealed at once with
    the service key when the secret store answers; the shares, and the key id sealed (None:
    the broker seals it at its next start)."""
    path = settings.break_glass.escrow_file
    if path is None:
        raise ConfigError("set break_glass.escrow_file in the config first")
    escrow, made = EscrowFile.init(path, shares=shares, threshold=threshold, replace=replace)
    store = build_secret_store(settings)
    try:
        await refresh_escrow(escrow, build_credentials(settings, store))
    finally:
        await store.close()
    return made, escrow.sealed_key_id()


async def refresh_escrow(escrow: EscrowFile, credentials: ParentKeySource) -> None:
    """Seal the service key in service into the escrow unless it holds it already (at start,
    and at each rotation's switch). Never raises: a failure is logged, the escrow keeps what
    it had (the key in service until a rotation; then, since the escrow may hold a key about
    to be deleted, the error says so)."""
    try:
        key = await credentials.current()
        if await asyncio.to_thread(escrow.sealed_key_id) == key.access_key_id:
            return
        await asyncio.to_thread(escrow.seal, key)
    except CredbrokerError as exc:
        log.error(
            "break-glass escrow %s not refreshed (%s): it may not hold the service key in "
            "service; writes during an outage would fail until it is",
            escrow.path,
            exc.code,
        )
        return
    log.info("break-glass escrow %s now holds service key %s", escrow.path, key.access_key_id)


def build_notifier(settings: Settings, metrics: Metrics) -> Notifier:
    webhook = settings.break_glass.webhook
    if webhook is None:
        return NullNotifier()
    return WebhookNotifier(
        webhook.url,
        secret=webhook.secret.resolve().encode() if webhook.secret is not None else None,
        attempts=webhook.attempts,
        backoff_seconds=webhook.backoff_seconds,
        backoff_max_seconds=webhook.backoff_max_seconds,
        timeout_seconds=webhook.timeout_seconds,
        on_result=lambda outcome: metrics.webhook_deliveries.labels(outcome).inc(),
    )


def build_break_glass(
    settings: Settings,
    *,
    state: SqliteStateStore | PostgresStateStore,
    issuer: Issuer,
    credentials: ParentKeySource,
    audit: AuditSink,
    notifier: Notifier,
    metrics: Metrics,
    fallback: ReadOnlyFallback | None,
    escrow: EscrowFile | None,
    rotator: Rotator | None,
) -> BreakGlass:
    config = settings.break_glass
    service = next(
        (
            c.name
            for c in settings.rotation.credentials
            if c.secret_path == settings.object_store.credentials_path
        ),
        None,
    )
    rotate: Callable[[], Awaitable[str]] | None = None
    if rotator is not None and service is not None:
        name = service

        async def rotate_now() -> str:
            """The escrowed key left the vault's custody: a new one now (a rotation in its
            grace is ended first)."""
            try:
                outcome = await rotator.run(name, force=True, end_grace=True)
            except RotationBusy:
                return "busy"
            return str(outcome.result)

        rotate = rotate_now
    return BreakGlass(
        store=state,
        spaces=settings.spaces,
        flavor=settings.object_store.flavor,
        issuer=issuer,
        credentials=credentials,
        audit=audit,
        notifier=notifier,
        metrics=metrics,
        rules=BreakGlassRules(
            approvals_required=config.approvals_required,
            approve_window_seconds=config.approve_window_seconds,
            collect_window_seconds=config.collect_window_seconds,
            ttl_cap_seconds=config.ttl_cap_seconds,
            clock_skew_seconds=settings.object_store.clock_skew_seconds,
        ),
        fallback=fallback,
        escrow=escrow,
        rotate_service_key=rotate,
    )
