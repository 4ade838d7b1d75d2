"""The LeaseLog contract, run unchanged against SQLite, a real PostgreSQL and the in-memory
fake the unit tests use.

PostgreSQL: $CREDBROKER_TEST_POSTGRES_DSN, default postgresql://postgres@127.0.0.1:5432/test;
each test gets its own schema (cbtest_<random>), dropped afterwards. No silent skip.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from credbroker.leases import Lease, LeaseFilter, Revocation, Selector
from credbroker.ports import LeaseLog
from credbroker.state.postgres import PostgresStateStore
from credbroker.state.sqlite import SqliteStateStore
from tests.contract.state_records import POSTGRES_DSN
from tests.fake_leases import MemoryLeaseLog

T0 = datetime(2026, 11, 30, 6, 0, 0, 250_000, tzinfo=UTC)


def lease(n: int, **changes: Any) -> Lease:
    base = Lease(
        lease_id=f"cb-{n:024x}",
        kind="vend",
        client="writer",
        space="ENG",
        bucket="cb-main",
        prefix="ENG/",
        access="read",
        ttl_seconds=900,
        issued_at=T0 + timedelta(seconds=n),
        expires_at=T0 + timedelta(seconds=900 + n),
        mode="normal",
        access_key_id=f"ASIA{n:016d}",
        rule="rule-7",
        actor="alice@example.com",
        source="10.0.0.7",
    )
    return replace(base, **changes)


@pytest.fixture(params=["sqlite", "postgres", "memory"])
async def log(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[LeaseLog]:
    if request.param == "memory":
        yield MemoryLeaseLog()
        return
    if request.param == "sqlite":
        store = await SqliteStateStore.open(tmp_path / "state.sqlite3")
        try:
            yield store
        finally:
            await store.close()
        return
    schema = f"cbtest_{uuid.uuid4().hex[:12]}"
    pg = await PostgresStateStore.open(POSTGRES_DSN, schema=schema)
    try:
        yield pg
    finally:
        await pg.close()
        connection = await asyncpg.connect(POSTGRES_DSN)
        try:
            await connection.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        finally:
            await connection.close()


async def test_every_field_round_trips(log: LeaseLog) -> None:
    presign = lease(1, kind="presign", object_key="ENG/a.pdf", access="write", rule=None)
    assert await log.add_leases([presign]) == 1
    [got] = await log.find(LeaseFilter())
    assert got == presign
    assert got.issued_at.tzinfo is not None and got.issued_at.microsecond == 250_000


async def test_adding_a_lease_again_changes_nothing(log: LeaseLog) -> None:
    await log.add_leases([lease(1)])
    at = T0 + timedelta(seconds=10)
    await log.mark_revoked([lease(1).lease_id], revocation_id="rv-0000000000000001", at=at)
    # A reconciliation from the audit file brings the same lease again: the row stays revoked.
    assert await log.add_leases([lease(1), lease(2)]) == 1
    [second, first] = await log.find(LeaseFilter())
    assert (first.lease_id, first.revoked_at) == (lease(1).lease_id, at)
    assert second.revoked_at is None


async def test_filters_select_by_client_space_id_time_and_activity(log: LeaseLog) -> None:
    await log.add_leases(
        [
            lease(1),
            lease(2, client="reader"),
            lease(3, space="OPS", prefix="OPS/"),
            lease(4, expires_at=T0 + timedelta(seconds=30)),
        ]
    )

    def ids(found: list[Lease]) -> list[str]:
        return [x.lease_id[-1] for x in found]

    assert ids(await log.find(LeaseFilter())) == ["4", "3", "2", "1"]  # newest first
    assert ids(await log.find(LeaseFilter(client="reader"))) == ["2"]
    assert ids(await log.find(LeaseFilter(space="OPS"))) == ["3"]
    assert ids(await log.find(LeaseFilter(lease_id=lease(2).lease_id))) == ["2"]
    assert ids(await log.find(LeaseFilter(issued_before=T0 + timedelta(seconds=3)))) == ["2", "1"]
    later = T0 + timedelta(seconds=60)
    assert ids(await log.find(LeaseFilter(active_at=later))) == ["3", "2", "1"]
    assert ids(await log.find(LeaseFilter(client="writer", space="ENG", active_at=later))) == ["1"]
    assert ids(await log.find(LeaseFilter(limit=2))) == ["4", "3"]
    assert await log.find(LeaseFilter(client="nobody")) == []


async def test_the_access_filter_finds_a_clients_newest_write(log: LeaseLog) -> None:
    """The compliance check's last write (compliance/usage.py): newest first, by access."""
    await log.add_leases([lease(1, access="write"), lease(2), lease(3, access="write"), lease(4)])

    def ids(found: list[Lease]) -> list[str]:
        return [x.lease_id[-1] for x in found]

    assert ids(await log.find(LeaseFilter(client="writer", access="write", limit=1))) == ["3"]
    assert ids(await log.find(LeaseFilter(access="read"))) == ["4", "2"]
    assert await log.find(LeaseFilter(client="reader", access="write")) == []


