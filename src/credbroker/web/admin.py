"""Admin views: rotation of the broker's own keys. Clients with `admin: true` only.

    GET  /v1/admin/rotations          every managed credential's status (key ids, never secrets)
    POST /v1/admin/rotations/{name}   rotate now: a new key, stored by this request

POST first finishes a rotation left in progress (deletes its old key, proves it refused), then
rotates. `?end_grace=true` deletes that old key now even if its grace is not over (a leaked
key, runbooks/06-rotation.md); `?wait=true` waits out the grace periods, the new key's too, and
answers once the old key is deleted and refused. 200 with `result` waiting_grace (the new key
is in service, the key it replaced lives out its grace) or completed (with wait).

401 without a valid token, 403 for a client that is not an admin, 404 for an unknown name or
when no rotation is configured, 409 while another run holds the lock (rotation_busy), while
the rotation in progress is in its grace and neither end_grace nor wait was asked
(grace_not_over: no key was created or deleted), or when the secret store is read-only; 502
when the run failed (the message says which key is in service and whether a new one was
stored; the error is recorded and retried).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from credbroker.audit import context as audit_context
from credbroker.domain import Client, utc_text
from credbroker.errors import (
    InvalidRequest,
    NotAllowed,
    RotationBusy,
    RotationFailed,
    SecretStoreReadOnly,
)
from credbroker.rotation.model import Outcome, RunResult
from credbroker.rotation.rotate import Rotator
from credbroker.web import callers
from credbroker.web.appkeys import RUNTIME
from credbroker.web.schemas import RotationOutcome


async def _admin(request: web.Request) -> Client:
    client = await callers.authenticate(request)
    audit_context.CLIENT.set(client.id)  # the rotation records name who forced it
    if not client.admin:
        raise NotAllowed(f"client {client.id} is not an admin", code="admin_required")
    return client


def _rotator(request: web.Request) -> Rotator:
    runtime = request.app[RUNTIME]
    rotator = runtime.rotator
    if rotator is None and not runtime.secret_store.writable:
        raise SecretStoreReadOnly(
            f"the secret store ({runtime.secret_store.kind}) is read-only: its owner rotates the "
            "broker's keys (CyberArk: the CPM) and the broker follows; `credbroker rotation "
            "status` shows the keys in service"
        )
    if rotator is None:
        raise web.HTTPNotFound(reason="no rotation is configured")
    return rotator


async def list_rotations(request: web.Request) -> web.Response:
    await _admin(request)
    statuses = await _rotator(request).status()
    return web.json_response(
        {"credentials": [s.as_dict() for s in statuses]}, headers={"Cache-Control": "no-store"}
    )


async def rotate(request: web.Request) -> web.Response:
    await _admin(request)
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
    outcome = await rotator.run(
        name, force=True, wait=_flag(request, "wait"), end_grace=_flag(request, "end_grace")
    )
    record = outcome.record
    if outcome.result is RunResult.FAILED:
        raise RotationFailed(
            f"rotation of {name} failed: {record.last_error}; "
            f"{outcome.failure_detail(forced=True)}; retried at {utc_text(record.next_due_at)}"
        )
    if outcome.result is RunResult.GRACE_NOT_OVER:
        # 409 as for a held lock: the rotation in progress is in the way.
        raise RotationBusy(
            f"{name} not rotated, no key created or deleted: the rotation in progress keeps "
            f"old key {record.old_key_id} valid until {utc_text(record.next_due_at)} (its grace); "
            f"key {record.current_key_id} stays in service. ?end_grace=true deletes "
            f"{record.old_key_id} now and rotates; ?wait=true waits for the grace first",
            code=RunResult.GRACE_NOT_OVER.value,
        )
    answer = RotationOutcome.model_validate(_outcome(outcome)).model_dump()
    return web.json_response(answer, headers={"Cache-Control": "no-store"})


def _flag(request: web.Request, name: str) -> bool:
    return request.query.get(name, "false").lower() in ("1", "true", "yes")


def _outcome(outcome: Outcome) -> dict[str, Any]:
    record = outcome.record
    return {
        "credential": record.credential,
        "result": outcome.result,
        "phase": record.phase.value,
        "currentKeyId": record.current_key_id,
        "oldKeyId": record.old_key_id,
        "newKeyId": record.new_key_id,
        # The old key of a rotation left in progress, retired before this one began (or null).
        "retiredKeyId": outcome.retired_key_id,
        "storedAt": utc_text(record.stored_at),
        "nextDueAt": utc_text(record.next_due_at),
        "lastSuccessAt": utc_text(record.last_success_at),
    }
