"""The ports: small interfaces the centre needs from the outside world.

Adapters live in one folder per outside system (secrets/, issuers/, callers/, audit/, state/,
and rotation/ for the key drivers) and are chosen in exactly one place, wiring.py. Nothing here
imports an adapter.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from credbroker.domain import (
    Access,
    AccessKey,
    BreakGlassRequest,
    CallerProof,
    Client,
    ControlState,
    Freeze,
    Principal,
    RotationRecord,
    Scope,
    SecretVersion,
    SessionKey,
    TokenRecord,
)

if TYPE_CHECKING:
    from credbroker.leases import Denials, Enforcement, Lease, LeaseFilter, Revocation


class SecretStore(Protocol):
    """Versioned key/value secrets (Vault KV v2 semantics).

    Errors: SecretNotFound, SecretStoreUnavailable (may heal by itself),
    SecretStorePermissionDenied (configuration), CasMismatch, SecretStoreReadOnly.
    """

    kind: str
    writable: bool

    async def read(self, path: str) -> SecretVersion:
        """Current version of the secret at `path`."""
        ...

    async def read_version(self, path: str, version: int) -> SecretVersion:
        """Version `version` of `path`; SecretNotFound if it is gone (deleted or pruned) or the
        store keeps no older versions. Rotation reads the version it replaced to prove, with a
        real signed call, that the old key is refused once deleted."""
        ...

    async def write(self, path: str, data: Mapping[str, str], *, cas: int | None) -> int:
        """Write a new version and return its number.

        `cas`: None writes unconditionally; 0 only if the secret does not exist yet; N only if
        the current version is N. A mismatch raises CasMismatch and writes nothing.
        """
        ...

    async def check(self) -> None:
        """Raise if the store cannot currently serve reads."""
        ...

    async def close(self) -> None: ...


class ReadOnlyKeys(Protocol):
    """Parent keys of an object-store identity whose own policy allows only reads.

    Used for read requests only, and only while the secret store is unreachable (fallback.py).
    """

    role_arn: str | None

    def credentials(self) -> AccessKey:
        """The read-only parent key; SecretStoreUnavailable if there is none or it is too old."""
        ...


class SealedCache(Protocol):
    """A small file sealed with the broker's key (AES-256-GCM: secrets/sealing.py)."""

    def load(self) -> bytes | None:
        """The last saved plaintext; None if nothing was saved yet. SealError if the file is
        unreadable, tampered, sealed with another key or for another purpose."""
        ...

    def save(self, plaintext: bytes) -> None:
        """Seal and replace atomically (a crash leaves the old or the new file)."""
        ...


class VersionWatermark(Protocol):
    """The highest version of each secret ever seen, kept outside the secret store (in the
    rotation state store), so a store put back to an older copy is noticed and refused.

    Errors: StateStoreError.
    """

    async def remember_version(self, store: str, path: str, version: int) -> int:
        """Record that `version` of `path` in `store` (which store: the embedded file's
        location) was seen and return the highest version ever recorded for it (at least
        `version`). Atomic: concurrent callers, in this process or another, never lower it.
        `version` 0 (no secret there) only asks."""
        ...

    async def close(self) -> None: ...


class RateLimiter(Protocol):
    """Fair use per client: may this client start one more request now? In memory, each
    replica counts alone (web/limits.py); a shared store would implement the same call."""

    def try_acquire(self, client_id: str) -> float:
        """0.0 when admitted (one unit of the client's allowance is spent), else the seconds
        until the client would be admitted; nothing is spent then."""
        ...


class BrokerMetrics(Protocol):
    """What the vend path and the read-only fallback report (observability.Metrics)."""

    def count_parent_key_refresh(self) -> None:
        """A cached service key was refused by the object store and re-read."""
        ...

    def set_degraded(self, degraded: bool) -> None:
        """Reads are (True) or are no longer (False) served by the read-only fallback."""
        ...

    def count_frozen(self, action: str) -> None:
        """A vend or presign (`action`) was refused by a freeze."""
        ...


class ControlMetrics(Protocol):
    """What the control plane reports (observability.Metrics)."""

    def control_refreshed(self, generation: int, active_freezes: int) -> None:
        """The snapshot now reflects `generation` of the state store."""
        ...

    def count_control_refresh_failure(self) -> None:
        """The state store did not answer a refresh: the last snapshot stays in use."""
        ...


class RotationMetrics(Protocol):
    """What the rotation use case reports (observability.Metrics)."""

    def watch_key_age(self, credential: str, age: Callable[[], float]) -> None:
        """Report the key's age in seconds by calling `age` at each scrape."""
        ...

    def count_run(self, credential: str, result: str) -> None: ...

    def rotation_succeeded(self, credential: str, at: datetime) -> None:
        """A rotation completed at `at`: the failure streak is over."""
        ...

    def set_consecutive_failures(self, credential: str, failures: int) -> None: ...

    def set_next_due(self, credential: str, at: datetime | None) -> None:
        """When the stored record says the next run is due (None: not scheduled)."""
        ...


