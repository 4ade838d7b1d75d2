"""Abuse of the service itself, against the real broker on the real RGW (issue 9): a /readyz
flood, a flooding client, a stalled body. Statuses and counts are asserted, never timings."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from credbroker.web import server
from credbroker.web.app import create_app
from credbroker.web.appkeys import RUNTIME
from credbroker.web.readiness import Readiness
from support.rgw_server import RgwServer
from tests.doubles.vault import VaultDouble
from tests.integration.conftest import Harness, start_broker

pytestmark = pytest.mark.rgw

WRITE = {"space": "ENG", "access": "write", "reason": "abuse test"}


@pytest.fixture
async def vault() -> AsyncIterator[VaultDouble]:
    async with VaultDouble() as double:
        yield double


@pytest.fixture
async def on_vault(
    rgw: RgwServer, buckets: tuple[str, str], tmp_path: Path, vault: VaultDouble
) -> AsyncIterator[Harness]:
    async with contextlib.aclosing(start_broker(rgw, tmp_path, vault=vault)) as brokers:
        async for harness in brokers:
            yield harness


async def breaker_state(harness: Harness) -> str:
    text = await (await harness.client.get("/metrics")).text()
    for line in text.splitlines():
        if line.startswith("credbroker_secret_store_breaker{") and line.endswith(" 1.0"):
            return line.split('="', 1)[1].split('"', 1)[0]
    raise AssertionError("no breaker state metric")


async def readyz(harness: Harness) -> int:
    async with harness.client.get("/readyz") as response:
        await response.read()
        return response.status


async def vend(harness: Harness, who: str, body: dict[str, Any] = WRITE) -> int:
    response = await harness.vend(who, body)
    await response.read()
    status: int = response.status
    return status


def readiness_of(harness: Harness) -> Readiness:
    app = harness.client.app
    assert app is not None
    readiness: Readiness = app[RUNTIME].readiness
    return readiness


async def test_a_readyz_flood_during_writes_leaves_the_breaker_closed_and_writes_working(
    on_vault: Harness, vault: VaultDouble
) -> None:
    readiness = readiness_of(on_vault)
    before = vault.request_count
    flood = [readyz(on_vault) for _ in range(3000)]
    writes = [vend(on_vault, "eng-writer") for _ in range(60)]
    statuses = await asyncio.gather(*flood, *writes)

    assert set(statuses[:3000]) == {200}
    assert statuses[3000:] == [201] * 60
    assert await breaker_state(on_vault) == "closed"
    # 3,000 asks, a handful of probes: each cache interval (1 s) sends at most one upstream.
    assert readiness.probes_started <= 30, readiness.probes_started
    assert vault.request_count - before <= 60 + readiness.probes_started + 5
    print(
        f"\n[readyz flood] 3000 /readyz + 60 write vends: {readiness.probes_started} upstream "
        f"probe(s), {vault.request_count - before} vault request(s), breaker closed"
    )


async def test_a_readyz_flood_against_a_sealed_vault_cannot_open_the_breaker(
    on_vault: Harness, vault: VaultDouble
) -> None:
    vault.seal()
    statuses = await asyncio.gather(*(readyz(on_vault) for _ in range(1000)))
    assert set(statuses) == {503}
    assert await breaker_state(on_vault) == "closed"
    vault.unseal()
    readiness_of(on_vault).invalidate()
    assert await readyz(on_vault) == 200
    assert await vend(on_vault, "eng-writer") == 201


@pytest.fixture
async def limited(
    rgw: RgwServer, buckets: tuple[str, str], tmp_path: Path
) -> AsyncIterator[Harness]:
    """Small limits, so a test meets them: 5 at once, then 2/s; a body must arrive in 0.5 s."""
    limits = {"rate_per_second": 2, "burst": 5, "body_timeout_seconds": 0.5}
    async with contextlib.aclosing(start_broker(rgw, tmp_path, limits=limits)) as brokers:
        async for harness in brokers:
            yield harness


async def test_a_flooding_client_gets_429_while_another_clients_vends_keep_working(
    limited: Harness,
) -> None:
    read = {"space": "ENG", "access": "read", "reason": "flood"}
    flood = [limited.vend("eng-reader", read) for _ in range(60)]
    others = [vend(limited, "ops-writer", {"space": "OPS", "access": "write"}) for _ in range(4)]
    results = await asyncio.gather(*flood, *others)
    flooded, other = results[:60], results[60:]

    assert other == [201] * 4
    statuses = [r.status for r in flooded]
    assert set(statuses) <= {201, 429} and statuses.count(429) >= 40, statuses
    refused = [r for r in flooded if r.status == 429]
    for response in refused:
        body = await response.json()
        assert body["error"]["code"] == "rate_limited"
        assert "eng-reader" in body["error"]["message"]
        assert 1 <= int(response.headers["Retry-After"]) <= 60
    for response in flooded:
        response.release()
    metrics = await (await limited.client.get("/metrics")).text()
    assert f'credbroker_rate_limited_total{{client="eng-reader"}} {len(refused)}.0' in metrics
    assert 'credbroker_requests_total{outcome="rate_limited",route="/v1/credentials"}' in metrics
    print(f"\n[rate limit] 60 at once from one client: {len(refused)} got 429; 4/4 of another: 201")


async def test_a_stalled_body_is_cut_off(limited: Harness) -> None:
    """Headers and part of a body, then silence: 408 within the configured deadline (0.5 s
    here), and the connection is closed."""
    server = limited.client.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    token = limited.tokens["eng-writer"]
    body = b'{"space": "ENG", "access": "write", "reason": "slow"}'
    writer.write(
        b"POST /v1/credentials HTTP/1.1\r\nHost: broker\r\n"
        + f"Authorization: Bearer {token}\r\n".encode()
        + b"Content-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body[:10]
    )
    await writer.drain()
    started = time.monotonic()
    try:
        answer = await asyncio.wait_for(reader.read(), timeout=60)  # to EOF: it closes
    finally:
        writer.close()
    head, _, payload = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b'"code": "request_timeout"' in payload
    # Another client's request on a fresh connection is served meanwhile and after.
    assert await vend(limited, "ops-writer", {"space": "OPS", "access": "write"}) == 201
    print(
        f"\n[stalled body] 408 and closed after {time.monotonic() - started:.1f}s (deadline 0.5s)"
    )


async def test_serve_caps_connections_and_cuts_off_unfinished_headers(limited: Harness) -> None:
    """`credbroker serve`'s own listener (web/server.py) on the real broker: a connection
    whose first headers never end is closed (deadline 0.5 s here); past 3 open connections
    a new one gets 503 overloaded; once they close, a vend over HTTP gets its 201."""
    limits = limited.settings.limits.model_copy(
        update={"header_timeout_seconds": 0.5, "max_connections": 3}
    )
    stop = asyncio.Event()
    ports: list[int] = []
    app = create_app(limited.settings)
    serving = asyncio.create_task(
        server.serve(app, host="127.0.0.1", port=0, limits=limits, stop=stop, started=ports.append)
    )
    try:
        while not ports:
            assert not serving.done(), serving
            await asyncio.sleep(0.01)
        port = ports[0]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /v1/credentials HTTP/1.1\r\nHost: broker\r\nContent-Ty")
        started = time.monotonic()
        assert await asyncio.wait_for(reader.read(), timeout=60) == b""  # closed
        closed_after = time.monotonic() - started
        writer.close()

        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        refused = await asyncio.wait_for(reader.read(), timeout=60)
        writer.close()
        assert refused.startswith(b"HTTP/1.1 503") and b'"overloaded"' in refused, refused
        for _, held_writer in held:
            held_writer.close()

        token = limited.tokens["ops-writer"]
        async with aiohttp.ClientSession() as http:
            for _ in range(100):  # until the held connections are seen closed
                async with http.post(
                    f"http://127.0.0.1:{port}/v1/credentials",
                    json={"space": "OPS", "access": "write"},
                    headers={"Authorization": f"Bearer {token}"},
                ) as response:
                    if response.status != 503:
                        break
                await asyncio.sleep(0.05)
            assert response.status == 201
    finally:
        stop.set()
        await serving
    print(f"\n[stalled headers] closed after {closed_after:.1f}s (deadline 0.5s)")
