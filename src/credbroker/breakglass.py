"""Break-glass, top to bottom: request -> approve (K approvers) -> collect once -> close.

An operator asks for a key to one space (read or write, a TTL under a hard cap, a reason);
approvers other than the requester, each authenticated with their own credential, approve
until the threshold is reached; the requester then collects the key once, within a short
window. Requests not approved in time, or not collected in time, expire. The key is the kind
the broker vends (STS AssumeRole with the session policy of that space and prefix, policy.py),
and the answer and every record say mode "break-glass".

The parent key that signs it:
- the service key from the secret store, when the store answers;
- while the store is unreachable, reads: the read-only fallback key (no shares needed);
- while the store is unreachable, writes: the service key sealed in the escrow, opened with
  K custodians' shares submitted for this request (`submit_share`). The opened key lives in
  this function for the one STS call and is dropped; the shares are dropped once the key is
  collected (or the request ends). Closing such a request rotates the service key at once.

Loud by design: each step, refused ones included, is an audit record (who, what, why, from
where), a WARNING log line, a metric and a webhook notification. None holds a secret.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from credbroker.domain import (
    STS_MIN_TTL,
    Access,
    AccessKey,
    BreakGlassRequest,
    BreakGlassStatus,
    Client,
    Flavor,
    Mode,
    Role,
    Scope,
    SessionKey,
    SpaceTarget,
    utc_text,
)
from credbroker.errors import (
    BreakGlassConflict,
    CredbrokerError,
    EscrowSealed,
    InvalidRequest,
    KeyOutlivesRequest,
    NotAllowed,
    NotFound,
    SecretStoreUnavailable,
)
from credbroker.parent_key import ParentKeySource
from credbroker.policy import (
    is_printable_text,
    narrow_prefix,
    render_policy,
    session_policy,
    validate_space_key,
)
from credbroker.ports import (
    AuditSink,
    BreakGlassMetrics,
    BreakGlassStore,
    Escrow,
    Issuer,
    Notifier,
    ReadOnlyKeys,
)

log = logging.getLogger("credbroker.breakglass")

Status = BreakGlassStatus
MAX_REASON_CHARS = 256


@dataclass(frozen=True, slots=True)
class BreakGlassRules:
    """The configured rules (config.py BreakGlassConfig)."""

    approvals_required: int = 2
    approve_window_seconds: float = 3600.0  # an open request expires after this
    collect_window_seconds: float = 900.0  # an approved request expires after this
    ttl_cap_seconds: int = 3600  # no break-glass key lives longer
    clock_skew_seconds: float = 60.0


@dataclass(frozen=True, slots=True)
class Collected:
    """The one answer that holds a secret: the key, to the requester, once."""

    request: BreakGlassRequest
    credentials: SessionKey
    scope: Scope
    endpoint: str
    region: str
    mode: Mode = Mode.BREAK_GLASS


@dataclass(frozen=True, slots=True)
class Closed:
    request: BreakGlassRequest
    # What the rotation of the service key said, when the escrowed key was used (else None).
    rotation: str | None


@dataclass(frozen=True, slots=True)
class ShareAccepted:
    request: BreakGlassRequest
    index: int
    submitted: int
    threshold: int


class BreakGlass:
    def __init__(
        self,
        *,
        store: BreakGlassStore,
        spaces: Mapping[str, SpaceTarget],
        flavor: Flavor,
        issuer: Issuer,
        credentials: ParentKeySource,
        audit: AuditSink,
        notifier: Notifier,
        metrics: BreakGlassMetrics,
        rules: BreakGlassRules = BreakGlassRules(),
        fallback: ReadOnlyKeys | None = None,
        escrow: Escrow | None = None,
        rotate_service_key: Callable[[], Awaitable[str]] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self._spaces = spaces
        self._flavor = flavor
        self._issuer = issuer
        self._credentials = credentials
        self._audit = audit
        self._notifier = notifier
        self._metrics = metrics
        self.rules = rules
        self._fallback = fallback
        self._escrow = escrow
        self._rotate_service_key = rotate_service_key
        self._clock = clock
        # Custodians' shares per request, in this process's memory only, never stored.
        self._shares: dict[str, dict[int, str]] = {}

    # --- the steps ------------------------------------------------------------------------

    async def request(
        self,
        client: Client,
        *,
        space: str,
        access: Access,
        ttl_seconds: int,
        reason: str,
        prefix: str | None = None,
        source: str | None = None,
    ) -> BreakGlassRequest:
        """A new open request by an operator."""
        now = self._clock()
        draft = BreakGlassRequest(
            id="bg-" + secrets.token_hex(8),
            requester=client.id,
            space=space,
            access=access,
            prefix=prefix or "",
            ttl_seconds=ttl_seconds,
            reason=reason,
            created_at=now,
            approve_by=now + timedelta(seconds=self.rules.approve_window_seconds),
        )
        async with self._step("request", client, draft, source):
            _require(client, Role.OPERATOR)
            self._scope(draft)  # the space, prefix and policy are checked now, not at collect
            if not STS_MIN_TTL <= ttl_seconds <= self.rules.ttl_cap_seconds:
                raise InvalidRequest(
                    f"ttl must be {STS_MIN_TTL}..{self.rules.ttl_cap_seconds} seconds "
                    "(break_glass.ttl_cap_seconds)",
                    code="invalid_ttl",
                )
            if (
                not reason.strip()
                or len(reason) > MAX_REASON_CHARS
                or not is_printable_text(reason)
            ):
                raise InvalidRequest(
                    f"reason is required: printable text, at most {MAX_REASON_CHARS} characters",
                    code="invalid_reason",
                )
            await self._store.create_request(draft)
        return draft

    async def approve(
        self, client: Client, request_id: str, *, source: str | None = None
    ) -> BreakGlassRequest:
        """One approval by an approver who is not the requester; the threshold approves it."""
        request = await self._current(request_id)
        async with self._step("approve", client, request, source) as step:
            _require(client, Role.APPROVER)
            if client.id == request.requester:
                raise NotAllowed(
                    "the requester cannot approve their own request", code="self_approval"
                )
            _expect(request, Status.OPEN)
            if client.id in request.approvals:
                raise BreakGlassConflict(
                    f"{client.id} already approved {request.id}", code="already_approved"
                )
            approvals = (*request.approvals, client.id)
            changed = replace(request, approvals=approvals)
            if len(approvals) >= self.rules.approvals_required:
                now = self._clock()
                changed = replace(
                    changed,
                    status=Status.APPROVED,
                    approved_at=now,
                    collect_by=now + timedelta(seconds=self.rules.collect_window_seconds),
                )
            request = step.request = await self._store.save_request(changed)
        return request

    async def deny(
        self, client: Client, request_id: str, *, source: str | None = None
    ) -> BreakGlassRequest:
        """An approver (not the requester) denies it; the requester may withdraw it."""
        request = await self._current(request_id)
        async with self._step("deny", client, request, source) as step:
            if client.id != request.requester:
                _require(client, Role.APPROVER)
            _expect(request, Status.OPEN, Status.APPROVED)
            denied = replace(request, status=Status.DENIED, denied_by=client.id)
            request = step.request = await self._store.save_request(denied)
            self._shares.pop(request.id, None)
        return request

    async def submit_share(
        self, client: Client, request_id: str, share: str, *, source: str | None = None
    ) -> ShareAccepted:
        """One custodian's escrow share for an approved write request, kept in memory until the
        key is collected or the request ends."""
        request = await self._current(request_id)
        async with self._step("share", client, request, source) as step:
            if not (client.has_role(Role.OPERATOR) or client.has_role(Role.APPROVER)):
                raise NotAllowed(
                    f"client {client.id} is neither an operator nor an approver",
                    code="role_required",
                )
            _expect(request, Status.APPROVED)
            if request.access is not Access.WRITE:
                raise InvalidRequest(
                    "reads need no shares: while the vault is down they use the read-only key",
                    code="shares_not_needed",
                )
            escrow = self._need_escrow()
            index = escrow.share_index(share)
            step.extra["custodian"] = index
            held = self._shares.setdefault(request.id, {})
            if index in held:
                raise BreakGlassConflict(
                    f"share {index} was already submitted for {request.id}",
                    code="share_already_submitted",
                )
            held[index] = share
            step.extra["shares_submitted"] = len(held)
            accepted = ShareAccepted(request, index, len(held), escrow.threshold)
        return accepted

    async def collect(
        self, client: Client, request_id: str, *, source: str | None = None
    ) -> Collected:
        """The key, to the requester, once, within the collect window."""
        request = await self._current(request_id)
        async with self._step("collect", client, request, source) as step:
            if client.id != request.requester:
                raise NotAllowed("only the requester collects the key", code="not_requester")
            _expect(request, Status.APPROVED)
            scope, policy = self._scope(request)
            credentials, used_escrow = await self._issue(request, scope, policy)
            step.extra["access_key_id"] = credentials.access_key_id
            step.extra["used_escrow"] = used_escrow
            collected = replace(
                request,
                status=Status.COLLECTED,
                collected_at=self._clock(),
                key_id=credentials.access_key_id,
                key_expires_at=credentials.expiration,
                used_escrow=used_escrow,
            )
            # Over the revision read above: of two collects at once, one wins; the other's key
            # (named in its audit record) is never handed out.
            request = step.request = await self._store.save_request(collected)
            self._shares.pop(request.id, None)
        return Collected(
            request=request,
            credentials=credentials,
            scope=scope,
            endpoint=self._issuer.public_endpoint,
            region=self._issuer.region,
        )

    async def close(
        self, client: Client, request_id: str, *, outcome: str, source: str | None = None
    ) -> Closed:
        """The after-action record; if the escrowed service key signed the key, the service
        key is rotated now (it left the vault's custody)."""
        request = await self._current(request_id)
        rotation: str | None = None
        async with self._step("close", client, request, source) as step:
            if client.id != request.requester:
                _require(client, Role.APPROVER)
            if request.status is Status.CLOSED:
                raise BreakGlassConflict(f"{request.id} is already closed", code="already_closed")
            if not outcome.strip() or len(outcome) > 1024 or not is_printable_text(outcome):
                raise InvalidRequest(
                    "outcome is required: printable text, at most 1024 characters",
                    code="invalid_outcome",
                )
            closed = replace(
                request,
                status=Status.CLOSED,
                closed_at=self._clock(),
                closed_by=client.id,
                outcome=outcome,
            )
            request = step.request = await self._store.save_request(closed)
            self._shares.pop(request.id, None)
            if request.used_escrow:
                rotation = await self._rotate_after_escrow()
                step.extra["rotation"] = rotation
        return Closed(request, rotation)

    async def get(self, client: Client, request_id: str) -> BreakGlassRequest:
        _require_any(client)
        return await self._current(request_id)

    async def list(self, client: Client) -> list[BreakGlassRequest]:
        _require_any(client)
        return [await self._expired_if_due(r) for r in await self._store.list_requests()]

    def shares_submitted(self, request_id: str) -> int:
        return len(self._shares.get(request_id, {}))

    # --- helpers --------------------------------------------------------------------------

    async def _current(self, request_id: str) -> BreakGlassRequest:
        request = await self._store.load_request(request_id)
        if request is None:
            raise NotFound(f"no break-glass request {request_id!r}")
        return await self._expired_if_due(request)

    async def _expired_if_due(self, request: BreakGlassRequest) -> BreakGlassRequest:
        now = self._clock()
        due = (request.status is Status.OPEN and now > request.approve_by) or (
            request.status is Status.APPROVED
            and request.collect_by is not None
            and now > request.collect_by
        )
        if not due:
            return request
        self._shares.pop(request.id, None)
        try:
            expired = await self._store.save_request(replace(request, status=Status.EXPIRED))
        except BreakGlassConflict:  # someone else changed it meanwhile: read it again
            again = await self._store.load_request(request.id)
            return again if again is not None else request
        await self._announce("expire", None, expired, None, "ok", {})
        return expired

    def _scope(self, request: BreakGlassRequest) -> tuple[Scope, str]:
        target = self._spaces.get(validate_space_key(request.space))
        if target is None:
            raise InvalidRequest(f"no space {request.space!r} is configured", code="unknown_space")
        scope = Scope(
            bucket=target.bucket,
            prefix=narrow_prefix(target.prefix, request.prefix or None),
            access=request.access,
        )
        policy = render_policy(session_policy(scope, flavor=self._flavor), flavor=self._flavor)
        return scope, policy

    def _need_escrow(self) -> Escrow:
        if self._escrow is None:
            raise EscrowSealed(
                "no escrow is configured (break_glass.escrow_file, credbroker escrow init)"
            )
        return self._escrow

    async def _issue(
        self, request: BreakGlassRequest, scope: Scope, policy: str
    ) -> tuple[SessionKey, bool]:
        role_arn: str | None = None
        used_escrow = False
        try:
            parent: AccessKey = await self._credentials.current()
        except SecretStoreUnavailable:
            if request.access is Access.READ and self._fallback is not None:
                parent, role_arn = self._fallback.credentials(), self._fallback.role_arn
            elif request.access is Access.READ:
                raise
            else:
                parent, used_escrow = await self._open_escrow(request), True
        asked_at = self._clock()
        try:
            credentials = await self._issuer.assume_role(
                parent,
                policy=policy,
                duration_seconds=request.ttl_seconds,
                session_name=request.id,
                role_arn=role_arn,
            )
        finally:
            del parent  # the escrowed key lived for this one call
        over = (
            credentials.expiration - asked_at - timedelta(seconds=request.ttl_seconds)
        ).total_seconds()
        if over > self.rules.clock_skew_seconds:
            raise KeyOutlivesRequest(
                f"the object store issued key {credentials.access_key_id} valid until "
                f"{utc_text(credentials.expiration)}, {int(over)} s longer than asked; not "
                "handed out"
            )
        return credentials, used_escrow

    async def _open_escrow(self, request: BreakGlassRequest) -> AccessKey:
        escrow = self._need_escrow()
        held = self._shares.get(request.id, {})
        if len(held) < escrow.threshold:
            raise EscrowSealed(
                f"the vault is unreachable: a write needs the escrowed service key, opened by "
                f"{escrow.threshold} custodians' shares ({len(held)} submitted so far: "
                f"credbroker break-glass unseal {request.id})"
            )
        return await asyncio.to_thread(escrow.open, list(held.values()))

    async def _rotate_after_escrow(self) -> str:
        if self._rotate_service_key is None:
            log.warning(
                "break-glass: the escrowed service key was used and no rotation of it is "
                "configured: rotate it by hand (runbooks/06-rotation.md)"
            )
            return "not_configured"
        try:
            return await self._rotate_service_key()
        except CredbrokerError as exc:  # recorded; the scheduler or the operator retries
            return f"failed: {exc.code}"

    def _step(
        self, step: str, client: Client, request: BreakGlassRequest, source: str | None
    ) -> _Step:
        return _Step(self, step, client, request, source)

    async def _announce(
        self,
        step: str,
        client: Client | None,
        request: BreakGlassRequest,
        source: str | None,
        outcome: str,
        extra: Mapping[str, Any],
    ) -> None:
        """The audit record, the WARNING line, the metric and the notification of one step."""
        actor = client.id if client is not None else "credbroker"
        event: dict[str, Any] = {
            "ts": self._clock().isoformat(),
            "event": "break_glass",
            "step": step,
            "outcome": outcome,
            "request_id": request.id,
            "client": actor,
            "requester": request.requester,
            "space": request.space,
            "access": request.access.value,
            "prefix": request.prefix,
            "ttl_seconds": request.ttl_seconds,
            "reason": request.reason,
            "status": request.status.value,
            "approvals": list(request.approvals),
            "key_expires": utc_text(request.key_expires_at),
            "mode": Mode.BREAK_GLASS.value,
            **extra,
        }
        if source is not None:
            event["source"] = source
        log.warning(
            "break-glass %s (%s): request %s by %s: %s %s in %s, status %s, by %s from %s",
            step,
            outcome,
            request.id,
            request.requester,
            request.access.value,
            request.prefix or "(whole space)",
            request.space,
            request.status.value,
            actor,
            source or "-",
        )
        self._metrics.count_break_glass(step, outcome)
        await self._audit.record(event)
        self._notifier.notify(event)


class _Step:
    """`async with` one step: on the way out it is announced (ok, or the refusal's code), and a
    refusal is marked audited (the web layer writes no second record)."""

    def __init__(
        self,
        owner: BreakGlass,
        name: str,
        client: Client,
        request: BreakGlassRequest,
        source: str | None,
    ) -> None:
        self.owner, self.name, self.client, self.source = owner, name, client, source
        self.request = request
        self.extra: dict[str, Any] = {}

    async def __aenter__(self) -> _Step:
        return self

    async def __aexit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is not None and not isinstance(exc, CredbrokerError):
            return  # not a decision (a bug, a cancellation): nothing to announce
        outcome = "ok" if exc is None else exc.code
        await self.owner._announce(
            self.name, self.client, self.request, self.source, outcome, self.extra
        )
        if isinstance(exc, CredbrokerError):
            exc.audited = True


def _require(client: Client, role: Role) -> None:
    if not client.has_role(role):
        raise NotAllowed(f"client {client.id} lacks the {role.value} role", code="role_required")


def _require_any(client: Client) -> None:
    if not (client.has_role(Role.OPERATOR) or client.has_role(Role.APPROVER) or client.admin):
        raise NotAllowed(
            f"client {client.id} is neither an operator, an approver nor an admin",
            code="role_required",
        )


def _expect(request: BreakGlassRequest, *allowed: BreakGlassStatus) -> None:
    if request.status in allowed:
        return
    codes = {
        Status.COLLECTED: "already_collected",
        Status.EXPIRED: "request_expired",
        Status.DENIED: "request_denied",
        Status.CLOSED: "already_closed",
        Status.OPEN: "not_approved",
        Status.APPROVED: "already_approved",
    }
    raise BreakGlassConflict(
        f"{request.id} is {request.status.value}: not possible now",
        code=codes.get(request.status, BreakGlassConflict.code),
    )
