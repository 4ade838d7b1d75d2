"""The break-glass use case on fakes: roles, the threshold, no self-approval, expiry, one
collect, the parent key chosen (service key, read-only fallback, escrow with K shares), the
after-action rotation, and every step announced (audit, log, metric, notification) without a
secret."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

import pytest

from credbroker.breakglass import BreakGlass, BreakGlassRules
from credbroker.domain import Access, AccessKey, BreakGlassStatus, Client, Flavor, Role, SpaceTarget
from credbroker.errors import (
    BreakGlassConflict,
    EscrowError,
    EscrowSealed,
    InvalidRequest,
    NotAllowed,
    NotFound,
    SecretStoreUnavailable,
)
from credbroker.parent_key import ParentKeySource
from tests.fakes import (
    DOWN,
    READ_ONLY_KEY,
    READ_ROLE,
    Clock,
    FakeAudit,
    FakeFallback,
    FakeIssuer,
    MemorySecretStore,
)
from tests.fakes_breakglass import (
    FakeBreakGlassMetrics,
    FakeEscrow,
    FakeNotifier,
    MemoryBreakGlassStore,
)

SERVICE = AccessKey("AKSERVICE", "service-secret-never-shown", 1)
SERVICE_PATH = "credbroker/object-store/service"


def person(name: str, *roles: Role) -> Client:
    return Client(name, frozenset({"ENG"}), Access.READ, 3600, frozenset(roles))


ANN = person("ann", Role.OPERATOR)
BOB = person("bob", Role.APPROVER)
CAROL = person("carol", Role.APPROVER)
DAVE = person("dave", Role.APPROVER, Role.OPERATOR)
RULE = person("nightly", Role.RULE)


@dataclass
class World:
    clock: Clock = field(default_factory=Clock)
    store: MemoryBreakGlassStore = field(default_factory=MemoryBreakGlassStore)
    secrets: MemorySecretStore = field(default_factory=MemorySecretStore)
    audit: FakeAudit = field(default_factory=FakeAudit)
    notifier: FakeNotifier = field(default_factory=FakeNotifier)
    metrics: FakeBreakGlassMetrics = field(default_factory=FakeBreakGlassMetrics)
    escrow: FakeEscrow = field(default_factory=lambda: FakeEscrow(SERVICE))
    rotations: list[str] = field(default_factory=list)
    issuer: FakeIssuer = field(init=False)
    glass: BreakGlass = field(init=False)

    def __post_init__(self) -> None:
        self.issuer = FakeIssuer(clock=self.clock)
        self.secrets.put(SERVICE_PATH, SERVICE.as_secret_data())

        async def rotate() -> str:
            self.rotations.append("service")
            return "waiting_grace"

        self.glass = BreakGlass(
            store=self.store,
            spaces={"ENG": SpaceTarget("cb-main", "ENG/"), "OPS": SpaceTarget("cb-main", "OPS/")},
            flavor=Flavor.RGW,
            issuer=self.issuer,
            credentials=ParentKeySource(self.secrets, SERVICE_PATH, cache_seconds=0),
            audit=self.audit,
            notifier=self.notifier,
            metrics=self.metrics,
            rules=BreakGlassRules(
                approvals_required=2,
                approve_window_seconds=3600,
                collect_window_seconds=900,
                ttl_cap_seconds=3600,
            ),
            fallback=FakeFallback(),
            escrow=self.escrow,
            rotate_service_key=rotate,
            clock=self.clock,
        )

    async def approved(self, access: Access = Access.WRITE) -> str:
        made = await self.glass.request(
            ANN, space="ENG", access=access, ttl_seconds=900, reason="INC-123 fix", prefix="x"
        )
        await self.glass.approve(BOB, made.id)
        await self.glass.approve(CAROL, made.id)
        return made.id


@pytest.fixture
def world() -> World:
    return World()


async def test_two_approvals_then_one_collect_gives_a_break_glass_key(world: World) -> None:
    made = await world.glass.request(
        ANN, space="ENG", access=Access.WRITE, ttl_seconds=900, reason="INC-123", prefix="exports"
    )
    assert made.status is BreakGlassStatus.OPEN
    once = await world.glass.approve(BOB, made.id)
    assert once.status is BreakGlassStatus.OPEN and once.approvals == ("bob",)
    twice = await world.glass.approve(CAROL, made.id)
    assert twice.status is BreakGlassStatus.APPROVED
    assert twice.collect_by == world.clock.now + __import__("datetime").timedelta(seconds=900)

    got = await world.glass.collect(ANN, made.id)
    assert got.mode.value == "break-glass"
    assert (got.scope.bucket, got.scope.prefix, got.scope.access) == (
        "cb-main",
        "ENG/exports/",
        Access.WRITE,
    )
    call = world.issuer.calls[-1]
    assert (call.parent, call.duration_seconds, call.session_name) == (SERVICE, 900, made.id)
    assert "ENG/exports/" in call.policy and "OPS" not in call.policy
    assert got.request.status is BreakGlassStatus.COLLECTED
    assert got.request.key_id == got.credentials.access_key_id and not got.request.used_escrow


async def test_a_collected_request_cannot_be_collected_again(world: World) -> None:
    request_id = await world.approved()
    await world.glass.collect(ANN, request_id)
    with pytest.raises(BreakGlassConflict) as refused:
        await world.glass.collect(ANN, request_id)
    assert refused.value.code == "already_collected" and refused.value.audited
    assert len(world.issuer.calls) == 1


async def test_the_requester_cannot_approve_their_own_request(world: World) -> None:
    made = await world.glass.request(
        DAVE, space="ENG", access=Access.READ, ttl_seconds=900, reason="INC-1"
    )
    with pytest.raises(NotAllowed) as refused:
        await world.glass.approve(DAVE, made.id)
    assert refused.value.code == "self_approval"
    assert (await world.store.load_request(made.id)).approvals == ()  # type: ignore[union-attr]
    assert ("approve", "self_approval") in world.metrics.steps


async def test_one_approver_counts_once(world: World) -> None:
    made = await world.glass.request(
        ANN, space="ENG", access=Access.READ, ttl_seconds=900, reason="INC-1"
    )
    await world.glass.approve(BOB, made.id)
    with pytest.raises(BreakGlassConflict, match="already approved"):
        await world.glass.approve(BOB, made.id)
    with pytest.raises(BreakGlassConflict) as early:
        await world.glass.collect(ANN, made.id)
    assert early.value.code == "not_approved"


async def test_roles_are_required_for_each_step(world: World) -> None:
    with pytest.raises(NotAllowed):
        await world.glass.request(BOB, space="ENG", access=Access.READ, ttl_seconds=900, reason="x")
    made = await world.glass.request(
        ANN, space="ENG", access=Access.READ, ttl_seconds=900, reason="x"
    )
    with pytest.raises(NotAllowed):
        await world.glass.approve(RULE, made.id)
    with pytest.raises(NotAllowed):
        await world.glass.approve(person("ops", Role.OPERATOR), made.id)
    await world.glass.approve(BOB, made.id)
    await world.glass.approve(CAROL, made.id)
    with pytest.raises(NotAllowed) as other:
        await world.glass.collect(BOB, made.id)
    assert other.value.code == "not_requester"
    with pytest.raises(NotAllowed):
        await world.glass.list(RULE)


async def test_an_expired_request_cannot_be_approved(world: World) -> None:
    made = await world.glass.request(
        ANN, space="ENG", access=Access.READ, ttl_seconds=900, reason="INC-1"
    )
    world.clock.advance(3601)
    with pytest.raises(BreakGlassConflict) as refused:
        await world.glass.approve(BOB, made.id)
    assert refused.value.code == "request_expired"
    assert (await world.store.load_request(made.id)).status is BreakGlassStatus.EXPIRED  # type: ignore[union-attr]
    assert [e["step"] for e in world.audit.named("break_glass")][-2:] == ["expire", "approve"]


async def test_an_approved_request_not_collected_in_time_expires(world: World) -> None:
    request_id = await world.approved(Access.READ)
    world.clock.advance(901)
    with pytest.raises(BreakGlassConflict, match="expired"):
        await world.glass.collect(ANN, request_id)
    assert world.issuer.calls == []
    listed = await world.glass.list(BOB)
    assert [r.status for r in listed] == [BreakGlassStatus.EXPIRED]


async def test_ttl_above_the_cap_or_below_the_minimum_and_bad_scopes_are_refused(
    world: World,
) -> None:
    for ttl in (899, 3601):
        with pytest.raises(InvalidRequest) as refused:
            await world.glass.request(
                ANN, space="ENG", access=Access.READ, ttl_seconds=ttl, reason="x"
            )
        assert refused.value.code == "invalid_ttl"
    for space, prefix in (("NOPE", None), ("ENG", "../OPS"), ("ENG", "a*")):
        with pytest.raises(InvalidRequest):
            await world.glass.request(
                ANN, space=space, access=Access.READ, ttl_seconds=900, reason="x", prefix=prefix
            )
    with pytest.raises(InvalidRequest):
        await world.glass.request(
            ANN, space="ENG", access=Access.READ, ttl_seconds=900, reason="\u202eevil"
        )
    assert world.store.requests == {}


async def test_a_denied_request_cannot_be_approved_or_collected(world: World) -> None:
    made = await world.glass.request(
        ANN, space="ENG", access=Access.READ, ttl_seconds=900, reason="x"
    )
    await world.glass.deny(BOB, made.id)
    with pytest.raises(BreakGlassConflict):
        await world.glass.approve(CAROL, made.id)
    with pytest.raises(NotFound):
        await world.glass.approve(CAROL, "bg-ffffffffffffffff")


async def test_a_read_while_the_vault_is_down_uses_the_read_only_key_without_shares(
    world: World,
) -> None:
    request_id = await world.approved(Access.READ)
    world.secrets.down = DOWN
    got = await world.glass.collect(ANN, request_id)
    assert world.issuer.signers == [(READ_ONLY_KEY.access_key_id, READ_ROLE)]
    assert not got.request.used_escrow and world.escrow.opened == 0


async def test_a_write_while_the_vault_is_down_needs_k_shares(world: World) -> None:
    request_id = await world.approved()
    world.secrets.down = DOWN
    with pytest.raises(EscrowSealed):
        await world.glass.collect(ANN, request_id)
    await world.glass.submit_share(BOB, request_id, "share-1")
    await world.glass.submit_share(CAROL, request_id, "share-4")
    with pytest.raises(BreakGlassConflict):
        await world.glass.submit_share(CAROL, request_id, "share-4")
    with pytest.raises(EscrowError):
        await world.glass.submit_share(CAROL, request_id, "share-9")
    with pytest.raises(EscrowSealed, match="2 submitted"):  # two shares are not enough
        await world.glass.collect(ANN, request_id)
    assert world.issuer.calls == [] and world.escrow.opened == 0
    accepted = await world.glass.submit_share(DAVE, request_id, "share-5")
    assert (accepted.submitted, accepted.threshold) == (3, 3)

    got = await world.glass.collect(ANN, request_id)
    assert world.issuer.signers == [(SERVICE.access_key_id, None)]
    assert got.request.used_escrow and world.escrow.opened == 1
    assert world.glass.shares_submitted(request_id) == 0  # dropped once used

    closed = await world.glass.close(ANN, request_id, outcome="restored the export")
    assert closed.rotation == "waiting_grace" and world.rotations == ["service"]
    assert closed.request.status is BreakGlassStatus.CLOSED


async def test_shares_are_refused_for_reads_and_before_approval(world: World) -> None:
    made = await world.glass.request(
        ANN, space="ENG", access=Access.WRITE, ttl_seconds=900, reason="x"
    )
    with pytest.raises(BreakGlassConflict):
        await world.glass.submit_share(BOB, made.id, "share-1")
    read_id = await world.approved(Access.READ)
    with pytest.raises(InvalidRequest):
        await world.glass.submit_share(BOB, read_id, "share-1")


async def test_a_write_while_the_vault_is_down_without_an_escrow_is_refused() -> None:
    world = World()
    world.glass._escrow = None
    request_id = await world.approved()
    world.secrets.down = SecretStoreUnavailable("down")
    with pytest.raises(EscrowSealed, match="no escrow"):
        await world.glass.collect(ANN, request_id)


async def test_closing_without_the_escrow_rotates_nothing(world: World) -> None:
    request_id = await world.approved()
    await world.glass.collect(ANN, request_id)
    closed = await world.glass.close(BOB, request_id, outcome="done")
    assert closed.rotation is None and world.rotations == []
    with pytest.raises(BreakGlassConflict):
        await world.glass.close(ANN, request_id, outcome="again")


async def test_every_step_is_announced_once_and_holds_no_secret(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    request_id = await world.approved()
    world.secrets.down = DOWN
    for share in ("share-1", "share-2", "share-3"):
        await world.glass.submit_share(DAVE, request_id, share)
    got = await world.glass.collect(ANN, request_id)
    await world.glass.close(ANN, request_id, outcome="ok")

    steps = ["request", "approve", "approve", "share", "share", "share", "collect", "close"]
    records = world.audit.named("break_glass")
    assert [e["step"] for e in records] == steps
    assert [e["step"] for e in world.notifier.events] == steps
    assert [s for s, _ in world.metrics.steps] == steps
    warnings = [r for r in caplog.records if r.name == "credbroker.breakglass"]
    assert [r.levelno for r in warnings] == [logging.WARNING] * len(steps)
    assert all(e["mode"] == "break-glass" for e in records)
    assert records[-2]["access_key_id"] == got.credentials.access_key_id
    assert records[3]["custodian"] == 1 and records[1]["client"] == "bob"

    everything = json.dumps(world.audit.events) + json.dumps(world.notifier.events) + caplog.text
    for secret in (
        SERVICE.secret_access_key,
        got.credentials.secret_access_key,
        got.credentials.session_token,
        "share-1",
        "share-2",
    ):
        assert secret not in everything
