"""One error tree. Every error carries a stable machine code and the HTTP status it maps to.

Messages are written for the caller and never contain a secret: adapters build them from
status codes and identifiers, never from upstream bodies that might echo credentials.
"""

from __future__ import annotations


class CredbrokerError(Exception):
    code = "internal_error"
    status = 500
    # Seconds after which trying again makes sense (503s), when the broker knows.
    retry_after: float | None = None
    # False: a 503 that no wait cures (a freeze) goes out without a Retry-After header.
    retry_after_header: bool = True
    # True once the use case wrote its own audit record of this refusal (the web layer then
    # writes none: one record per decision).
    audited: bool = False

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


# --- caller-facing request errors -------------------------------------------------------------


class InvalidRequest(CredbrokerError):
    """Malformed or hostile input. Refused, never silently cleaned."""

    code = "invalid_request"
    status = 400


class Unauthenticated(CredbrokerError):
    code = "unauthenticated"
    status = 401


class NotAllowed(CredbrokerError):
    """Authenticated, but the client may not have this space, access level or TTL."""

    code = "forbidden"
    status = 403


class ActorNotPermitted(NotAllowed):
    """The space checks its actor (actor_check: confluence) and Confluence says the account
    that triggered the rule may not view (read) or edit (write) it, or no actor was given."""

    code = "actor_not_permitted"


class RateLimited(CredbrokerError):
    """This client asked faster than its rate (limits.rate_per_second, burst)."""

    code = "rate_limited"
    status = 429

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Overloaded(CredbrokerError):
    """Too many vends and presigns in flight on this replica (limits.max_in_flight)."""

    code = "overloaded"
    status = 503
    retry_after = 1.0


class RequestTimeout(CredbrokerError):
    """The request body did not arrive within limits.body_timeout_seconds."""

    code = "request_timeout"
    status = 408


class ConfigError(CredbrokerError):
    code = "config_error"
    status = 500


class SealError(ConfigError):
    """A sealed file (embedded store, fallback cache) cannot be read: wrong key, tampered,
    not ours, or unreadable."""

    code = "seal_error"


# --- outside systems --------------------------------------------------------------------------


class UpstreamError(CredbrokerError):
    """An outside system failed. `upstream` names which one, for logs and metrics."""

    code = "upstream_error"
    status = 502
    upstream = "unknown"

    def __init__(self, message: str, *, upstream: str | None = None, code: str | None = None):
        super().__init__(message, code=code)
        if upstream is not None:
            self.upstream = upstream


class SecretStoreError(UpstreamError):
    upstream = "secret_store"


class AuditUnavailable(UpstreamError):
    """An audit record could not be written: the request it records is refused (fail closed,
    as Vault's audit devices do). Logged and counted (credbroker_audit_failures)."""

    code = "audit_unavailable"
    status = 503
    upstream = "audit"


class SecretStoreUnavailable(SecretStoreError):
    """Unreachable, sealed, timing out, 5xx: the store may come back by itself."""

    code = "vault_unavailable"
    status = 503


