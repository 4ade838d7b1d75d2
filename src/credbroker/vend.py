"""The vend path, top to bottom: authorize -> freeze -> scope -> policy -> parent key -> issue ->
audit.

Callers are authenticated before they get here (the web layer owns headers). Everything the
request says is validated on the way to the policy; nothing is cleaned up silently.

The parent key is the service key, read from the secret store at call time. Only while the
store is unreachable, and only for reads, it is the read-only fallback key (an identity whose
own policy allows only reads) with its own role: the same session policy applies and the
answer and the audit record say mode "read-only". Writes never run on stale authority.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from credbroker.domain import (
    Access,
    AccessKey,
    Client,
    Flavor,
    Mode,
    Scope,
    SessionKey,
    SpaceTarget,
    TtlLimits,
)
from credbroker.errors import (
    ActorCheckUnavailable,
    ActorNotPermitted,
    Frozen,
    InvalidRequest,
    KeyOutlivesRequest,
    NotAllowed,
    ObjectStoreRejected,
    SecretStoreUnavailable,
)
from credbroker.leases import Lease
from credbroker.parent_key import ParentKeySource
from credbroker.policy import (
    narrow_prefix,
    render_policy,
    session_policy,
    validate_space_key,
)
from credbroker.ports import (
    ActorDirectory,
    AuditSink,
    BrokerMetrics,
    FreezeCheck,
    Issuer,
    LeaseSink,
    ReadOnlyKeys,
)

log = logging.getLogger("credbroker.vend")

PRESIGN_MIN_TTL = 60
# How far the object store's clock may run ahead of ours before a key's Expiration counts as
# longer than asked (STS stamps it with the server's clock).
DEFAULT_CLOCK_SKEW_SECONDS = 60


@dataclass(frozen=True, slots=True)
class VendRequest:
    space: str
    access: Access
    ttl_seconds: int | None = None
    prefix: str | None = None
    reason: str | None = None
    rule: str | None = None
    actor: str | None = None


@dataclass(frozen=True, slots=True)
class PresignRequest:
    space: str
    key: str
    method: str
    ttl_seconds: int | None = None
    reason: str | None = None
    rule: str | None = None
    actor: str | None = None


@dataclass(frozen=True, slots=True)
class Vended:
    credentials: SessionKey
    scope: Scope
    lease_id: str
    endpoint: str
    region: str
    mode: Mode = Mode.NORMAL


@dataclass(frozen=True, slots=True)
class Presigned:
    url: str
    expires_at: datetime
    scope: Scope
    key: str
    method: str
    lease_id: str
    mode: Mode = Mode.NORMAL


@dataclass(frozen=True, slots=True)
class _Parent:
    """The key an STS call is signed with, the role it names and the mode it means."""

    key: AccessKey
    role_arn: str | None  # None: the issuer's configured role
    mode: Mode


class Broker:
    def __init__(
        self,
        *,
        spaces: Mapping[str, SpaceTarget],
        ttl: TtlLimits,
        credentials: ParentKeySource,
        issuer: Issuer,
        audit: AuditSink,
        metrics: BrokerMetrics,
        flavor: Flavor,
        fallback: ReadOnlyKeys | None = None,
        freezes: FreezeCheck | None = None,
        actors: ActorDirectory | None = None,
        leases: LeaseSink | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        clock_skew_seconds: float = DEFAULT_CLOCK_SKEW_SECONDS,
    ) -> None:
        self._freezes = freezes
        self._spaces = spaces
        self._flavor = flavor
        self._clock_skew = timedelta(seconds=clock_skew_seconds)
        self._ttl = ttl
        self._credentials = credentials
        self._issuer = issuer
        self._audit = audit
        self._metrics = metrics
        self._fallback = fallback
        self._actors = actors
        self._leases = leases
        self._clock = clock

    async def vend(self, client: Client, request: VendRequest) -> Vended:
        scope, policy = await self._authorize(client, request.space, request.access, request.prefix)
        await self._check_freeze("vend", client, request.space, scope)
        verified = await self._check_actor(client, request.space, scope.access, request.actor)
        ttl = self._clamp_ttl(client, request.ttl_seconds)
        lease_id = _new_lease_id()
        credentials, mode = await self._issue(client, scope, policy, ttl, lease_id)
        await self._record(
            "vend",
            client,
            lease_id,
            request.space,
            scope,
            ttl,
            request.reason,
            request.rule,
            request.actor,
            expires=credentials.expiration,
            mode=mode,
            # The key id (never its secret) ties a key seen in object-store logs to its grant.
            extra={"access_key_id": credentials.access_key_id, **verified},
        )
        return Vended(
            credentials=credentials,
            scope=scope,
            lease_id=lease_id,
            endpoint=self._issuer.public_endpoint,
            region=self._issuer.region,
            mode=mode,
        )

    async def presign(self, client: Client, request: PresignRequest) -> Presigned:
        method = request.method.upper()
        if method not in ("GET", "PUT"):
            raise InvalidRequest("method must be GET or PUT", code="invalid_method")
        access = Access.WRITE if method == "PUT" else Access.READ
        # The URL is signed by a temporary key that can reach this one object only, so a
        # leaked or tampered link is worth nothing more, and rotation never breaks it.
        scope, policy = await self._authorize(
            client, request.space, access, None, object_key=request.key
        )
        await self._check_freeze("presign", client, request.space, scope)
        verified = await self._check_actor(client, request.space, access, request.actor)
        key = request.key  # validated by the policy builder, never changed
        expires_in = self._clamp_presign_ttl(client, request.ttl_seconds)
        lease_id = _new_lease_id()
        # The signing key gets a minute more than the link, within the store's limits.
        sts_ttl = min(self._ttl.max_seconds, max(self._ttl.min_seconds, expires_in + 60))
        credentials, mode = await self._issue(client, scope, policy, sts_ttl, lease_id)
        # A URL never outlives the key that signs it: a server that cut the key's life short
        # (MINIO_STS_DURATION below the TTL asked) shortens the link with it.
        now = self._clock()
        key_left = int((credentials.expiration - now).total_seconds())
        if key_left < expires_in:
            if key_left < 1:
                raise KeyOutlivesRequest(
                    "the object store issued a key that has already expired "
                    f"({credentials.expiration.isoformat()}); check the clocks of both"
                )
            expires_in = key_left
        url = self._issuer.presign(
            credentials,
            bucket=scope.bucket,
            key=scope.prefix + key,
            method=method,
            expires_in=expires_in,
        )
        expires_at = now + timedelta(seconds=expires_in)
        await self._record(
            "presign",
            client,
            lease_id,
            request.space,
            scope,
            expires_in,
            request.reason,
            request.rule,
            request.actor,
            expires=expires_at,
            mode=mode,
            extra={
                "key": scope.prefix + key,
                "method": method,
                "access_key_id": credentials.access_key_id,
                **verified,
            },
        )
        return Presigned(url, expires_at, scope, scope.prefix + key, method, lease_id, mode)

    # --- steps --------------------------------------------------------------------------------

    async def _authorize(
        self,
        client: Client,
        space: str,
        access: Access,
        prefix: str | None,
        *,
        object_key: str | None = None,
    ) -> tuple[Scope, str]:
        """The scope the client may have and its rendered session policy. Every refusal on the
        way (space, access, a hostile prefix or key, a policy too large) is audited."""
        try:
            target = self._spaces.get(validate_space_key(space))
            # One answer for "unknown" and "not yours": a client learns nothing of other spaces.
            if target is None or space not in client.spaces:
                raise NotAllowed(
                    f"client {client.id} may not use space {space}", code="space_denied"
                )
            if not client.max_access.allows(access):
                raise NotAllowed(
                    f"client {client.id} may not have {access.value} access", code="access_denied"
                )
            scope = Scope(
                bucket=target.bucket, prefix=narrow_prefix(target.prefix, prefix), access=access
            )
            policy = render_policy(
                session_policy(scope, flavor=self._flavor, object_key=object_key),
                flavor=self._flavor,
            )
        except (NotAllowed, InvalidRequest) as exc:
            # Refusals are audited too: who asked for what, and why it was refused.
            await self._audit.record(
                {
                    "ts": self._clock().isoformat(),
                    "event": "denied",
                    "client": client.id,
                    "space": space if isinstance(exc, NotAllowed) else None,
                    "access": access.value,
                    "code": exc.code,
                }
            )
            exc.audited = True
            raise
        return scope, policy

    async def _check_freeze(self, action: str, client: Client, space: str, scope: Scope) -> None:
        """Refuse (503 frozen, audited, counted) while an operator's freeze matches. Checked
        after authorization, so a caller learns of a freeze only for what it may have."""
        freezes = self._freezes
        freeze = freezes.frozen(client.id, space) if freezes is not None else None
        if freeze is None:
            return
        self._metrics.count_frozen(action)
        await self._audit.record(
            {
                "ts": self._clock().isoformat(),
                "event": "denied",
                "client": client.id,
                "space": space,
                "access": scope.access.value,
                "code": Frozen.code,
                "freeze_id": freeze.id,
            }
        )
        refused = Frozen(
            f"vending is frozen by an operator: {freeze.describe()}. It resumes when the freeze "
            "is lifted (credbroker unfreeze)"
        )
        refused.audited = True
        raise refused

    async def _check_actor(
        self, client: Client, space: str, access: Access, actor: str | None
    ) -> dict[str, Any]:
        """For a space with actor_check: Confluence must say `actor` may view (read) or edit
        (write) it. What the audit record adds: {} for a space that checks no actor, else
        actor_verified true, or false when Confluence was unreachable and the space serves
        reads unverified (actor_check_unavailable: read-only). Refusals are audited."""
        target = self._spaces[space]
        if target.actor_check is None:
            return {}
        try:
            if not actor:
                raise ActorNotPermitted(
                    f"space {space} serves only requests naming their actor (the Confluence "
                    "account that triggered the rule)"
                )
            if self._actors is None:
                raise ActorCheckUnavailable(f"space {space} checks actors, but no checker is set")
            try:
                permitted = await self._actors.permitted(space=space, actor=actor, access=access)
            except ActorCheckUnavailable as outage:
                if target.actor_check_unavailable == "read-only" and access is Access.READ:
                    log.warning("actor check for space %s unavailable: reading unverified", space)
                    return {"actor_verified": False, "actor_check": "unavailable"}
                if target.actor_check_unavailable == "read-only":
                    outage.message = f"{outage.message}; writes need a verified actor"
                    outage.args = (outage.message,)
                raise
            if not permitted:
                verb = "edit" if access is Access.WRITE else "view"
                raise ActorNotPermitted(
                    f"Confluence says actor {actor} may not {verb} space {space}"
                )
        except (ActorNotPermitted, ActorCheckUnavailable) as exc:
            await self._audit.record(
                {
                    "ts": self._clock().isoformat(),
                    "event": "denied",
                    "client": client.id,
                    "space": space,
                    "access": access.value,
                    "actor": actor,
                    "code": exc.code,
                }
            )
            exc.audited = True
            raise
        return {"actor_verified": True}

    def _clamp_ttl(self, client: Client, requested: int | None) -> int:
        wanted = self._ttl.default_seconds if requested is None else requested
        ceiling = min(client.max_ttl_seconds, self._ttl.max_seconds)
        return max(self._ttl.min_seconds, min(wanted, ceiling))

    def _clamp_presign_ttl(self, client: Client, requested: int | None) -> int:
        wanted = self._ttl.min_seconds if requested is None else requested
        ceiling = min(client.max_ttl_seconds, self._ttl.max_seconds)
        return max(PRESIGN_MIN_TTL, min(wanted, ceiling))

    async def _parent_key(self, access: Access) -> _Parent:
        """The service key; only while the store is unreachable and only for reads, the
        read-only fallback key. A store that answers and refuses (403, 404) never falls back:
        that is a configuration error, not an outage."""
        fallback = self._fallback
        try:
            return _Parent(await self._credentials.current(), None, Mode.NORMAL)
        except SecretStoreUnavailable as outage:
            if fallback is None:
                raise
            if access is not Access.READ:
                refused = SecretStoreUnavailable(
                    f"{outage.message}; write access needs the secret store, reads are "
                    "served read-only meanwhile"
                )
                refused.retry_after = outage.retry_after
                raise refused from None
        return _Parent(fallback.credentials(), fallback.role_arn, Mode.READ_ONLY)

    async def _issue(
        self, client: Client, scope: Scope, policy: str, ttl: int, lease_id: str
    ) -> tuple[SessionKey, Mode]:
        chosen = await self._parent_key(scope.access)
        asked_at = self._clock()
        parent = chosen.key
        try:
            credentials = await self._issuer.assume_role(
                parent,
                policy=policy,
                duration_seconds=ttl,
                session_name=lease_id,
                role_arn=chosen.role_arn,
            )
        except ObjectStoreRejected as exc:
            # The read-only key cannot be re-read while the store is down: nothing to retry.
            if chosen.mode is not Mode.NORMAL or not exc.may_be_stale_key:
                raise
            # Perhaps the cached parent key was rotated away: read the store again, and retry
            # once only if it now holds a different key.
            self._credentials.invalidate(version=parent.version)
            fresh = await self._credentials.current()
            if fresh.access_key_id == parent.access_key_id and fresh.version == parent.version:
                raise
            log.info("parent key v%s rejected; now using v%s", parent.version, fresh.version)
            self._metrics.count_parent_key_refresh()
            credentials = await self._issuer.assume_role(
                fresh, policy=policy, duration_seconds=ttl, session_name=lease_id
            )
        await self._check_lifetime(client, scope, credentials, asked_at + timedelta(seconds=ttl))
        return credentials, chosen.mode

    async def _check_lifetime(
        self, client: Client, scope: Scope, credentials: SessionKey, due: datetime
    ) -> None:
        """Refuse a key that outlives what was asked: the TTL asked is already clamped to the
        client's maximum, so a longer-lived key would break it. MinIO ignores DurationSeconds
        when the server sets MINIO_STS_DURATION (internal/config/identity/openid/openid.go,
        GetDefaultExpiration)."""
        over = (credentials.expiration - due).total_seconds()
        if over <= self._clock_skew.total_seconds():
            return
        log.error(
            "object store issued key %s valid until %s, %d s past the %s asked for: not handed out",
            credentials.access_key_id,
            credentials.expiration.isoformat(),
            over,
            due.isoformat(),
        )
        # The key exists and cannot be revoked one by one: the audit trail names it.
        await self._audit.record(
            {
                "ts": self._clock().isoformat(),
                "event": "denied",
                "client": client.id,
                "space": None,
                "bucket": scope.bucket,
                "prefix": scope.prefix,
                "access": scope.access.value,
                "code": KeyOutlivesRequest.code,
                "access_key_id": credentials.access_key_id,
                "expires": credentials.expiration.isoformat(),
            }
        )
        refused = KeyOutlivesRequest(
            f"the object store issued a key valid until {credentials.expiration.isoformat()}, "
            f"{int(over)} s longer than asked; MinIO ignores the requested duration when the "
            "server sets MINIO_STS_DURATION: unset it (or set it no longer than "
            "object_store.ttl.min_seconds). The key was not handed out."
        )
        refused.audited = True
        raise refused

    async def _record(
        self,
        action: str,
        client: Client,
        lease_id: str,
        space: str,
        scope: Scope,
        ttl: int,
        reason: str | None,
        rule: str | None,
        actor: str | None,
        *,
        expires: datetime,
        mode: Mode = Mode.NORMAL,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        issued = self._clock()
        event: dict[str, Any] = {
            "ts": issued.isoformat(),
            "event": action,
            "lease_id": lease_id,
            "client": client.id,
            "space": space,
            "bucket": scope.bucket,
            "prefix": scope.prefix,
            "access": scope.access.value,
            "ttl_seconds": ttl,
            "expires": expires.isoformat(),
            "reason": reason,
            "rule": rule,
            "actor": actor,
            "mode": mode,
            **(extra or {}),
        }
        # The audit record first, synchronously: it carries every lease field, so a crash
        # before the batched lease write loses nothing (the writer reconciles from it).
        await self._audit.record(event)
        if self._leases is not None:
            more = extra or {}
            self._leases.issued(
                Lease(
                    lease_id=lease_id,
                    kind=action,
                    client=client.id,
                    space=space,
                    bucket=scope.bucket,
                    prefix=scope.prefix,
                    access=scope.access.value,
                    ttl_seconds=ttl,
                    issued_at=issued,
                    expires_at=expires,
                    mode=str(mode),
                    access_key_id=more.get("access_key_id"),
                    rule=rule,
                    actor=actor,
                    object_key=more.get("key"),
                )
            )


def _new_lease_id() -> str:
    # Doubles as the STS RoleSessionName: [\w+=,.@-]{2,64}.
    return "cb-" + secrets.token_hex(12)