async def test_revoking_marks_only_unrevoked_leases_and_lists_them(log: LeaseLog) -> None:
    await log.add_leases([lease(1), lease(2), lease(3)])
    first_at = T0 + timedelta(seconds=5)
    done = await log.mark_revoked(
        [lease(1).lease_id], revocation_id="rv-0000000000000001", at=first_at
    )
    assert [x.lease_id for x in done] == [lease(1).lease_id]
    again = await log.mark_revoked(
        [lease(1).lease_id, lease(2).lease_id, "cb-" + "f" * 24],
        revocation_id="rv-0000000000000002",
        at=T0 + timedelta(seconds=6),
    )
    assert [x.lease_id for x in again] == [lease(2).lease_id]  # 1 keeps its first revocation
    assert all(x.revocation_id == "rv-0000000000000002" for x in again)
    active = await log.find(LeaseFilter(active_at=T0 + timedelta(seconds=7)))
    assert [x.lease_id for x in active] == [lease(3).lease_id]
    assert await log.mark_revoked([], revocation_id="rv-0000000000000003", at=T0) == []


async def test_revoked_active_names_revoked_keys_until_they_expire(log: LeaseLog) -> None:
    await log.add_leases([lease(1), lease(2, expires_at=T0 + timedelta(seconds=100)), lease(3)])
    await log.mark_revoked(
        [lease(1).lease_id, lease(2).lease_id], revocation_id="rv-0000000000000001", at=T0
    )
    assert await log.revoked_active(T0 + timedelta(seconds=50)) == sorted(
        [lease(1).lease_id, lease(2).lease_id]
    )
    assert await log.revoked_active(T0 + timedelta(seconds=200)) == [lease(1).lease_id]
    assert await log.revoked_active(T0 + timedelta(days=1)) == []


def revocation(n: int, *, until: datetime, before: datetime | None = None) -> Revocation:
    return Revocation(
        revocation_id=f"rv-{n:016x}",
        selector=Selector.ISSUED_BEFORE if before else Selector.CLIENT,
        value=before.isoformat() if before else "writer",
        created_at=T0 + timedelta(seconds=n),
        created_by="admin",
        reason="leaked",
        lease_count=n,
        enforce_until=until,
        object_store_enforced=n % 2 == 0,
        detail="d",
        issued_before=before,
    )


async def test_revocations_round_trip_and_filter_by_effect(log: LeaseLog) -> None:
    short = revocation(1, until=T0 + timedelta(seconds=100))
    long = revocation(2, until=T0 + timedelta(hours=2), before=T0)
    await log.add_revocation(short)
    await log.add_revocation(long)
    assert await log.revocations() == [long, short]
    assert await log.revocations(in_effect_at=T0 + timedelta(seconds=500)) == [long]


async def test_pruning_deletes_only_what_ended_before_the_cut(log: LeaseLog) -> None:
    await log.add_leases([lease(1, expires_at=T0 + timedelta(seconds=10)), lease(2)])
    await log.add_revocation(revocation(1, until=T0 + timedelta(seconds=10)))
    await log.add_revocation(revocation(2, until=T0 + timedelta(hours=1)))
    assert await log.prune(T0 + timedelta(seconds=60)) == 2
    assert [x.lease_id for x in await log.find(LeaseFilter())] == [lease(2).lease_id]
    assert [r.revocation_id for r in await log.revocations()] == [
        revocation(2, until=T0).revocation_id
    ]
    assert await log.prune(T0 + timedelta(seconds=60)) == 0


async def test_a_large_batch_is_stored_whole_and_counted(log: LeaseLog) -> None:
    batch = [lease(n) for n in range(1, 2502)]  # past PostgreSQL's 1,000-row chunks
    assert await log.add_leases(batch[:10]) == 10
    assert await log.add_leases(batch) == 2491
    assert len(await log.find(LeaseFilter(limit=5000))) == 2501
