"""/readyz on the real RGW (issue 16): the two failures an operator met while /readyz said
"ready" are now not_ready with the check that fails named, and ready again once repaired.

- the read-only fallback key missing from the secret store ("secrets", "read_only_fallback");
- the vend role without a permission policy: every minted key got 403 while vends answered 201
  ("vend_canary": AssumeRole plus one list of the first space, on a schedule);
- a secret store put back to an older copy (the version watermark refuses it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from credbroker.config import EmbeddedStoreConfig
from support.rgw_server import RgwServer, botocore_client
from tests.integration.conftest import (
    READ_ONLY_PATH,
    SERVICE_PATH,
    Harness,
    start_broker,
)
from tests.integration.rgw_identity import create_identity, rgw_admin
from tests.integration.test_fallback import fallback_config

pytestmark = pytest.mark.rgw

READ = {"space": "ENG", "access": "read"}


async def readyz(harness: Harness) -> tuple[int, dict[str, Any]]:
    response = await harness.client.get("/readyz")
    return response.status, await response.json()


async def gauge(harness: Harness, check: str) -> float | None:
    text = await (await harness.client.get("/metrics")).text()
    prefix = f'credbroker_readiness_check{{check="{check}"}} '
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line.removeprefix(prefix))
    return None


async def until_ready(harness: Harness, seconds: float = 15) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while True:
        status, body = await readyz(harness)
        if status == 200 and body["status"] == "ready":
            return body
        assert time.monotonic() < deadline, body
        await asyncio.sleep(0.2)


@contextlib.asynccontextmanager
async def started(rgw: RgwServer, state: Path, **overrides: Any) -> AsyncIterator[Harness]:
    async with contextlib.aclosing(start_broker(rgw, state, **overrides)) as brokers:
        async for harness in brokers:
            yield harness
            return


async def test_a_missing_fallback_secret_is_not_ready_until_it_is_stored(
    rgw: RgwServer, buckets: tuple[str, str], tmp_path: Path
) -> None:
    # The store holds the service key only: the fallback's secret was never carried over.
    async with started(
        rgw, tmp_path, fallback=fallback_config(rgw, tmp_path), readiness={"canary_seconds": 1}
    ) as broker:
        status, body = await readyz(broker)
        assert (status, body["status"]) == (503, "not_ready"), body
        secrets = body["checks"]["secrets"]
        assert (secrets["ok"], secrets["code"]) == (False, "secret_not_found")
        assert READ_ONLY_PATH in secrets["message"]
        assert body["checks"]["vend_canary"]["ok"] is True  # the service key still vends
        assert await gauge(broker, "secrets") == 0
        assert await gauge(broker, "vend_canary") == 1

        await broker.store.write(
            READ_ONLY_PATH,
            {
                "access_key_id": rgw.readonly_access_key,
                "secret_access_key": rgw.readonly_secret_key,
            },
            cas=None,
        )
        body = await until_ready(broker)
        assert set(body["checks"]) == {
            "secret_store",
            "object_store",
            "secrets",
            "read_only_fallback",
            "vend_canary",
            "control",  # the live control plane's snapshot (freezes, its age)
        }
        assert await gauge(broker, "secrets") == 1
        text = json.dumps(body) + (await (await broker.client.get("/metrics")).text())
        for secret in (rgw.readonly_secret_key, rgw.broker_secret_key):
            assert secret not in text


async def test_a_vend_role_without_permission_policy_is_not_ready(
    rgw: RgwServer, buckets: tuple[str, str], tmp_path: Path
) -> None:
    identity = create_identity(rgw, prefix="cbready")
    name = identity.role_arn.rsplit("/", 1)[1]
    iam = botocore_client(rgw, "iam", rgw.admin_access_key, rgw.admin_secret_key)
    iam.delete_role_policy(RoleName=name, PolicyName="s3-all")
    try:
        async with started(
            rgw,
            tmp_path,
            seed={SERVICE_PATH: identity.initial.as_secret_data()},
            object_store={
                "flavor": "rgw",
                "endpoint": rgw.endpoint,
                "region": rgw.region,
                "role_arn": identity.role_arn,
                "credentials_path": SERVICE_PATH,
            },
            readiness={"canary_seconds": 1},
        ) as broker:
            # What the operator saw: the vend answers 201, the key it hands out gets 403.
            response = await broker.vend("eng-reader", READ)
            assert response.status == 201
            vended = await response.json()
            with pytest.raises(Exception, match="AccessDenied"):
                broker.s3_for(vended).list_objects_v2(Bucket="cb-main", Prefix="ENG/")

            status, body = await readyz(broker)
            assert (status, body["status"]) == (503, "not_ready"), body
            canary = body["checks"]["vend_canary"]
            assert (canary["ok"], canary["code"]) == (False, "object_store_rejected")
            assert "may not list" in canary["message"]
            assert body["checks"]["secrets"]["ok"] is True
            assert await gauge(broker, "vend_canary") == 0

    finally:
        # (RGW 16 answers PutRolePolicy on a role whose last policy was deleted with an
        # unparsable error, so a repaired canary is shown by tests/unit/test_readiness_checks.py.)
        rgw_admin(rgw).remove_user(uid=identity.uid, purge_data=True)
        iam.delete_role(RoleName=name)
        iam.close()


async def test_a_rolled_back_store_is_not_ready(broker: Harness) -> None:
    config = broker.settings.secret_store
    assert isinstance(config, EmbeddedStoreConfig)
    await until_ready(broker)
    old_copy = config.path.read_bytes()
    keys = {
        "access_key_id": broker.rgw.broker_access_key,
        "secret_access_key": broker.rgw.broker_secret_key,
    }
    await broker.store.write(SERVICE_PATH, keys, cas=1)
    assert (await broker.vend("eng-reader", READ)).status == 201  # the broker saw version 2
    new_copy = config.path.read_bytes()

    config.path.write_bytes(old_copy)
    await asyncio.sleep(1.1)  # past the readiness cache
    status, body = await readyz(broker)
    assert (status, body["status"]) == (503, "not_ready"), body
    assert body["checks"]["secrets"]["code"] == "secret_rolled_back"

    config.path.write_bytes(new_copy)
    await until_ready(broker)
