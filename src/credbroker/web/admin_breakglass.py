"""Break-glass on the admin API: thin views over breakglass.BreakGlass.

    POST /v1/admin/break-glass/requests                 an operator asks (201)
    GET  /v1/admin/break-glass/requests                 every request, newest first
    GET  /v1/admin/break-glass/requests/{id}            one request
    POST /v1/admin/break-glass/requests/{id}/approve    an approver, never the requester
    POST /v1/admin/break-glass/requests/{id}/deny       an approver, or the requester withdraws
    POST /v1/admin/break-glass/requests/{id}/shares     a custodian's escrow share {share}
    POST /v1/admin/break-glass/requests/{id}/collect    the requester, once: the key (201)
    POST /v1/admin/break-glass/requests/{id}/close      the after-action {outcome}

Each caller authenticates with their own token (CallerAuth); the use case checks roles.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from credbroker.audit import context as audit_context
from credbroker.breakglass import BreakGlass
from credbroker.domain import Access, BreakGlassRequest, Client, utc_text
from credbroker.web import callers
from credbroker.web.appkeys import RUNTIME
from credbroker.web.handlers import _parse
from credbroker.web.schemas import Credentials

PREFIX = "/v1/admin/break-glass/requests"
_ID = re.compile(r"bg-[0-9a-f]{16}")


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class BreakGlassRequestBody(_Body):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "space": "ENG",
                    "access": "write",
                    "ttl_seconds": 900,
                    "reason": "INC-123 restore the export",
                }
            ]
        }
    )

    space: Annotated[str, StringConstraints(max_length=256)]
    access: Literal["read", "write"]
    ttl_seconds: Annotated[int, Field(ge=1, le=7 * 24 * 3600)]
    prefix: Annotated[str, StringConstraints(max_length=1024)] | None = None
    reason: Annotated[str, StringConstraints(min_length=1, max_length=256)]


class ShareBody(_Body):
    share: Annotated[str, StringConstraints(max_length=200)] = Field(repr=False)


class CloseBody(_Body):
    outcome: Annotated[str, StringConstraints(min_length=1, max_length=1024)]


class BreakGlassView(BaseModel):
    """A break-glass request: ids, names and times, never a secret."""

    model_config = ConfigDict(extra="forbid", frozen=True, serialize_by_alias=True)

    id: str
    requester: str
    space: str
    access: Literal["read", "write"]
    prefix: str
    ttl_seconds: int = Field(alias="ttlSeconds")
    reason: str
    status: Literal["open", "approved", "denied", "collected", "expired", "closed"]
    approvals: list[str]
    approvals_required: int = Field(alias="approvalsRequired")
    created_at: str = Field(alias="createdAt")
    approve_by: str = Field(alias="approveBy")
    collect_by: str | None = Field(alias="collectBy")
    collected_at: str | None = Field(alias="collectedAt")
    key_id: str | None = Field(alias="keyId")
    key_expires_at: str | None = Field(alias="keyExpiresAt")
    used_escrow: bool = Field(alias="usedEscrow")
    shares_submitted: int = Field(alias="sharesSubmitted")
    denied_by: str | None = Field(alias="deniedBy")
    closed_by: str | None = Field(alias="closedBy")
    outcome: str | None
    rotation: str | None = None  # close: what the rotation of the escrowed key said
    mode: Literal["break-glass"] = "break-glass"


class BreakGlassList(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    requests: list[BreakGlassView]


class ShareReceipt(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, serialize_by_alias=True)

    request_id: str = Field(alias="requestId")
    custodian: int
    submitted: int
    threshold: int


def _use_case(request: web.Request) -> BreakGlass:
    break_glass = request.app[RUNTIME].break_glass
    if break_glass is None:
        raise web.HTTPNotFound(reason="break-glass is not configured")
    return break_glass


async def _caller(request: web.Request) -> Client:
    client = await callers.authenticate(request)
    audit_context.CLIENT.set(client.id)
    return client


def _request_id(request: web.Request) -> str:
    value = request.match_info["id"]
    if not _ID.fullmatch(value):
        raise web.HTTPNotFound(reason="no such break-glass request")
    return value


def _view(use_case: BreakGlass, item: BreakGlassRequest, rotation: str | None = None) -> Any:
    view = BreakGlassView(
        id=item.id,
        requester=item.requester,
        space=item.space,
        access=item.access.value,
        prefix=item.prefix,
        ttlSeconds=item.ttl_seconds,
        reason=item.reason,
        status=item.status.value,
        approvals=list(item.approvals),
        approvalsRequired=use_case.rules.approvals_required,
        createdAt=str(utc_text(item.created_at)),
        approveBy=str(utc_text(item.approve_by)),
        collectBy=utc_text(item.collect_by),
        collectedAt=utc_text(item.collected_at),
        keyId=item.key_id,
        keyExpiresAt=utc_text(item.key_expires_at),
        usedEscrow=item.used_escrow,
        sharesSubmitted=use_case.shares_submitted(item.id),
        deniedBy=item.denied_by,
        closedBy=item.closed_by,
        outcome=item.outcome,
        rotation=rotation,
    )
    return view.model_dump()


def _answer(body: Any, status: int = 200) -> web.Response:
    return web.json_response(body, status=status, headers={"Cache-Control": "no-store"})


async def create_request(request: web.Request) -> web.Response:
    use_case = _use_case(request)
    client = await _caller(request)
    body = await _parse(request, BreakGlassRequestBody)
    made = await use_case.request(
        client,
        space=body.space,
        access=Access(body.access),
        ttl_seconds=body.ttl_seconds,
        prefix=body.prefix,
        reason=body.reason,
        source=request.remote,
    )
    return _answer(_view(use_case, made), 201)


async def list_requests(request: web.Request) -> web.Response:
    use_case = _use_case(request)
    client = await _caller(request)
    items = await use_case.list(client)
    return _answer({"requests": [_view(use_case, i) for i in items]})


async def show_request(request: web.Request) -> web.Response:
    use_case = _use_case(request)
    client = await _caller(request)
    return _answer(_view(use_case, await use_case.get(client, _request_id(request))))


async def approve(request: web.Request) -> web.Response:
    use_case = _use_case(request)
    client = await _caller(request)
    item = await use_case.approve(client, _request_id(request), source=request.remote)
    return _answer(_view(use_case, item))


async def deny(request: web.Request) -> web.Response:
    use_case = _use_case(request)
    client = await _caller(request)
    item = await use_case.deny(client, _request_id(request), source=request.remote)
    return _answer(_view(use_case, item))


async def submit_share(request: web.Request) -> web.Response:
    use_case = _use_case(request)
    client = await _caller(request)
    request_id = _request_id(request)
    body = await _parse(request, ShareBody)
    accepted = await use_case.submit_share(client, request_id, body.share, source=request.remote)
    receipt = ShareReceipt(
        requestId=request_id,
        custodian=accepted.index,
        submitted=accepted.submitted,
        threshold=accepted.threshold,
    )
    return _answer(receipt.model_dump())


async def collect(request: web.Request) -> web.Response:
    use_case = _use_case(request)
    client = await _caller(request)
    got = await use_case.collect(client, _request_id(request), source=request.remote)
    c = got.credentials
    answer = Credentials(
        accessKeyId=c.access_key_id,
        secretAccessKey=c.secret_access_key,
        sessionToken=c.session_token,
        expiration=str(utc_text(c.expiration)),
        endpoint=got.endpoint,
        region=got.region,
        bucket=got.scope.bucket,
        prefix=got.scope.prefix,
        access=got.scope.access.value,
        leaseId=got.request.id,
        mode=got.mode.value,
    )
    return _answer(answer.model_dump(), 201)


async def close(request: web.Request) -> web.Response:
    use_case = _use_case(request)
    client = await _caller(request)
    request_id = _request_id(request)
    body = await _parse(request, CloseBody)
    closed = await use_case.close(client, request_id, outcome=body.outcome, source=request.remote)
    return _answer(_view(use_case, closed.request, closed.rotation))


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_post(PREFIX, create_request)
    router.add_get(PREFIX, list_requests)
    router.add_get(PREFIX + "/{id}", show_request)
    router.add_post(PREFIX + "/{id}/approve", approve)
    router.add_post(PREFIX + "/{id}/deny", deny)
    router.add_post(PREFIX + "/{id}/shares", submit_share)
    router.add_post(PREFIX + "/{id}/collect", collect)
    router.add_post(PREFIX + "/{id}/close", close)


# --- OpenAPI (web/openapi.py adds these) ------------------------------------------------------

OPENAPI_MODELS: list[tuple[type[BaseModel], Literal["validation", "serialization"]]] = [
    (BreakGlassRequestBody, "validation"),
    (ShareBody, "validation"),
    (CloseBody, "validation"),
    (BreakGlassView, "serialization"),
    (BreakGlassList, "serialization"),
    (ShareReceipt, "serialization"),
]


def openapi_paths(content: Any, errors: dict[str, Any]) -> dict[str, Any]:
    """The break-glass routes; `content(model, mode)` is the document's schema reference."""
    id_param = [
        {
            "name": "id",
            "in": "path",
            "required": True,
            "schema": {"type": "string", "pattern": "^bg-[0-9a-f]{16}$"},
        }
    ]

    def op(
        summary: str,
        answer: type[BaseModel],
        *,
        status: str = "200",
        body: type[BaseModel] | None = None,
        params: bool = True,
    ) -> dict[str, Any]:
        operation: dict[str, Any] = {
            "summary": summary,
            "security": [{"bearer": []}],
            "responses": {
                status: {
                    "description": answer.__doc__ or summary,
                    "content": content(answer, "serialization"),
                },
                **errors,
            },
        }
        if params:
            operation["parameters"] = id_param
        if body is not None:
            operation["requestBody"] = {"required": True, "content": content(body, "validation")}
        return operation

    one = PREFIX + "/{id}"
    return {
        PREFIX: {
            "post": op(
                "Ask for a break-glass key (operators)",
                BreakGlassView,
                status="201",
                body=BreakGlassRequestBody,
                params=False,
            ),
            "get": op("Every break-glass request, newest first", BreakGlassList, params=False),
        },
        one: {"get": op("One break-glass request", BreakGlassView)},
        one + "/approve": {"post": op("Approve (approvers, never the requester)", BreakGlassView)},
        one + "/deny": {
            "post": op("Deny (approvers), or withdraw (the requester)", BreakGlassView)
        },
        one + "/shares": {
            "post": op("Submit one custodian's escrow share", ShareReceipt, body=ShareBody)
        },
        one + "/collect": {
            "post": op("Collect the key, once (the requester)", Credentials, status="201")
        },
        one + "/close": {"post": op("Record the after-action", BreakGlassView, body=CloseBody)},
    }
