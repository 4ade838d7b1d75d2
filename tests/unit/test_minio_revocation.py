"""MinIO revocation on fakes: which revoke-tokens calls each selector makes (one per revoked
lease and parent user), what the answer claims, and how it is configured and wired."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from credbroker import wiring
from credbroker.config import Settings
from credbroker.domain import AccessKey
from credbroker.errors import ConfigError, ObjectStoreUnavailable
from credbroker.leases import Revoker, Selector, Unenforced
from credbroker.objectstore.minio_revocation import MinioTokenRevoker, revoke_calls
from credbroker.objectstore.rgw_revocation import RgwRolePolicyEnforcer
from credbroker.objectstore.sts import StsIssuer
from tests.doubles.minio_admin import MinioAdminDouble
from tests.fake_leases import FakeEnforcer, MemoryLeaseLog
from tests.fakes import T0, Clock, FakeAudit, MemorySecretStore
from tests.unit.test_leases import some_lease

USERS = ["credbroker-a", "credbroker-b"]


class RecordingRevoker(MinioTokenRevoker):
    """The real enforcer with its one admin call recorded instead of sent."""

    def __init__(self, users: list[str]) -> None:
        self.users = users

        async def parent_users() -> list[str]:
            return list(self.users)

        async def admin() -> AccessKey:
            return AccessKey("cb-revoker", "secret")

        super().__init__(
            endpoint="http://minio.invalid:9000", parent_users=parent_users, admin_credentials=admin
        )
        self.calls: list[tuple[str, str]] = []
        self.fail_for: set[tuple[str, str]] = set()  # (user, lease id): fails once

    async def _revoke(self, user: str, lease_id: str) -> None:
        if (user, lease_id) in self.fail_for:
            self.fail_for.discard((user, lease_id))
            raise ObjectStoreUnavailable("minio admin revoke tokens: unreachable (fake)")
        self.calls.append((user, lease_id))


class Rig:
    def __init__(self, users: list[str] | None = None) -> None:
        self.clock = Clock()
        self.clock.advance(60)
        self.log = MemoryLeaseLog()
        self.enforcer = RecordingRevoker(USERS if users is None else users)
        self.audit = FakeAudit()
        self.revoker = Revoker(
            leases=self.log,
            enforcer=self.enforcer,
            audit=self.audit,
            max_ttl_seconds=7200,
            clock=self.clock,
        )

    async def seed(self) -> None:
        await self.log.add_leases(
            [
                some_lease(1),
                some_lease(2, client="reader"),
                some_lease(3, space="OPS", prefix=""),
                some_lease(4, expires_at=T0 + timedelta(seconds=30)),  # already expired
            ]
        )


def lid(n: int) -> str:
    return some_lease(n).lease_id


@pytest.fixture
async def rig() -> Rig:
    r = Rig()
    await r.seed()
    return r


def test_one_call_per_lease_and_parent_user() -> None:
    assert revoke_calls(("cb-1", "cb-2"), ["b", "a", "a"]) == [
        ("a", "cb-1"),
        ("b", "cb-1"),
        ("a", "cb-2"),
        ("b", "cb-2"),
    ]
    assert revoke_calls((), USERS) == []


async def test_a_lease_revokes_its_own_type_for_every_parent_user(rig: Rig) -> None:
    answer = await rig.revoker.revoke(Selector.LEASE, lid(1))
    assert rig.enforcer.calls == [(u, lid(1)) for u in USERS]
    assert answer.revocation.object_store_enforced is True
    assert "MinIO deleted the STS keys of 1 revoked leases" in answer.revocation.detail


async def test_client_and_space_revoke_exactly_their_live_leases(rig: Rig) -> None:
    await rig.revoker.revoke(Selector.CLIENT, "writer")
    assert sorted({name for _, name in rig.enforcer.calls}) == [lid(1), lid(3)]  # 4 expired
    rig.enforcer.calls.clear()
    answer = await rig.revoker.revoke(Selector.SPACE, "ENG")
    # Lease 2 only: 1 and 3 were deleted on MinIO already and are not asked for again.
    assert rig.enforcer.calls == [(u, lid(2)) for u in USERS]
    assert answer.revocation.object_store_enforced is True


async def test_issued_before_reaches_known_leases_and_says_it_is_not_every_key(rig: Rig) -> None:
    cut = T0 + timedelta(seconds=2, milliseconds=500)
    answer = await rig.revoker.revoke(Selector.ISSUED_BEFORE, cut.isoformat())
    assert sorted({name for _, name in rig.enforcer.calls}) == [lid(1), lid(2)]
    assert answer.revocation.object_store_enforced is False
    assert "cannot refuse keys by issue time" in answer.revocation.detail
    [event] = rig.audit.named("revoked")
    assert event["object_store_enforced"] is False
    # The cut stays in effect, yet a later lease revocation is enforced and says so.
    later = await rig.revoker.revoke(Selector.LEASE, lid(3))
    assert later.revocation.object_store_enforced is True


async def test_resync_repeats_nothing_and_retries_what_failed(rig: Rig) -> None:
    rig.enforcer.fail_for = {(USERS[0], lid(3))}
    answer = await rig.revoker.revoke(Selector.CLIENT, "writer")
    assert answer.revocation.object_store_enforced is False
    assert "pruning job applies it again" in answer.revocation.detail
    assert sorted(rig.enforcer.calls) == sorted([(u, lid(1)) for u in USERS] + [(USERS[1], lid(3))])

    assert (await rig.revoker.sync()).enforced is True
    assert rig.enforcer.calls[3:] == [(USERS[0], lid(3))]  # only what failed
    await rig.revoker.sync()
    assert len(rig.enforcer.calls) == 4


async def test_parent_users_are_read_at_each_revocation(rig: Rig) -> None:
    await rig.revoker.revoke(Selector.LEASE, lid(1))
    rig.enforcer.users = [*USERS, "credbroker-readonly"]
    await rig.revoker.sync()
    assert rig.enforcer.calls[-1] == ("credbroker-readonly", lid(1))


async def test_no_parent_user_known_is_not_claimed_as_enforced() -> None:
    rig = Rig(users=[])
    await rig.seed()
    answer = await rig.revoker.revoke(Selector.LEASE, lid(1))
    assert rig.enforcer.calls == []
    assert answer.revocation.object_store_enforced is False


async def test_a_store_with_an_issue_time_gap_is_not_claimed_for_issued_before() -> None:
    log = MemoryLeaseLog()
    await log.add_leases([some_lease(1)])
    clock = Clock()
    clock.advance(60)
    gap = FakeEnforcer(issue_time_gap="only known leases (fake)")
    revoker = Revoker(
        leases=log, enforcer=gap, audit=FakeAudit(), max_ttl_seconds=7200, clock=clock
    )
    answer = await revoker.revoke(Selector.ISSUED_BEFORE, (T0 + timedelta(seconds=5)).isoformat())
    assert answer.revocation.object_store_enforced is False
    assert answer.revocation.detail.endswith("only known leases (fake)")
    assert gap.applied[-1].session_names == (lid(1),)


# --- the AssumeRole tag ----------------------------------------------------------------------


@pytest.mark.parametrize("tagged", [True, False])
async def test_the_issuer_tags_assume_role_with_the_session_name_only_when_asked(
    tagged: bool,
) -> None:
    async with MinioAdminDouble() as minio:
        minio.add_user("credbroker-a", "credbroker-a-secret-0123456789")
        issuer = StsIssuer(
            endpoint=minio.endpoint, region=minio.region, role_arn=None, tag_revoke_type=tagged
        )
        try:
            key = await issuer.assume_role(
                AccessKey("credbroker-a", "credbroker-a-secret-0123456789"),
                policy="",
                duration_seconds=900,
                session_name=lid(7),
            )
        finally:
            await issuer.close()
        assert minio.revoke_type_of(key.access_key_id) == (lid(7) if tagged else "")


# --- configuration and wiring ----------------------------------------------------------------

BASE: dict[str, Any] = {
    "object_store": {"flavor": "minio", "endpoint": "https://minio.internal:9000"},
    "spaces": {"ENG": {"bucket": "confluence-exports", "prefix": "ENG/"}},
}
PAIR = {
    "name": "parent",
    "secret_path": "credbroker/object-store/service",
    "driver": {
        "kind": "minio-users",
        "users": ["credbroker-a", "credbroker-b"],
        "admin_credentials_path": "credbroker/object-store/minio-rotator",
    },
    "schedule": {"interval_seconds": 86400},
}
LEASES = {"enforcer": "minio-sts-revoke", "admin_credentials_path": "credbroker/minio-revoker"}


def settings(**changes: Any) -> Settings:
    return Settings.model_validate({**BASE, **changes})


def test_minio_sts_revoke_needs_an_admin_key() -> None:
    with pytest.raises(ValidationError, match="minio-sts-revoke needs admin_credentials_path"):
        settings(leases={"enforcer": "minio-sts-revoke"})


def test_the_enforcer_is_chosen_by_leases_enforcer() -> None:
    store = MemorySecretStore()
    chosen = wiring.build_revocation_enforcer(settings(leases=LEASES), store)
    assert isinstance(chosen, MinioTokenRevoker) and chosen.kind == "minio-sts-revoke"
    none = wiring.build_revocation_enforcer(settings(), store)
    assert isinstance(none, Unenforced)
    rgw = {
        **BASE,
        "object_store": {
            **BASE["object_store"],
            "flavor": "rgw",
            "role_arn": "arn:aws:iam:::role/v",
        },
    }
    with pytest.raises(ConfigError, match="flavor minio"):
        wiring.build_revocation_enforcer(Settings.model_validate({**rgw, "leases": LEASES}), store)
    rgw_leases = {**LEASES, "enforcer": "rgw-role-policy"}
    enforcer = wiring.build_revocation_enforcer(
        Settings.model_validate({**rgw, "leases": rgw_leases}), store
    )
    assert isinstance(enforcer, RgwRolePolicyEnforcer) and enforcer.issue_time_gap is None


async def test_parent_users_are_the_configured_the_pair_and_the_keys_held_now() -> None:
    store = MemorySecretStore()
    store.put(
        "credbroker/object-store/service",
        {"access_key_id": "credbroker-b", "secret_access_key": "x" * 20},
    )
    configured = settings(
        leases={**LEASES, "parent_users": ["legacy-parent"]},
        rotation={"credentials": [PAIR]},
    )
    users = wiring.minio_parent_users(configured, store)
    assert await users() == ["credbroker-a", "credbroker-b", "legacy-parent"]
    # The service key as it is at the call: a key moved to another user is followed.
    store.put(
        "credbroker/object-store/service",
        {"access_key_id": "credbroker-c", "secret_access_key": "x" * 20},
    )
    assert "credbroker-c" in await users()
    assert await wiring.minio_parent_users(settings(leases=LEASES), MemorySecretStore())() == []
