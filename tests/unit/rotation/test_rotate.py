"""The rotation use case, every branch, on an in-memory object store (tests/fake_object_store.py),
a real SQLite state store, a real embedded secret store and an injected clock.

The same protocol runs against the real Ceph RGW in tests/integration/test_rotation_rgw.py.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from credbroker.domain import Access, AccessKey, RotationPhase, Scope, SecretVersion
from credbroker.errors import CasMismatch, RotationBusy, SecretStoreUnavailable
from credbroker.observability import Metrics
from credbroker.rotation.model import ManagedKey, RetryPolicy
from credbroker.rotation.rotate import Rotator
from credbroker.rotation.schedule import Schedule
from credbroker.secrets.embedded import EmbeddedSecretStore
from credbroker.state.sqlite import SqliteStateStore
from tests.fake_object_store import FakeObjectStore
from tests.fakes import T0, Clock, FakeAudit, SimulatedKill

PATH = "credbroker/object-store/service"
USER = "broker"
DAY = 86400


@dataclass
class World:
    tmp: Path
    clock: Clock = field(default_factory=Clock)
    objects: FakeObjectStore = field(default_factory=FakeObjectStore)
    metrics: Metrics = field(default_factory=Metrics)
    audit: FakeAudit = field(default_factory=FakeAudit)
    store: EmbeddedSecretStore | None = None
    seal_key: bytes = field(default_factory=lambda: os.urandom(32))
    state: SqliteStateStore | None = None
    original: AccessKey | None = None
    switched: list[str] = field(default_factory=list)

    def rotator(self, **overrides: Any) -> Rotator:
        assert self.store is not None and self.state is not None
        spec = overrides.pop(
            "spec",
            ManagedKey(
                name="service",
                secret_path=PATH,
                user=USER,
                schedule=Schedule(interval_seconds=30 * DAY),
                grace_seconds=600,
            ),
        )

        async def switched(path: str) -> None:
            self.switched.append(path)

        options: dict[str, Any] = {
            "credentials": [spec],
            "drivers": {spec.name: self.objects.driver_for(spec.user)},
            "store": self.store,
            "state": self.state,
            "probe": self.objects.probe,
            "metrics": self.metrics,
            "audit": self.audit,
            "retry": RetryPolicy(60, 3600),
            "verify_timeout_seconds": 30,
            "clock": self.clock,
            "sleep": self.clock.sleep,
            "on_switch": switched,
        }
        options.update(overrides)
        return Rotator(**options)

    async def in_store(self) -> AccessKey:
        assert self.store is not None
        return AccessKey.from_secret(await self.store.read(PATH))

    def count(self, outcome: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "credbroker_rotations_total", {"credential": "service", "outcome": outcome}
        )
        return value or 0.0


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    w = World(tmp_path)
    w.store = EmbeddedSecretStore(tmp_path / "secrets.sealed", w.seal_key)
    w.state = await SqliteStateStore.open(tmp_path / "state.sqlite3")
    w.original = w.objects.add_key(USER)
    await w.store.write(PATH, {**w.original.as_secret_data(), "note": "kept"}, cas=0)
    try:
        yield w
    finally:
        await w.state.close()


async def force_done(world: World, rotator: Rotator | None = None) -> None:
    outcome = await (rotator or world.rotator()).run("service", force=True, wait=True)
    assert outcome.result == "completed", outcome


# --- the protocol ----------------------------------------------------------------------------


async def test_a_new_credential_is_enrolled_and_not_due_before_its_interval(world: World) -> None:
    outcome = await world.rotator().run("service")

    assert outcome.result == "not_due"
    assert outcome.record.next_due_at == T0 + timedelta(days=30)
    assert world.objects.calls == []


async def test_a_due_rotation_stores_the_new_key_then_deletes_the_old_after_grace(
    world: World,
) -> None:
    assert world.original is not None
    await world.rotator().run("service")  # enrol
    world.clock.advance(30 * DAY)

    first = await world.rotator().run("service")

    new = await world.in_store()
    assert first.result == "waiting_grace"
    assert first.record.phase is RotationPhase.STORED
    assert new.access_key_id != world.original.access_key_id
    assert world.objects.works(new)
    assert (await world.store.read(PATH)).get("note") == "kept"  # type: ignore[union-attr]
    assert world.objects.user_keys(USER) == sorted(
        [world.original.access_key_id, new.access_key_id]
    )
    assert world.switched == [PATH]
    assert first.record.next_due_at == world.clock.now + timedelta(seconds=600)

    world.clock.advance(599)
    assert (await world.rotator().run("service")).result == "not_due"
    world.clock.advance(1)
    second = await world.rotator().run("service")

    assert second.result == "completed"
    assert world.objects.user_keys(USER) == [new.access_key_id]
    assert not world.objects.works(world.original)
    record = second.record
    assert (record.old_key_id, record.new_key_id) == (
        world.original.access_key_id,
        new.access_key_id,
    )
    assert record.last_success_at == world.clock.now
    assert record.next_due_at == world.clock.now + timedelta(days=30)
    assert record.attempts == 0 and record.last_error is None
    assert world.count("completed") == 1 and world.count("waiting_grace") == 1


async def test_phases_are_recorded_in_order(world: World) -> None:
    seen: list[RotationPhase] = []

    async def checkpoint(name: str, phase: RotationPhase) -> None:
        seen.append(phase)

    await force_done(world, world.rotator(checkpoint=checkpoint))

    assert seen == [
        RotationPhase.IDLE,
        RotationPhase.CREATING,
        RotationPhase.CREATED,
        RotationPhase.VERIFIED,
        RotationPhase.STORED,
        RotationPhase.OLD_DELETED,
        RotationPhase.DONE,
    ]


async def test_a_slow_new_key_is_retried_until_it_works(world: World) -> None:
    world.objects.settle = 3  # valid only from the 4th probe; refused only from the 4th

    await force_done(world)

    assert world.objects.calls.count("accepts") == 4
    assert world.objects.calls.count("refuses") == 4


async def test_restart_neither_repeats_nor_skips(world: World) -> None:
    await force_done(world)
    done = (await world.rotator().run("service")).record
    assert done.next_due_at == world.clock.now + timedelta(days=30)  # from the finish

    # A new process (new Rotator, same state file): not due yet, then due exactly once.
    world.clock.advance(30 * DAY - 1)
    assert (await world.rotator().run("service")).result == "not_due"
    world.clock.advance(1)
    assert (await world.rotator().run("service", wait=True)).result == "completed"
    assert (await world.rotator().run("service")).result == "not_due"


async def test_a_changed_schedule_takes_effect(world: World) -> None:
    await force_done(world)
    weekly = ManagedKey(
        name="service",
        secret_path=PATH,
        user=USER,
        schedule=Schedule(cron="0 3 * * 1"),  # Mondays 03:00 UTC (crontab numbering)
        grace_seconds=600,
    )

    outcome = await world.rotator(spec=weekly).run("service")

    assert outcome.result == "not_due"
    assert outcome.record.next_due_at == datetime(2026, 11, 30, 3, 0, tzinfo=UTC)
    assert outcome.record.schedule_fingerprint == weekly.schedule.fingerprint


# --- failures: logged, counted, backed off, old key kept ---------------------------------------


async def test_a_new_key_that_never_works_fails_safely_and_backs_off(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    assert world.original is not None
    world.objects.never_valid = True

    first = await world.rotator().run("service", force=True)

    assert first.result == "failed"
    assert await world.in_store() == replace(world.original, version=1)
    assert world.objects.user_keys(USER) == [world.original.access_key_id]  # new key deleted
    assert first.record.attempts == 1
    assert first.record.next_due_at == world.clock.now + timedelta(seconds=60)
    assert "InvalidAccessKeyId" in (first.record.last_error or "")
    assert world.count("failed") == 1
    failures = world.metrics.registry.get_sample_value(
        "credbroker_rotation_consecutive_failures", {"credential": "service"}
    )
    assert failures == 1
    assert "rotation service failed" in caplog.text

    world.clock.advance(60)
    second = await world.rotator().run("service")
    assert second.result == "failed"
    assert second.record.next_due_at == world.clock.now + timedelta(seconds=120)

    world.objects.never_valid = False
    world.clock.advance(120)
    assert (await world.rotator().run("service", wait=True)).result == "completed"
    for secret in [world.original.secret_access_key, (await world.in_store()).secret_access_key]:
        assert secret not in caplog.text
        assert all(secret not in json.dumps(e, default=str) for e in world.audit.events)


async def test_a_new_key_whose_minted_keys_can_do_nothing_is_never_stored(world: World) -> None:
    """MinIO mints STS keys for a parent with no policy attached: authenticating proves
    nothing. With a proof scope, the new key must mint a key that lists it."""
    assert world.original is not None
    proof = Scope("exports", "ENG/", Access.READ)
    spec = ManagedKey(
        name="service",
        secret_path=PATH,
        user=USER,
        schedule=Schedule(interval_seconds=30 * DAY),
        grace_seconds=600,
        proof=proof,
    )
    world.objects.powerless = True

    outcome = await world.rotator(spec=spec).run("service", force=True)

    assert outcome.result == "failed"
    assert "AccessDenied" in (outcome.record.last_error or "")
    assert await world.in_store() == replace(world.original, version=1)
    assert world.objects.user_keys(USER) == [world.original.access_key_id]
    assert world.objects.proofs and set(world.objects.proofs) == {proof}

    world.objects.powerless = False
    world.clock.advance(60)
    assert (await world.rotator(spec=spec).run("service")).result == "waiting_grace"


async def test_the_admin_api_failing_leaves_the_old_key_in_service(world: World) -> None:
    assert world.original is not None
    world.objects.fail["create"] = lambda: SecretStoreUnavailable("admin API down")

    outcome = await world.rotator().run("service", force=True)

    assert outcome.result == "failed"
    assert outcome.record.phase is RotationPhase.CREATING
    assert (await world.in_store()).access_key_id == world.original.access_key_id
    del world.objects.fail["create"]
    world.clock.advance(60)
    assert (await world.rotator().run("service", wait=True)).result == "completed"
    assert len(world.objects.user_keys(USER)) == 1


async def test_someone_writing_first_wins_and_our_key_is_deleted(world: World) -> None:
    assert world.store is not None and world.original is not None
    store = world.store

    class Racing(EmbeddedSecretStore):
        async def write(self, path: str, data: Mapping[str, str], *, cas: int | None) -> int:
            await store.write(path, {**world.original.as_secret_data(), "by": "human"}, cas=None)  # type: ignore[union-attr]
            return await super().write(path, data, cas=cas)

    racing = Racing(world.tmp / "secrets.sealed", world.seal_key)

    outcome = await world.rotator(store=racing).run("service", force=True)

    assert outcome.result == "failed"
    assert "cas_mismatch" in (outcome.record.last_error or "")
    assert world.objects.user_keys(USER) == [world.original.access_key_id]
    assert (await world.store.read(PATH)).get("by") == "human"
    assert CasMismatch.code in (outcome.record.last_error or "")


async def test_a_write_that_may_have_happened_is_decided_by_the_next_run(world: World) -> None:
    assert world.store is not None and world.original is not None

    class Lost(EmbeddedSecretStore):
        async def write(self, path: str, data: Mapping[str, str], *, cas: int | None) -> int:
            raise SecretStoreUnavailable("timed out")

    lost = Lost(world.tmp / "secrets.sealed", world.seal_key)
    outcome = await world.rotator(store=lost).run("service", force=True)

    assert outcome.result == "failed" and outcome.record.phase is RotationPhase.VERIFIED
    assert len(world.objects.user_keys(USER)) == 2  # unknown yet whether the write landed
    world.clock.advance(60)
    assert (await world.rotator().run("service", wait=True)).result == "completed"
    assert world.objects.user_keys(USER) == [(await world.in_store()).access_key_id]


async def test_a_store_key_that_is_not_the_users_deletes_nothing(world: World) -> None:
    assert world.store is not None
    stranger = world.objects.add_key("someone-else")
    await world.store.write(PATH, stranger.as_secret_data(), cas=None)
    before = world.objects.user_keys(USER)

    outcome = await world.rotator().run("service", force=True)

    assert outcome.result == "failed"
    assert "not a key of broker" in (outcome.record.last_error or "")
    assert world.objects.user_keys(USER) == before
    assert world.objects.calls == ["list"]


async def test_the_old_key_restored_during_grace_is_not_deleted(world: World) -> None:
    assert world.store is not None and world.original is not None
    await world.rotator().run("service", force=True)
    await world.store.write(PATH, world.original.as_secret_data(), cas=None)  # a human restores
    world.clock.advance(600)

    outcome = await world.rotator().run("service")

    assert outcome.result == "failed"
    assert world.objects.works(world.original)
    assert "holds the old key" in (outcome.record.last_error or "")


async def test_stray_keys_are_deleted_before_a_new_one_is_made(world: World) -> None:
    stray = world.objects.add_key(USER)

    await force_done(world)

    assert stray.access_key_id not in world.objects.user_keys(USER)
    assert len(world.objects.user_keys(USER)) == 1


async def test_a_held_lock_skips_the_run(world: World) -> None:
    assert world.state is not None
    async with world.state.lock("service"):
        with pytest.raises(RotationBusy):
            await world.rotator().run("service", force=True)
    assert world.objects.calls == []
    assert world.count("busy") == 1


async def test_a_disabled_credential_is_not_scheduled_but_can_be_forced(world: World) -> None:
    spec = ManagedKey(
        "service", PATH, USER, Schedule(interval_seconds=60), grace_seconds=10, enabled=False
    )
    world.clock.advance(DAY)
    assert (await world.rotator(spec=spec).run("service")).result == "disabled"
    assert (await world.rotator(spec=spec).run("service", force=True, wait=True)).result == (
        "completed"
    )


# --- crash at every phase, repaired by the next run -----------------------------------------


@pytest.mark.parametrize(
    "phase",
    [
        RotationPhase.CREATING,
        RotationPhase.CREATED,
        RotationPhase.VERIFIED,
        RotationPhase.STORED,
        RotationPhase.OLD_DELETED,
    ],
)
@pytest.mark.parametrize("how", ["killed", "failed"])
async def test_a_run_stopped_after_any_phase_is_repaired_by_the_next(
    world: World, phase: RotationPhase, how: str
) -> None:
    async def stop(name: str, reached: RotationPhase) -> None:
        if reached is phase:
            raise SimulatedKill() if how == "killed" else RuntimeError(f"failed after {phase}")

    if how == "killed":
        with pytest.raises(SimulatedKill):
            await world.rotator(checkpoint=stop).run("service", force=True, wait=True)
    else:
        outcome = await world.rotator(checkpoint=stop).run("service", force=True, wait=True)
        assert outcome.result == "failed"

    # Whatever happened, the store's key works and at most one other key exists.
    in_store = await world.in_store()
    assert world.objects.works(in_store)
    assert in_store.access_key_id in world.objects.user_keys(USER)
    assert len(world.objects.user_keys(USER)) <= 2

    world.clock.advance(3600)  # past any grace and backoff
    outcome = await world.rotator().run("service", wait=True)

    in_store = await world.in_store()
    assert outcome.result == "completed", outcome.record.last_error
    assert world.objects.user_keys(USER) == [in_store.access_key_id]
    assert world.objects.works(in_store)


async def test_a_kill_while_creating_leaves_no_orphan(world: World) -> None:
    """The run dies after the object store made the key but before its id was recorded."""

    class DiesAfterCreate:
        kind = "fake"

        def __init__(self) -> None:
            self.inner = world.objects.driver_for(USER)

        async def create_key(self, *, keep: str | None = None) -> AccessKey:
            await self.inner.create_key(keep=keep)
            raise SimulatedKill()

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

    with pytest.raises(SimulatedKill):
        await world.rotator(drivers={"service": DiesAfterCreate()}).run("service", force=True)
    assert len(world.objects.user_keys(USER)) == 2  # an orphan nobody knows the id of

    outcome = await world.rotator().run("service")  # still due: repair, then rotate

    assert outcome.result == "waiting_grace"
    in_store = await world.in_store()
    old_key_id = outcome.record.old_key_id
    assert old_key_id is not None  # waiting_grace: the old key is kept until the grace ends
    assert sorted(world.objects.user_keys(USER)) == sorted([in_store.access_key_id, old_key_id])


# --- read-only stores, status, no secrets ----------------------------------------------------


async def test_a_read_only_store_is_never_rotated_but_its_changes_are_noticed(
    world: World,
) -> None:
    assert world.store is not None
    inner = world.store

    class ReadOnly:
        kind = "cyberark"
        writable = False

        async def read(self, path: str) -> SecretVersion:
            return await inner.read(path)

        async def write(self, path: str, data: Mapping[str, str], *, cas: int | None) -> int:
            raise AssertionError("never written")

        async def check(self) -> None: ...

        async def close(self) -> None: ...

    rotator = world.rotator(store=ReadOnly())
    first = await rotator.run("service", force=True)
    assert first.result == "read_only"
    assert world.objects.calls == []

    owners_key = world.objects.add_key(USER)  # the store's owner rotates
    await inner.write(PATH, owners_key.as_secret_data(), cas=None)
    world.clock.advance(100)
    second = await rotator.run("service")

    assert second.record.current_key_id == owners_key.access_key_id
    assert second.record.current_key_since == world.clock.now
    [status] = await rotator.status()
    assert status.writable is False and status.keys is None
    assert any("read-only" in p for p in status.problems)


async def test_status_shows_key_ids_and_ages_never_secrets(world: World) -> None:
    await force_done(world)
    world.clock.advance(3600)

    [status] = await world.rotator().status()

    in_store = await world.in_store()
    text = json.dumps(status.as_dict())
    assert status.current_key_id == in_store.access_key_id
    assert status.keys == [in_store.access_key_id]
    assert status.key_age_seconds == 600 + 3600  # stored before the grace, then an hour
    assert status.phase == "done" and status.problems == []
    assert in_store.secret_access_key not in text
    age = world.metrics.registry.get_sample_value(
        "credbroker_rotation_key_age_seconds", {"credential": "service"}
    )
    assert age is not None and age >= 3600


async def test_audit_events_carry_key_ids_only(world: World) -> None:
    await force_done(world)
    steps = [e["step"] for e in world.audit.events]
    assert "stored" in steps and "done" in steps
    stored = next(e for e in world.audit.events if e["step"] == "stored")
    assert stored["new_key_id"] == (await world.in_store()).access_key_id
    assert set(stored) == {"ts", "event", "credential", "step", "old_key_id", "new_key_id"}
