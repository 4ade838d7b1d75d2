"""The break-glass views behind the error middleware, on the use case over fakes: each caller
authenticated by their own token, the refusals mapped to their status and code (401, 403
self_approval, 404 for a malformed id, 409 already_collected, 503 escrow_sealed with
Retry-After), and one audit record per decision (the use case's, never a second one)."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any, cast

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from credbroker.audit.context import RequestAudit
from credbroker.callers.composite import CallerAuthChain
from credbroker.callers.tokens import TokenAuth
from credbroker.domain import Access, Client, Role
from credbroker.observability import Metrics
from credbroker.web import admin_breakglass
from credbroker.web.appkeys import METRICS, RUNTIME
from credbroker.web.errors import error_middleware
from credbroker.wiring import Runtime
from tests.fakes import DOWN
from tests.unit.test_breakglass import World

PEOPLE = {
    "ann": (Role.OPERATOR, Role.APPROVER),
    "bob": (Role.APPROVER,),
    "carol": (Role.APPROVER,),
}


def token(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer cbk_{name}-token"}


@pytest.fixture
async def served() -> AsyncIterator[tuple[TestClient[Any, Any], World]]:
    world = World()
    audit = RequestAudit(world.audit)
    world.glass._audit = audit
    clients = [
        (
            hashlib.sha256(f"cbk_{name}-token".encode()).hexdigest(),
            Client(name, frozenset({"ENG"}), Access.READ, 3600, frozenset(roles)),
        )
        for name, roles in PEOPLE.items()
    ]
    app = web.Application(middlewares=[error_middleware])
    app[METRICS] = Metrics()
    app[RUNTIME] = cast(
        Runtime,
        SimpleNamespace(
            caller_auth=CallerAuthChain(TokenAuth(clients)), break_glass=world.glass, audit=audit
        ),
    )
    admin_breakglass.add_routes(app.router)
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        yield client, world
    finally:
        await client.close()


async def test_the_views_map_each_refusal_and_audit_it_once(
    served: tuple[TestClient[Any, Any], World],
) -> None:
    client, world = served
    base = admin_breakglass.PREFIX
    body = {"space": "ENG", "access": "write", "ttl_seconds": 900, "reason": "INC-9"}
    assert (await client.post(base, json=body)).status == 401
    made = await client.post(base, json=body, headers=token("ann"))
    assert made.status == 201
    rid = (await made.json())["id"]
    assert (await client.post(f"{base}/../approve", headers=token("bob"))).status == 404
    assert (await client.post(f"{base}/bg-nothex/approve", headers=token("bob"))).status == 404

    self_approval = await client.post(f"{base}/{rid}/approve", headers=token("ann"))
    assert self_approval.status == 403
    assert (await self_approval.json())["error"]["code"] == "self_approval"
    for approver in ("bob", "carol"):
        assert (await client.post(f"{base}/{rid}/approve", headers=token(approver))).status == 200

    world.secrets.down = DOWN
    sealed = await client.post(f"{base}/{rid}/collect", headers=token("ann"))
    assert sealed.status == 503 and sealed.headers["Retry-After"] == "30"
    for share in ("share-1", "share-2", "share-3"):
        answer = await client.post(
            f"{base}/{rid}/shares", json={"share": share}, headers=token("bob")
        )
        assert answer.status == 200
    key = await client.post(f"{base}/{rid}/collect", headers=token("ann"))
    assert key.status == 201 and key.headers["Cache-Control"] == "no-store"
    got = await key.json()
    assert (got["mode"], got["leaseId"], got["prefix"]) == ("break-glass", rid, "ENG/")
    again = await client.post(f"{base}/{rid}/collect", headers=token("ann"))
    assert again.status == 409 and (await again.json())["error"]["code"] == "already_collected"

    listed = await (await client.get(base, headers=token("carol"))).json()
    assert [r["status"] for r in listed["requests"]] == ["collected"]
    assert listed["requests"][0]["usedEscrow"] is True

    steps = [(e["event"], e.get("step"), e.get("outcome")) for e in world.audit.events]
    assert steps.count(("break_glass", "collect", "already_collected")) == 1
    assert ("refused", None, None) in steps  # the 401, recorded by the web layer
    assert not [e for e in world.audit.events if e.get("status") == 409]  # not twice
    assert all(e.get("source") == "127.0.0.1" for e in world.audit.events)
    assert "share-1" not in repr(world.audit.events)
