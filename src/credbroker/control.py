"""The live control plane: principals, their tokens and freezes, managed while every replica
runs, the same on all of them.

The truth is the state store (ports.PrincipalStore: SQLite on one host, PostgreSQL for several
replicas). Each broker keeps an in-memory Snapshot of it, which authentication, the freeze
check and the rate limiter read: the vend path never waits for the database. The snapshot is
reloaded when the store's generation number changes, which `run` notices

- at once on PostgreSQL (LISTEN/NOTIFY: the change's transaction notifies on commit), and
- by polling the generation every `poll_seconds` (default 1 s) on both, the safety net for a
  lost notification and the only way on SQLite.

So a change made through any replica (or the CLI) holds on every replica within poll_seconds
plus one reload (README "Principals and freeze" states the bound: 2 s). While the store does
not answer, a replica keeps its last snapshot (a failure is logged and counted, and /readyz
shows its age) rather than refuse every caller.

Principals in the YAML config are a read-only seed: shown with source "config", never changed
here (PrincipalConflict `config_principal`: edit the file). Every change is audited: who
(`actor`), what; never a token or its hash.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from credbroker.domain import (
    MAX_ACTIVE_TOKENS,
    MAX_TTL,
    STS_MIN_TTL,
    Access,
    Client,
    ControlState,
    Freeze,
    Principal,
    PrincipalSource,
    Role,
    TokenRecord,
    utc_text,
)
from credbroker.errors import (
    CredbrokerError,
    InvalidRequest,
    NotFound,
    PrincipalConflict,
)
from credbroker.policy import is_printable_text, validate_space_key
from credbroker.ports import AuditSink, ControlMetrics, PrincipalStore

log = logging.getLogger("credbroker.control")

PRINCIPAL_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
OBJECT_ID = re.compile(r"(tok|frz)_[0-9a-f]{16}")
MAX_REASON = 500
# A token may be given an expiry up to this far ahead (longer: leave it without one).
MAX_TOKEN_LIFETIME = timedelta(days=400)
MAX_RATE = 1_000_000.0


@dataclass(frozen=True, slots=True)
class Credential:
    """One usable way in: a token hash, whose principal it names, and until when."""

    digest: bytes = field(repr=False)
    client: Client
    expires_at: datetime | None


@dataclass(frozen=True, slots=True)
class Snapshot:
    generation: int
    credentials: tuple[Credential, ...]
    principals: Mapping[str, Principal]  # active ones (config seed and store)
    freezes: tuple[Freeze, ...]
    loaded_at: float  # monotonic
    # credentials[i].digest, as a plain tuple: the per-request loop compares every one of them
    digests: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True)
class Seed:
    """A principal from the config file, with its token hash."""

    principal: Principal
    token_sha256: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class ClientChanges:
    """What `set` changes; None leaves a field as it is."""

    spaces: frozenset[str] | None = None
    max_access: Access | None = None
    max_ttl_seconds: int | None = None
    roles: frozenset[Role] | None = None
    rate_per_second: float | None = None
    burst: int | None = None


@dataclass(frozen=True, slots=True)
class PrincipalView:
    """A principal and its tokens (ids, hash hints and times only), for list and show."""

    principal: Principal
    tokens: tuple[TokenRecord, ...]

    def as_dict(self, now: datetime) -> dict[str, Any]:
        p, c = self.principal, self.principal.client
        return {
            "id": c.id,
            "source": p.source.value,
            "roles": sorted(r.value for r in c.roles),
            "spaces": sorted(c.spaces),
            "maxAccess": c.max_access.value,
            "maxTtlSeconds": c.max_ttl_seconds,
            "ratePerSecond": p.rate_per_second,
            "burst": p.burst,
            "createdAt": utc_text(p.created_at),
            "updatedAt": utc_text(p.updated_at),
            "revokedAt": utc_text(p.revoked_at),
            "createdBy": p.created_by,
            "tokens": [
                {
                    "id": t.id,
                    "hashPrefix": t.hash_hint,
                    "createdAt": utc_text(t.created_at),
                    "expiresAt": utc_text(t.expires_at),
                    "revokedAt": utc_text(t.revoked_at),
                    "usable": t.usable(now),
                }
                for t in self.tokens
            ],
        }


def freeze_dict(freeze: Freeze) -> dict[str, Any]:
    return {
        "id": freeze.id,
        "space": freeze.space,
        "client": freeze.client_id,
        "reason": freeze.reason,
        "createdAt": utc_text(freeze.created_at),
        "createdBy": freeze.created_by,
        "liftedAt": utc_text(freeze.lifted_at),
        "liftedBy": freeze.lifted_by,
    }


class ControlPlane:
    """ports.FreezeCheck, the snapshot behind authentication and rate limits, and the use
    cases that change principals, tokens and freezes."""

    def __init__(
        self,
        store: PrincipalStore,
        *,
        seed: Iterable[Seed],
        spaces: Iterable[str],
        audit: AuditSink,
        mint: Callable[[], tuple[str, str]],
        metrics: ControlMetrics | None = None,
        poll_seconds: float = 1.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._seed = {s.principal.id: s for s in seed}
        self._spaces = frozenset(spaces)
        self._audit = audit
        self._mint = mint
        self._metrics = metrics
        self.poll_seconds = poll_seconds
        self._clock = clock
        self._monotonic = monotonic
        self._snapshot = self._build(ControlState(-1, (), (), ()))
        self._poked = asyncio.Event()
        self._loading = asyncio.Lock()

    # --- the snapshot ---------------------------------------------------------------------

    @property
    def snapshot(self) -> Snapshot:
        return self._snapshot

    def age_seconds(self) -> float:
        return self._monotonic() - self._snapshot.loaded_at

    def frozen(self, client_id: str, space: str) -> Freeze | None:
        for freeze in self._snapshot.freezes:
            if freeze.matches(client_id, space):
                return freeze
        return None

    def global_freeze(self) -> Freeze | None:
        return next((f for f in self._snapshot.freezes if f.is_global), None)

    def rate_of(self, client_id: str) -> tuple[float | None, int | None]:
        principal = self._snapshot.principals.get(client_id)
        if principal is None:
            return None, None
        return principal.rate_per_second, principal.burst

    async def refresh(self, *, force: bool = False) -> bool:
        """Reload if the store's generation moved (or `force`); True if it reloaded."""
        async with self._loading:
            if not force and await self._store.generation() == self._snapshot.generation:
                self._snapshot = replace(self._snapshot, loaded_at=self._monotonic())
                return False
            self._snapshot = self._build(await self._store.control_state())
        if self._metrics is not None:
            self._metrics.control_refreshed(self._snapshot.generation, len(self._snapshot.freezes))
        return True

    def poke(self) -> None:
        """Something may have changed (a notification): refresh now rather than at the poll."""
        self._poked.set()

    async def run(self) -> None:
        """Keep the snapshot current until cancelled (the server's background task)."""
        while True:
            with contextlib.suppress(CredbrokerError):
                await self._store.watch(self.poke)  # (again, if its connection was lost)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poked.wait(), self.poll_seconds)
            self._poked.clear()
            try:
                await self.refresh()
            except CredbrokerError as exc:
                log.warning("control plane refresh failed, keeping the last snapshot: %s", exc)
                if self._metrics is not None:
                    self._metrics.count_control_refresh_failure()

    def _build(self, state: ControlState) -> Snapshot:
        principals: dict[str, Principal] = {}
        credentials: list[Credential] = []
        for seed in self._seed.values():
            principals[seed.principal.id] = seed.principal
            credentials.append(
                Credential(bytes.fromhex(seed.token_sha256), seed.principal.client, None)
            )
        for p in state.principals:
            if not p.active:
                continue
            if p.id in self._seed:
                log.warning("principal %s is in the config file and the store: config wins", p.id)
                continue
            principals[p.id] = p
        for token in state.tokens:
            owner = principals.get(token.client_id)
            if owner is None or owner.source is not PrincipalSource.STORE:
                continue
            credentials.append(
                Credential(bytes.fromhex(token.sha256), owner.client, token.expires_at)
            )
        return Snapshot(
            generation=state.generation,
            credentials=tuple(credentials),
            principals=principals,
            freezes=tuple(f for f in state.freezes if f.active),
            loaded_at=self._monotonic(),
            digests=tuple(c.digest for c in credentials),
        )

    # --- principals -----------------------------------------------------------------------

    async def clients(self) -> list[PrincipalView]:
        """Config seeds and store principals (revoked ones too), by id."""
        views = [PrincipalView(s.principal, ()) for s in self._seed.values()]
        for p in await self._store.principals():
            if p.id not in self._seed:
                views.append(PrincipalView(p, tuple(await self._store.tokens(p.id))))
        return sorted(views, key=lambda v: v.principal.id)

    async def client(self, client_id: str) -> PrincipalView:
        _check_id(client_id)
        if client_id in self._seed:
            return PrincipalView(self._seed[client_id].principal, ())
        principal = await self._store.principal(client_id)
        if principal is None:
            raise NotFound(f"no principal {client_id}")
        return PrincipalView(principal, tuple(await self._store.tokens(client_id)))

    async def add_client(
        self,
        actor: str,
        client_id: str,
        *,
        spaces: Iterable[str],
        max_access: Access = Access.READ,
        max_ttl_seconds: int = 3600,
        roles: Iterable[Role] = (Role.RULE,),
        rate_per_second: float | None = None,
        burst: int | None = None,
    ) -> Principal:
        _check_id(client_id)
        self._writable(client_id)
        now = self._clock()
        principal = Principal(
            client=Client(
                id=client_id,
                spaces=self._check_spaces(spaces),
                max_access=max_access,
                max_ttl_seconds=_check_ttl(max_ttl_seconds),
                roles=_check_roles(roles),
            ),
            rate_per_second=_check_rate(rate_per_second),
            burst=_check_burst(burst),
            created_at=now,
            updated_at=now,
            created_by=actor,
        )
        await self._store.add_principal(principal)
        await self._changed("client_added", actor, client=client_id, **_limits(principal))
        return principal

    async def set_client(self, actor: str, client_id: str, changes: ClientChanges) -> Principal:
        _check_id(client_id)
        self._writable(client_id)
        current = await self._store.principal(client_id)
        if current is None or not current.active:
            raise NotFound(f"no active principal {client_id}")
        c = current.client
        updated = replace(
            current,
            client=Client(
                id=c.id,
                spaces=c.spaces if changes.spaces is None else self._check_spaces(changes.spaces),
                max_access=changes.max_access or c.max_access,
                max_ttl_seconds=c.max_ttl_seconds
                if changes.max_ttl_seconds is None
                else _check_ttl(changes.max_ttl_seconds),
                roles=c.roles if changes.roles is None else _check_roles(changes.roles),
            ),
            rate_per_second=current.rate_per_second
            if changes.rate_per_second is None
            else _check_rate(changes.rate_per_second),
            burst=current.burst if changes.burst is None else _check_burst(changes.burst),
            updated_at=self._clock(),
        )
        await self._store.update_principal(updated)
        await self._changed("client_changed", actor, client=client_id, **_limits(updated))
        return updated

    async def revoke_client(self, actor: str, client_id: str) -> None:
        _check_id(client_id)
        self._writable(client_id)
        await self._store.revoke_principal(client_id, self._clock())
        await self._changed("client_revoked", actor, client=client_id)

    # --- tokens ---------------------------------------------------------------------------

    async def issue_token(
        self, actor: str, client_id: str, *, expires_at: datetime | None = None
    ) -> tuple[str, TokenRecord]:
        """A new token (returned once, never stored) and its record."""
        _check_id(client_id)
        self._writable(client_id)
        now = self._clock()
        if expires_at is not None:
            if expires_at.tzinfo is None:
                raise InvalidRequest("expiry needs a time zone", code="invalid_expiry")
            if not now < expires_at <= now + MAX_TOKEN_LIFETIME:
                raise InvalidRequest(
                    "a token's expiry must be in the future, at most 400 days ahead",
                    code="invalid_expiry",
                )
        token, digest = self._mint()
        record = TokenRecord(
            id=new_id("tok"),
            client_id=client_id,
            sha256=digest,
            created_at=now,
            expires_at=expires_at,
            created_by=actor,
        )
        await self._store.add_token(record, max_active=MAX_ACTIVE_TOKENS, now=now)
        await self._changed(
            "token_issued",
            actor,
            client=client_id,
            token_id=record.id,
            expires=expires_at.isoformat() if expires_at else None,
        )
        return token, record

    async def revoke_token(self, actor: str, client_id: str, token_id: str) -> TokenRecord:
        _check_id(client_id)
        _check_object_id(token_id, "tok")
        self._writable(client_id)
        record = await self._store.revoke_token(client_id, token_id, self._clock())
        await self._changed("token_revoked", actor, client=client_id, token_id=token_id)
        return record

    # --- freezes --------------------------------------------------------------------------

    async def freezes(self, *, active_only: bool = True) -> list[Freeze]:
        return await self._store.freezes(active_only=active_only)

    async def freeze(
        self, actor: str, *, reason: str, space: str | None = None, client_id: str | None = None
    ) -> Freeze:
        reason = _check_reason(reason)
        if space is not None:
            self._check_spaces([space])
        if client_id is not None:
            _check_id(client_id)
            if client_id not in self._seed and await self._store.principal(client_id) is None:
                raise NotFound(f"no principal {client_id}")
        freeze = Freeze(
            id=new_id("frz"),
            reason=reason,
            created_at=self._clock(),
            space=space,
            client_id=client_id,
            created_by=actor,
        )
        await self._store.add_freeze(freeze)
        await self._changed(
            "freeze_set", actor, freeze_id=freeze.id, space=space, client=client_id, reason=reason
        )
        return freeze

    async def unfreeze(
        self,
        actor: str,
        *,
        freeze_id: str | None = None,
        space: str | None = None,
        client_id: str | None = None,
    ) -> list[Freeze]:
        """Lift one freeze by id, or every active freeze with exactly this selector (no space
        and no client: the global freezes)."""
        if freeze_id is not None:
            if space is not None or client_id is not None:
                raise InvalidRequest(
                    "unfreeze by id, or by space and client: not both", code="invalid_selector"
                )
            _check_object_id(freeze_id, "frz")
            ids = [freeze_id]
        else:
            if space is not None:
                validate_space_key(space)
            if client_id is not None:
                _check_id(client_id)
            ids = [
                f.id
                for f in await self._store.freezes(active_only=True)
                if f.space == space and f.client_id == client_id
            ]
            if not ids:
                raise NotFound("no active freeze with that selector")
        lifted = []
        for one in ids:
            freeze = await self._store.lift_freeze(one, self._clock(), actor)
            lifted.append(freeze)
            await self._changed(
                "freeze_lifted",
                actor,
                freeze_id=one,
                space=freeze.space,
                client=freeze.client_id,
                reason=freeze.reason,
            )
        return lifted

    # --- helpers --------------------------------------------------------------------------

    def _writable(self, client_id: str) -> None:
        if client_id in self._seed:
            raise PrincipalConflict(
                f"principal {client_id} is defined in the config file (read-only here): edit "
                "the file and restart, or remove it there and manage it in the store",
                code="config_principal",
            )

    def _check_spaces(self, spaces: Iterable[str]) -> frozenset[str]:
        checked = frozenset(validate_space_key(s) for s in spaces)
        if not checked:
            raise InvalidRequest("give at least one space", code="invalid_space")
        unknown = sorted(checked - self._spaces)
        if unknown:
            raise InvalidRequest(
                f"unknown space {', '.join(unknown)}: spaces are defined in the config",
                code="unknown_space",
            )
        return checked

    async def _changed(self, event: str, actor: str, **what: Any) -> None:
        """Audit the change, then make it visible here at once (others follow by themselves)."""
        await self._audit.record(
            {"ts": self._clock().isoformat(), "event": event, "actor": actor, **what}
        )
        try:
            await self.refresh(force=True)
        except CredbrokerError as exc:  # the change is stored; the poll picks it up
            log.warning("refresh after %s failed: %s", event, exc)


