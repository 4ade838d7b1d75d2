"""Once the store's breaker opens, a cached service key must not keep authorising writes."""

from __future__ import annotations

from typing import Any

import pytest

from credbroker import wiring
from credbroker.config import Settings
from credbroker.domain import (
    Access,
    BreakerState,
    Client,
    Flavor,
    Mode,
    SecretVersion,
    SpaceTarget,
    TtlLimits,
)
from credbroker.errors import SecretStoreUnavailable
from credbroker.observability import Metrics
from credbroker.secrets.resilient import CircuitBreaker, ResilientSecretStore
from credbroker.vend import Broker, VendRequest
from tests.fakes import DOWN, FakeAudit, FakeFallback, FakeIssuer, ScriptedStore

SERVICE = SecretVersion({"access_key_id": "AKSERVICE", "secret_access_key": "svc-secret"}, 3)
CLIENT = Client("rule", frozenset({"ENG"}), Access.WRITE, 3600)

SETTINGS: dict[str, Any] = {
    "secret_cache_seconds": 300,  # the longest cache the config allows
    "object_store": {"endpoint": "http://127.0.0.1:9000"},
    "spaces": {"ENG": {"bucket": "cb-main", "prefix": "ENG/"}},
}


async def test_writes_are_refused_and_reads_go_read_only_once_the_breaker_opens() -> None:
    inner = ScriptedStore(SERVICE, *([DOWN] * 12))
    breaker = CircuitBreaker(failure_threshold=3, open_seconds=10)
    store = ResilientSecretStore(
        inner, breaker=breaker, timeout_seconds=1, attempts=1, backoff_seconds=0
    )
    broker = Broker(
        spaces={"ENG": SpaceTarget("cb-main", "ENG/")},
        ttl=TtlLimits(900, 900, 3600),
        credentials=wiring.build_credentials(Settings.model_validate(SETTINGS), store),
        issuer=FakeIssuer(),
        audit=FakeAudit(),
        metrics=Metrics(),
        flavor=Flavor.RGW,
        fallback=FakeFallback(),
    )
    await broker.vend(CLIENT, VendRequest(space="ENG", access=Access.WRITE))  # caches the key
    for _ in range(3):  # the fallback's refresh or /readyz finds the store unreachable
        with pytest.raises(SecretStoreUnavailable):
            await store.check()
    assert breaker.state is BreakerState.OPEN

    with pytest.raises(SecretStoreUnavailable) as refused:
        await broker.vend(CLIENT, VendRequest(space="ENG", access=Access.WRITE))
    assert refused.value.code == "vault_unavailable"
    read = await broker.vend(CLIENT, VendRequest(space="ENG", access=Access.READ))
    assert read.mode == Mode.READ_ONLY
