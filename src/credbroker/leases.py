"""Leases and revocation: every key and presigned URL handed out is a lease; a revocation ends
the leases a selector names, and asks the object store (when it can) to refuse their keys.

The vend path hands each lease to a LeaseSink (a batched, asynchronous writer: no database
round trip on the hot path). A lease is never lost on a crash: the audit record of the vend,
written synchronously before the answer, carries every lease field, and on start the writer
adds every unexpired lease of the audit file that the table misses (`lease_from_audit`).

Revocation is honest about the object store: the RevocationEnforcer says whether keys already
out are refused (Ceph RGW: a Deny in the vend role's permission policy, on the session name or
on aws:TokenIssueTime) or not (then the answer says so, with the reason).
"""

from __future__ import annotations

import enum
import logging
import re
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from credbroker.domain import utc_text
from credbroker.errors import CredbrokerError, InvalidRequest, LeaseNotFound, RotationBusy

if TYPE_CHECKING:
    from credbroker.ports import AuditSink, LeaseLog, RevocationEnforcer, StateStore

log = logging.getLogger("credbroker.leases")

LEASE_ID = re.compile(r"cb-[0-9a-f]{24}")
REVOCATION_ID = re.compile(r"rv-[0-9a-f]{16}")
# What a client id, a space key or a rule may look like in a filter: no wildcard, nothing a
# store would read as syntax.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@:-]{0,127}")
PRUNE_LOCK = "lease-prune"
_ALL = 10_000_000  # a revocation takes every matching lease, not a page of them


class Selector(enum.StrEnum):
    LEASE = "lease"
    CLIENT = "client"
    SPACE = "space"
    ISSUED_BEFORE = "issued_before"


@dataclass(frozen=True, slots=True)
class Lease:
    """One key or presigned URL handed out. Names the vended access key id, never a secret."""

    lease_id: str
    kind: str  # "vend" or "presign"
    client: str
    space: str | None
    bucket: str
    prefix: str
    access: str
    ttl_seconds: int
    issued_at: datetime
    expires_at: datetime
    mode: str
    access_key_id: str | None
    rule: str | None = None
    actor: str | None = None
    source: str | None = None  # the caller's address
    object_key: str | None = None  # presign: the one object
    revoked_at: datetime | None = None
    revocation_id: str | None = None

    def active(self, now: datetime) -> bool:
        return self.revoked_at is None and self.expires_at > now

    def as_dict(self, now: datetime | None = None) -> dict[str, Any]:
        now = now or datetime.now(UTC)
        state = (
            "revoked"
            if self.revoked_at is not None
            else "active"
            if self.active(now)
            else "expired"
        )
        return {
            "leaseId": self.lease_id,
            "kind": self.kind,
            "client": self.client,
            "rule": self.rule,
            "actor": self.actor,
            "space": self.space,
            "bucket": self.bucket,
            "prefix": self.prefix,
            "objectKey": self.object_key,
            "access": self.access,
            "ttlSeconds": self.ttl_seconds,
            "issuedAt": utc_text(self.issued_at),
            "expiresAt": utc_text(self.expires_at),
            "mode": self.mode,
            "source": self.source,
            "accessKeyId": self.access_key_id,
            "state": state,
            "revokedAt": utc_text(self.revoked_at),
            "revocationId": self.revocation_id,
        }


@dataclass(frozen=True, slots=True)
class LeaseFilter:
    client: str | None = None
    space: str | None = None
    lease_id: str | None = None
    issued_before: datetime | None = None
    active_at: datetime | None = None  # only leases neither revoked nor expired at this time
    access: str | None = None  # "read" or "write" (the compliance check's last write)
    limit: int = 1000

    def matches(self, lease: Lease) -> bool:
        """The same filter in memory (the fakes and the contract suite agree with the SQL)."""
        return (
            (self.client is None or lease.client == self.client)
            and (self.space is None or lease.space == self.space)
            and (self.lease_id is None or lease.lease_id == self.lease_id)
            and (self.issued_before is None or lease.issued_at < self.issued_before)
            and (self.active_at is None or lease.active(self.active_at))
            and (self.access is None or lease.access == self.access)
        )


@dataclass(frozen=True, slots=True)
class Revocation:
    revocation_id: str
    selector: Selector
    value: str  # the lease id, client, space, or the time (ISO 8601) named
    created_at: datetime
    created_by: str | None
    reason: str | None
    lease_count: int
    # Until when the object store must keep refusing (the latest expiry it targets).
    enforce_until: datetime
    object_store_enforced: bool
    detail: str
    issued_before: datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "revocationId": self.revocation_id,
            "selector": self.selector.value,
            "value": self.value,
            "createdAt": utc_text(self.created_at),
            "createdBy": self.created_by,
            "reason": self.reason,
            "leases": self.lease_count,
            "enforceUntil": utc_text(self.enforce_until),
            "objectStoreEnforced": self.object_store_enforced,
            "detail": self.detail,
        }


