"""The admin API for rotation, on the real broker app: who may call it, and what it answers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from pathlib import Path

import pytest

from credbroker.state.sqlite import SqliteStateStore
from support.rgw_server import RgwServer
from tests.integration.conftest import SERVICE_PATH, Harness, start_broker
from tests.integration.rgw_identity import Identity, create_identity

pytestmark = pytest.mark.rgw

ADMIN_PATH = "credbroker/object-store/rgw-admin"


@pytest.fixture
async def harness(
    rgw: RgwServer, buckets: tuple[str, str], tmp_path: Path
) -> AsyncIterator[tuple[Harness, Identity]]:
    identity = create_identity(rgw, prefix="cbapi")
    broker = start_broker(
        rgw,
        tmp_path,
        admin_clients=["ops-admin"],
        seed=identity.broker_seed(SERVICE_PATH, ADMIN_PATH),
        **identity.rotation_overrides(SERVICE_PATH, ADMIN_PATH, tmp_path, grace=60),
    )
    try:
        async with aclosing(broker):
            async for made in broker:
                yield made, identity
    finally:
        identity.remove()


def auth(harness: Harness, who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {harness.tokens[who]}"}


async def test_only_admin_clients_reach_the_rotation_api(
    harness: tuple[Harness, Identity],
) -> None:
    h, _ = harness
    for method, url in (("GET", "/v1/admin/rotations"), ("POST", "/v1/admin/rotations/service")):
        response = await h.client.request(method, url)
        assert response.status == 401
        response = await h.client.request(method, url, headers=auth(h, "eng-writer"))
        assert response.status == 403
        assert (await response.json())["error"]["code"] == "admin_required"
    response = await h.client.post("/v1/admin/rotations/nope", headers=auth(h, "ops-admin"))
    assert response.status == 404


async def test_status_and_a_forced_rotation_show_key_ids_never_secrets(
    harness: tuple[Harness, Identity],
) -> None:
    h, identity = harness
    response = await h.client.get("/v1/admin/rotations", headers=auth(h, "ops-admin"))
    [before] = (await response.json())["credentials"]
    assert response.status == 200
    assert before["current_key_id"] == identity.initial.access_key_id
    assert before["keys"] == [identity.initial.access_key_id]
    assert before["phase"] == "idle" and before["problems"] == []

    response = await h.client.post("/v1/admin/rotations/service", headers=auth(h, "ops-admin"))
    forced = await response.json()
    assert response.status == 200, forced
    assert forced["result"] == "waiting_grace"
    assert forced["oldKeyId"] == identity.initial.access_key_id
    assert sorted(identity.access_keys()) == sorted([forced["oldKeyId"], forced["newKeyId"]])

    response = await h.client.get("/v1/admin/rotations", headers=auth(h, "ops-admin"))
    text = await response.text()
    [during] = (await response.json())["credentials"]
    assert during["phase"] == "stored"
    assert during["current_key_id"] == forced["newKeyId"]
    new_secret = (await h.store.read(SERVICE_PATH)).get("secret_access_key")
    assert new_secret not in text and identity.initial.secret_access_key not in text
    assert (await h.vend("eng-writer", {"space": "ENG", "access": "read"})).status == 201

    metrics = await (await h.client.get("/metrics")).text()
    assert 'credbroker_rotations_total{credential="service",outcome="waiting_grace"} 1.0' in metrics
    assert 'credbroker_rotation_key_age_seconds{credential="service"}' in metrics


async def test_a_rotation_already_running_elsewhere_is_409(
    harness: tuple[Harness, Identity], tmp_path: Path
) -> None:
    h, identity = harness
    other = await SqliteStateStore.open(tmp_path / "rotation.sqlite3")  # e.g. the CLI
    try:
        async with other.lock("service"):
            response = await h.client.post(
                "/v1/admin/rotations/service", headers=auth(h, "ops-admin")
            )
    finally:
        await other.close()
    assert response.status == 409
    assert (await response.json())["error"]["code"] == "rotation_busy"
    assert identity.access_keys() == [identity.initial.access_key_id]


async def test_without_rotation_the_admin_api_is_404(
    rgw: RgwServer, buckets: tuple[str, str], tmp_path: Path
) -> None:
    broker = start_broker(rgw, tmp_path, admin_clients=["ops-admin"])
    async with aclosing(broker):
        async for h in broker:
            response = await h.client.get("/v1/admin/rotations", headers=auth(h, "ops-admin"))
            assert response.status == 404