class Issuer(Protocol):
    """Mints temporary, policy-scoped object-store credentials (STS AssumeRole)."""

    endpoint: str  # where the broker reaches the STS and S3 API
    public_endpoint: str  # the address handed to automations (often the same)
    region: str

    async def assume_role(
        self,
        parent: AccessKey,
        *,
        policy: str,
        duration_seconds: int,
        session_name: str,
        role_arn: str | None = None,
    ) -> SessionKey:
        """`role_arn` overrides the configured role (the read-only fallback has its own)."""
        ...

    def presign(
        self,
        credentials: SessionKey,
        *,
        bucket: str,
        key: str,
        method: str,
        expires_in: int,
    ) -> str:
        """A SigV4 query-signed URL; pure computation, no I/O."""
        ...

    async def check(self) -> None: ...

    async def close(self) -> None: ...


class TokenCheck(Protocol):
    """Static bearer tokens (`cbk_...`), checked in memory without I/O."""

    def authenticate(self, authorization: str | None) -> Client:
        """Resolve an Authorization header to a client, or raise Unauthenticated."""
        ...


class FreezeCheck(Protocol):
    """Is vending frozen for this client in this space? Answered from memory (the control
    plane's snapshot): the vend path does no database round trip for it."""

    def frozen(self, client_id: str, space: str) -> Freeze | None:
        """The active freeze that matches (the oldest), or None."""
        ...


class CallerAuth(Protocol):
    """Who is asking: a static token, an OIDC JWT (may fetch the identity provider's keys)
    or a verified client certificate (callers/composite.py decides which)."""

    async def authenticate(self, proof: CallerProof) -> Client:
        """Resolve what the caller showed to a client, or raise Unauthenticated."""
        ...


class ActorDirectory(Protocol):
    """Asks the wiki (Confluence) whether the account that triggered a rule may view (read)
    or edit (write) a space. Errors: ActorCheckUnavailable (no answer in time, 5xx, 429)."""

    async def permitted(self, *, space: str, actor: str, access: Access) -> bool: ...

    async def close(self) -> None: ...


class AuditSink(Protocol):
    async def record(self, event: Mapping[str, Any]) -> None:
        """Persist one audit event. Events never contain secrets."""
        ...

    async def close(self) -> None: ...


# --- rotation -------------------------------------------------------------------------------


class StateStore(Protocol):
    """Durable rotation records (one per managed credential) and a per-credential lock.

    Errors: StateStoreError. Records hold key ids and times, never a secret.
    """

    kind: str

    async def load(self, credential: str) -> RotationRecord | None: ...

    async def save(self, record: RotationRecord) -> None:
        """Insert or replace the record of `record.credential`."""
        ...

    async def all(self) -> list[RotationRecord]:
        """Every record, ordered by credential name."""
        ...

    def lock(self, credential: str) -> AbstractAsyncContextManager[None]:
        """Hold the rotation lock of `credential` for the `async with` block.

        Never waits: raises RotationBusy at once if another holder (in this process or another
        one, on this host for SQLite, anywhere for PostgreSQL) has it. A holder that dies
        releases it.
        """
        ...

    async def close(self) -> None: ...


class KeyDriver(Protocol):
    """An object store's admin API for one kind of key (Ceph RGW user keys, MinIO access keys,
    or a pair of MinIO users used in turn).

    Every call is idempotent where the object store allows it. Key ids only cross this port
    outward, except the one secret create_key returns.
    """

    kind: str
    # Whose keys these are, fixed when the driver is built: an object-store user, or for a
    # pair "a+b" (shown in status and logs).
    owner: str
    # False: keys come and go (create adds one, delete removes it). True: the keys are fixed
    # (a pair of users, access key = user name); create gives the one not kept a new secret,
    # delete gives it a random secret nobody keeps, and list_keys always names both.
    fixed_keys: bool

    async def list_keys(self) -> list[str]:
        """Access key ids of the owner, sorted."""
        ...

    async def create_key(self, *, keep: str | None = None) -> AccessKey:
        """A new key of the owner. `keep` is the key the secret store holds now, which must keep
        working (a pair driver gives the other key of the pair a fresh secret)."""
        ...

    async def delete_key(self, key_id: str) -> None:
        """Make `key_id` unusable if it is a key of the owner (delete it, or scramble its
        secret); a key already gone is not an error."""
        ...

    async def close(self) -> None: ...


