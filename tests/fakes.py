"""In-memory fakes of the ports the centre uses: one per port, shared by every test.

A fake behaves like the real adapter as far as the centre can tell, keeps what it was asked for
the tests to read, and can be told to fail. HTTP doubles of outside servers (Vault, MinIO) are
a different thing and live in tests/doubles/.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from credbroker.domain import AccessKey, SecretVersion, SessionKey
from credbroker.errors import (
    CasMismatch,
    ObjectStoreRejected,
    SecretNotFound,
    SecretStoreUnavailable,
)

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


class SimulatedKill(BaseException):
    """Like SIGKILL: no `except Exception` handler of the use case sees it."""


# --- clocks -----------------------------------------------------------------------------------


class Clock:
    """Wall-clock time that moves only when told to (`advance`, or an injected `sleep`)."""

    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    async def sleep(self, seconds: float) -> None:
        self.advance(seconds)


class MonotonicClock:
    """A time.monotonic() that moves only when told to."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# --- audit ------------------------------------------------------------------------------------


class FakeAudit:
    """An AuditSink that keeps every event, copied as recorded."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.closed = False

    async def record(self, event: Mapping[str, Any]) -> None:
        self.events.append(dict(event))

    async def close(self) -> None:
        self.closed = True

    def named(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("event") == event]


# --- metrics ----------------------------------------------------------------------------------


class FakeMetrics:
    """BrokerMetrics that counts in plain attributes."""

    def __init__(self) -> None:
        self.parent_key_refreshes = 0
        self.degraded: list[bool] = []  # every set_degraded, in order
        self.frozen: list[str] = []  # every count_frozen's action, in order

    def count_parent_key_refresh(self) -> None:
        self.parent_key_refreshes += 1

    def set_degraded(self, degraded: bool) -> None:
        self.degraded.append(degraded)

    def count_frozen(self, action: str) -> None:
        self.frozen.append(action)


# --- object store (STS issuer) ----------------------------------------------------------------


@dataclass(frozen=True)
class AssumeRoleCall:
    parent: AccessKey
    policy: str
    duration_seconds: int
    session_name: str
    role_arn: str | None


@dataclass(frozen=True)
class PresignCall:
    credentials: SessionKey
    bucket: str
    key: str
    method: str
    expires_in: int


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class FakeIssuer:
    """An Issuer that mints a fresh key per call, valid for the duration asked from `clock`.

    Told otherwise, it rejects (`failures`: one exception per call, in order; `reject`: every
    call), or stamps another lifetime (`lifetime_seconds`, whatever was asked), as MinIO does
    with MINIO_STS_DURATION set.
    """

    clock: Callable[[], datetime] = _utcnow
    endpoint: str = "http://s3.test"
    public_endpoint: str = "http://s3.test"
    region: str = "us-east-1"
    reject: bool = False  # every call: AccessDenied
    failures: list[Exception] = field(default_factory=list)
    lifetime_seconds: float | None = None
    calls: list[AssumeRoleCall] = field(default_factory=list)
    presigns: list[PresignCall] = field(default_factory=list)
    minted: list[SessionKey] = field(default_factory=list)

    @property
    def signers(self) -> list[tuple[str, str | None]]:
        """(parent key id, role) of every call, in order."""
        return [(c.parent.access_key_id, c.role_arn) for c in self.calls]

    async def assume_role(
        self,
        parent: AccessKey,
        *,
        policy: str,
        duration_seconds: int,
        session_name: str,
        role_arn: str | None = None,
    ) -> SessionKey:
        self.calls.append(AssumeRoleCall(parent, policy, duration_seconds, session_name, role_arn))
        if self.failures:
            raise self.failures.pop(0)
        if self.reject:
            raise ObjectStoreRejected("refused", aws_code="AccessDenied")
        n = len(self.minted) + 1
        lifetime = duration_seconds if self.lifetime_seconds is None else self.lifetime_seconds
        key = SessionKey(
            access_key_id=f"ASIATEMP{n:04d}",
            secret_access_key=f"temp-secret-{n:04d}",
            session_token=f"temp-token-{n:04d}",
            expiration=self.clock() + timedelta(seconds=lifetime),
        )
        self.minted.append(key)
        return key

    def presign(
        self,
        credentials: SessionKey,
        *,
        bucket: str,
        key: str,
        method: str,
        expires_in: int,
    ) -> str:
        self.presigns.append(PresignCall(credentials, bucket, key, method, expires_in))
        return (
            f"{self.public_endpoint}/{bucket}/{key}?X-Amz-Expires={expires_in}"
            f"&X-Amz-Credential={credentials.access_key_id}"
        )

    async def check(self) -> None: ...

    async def close(self) -> None: ...


# --- read-only fallback -----------------------------------------------------------------------

READ_ROLE = "arn:aws:iam:::role/credbroker-read"
READ_ONLY_KEY = AccessKey("AKREADONLY", "ro-secret", 1)


@dataclass
class FakeFallback:
    """ReadOnlyKeys: the read-only parent key with its own role, or too old to use."""

    role_arn: str | None = READ_ROLE
    stale: bool = False

    def credentials(self) -> AccessKey:
        if self.stale:
            raise SecretStoreUnavailable("the read-only fallback key is too old")
        return READ_ONLY_KEY


# --- secret stores ----------------------------------------------------------------------------

DOWN = SecretStoreUnavailable("vault read of 'p': cannot connect")


class ScriptedStore:
    """A SecretStore that answers from a script, for unit tests of what wraps it.

    Each call pops the next outcome: an exception is raised, anything else returned. When the
    script runs out, reads return SecretVersion({"k": "v"}, 1).
    """

    kind = "scripted"
    writable = True

    def __init__(self, *outcomes: object) -> None:
        self.outcomes = list(outcomes)
        self.calls: list[str] = []
        self.closed = False

    def _next(self, action: str) -> Any:
        self.calls.append(action)
        outcome = self.outcomes.pop(0) if self.outcomes else SecretVersion({"k": "v"}, 1)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    async def read(self, path: str) -> SecretVersion:
        result: SecretVersion = self._next("read")
        return result

    async def read_version(self, path: str, version: int) -> SecretVersion:
        result: SecretVersion = self._next("read_version")
        return result

    async def write(self, path: str, data: Mapping[str, str], *, cas: int | None) -> int:
        self._next("write")
        return 2

    async def check(self) -> None:
        self._next("check")

    async def close(self) -> None:
        self.closed = True


class MemorySecretStore:
    """A versioned store with Vault KV v2 semantics (versions from 1, check-and-set), in memory.

    `outages` are raised by the next calls, one each, in order (any call: read, read_version,
    write, check); `down` by every call while set.
    """

    kind = "memory"
    writable = True

    def __init__(self) -> None:
        self.versions: dict[str, list[dict[str, str]]] = {}
        self.outages: list[BaseException] = []
        self.down: BaseException | None = None
        self.calls: list[str] = []
        self.closed = False

    def _call(self, action: str) -> None:
        self.calls.append(action)
        if self.outages:
            raise self.outages.pop(0)
        if self.down is not None:
            raise self.down

    def put(self, path: str, data: Mapping[str, str]) -> int:
        """Write a version directly, as another writer would (no call recorded)."""
        self.versions.setdefault(path, []).append(dict(data))
        return len(self.versions[path])

    async def read(self, path: str) -> SecretVersion:
        self._call("read")
        history = self.versions.get(path)
        if not history:
            raise SecretNotFound(f"no secret at {path!r}")
        return SecretVersion(dict(history[-1]), len(history))

    async def read_version(self, path: str, version: int) -> SecretVersion:
        self._call("read_version")
        history = self.versions.get(path, [])
        if not 1 <= version <= len(history):
            raise SecretNotFound(f"no version {version} of {path!r}")
        return SecretVersion(dict(history[version - 1]), version)

    async def write(self, path: str, data: Mapping[str, str], *, cas: int | None) -> int:
        self._call("write")
        current = len(self.versions.get(path, []))
        if cas is not None and cas != current:
            raise CasMismatch(f"{path!r} is at version {current}, not {cas}")
        return self.put(path, data)

    async def check(self) -> None:
        self._call("check")

    async def close(self) -> None:
        self.closed = True


# --- control plane (principals, tokens, freezes) --------------------------------------------


class MemoryPrincipalStore:
    """ports.PrincipalStore in memory, with the contract's semantics (tests/contract/
    test_principal_store_contract.py runs the real stores against the same rules). Several
    ControlPlanes may share one, as replicas share a database; `fail` makes every call raise
    StateStoreError (the store unreachable)."""

    kind = "memory"

    def __init__(self) -> None:
        from credbroker.domain import Freeze, Principal, TokenRecord

        self.gen = 0
        self.principal_rows: dict[str, Principal] = {}
        self.token_rows: dict[str, TokenRecord] = {}
        self.freeze_rows: dict[str, Freeze] = {}
        self.fail = False
        self.watchers: list[Any] = []

    def _check(self) -> None:
        from credbroker.errors import StateStoreError

        if self.fail:
            raise StateStoreError("memory store down")

    def _bump(self) -> None:
        self.gen += 1
        for changed in self.watchers:
            changed()

    async def generation(self) -> int:
        self._check()
        return self.gen

    async def control_state(self) -> Any:
        from credbroker.domain import ControlState

        self._check()
        return ControlState(
            self.gen,
            tuple(sorted(self.principal_rows.values(), key=lambda p: p.id)),
            tuple(t for t in self.token_rows.values() if t.revoked_at is None),
            tuple(f for f in self.freeze_rows.values() if f.lifted_at is None),
        )

    async def principal(self, client_id: str) -> Any:
        self._check()
        return self.principal_rows.get(client_id)

    async def principals(self) -> list[Any]:
        self._check()
        return sorted(self.principal_rows.values(), key=lambda p: p.id)

    async def add_principal(self, principal: Any) -> None:
        from credbroker.errors import PrincipalConflict

        self._check()
        if principal.id in self.principal_rows:
            raise PrincipalConflict("exists", code="principal_exists")
        self.principal_rows[principal.id] = principal
        self._bump()

    async def update_principal(self, principal: Any) -> None:
        from credbroker.errors import NotFound

        self._check()
        current = self.principal_rows.get(principal.id)
        if current is None or current.revoked_at is not None:
            raise NotFound("no active principal")
        self.principal_rows[principal.id] = principal
        self._bump()

    async def revoke_principal(self, client_id: str, at: datetime) -> None:
        from dataclasses import replace

        from credbroker.errors import NotFound

        self._check()
        current = self.principal_rows.get(client_id)
        if current is None or current.revoked_at is not None:
            raise NotFound("no active principal")
        self.principal_rows[client_id] = replace(current, revoked_at=at, updated_at=at)
        for token_id, token in list(self.token_rows.items()):
            if token.client_id == client_id and token.revoked_at is None:
                self.token_rows[token_id] = replace(token, revoked_at=at)
        self._bump()

    async def add_token(self, token: Any, *, max_active: int, now: datetime) -> None:
        from credbroker.errors import NotFound, PrincipalConflict

        self._check()
        owner = self.principal_rows.get(token.client_id)
        if owner is None or owner.revoked_at is not None:
            raise NotFound("no active principal")
        usable = [
            t for t in self.token_rows.values() if t.client_id == token.client_id and t.usable(now)
        ]
        if len(usable) >= max_active:
            raise PrincipalConflict("too many", code="too_many_tokens")
        self.token_rows[token.id] = token
        self._bump()

    async def tokens(self, client_id: str) -> list[Any]:
        self._check()
        return [t for t in self.token_rows.values() if t.client_id == client_id]

    async def revoke_token(self, client_id: str, token_id: str, at: datetime) -> Any:
        from dataclasses import replace

        from credbroker.errors import NotFound

        self._check()
        token = self.token_rows.get(token_id)
        if token is None or token.client_id != client_id or token.revoked_at is not None:
            raise NotFound("no such token")
        self.token_rows[token_id] = revoked = replace(token, revoked_at=at)
        self._bump()
        return revoked

    async def add_freeze(self, freeze: Any) -> None:
        self._check()
        self.freeze_rows[freeze.id] = freeze
        self._bump()

    async def lift_freeze(self, freeze_id: str, at: datetime, by: str) -> Any:
        from dataclasses import replace

        from credbroker.errors import NotFound

        self._check()
        freeze = self.freeze_rows.get(freeze_id)
        if freeze is None or freeze.lifted_at is not None:
            raise NotFound("no such freeze")
        self.freeze_rows[freeze_id] = lifted = replace(freeze, lifted_at=at, lifted_by=by)
        self._bump()
        return lifted

    async def freezes(self, *, active_only: bool) -> list[Any]:
        self._check()
        return [f for f in self.freeze_rows.values() if not active_only or f.lifted_at is None]

    async def watch(self, changed: Any) -> None:
        if changed not in self.watchers:
            self.watchers.append(changed)

    async def close(self) -> None: ...


# --- the actor's directory (Confluence) ----------------------------------------------------------


class FakeActorDirectory:
    """ports.ActorDirectory: who may view (read) or edit (write) which space; can be down."""

    def __init__(self) -> None:
        self.viewers: dict[str, set[str]] = {}
        self.editors: dict[str, set[str]] = {}
        self.down = False
        self.asked: list[tuple[str, str, str]] = []

    def grant(self, space: str, actor: str, *, edit: bool = False) -> None:
        self.viewers.setdefault(space, set()).add(actor)
        if edit:
            self.editors.setdefault(space, set()).add(actor)

    async def permitted(self, *, space: str, actor: str, access: Any) -> bool:
        from credbroker.errors import ActorCheckUnavailable

        self.asked.append((space, actor, str(access)))
        if self.down:
            raise ActorCheckUnavailable("Confluence did not answer within 3s")
        held = self.editors if str(access) == "write" else self.viewers
        return actor in held.get(space, set())

    async def close(self) -> None:
        pass
