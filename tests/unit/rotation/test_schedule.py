"""Schedules (crontab semantics, not APScheduler 3's) and the scheduler inside the server."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from credbroker.domain import RotationPhase
from credbroker.observability import Metrics
from credbroker.rotation.model import ManagedKey, RetryPolicy
from credbroker.rotation.rotate import Rotator
from credbroker.rotation.schedule import Schedule
from credbroker.rotation.scheduler import RotationScheduler
from credbroker.secrets.embedded import EmbeddedSecretStore
from credbroker.state.sqlite import SqliteStateStore
from tests.fake_object_store import FakeObjectStore

MONDAY_NOON = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
PATH = "credbroker/object-store/service"


@pytest.mark.parametrize(
    ("cron", "expected"),
    [
        ("0 3 * * 1", datetime(2026, 11, 30, 3, 0, tzinfo=UTC)),  # 1 = Monday, as crontab
        ("0 3 * * 0", datetime(2026, 11, 29, 3, 0, tzinfo=UTC)),  # 0 = Sunday
        ("0 3 * * 7", datetime(2026, 11, 29, 3, 0, tzinfo=UTC)),  # 7 = Sunday too
        ("0 3 * * 1-5", datetime(2026, 11, 24, 3, 0, tzinfo=UTC)),
        ("30 2 1 * *", datetime(2026, 12, 1, 2, 30, tzinfo=UTC)),
        ("0 12 * * *", datetime(2026, 11, 24, 12, 0, tzinfo=UTC)),  # strictly after
    ],
)
def test_cron_follows_crontab_weekdays(cron: str, expected: datetime) -> None:
    assert Schedule(cron=cron).next_after(MONDAY_NOON) == expected


@pytest.mark.parametrize("cron", ["0 3 * * */2", "0 3 * * 9", "0 3 * *", "61 * * * *"])
def test_ambiguous_or_invalid_cron_is_refused(cron: str) -> None:
    with pytest.raises(ValueError):
        Schedule(cron=cron)


def test_the_fingerprint_names_the_schedule() -> None:
    assert Schedule(interval_seconds=60).fingerprint == Schedule(interval_seconds=60).fingerprint
    assert Schedule(interval_seconds=60).fingerprint != Schedule(interval_seconds=61).fingerprint
    assert Schedule(cron="0 3 * * 1").fingerprint != Schedule(cron="0 4 * * 1").fingerprint


# --- the scheduler ---------------------------------------------------------------------------


@dataclass
class Setup:
    rotator: Rotator
    state: SqliteStateStore

    async def make_due(self) -> None:
        """Enrol, then move the due time to now, as if the interval had passed."""
        record = await self.rotator.enroll("service")
        await self.state.save(replace(record, next_due_at=datetime.now(UTC)))

    async def wait_for(self, phase: RotationPhase, seconds: float = 10) -> None:
        async with asyncio.timeout(seconds):
            while (await self.rotator.record("service")).phase is not phase:
                await asyncio.sleep(0.05)


@asynccontextmanager
async def setup(
    tmp_path: Path, objects: FakeObjectStore, *, enabled: bool = True
) -> AsyncIterator[Setup]:
    key = tmp_path / "key.bin"
    if not key.exists():
        key.write_bytes(os.urandom(32))
    store = EmbeddedSecretStore(tmp_path / "secrets.sealed", key.read_bytes())
    if not await store.versions(PATH):
        await store.write(PATH, objects.add_key("broker").as_secret_data(), cas=0)
    state = await SqliteStateStore.open(tmp_path / "state.sqlite3")
    credential = ManagedKey(
        name="service",
        secret_path=PATH,
        user="broker",
        schedule=Schedule(interval_seconds=3600),
        grace_seconds=0.3,
        enabled=enabled,
    )
    rotator = Rotator(
        credentials=[credential],
        drivers={"service": objects.driver_for("broker")},
        store=store,
        state=state,
        probe=objects.probe,
        metrics=Metrics(),
        retry=RetryPolicy(0.2, 1),
        verify_timeout_seconds=0.3,
    )
    try:
        yield Setup(rotator, state)
    finally:
        await state.close()


@asynccontextmanager
async def running(rotator: Rotator) -> AsyncIterator[RotationScheduler]:
    scheduler = RotationScheduler(rotator, resync_seconds=30)
    await scheduler.start()
    try:
        yield scheduler
    finally:
        await scheduler.close()


async def test_a_due_rotation_runs_and_finishes_after_its_grace(tmp_path: Path) -> None:
    objects = FakeObjectStore()
    async with setup(tmp_path, objects) as s:
        await s.make_due()
        async with running(s.rotator):
            await s.wait_for(RotationPhase.DONE)
    assert len(objects.user_keys("broker")) == 1
    assert objects.calls.count("create") == 1  # once, not again


async def test_a_restart_resumes_from_the_state_store_without_repeating(tmp_path: Path) -> None:
    objects = FakeObjectStore()
    async with setup(tmp_path, objects) as first:
        outcome = await first.rotator.run("service", force=True)  # stored; grace pending
    assert outcome.result == "waiting_grace" and outcome.record.next_due_at is not None

    async with setup(tmp_path, objects) as restarted, running(restarted.rotator) as scheduler:
        due = scheduler.next_run("service")
        assert due is not None
        assert abs((due - outcome.record.next_due_at).total_seconds()) < 0.01
        await restarted.wait_for(RotationPhase.DONE)
        after = await restarted.rotator.record("service")
        assert scheduler.next_run("service") == after.next_due_at  # the next interval
    assert objects.calls.count("create") == 1
    assert len(objects.user_keys("broker")) == 1


async def test_a_failed_run_is_retried_with_backoff_by_the_scheduler(tmp_path: Path) -> None:
    objects = FakeObjectStore()
    objects.never_valid = True
    async with setup(tmp_path, objects) as s:
        await s.make_due()
        async with running(s.rotator):
            async with asyncio.timeout(10):
                while (await s.rotator.record("service")).attempts < 2:
                    await asyncio.sleep(0.05)
            failed = await s.rotator.record("service")
            assert failed.next_due_at is not None and failed.updated_at is not None
            assert failed.next_due_at - failed.updated_at == pytest.approx(
                timedelta(seconds=0.4), abs=timedelta(seconds=0.05)
            )
            objects.never_valid = False  # the object store recovers; nobody intervenes
            await s.wait_for(RotationPhase.DONE)
    assert len(objects.user_keys("broker")) == 1


async def test_a_disabled_credential_gets_no_job(tmp_path: Path) -> None:
    async with (
        setup(tmp_path, FakeObjectStore(), enabled=False) as s,
        running(s.rotator) as scheduler,
    ):
        assert scheduler.next_run("service") is None
