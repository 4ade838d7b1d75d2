"""The rotation use case, every branch, on an in-memory object store (tests/fake_object_store.py),
a real SQLite state store, a real embedded secret store and an injected clock.

The same protocol runs against the real Ceph RGW in tests/integration/test_rotation_rgw.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
import shlex
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from credbroker import cli, wiring
from credbroker.callers.composite import CallerAuthChain
from credbroker.callers.tokens import TokenAuth
from credbroker.cli import _describe
from credbroker.domain import (
    Access,
    AccessKey,
    Client,
    Role,
    RotationPhase,
    Scope,
    SecretVersion,
)
from credbroker.errors import (
    CasMismatch,
    ObjectStoreUnavailable,
    RotationBusy,
    SecretStoreUnavailable,
)
from credbroker.observability import Metrics
from credbroker.rotation.model import ManagedKey, RetryPolicy
from credbroker.rotation.rotate import Rotator
from credbroker.rotation.schedule import Schedule
from credbroker.secrets.embedded import EmbeddedSecretStore
from credbroker.state.sqlite import SqliteStateStore
from credbroker.web import admin
from credbroker.web.appkeys import METRICS, RUNTIME
from credbroker.web.errors import error_middleware
from credbroker.wiring import Runtime
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
    age = world.metrics.live.get_sample_value(
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


# --- rotate now means a new key (issue 9): made by this run, or a clear "no" ------------------
#
# A forced run finishes a rotation left in progress (deletes its old key, proves it refused),
# then rotates. It never ends a grace early unless asked (end_grace): during a grace it answers
# grace_not_over and touches no key. Wait sleeps the grace out instead.

Phases = RotationPhase


class Pausable(EmbeddedSecretStore):
    """The embedded store, unreachable while `paused` (a sealed or paused vault)."""

    paused = False

    def _check(self) -> None:
        if self.paused:
            raise SecretStoreUnavailable("secret store unreachable (paused)")

    async def read(self, path: str) -> SecretVersion:
        self._check()
        return await super().read(path)

    async def read_version(self, path: str, version: int) -> SecretVersion:
        self._check()
        return await super().read_version(path, version)

    async def write(self, path: str, data: Mapping[str, str], *, cas: int | None) -> int:
        self._check()
        return await super().write(path, data, cas=cas)


async def in_grace(world: World) -> tuple[AccessKey, AccessKey]:
    """A forced rotation left in its grace (600 s from T0): (its old key, the key in service)."""
    assert world.original is not None
    outcome = await world.rotator().run("service", force=True)
    assert outcome.result == "waiting_grace"
    assert outcome.stored_key_id == (await world.in_store()).access_key_id
    return world.original, await world.in_store()


def key_ids(*keys: AccessKey) -> list[str]:
    return sorted(k.access_key_id for k in keys)


async def test_forced_during_the_grace_touches_no_key_and_says_so(world: World) -> None:
    old, current = await in_grace(world)
    world.clock.advance(100)
    calls = list(world.objects.calls)

    outcome = await world.rotator().run("service", force=True)

    assert outcome.result == "grace_not_over"
    assert outcome.stored_key_id is None and outcome.retired_key_id is None
    assert await world.in_store() == current
    assert world.objects.calls == calls  # not one call to the object store
    assert world.objects.user_keys(USER) == key_ids(old, current)
    assert world.objects.works(old) and world.objects.works(current)
    record = outcome.record
    assert record.phase is RotationPhase.STORED
    assert record.next_due_at == T0 + timedelta(seconds=600)  # the grace still ends on time
    assert record.attempts == 0 and record.last_error is None  # not a failure: no backoff
    assert world.count("grace_not_over") == 1 and world.count("failed") == 0
    said = _describe(outcome, forced=True)
    assert said.startswith("NOT ROTATED, no key created or deleted")
    assert old.access_key_id in said and "--end-grace" in said and "--wait" in said


async def test_end_grace_retires_the_old_key_now_then_stores_a_new_one(world: World) -> None:
    """What a leaked key needs: a new key now, whatever grace is running."""
    old, current = await in_grace(world)
    world.clock.advance(100)
    seen: list[RotationPhase] = []

    async def checkpoint(name: str, phase: RotationPhase) -> None:
        seen.append(phase)

    outcome = await world.rotator(checkpoint=checkpoint).run("service", force=True, end_grace=True)

    new = await world.in_store()
    assert outcome.result == "waiting_grace"
    assert outcome.stored_key_id == new.access_key_id
    assert new.access_key_id not in (old.access_key_id, current.access_key_id)
    assert outcome.retired_key_id == old.access_key_id
    assert not world.objects.works(old)  # deleted 500 s early, its refusal proven
    assert world.objects.user_keys(USER) == key_ids(current, new)
    record = outcome.record
    assert (record.old_key_id, record.new_key_id) == (current.access_key_id, new.access_key_id)
    assert record.current_key_id == new.access_key_id
    assert record.stored_at == world.clock.now
    assert record.next_due_at == world.clock.now + timedelta(seconds=600)  # a whole new grace
    assert record.last_success_at == world.clock.now  # the earlier rotation did finish
    assert seen == [
        Phases.OLD_DELETED,
        Phases.DONE,
        Phases.CREATING,
        Phases.CREATED,
        Phases.VERIFIED,
        Phases.STORED,
    ]
    [ended] = [e for e in world.audit.events if e["step"] == "grace_ended"]
    assert ended["old_key_id"] == old.access_key_id and ended["seconds_left"] == 500
    said = _describe(outcome, forced=True)
    assert f"first finished the rotation in progress (its old key {old.access_key_id}" in said

    world.clock.advance(599)  # end_grace never shortens the new key's grace
    assert (await world.rotator().run("service")).result == "not_due"
    world.clock.advance(1)
    assert (await world.rotator().run("service")).result == "completed"
    assert world.objects.user_keys(USER) == [new.access_key_id]


async def test_end_grace_alone_finishes_the_rotation_in_progress_now(world: World) -> None:
    """The leaked-key procedure's second step: retire the replaced key without waiting."""
    old, current = await in_grace(world)
    world.clock.advance(30)

    outcome = await world.rotator().run("service", end_grace=True)

    assert outcome.result == "completed"
    assert outcome.stored_key_id is None  # not forced: nothing new was asked for
    assert world.objects.user_keys(USER) == [current.access_key_id]
    assert not world.objects.works(old)
    assert await world.in_store() == current
    world.clock.advance(30)  # with nothing in progress, end_grace is a plain run
    assert (await world.rotator().run("service", end_grace=True)).result == "not_due"


