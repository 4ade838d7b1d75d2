"""Request bodies. Unknown fields are refused; types are strict (no "900" for 900)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StringConstraints

# Free-text audit fields: printable, bounded. They never reach a policy.
_AuditText = Annotated[str, StringConstraints(max_length=256, pattern=r"^[^\x00-\x1f\x7f]*$")]
_Ttl = Annotated[StrictInt, Field(ge=1, le=7 * 24 * 3600)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class CredentialsBody(_Body):
    space: Annotated[str, StringConstraints(max_length=256)]
    access: Literal["read", "write"]
    ttl_seconds: _Ttl | None = None
    prefix: Annotated[str, StringConstraints(max_length=1024)] | None = None
    reason: _AuditText | None = None
    rule: _AuditText | None = None
    actor: _AuditText | None = None


class PresignBody(_Body):
    space: Annotated[str, StringConstraints(max_length=256)]
    key: Annotated[str, StringConstraints(min_length=1, max_length=2048)]
    method: Literal["GET", "PUT"]
    ttl_seconds: _Ttl | None = None
    reason: _AuditText | None = None
    rule: _AuditText | None = None
    actor: _AuditText | None = None
