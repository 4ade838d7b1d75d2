"""The control plane's admin API on the real broker (real RGW, SQLite state): hostile ids,
names, spaces, times, bodies, unicode and SQL-ish strings get a 4xx in the one error
envelope, never a 5xx; nothing hostile reaches the store; the admin role is required.

Also: two control planes on one SQLite file (two brokers on one host) follow each other by
polling, and a principal added through the API vends a working key on RGW.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from credbroker.web.appkeys import RUNTIME
from support.rgw_server import RgwServer
from tests.integration.conftest import Harness, start_broker

pytestmark = pytest.mark.rgw

ROOT = "root"


@pytest.fixture
async def admin(rgw: RgwServer, buckets: tuple[str, str], tmp_path: Path) -> AsyncIterator[Harness]:
    async with contextlib.aclosing(start_broker(rgw, tmp_path, admin_clients=[ROOT])) as brokers:
        async for harness in brokers:
            yield harness


async def send(
    harness: Harness,
    method: str,
    path: str,
    body: Any = None,
    *,
    raw: bytes | None = None,
    who: str = ROOT,
    content_type: str = "application/json",
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {harness.tokens[who]}"}
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    if data is not None:
        headers["Content-Type"] = content_type
    async with harness.client.request(method, path, data=data, headers=headers) as response:
        text = await response.text()
        return response.status, json.loads(text) if text else None


GOOD = {"id": "rule-ok", "spaces": ["ENG"]}
SQLISH = "x'); DROP TABLE principals; --"

HOSTILE_BODIES: list[tuple[str, str, Any]] = [
    # (what, path, body)
    ("id too long", "/v1/admin/clients", {**GOOD, "id": "a" * 65}),
    ("id empty", "/v1/admin/clients", {**GOOD, "id": ""}),
    ("id sql-ish", "/v1/admin/clients", {**GOOD, "id": SQLISH}),
    ("id unicode", "/v1/admin/clients", {**GOOD, "id": "rülé"}),
    ("id with slash", "/v1/admin/clients", {**GOOD, "id": "../admin"}),
    ("id NUL", "/v1/admin/clients", {**GOOD, "id": "a\u0000b"}),
    ("id number", "/v1/admin/clients", {**GOOD, "id": 12}),
    ("no spaces", "/v1/admin/clients", {**GOOD, "spaces": []}),
    ("unknown space", "/v1/admin/clients", {**GOOD, "spaces": ["NOPE"]}),
    ("space sql-ish", "/v1/admin/clients", {**GOOD, "spaces": [SQLISH]}),
    ("space traversal", "/v1/admin/clients", {**GOOD, "spaces": ["ENG/../OPS"]}),
    ("space bidi", "/v1/admin/clients", {**GOOD, "spaces": ["ENG\u202e"]}),
    ("space wildcard", "/v1/admin/clients", {**GOOD, "spaces": ["*"]}),
    ("spaces not a list", "/v1/admin/clients", {**GOOD, "spaces": "ENG"}),
    ("ten thousand spaces", "/v1/admin/clients", {**GOOD, "spaces": ["ENG"] * 10_000}),
    ("access admin", "/v1/admin/clients", {**GOOD, "max_access": "admin"}),
    ("role root", "/v1/admin/clients", {**GOOD, "roles": ["root"]}),
    ("no roles", "/v1/admin/clients", {**GOOD, "roles": []}),
    ("ttl as text", "/v1/admin/clients", {**GOOD, "max_ttl_seconds": "900"}),
    ("ttl too long", "/v1/admin/clients", {**GOOD, "max_ttl_seconds": 10**30}),
    ("ttl below STS", "/v1/admin/clients", {**GOOD, "max_ttl_seconds": 1}),
    ("ttl bool", "/v1/admin/clients", {**GOOD, "max_ttl_seconds": True}),
    ("rate negative", "/v1/admin/clients", {**GOOD, "rate_per_second": -1}),
    ("rate huge", "/v1/admin/clients", {**GOOD, "rate_per_second": 1e300}),
    ("burst zero", "/v1/admin/clients", {**GOOD, "burst": 0}),
    ("unknown field", "/v1/admin/clients", {**GOOD, "admin": True}),
    ("expiry past", "/v1/admin/clients/rule-ok/tokens", {"expires_at": "2020-01-01T00:00Z"}),
    ("expiry no zone", "/v1/admin/clients/rule-ok/tokens", {"expires_at": "2027-01-01T00:00"}),
    ("expiry nonsense", "/v1/admin/clients/rule-ok/tokens", {"expires_at": "tomorrow"}),
    ("expiry month 13", "/v1/admin/clients/rule-ok/tokens", {"expires_at": "2027-13-01T00:00Z"}),
    ("expiry year 9999", "/v1/admin/clients/rule-ok/tokens", {"expires_at": "9999-12-31T23:59Z"}),
    (
        "expiry wide digits",
        "/v1/admin/clients/rule-ok/tokens",
        {"expires_at": "\uff12\uff10\uff12\uff17-01-01"},
    ),
    ("expiry huge text", "/v1/admin/clients/rule-ok/tokens", {"expires_at": "2" * 5000}),
    (
        "expiry both",
        "/v1/admin/clients/rule-ok/tokens",
        {"expires_at": "2027-01-01T00:00Z", "expires_in_seconds": 60},
    ),
    ("expiry seconds 0", "/v1/admin/clients/rule-ok/tokens", {"expires_in_seconds": 0}),
    ("expiry seconds huge", "/v1/admin/clients/rule-ok/tokens", {"expires_in_seconds": 10**20}),
    ("freeze no reason", "/v1/admin/freezes", {"space": "ENG"}),
    ("freeze empty reason", "/v1/admin/freezes", {"reason": "  "}),
    ("freeze long reason", "/v1/admin/freezes", {"reason": "x" * 501}),
    ("freeze reason newline", "/v1/admin/freezes", {"reason": "a\nb"}),
    ("freeze reason bidi", "/v1/admin/freezes", {"reason": "a\u202eb"}),
    ("freeze unknown space", "/v1/admin/freezes", {"reason": "r", "space": "NOPE"}),
    ("freeze space sql-ish", "/v1/admin/freezes", {"reason": "r", "space": SQLISH}),
    ("freeze unknown client", "/v1/admin/freezes", {"reason": "r", "client": "nobody"}),
    ("freeze client unicode", "/v1/admin/freezes", {"reason": "r", "client": "ünï"}),
    ("freeze client sql-ish", "/v1/admin/freezes", {"reason": "r", "client": SQLISH}),
]

HOSTILE_PATHS: list[tuple[str, str]] = [
    ("GET", "/v1/admin/clients/" + "a" * 65),
    ("GET", "/v1/admin/clients/x'%3B%20DROP%20TABLE%20principals%3B--"),
    ("GET", "/v1/admin/clients/%C3%BC"),
    ("GET", "/v1/admin/clients/%00"),
    ("GET", "/v1/admin/clients/.."),
    ("GET", "/v1/admin/clients/nobody"),
    ("PATCH", "/v1/admin/clients/nobody"),
    ("DELETE", "/v1/admin/clients/nobody"),
    ("DELETE", "/v1/admin/clients/%F0%9F%92%A5"),
    ("POST", "/v1/admin/clients/nobody/tokens"),
    ("DELETE", "/v1/admin/clients/nobody/tokens/tok_0123456789abcdef"),
    ("DELETE", "/v1/admin/clients/rule-ok/tokens/tok_zz"),
    ("DELETE", "/v1/admin/clients/rule-ok/tokens/frz_0123456789abcdef"),
    ("DELETE", "/v1/admin/clients/rule-ok/tokens/tok_0123456789abcdef"),
    ("DELETE", "/v1/admin/clients/rule-ok/tokens/" + "9" * 5000),
    ("DELETE", "/v1/admin/freezes/frz_0123456789abcdef"),
    ("DELETE", "/v1/admin/freezes/tok_0123456789abcdef"),
    ("DELETE", "/v1/admin/freezes/1%20OR%201%3D1"),
    ("PUT", "/v1/admin/clients"),
    ("GET", "/v1/admin/freezes?all=%00"),
]


async def test_hostile_admin_input_gets_4xx_never_5xx(admin: Harness) -> None:
    status, _ = await send(admin, "POST", "/v1/admin/clients", GOOD)
    assert status == 201
    seen: dict[str, int] = {}
    for what, path, body in HOSTILE_BODIES:
        status, answer = await send(admin, "POST", path, body)
        seen[what] = status
        assert 400 <= status < 500, (what, status, answer)
        assert set(answer["error"]) == {"code", "message"}, what
    for method, path in HOSTILE_PATHS:
        body = {} if method in ("PATCH", "POST") else None
        status, answer = await send(admin, method, path, body)
        seen[f"{method} {path[:60]}"] = status
        assert 400 <= status < 500, (method, path, status, answer)
    # Malformed bodies, a huge body, the wrong content type.
    for raw, kind in (
        (b"{not json", "application/json"),
        (b"[1, 2]", "application/json"),
        (b'{"id": "\xff\xfe"}', "application/json"),
        (b"[" * 100_000, "application/json"),
        (json.dumps({**GOOD, "id": "big", "pad": "x" * 200_000}).encode(), "application/json"),
        (json.dumps(GOOD).encode(), "text/plain"),
    ):
        status, answer = await send(admin, "POST", "/v1/admin/clients", raw=raw, content_type=kind)
        assert status in (400, 413, 415), (raw[:40], status, answer)
    print(json.dumps(seen, indent=1, ensure_ascii=True))
    # Nothing hostile reached the store: one principal (the good one), no freeze.
    status, listing = await send(admin, "GET", "/v1/admin/clients")
    ids = sorted(c["id"] for c in listing["clients"] if c["source"] == "store")
    assert ids == ["rule-ok"]
    status, freezes = await send(admin, "GET", "/v1/admin/freezes?all=true")
    assert freezes == {"freezes": []}


async def test_the_admin_role_is_required(admin: Harness) -> None:
    for method, path, body in (
        ("GET", "/v1/admin/clients", None),
        ("POST", "/v1/admin/clients", GOOD),
        ("POST", "/v1/admin/freezes", {"reason": "not mine to set"}),
        ("POST", "/v1/admin/clients/eng-writer/tokens", {}),
    ):
        status, answer = await send(admin, method, path, body, who="eng-writer")
        assert (status, answer["error"]["code"]) == (403, "admin_required"), path
    async with admin.client.get("/v1/admin/clients") as response:
        assert response.status == 401


async def test_config_principals_are_read_only_through_the_api(admin: Harness) -> None:
    for method, path, body in (
        ("PATCH", "/v1/admin/clients/eng-writer", {"max_access": "write"}),
        ("DELETE", "/v1/admin/clients/eng-writer", None),
        ("POST", "/v1/admin/clients/eng-writer/tokens", {}),
        ("POST", "/v1/admin/clients", {"id": "eng-writer", "spaces": ["ENG"]}),
    ):
        status, answer = await send(admin, method, path, body)
        assert (status, answer["error"]["code"]) == (409, "config_principal"), path
        assert "config file" in answer["error"]["message"]


async def test_a_principal_added_through_the_api_vends_on_rgw_and_a_freeze_stops_it(
    admin: Harness,
) -> None:
    status, _ = await send(
        admin,
        "POST",
        "/v1/admin/clients",
        {"id": "rule-new", "spaces": ["OPS"], "max_access": "write"},
    )
    assert status == 201
    status, issued = await send(
        admin, "POST", "/v1/admin/clients/rule-new/tokens", {"expires_in_seconds": 3600}
    )
    assert status == 201 and issued["expiresAt"].endswith("Z")
    admin.tokens["rule-new"] = issued["token"]
    response = await admin.vend("rule-new", {"space": "OPS", "access": "write"})
    vended = await response.json()
    assert response.status == 201, vended
    admin.s3_for(vended).put_object(Bucket=vended["bucket"], Key="OPS/new.txt", Body=b"x")

    status, freeze = await send(
        admin, "POST", "/v1/admin/freezes", {"space": "OPS", "reason": "OPS bucket incident"}
    )
    assert status == 201
    response = await admin.vend("rule-new", {"space": "OPS", "access": "write"})
    refused = await response.json()
    assert response.status == 503 and "Retry-After" not in response.headers
    assert (
        refused["error"]["code"] == "frozen"
        and "OPS bucket incident" in refused["error"]["message"]
    )
    # Other spaces vend on; readiness stays ready and lists the freeze.
    response = await admin.vend("eng-writer", {"space": "ENG", "access": "write"})
    assert response.status == 201
    async with admin.client.get("/readyz") as ready:
        body = await ready.json()
        assert (ready.status, body["status"]) == (200, "ready")
        assert [f["id"] for f in body["freezes"]] == [freeze["id"]]
    metrics = await (await admin.client.get("/metrics")).text()
    assert 'credbroker_frozen_refusals_total{action="vend"} 1.0' in metrics
    assert "credbroker_freezes_active 1.0" in metrics
    audit = admin.audit_path.read_text()
    assert issued["token"] not in audit
    assert any(json.loads(line).get("code") == "frozen" for line in audit.splitlines())


async def test_two_brokers_on_one_sqlite_file_follow_each_other_by_polling(
    admin: Harness, rgw: RgwServer, tmp_path: Path
) -> None:
    """A second broker on the same SQLite state file (the same host): a token issued through
    one authenticates on the other after its next poll, and a revoked one is refused."""
    (tmp_path / "second").mkdir()
    async with contextlib.aclosing(
        start_broker(
            rgw,
            tmp_path / "second",
            admin_clients=[ROOT],
            state={"kind": "sqlite", "path": str(admin.settings.state.path)},  # type: ignore[union-attr]
        )
    ) as brokers:
        async for other in brokers:
            status, _ = await send(
                admin, "POST", "/v1/admin/clients", {"id": "rule-2", "spaces": ["ENG"]}
            )
            assert status == 201
            status, issued = await send(admin, "POST", "/v1/admin/clients/rule-2/tokens", {})
            other.tokens["rule-2"] = issued["token"]
            app = other.client.app
            assert app is not None
            control = app[RUNTIME].control
            assert control is not None

            async def vend_status(other: Harness = other) -> int:
                response = await other.vend("rule-2", {"space": "ENG", "access": "read"})
                await response.read()
                return int(response.status)

            for _ in range(int(20 / control.poll_seconds) * 2):
                if await vend_status() == 201:
                    break
                await asyncio.sleep(control.poll_seconds / 2)
            assert await vend_status() == 201
            await send(admin, "DELETE", f"/v1/admin/clients/rule-2/tokens/{issued['id']}")
            for _ in range(int(20 / control.poll_seconds) * 2):
                if await vend_status() == 401:
                    break
                await asyncio.sleep(control.poll_seconds / 2)
            assert await vend_status() == 401