async def test_forced_with_wait_during_the_grace_waits_for_it_then_rotates(world: World) -> None:
    old, current = await in_grace(world)
    world.clock.advance(100)

    outcome = await world.rotator().run("service", force=True, wait=True)

    new = await world.in_store()
    assert outcome.result == "completed"
    assert outcome.stored_key_id == new.access_key_id
    assert new.access_key_id not in (old.access_key_id, current.access_key_id)
    assert outcome.retired_key_id == old.access_key_id
    # The rest of the earlier grace, then the new one whole: no key was cut short.
    assert world.clock.now == T0 + timedelta(seconds=600 + 600)
    assert world.objects.user_keys(USER) == [new.access_key_id]
    assert not world.objects.works(old) and not world.objects.works(current)


@pytest.mark.parametrize("outage", ["object_store", "secret_store"])
async def test_forced_after_a_failed_end_of_grace_deletion_stores_a_new_key(
    world: World, outage: str
) -> None:
    """The defect: a forced run found the rotation stuck in `stored` (its deletion failed),
    finished it, and answered completed with that rotation's key still in service."""
    store = Pausable(world.tmp / "secrets.sealed", world.seal_key)
    old, current = await in_grace(world)
    world.clock.advance(600)
    if outage == "object_store":
        world.objects.fail["delete"] = lambda: ObjectStoreUnavailable("admin API down")
    else:
        store.paused = True
    stuck = await world.rotator(store=store).run("service")  # the end-of-grace run
    assert stuck.result == "failed" and stuck.record.phase is RotationPhase.STORED
    assert world.objects.works(old)
    world.objects.fail.clear()
    store.paused = False

    outcome = await world.rotator(store=store).run("service", force=True)

    new = await world.in_store()
    assert outcome.result == "waiting_grace"  # not "completed": the new key's grace runs
    assert outcome.stored_key_id == new.access_key_id
    assert new.access_key_id not in (old.access_key_id, current.access_key_id)
    assert outcome.retired_key_id == old.access_key_id
    assert not world.objects.works(old)
    assert world.objects.user_keys(USER) == key_ids(current, new)
    record = outcome.record
    assert record.current_key_id == new.access_key_id and record.stored_at == world.clock.now
    assert record.attempts == 0 and record.last_error is None


