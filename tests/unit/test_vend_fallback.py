"""Which parent key the vend path signs with: the service key, or (only while the secret store is
unreachable, only for reads) the read-only fallback key with its own role."""

from __future__ import annotations

import pytest

from credbroker.domain import Access, Client, Flavor, SecretVersion, SpaceTarget, TtlLimits
from credbroker.errors import (
    ObjectStoreRejected,
    SecretNotFound,
    SecretStoreCircuitOpen,
    SecretStorePermissionDenied,
    SecretStoreUnavailable,
)
from credbroker.observability import Metrics
from credbroker.parent_key import ParentKeySource
from credbroker.vend import Broker, PresignRequest, VendRequest
from tests.fakes import DOWN, READ_ROLE, FakeAudit, FakeFallback, FakeIssuer, ScriptedStore

SERVICE = SecretVersion({"access_key_id": "AKSERVICE", "secret_access_key": "svc-secret"}, 3)
CLIENT = Client("rule", frozenset({"ENG"}), Access.WRITE, 3600)


def broker(
    *outcomes: object, fallback: FakeFallback | None = None, issuer: FakeIssuer | None = None
) -> tuple[Broker, FakeIssuer, FakeAudit, ScriptedStore]:
    store = ScriptedStore(*outcomes)
    issuer = issuer or FakeIssuer()
    audit = FakeAudit()
    made = Broker(
        spaces={"ENG": SpaceTarget("cb-main", "ENG/")},
        ttl=TtlLimits(900, 900, 3600),
        credentials=ParentKeySource(store, "svc", cache_seconds=0),
        issuer=issuer,
        audit=audit,
        metrics=Metrics(),
        flavor=Flavor.RGW,
        fallback=fallback,
    )
    return made, issuer, audit, store


@pytest.mark.parametrize("outage", [DOWN, SecretStoreCircuitOpen("breaker open")])
async def test_a_read_during_an_outage_uses_the_read_only_key_and_role(outage: Exception) -> None:
    made, issuer, audit, _ = broker(outage, fallback=FakeFallback())

    vended = await made.vend(CLIENT, VendRequest(space="ENG", access=Access.READ))

    assert vended.mode == "read-only"
    assert issuer.signers == [("AKREADONLY", READ_ROLE)]
    assert audit.events[-1]["mode"] == "read-only"
    assert audit.events[-1]["access"] == "read"


async def test_a_healthy_store_means_the_service_key_and_the_configured_role() -> None:
    made, issuer, audit, _ = broker(SERVICE, SERVICE, fallback=FakeFallback())

    for access in (Access.READ, Access.WRITE):
        vended = await made.vend(CLIENT, VendRequest(space="ENG", access=access))
        assert vended.mode == "normal"
    assert issuer.signers == [("AKSERVICE", None), ("AKSERVICE", None)]
    assert [e["mode"] for e in audit.events] == ["normal", "normal"]


async def test_a_write_during_an_outage_is_503_and_never_reaches_the_object_store() -> None:
    made, issuer, _, _ = broker(DOWN, fallback=FakeFallback())

    with pytest.raises(SecretStoreUnavailable, match="write access needs the secret store") as info:
        await made.vend(CLIENT, VendRequest(space="ENG", access=Access.WRITE))

    assert (info.value.status, info.value.code) == (503, "vault_unavailable")
    assert info.value.__cause__ is None
    assert issuer.signers == []


@pytest.mark.parametrize(
    "refusal",
    [SecretStorePermissionDenied("HTTP 403 permission denied"), SecretNotFound("HTTP 404")],
    ids=["403", "404"],
)
async def test_a_store_that_answers_and_refuses_never_falls_back(refusal: Exception) -> None:
    made, issuer, _, _ = broker(refusal, fallback=FakeFallback())

    with pytest.raises(type(refusal)):
        await made.vend(CLIENT, VendRequest(space="ENG", access=Access.READ))
    assert issuer.signers == []


async def test_without_a_fallback_an_outage_is_503_for_reads_too() -> None:
    made, issuer, _, _ = broker(DOWN)
    with pytest.raises(SecretStoreUnavailable):
        await made.vend(CLIENT, VendRequest(space="ENG", access=Access.READ))
    assert issuer.signers == []


async def test_a_stale_fallback_refuses_reads_too() -> None:
    made, issuer, _, _ = broker(DOWN, fallback=FakeFallback(stale=True))
    with pytest.raises(SecretStoreUnavailable, match="too old"):
        await made.vend(CLIENT, VendRequest(space="ENG", access=Access.READ))
    assert issuer.signers == []


async def test_presign_get_may_fall_back_and_presign_put_may_not() -> None:
    made, issuer, audit, _ = broker(DOWN, DOWN, fallback=FakeFallback())

    got = await made.presign(CLIENT, PresignRequest(space="ENG", key="a.txt", method="GET"))
    assert got.mode == "read-only" and audit.events[-1]["mode"] == "read-only"
    with pytest.raises(SecretStoreUnavailable, match="write access"):
        await made.presign(CLIENT, PresignRequest(space="ENG", key="a.txt", method="PUT"))
    assert issuer.signers == [("AKREADONLY", READ_ROLE)]


async def test_a_rejected_read_only_key_is_not_retried_against_the_store() -> None:
    made, issuer, _, store = broker(DOWN, fallback=FakeFallback(), issuer=FakeIssuer(reject=True))

    with pytest.raises(ObjectStoreRejected):
        await made.vend(CLIENT, VendRequest(space="ENG", access=Access.READ))
    assert issuer.signers == [("AKREADONLY", READ_ROLE)]
    assert store.calls == ["read"]