@dataclass(frozen=True, slots=True)
class Denials:
    """What the object store must refuse now: the session names (lease ids) of revoked keys
    not yet expired, and every key issued before `issued_before` (None: no such rule)."""

    session_names: tuple[str, ...] = ()
    issued_before: datetime | None = None


@dataclass(frozen=True, slots=True)
class Enforcement:
    enforced: bool
    detail: str


@dataclass
class RevocationAnswer:
    revocation: Revocation
    leases: list[Lease] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.revocation.as_dict(),
            "leaseIds": [lease.lease_id for lease in self.leases],
        }


def new_revocation_id() -> str:
    return "rv-" + secrets.token_hex(8)


def parse_time(text: str) -> datetime:
    """An ISO 8601 time with a zone (Z or an offset); InvalidRequest otherwise."""
    if not isinstance(text, str) or len(text) > 40:
        raise InvalidRequest("a time must be ISO 8601 with a zone", code="invalid_time")
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequest(
            "a time must be ISO 8601 with a zone, e.g. 2026-01-02T03:04:05Z", code="invalid_time"
        ) from None
    if moment.tzinfo is None:
        raise InvalidRequest("a time needs a zone (Z or +HH:MM)", code="invalid_time")
    return moment.astimezone(UTC)


def check_name(value: str, what: str) -> str:
    """A client id or a space key as a filter or selector (`what`: "client" or "space")."""
    if not isinstance(value, str) or not NAME.fullmatch(value):
        if what == "client":
            raise InvalidRequest("invalid client id", code="invalid_client")
        raise InvalidRequest("invalid space key", code="invalid_space")
    return value


def check_lease_id(value: str) -> str:
    if not isinstance(value, str) or not LEASE_ID.fullmatch(value):
        raise InvalidRequest("invalid lease id (cb- and 24 hex digits)", code="invalid_lease_id")
    return value


def lease_from_audit(event: Mapping[str, Any]) -> Lease | None:
    """The lease a vend or presign audit record describes (None for any other record, or one
    that is not complete)."""
    kind = event.get("event")
    if kind not in ("vend", "presign"):
        return None
    try:
        issued = parse_time(str(event["ts"]))
        expires = parse_time(str(event["expires"]))
        lease_id = check_lease_id(str(event["lease_id"]))
        return Lease(
            lease_id=lease_id,
            kind=str(kind),
            client=str(event["client"]),
            space=_text(event.get("space")),
            bucket=str(event["bucket"]),
            prefix=str(event["prefix"]),
            access=str(event["access"]),
            ttl_seconds=int(event["ttl_seconds"]),
            issued_at=issued,
            expires_at=expires,
            mode=str(event.get("mode") or "normal"),
            access_key_id=_text(event.get("access_key_id")),
            rule=_text(event.get("rule")),
            actor=_text(event.get("actor")),
            source=_text(event.get("source")),
            object_key=_text(event.get("key")),
        )
    except (KeyError, ValueError, TypeError, InvalidRequest):
        return None


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


