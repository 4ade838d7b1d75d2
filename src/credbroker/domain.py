"""Domain types shared by the vend path and every adapter. Plain, immutable, no I/O."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import ClassVar, Literal


def utc_text(moment: datetime | None) -> str | None:
    """A time as every answer and report writes it: ISO 8601 ending in "Z" (None stays None)."""
    return moment.isoformat().replace("+00:00", "Z") if moment is not None else None


class Flavor(enum.StrEnum):
    """Which object store speaks STS and S3 for us. Each has its own policy language rules."""

    MINIO = "minio"
    RGW = "rgw"


class Mode(enum.StrEnum):
    """Which parent key signed a vend: the service key, or the read-only fallback key while the
    secret store is unreachable (reads only)."""

    NORMAL = "normal"
    READ_ONLY = "read-only"
    # A key handed out by a dual-control break-glass request (breakglass.py), whichever parent
    # key signed it.
    BREAK_GLASS = "break-glass"


class Access(enum.StrEnum):
    READ = "read"
    WRITE = "write"

    def allows(self, wanted: Access) -> bool:
        return self is Access.WRITE or wanted is Access.READ


class BreakerState(enum.StrEnum):
    """The secret store's circuit breaker: closed (calls go through), open (the store is
    known unreachable: calls fail fast), half_open (one trial call decides)."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class Scope:
    """Exactly what one vended key may touch: one bucket, one prefix, one access level.

    `prefix` is either "" (the whole bucket) or ends with "/".
    """

    bucket: str
    prefix: str
    access: Access


# STS servers mint keys for 900 s at least (MinIO up to 365 days: internal/config/constants.go).
# The broker caps keys at 7 days: a longer-lived key is a standing credential, not a vended one.
STS_MIN_TTL = 900
MAX_TTL = 7 * 24 * 3600


@dataclass(frozen=True, slots=True)
class TtlLimits:
    """How long vended keys live, in seconds: the floor, the default and the ceiling. The
    config file's `object_store.ttl` is validated into this type directly (config.py), and
    `__pydantic_config__` makes unknown keys there an error, not a silent no-op."""

    __pydantic_config__: ClassVar[dict[str, str]] = {"extra": "forbid"}

    min_seconds: int = STS_MIN_TTL
    default_seconds: int = 3600
    max_seconds: int = 3600

    def __post_init__(self) -> None:
        if not STS_MIN_TTL <= self.min_seconds <= self.default_seconds <= self.max_seconds:
            raise ValueError(f"need {STS_MIN_TTL} <= min_seconds <= default_seconds <= max_seconds")
        if self.max_seconds > MAX_TTL:
            raise ValueError(f"max_seconds may be at most {MAX_TTL} (7 days)")


@dataclass(frozen=True, slots=True)
class SpaceTarget:
    """Where a Confluence space's keys point: one bucket and a prefix ("" or "a/b/"). The
    config file's `spaces` are validated into this type directly (config.py)."""

    __pydantic_config__: ClassVar[dict[str, str]] = {"extra": "forbid"}

    bucket: str
    prefix: str = ""
    # "confluence": before vending, Confluence must say the request's actor may view (read) or
    # edit (write) this space. While it cannot answer: "fail-closed" refuses every vend (503),
    # "read-only" serves reads unverified (the audit record says so) and refuses writes.
    actor_check: Literal["confluence"] | None = None
    actor_check_unavailable: Literal["fail-closed", "read-only"] = "fail-closed"


@dataclass(frozen=True, slots=True)
class SecretVersion:
    """One version of one secret as a secret store returns it."""

    data: Mapping[str, str] = field(repr=False)
    version: int

    def get(self, key: str) -> str:
        return self.data[key]


@dataclass(frozen=True, slots=True)
class AccessKey:
    """A long-lived object-store access key (id and secret): the parent key the broker signs
    STS calls with, the read-only fallback's, an admin's, or one being rotated. Never leaves
    the broker."""

    access_key_id: str
    secret_access_key: str = field(repr=False)
    version: int = 0

    @classmethod
    def from_secret(cls, secret: SecretVersion) -> AccessKey:
        return cls(
            access_key_id=secret.get("access_key_id"),
            secret_access_key=secret.get("secret_access_key"),
            version=secret.version,
        )

    def as_secret_data(self) -> dict[str, str]:
        return {"access_key_id": self.access_key_id, "secret_access_key": self.secret_access_key}