class SecretStoreCircuitOpen(SecretStoreUnavailable):
    """Recent calls failed: the circuit breaker refuses calls until its open interval passes."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class SecretStorePermissionDenied(SecretStoreError):
    """The store answered and refused (403). A configuration error, not an outage."""

    code = "vault_permission_denied"
    status = 502


class SecretNotFound(SecretStoreError):
    code = "secret_not_found"
    status = 502


class CasMismatch(SecretStoreError):
    """Check-and-set failed: someone else wrote a newer version first."""

    code = "cas_mismatch"
    status = 409


class SecretRolledBack(SecretStoreError):
    """The store shows an older version of a secret than the broker already saw (a restored
    backup, a copied-back file), or a record sealed for another path or version. Refused, never
    used: vending or rotating on a rotated-away key would bring it back into service."""

    code = "secret_rolled_back"
    status = 502


class SecretStoreReadOnly(SecretStoreError):
    """The store cannot be written by the broker (a store whose owner rotates its keys; the
    port's `writable` is False: CyberArk CCP, secrets/cyberark.py)."""

    code = "secret_store_read_only"
    status = 409


class ObjectStoreError(UpstreamError):
    upstream = "object_store"


class ObjectStoreUnavailable(ObjectStoreError):
    code = "object_store_unavailable"
    status = 503


class ObjectStoreRejected(ObjectStoreError):
    """The object store answered and refused (bad parent key, policy rejected, ...)."""

    code = "object_store_rejected"
    status = 502

    def __init__(self, message: str, *, aws_code: str = "", upstream: str | None = None):
        super().__init__(message, upstream=upstream)
        self.aws_code = aws_code

    @property
    def may_be_stale_key(self) -> bool:
        """The signing key may have been rotated away (RGW answers AccessDenied; MinIO and AWS
        InvalidAccessKeyId or InvalidClientTokenId)."""
        return self.aws_code in _STALE_KEY_CODES


class KeyOutlivesRequest(ObjectStoreError):
    """The object store issued a key that lives longer than asked (MinIO with MINIO_STS_DURATION
    set ignores DurationSeconds). Such a key is never handed out: it would outlive the
    client's maximum TTL. A server setting to fix, not an outage."""

    code = "sts_duration_ignored"
    status = 502


_STALE_KEY_CODES = frozenset(
    {"InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidClientTokenId", "AccessDenied"}
)


class ActorCheckUnavailable(UpstreamError):
    """Confluence did not answer an actor check in time (timeout, connection refused, 5xx,
    429 past the wait we allow): the space's `on_unavailable` decides what happens."""

    upstream = "confluence"
    code = "confluence_unavailable"
    status = 503


class IdentityProviderUnavailable(UpstreamError):
    """The OIDC provider's discovery document or key set could not be fetched (and no keys
    are cached yet), or names another issuer."""

    upstream = "idp"
    code = "idp_unavailable"
    status = 503


class ActorCheckFailed(UpstreamError):
    """Confluence answered and refused the broker itself (401, 403: wrong credentials or
    scopes). A configuration error, not an outage: never served read-only."""

    upstream = "confluence"
    code = "confluence_rejected"
    status = 502


# --- rotation ---------------------------------------------------------------------------------


class StateStoreError(UpstreamError):
    """The rotation state store (SQLite file or PostgreSQL) failed."""

    upstream = "state_store"
    code = "state_store_error"
    status = 503


class RotationBusy(CredbrokerError):
    """Another rotation of the same credential holds the lock (here or in another process)."""

    code = "rotation_busy"
    status = 409


class RotationFailed(CredbrokerError):
    """A rotation step failed; the old key stays in service and the run is retried later."""

    code = "rotation_failed"
    status = 502


class LeaseNotFound(CredbrokerError):
    """No lease with that id (it never existed here, or it was pruned)."""

    code = "lease_not_found"
    status = 404


class RevocationTooLarge(CredbrokerError):
    """The object store could not hold one more denial until some revoked keys expire."""

    code = "revocation_too_large"
    status = 409


# --- the live control plane -------------------------------------------------------------------


class Frozen(CredbrokerError):
    """An operator froze vending for this space, client or everything (`credbroker freeze`).
    No Retry-After: the freeze ends when a person lifts it, not after a time."""

    code = "frozen"
    status = 503
    retry_after_header = False


# --- break-glass ------------------------------------------------------------------------------


class NotFound(CredbrokerError):
    """No such thing: a break-glass request id nobody made, a principal, token or freeze."""

    code = "not_found"
    status = 404


class PrincipalConflict(CredbrokerError):
    """The change contradicts what exists: a principal that exists already or was revoked, a
    third active token, a principal the config file defines (read-only: `config_principal`)."""

    code = "conflict"
    status = 409


class BreakGlassConflict(CredbrokerError):
    """The request is not in a state that allows this step: already collected, expired,
    denied, already approved by this approver, or changed by someone else meanwhile."""

    code = "break_glass_conflict"
    status = 409


class EscrowSealed(CredbrokerError):
    """A write while the vault is down needs the escrowed service key, and not enough
    custodians' shares were submitted yet (or there is no escrow)."""

    code = "escrow_sealed"
    status = 503
    retry_after = 30.0


class EscrowError(CredbrokerError):
    """The escrow cannot be opened or written: a share that is not one of this escrow's, shares
    that do not open it, a missing or tampered file. The message never holds a share."""

    code = "escrow_error"
    status = 400
