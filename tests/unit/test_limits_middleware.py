"""web/limits.py through aiohttp: the in-flight cap and the rate limit answer JSON errors with
Retry-After, a slow body gets 408, and `credbroker serve` hands aiohttp its keep-alive timeout.
A fake broker holds requests open on an event: no timing is asserted."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from credbroker.callers.tokens import TokenAuth
from credbroker.cli import main
from credbroker.domain import Access, Client
from credbroker.limits import InFlightCap, Limits, Rate, TokenBuckets
from credbroker.observability import Metrics
from credbroker.web.appkeys import METRICS, RUNTIME
from credbroker.web.errors import error_middleware
from credbroker.web.limits import limits_middleware
from credbroker.wiring import Runtime
from tests.fakes import MonotonicClock

TOKENS = {"a": "cbk_token-of-client-a", "b": "cbk_token-of-client-b"}


def headers(who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[who]}"}


class Held:
    """A vend route that waits until released, so requests stay in flight."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.entered = 0

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        self.entered += 1
        await self.release.wait()
        return web.json_response({"ok": True}, status=201)


def client_named(who: str) -> Client:
    return Client(id=who, spaces=frozenset({"ENG"}), max_access=Access.READ, max_ttl_seconds=900)


async def serve(limits: Limits, route: Held) -> AsyncIterator[TestClient[Any, Any]]:
    auth = TokenAuth(
        (hashlib.sha256(token.encode()).hexdigest(), client_named(who))
        for who, token in TOKENS.items()
    )
    app = web.Application(middlewares=[error_middleware, limits_middleware])
    app[METRICS] = Metrics()
    app[RUNTIME] = cast(Runtime, SimpleNamespace(caller_auth=auth, limits=limits))
    app.router.add_post("/v1/credentials", route.handle)
    app.router.add_post("/v1/admin/rotations/{name}", route.handle)
    async with TestClient(TestServer(app)) as client:
        yield client


def limits(*, burst: int = 1000, in_flight: int = 100, body_s: float = 30.0) -> Limits:
    clock = MonotonicClock()  # never advanced: a spent burst stays spent
    return Limits(
        rate=TokenBuckets(Rate(per_second=1.0, burst=burst), clock=clock),
        in_flight=InFlightCap(in_flight),
        body_timeout_seconds=body_s,
    )


async def test_past_the_in_flight_cap_a_vend_gets_503_overloaded_with_retry_after() -> None:
    route = Held()
    cap = limits(in_flight=2)
    async for client in serve(cap, route):
        held = [
            asyncio.create_task(client.post("/v1/credentials", json={}, headers=headers("a")))
            for _ in range(2)
        ]
        while route.entered < 2:
            await asyncio.sleep(0.01)
        refused = await client.post("/v1/credentials", json={}, headers=headers("b"))
        assert refused.status == 503
        assert (await refused.json())["error"]["code"] == "overloaded"
        assert refused.headers["Retry-After"] == "1"
        # Routes that are not vends are not counted.
        other = asyncio.create_task(client.post("/v1/admin/rotations/x", headers=headers("a")))
        while route.entered < 3:
            await asyncio.sleep(0.01)
        route.release.set()
        assert [(await t).status for t in held] == [201, 201]
        assert (await other).status == 201
        assert cap.in_flight.current == 0
        again = await client.post("/v1/credentials", json={}, headers=headers("b"))
        assert again.status == 201
        app = client.app
        assert app is not None
        metrics = app[METRICS].registry.get_sample_value(
            "credbroker_overloaded_total", {"cap": "in_flight"}
        )
        assert metrics == 1.0


async def test_a_client_past_its_burst_gets_429_and_another_client_does_not() -> None:
    route = Held()
    route.release.set()
    async for client in serve(limits(burst=2), route):
        statuses = [
            (await client.post("/v1/credentials", json={}, headers=headers("a"))).status
            for _ in range(3)
        ]
        assert statuses == [201, 201, 429]
        refused = await client.post("/v1/credentials", json={}, headers=headers("a"))
        assert (await refused.json())["error"]["code"] == "rate_limited"
        assert refused.headers["Retry-After"] == "1"
        ok = await client.post("/v1/credentials", json={}, headers=headers("b"))
        assert ok.status == 201
        # No token, or a wrong one: not limited here, the view answers (here: the fake).
        anonymous = await client.post("/v1/credentials", json={})
        assert anonymous.status == 201


async def test_a_body_that_does_not_arrive_in_time_gets_408() -> None:
    route = Held()
    route.release.set()
    async for client in serve(limits(body_s=0.05), route):
        server = client.server
        reader, writer = await asyncio.open_connection(server.host, server.port)
        writer.write(
            b"POST /v1/credentials HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n"
            b'Content-Type: application/json\r\n\r\n{"sp'
        )
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), timeout=30)
        writer.close()
        assert status_line.startswith(b"HTTP/1.1 408"), status_line
        assert route.entered == 0


def test_serve_gives_aiohttp_the_keepalive_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = {
        "object_store": {
            "endpoint": "http://127.0.0.1:7480",
            "role_arn": "arn:aws:iam:::role/x",
            "credentials_path": "p",
        },
        "spaces": {"ENG": {"bucket": "cb-main", "prefix": "ENG/"}},
        "limits": {"keepalive_timeout_seconds": 7},
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    started: list[dict[str, Any]] = []
    monkeypatch.setattr("credbroker.web.app.create_app", lambda settings: settings)
    monkeypatch.setattr("aiohttp.web.run_app", lambda app, **kwargs: started.append(kwargs))
    assert main(["serve", "--config", str(path)]) == 0
    assert started[0]["keepalive_timeout"] == 7