@pytest.mark.parametrize("stuck", ["deletion fails", "old key still accepted"])
@pytest.mark.parametrize("when", ["after the grace", "end_grace during it"])
async def test_forced_while_the_old_key_cannot_be_retired_stores_nothing_and_says_why(
    world: World, stuck: str, when: str
) -> None:
    old, current = await in_grace(world)
    world.clock.advance(600 if when == "after the grace" else 100)
    if stuck == "deletion fails":
        world.objects.fail["delete"] = lambda: ObjectStoreUnavailable("admin API down")
    else:
        world.objects.lagging = True  # a deleted key goes on working

    outcome = await world.rotator().run(
        "service", force=True, end_grace=when == "end_grace during it"
    )

    assert outcome.result == "failed"  # never completed, never waiting_grace
    assert outcome.stored_key_id is None and outcome.retired_key_id is None
    assert world.objects.calls.count("create") == 1  # the first rotation's only
    assert await world.in_store() == current
    record = outcome.record
    if stuck == "deletion fails":
        assert record.phase is RotationPhase.STORED
        assert "object_store_unavailable" in (record.last_error or "")
        assert world.objects.user_keys(USER) == key_ids(old, current)
    else:
        assert record.phase is RotationPhase.OLD_DELETED
        assert "still accepted" in (record.last_error or "")
        assert world.objects.user_keys(USER) == [current.access_key_id]
    assert record.attempts == 1 and record.next_due_at == world.clock.now + timedelta(seconds=60)
    detail = outcome.failure_detail(forced=True)
    assert detail.startswith("no new key was stored: the rotation in progress (old key ")
    assert old.access_key_id in detail and f"key {current.access_key_id} stays" in detail
    assert detail in _describe(outcome, forced=True)

    # The retry is scheduled, not forced: it finishes that rotation and makes no new key.
    world.objects.fail.clear()
    world.objects.lagging = False
    world.clock.advance(60)
    retry = await world.rotator().run("service")
    if when == "end_grace during it" and stuck == "deletion fails":
        assert retry.result == "waiting_grace"  # end_grace was that run's: the grace holds
        world.clock.advance(440)
        retry = await world.rotator().run("service")
    assert retry.result == "completed" and retry.stored_key_id is None
    assert await world.in_store() == current
    assert world.objects.user_keys(USER) == [current.access_key_id]


@pytest.mark.parametrize(
    "phase",
    [Phases.CREATING, Phases.CREATED, Phases.VERIFIED, Phases.STORED, Phases.OLD_DELETED],
)
@pytest.mark.parametrize("how", ["killed", "failed"])
async def test_forced_after_a_run_stopped_after_any_phase_stores_a_new_key(
    world: World, phase: RotationPhase, how: str
) -> None:
    assert world.original is not None

    async def stop(name: str, reached: RotationPhase) -> None:
        if reached is phase:
            raise SimulatedKill() if how == "killed" else RuntimeError(f"failed after {phase}")

    if how == "killed":
        with pytest.raises(SimulatedKill):
            await world.rotator(checkpoint=stop).run("service", force=True, wait=True)
    else:
        stopped = await world.rotator(checkpoint=stop).run("service", force=True, wait=True)
        assert stopped.result == "failed"
    before = await world.in_store()  # the key in service when the operator forces
    stored_before = phase in (Phases.STORED, Phases.OLD_DELETED)
    assert (before.access_key_id != world.original.access_key_id) is stored_before

    outcome = await world.rotator().run("service", force=True)

    if phase is Phases.STORED:  # the stopped run's grace began just now: not cut unasked
        assert outcome.result == "grace_not_over"
        assert await world.in_store() == before
        assert world.objects.user_keys(USER) == key_ids(world.original, before)
        outcome = await world.rotator().run("service", force=True, end_grace=True)
    new = await world.in_store()
    assert outcome.result == "waiting_grace", outcome.record.last_error
    assert outcome.stored_key_id == new.access_key_id
    assert new.access_key_id not in (world.original.access_key_id, before.access_key_id)
    assert outcome.retired_key_id == (world.original.access_key_id if stored_before else None)
    assert world.objects.user_keys(USER) == key_ids(before, new)
    assert world.objects.works(before) and world.objects.works(new)

    world.clock.advance(600)
    final = await world.rotator().run("service")
    assert final.result == "completed", final.record.last_error
    assert world.objects.user_keys(USER) == [new.access_key_id]


