"""Admin API of the live control plane: principals, their tokens, freezes. Admin role only.

    GET    /v1/admin/clients                         every principal (config seeds marked)
    POST   /v1/admin/clients                         add one to the state store (201)
    GET    /v1/admin/clients/{id}                    one, with its tokens (ids, hash prefix)
    PATCH  /v1/admin/clients/{id}                    change a store principal's limits
    DELETE /v1/admin/clients/{id}                    revoke it and every token it holds
    POST   /v1/admin/clients/{id}/tokens             issue a token: in this answer only (201)
    DELETE /v1/admin/clients/{id}/tokens/{token_id}  revoke one token
    GET    /v1/admin/freezes                         active freezes (?all=true: lifted too)
    POST   /v1/admin/freezes                         freeze a space, a client, or everything
    DELETE /v1/admin/freezes/{id}                    lift one

Every change is audited with the admin as actor ("api:<id>") and holds on every replica within
2 s. 400 for a malformed id, space, time or body; 404 for an unknown principal, token or
freeze; 409 for a principal that exists (or existed), a third usable token, or a principal
from the config file (config_principal: read-only here).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from credbroker.control import ClientChanges, ControlPlane, freeze_dict
from credbroker.domain import Access, Role, utc_text
from credbroker.errors import InvalidRequest
from credbroker.web.admin import _admin
from credbroker.web.appkeys import RUNTIME
from credbroker.web.handlers import _parse
from credbroker.web.schemas import FreezeView
from credbroker.web.schemas_principals import (
    ClientBody,
    ClientList,
    ClientPatch,
    ClientView,
    FreezeBody,
    FreezeList,
    IssuedToken,
    TokenBody,
)

_NO_STORE = {"Cache-Control": "no-store"}


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/v1/admin/clients", list_clients)
    router.add_post("/v1/admin/clients", add_client)
    router.add_get("/v1/admin/clients/{id}", show_client)
    router.add_patch("/v1/admin/clients/{id}", set_client)
    router.add_delete("/v1/admin/clients/{id}", revoke_client)
    router.add_post("/v1/admin/clients/{id}/tokens", issue_token)
    router.add_delete("/v1/admin/clients/{id}/tokens/{token_id}", revoke_token)
    router.add_get("/v1/admin/freezes", list_freezes)
    router.add_post("/v1/admin/freezes", add_freeze)
    router.add_delete("/v1/admin/freezes/{id}", lift_freeze)


async def _control(request: web.Request, *query: str) -> tuple[ControlPlane, str]:
    """The control plane and the actor ("api:<admin id>"); refuses a non-admin, and any
    query parameter the route does not take (refused, never ignored)."""
    client = await _admin(request)
    unknown = sorted(set(request.query) - set(query))
    if unknown:
        raise InvalidRequest(f"unknown query parameter {unknown[0]!r}"[:200], code="invalid_query")
    control = request.app[RUNTIME].control
    if control is None:
        raise web.HTTPNotFound(reason="no control plane in this runtime")
    return control, f"api:{client.id}"


def _json(model: type[BaseModel], data: Any, status: int = 200) -> web.Response:
    return web.json_response(
        model.model_validate(data).model_dump(), status=status, headers=_NO_STORE
    )


async def list_clients(request: web.Request) -> web.Response:
    control, _ = await _control(request)
    now = datetime.now(UTC)
    return _json(ClientList, {"clients": [v.as_dict(now) for v in await control.clients()]})


async def add_client(request: web.Request) -> web.Response:
    control, actor = await _control(request)
    body = await _parse(request, ClientBody)
    await control.add_client(
        actor,
        body.id,
        spaces=body.spaces,
        max_access=Access(body.max_access),
        max_ttl_seconds=body.max_ttl_seconds,
        roles=[Role(r) for r in body.roles],
        rate_per_second=body.rate_per_second,
        burst=body.burst,
    )
    view = await control.client(body.id)
    return _json(ClientView, view.as_dict(datetime.now(UTC)), status=201)


async def show_client(request: web.Request) -> web.Response:
    control, _ = await _control(request)
    view = await control.client(request.match_info["id"])
    return _json(ClientView, view.as_dict(datetime.now(UTC)))


async def set_client(request: web.Request) -> web.Response:
    control, actor = await _control(request)
    client_id = request.match_info["id"]
    body = await _parse(request, ClientPatch)
    await control.set_client(
        actor,
        client_id,
        ClientChanges(
            spaces=frozenset(body.spaces) if body.spaces is not None else None,
            max_access=Access(body.max_access) if body.max_access else None,
            max_ttl_seconds=body.max_ttl_seconds,
            roles=frozenset(Role(r) for r in body.roles) if body.roles is not None else None,
            rate_per_second=body.rate_per_second,
            burst=body.burst,
        ),
    )
    view = await control.client(client_id)
    return _json(ClientView, view.as_dict(datetime.now(UTC)))


async def revoke_client(request: web.Request) -> web.Response:
    control, actor = await _control(request)
    client_id = request.match_info["id"]
    await control.revoke_client(actor, client_id)
    view = await control.client(client_id)
    return _json(ClientView, view.as_dict(datetime.now(UTC)))


async def issue_token(request: web.Request) -> web.Response:
    control, actor = await _control(request)
    client_id = request.match_info["id"]
    body = await _parse(request, TokenBody) if request.body_exists else TokenBody()
    token, record = await control.issue_token(actor, client_id, expires_at=_expiry(body))
    answer = {
        "id": record.id,
        "client": client_id,
        "token": token,
        "expiresAt": utc_text(record.expires_at),
    }
    return _json(IssuedToken, answer, status=201)


async def revoke_token(request: web.Request) -> web.Response:
    control, actor = await _control(request)
    client_id = request.match_info["id"]
    await control.revoke_token(actor, client_id, request.match_info["token_id"])
    view = await control.client(client_id)
    return _json(ClientView, view.as_dict(datetime.now(UTC)))


async def list_freezes(request: web.Request) -> web.Response:
    control, _ = await _control(request, "all")
    every = _flag(request, "all")
    freezes = await control.freezes(active_only=not every)
    return _json(FreezeList, {"freezes": [freeze_dict(f) for f in freezes]})


async def add_freeze(request: web.Request) -> web.Response:
    control, actor = await _control(request)
    body = await _parse(request, FreezeBody)
    freeze = await control.freeze(
        actor, reason=body.reason, space=body.space, client_id=body.client
    )
    return _json(FreezeView, freeze_dict(freeze), status=201)


async def lift_freeze(request: web.Request) -> web.Response:
    control, actor = await _control(request)
    (lifted,) = await control.unfreeze(actor, freeze_id=request.match_info["id"])
    return _json(FreezeView, freeze_dict(lifted))


def _flag(request: web.Request, name: str) -> bool:
    value = request.query.get(name, "false").lower()
    if value not in ("1", "true", "yes", "0", "false", "no"):
        raise InvalidRequest(f"?{name}= is true or false", code="invalid_query")
    return value in ("1", "true", "yes")


def _expiry(body: TokenBody) -> datetime | None:
    if body.expires_at is not None and body.expires_in_seconds is not None:
        raise InvalidRequest(
            "give expires_at or expires_in_seconds, not both", code="invalid_expiry"
        )
    if body.expires_in_seconds is not None:
        return datetime.now(UTC) + timedelta(seconds=body.expires_in_seconds)
    if body.expires_at is None:
        return None
    try:
        moment = datetime.fromisoformat(body.expires_at)
    except ValueError:
        raise InvalidRequest(
            "expires_at is ISO 8601 with a time zone", code="invalid_expiry"
        ) from None
    if moment.tzinfo is None:
        raise InvalidRequest("expires_at needs a time zone (Z or +hh:mm)", code="invalid_expiry")
    return moment
