"""Admin views of leases and revocations. Admin clients only.

    GET  /v1/admin/leases?client=C&space=S&active=true&limit=N   leases, newest first
    POST /v1/admin/revocations   {"leaseId"|"client"|"space"|"issuedBefore": ..., "reason": ...}

The answer of a revocation says whether the object store refuses the revoked keys from now on
(`objectStoreEnforced`, with `detail`): Ceph RGW with leases.enforcer rgw-role-policy does;
otherwise the keys work until they expire and the answer says so.

400 for a malformed filter or body, 401 without a valid token, 403 for a client that is not an
admin, 404 for an unknown lease id, 409 when the object store could not hold one more denial
(revocation_too_large), 502/503 when the object store refused or did not answer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, model_validator

from credbroker.audit.replay import unexpired_leases
from credbroker.errors import CredbrokerError, InvalidRequest, StateStoreError
from credbroker.leases import LeaseFilter, Selector, check_name
from credbroker.web.admin import _admin
from credbroker.web.appkeys import RUNTIME, SETTINGS
from credbroker.web.handlers import _parse
from credbroker.web.schemas import _AuditText

log = logging.getLogger("credbroker.web.admin_leases")

MAX_LIMIT = 1000


class _Answer(BaseModel):
    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)


class LeaseView(_Answer):
    """One key or presigned URL handed out: ids, scope and times, never a secret."""

    lease_id: str = Field(alias="leaseId")
    kind: str
    client: str
    rule: str | None
    actor: str | None
    space: str | None
    bucket: str
    prefix: str
    object_key: str | None = Field(alias="objectKey")
    access: str
    ttl_seconds: int = Field(alias="ttlSeconds")
    issued_at: str = Field(alias="issuedAt")
    expires_at: str = Field(alias="expiresAt")
    mode: str
    source: str | None
    access_key_id: str | None = Field(alias="accessKeyId")
    state: str = Field(description="active, expired or revoked")
    revoked_at: str | None = Field(alias="revokedAt")
    revocation_id: str | None = Field(alias="revocationId")


class LeaseList(_Answer):
    """GET /v1/admin/leases."""

    leases: list[LeaseView]


class RevocationBody(BaseModel):
    """Exactly one selector, and an optional reason for the audit record."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        frozen=True,
        populate_by_name=False,
        json_schema_extra={"examples": [{"client": "confluence-export", "reason": "token leak"}]},
    )

    lease_id: str | None = Field(default=None, alias="leaseId", max_length=64)
    client: str | None = Field(default=None, max_length=128)
    space: str | None = Field(default=None, max_length=128)
    issued_before: str | None = Field(
        default=None, alias="issuedBefore", max_length=40, description="ISO 8601 with a zone"
    )
    reason: _AuditText | None = None

    @model_validator(mode="after")
    def _one_selector(self) -> RevocationBody:
        chosen = [v for v in (self.lease_id, self.client, self.space, self.issued_before) if v]
        if len(chosen) != 1:
            raise ValueError("give exactly one of leaseId, client, space, issuedBefore")
        return self

    def selector(self) -> tuple[Selector, str]:
        for selector, value in (
            (Selector.LEASE, self.lease_id),
            (Selector.CLIENT, self.client),
            (Selector.SPACE, self.space),
            (Selector.ISSUED_BEFORE, self.issued_before),
        ):
            if value:
                return selector, value
        raise AssertionError("validated: one selector")


class RevocationView(_Answer):
    """201 from POST /v1/admin/revocations: what was revoked and whether the object store
    refuses those keys from now on."""

    revocation_id: str = Field(alias="revocationId")
    selector: str
    value: str
    created_at: str = Field(alias="createdAt")
    created_by: str | None = Field(alias="createdBy")
    reason: str | None
    leases: int
    lease_ids: list[str] = Field(alias="leaseIds")
    enforce_until: str = Field(alias="enforceUntil")
    object_store_enforced: bool = Field(alias="objectStoreEnforced")
    detail: str


MODELS: list[tuple[type[BaseModel], Any]] = [
    (LeaseList, "serialization"),
    (RevocationBody, "validation"),
    (RevocationView, "serialization"),
]


def _runtime_parts(request: web.Request) -> Any:
    runtime = request.app[RUNTIME]
    if runtime.leases is None or runtime.revoker is None:
        raise StateStoreError("leases are not available (no state store)")
    return runtime


