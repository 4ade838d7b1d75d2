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

from credbroker.callers.composite import CallerAuthChain
from credbroker.callers.tokens import TokenAuth
from credbroker.cli import main
from credbroker.config import LimitsConfig
from credbroker.domain import Access, CallerProof, Client
from credbroker.limits import InFlightCap, Limits, Rate, TokenBuckets
from credbroker.observability import Metrics
from credbroker.web import handlers, server
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
    auth = CallerAuthChain(
        TokenAuth(
            (hashlib.sha256(token.encode()).hexdigest(), client_named(who))
            for who, token in TOKENS.items()
        )
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


def test_serve_runs_our_server_with_the_limits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = {
        "object_store": {
            "endpoint": "http://127.0.0.1:7480",
            "role_arn": "arn:aws:iam:::role/x",
            "credentials_path": "p",
        },
        "spaces": {"ENG": {"bucket": "cb-main", "prefix": "ENG/"}},
        "limits": {"keepalive_timeout_seconds": 7, "max_connections": 9},
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    started: list[dict[str, Any]] = []
    monkeypatch.setattr("credbroker.web.app.create_app", lambda settings: settings)
    monkeypatch.setattr("credbroker.web.server.run", lambda app, **kwargs: started.append(kwargs))
    assert main(["serve", "--config", str(path), "--port", "0"]) == 0
    limits = started[0]["limits"]
    assert (limits.keepalive_timeout_seconds, limits.max_connections) == (7, 9)
    assert started[0]["port"] == 0


# --- web/server.py: the connection cap and the first headers' deadline -------------------------


async def hello(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def running(limits_config: LimitsConfig) -> AsyncIterator[int]:
    app = web.Application()
    app[METRICS] = Metrics()
    app.router.add_get("/", hello)
    stop = asyncio.Event()
    ports: list[int] = []
    task = asyncio.create_task(
        server.serve(
            app, host="127.0.0.1", port=0, limits=limits_config, stop=stop, started=ports.append
        )
    )
    while not ports:
        await asyncio.sleep(0.01)
    try:
        yield ports[0]
    finally:
        stop.set()
        await task


async def test_past_the_connection_cap_a_new_connection_gets_503_overloaded() -> None:
    async for port in running(LimitsConfig(max_connections=2)):
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        answer = await asyncio.wait_for(reader.read(), timeout=30)  # then closed
        writer.close()
        assert answer.startswith(b"HTTP/1.1 503"), answer
        assert b'"code": "overloaded"' in answer and b"Retry-After: 1" in answer
        for _, w in held:
            w.close()
        # Closed connections free their places.
        for _ in range(50):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answer = await asyncio.wait_for(reader.read(), timeout=30)
            writer.close()
            if answer.startswith(b"HTTP/1.1 200"):
                break
            await asyncio.sleep(0.02)
        assert answer.startswith(b"HTTP/1.1 200"), answer


async def test_first_headers_that_never_end_are_cut_off_and_complete_ones_are_served() -> None:
    async for port in running(LimitsConfig(header_timeout_seconds=0.1)):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow")
        assert await asyncio.wait_for(reader.read(), timeout=30) == b""  # closed, no answer
        writer.close()

        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHo")  # the header end arrives split across writes
        await writer.drain()
        writer.write(b"st: x\r\n\r")
        await writer.drain()
        writer.write(b"\n")
        status = await asyncio.wait_for(reader.readline(), timeout=30)
        assert status.startswith(b"HTTP/1.1 200"), status
        await asyncio.sleep(0.3)  # past the header deadline: a served connection stays open
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        rest = await asyncio.wait_for(reader.read(), timeout=30)
        writer.close()
        assert b"HTTP/1.1 200" in rest


class _CountingAuth:
    def __init__(self, inner: TokenAuth) -> None:
        self.inner, self.calls = CallerAuthChain(inner), 0

    async def authenticate(self, proof: CallerProof) -> Client:
        self.calls += 1
        return await self.inner.authenticate(proof)


async def test_a_vend_checks_its_token_once() -> None:
    """The rate limiter's check hands the client to the handler (web/handlers.py _client)."""
    auth = _CountingAuth(
        TokenAuth(
            (hashlib.sha256(token.encode()).hexdigest(), client_named(who))
            for who, token in TOKENS.items()
        )
    )
    seen: list[str] = []

    async def vend(request: web.Request) -> web.Response:
        seen.append((await handlers._client(request)).id)
        return web.json_response({"ok": True}, status=201)

    app = web.Application(middlewares=[error_middleware, limits_middleware])
    app[METRICS] = Metrics()
    app[RUNTIME] = cast(Runtime, SimpleNamespace(caller_auth=auth, limits=limits()))
    app.router.add_post("/v1/credentials", vend)
    async with TestClient(TestServer(app)) as client:
        answer = await client.post("/v1/credentials", json={}, headers=headers("a"))
        assert answer.status == 201
    assert seen == ["a"] and auth.calls == 1
