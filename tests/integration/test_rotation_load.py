"""Under load: 200 concurrent vend requests spread over a forced rotation, zero failures.

The real broker app (start_broker: embedded store, real RGW, the scheduler running inside the
app) vends for a throw-away RGW identity of its own. An admin client forces the rotation
through POST /v1/admin/rotations/service; the app's scheduler deletes the old key when the
grace period ends. All 200 requests are in flight together, their start times spread from
before the rotation to after the old key's deletion, so some run while the new key is being
created, verified and stored, some during the grace period, and some after the old key is gone.
"""

from __future__ import annotations

import asyncio
import json
import time
from contextlib import aclosing
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from support.rgw_server import RgwServer
from tests.integration.conftest import MAIN_BUCKET, SERVICE_PATH, Harness, start_broker
from tests.integration.rgw_identity import create_identity

pytestmark = pytest.mark.rgw

ADMIN_PATH = "credbroker/object-store/rgw-admin"
GRACE = 2.0
REQUESTS = 200
SPREAD = GRACE + 2.5  # seconds over which the 200 requests start
ROTATE_AT = 0.4


async def test_200_concurrent_vends_over_a_forced_rotation_all_succeed(
    rgw: RgwServer, buckets: tuple[str, str], tmp_path: Path
) -> None:
    identity = create_identity(rgw, prefix="cbload")
    overrides = identity.rotation_overrides(SERVICE_PATH, ADMIN_PATH, tmp_path, grace=GRACE)
    overrides["secret_cache_seconds"] = 0.2
    overrides["object_store"]["ttl"] = {
        "min_seconds": 900,
        "default_seconds": 900,
        "max_seconds": 3600,
    }
    seed = identity.broker_seed(SERVICE_PATH, ADMIN_PATH)
    try:
        broker = start_broker(rgw, tmp_path, admin_clients=["ops-admin"], seed=seed, **overrides)
        async with aclosing(broker):  # a failure still stops the app before the loop closes
            async for harness in broker:
                await _run_load(harness, identity.initial.access_key_id)
                final = str((await harness.store.read(SERVICE_PATH)).get("access_key_id"))
                assert identity.access_keys() == [final]  # exactly one key once the grace is over
                assert final != identity.initial.access_key_id
    finally:
        identity.remove()


async def _run_load(harness: Harness, old_key: str) -> None:
    admin = {"Authorization": f"Bearer {harness.tokens['ops-admin']}"}
    started = time.monotonic()
    results: list[tuple[int, dict[str, Any]]] = []

    async def vend(i: int) -> None:
        await asyncio.sleep(SPREAD * i / REQUESTS)
        response = await harness.vend("eng-reader", {"space": "ENG", "access": "read"})
        results.append((response.status, await response.json()))

    async def rotate() -> dict[str, Any]:
        await asyncio.sleep(ROTATE_AT)
        response = await harness.client.post("/v1/admin/rotations/service", headers=admin)
        body = await response.json()
        assert response.status == 200, body
        return dict(body)

    # Two arguments: gather types each result, so `forced` is rotate()'s dict, never a vend's None.
    _, forced = await asyncio.gather(asyncio.gather(*(vend(i) for i in range(REQUESTS))), rotate())
    assert forced["result"] == "waiting_grace"
    assert forced["oldKeyId"] == old_key

    failures = [(status, body) for status, body in results if status != 201]
    assert len(results) == REQUESTS
    assert failures == [], failures[:3]

    # The scheduler in the app finishes the rotation when the grace ends.
    async with asyncio.timeout(20):
        while True:
            response = await harness.client.get("/v1/admin/rotations", headers=admin)
            [status] = (await response.json())["credentials"]
            if status["phase"] == "done":
                break
            await asyncio.sleep(0.1)
    assert status["last_error"] is None
    assert status["keys"] == [status["current_key_id"]]
    assert time.monotonic() - started < SPREAD + 10

    # The requests really straddled the switch and the old key's deletion.
    events = [json.loads(line) for line in harness.audit_path.read_text().splitlines()]
    stored = _when(events, "stored")
    deleted = _when(events, "old_deleted")
    vends = [datetime.fromisoformat(e["ts"]) for e in events if e["event"] == "vend"]
    assert len(vends) == REQUESTS
    assert sum(t < stored for t in vends) >= 10
    assert sum(stored < t < deleted for t in vends) >= 10
    assert sum(t > deleted for t in vends) >= 10

    # A key vended after the old parent key was deleted works.
    last = next(body for status, body in reversed(results))
    s3 = harness.s3_for(last)
    try:
        s3.list_objects_v2(Bucket=MAIN_BUCKET, Prefix="ENG/")
    finally:
        s3.close()


def _when(events: list[dict[str, Any]], step: str) -> datetime:
    found = [e for e in events if e["event"] == "rotation" and e["step"] == step]
    assert found, f"no rotation {step} event"
    return datetime.fromisoformat(found[-1]["ts"])