def new_id(kind: str) -> str:
    return f"{kind}_{secrets.token_hex(8)}"


def _limits(p: Principal) -> dict[str, Any]:
    c = p.client
    return {
        "roles": sorted(r.value for r in c.roles),
        "spaces": sorted(c.spaces),
        "max_access": c.max_access.value,
        "max_ttl_seconds": c.max_ttl_seconds,
        "rate_per_second": p.rate_per_second,
        "burst": p.burst,
    }


def _check_id(client_id: str) -> str:
    if not isinstance(client_id, str) or not PRINCIPAL_ID.fullmatch(client_id):
        raise InvalidRequest(
            "a principal id is 1-64 letters, digits, '.', '_' or '-'", code="invalid_client_id"
        )
    return client_id


def _check_object_id(value: str, kind: str) -> str:
    if not isinstance(value, str) or not OBJECT_ID.fullmatch(value) or not value.startswith(kind):
        raise InvalidRequest(f"not a valid {kind}_ id", code="invalid_id")
    return value


def _check_ttl(seconds: int) -> int:
    if isinstance(seconds, bool) or not isinstance(seconds, int):
        raise InvalidRequest("max_ttl_seconds must be an integer", code="invalid_ttl")
    if not STS_MIN_TTL <= seconds <= MAX_TTL:
        raise InvalidRequest(
            f"max_ttl_seconds must be between {STS_MIN_TTL} and {MAX_TTL}", code="invalid_ttl"
        )
    return seconds


def _check_roles(roles: Iterable[Role]) -> frozenset[Role]:
    checked = frozenset(Role(r) for r in roles)
    if not checked:
        raise InvalidRequest("give at least one role", code="invalid_role")
    return checked


def _check_rate(rate: float | None) -> float | None:
    if rate is None:
        return None
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 < rate <= MAX_RATE:
        raise InvalidRequest("rate_per_second must be > 0 and at most 1e6", code="invalid_rate")
    return float(rate)


def _check_burst(burst: int | None) -> int | None:
    if burst is None:
        return None
    if isinstance(burst, bool) or not isinstance(burst, int) or not 1 <= burst <= MAX_RATE:
        raise InvalidRequest("burst must be an integer from 1 to 1e6", code="invalid_rate")
    return burst


def _check_reason(reason: str) -> str:
    if not isinstance(reason, str):
        raise InvalidRequest("a reason is required", code="invalid_reason")
    reason = reason.strip()
    if not 1 <= len(reason) <= MAX_REASON or not is_printable_text(reason):
        raise InvalidRequest(
            f"a reason is 1-{MAX_REASON} printable characters", code="invalid_reason"
        )
    return reason