class Revoker:
    """The revocation use case: mark the leases a selector names revoked, record the
    revocation, and bring the object store's denials in step with what is revoked."""

    def __init__(
        self,
        *,
        leases: LeaseLog,
        enforcer: RevocationEnforcer,
        audit: AuditSink,
        max_ttl_seconds: int,
        flush: Callable[[], Awaitable[None]] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._leases = leases
        self._enforcer = enforcer
        self._audit = audit
        self._max_ttl = timedelta(seconds=max_ttl_seconds)
        self._flush = flush
        self._clock = clock

    async def revoke(
        self,
        selector: Selector,
        value: str,
        *,
        by: str | None = None,
        reason: str | None = None,
    ) -> RevocationAnswer:
        now = self._clock()
        wanted, issued_before = self._filter(selector, value, now)
        if self._flush is not None:
            await self._flush()  # leases of this process still in the writer's batch
        targets = await self._leases.find(wanted)
        if selector is Selector.LEASE and not targets:
            known = await self._leases.find(replace(wanted, active_at=None))
            if not known:
                raise LeaseNotFound(f"no lease {value}")
        enforce_until = max([lease.expires_at for lease in targets], default=now)
        if issued_before is not None:
            # Every key issued before T is gone by T + the longest TTL, wherever it was issued.
            enforce_until = max(enforce_until, issued_before + self._max_ttl)
        revocation_id = new_revocation_id()
        denials = await self._denials(
            now,
            extra_names=[lease.lease_id for lease in targets],
            extra_before=issued_before,
        )
        self._enforcer.check(denials)  # too large: refused before anything is recorded
        revoked = await self._leases.mark_revoked(
            [lease.lease_id for lease in targets], revocation_id=revocation_id, at=now
        )
        try:
            enforcement = await self._enforce(denials)
        except CredbrokerError as exc:
            # The leases are marked: the pruning job applies the full set of denials again
            # from the state store at its next run.
            log.error("revocation %s not applied by the object store: %s", revocation_id, exc)
            enforcement = Enforcement(
                False,
                f"recorded, but the object store did not take the denial ({exc.message}); "
                "the pruning job applies it again at its next run",
            )
        gap = self._enforcer.issue_time_gap
        if issued_before is not None and enforcement.enforced and gap is not None:
            enforcement = Enforcement(False, f"{enforcement.detail}; {gap}")
        revocation = Revocation(
            revocation_id=revocation_id,
            selector=selector,
            value=value,
            created_at=now,
            created_by=by,
            reason=reason,
            lease_count=len(revoked),
            enforce_until=enforce_until,
            object_store_enforced=enforcement.enforced,
            detail=enforcement.detail,
            issued_before=issued_before,
        )
        await self._leases.add_revocation(revocation)
        await self._audit.record(
            {
                "ts": now.isoformat(),
                "event": "revoked",
                "revocation_id": revocation_id,
                "selector": selector.value,
                "value": value,
                "leases": [lease.lease_id for lease in revoked],
                "access_key_ids": [k for k in (lease.access_key_id for lease in revoked) if k],
                "object_store_enforced": enforcement.enforced,
                "detail": enforcement.detail,
                "reason": reason,
                "by": by,
            }
        )
        return RevocationAnswer(revocation, [replace(lease) for lease in revoked])

    async def sync(self) -> Enforcement:
        """Bring the object store's denials in step with the revocations in effect (entries
        whose keys have all expired drop out), and delete lease rows long expired."""
        now = self._clock()
        enforcement = await self._enforce(await self._denials(now))
        return enforcement

    async def prune(self, *, keep_seconds: float) -> int:
        """Delete leases and revocations that ended more than `keep_seconds` ago."""
        before = self._clock() - timedelta(seconds=keep_seconds)
        return await self._leases.prune(before)

    async def _denials(
        self,
        now: datetime,
        *,
        extra_names: list[str] | None = None,
        extra_before: datetime | None = None,
    ) -> Denials:
        names = set(await self._leases.revoked_active(now))
        names.update(extra_names or ())
        befores = [
            r.issued_before
            for r in await self._leases.revocations(in_effect_at=now)
            if r.issued_before is not None
        ]
        if extra_before is not None:
            befores.append(extra_before)
        return Denials(tuple(sorted(names)), max(befores, default=None))

    async def _enforce(self, denials: Denials) -> Enforcement:
        return await self._enforcer.apply(denials)

    def _filter(
        self, selector: Selector, value: str, now: datetime
    ) -> tuple[LeaseFilter, datetime | None]:
        if selector is Selector.LEASE:
            return LeaseFilter(lease_id=check_lease_id(value), active_at=now), None
        if selector is Selector.CLIENT:
            wanted = LeaseFilter(client=check_name(value, "client"), active_at=now, limit=_ALL)
            return wanted, None
        if selector is Selector.SPACE:
            return LeaseFilter(space=check_name(value, "space"), active_at=now, limit=_ALL), None
        moment = parse_time(value)
        if moment > now + timedelta(minutes=5):
            # A time in the future would also refuse keys not yet issued: not a revocation.
            raise InvalidRequest("--issued-before must not be in the future", code="invalid_time")
        return LeaseFilter(issued_before=moment, active_at=now, limit=_ALL), moment


class Unenforced:
    """A RevocationEnforcer for an object store that offers nothing to end a key before it
    expires (or none configured): revocations are recorded and audited, and say so."""

    kind = "none"
    issue_time_gap: str | None = None

    def __init__(self, reason: str) -> None:
        self._reason = reason

    def check(self, denials: Denials) -> None:
        return None

    async def apply(self, denials: Denials) -> Enforcement:
        return Enforcement(False, self._reason)

    async def close(self) -> None:
        return None


class LeaseJobs:
    """Inside `credbroker serve`: every `interval_seconds`, one replica (the state store's lock)
    prunes old lease rows and re-applies the object store's denials without expired entries."""

    def __init__(
        self,
        revoker: Revoker,
        state: StateStore,
        *,
        interval_seconds: float,
        keep_seconds: float,
    ) -> None:
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        self._revoker = revoker
        self._state = state
        self._interval = interval_seconds
        self._keep = keep_seconds
        self._scheduler = AsyncIOScheduler(timezone=UTC)

    async def run_once(self) -> bool:
        """True if this replica ran the job, False if another one held the lock."""
        try:
            async with self._state.lock(PRUNE_LOCK):
                pruned = await self._revoker.prune(keep_seconds=self._keep)
                enforcement = await self._revoker.sync()
        except RotationBusy:
            return False
        log.info("lease job: %d rows pruned; denials: %s", pruned, enforcement.detail)
        return True

    async def start(self) -> None:
        from apscheduler.triggers.interval import IntervalTrigger

        self._scheduler.start()
        self._scheduler.add_job(
            self._guarded,
            IntervalTrigger(seconds=self._interval, timezone=UTC),
            id="credbroker-lease-prune",
            coalesce=True,
            max_instances=1,
            misfire_grace_time=None,
        )

    async def _guarded(self) -> None:
        try:
            await self.run_once()
        except CredbrokerError as exc:
            log.warning("lease job failed: %s", exc.message)

    async def close(self) -> None:
        self._scheduler.shutdown(wait=False)
