"""The StateStore contract, run unchanged against SQLite and a real PostgreSQL.

PostgreSQL: $CREDBROKER_TEST_POSTGRES_DSN, default postgresql://postgres@127.0.0.1:5432/test;
each test gets its own schema (cbtest_<random>), dropped afterwards. If no PostgreSQL answers,
the postgres cases fail with the reason: never a silent skip.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path

import asyncpg
import pytest

from credbroker.domain import RotationPhase, RotationRecord
from credbroker.errors import RotationBusy
from credbroker.ports import StateStore, VersionWatermark
from credbroker.state.postgres import PostgresStateStore
from credbroker.state.sqlite import SqliteStateStore
from tests.contract.state_records import POSTGRES_DSN, full_record


@dataclass
class Subject:
    store: StateStore
    # Another handle on the same data, as a second process or replica would have.
    reopen: Callable[[], Awaitable[StateStore]]


@pytest.fixture(params=["sqlite", "postgres"])
async def subject(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Subject]:
    opened: list[StateStore] = []

    async def track(store: StateStore) -> StateStore:
        opened.append(store)
        return store

    if request.param == "sqlite":
        path = tmp_path / "state" / "rotation.sqlite3"

        async def reopen() -> StateStore:
            return await track(await SqliteStateStore.open(path))

        try:
            yield Subject(await reopen(), reopen)
        finally:
            for store in opened:
                await store.close()
        return

    schema = f"cbtest_{uuid.uuid4().hex[:12]}"

    async def reopen_pg() -> StateStore:
        return await track(await PostgresStateStore.open(POSTGRES_DSN, schema=schema))

    try:
        yield Subject(await reopen_pg(), reopen_pg)
    finally:
        for store in opened:
            await store.close()
        connection = await asyncpg.connect(POSTGRES_DSN)
        try:
            await connection.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        finally:
            await connection.close()


async def test_a_missing_record_is_none(subject: Subject) -> None:
    assert await subject.store.load("nothing-here") is None
    assert await subject.store.all() == []


async def test_every_field_round_trips(subject: Subject) -> None:
    record = full_record()
    await subject.store.save(record)

    loaded = await subject.store.load("service")

    assert loaded == record
    assert loaded is not None and loaded.stored_at is not None
    assert loaded.stored_at.tzinfo is not None
    assert loaded.stored_at.microsecond == 123456


async def test_a_minimal_record_round_trips(subject: Subject) -> None:
    record = RotationRecord("fresh")
    await subject.store.save(record)
    assert await subject.store.load("fresh") == record


async def test_save_replaces_the_whole_record(subject: Subject) -> None:
    await subject.store.save(full_record())
    done = replace(
        full_record(), phase=RotationPhase.DONE, last_error=None, attempts=0, stored_at=None
    )

    await subject.store.save(done)

    assert await subject.store.load("service") == done


async def test_all_lists_every_record_by_name(subject: Subject) -> None:
    for name in ("zeta", "alpha", "mid"):
        await subject.store.save(full_record(name))
    assert [r.credential for r in await subject.store.all()] == ["alpha", "mid", "zeta"]


async def test_records_survive_a_reopen(subject: Subject) -> None:
    await subject.store.save(full_record())
    other = await subject.reopen()
    assert await other.load("service") == full_record()


async def test_opening_again_migrates_nothing_twice(subject: Subject) -> None:
    await subject.store.save(full_record())
    for _ in range(3):
        reopened = await subject.reopen()
        assert await reopened.load("service") == full_record()


async def test_concurrent_opens_migrate_once(subject: Subject) -> None:
    stores = await asyncio.gather(*(subject.reopen() for _ in range(4)))
    await stores[0].save(full_record())
    assert [await s.load("service") for s in stores] == [full_record()] * 4


async def test_the_lock_is_exclusive_within_one_process(subject: Subject) -> None:
    async with subject.store.lock("service"):
        with pytest.raises(RotationBusy):
            async with subject.store.lock("service"):
                pass


async def test_the_lock_is_exclusive_across_handles(subject: Subject) -> None:
    other = await subject.reopen()
    async with subject.store.lock("service"):
        with pytest.raises(RotationBusy):
            async with other.lock("service"):
                pass
    async with other.lock("service"):  # released: the other replica gets it now
        pass


async def test_locks_of_different_credentials_are_independent(subject: Subject) -> None:
    async with subject.store.lock("service"), subject.store.lock("read-only"):
        pass


async def test_the_lock_is_released_when_the_holder_fails(subject: Subject) -> None:
    with pytest.raises(RuntimeError):
        async with subject.store.lock("service"):
            raise RuntimeError("killed mid-rotation")
    async with subject.store.lock("service"):
        pass


async def test_the_lock_is_released_when_the_holder_is_cancelled(subject: Subject) -> None:
    entered = asyncio.Event()

    async def hold() -> None:
        async with subject.store.lock("service"):
            entered.set()
            await asyncio.sleep(60)

    task = asyncio.create_task(hold())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    other = await subject.reopen()
    async with other.lock("service"):
        pass


async def test_records_can_be_written_while_the_lock_is_held(subject: Subject) -> None:
    async with subject.store.lock("service"):
        await subject.store.save(full_record())
    assert await subject.store.load("service") == full_record()


# --- the embedded store's rollback watermark (ports.VersionWatermark), in the same stores ------


def watermark(store: StateStore) -> VersionWatermark:
    assert isinstance(store, SqliteStateStore | PostgresStateStore)
    return store


async def test_an_unknown_path_has_no_watermark(subject: Subject) -> None:
    assert await watermark(subject.store).remember_version("/srv/secrets.sealed", "svc", 0) == 0


async def test_the_watermark_only_rises(subject: Subject) -> None:
    mark = watermark(subject.store)
    assert await mark.remember_version("/srv/a.sealed", "svc", 3) == 3
    assert await mark.remember_version("/srv/a.sealed", "svc", 1) == 3  # lower: kept at 3
    assert await mark.remember_version("/srv/a.sealed", "svc", 0) == 3
    assert await mark.remember_version("/srv/a.sealed", "svc", 7) == 7


async def test_watermarks_are_per_store_and_path_and_survive_a_reopen(subject: Subject) -> None:
    mark = watermark(subject.store)
    await mark.remember_version("/srv/a.sealed", "svc", 5)
    await mark.remember_version("/srv/a.sealed", "admin", 2)
    await mark.remember_version("/srv/b.sealed", "svc", 9)
    other = watermark(await subject.reopen())
    assert await other.remember_version("/srv/a.sealed", "svc", 0) == 5
    assert await other.remember_version("/srv/a.sealed", "admin", 0) == 2
    assert await other.remember_version("/srv/b.sealed", "svc", 0) == 9
    assert await other.remember_version("/srv/b.sealed", "admin", 0) == 0


async def test_concurrent_writers_never_lower_the_watermark(subject: Subject) -> None:
    marks = [watermark(subject.store), *[watermark(await subject.reopen()) for _ in range(3)]]
    await asyncio.gather(
        *(
            marks[v % len(marks)].remember_version("/srv/a.sealed", "svc", v)
            for v in (*range(1, 41), *range(40, 0, -1))
        )
    )
    assert await marks[0].remember_version("/srv/a.sealed", "svc", 0) == 40