@dataclass(frozen=True, slots=True)
class SessionKey:
    """A temporary STS key (id, secret, session token, expiry): what a rule gets, or what
    signs a presigned URL."""

    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str = field(repr=False)
    expiration: datetime


class Role(enum.StrEnum):
    """What a principal may do. A principal holds one or more.

    rule: ask for keys and presigned URLs (automation rules). operator: run incident and
    break-glass operations. approver: approve another principal's break-glass request.
    admin: manage principals, freezes, leases and rotations through the admin API.
    """

    RULE = "rule"
    OPERATOR = "operator"
    APPROVER = "approver"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class Client:
    """A principal: an automation rule (or a family of rules), an operator or an approver."""

    id: str
    spaces: frozenset[str]
    max_access: Access
    max_ttl_seconds: int
    roles: frozenset[Role] = frozenset({Role.RULE})

    @property
    def admin(self) -> bool:
        return Role.ADMIN in self.roles

    def has_role(self, role: Role) -> bool:
        return role in self.roles


class RotationPhase(enum.StrEnum):
    """Where a rotation of one managed credential stands. Recorded before and after each step.

    idle -> creating -> created -> verified -> stored -> (grace) -> old_deleted -> done
    `idle` means never rotated; `done` means the last rotation finished. Neither is in progress.
    """

    IDLE = "idle"
    CREATING = "creating"  # about to ask the object store for a new key (its id not known yet)
    CREATED = "created"  # the new key exists; its secret lives only in the running process
    VERIFIED = "verified"  # a real signed call with the new key succeeded
    STORED = "stored"  # the secret store holds the new key; the old one waits out the grace
    OLD_DELETED = "old_deleted"  # the old key was deleted; its rejection is not yet observed
    DONE = "done"

    @property
    def in_progress(self) -> bool:
        return self not in (RotationPhase.IDLE, RotationPhase.DONE)


@dataclass(frozen=True, slots=True)
class RotationRecord:
    """The durable state of one managed credential's rotation. Key ids only, never a secret."""

    credential: str
    phase: RotationPhase = RotationPhase.IDLE
    # The key the secret store held when last looked at, and since when (the key's age).
    current_key_id: str | None = None
    current_key_since: datetime | None = None
    # The rotation in progress (or the last one).
    old_key_id: str | None = None
    new_key_id: str | None = None
    old_version: int | None = None  # secret version the rotation started from (cas)
    new_version: int | None = None
    started_at: datetime | None = None
    stored_at: datetime | None = None  # the grace period runs from here
    finished_at: datetime | None = None
    last_success_at: datetime | None = None
    last_error: str | None = None
    attempts: int = 0  # consecutive failed runs; 0 after a success
    next_due_at: datetime | None = None
    schedule_fingerprint: str | None = None
    updated_at: datetime | None = None


# --- the live control plane: principals, their tokens, freezes ----------------------------------


class PrincipalSource(enum.StrEnum):
    """Where a principal is defined: the state store (managed live) or the YAML config (a
    read-only seed, changed only by editing the file and restarting)."""

    STORE = "store"
    CONFIG = "config"


@dataclass(frozen=True, slots=True)
class Principal:
    """A principal as the control plane keeps it: the Client the vend path sees, its own rate
    limit (None: the configured default) and its history. Never a token or a token hash."""

    client: Client
    rate_per_second: float | None = None
    burst: int | None = None
    source: PrincipalSource = PrincipalSource.STORE
    created_at: datetime | None = None
    updated_at: datetime | None = None
    revoked_at: datetime | None = None
    created_by: str | None = None

    @property
    def id(self) -> str:
        return self.client.id

    @property
    def active(self) -> bool:
        return self.revoked_at is None


