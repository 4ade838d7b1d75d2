"""Request and response bodies: what the handlers parse and answer, and what GET /openapi.json
describes (web/openapi.py builds it from these models). Unknown fields are refused; types are
strict (no "900" for 900)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt, StringConstraints

from credbroker.policy import is_printable_text
from credbroker.rotation.model import ManagedKeyStatus

MAX_TTL_SECONDS = 7 * 24 * 3600  # the broker clamps further: store maximum, client maximum


def _readable(text: str) -> str:
    if not is_printable_text(text):
        raise ValueError(
            "may not contain control characters, bidi overrides, zero-width characters or "
            "line and paragraph separators"
        )
    return text


# Free-text audit fields: printable (the check presign keys get), bounded. They never reach a
# policy, but people read them in the audit trail.
_AuditText = Annotated[
    str,
    StringConstraints(max_length=256),
    AfterValidator(_readable),
    Field(description="free text for the audit record: printable, at most 256 characters"),
]
_Ttl = Annotated[
    StrictInt,
    Field(
        ge=1,
        le=MAX_TTL_SECONDS,
        description="seconds; clamped to the store's minimum and the client's maximum",
    ),
]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class CredentialsBody(_Body):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"space": "ENG", "access": "write", "ttl_seconds": 900, "reason": "page export"}
            ]
        }
    )

    space: Annotated[str, StringConstraints(max_length=256)]
    access: Literal["read", "write"]
    ttl_seconds: _Ttl | None = None
    prefix: Annotated[str, StringConstraints(max_length=1024)] | None = None
    reason: _AuditText | None = None
    rule: _AuditText | None = None
    actor: _AuditText | None = None


class PresignBody(_Body):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"space": "ENG", "key": "exports/a.pdf", "method": "PUT"}]}
    )

    space: Annotated[str, StringConstraints(max_length=256)]
    key: Annotated[str, StringConstraints(min_length=1, max_length=2048)]
    method: Literal["GET", "PUT"]
    ttl_seconds: _Ttl | None = None
    reason: _AuditText | None = None
    rule: _AuditText | None = None
    actor: _AuditText | None = None


# --- answers ----------------------------------------------------------------------------------

_Timestamp = Annotated[str, Field(json_schema_extra={"format": "date-time"})]


class _Answer(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, serialize_by_alias=True)


class Credentials(_Answer):
    """201 from POST /v1/credentials: a temporary key for one bucket, prefix and access."""

    access_key_id: str = Field(alias="accessKeyId")
    secret_access_key: str = Field(alias="secretAccessKey", repr=False)
    session_token: str = Field(alias="sessionToken", repr=False)
    expiration: _Timestamp
    endpoint: str
    region: str
    bucket: str
    prefix: str
    access: Literal["read", "write"]
    lease_id: str = Field(alias="leaseId")
    mode: Literal["normal", "read-only", "break-glass"]


class PresignedUrl(_Answer):
    """201 from POST /v1/presign: one URL for one object and one method."""

    url: str = Field(repr=False)
    method: Literal["GET", "PUT"]
    expires_at: _Timestamp = Field(alias="expiresAt")
    bucket: str
    key: str
    lease_id: str = Field(alias="leaseId")
    mode: Literal["normal", "read-only", "break-glass"]


class Health(_Answer):
    status: Literal["ok"]


class ErrorDetail(_Answer):
    code: str = Field(description="stable, machine-readable: invalid_field, unauthenticated, ...")
    message: str


class ErrorBody(_Answer):
    """Every refusal and failure, whatever the status (web/errors.py)."""

    error: ErrorDetail


class ReadinessCheck(_Answer):
    """One named check of GET /readyz (secret_store, object_store, secrets,
    read_only_fallback, vend_canary)."""

    ok: bool
    code: str | None = None
    message: str | None = None
    # the fallback key's age, the canary result's, or the control snapshot's
    age_seconds: float | None = None
    max_staleness_seconds: float | None = None
    generation: int | None = None  # the state store change the control snapshot reflects


class FreezeView(_Answer):
    """One freeze (docs/control-plane.md): null space and client means everything."""

    id: str
    space: str | None
    client: str | None
    reason: str
    created_at: str | None = Field(alias="createdAt")
    created_by: str | None = Field(alias="createdBy")
    lifted_at: str | None = Field(alias="liftedAt")
    lifted_by: str | None = Field(alias="liftedBy")


class Readiness(_Answer):
    """GET /readyz: 200 ready, degraded (reads served read-only) or frozen (a global freeze:
    every vend gets 503 frozen with the reason), 503 not_ready. Active freezes are listed."""

    status: Literal["ready", "degraded", "frozen", "not_ready"]
    reason: str | None = None
    checks: dict[str, ReadinessCheck]
    freezes: list[FreezeView] | None = None


class RotationOutcome(_Answer):
    """200 from POST /v1/admin/rotations/{name}: what the forced run did. Key ids only."""

    credential: str
    result: str
    phase: str
    current_key_id: str | None = Field(alias="currentKeyId")
    old_key_id: str | None = Field(alias="oldKeyId")
    new_key_id: str | None = Field(alias="newKeyId")
    # The old key of a rotation left in progress, retired before this one began (or null).
    retired_key_id: str | None = Field(alias="retiredKeyId")
    stored_at: str | None = Field(alias="storedAt")
    next_due_at: str | None = Field(alias="nextDueAt")
    last_success_at: str | None = Field(alias="lastSuccessAt")


class RotationStatuses(_Answer):
    """GET /v1/admin/rotations: every managed key's status (rotation/status.py)."""

    credentials: list[ManagedKeyStatus]
