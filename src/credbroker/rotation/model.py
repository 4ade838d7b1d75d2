"""The rotation use case's model: what is rotated and how (ManagedKey, RetryPolicy),
what one run did (Outcome, RunResult), and what status shows (ManagedKeyStatus)."""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from credbroker.domain import RotationPhase, RotationRecord, Scope, utc_text
from credbroker.rotation.schedule import Schedule

Checkpoint = Callable[[str, RotationPhase], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class ManagedKey:
    """One key the broker rotates: where it lives, whose it is, when and how it rotates."""

    name: str
    secret_path: str
    user: str  # the object-store user that owns the key
    schedule: Schedule
    grace_seconds: float
    verify_via: str = "sts"  # "sts": AssumeRole of role_arn; "s3": a signed ListBuckets
    role_arn: str | None = None
    # With "sts": a scope a key minted by the new key must be able to list (one of the spaces
    # it serves), so a key whose user has no policy is never stored.
    proof: Scope | None = None
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    initial_seconds: float = 60.0
    max_seconds: float = 3600.0

    def delay(self, attempts: int) -> float:
        return float(min(self.max_seconds, self.initial_seconds * 2 ** max(0, attempts - 1)))


class RunResult(enum.StrEnum):
    """What one run did (also the `outcome` label of credbroker_rotations_total)."""

    COMPLETED = "completed"  # the old key was deleted and proven refused
    WAITING_GRACE = "waiting_grace"  # the new key is stored; the old one lives out its grace
    # Forced, but the rotation in progress still protects its old key (its grace runs):
    # no key was created or deleted. end_grace (delete that key now) or wait goes on.
    GRACE_NOT_OVER = "grace_not_over"
    NOT_DUE = "not_due"
    DISABLED = "disabled"  # enabled: false, and not forced
    READ_ONLY = "read_only"  # the secret store cannot be written: its owner rotates
    FAILED = "failed"  # the old key stays in service; retried with backoff
    BUSY = "busy"  # another run held the lock (counted, never returned)


@dataclass(frozen=True, slots=True)
class Outcome:
    """A run's result and the record it ended with. A forced run answers completed or
    waiting_grace only with `stored_key_id` set: "rotate now" means a new key."""

    record: RotationRecord
    result: RunResult
    # The key this run stored (now in service), if it got that far; also on a failed run.
    stored_key_id: str | None = None
    # A forced run first finishes a rotation left in progress (stored, old_deleted): that
    # rotation's old key, deleted and proven refused before the new key was made.
    retired_key_id: str | None = None

    def failure_detail(self, *, forced: bool) -> str:
        """What a failed run left in service, in words for the CLI and the admin API."""
        record = self.record
        if self.stored_key_id is not None:
            return (
                f"new key {self.stored_key_id} is stored and in service; old key "
                f"{record.old_key_id} is retired by the retry"
            )
        if record.phase is RotationPhase.VERIFIED:  # the write's answer was lost
            return (
                f"new key {record.new_key_id} may or may not have reached the secret store "
                f"(the retry finds out); key {record.current_key_id} is in service until then"
            )
        if not forced:
            return f"key {record.current_key_id} stays in service"
        if record.phase in (RotationPhase.STORED, RotationPhase.OLD_DELETED):
            return (
                f"no new key was stored: the rotation in progress (old key {record.old_key_id}) "
                f"must be finished first; key {record.current_key_id} stays in service, and the "
                "retry only finishes that rotation (force again for a new key)"
            )
        return f"no new key was stored; key {record.current_key_id} stays in service"


@dataclass(frozen=True, slots=True)
class ManagedKeyStatus:
    """What `credbroker rotation status` and GET /v1/admin/rotations show. Key ids only."""

    name: str
    secret_path: str
    user: str
    driver: str
    schedule: str
    grace_seconds: float
    enabled: bool
    writable: bool
    phase: str
    current_key_id: str | None
    key_age_seconds: float | None  # since the broker stored the key, or first saw it
    keys: list[str] | None  # the user's keys as the object store lists them
    last_success_at: datetime | None
    next_due_at: datetime | None
    last_error: str | None
    attempts: int
    problems: list[str]

    def as_dict(self) -> dict[str, Any]:
        data = {name: getattr(self, name) for name in self.__slots__}
        for name in ("last_success_at", "next_due_at"):
            value = data[name]
            data[name] = utc_text(value)
        return data
