"""Thin views: parse, authenticate, call the broker, shape the answer."""

from __future__ import annotations

import json
from datetime import datetime
from typing import TypeVar

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ValidationError

from credbroker.audit import context as audit_context
from credbroker.domain import Access, Client, utc_text
from credbroker.errors import InvalidRequest
from credbroker.vend import PresignRequest, VendRequest
from credbroker.web import callers, openapi
from credbroker.web.appkeys import CLIENT, METRICS, RUNTIME
from credbroker.web.errors import ClientGone
from credbroker.web.schemas import (
    Credentials,
    CredentialsBody,
    Health,
    PresignBody,
    PresignedUrl,
    Readiness,
)

Body = TypeVar("Body", bound=BaseModel)


async def _client(request: web.Request) -> Client:
    client = request.get(CLIENT)  # the rate limiter checked the token already
    if client is None:
        client = await callers.authenticate(request)
    audit_context.CLIENT.set(client.id)  # later audit records of this request name it
    return client


async def _parse(request: web.Request, model: type[Body]) -> Body:
    if request.content_type != "application/json":
        raise web.HTTPUnsupportedMediaType(reason="send Content-Type: application/json")
    try:
        raw = await request.read()  # aiohttp enforces client_max_size here (413)
    except ConnectionResetError:  # the client hung up mid-body
        raise ClientGone from None
    try:
        data = json.loads(raw)
    except ValueError:  # also UnicodeDecodeError, and an integer past int_max_str_digits
        raise InvalidRequest("body is not valid JSON", code="invalid_json") from None
    except RecursionError:  # nesting past the parser's limit (well past any body of ours)
        raise InvalidRequest("body nests too deep", code="invalid_json") from None
    if not isinstance(data, dict):
        raise InvalidRequest("body must be a JSON object", code="invalid_json")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}"
            for e in exc.errors(include_url=False, include_input=False)
        )
        raise InvalidRequest(problems, code="invalid_field") from None


async def create_credentials(request: web.Request) -> web.Response:
    client = await _client(request)
    body = await _parse(request, CredentialsBody)
    vended = await request.app[RUNTIME].broker.vend(
        client,
        VendRequest(
            space=body.space,
            access=Access(body.access),
            ttl_seconds=body.ttl_seconds,
            prefix=body.prefix,
            reason=body.reason,
            rule=body.rule,
            actor=body.actor,
        ),
    )
    c = vended.credentials
    answer = Credentials(
        accessKeyId=c.access_key_id,
        secretAccessKey=c.secret_access_key,
        sessionToken=c.session_token,
        expiration=_timestamp(c.expiration),
        endpoint=vended.endpoint,
        region=vended.region,
        bucket=vended.scope.bucket,
        prefix=vended.scope.prefix,
        access=vended.scope.access.value,
        leaseId=vended.lease_id,
        mode=vended.mode.value,
    )
    return _created(answer)


async def create_presigned_url(request: web.Request) -> web.Response:
    client = await _client(request)
    body = await _parse(request, PresignBody)
    presigned = await request.app[RUNTIME].broker.presign(
        client,
        PresignRequest(
            space=body.space,
            key=body.key,
            method=body.method,
            ttl_seconds=body.ttl_seconds,
            reason=body.reason,
            rule=body.rule,
            actor=body.actor,
        ),
    )
    answer = PresignedUrl(
        url=presigned.url,
        method=body.method,  # what was signed (vend.py signs request.method)
        expiresAt=_timestamp(presigned.expires_at),
        bucket=presigned.scope.bucket,
        key=presigned.key,
        leaseId=presigned.lease_id,
        mode=presigned.mode.value,
    )
    return _created(answer)


def _created(answer: BaseModel) -> web.Response:
    """201 with the answer serialised by pydantic-core (a third of json_response's cost on
    every vend); never cached: it holds a secret."""
    return web.Response(
        body=answer.model_dump_json().encode(),
        status=201,
        content_type="application/json",
        charset="utf-8",
        headers={"Cache-Control": "no-store"},
    )


def _timestamp(moment: datetime) -> str:
    return str(utc_text(moment))


async def healthz(request: web.Request) -> web.Response:
    return web.json_response(Health(status="ok").model_dump())


async def openapi_document(request: web.Request) -> web.Response:
    return web.json_response(openapi.document())


async def readyz(request: web.Request) -> web.Response:
    """200 "ready"; 200 "degraded" while the secret store is unreachable but the read-only
    fallback serves reads (they work, so stay in rotation); 503 "not_ready" otherwise. From a
    cached, single-flight probe (web/readiness.py): a flood of these never reaches upstream."""
    status, body = await request.app[RUNTIME].readiness.report()
    # Through the model the OpenAPI document describes: the answer cannot drift from it.
    return web.json_response(
        Readiness.model_validate(body).model_dump(exclude_none=True), status=status
    )


async def metrics(request: web.Request) -> web.Response:
    body = request.app[METRICS].exposition()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