async def test_forced_after_a_write_that_landed_unrecorded_keeps_the_restarted_grace(
    world: World,
) -> None:
    """The run died between the store's write and recording it: the next run cannot know when
    the key reached the store, so the old key's grace restarts, and a forced run honours it."""
    assert world.original is not None

    class DiesAfterWrite(EmbeddedSecretStore):
        async def write(self, path: str, data: Mapping[str, str], *, cas: int | None) -> int:
            await super().write(path, data, cas=cas)
            raise SimulatedKill()

    dies = DiesAfterWrite(world.tmp / "secrets.sealed", world.seal_key)
    with pytest.raises(SimulatedKill):
        await world.rotator(store=dies).run("service", force=True)
    landed = await world.in_store()
    assert landed.access_key_id != world.original.access_key_id
    assert (await world.rotator().record("service")).phase is RotationPhase.VERIFIED
    world.clock.advance(5)

    refused = await world.rotator().run("service", force=True)

    assert refused.result == "grace_not_over"
    assert refused.record.phase is RotationPhase.STORED  # repaired, and recorded
    assert refused.record.stored_at == world.clock.now
    assert refused.record.next_due_at == world.clock.now + timedelta(seconds=600)
    assert world.objects.works(world.original) and world.objects.works(landed)

    outcome = await world.rotator().run("service", force=True, end_grace=True)

    new = await world.in_store()
    assert outcome.result == "waiting_grace"
    assert outcome.retired_key_id == world.original.access_key_id
    assert world.objects.user_keys(USER) == key_ids(landed, new)


@pytest.mark.parametrize(
    "phase",
    [
        Phases.OLD_DELETED,
        Phases.DONE,
        Phases.CREATING,
        Phases.CREATED,
        Phases.VERIFIED,
        Phases.STORED,
    ],
)
async def test_a_forced_run_killed_after_any_of_its_phases_is_repaired_by_the_next(
    world: World, phase: RotationPhase
) -> None:
    old, current = await in_grace(world)

    async def stop(name: str, reached: RotationPhase) -> None:
        if reached is phase:
            raise SimulatedKill()

    with pytest.raises(SimulatedKill):
        await world.rotator(checkpoint=stop).run("service", force=True, end_grace=True)

    in_store = await world.in_store()
    assert world.objects.works(in_store)
    assert in_store.access_key_id in world.objects.user_keys(USER)
    assert len(world.objects.user_keys(USER)) <= 2
    assert not world.objects.works(old)  # deleted before anything else

    outcome = await world.rotator().run("service", force=True, wait=True)  # the operator again

    final = await world.in_store()
    assert outcome.result == "completed", outcome.record.last_error
    assert outcome.stored_key_id == final.access_key_id
    assert final.access_key_id not in (old.access_key_id, current.access_key_id)
    assert world.objects.user_keys(USER) == [final.access_key_id]
    assert world.objects.works(final)


async def test_a_failed_run_during_the_grace_does_not_bring_its_end_forward(
    world: World,
) -> None:
    """A failure's backoff is shorter than the grace: the retry must not find the grace
    running and leave the past backoff time as the next due time (a scheduler hot loop)."""
    store = Pausable(world.tmp / "secrets.sealed", world.seal_key)
    old, _ = await in_grace(world)
    world.clock.advance(100)
    store.paused = True
    failed = await world.rotator(store=store).run("service", force=True)
    assert failed.result == "failed"
    assert failed.record.next_due_at == world.clock.now + timedelta(seconds=60)
    assert "no new key was stored" in failed.failure_detail(forced=True)
    store.paused = False
    world.clock.advance(60)

    retry = await world.rotator(store=store).run("service")

    assert retry.result == "waiting_grace"
    assert retry.record.next_due_at == T0 + timedelta(seconds=600)
    assert (await world.rotator().run("service")).result == "not_due"
    assert world.objects.works(old)


async def test_forced_failure_after_the_new_key_was_stored_says_it_is_in_service(
    world: World,
) -> None:
    assert world.original is not None
    world.objects.fail["delete"] = lambda: ObjectStoreUnavailable("admin API down")

    outcome = await world.rotator().run("service", force=True, wait=True)

    new = await world.in_store()
    assert outcome.result == "failed"
    assert outcome.stored_key_id == new.access_key_id != world.original.access_key_id
    detail = outcome.failure_detail(forced=True)
    assert detail == (
        f"new key {new.access_key_id} is stored and in service; old key "
        f"{world.original.access_key_id} is retired by the retry"
    )


# --- how the admin API and the CLI report a forced run ----------------------------------------

ADMIN_TOKEN = "cbk_unit-admin-token"


@asynccontextmanager
async def admin_api(world: World) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    app = web.Application(middlewares=[error_middleware])
    app[METRICS] = Metrics()
    ops = Client("ops", frozenset(), Access.READ, 900, roles=frozenset({Role.ADMIN}))
    auth = TokenAuth([(hashlib.sha256(ADMIN_TOKEN.encode()).hexdigest(), ops)])
    app[RUNTIME] = cast(
        Runtime, SimpleNamespace(caller_auth=CallerAuthChain(auth), rotator=world.rotator())
    )
    app.router.add_post("/v1/admin/rotations/{name}", admin.rotate)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield client


