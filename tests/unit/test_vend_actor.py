"""The vend path's actor check (per space `actor_check: confluence`) on fakes: a space that
checks actors vends only to an actor Confluence lets view (read) or edit (write) it; refusals
are 403 actor_not_permitted and audited; Confluence down follows the space's choice."""

from __future__ import annotations

from typing import Any

import pytest

from credbroker.domain import Access, Client, Flavor, SpaceTarget, TtlLimits
from credbroker.errors import ActorCheckUnavailable, ActorNotPermitted
from credbroker.parent_key import ParentKeySource
from credbroker.vend import Broker, PresignRequest, VendRequest
from tests.fakes import (
    Clock,
    FakeActorDirectory,
    FakeAudit,
    FakeIssuer,
    FakeMetrics,
    MemorySecretStore,
)

PATH = "credbroker/object-store/service"
SPACES = {
    "ENG": SpaceTarget("cb-main", "ENG/", actor_check="confluence"),
    "OPS": SpaceTarget(
        "cb-main", "OPS/", actor_check="confluence", actor_check_unavailable="read-only"
    ),
    "PUB": SpaceTarget("cb-main", "PUB/"),
}
WRITER = Client("writer", frozenset(SPACES), Access.WRITE, 3600)


class Rig:
    def __init__(self) -> None:
        self.audit = FakeAudit()
        self.directory = FakeActorDirectory()
        self.issuer = FakeIssuer()
        self.issuer.clock = Clock()
        store = MemorySecretStore()
        store.put(PATH, {"access_key_id": "AK", "secret_access_key": "never-logged"})
        self.broker = Broker(
            spaces=SPACES,
            ttl=TtlLimits(),
            credentials=ParentKeySource(store, PATH, cache_seconds=0),
            issuer=self.issuer,
            audit=self.audit,
            metrics=FakeMetrics(),
            flavor=Flavor.RGW,
            actors=self.directory,
            clock=self.issuer.clock,
        )

    async def vend(self, **request: Any) -> Any:
        request.setdefault("space", "ENG")
        request.setdefault("access", Access.READ)
        return await self.broker.vend(WRITER, VendRequest(**request))


@pytest.fixture
def rig() -> Rig:
    return Rig()


async def test_an_actor_who_may_view_gets_a_read_key_and_the_audit_says_verified(
    rig: Rig,
) -> None:
    rig.directory.grant("ENG", "557058:viewer")
    await rig.vend(actor="557058:viewer")
    (record,) = rig.audit.named("vend")
    assert record["actor"] == "557058:viewer" and record["actor_verified"] is True
    assert rig.directory.asked == [("ENG", "557058:viewer", "read")]


async def test_view_but_not_edit_reads_and_cannot_write(rig: Rig) -> None:
    rig.directory.grant("ENG", "557058:viewer")
    await rig.vend(actor="557058:viewer", access=Access.READ)
    with pytest.raises(ActorNotPermitted) as info:
        await rig.vend(actor="557058:viewer", access=Access.WRITE)
    assert (info.value.status, info.value.code) == (403, "actor_not_permitted")
    assert len(rig.issuer.calls) == 1  # nothing minted for the refused write
    (denied,) = rig.audit.named("denied")
    assert denied["code"] == "actor_not_permitted" and denied["access"] == "write"
    assert denied["actor"] == "557058:viewer" and info.value.audited


async def test_an_editor_may_write(rig: Rig) -> None:
    rig.directory.grant("ENG", "557058:editor", edit=True)
    await rig.vend(actor="557058:editor", access=Access.WRITE)
    assert rig.audit.named("vend")[0]["actor_verified"] is True


async def test_an_actor_without_view_is_refused(rig: Rig) -> None:
    with pytest.raises(ActorNotPermitted, match="may not view space ENG"):
        await rig.vend(actor="557058:stranger")
    assert rig.issuer.calls == []


async def test_no_actor_is_refused_where_actors_are_checked(rig: Rig) -> None:
    with pytest.raises(ActorNotPermitted, match="naming their actor"):
        await rig.vend()
    assert rig.directory.asked == [] and rig.audit.named("denied")[0]["actor"] is None


async def test_presign_checks_the_actor_too(rig: Rig) -> None:
    rig.directory.grant("ENG", "557058:viewer")
    request = PresignRequest(space="ENG", key="a.txt", method="PUT", actor="557058:viewer")
    with pytest.raises(ActorNotPermitted):
        await rig.broker.presign(WRITER, request)
    request = PresignRequest(space="ENG", key="a.txt", method="GET", actor="557058:viewer")
    await rig.broker.presign(WRITER, request)
    assert rig.audit.named("presign")[0]["actor_verified"] is True


async def test_a_space_without_actor_check_never_asks(rig: Rig) -> None:
    await rig.vend(space="PUB", actor="anyone")
    assert rig.directory.asked == [] and "actor_verified" not in rig.audit.named("vend")[0]


async def test_confluence_down_fails_closed_by_default(rig: Rig) -> None:
    rig.directory.grant("ENG", "557058:viewer")
    rig.directory.down = True
    with pytest.raises(ActorCheckUnavailable) as info:
        await rig.vend(actor="557058:viewer")
    assert (info.value.status, info.value.code) == (503, "confluence_unavailable")
    assert rig.issuer.calls == [] and rig.audit.named("denied")[0]["code"] == info.value.code


async def test_confluence_down_serves_reads_unverified_where_the_space_says_read_only(
    rig: Rig,
) -> None:
    rig.directory.down = True
    await rig.vend(space="OPS", actor="557058:anyone", access=Access.READ)
    (record,) = rig.audit.named("vend")
    assert record["actor_verified"] is False and record["actor_check"] == "unavailable"
    with pytest.raises(ActorCheckUnavailable, match="writes need a verified actor"):
        await rig.vend(space="OPS", actor="557058:anyone", access=Access.WRITE)
