"""Bodies and answers of the control plane's admin routes (web/admin_principals.py), and their
OpenAPI paths (web/openapi.py adds them to the served description)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StringConstraints

from credbroker.web.schemas import FreezeView

_Id = Annotated[str, StringConstraints(max_length=64)]
_Space = Annotated[str, StringConstraints(max_length=256)]
_RoleName = Literal["rule", "operator", "approver", "admin"]


def _rule_only() -> list[_RoleName]:
    return ["rule"]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class _Answer(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, serialize_by_alias=True)


class ClientBody(_Body):
    """POST /v1/admin/clients: a new principal. Spaces must exist in the config."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"id": "rule-eng-export", "spaces": ["ENG"], "max_access": "write"}]
        }
    )

    id: _Id
    spaces: list[_Space] = Field(min_length=1, max_length=256)
    max_access: Literal["read", "write"] = "read"
    max_ttl_seconds: StrictInt = 3600
    roles: list[_RoleName] = Field(default_factory=_rule_only, min_length=1, max_length=4)
    rate_per_second: StrictFloat | StrictInt | None = None
    burst: StrictInt | None = None


class ClientPatch(_Body):
    """PATCH /v1/admin/clients/{id}: what changes (absent: unchanged)."""

    spaces: list[_Space] | None = Field(default=None, min_length=1, max_length=256)
    max_access: Literal["read", "write"] | None = None
    max_ttl_seconds: StrictInt | None = None
    roles: list[_RoleName] | None = Field(default=None, min_length=1, max_length=4)
    rate_per_second: StrictFloat | StrictInt | None = None
    burst: StrictInt | None = None


class TokenBody(_Body):
    """POST /v1/admin/clients/{id}/tokens: an optional expiry, as a time or a lifetime."""

    expires_at: Annotated[str, StringConstraints(max_length=64)] | None = Field(
        default=None, description="ISO 8601 with a time zone"
    )
    expires_in_seconds: StrictInt | None = Field(default=None, ge=1, le=400 * 86400)


class FreezeBody(_Body):
    """POST /v1/admin/freezes: neither space nor client freezes everything."""

    space: _Space | None = None
    client: _Id | None = None
    reason: Annotated[str, StringConstraints(min_length=1, max_length=500)]


class TokenView(_Answer):
    id: str
    hash_prefix: str = Field(alias="hashPrefix", description="the first 8 hex digits only")
    created_at: str | None = Field(alias="createdAt")
    expires_at: str | None = Field(alias="expiresAt")
    revoked_at: str | None = Field(alias="revokedAt")
    usable: bool


class ClientView(_Answer):
    """A principal: source "store" (managed here) or "config" (read-only seed)."""

    id: str
    source: Literal["store", "config"]
    roles: list[str]
    spaces: list[str]
    max_access: str = Field(alias="maxAccess")
    max_ttl_seconds: int = Field(alias="maxTtlSeconds")
    rate_per_second: float | None = Field(alias="ratePerSecond")
    burst: int | None
    created_at: str | None = Field(alias="createdAt")
    updated_at: str | None = Field(alias="updatedAt")
    revoked_at: str | None = Field(alias="revokedAt")
    created_by: str | None = Field(alias="createdBy")
    tokens: list[TokenView]


class ClientList(_Answer):
    clients: list[ClientView]


class IssuedToken(_Answer):
    """201: the token, shown in this answer only (the broker keeps its SHA-256)."""

    id: str
    client: str
    token: str
    expires_at: str | None = Field(alias="expiresAt")


class FreezeList(_Answer):
    freezes: list[FreezeView]


OPENAPI_MODELS: list[tuple[type[BaseModel], Literal["validation", "serialization"]]] = [
    (ClientBody, "validation"),
    (ClientPatch, "validation"),
    (TokenBody, "validation"),
    (FreezeBody, "validation"),
    (ClientView, "serialization"),
    (ClientList, "serialization"),
    (IssuedToken, "serialization"),
    (FreezeView, "serialization"),
    (FreezeList, "serialization"),
]


JsonContent = Callable[[type[BaseModel], Literal["validation", "serialization"]], dict[str, Any]]
_ID = {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$"}


def openapi_paths(json_content: JsonContent, errors: Mapping[str, Any]) -> dict[str, Any]:
    def op(
        summary: str,
        answer: type[BaseModel],
        status: str = "200",
        body: type[BaseModel] | None = None,
        params: tuple[str, ...] = (),
        query: tuple[str, ...] = (),
    ) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "summary": summary + " (admin role)",
            "security": [{"bearer": []}],
            "responses": {
                status: {
                    "description": answer.__doc__ or summary,
                    "content": json_content(answer, "serialization"),
                },
                **errors,
            },
        }
        parameters = [
            {"name": name, "in": "path", "required": True, "schema": _ID} for name in params
        ] + [{"name": name, "in": "query", "schema": {"type": "boolean"}} for name in query]
        if parameters:
            spec["parameters"] = parameters
        if body is not None:
            spec["requestBody"] = {"required": True, "content": json_content(body, "validation")}
        return spec

    return {
        "/v1/admin/clients": {
            "get": op("Every principal, config seeds marked", ClientList),
            "post": op("Add a principal to the state store", ClientView, "201", ClientBody),
        },
        "/v1/admin/clients/{id}": {
            "get": op("One principal and its tokens (ids only)", ClientView, params=("id",)),
            "patch": op(
                "Change a principal's limits", ClientView, body=ClientPatch, params=("id",)
            ),
            "delete": op("Revoke a principal and its tokens", ClientView, params=("id",)),
        },
        "/v1/admin/clients/{id}/tokens": {
            "post": op("Issue a token (shown once)", IssuedToken, "201", TokenBody, ("id",)),
        },
        "/v1/admin/clients/{id}/tokens/{token_id}": {
            "delete": op("Revoke one token", ClientView, params=("id", "token_id")),
        },
        "/v1/admin/freezes": {
            "get": op("Active freezes (all=true: lifted too)", FreezeList, query=("all",)),
            "post": op("Freeze a space, a client or everything", FreezeView, "201", FreezeBody),
        },
        "/v1/admin/freezes/{id}": {
            "delete": op("Lift a freeze", FreezeView, params=("id",)),
        },
    }