async def post_rotate(world: World, query: str = "") -> tuple[int, dict[str, Any]]:
    async with admin_api(world) as client:
        response = await client.post(
            f"/v1/admin/rotations/service{query}",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        )
        return response.status, await response.json()


async def test_the_admin_api_answers_409_during_a_grace_and_rotates_with_end_grace(
    world: World,
) -> None:
    old, current = await in_grace(world)
    world.clock.advance(100)

    status, body = await post_rotate(world)

    assert status == 409, body
    assert body["error"]["code"] == "grace_not_over"
    message = body["error"]["message"]
    assert "no key created or deleted" in message and old.access_key_id in message
    assert "?end_grace=true" in message and "?wait=true" in message
    assert world.objects.user_keys(USER) == key_ids(old, current)

    status, body = await post_rotate(world, "?end_grace=true")

    new = await world.in_store()
    assert status == 200, body
    assert body["result"] == "waiting_grace"
    assert body["currentKeyId"] == body["newKeyId"] == new.access_key_id
    assert body["oldKeyId"] == current.access_key_id
    assert body["retiredKeyId"] == old.access_key_id
    assert body["storedAt"] == world.clock.now.isoformat().replace("+00:00", "Z")


async def test_the_admin_api_says_a_failed_forced_run_stored_nothing(world: World) -> None:
    _, current = await in_grace(world)
    world.clock.advance(600)
    world.objects.fail["delete"] = lambda: ObjectStoreUnavailable("admin API down")

    status, body = await post_rotate(world)

    assert status == 502, body
    assert body["error"]["code"] == "rotation_failed"
    message = body["error"]["message"]
    assert "no new key was stored" in message
    assert f"key {current.access_key_id} stays in service" in message
    assert "force again for a new key" in message


async def test_the_cli_exits_4_when_now_meets_a_grace(
    world: World, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`credbroker rotate --now` in a process of its own (its own event loop and state handle)."""
    old, _ = await in_grace(world)

    @asynccontextmanager
    async def standalone(settings: object, metrics: object) -> AsyncIterator[Rotator]:
        state = await SqliteStateStore.open(world.tmp / "state.sqlite3")
        store = EmbeddedSecretStore(world.tmp / "secrets.sealed", world.seal_key)
        try:
            yield world.rotator(state=state, store=store)
        finally:
            await state.close()

    service = SimpleNamespace(name="service")
    settings = SimpleNamespace(rotation=SimpleNamespace(credentials=[service]))
    monkeypatch.setattr(cli, "load_settings", lambda path: settings)
    monkeypatch.setattr(wiring, "standalone_rotation", standalone)
    command = ["rotate", "--config", "unused.yaml", "--credential", "service", "--now"]

    assert await asyncio.to_thread(cli.main, command) == 4
    out = capsys.readouterr().out
    assert out.startswith("service: NOT ROTATED, no key created or deleted")
    assert old.access_key_id in out

    assert await asyncio.to_thread(cli.main, [*command, "--end-grace"]) == 0
    out = capsys.readouterr().out
    new = await world.in_store()
    assert out.startswith(
        f"service: first finished the rotation in progress (its old key {old.access_key_id}"
    )
    assert f"key {new.access_key_id} stored and in service" in out


def test_the_rotate_commands_of_runbook_06_exist() -> None:
    runbook = Path(__file__).resolve().parents[3] / "runbooks" / "06-rotation.md"
    commands = re.findall(r"\$CB (rotate\b[^\n`#]*)", runbook.read_text())
    flags = {word for command in commands for word in command.split() if word.startswith("--")}
    assert {"--now", "--wait", "--end-grace"} <= flags
    for command in commands:
        argv = shlex.split(command.replace("$CONF", "credbroker.yaml").replace("NAME", "service"))
        assert cli._parser().parse_args(argv).func is cli._rotate, command


async def test_a_scheduled_failure_is_described_as_before(world: World) -> None:
    _, current = await in_grace(world)
    world.clock.advance(600)
    world.objects.fail["delete"] = lambda: ObjectStoreUnavailable("admin API down")

    outcome = await world.rotator().run("service")

    assert outcome.result == "failed"
    assert outcome.failure_detail(forced=False) == f"key {current.access_key_id} stays in service"
    assert _describe(outcome).startswith("FAILED: admin API down [object_store_unavailable]; key ")