# A principal may hold this many usable tokens at once: a rule switches to the new one, then
# the old one is revoked.
MAX_ACTIVE_TOKENS = 2


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """One bearer token of a principal: its id and the SHA-256 of the token (never the token).
    Usable while not revoked and, when it has one, before its expiry."""

    id: str
    client_id: str
    sha256: str = field(repr=False)
    created_at: datetime
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    created_by: str | None = None

    def usable(self, now: datetime) -> bool:
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)

    @property
    def hash_hint(self) -> str:
        """The first 8 hex digits of the hash: enough to tell two tokens apart, never enough to
        stand for the hash."""
        return self.sha256[:8]


@dataclass(frozen=True, slots=True)
class Freeze:
    """Vending stopped by an operator: everywhere (no space, no client), for a space, for a
    client, or for one client in one space. Lifted, it stays as history."""

    id: str
    reason: str
    created_at: datetime
    space: str | None = None
    client_id: str | None = None
    created_by: str | None = None
    lifted_at: datetime | None = None
    lifted_by: str | None = None

    @property
    def active(self) -> bool:
        return self.lifted_at is None

    @property
    def is_global(self) -> bool:
        return self.space is None and self.client_id is None

    def matches(self, client_id: str, space: str) -> bool:
        return (self.space is None or self.space == space) and (
            self.client_id is None or self.client_id == client_id
        )

    def describe(self) -> str:
        parts = [
            f"space {self.space}" if self.space else "",
            f"client {self.client_id}" if self.client_id else "",
        ]
        what = " and ".join(p for p in parts if p) or "every space and client"
        return f"freeze {self.id} ({what}) since {utc_text(self.created_at)}: {self.reason}"


@dataclass(frozen=True, slots=True)
class ControlState:
    """Everything the control plane keeps, as one consistent read of the state store:
    `generation` grows with every change (replicas poll it, or are told by a notification)."""

    generation: int
    principals: tuple[Principal, ...]
    tokens: tuple[TokenRecord, ...]  # not revoked (expired ones included: checked at use)
    freezes: tuple[Freeze, ...]  # active ones


@dataclass(frozen=True, slots=True)
class PeerCertificate:
    """The client certificate the TLS handshake verified (mTLS): its subject common name and
    subject alternative names. Absent on plain HTTP or when the caller sent none."""

    subject_cn: str | None = None
    dns_names: tuple[str, ...] = ()
    uris: tuple[str, ...] = ()
    emails: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class CallerProof:
    """What a caller shows to be recognised: its Authorization header (a static token or an
    OIDC JWT) and the client certificate its TLS connection was verified with."""

    authorization: str | None = field(default=None, repr=False)
    peer: PeerCertificate | None = None


# --- break-glass ------------------------------------------------------------------------------


class BreakGlassStatus(enum.StrEnum):
    """Where a break-glass request stands.

    open -> approved (threshold reached) -> collected (the key was handed out, once) -> closed
    open -> denied; open or approved -> expired (not approved, or not collected, in time).
    """

    OPEN = "open"
    APPROVED = "approved"
    DENIED = "denied"
    COLLECTED = "collected"
    EXPIRED = "expired"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class BreakGlassRequest:
    """One break-glass request as the state store keeps it. Ids and times, never a secret.

    `revision` grows with every save: the store writes a request only over the revision it
    was read at (two approvers at once, or two collects, never both win)."""

    id: str
    requester: str
    space: str
    access: Access
    prefix: str  # as asked inside the space ("" for the whole space)
    ttl_seconds: int
    reason: str
    created_at: datetime
    approve_by: datetime  # open requests expire here
    status: BreakGlassStatus = BreakGlassStatus.OPEN
    approvals: tuple[str, ...] = ()
    denied_by: str | None = None
    approved_at: datetime | None = None
    collect_by: datetime | None = None  # approved requests expire here
    collected_at: datetime | None = None
    key_id: str | None = None  # the vended key's id
    key_expires_at: datetime | None = None
    used_escrow: bool = False  # the escrowed service key signed it (the vault was down)
    closed_at: datetime | None = None
    closed_by: str | None = None
    outcome: str | None = None
    revision: int = 0
