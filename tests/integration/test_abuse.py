"""Abuse of the service itself, against the real broker on the real RGW (issue 9): a /readyz
flood, a flooding client, a stalled body. Statuses and counts are asserted, never timings."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

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
