"""The BreakGlassStore contract, run unchanged against the in-memory fake, SQLite and a real
PostgreSQL (own schema cbtest_<random>, dropped after; no silent skip).

A request round-trips with every field; a save is conditional on the revision it was read at
(of two approvals or two collects at once, one wins); a second handle (another process or
replica) sees what the first wrote; listing is newest first.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest

from credbroker.domain import Access, BreakGlassRequest, BreakGlassStatus
from credbroker.errors import BreakGlassConflict
from credbroker.ports import BreakGlassStore
from credbroker.state.postgres import PostgresStateStore
from credbroker.state.sqlite import SqliteStateStore
from tests.contract.state_records import POSTGRES_DSN, T0
from tests.fakes_breakglass import MemoryBreakGlassStore


@dataclass
class Subject:
    store: BreakGlassStore
    reopen: Callable[[], Awaitable[BreakGlassStore]]


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def subject(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Subject]:
    if request.param == "memory":
        memory = MemoryBreakGlassStore()

        async def same() -> BreakGlassStore:
            return memory

        yield Subject(memory, same)
        return
    opened: list[SqliteStateStore | PostgresStateStore] = []
    schema = f"cbtest_{uuid.uuid4().hex[:12]}"

    async def reopen() -> BreakGlassStore:
        store: SqliteStateStore | PostgresStateStore
        if request.param == "sqlite":
            store = await SqliteStateStore.open(tmp_path / "state.sqlite3")
        else:
            store = await PostgresStateStore.open(POSTGRES_DSN, schema=schema)
        opened.append(store)
        return store

    try:
        yield Subject(await reopen(), reopen)
    finally:
        for store in opened:
            await store.close()
        if request.param == "postgres":
            connection = await asyncpg.connect(POSTGRES_DSN)
            try:
                await connection.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            finally:
                await connection.close()


def a_request(request_id: str = "bg-0123456789abcdef", minutes: int = 0) -> BreakGlassRequest:
    created = T0 + timedelta(minutes=minutes)
    return BreakGlassRequest(
        id=request_id,
        requester="oncall-ann",
        space="ENG",
        access=Access.WRITE,
        prefix="exports",
        ttl_seconds=900,
        reason="INC-123 restore the export",
        created_at=created,
        approve_by=created + timedelta(hours=1),
    )


def every_field(request: BreakGlassRequest) -> BreakGlassRequest:
    return replace(
        request,
        status=BreakGlassStatus.CLOSED,
        approvals=("bob", "carol"),
        denied_by="dave",
        approved_at=T0 + timedelta(minutes=2),
        collect_by=T0 + timedelta(minutes=17),
        collected_at=T0 + timedelta(minutes=3),
        key_id="STSKEY123",
        key_expires_at=T0 + timedelta(minutes=18),
        used_escrow=True,
        closed_at=T0 + timedelta(hours=2),
        closed_by="oncall-ann",
        outcome="restored; postmortem PM-9",
    )


async def test_a_request_round_trips_with_every_field(subject: Subject) -> None:
    store = subject.store
    request = a_request()
    await store.create_request(request)
    assert await store.load_request(request.id) == request
    saved = await store.save_request(every_field(request))
    assert saved.revision == 1
    other = await subject.reopen()
    assert await other.load_request(request.id) == saved
    assert await store.load_request("bg-ffffffffffffffff") is None


async def test_a_save_over_a_stale_revision_is_refused_and_writes_nothing(
    subject: Subject,
) -> None:
    store = subject.store
    request = a_request()
    await store.create_request(request)
    first = await store.save_request(replace(request, approvals=("bob",)))
    with pytest.raises(BreakGlassConflict):
        await store.save_request(replace(request, approvals=("carol",)))  # read at revision 0
    assert await store.load_request(request.id) == first


async def test_of_two_saves_at_once_exactly_one_wins(subject: Subject) -> None:
    store = subject.store
    request = a_request()
    await store.create_request(request)
    other = await subject.reopen()
    results = await asyncio.gather(
        store.save_request(replace(request, status=BreakGlassStatus.COLLECTED, key_id="A")),
        other.save_request(replace(request, status=BreakGlassStatus.COLLECTED, key_id="B")),
        return_exceptions=True,
    )
    won = [r for r in results if isinstance(r, BreakGlassRequest)]
    lost = [r for r in results if isinstance(r, BreakGlassConflict)]
    assert len(won) == 1 and len(lost) == 1
    assert await store.load_request(request.id) == won[0]


async def test_requests_are_listed_newest_first(subject: Subject) -> None:
    store = subject.store
    for minutes, request_id in ((0, "bg-0000000000000001"), (5, "bg-0000000000000002")):
        await store.create_request(a_request(request_id, minutes))
    listed = await store.list_requests()
    assert [r.id for r in listed] == ["bg-0000000000000002", "bg-0000000000000001"]
    assert [r.id for r in await store.list_requests(limit=1)] == ["bg-0000000000000002"]
