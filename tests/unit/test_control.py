"""The live control plane on fakes: principals, tokens (two at most, expiry, revocation),
freezes in the vend path, config seeds read-only, rate limits from the snapshot, audit.

Two ControlPlanes on one MemoryPrincipalStore stand for two replicas on one database; the same
rules run against real SQLite and PostgreSQL in tests/contract/test_principal_store_contract.py
and through two real broker processes in tests/integration/test_control_plane.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from datetime import timedelta
from typing import Any

import pytest

from credbroker.callers.tokens import LiveTokenAuth, new_token
from credbroker.control import ClientChanges, ControlPlane, Seed
from credbroker.domain import (
    Access,
    Client,
    Flavor,
    Principal,
    PrincipalSource,
    Role,
    SpaceTarget,
    TtlLimits,
)
from credbroker.errors import (
    Frozen,
    InvalidRequest,
    NotFound,
    PrincipalConflict,
    StateStoreError,
    Unauthenticated,
)
from credbroker.limits import Rate, TokenBuckets
from credbroker.parent_key import ParentKeySource
from credbroker.vend import Broker, PresignRequest, VendRequest
from tests.fakes import (
    Clock,
    FakeAudit,
    FakeIssuer,
    FakeMetrics,
    MemoryPrincipalStore,
    MemorySecretStore,
    MonotonicClock,
)

SPACES = {"ENG": SpaceTarget("cb-main", "ENG/"), "OPS": SpaceTarget("cb-main", "OPS/")}
SEED_TOKEN = "cbk_seed-token-from-the-config-file"
SEEDED = Client("seeded", frozenset({"ENG"}), Access.READ, 3600)


def seed() -> Seed:
    return Seed(
        Principal(SEEDED, source=PrincipalSource.CONFIG),
        hashlib.sha256(SEED_TOKEN.encode()).hexdigest(),
    )


def replica(
    store: MemoryPrincipalStore, clock: Clock, audit: FakeAudit | None = None
) -> ControlPlane:
    return ControlPlane(
        store,
        seed=[seed()],
        spaces=SPACES,
        audit=audit or FakeAudit(),
        mint=new_token,
        clock=clock,
        monotonic=MonotonicClock(),
    )


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store() -> MemoryPrincipalStore:
    return MemoryPrincipalStore()


async def test_a_principal_added_on_one_replica_authenticates_on_another(
    store: MemoryPrincipalStore, clock: Clock
) -> None:
    one, two = replica(store, clock), replica(store, clock)
    await one.refresh(force=True)
    await two.refresh(force=True)
    await one.add_client("op", "rule-a", spaces=["ENG"], max_access=Access.WRITE)
    token, _ = await one.issue_token("op", "rule-a")
    with pytest.raises(Unauthenticated):  # not yet reloaded
        LiveTokenAuth(two, clock=clock).authenticate(f"Bearer {token}")
    assert await two.refresh() is True
    client = LiveTokenAuth(two, clock=clock).authenticate(f"Bearer {token}")
    assert client.id == "rule-a" and client.max_access is Access.WRITE
    assert await two.refresh() is False  # nothing moved: no reload


async def test_a_revoked_token_is_refused_after_the_next_refresh(
    store: MemoryPrincipalStore, clock: Clock
) -> None:
    one, two = replica(store, clock), replica(store, clock)
    await one.add_client("op", "rule-a", spaces=["ENG"])
    token, record = await one.issue_token("op", "rule-a")
    await two.refresh()
    auth = LiveTokenAuth(two, clock=clock)
    assert auth.authenticate(f"Bearer {token}").id == "rule-a"
    await one.revoke_token("op", "rule-a", record.id)
    await two.refresh()
    with pytest.raises(Unauthenticated, match="unknown or revoked"):
        auth.authenticate(f"Bearer {token}")


async def test_a_revoked_client_loses_every_token(
    store: MemoryPrincipalStore, clock: Clock
) -> None:
    control = replica(store, clock)
    await control.add_client("op", "rule-a", spaces=["ENG"])
    first, _ = await control.issue_token("op", "rule-a")
    second, _ = await control.issue_token("op", "rule-a")
    await control.revoke_client("op", "rule-a")
    auth = LiveTokenAuth(control, clock=clock)
    for token in (first, second):
        with pytest.raises(Unauthenticated):
            auth.authenticate(f"Bearer {token}")
    with pytest.raises(NotFound):
        await control.issue_token("op", "rule-a")
    with pytest.raises(PrincipalConflict):  # ids are never reused
        await control.add_client("op", "rule-a", spaces=["ENG"])


async def test_two_tokens_at_once_and_not_three(store: MemoryPrincipalStore, clock: Clock) -> None:
    control = replica(store, clock)
    await control.add_client("op", "rule-a", spaces=["ENG"])
    old, old_record = await control.issue_token("op", "rule-a")
    new, _ = await control.issue_token("op", "rule-a")
    auth = LiveTokenAuth(control, clock=clock)
    assert auth.authenticate(f"Bearer {old}").id == auth.authenticate(f"Bearer {new}").id
    with pytest.raises(PrincipalConflict) as refused:
        await control.issue_token("op", "rule-a")
    assert refused.value.code == "too_many_tokens"
    await control.revoke_token("op", "rule-a", old_record.id)  # the rule switched: old one out
    third, _ = await control.issue_token("op", "rule-a")
    assert auth.authenticate(f"Bearer {third}").id == "rule-a"
    with pytest.raises(Unauthenticated):
        auth.authenticate(f"Bearer {old}")


async def test_an_expired_token_is_refused_and_frees_its_slot(
    store: MemoryPrincipalStore, clock: Clock
) -> None:
    control = replica(store, clock)
    await control.add_client("op", "rule-a", spaces=["ENG"])
    token, _ = await control.issue_token("op", "rule-a", expires_at=clock() + timedelta(hours=1))
    auth = LiveTokenAuth(control, clock=clock)
    assert auth.authenticate(f"Bearer {token}").id == "rule-a"
    clock.advance(3599)
    assert auth.authenticate(f"Bearer {token}").id == "rule-a"
    clock.advance(1)
    with pytest.raises(Unauthenticated, match="expired"):
        auth.authenticate(f"Bearer {token}")
    await control.issue_token("op", "rule-a")
    await control.issue_token("op", "rule-a")  # the expired one no longer counts


@pytest.mark.parametrize("hours", [-1, 0, 24 * 401])
async def test_an_expiry_outside_now_to_400_days_is_refused(
    store: MemoryPrincipalStore, clock: Clock, hours: int
) -> None:
    control = replica(store, clock)
    await control.add_client("op", "rule-a", spaces=["ENG"])
    with pytest.raises(InvalidRequest):
        await control.issue_token("op", "rule-a", expires_at=clock() + timedelta(hours=hours))


async def test_config_principals_are_shown_and_read_only(
    store: MemoryPrincipalStore, clock: Clock
) -> None:
    control = replica(store, clock)
    await control.refresh(force=True)
    assert LiveTokenAuth(control, clock=clock).authenticate(f"Bearer {SEED_TOKEN}") == SEEDED
    views = await control.clients()
    assert [(v.principal.id, v.principal.source) for v in views] == [
        ("seeded", PrincipalSource.CONFIG)
    ]
    for change in (
        control.add_client("op", "seeded", spaces=["ENG"]),
        control.set_client("op", "seeded", ClientChanges(max_access=Access.WRITE)),
        control.revoke_client("op", "seeded"),
        control.issue_token("op", "seeded"),
        control.revoke_token("op", "seeded", "tok_0123456789abcdef"),
    ):
        with pytest.raises(PrincipalConflict) as refused:
            await change
        assert refused.value.code == "config_principal"
        assert "config file" in refused.value.message


async def test_set_changes_limits_live(store: MemoryPrincipalStore, clock: Clock) -> None:
    control = replica(store, clock)
    await control.add_client("op", "rule-a", spaces=["ENG"])
    token, _ = await control.issue_token("op", "rule-a")
    await control.set_client(
        "op",
        "rule-a",
        ClientChanges(
            spaces=frozenset({"ENG", "OPS"}),
            max_access=Access.WRITE,
            roles=frozenset({Role.RULE, Role.ADMIN}),
        ),
    )
    client = LiveTokenAuth(control, clock=clock).authenticate(f"Bearer {token}")
    assert client.spaces == {"ENG", "OPS"} and client.max_access is Access.WRITE and client.admin


@pytest.mark.parametrize(
    ("client_id", "spaces"),
    [
        ("", ["ENG"]),
        ("a" * 65, ["ENG"]),
        ("x'; DROP TABLE principals;--", ["ENG"]),
        ("ünïcode", ["ENG"]),
        ("ok", []),
        ("ok", ["NOPE"]),
        ("ok", ["ENG/../OPS"]),
        ("ok", ["ENG\u202e"]),
    ],
)
async def test_hostile_ids_and_spaces_are_refused(
    store: MemoryPrincipalStore, clock: Clock, client_id: str, spaces: list[str]
) -> None:
    with pytest.raises(InvalidRequest):
        await replica(store, clock).add_client("op", client_id, spaces=spaces)
    assert store.principal_rows == {}


async def test_every_change_is_audited_without_a_token_or_its_hash(
    store: MemoryPrincipalStore, clock: Clock
) -> None:
    audit = FakeAudit()
    control = replica(store, clock, audit)
    await control.add_client("cli:alice", "rule-a", spaces=["ENG"])
    token, record = await control.issue_token("cli:alice", "rule-a")
    await control.revoke_token("cli:alice", "rule-a", record.id)
    freeze = await control.freeze("api:admin", reason="incident 42", space="ENG")
    await control.unfreeze("api:admin", freeze_id=freeze.id)
    await control.revoke_client("cli:alice", "rule-a")
    events = [(e["event"], e["actor"]) for e in audit.events]
    assert events == [
        ("client_added", "cli:alice"),
        ("token_issued", "cli:alice"),
        ("token_revoked", "cli:alice"),
        ("freeze_set", "api:admin"),
        ("freeze_lifted", "api:admin"),
        ("client_revoked", "cli:alice"),
    ]
    text = json.dumps(audit.events)
    assert token not in text and record.sha256 not in text and record.sha256[:16] not in text


# --- freezes in the vend path ---------------------------------------------------------------


def broker(control: ControlPlane, metrics: FakeMetrics, audit: FakeAudit, clock: Clock) -> Broker:
    secrets = MemorySecretStore()
    secrets.put("svc", {"access_key_id": "AKSVC", "secret_access_key": "never-logged"})
    return Broker(
        spaces=SPACES,
        ttl=TtlLimits(),
        credentials=ParentKeySource(secrets, "svc", cache_seconds=0),
        issuer=FakeIssuer(clock=clock),
        audit=audit,
        metrics=metrics,
        flavor=Flavor.RGW,
        freezes=control,
        clock=clock,
    )


WRITER = Client("rule-w", frozenset({"ENG", "OPS"}), Access.WRITE, 3600)


@pytest.mark.parametrize(
    ("space", "client_id", "frozen_space", "frozen_other"),
    [
        (None, None, True, True),  # everything
        ("ENG", None, True, False),  # one space
        (None, "rule-w", True, True),  # one client, every space
        ("OPS", "rule-w", False, True),  # one client in one space
    ],
)
async def test_a_freeze_refuses_matching_vends_and_presigns_only(
    store: MemoryPrincipalStore,
    clock: Clock,
    space: str | None,
    client_id: str | None,
    frozen_space: bool,
    frozen_other: bool,
) -> None:
    control = replica(store, clock)
    await control.add_client("op", "rule-w", spaces=["ENG", "OPS"], max_access=Access.WRITE)
    metrics, audit = FakeMetrics(), FakeAudit()
    vend = broker(control, metrics, audit, clock)
    await control.freeze("op", reason="key leak INC-7", space=space, client_id=client_id)

    async def attempt(where: str) -> bool:
        try:
            await vend.vend(WRITER, VendRequest(space=where, access=Access.READ))
        except Frozen as exc:
            assert "key leak INC-7" in exc.message and exc.status == 503
            assert exc.audited and exc.retry_after is None and not exc.retry_after_header
            return True
        return False

    assert await attempt("ENG") is frozen_space
    assert await attempt("OPS") is frozen_other
    with pytest.raises(Frozen) if frozen_space else contextlib.nullcontext():
        await vend.presign(WRITER, PresignRequest(space="ENG", key="a.txt", method="GET"))
    refused = [e for e in audit.events if e.get("code") == "frozen"]
    assert len(refused) == len(metrics.frozen) == frozen_space * 2 + frozen_other
    assert all(e["event"] == "denied" and e["freeze_id"] for e in refused)


async def test_a_lifted_freeze_lets_vends_through_again(
    store: MemoryPrincipalStore, clock: Clock
) -> None:
    one, two = replica(store, clock), replica(store, clock)
    vend = broker(two, FakeMetrics(), FakeAudit(), clock)
    freeze = await one.freeze("op", reason="incident")
    await two.refresh()
    with pytest.raises(Frozen):
        await vend.vend(WRITER, VendRequest(space="ENG", access=Access.READ))
    await one.unfreeze("op", freeze_id=freeze.id)
    await two.refresh()
    await vend.vend(WRITER, VendRequest(space="ENG", access=Access.READ))


async def test_a_freeze_is_checked_after_authorization(
    store: MemoryPrincipalStore, clock: Clock
) -> None:
    """A client learns nothing of freezes on spaces it may not use: 403 as before."""
    from credbroker.errors import NotAllowed

    control = replica(store, clock)
    await control.freeze("op", reason="incident", space="OPS")
    reader = Client("reader", frozenset({"ENG"}), Access.READ, 3600)
    with pytest.raises(NotAllowed):
        await broker(control, FakeMetrics(), FakeAudit(), clock).vend(
            reader, VendRequest(space="OPS", access=Access.READ)
        )


async def test_unfreeze_by_selector_lifts_exactly_that_selector(
    store: MemoryPrincipalStore, clock: Clock
) -> None:
    control = replica(store, clock)
    await control.freeze("op", reason="one", space="ENG")
    await control.freeze("op", reason="two", space="ENG")
    everything = await control.freeze("op", reason="three")
    lifted = await control.unfreeze("op", space="ENG")
    assert sorted(f.reason for f in lifted) == ["one", "two"]
    assert [f.id for f in control.snapshot.freezes] == [everything.id]
    with pytest.raises(NotFound):
        await control.unfreeze("op", space="OPS")


@pytest.mark.parametrize("reason", ["", "   ", "x" * 501, "line\nbreak", "bidi\u202eoverride"])
async def test_a_freeze_needs_a_printable_reason(
    store: MemoryPrincipalStore, clock: Clock, reason: str
) -> None:
    with pytest.raises(InvalidRequest):
        await replica(store, clock).freeze("op", reason=reason)


# --- snapshot behaviour -----------------------------------------------------------------------


async def test_a_store_outage_keeps_the_last_snapshot(
    store: MemoryPrincipalStore, clock: Clock
) -> None:
    control = replica(store, clock)
    await control.add_client("op", "rule-a", spaces=["ENG"])
    token, _ = await control.issue_token("op", "rule-a")
    store.fail = True
    with pytest.raises(StateStoreError):
        await control.refresh()
    assert LiveTokenAuth(control, clock=clock).authenticate(f"Bearer {token}").id == "rule-a"


async def test_rate_limits_of_store_principals_come_from_the_snapshot(
    store: MemoryPrincipalStore, clock: Clock
) -> None:
    control = replica(store, clock)
    await control.add_client("op", "rule-a", spaces=["ENG"], rate_per_second=1, burst=2)
    ticks = MonotonicClock()
    buckets = TokenBuckets(Rate(100, 100), live=control.rate_of, clock=ticks)
    assert [buckets.try_acquire("rule-a") > 0 for _ in range(3)] == [False, False, True]
    # Changed live: the next second refills to the new burst of 5, not the old 2.
    await control.set_client("op", "rule-a", ClientChanges(burst=5, rate_per_second=50))
    ticks.advance(1)
    assert [buckets.try_acquire("rule-a") > 0 for _ in range(6)] == [False] * 5 + [True]
    # Unknown to the snapshot: the default (100 at once).
    assert not any(buckets.try_acquire("other") > 0 for _ in range(100))


class _Counts:
    def __init__(self) -> None:
        self.generations: list[int] = []
        self.failures = 0

    def control_refreshed(self, generation: int, active_freezes: int) -> None:
        self.generations.append(generation)

    def count_control_refresh_failure(self) -> None:
        self.failures += 1


class _Deaf(MemoryPrincipalStore):
    """A store that cannot notify (as SQLite): only the poll finds changes."""

    async def watch(self, changed: Any) -> None:
        return None


@pytest.mark.parametrize("store_type", [MemoryPrincipalStore, _Deaf])
async def test_the_refresh_loop_follows_changes_and_survives_outages(
    clock: Clock, store_type: type[MemoryPrincipalStore]
) -> None:
    store = store_type()
    counts = _Counts()
    one = replica(store, clock)
    two = ControlPlane(
        store,
        seed=[],
        spaces=SPACES,
        audit=FakeAudit(),
        mint=new_token,
        metrics=counts,
        poll_seconds=0.01,
        clock=clock,
    )
    runner = asyncio.create_task(two.run())
    try:
        freeze = await one.freeze("op", reason="incident")
        for _ in range(1000):
            if two.frozen("x", "ENG") is not None:
                break
            await asyncio.sleep(0.005)
        assert two.frozen("x", "ENG") == freeze
        store.fail = True
        for _ in range(1000):
            if counts.failures:
                break
            await asyncio.sleep(0.005)
        assert counts.failures > 0 and two.frozen("x", "ENG") == freeze  # last snapshot kept
        store.fail = False
        await one.unfreeze("op", freeze_id=freeze.id)
        for _ in range(1000):
            if two.frozen("x", "ENG") is None:
                break
            await asyncio.sleep(0.005)
        assert two.frozen("x", "ENG") is None
        assert counts.generations[-1] == store.gen
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