class KeyProbe(Protocol):
    """Asks the object store itself whether it accepts a key: one real signed call per question."""

    async def accepts(
        self,
        key: AccessKey,
        *,
        via: str,
        role_arn: str | None,
        proof: Scope | None = None,
    ) -> None:
        """Return if the store accepts `key` for its use (`via` "sts": AssumeRole of `role_arn`,
        and with `proof` the minted key lists that scope; "s3": a signed ListBuckets); raise
        ObjectStoreRejected (aws_code set) if it refuses, ObjectStoreUnavailable if it does not
        answer."""
        ...

    async def refuses(
        self, key: AccessKey, *, via: str = "s3", role_arn: str | None = None
    ) -> bool:
        """True if the store refuses `key` (an unknown id, or a secret that no longer matches),
        asked the way `via` names; False while it still accepts it."""
        ...

    async def close(self) -> None: ...


# --- leases and revocation --------------------------------------------------------------------


class LeaseSink(Protocol):
    """Where the vend path hands each lease: never waits on a database (a batched writer)."""

    def issued(self, lease: Lease) -> None: ...


class LeaseLog(Protocol):
    """Durable leases and revocations (the state store). Errors: StateStoreError. Rows hold
    key ids and times, never a secret."""

    async def add_leases(self, leases: list[Lease]) -> int:
        """Insert the leases not stored yet (a lease already there, revoked or not, is left as
        it is) and return how many were new."""
        ...

    async def find(self, wanted: LeaseFilter) -> list[Lease]:
        """Matching leases, newest first, at most `wanted.limit`."""
        ...

    async def mark_revoked(
        self, lease_ids: list[str], *, revocation_id: str, at: datetime
    ) -> list[Lease]:
        """Mark these leases revoked (those not revoked yet) and return them as now stored."""
        ...

    async def revoked_active(self, now: datetime) -> list[str]:
        """Ids of revoked leases whose keys have not expired at `now`."""
        ...

    async def add_revocation(self, revocation: Revocation) -> None: ...

    async def revocations(self, *, in_effect_at: datetime | None = None) -> list[Revocation]:
        """Every revocation (newest first), or only those still enforced at `in_effect_at`."""
        ...

    async def prune(self, before: datetime) -> int:
        """Delete leases that expired and revocations that ended before `before`; the count."""
        ...


class RevocationEnforcer(Protocol):
    """Makes the object store refuse keys already handed out, where it can."""

    kind: str
    # None if the store refuses every key issued before a time (Denials.issued_before); else
    # why it cannot (it reaches only the leases the broker knows): such a revocation then
    # answers objectStoreEnforced false with this reason.
    issue_time_gap: str | None

    def check(self, denials: Denials) -> None:
        """Raise RevocationTooLarge if the object store could not hold these denials."""
        ...

    async def apply(self, denials: Denials) -> Enforcement:
        """Make the object store refuse exactly `denials` (replacing the previous set)."""
        ...

    async def close(self) -> None: ...


# --- the live control plane -------------------------------------------------------------------


class PrincipalStore(Protocol):
    """Principals, their token hashes and freezes, shared by every replica (the state store:
    SQLite on one host, PostgreSQL for several). Every change bumps one generation number in
    the same transaction, so a replica learns of any change by reading one integer (and, on
    PostgreSQL, by a NOTIFY sent on commit).

    Errors: StateStoreError; NotFound for an unknown id; PrincipalConflict for an id that
    exists already, or a token past MAX_ACTIVE_TOKENS. Tokens are stored as SHA-256 hashes only.
    """

    kind: str

    async def generation(self) -> int:
        """The number of changes ever made (cheap: polled every second)."""
        ...

    async def control_state(self) -> ControlState:
        """One consistent read: every principal (revoked ones too), every token not revoked,
        every active freeze."""
        ...

    async def principal(self, client_id: str) -> Principal | None: ...

    async def principals(self) -> list[Principal]:
        """Every principal, revoked ones too, ordered by id."""
        ...

    async def add_principal(self, principal: Principal) -> None:
        """PrincipalConflict if the id exists (revoked ones included: ids are never reused)."""
        ...

    async def update_principal(self, principal: Principal) -> None:
        """Replace the limits of an active principal; NotFound if none has that id."""
        ...

    async def revoke_principal(self, client_id: str, at: datetime) -> None:
        """Revoke the principal and every token it holds; NotFound if no active one."""
        ...

    async def add_token(self, token: TokenRecord, *, max_active: int, now: datetime) -> None:
        """Store a new token of an active principal, atomically refusing (PrincipalConflict)
        when it already holds `max_active` usable tokens at `now`."""
        ...

    async def tokens(self, client_id: str) -> list[TokenRecord]:
        """Every token of the principal, revoked ones too, oldest first."""
        ...

    async def revoke_token(self, client_id: str, token_id: str, at: datetime) -> TokenRecord:
        """NotFound unless the principal holds a token with that id not yet revoked."""
        ...

    async def add_freeze(self, freeze: Freeze) -> None: ...

    async def lift_freeze(self, freeze_id: str, at: datetime, by: str) -> Freeze:
        """NotFound unless an active freeze has that id."""
        ...

    async def freezes(self, *, active_only: bool) -> list[Freeze]:
        """Oldest first."""
        ...

    async def watch(self, changed: Callable[[], None]) -> None:
        """Call `changed` (on the event loop) when another process may have changed something;
        a store that cannot tell (SQLite) does nothing, and the caller polls `generation`."""
        ...

    async def close(self) -> None: ...


