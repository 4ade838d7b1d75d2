"""Admin views: rotation of the broker's own keys. Clients with `admin: true` only.

    GET  /v1/admin/rotations          every managed credential's status (key ids, never secrets)
    POST /v1/admin/rotations/{name}   rotate now (?wait=true also waits out the grace period)

401 without a valid token, 403 for a client that is not an admin, 404 for an unknown name or
when no rotation is configured, 409 while another run holds the lock or when the secret store
is read-only, 502 when the run failed (the old key stays in service; the error is recorded).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from credbroker.domain import Client
from credbroker.errors import (
    InvalidRequest,
    NotAllowed,
    RotationFailed,
    SecretStoreReadOnly,
)
from credbroker.rotation.model import Outcome, RunResult
from credbroker.rotation.rotate import Rotator
from credbroker.web.appkeys import RUNTIME


def _admin(request: web.Request) -> Client:
    client = request.app[RUNTIME].caller_auth.authenticate(request.headers.get("Authorization"))
    if not client.admin:
        raise NotAllowed(f"client {client.id} is not an admin", code="admin_required")
    return client


def _rotator(request: web.Request) -> Rotator:
    rotator = request.app[RUNTIME].rotator
    if rotator is None:
        raise web.HTTPNotFound(reason="no rotation is configured")
    return rotator


async def list_rotations(request: web.Request) -> web.Response:
    _admin(request)
    statuses = await _rotator(request).status()
    return web.json_response(
        {"credentials": [s.as_dict() for s in statuses]}, headers={"Cache-Control": "no-store"}
    )


async def rotate(request: web.Request) -> web.Response:
    _admin(request)
    rotator = _rotator(request)
    name = request.match_info["name"]
    try:
        rotator.credential(name)
    except InvalidRequest:
        raise web.HTTPNotFound(reason=f"no managed credential named {name}") from None
    if not rotator.writable:
        raise SecretStoreReadOnly(
            "the secret store is read-only: its owner rotates this key, the broker only follows"
        )
    wait = request.query.get("wait", "false").lower() in ("1", "true", "yes")
    outcome = await rotator.run(name, force=True, wait=wait)
    if outcome.result is RunResult.FAILED:
        raise RotationFailed(
            f"rotation of {name} failed: {outcome.record.last_error}; the old key stays in "
            "service and the run is retried with backoff"
        )
    return web.json_response(_outcome(outcome), headers={"Cache-Control": "no-store"})


def _outcome(outcome: Outcome) -> dict[str, Any]:
    record = outcome.record

    def iso(value: Any) -> str | None:
        return value.isoformat().replace("+00:00", "Z") if value is not None else None

    return {
        "credential": record.credential,
        "result": outcome.result,
        "phase": record.phase.value,
        "currentKeyId": record.current_key_id,
        "oldKeyId": record.old_key_id,
        "newKeyId": record.new_key_id,
        "storedAt": iso(record.stored_at),
        "nextDueAt": iso(record.next_due_at),
        "lastSuccessAt": iso(record.last_success_at),
    }