def _flag(value: str) -> bool:
    lowered = value.lower()
    if lowered in ("1", "true", "yes"):
        return True
    if lowered in ("0", "false", "no"):
        return False
    raise InvalidRequest("active must be true or false", code="invalid_field")


def lease_filter(query: Any, now: datetime) -> LeaseFilter:
    """The filter a query string (or the CLI's options) asks for; InvalidRequest if hostile."""
    known = {"client", "space", "active", "limit"}
    for name in query:
        if name not in known:
            raise InvalidRequest(f"unknown parameter {name[:40]!r}", code="invalid_field")
    client = query.get("client")
    space = query.get("space")
    limit_text = query.get("limit", str(MAX_LIMIT))
    if not limit_text.isdigit() or not 1 <= int(limit_text) <= MAX_LIMIT:
        raise InvalidRequest(f"limit must be 1 to {MAX_LIMIT}", code="invalid_field")
    return LeaseFilter(
        client=check_name(client, "client") if client is not None else None,
        space=check_name(space, "space") if space is not None else None,
        active_at=now if _flag(query.get("active", "false")) else None,
        limit=int(limit_text),
    )


async def list_leases(request: web.Request) -> web.Response:
    await _admin(request)
    runtime = _runtime_parts(request)
    now = datetime.now(UTC)
    wanted = lease_filter(request.query, now)
    if runtime.lease_writer is not None:
        await runtime.lease_writer.flush()  # this replica's latest leases are listed too
    found = await runtime.leases.find(wanted)
    answer = LeaseList.model_validate({"leases": [x.as_dict(now) for x in found]})
    return web.json_response(answer.model_dump(), headers={"Cache-Control": "no-store"})


async def create_revocation(request: web.Request) -> web.Response:
    admin = await _admin(request)
    runtime = _runtime_parts(request)
    body = await _parse(request, RevocationBody)
    selector, value = body.selector()
    answer = await runtime.revoker.revoke(selector, value, by=admin.id, reason=body.reason)
    view = RevocationView.model_validate(answer.as_dict())
    return web.json_response(view.model_dump(), status=201, headers={"Cache-Control": "no-store"})


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/v1/admin/leases", list_leases)
    router.add_post("/v1/admin/revocations", create_revocation)


async def lifecycle(app: web.Application) -> AsyncIterator[None]:
    """Restore leases the audit file holds and the table misses (a crash), start the batched
    writer and the pruning job; on shutdown stop the job and flush the writer."""
    runtime = app[RUNTIME]
    writer, jobs = runtime.lease_writer, runtime.lease_jobs
    if writer is None:
        yield
        return
    audit_path = app[SETTINGS].audit.path
    try:
        audited = await asyncio.to_thread(unexpired_leases, audit_path, datetime.now(UTC))
        await writer.reconcile(audited)
    except CredbrokerError as exc:
        log.error("leases not reconciled from the audit file: %s", exc.message)
    writer.start()
    if jobs is not None:
        await jobs.start()
    try:
        yield
    finally:
        if jobs is not None:
            await jobs.close()
        await writer.close()


def openapi_paths(
    json_content: Callable[[type[BaseModel], Any], dict[str, Any]],
    errors: dict[str, Any],
) -> dict[str, Any]:
    name = {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._@:-]{0,127}$"}
    return {
        "/v1/admin/leases": {
            "get": {
                "summary": "Leases: every key and presigned URL handed out (admin clients)",
                "security": [{"bearer": []}],
                "parameters": [
                    {"name": "client", "in": "query", "schema": name},
                    {"name": "space", "in": "query", "schema": name},
                    {"name": "active", "in": "query", "schema": {"type": "boolean"}},
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
                    },
                ],
                "responses": {
                    "200": {
                        "description": "newest first; key ids, never a secret",
                        "content": json_content(LeaseList, "serialization"),
                    },
                    **errors,
                },
            }
        },
        "/v1/admin/revocations": {
            "post": {
                "summary": "Revoke leases by id, client, space or issue time (admin clients)",
                "security": [{"bearer": []}],
                "requestBody": {
                    "required": True,
                    "content": json_content(RevocationBody, "validation"),
                },
                "responses": {
                    "201": {
                        "description": "revoked; objectStoreEnforced says if the keys stop now",
                        "content": json_content(RevocationView, "serialization"),
                    },
                    **errors,
                },
            }
        },
    }