# --- the compliance check -----------------------------------------------------------------------


class BucketExposure(Protocol):
    """Asks the object store whether a bucket is public (objectstore/exposure.py)."""

    async def public_findings(self, bucket: str) -> tuple[list[str], list[str]]:
        """(findings, evidence): each finding a sentence naming what makes the bucket public
        (a bucket policy statement for everyone, a public ACL grant, an anonymous listing that
        worked); evidence what was asked and answered. ObjectStoreUnavailable if it does not
        answer."""
        ...

    async def close(self) -> None: ...


class WriteProbe(Protocol):
    """Tries to write a canary object with the read-only fallback identity."""

    async def write_refused(self, bucket: str, key: str) -> tuple[bool, list[str]]:
        """(True if every write attempt was refused by the object store, evidence). An object
        that was written is deleted again."""
        ...

    async def close(self) -> None: ...


class AuditTrail(Protocol):
    """The audit records, read back (audit/trail.py)."""

    async def records(self, since: datetime, until: datetime) -> list[Mapping[str, Any]]:
        """Every record with `ts` in [since, until), oldest first."""
        ...

    async def verify(self, since: datetime) -> tuple[bool, str | None, list[dict[str, Any]]]:
        """Verify the chains of the files holding records since `since`: (ok, first problem,
        one summary per chain)."""
        ...


class UsageSource(Protocol):
    """When each client last used its access: the lease table, the audit trail, or the latest
    of both (compliance/usage.py)."""

    async def last_use(
        self, since: datetime, until: datetime, clients: Collection[str]
    ) -> dict[str, tuple[datetime | None, datetime | None]]:
        """client id -> (last grant of any kind, last write grant) in [since, until), for the
        `clients` asked about; a client never used in the window may be left out."""
        ...


# --- break-glass ----------------------------------------------------------------------------


class BreakGlassStore(Protocol):
    """Durable break-glass requests (the state store: SQLite or PostgreSQL).

    Errors: StateStoreError; BreakGlassConflict when `save` finds a newer revision.
    """

    async def create_request(self, request: BreakGlassRequest) -> None:
        """Insert a new request (its revision is 0)."""
        ...

    async def load_request(self, request_id: str) -> BreakGlassRequest | None: ...

    async def save_request(self, request: BreakGlassRequest) -> BreakGlassRequest:
        """Write `request` over the stored revision `request.revision` and return it with the
        revision raised by one; BreakGlassConflict (nothing written) if the stored revision
        is another (someone else saved in between)."""
        ...

    async def list_requests(self, *, limit: int = 200) -> list[BreakGlassRequest]:
        """The newest requests first."""
        ...


class Escrow(Protocol):
    """The broker's service key sealed to a public key whose private key is split into
    custodians' shares (escrow/). The broker can seal (every rotation) but never open alone."""

    @property
    def threshold(self) -> int:
        """How many shares open it."""
        ...

    def share_index(self, share: str) -> int:
        """Which custodian's share this is (1..N); EscrowError if it is not one of this
        escrow's shares. Never echoes the share."""
        ...

    def open(self, shares: list[str]) -> AccessKey:
        """The sealed service key, from `threshold` shares or more; EscrowError if they do not
        open it, EscrowSealed if there is no sealed key."""
        ...

    def sealed_key_id(self) -> str | None:
        """The id of the key it holds (None: empty), read without any share."""
        ...

    def seal(self, key: AccessKey) -> None:
        """Replace whatever it holds by `key`, atomically: the old key is gone from it."""
        ...


class Notifier(Protocol):
    """Tells people (a chat or incident tool's webhook) what happened. Never raises; never
    sends a secret."""

    def notify(self, event: Mapping[str, Any]) -> None:
        """Queue one notification; delivered in order in the background, with retries."""
        ...

    async def close(self) -> None: ...


class BreakGlassMetrics(Protocol):
    def count_break_glass(self, step: str, outcome: str) -> None:
        """One break-glass step (request, approve, deny, share, collect, close, expire) and
        how it ended (ok, or the refusal's code)."""
        ...
