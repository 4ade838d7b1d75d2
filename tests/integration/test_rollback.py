"""End to end (issue 9): a broker on the embedded store and the real RGW refuses to vend once
its secrets file is put back to an older copy, and vends again once the newest file is back."""

from __future__ import annotations

import pytest

from credbroker.config import EmbeddedStoreConfig
from tests.integration.conftest import SERVICE_PATH, Harness

pytestmark = pytest.mark.rgw

READ = {"space": "ENG", "access": "read"}


async def test_a_rolled_back_store_is_refused_and_never_vended_on(broker: Harness) -> None:
    config = broker.settings.secret_store
    assert isinstance(config, EmbeddedStoreConfig)
    sealed = config.path
    assert (await broker.vend("eng-writer", READ)).status == 201  # the broker saw version 1
    old_copy = sealed.read_bytes()
    keys = {
        "access_key_id": broker.rgw.broker_access_key,
        "secret_access_key": broker.rgw.broker_secret_key,
    }
    assert await broker.store.write(SERVICE_PATH, keys, cas=1) == 2  # a rotation stores v2
    assert (await broker.vend("eng-writer", READ)).status == 201  # the broker saw version 2
    new_copy = sealed.read_bytes()

    sealed.write_bytes(old_copy)  # the rotated-away version 1 is put back
    for _ in range(3):
        response = await broker.vend("eng-writer", READ)
        body = await response.json()
        assert response.status == 502, body
        assert body["error"]["code"] == "secret_rolled_back"
        assert broker.rgw.broker_secret_key not in await response.text()

    metrics = await (await broker.client.get("/metrics")).text()
    assert 'credbroker_secret_rollbacks_total{reason="rolled_back"} 3.0' in metrics
    assert broker.rgw.broker_secret_key not in broker.audit_path.read_text()

    sealed.write_bytes(new_copy)  # the operator restores the newest file
    assert (await broker.vend("eng-writer", READ)).status == 201
