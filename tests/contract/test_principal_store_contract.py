"""The PrincipalStore contract, run unchanged against SQLite, a real PostgreSQL and the
in-memory fake the unit tests use (so the fake keeps the real stores' rules).

PostgreSQL: $CREDBROKER_TEST_POSTGRES_DSN, default postgresql://postgres@127.0.0.1:5432/test;
each test gets its own schema (cbtest_<random>), dropped afterwards. No silent skip.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from credbroker.domain import (
    Access,
    Client,
    Freeze,
    Principal,
    Role,
    TokenRecord,
)
from credbroker.errors import NotFound, PrincipalConflict
from credbroker.ports import PrincipalStore
from credbroker.state.control_postgres import PostgresControlStore
from credbroker.state.control_sqlite import SqliteControlStore
from tests.contract.state_records import POSTGRES_DSN
from tests.fakes import MemoryPrincipalStore

NOW = datetime(2026, 11, 30, 6, 0, tzinfo=UTC)


@dataclass
class Subject:
    store: PrincipalStore
    # Another handle on the same data, as a second replica would have.
    reopen: Callable[[], Awaitable[PrincipalStore]]
    kind: str


@pytest.fixture(params=["sqlite", "postgres", "memory"])
async def subject(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Subject]:
    opened: list[PrincipalStore] = []

    async def track(store: PrincipalStore) -> PrincipalStore:
        opened.append(store)
        return store

    if request.param == "memory":
        memory = MemoryPrincipalStore()

        async def same() -> PrincipalStore:
            return memory

        yield Subject(memory, same, "memory")
        return
    if request.param == "sqlite":
        path = tmp_path / "state.sqlite3"

        async def reopen() -> PrincipalStore:
            return await track(await SqliteControlStore.open(path))

        try:
            yield Subject(await reopen(), reopen, "sqlite")
        finally:
            for store in opened:
                await store.close()
        return
    schema = f"cbtest_{uuid.uuid4().hex[:12]}"

    async def reopen_pg() -> PrincipalStore:
        return await track(await PostgresControlStore.open(POSTGRES_DSN, schema=schema))

    try:
        yield Subject(await reopen_pg(), reopen_pg, "postgres")
    finally:
        for store in opened:
            await store.close()
        connection = await asyncpg.connect(POSTGRES_DSN)
        try:
            await connection.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        finally:
            await connection.close()


def principal(client_id: str = "rule-a", **changes: object) -> Principal:
    p = Principal(
        client=Client(
            client_id,
            frozenset({"ENG", "OPS"}),
            Access.WRITE,
            1800,
            frozenset({Role.RULE, Role.ADMIN}),
        ),
        rate_per_second=2.5,
        burst=7,
        created_at=NOW,
        updated_at=NOW,
        created_by="cli:alice",
    )
    return replace(p, **changes)  # type: ignore[arg-type]


def token(n: int, client_id: str = "rule-a", **changes: object) -> TokenRecord:
    t = TokenRecord(
        id=f"tok_{n:016x}",
        client_id=client_id,
        sha256=hashlib.sha256(f"token-{client_id}-{n}".encode()).hexdigest(),
        created_at=NOW + timedelta(seconds=n),
        created_by="cli:alice",
    )
    return replace(t, **changes)  # type: ignore[arg-type]


async def test_a_fresh_store_is_empty_at_generation_zero(subject: Subject) -> None:
    state = await subject.store.control_state()
    assert (state.generation, state.principals, state.tokens, state.freezes) == (0, (), (), ())
    assert await subject.store.principal("rule-a") is None
    assert await subject.store.principals() == []


async def test_a_principal_round_trips_and_ids_are_never_reused(subject: Subject) -> None:
    p = principal()
    await subject.store.add_principal(p)
    assert await subject.store.principal("rule-a") == p
    assert await subject.store.principals() == [p]
    with pytest.raises(PrincipalConflict):
        await subject.store.add_principal(principal(rate_per_second=None))
    await subject.store.revoke_principal("rule-a", NOW)
    with pytest.raises(PrincipalConflict):
        await subject.store.add_principal(principal())


async def test_every_change_moves_the_generation_and_reads_do_not(subject: Subject) -> None:
    store = subject.store
    seen = [await store.generation()]
    await store.add_principal(principal())
    seen.append(await store.generation())
    await store.update_principal(principal(burst=None))
    seen.append(await store.generation())
    await store.add_token(token(1), max_active=2, now=NOW)
    seen.append(await store.generation())
    await store.revoke_token("rule-a", token(1).id, NOW)
    seen.append(await store.generation())
    await store.add_freeze(Freeze("frz_0000000000000001", "why", NOW))
    seen.append(await store.generation())
    await store.lift_freeze("frz_0000000000000001", NOW, "cli:bob")
    seen.append(await store.generation())
    await store.revoke_principal("rule-a", NOW)
    seen.append(await store.generation())
    await store.principals()
    await store.control_state()
    assert seen == sorted(set(seen)) and len(seen) == 8
    assert await store.generation() == seen[-1]
    assert (await store.control_state()).generation == seen[-1]


async def test_a_failed_change_does_not_move_the_generation(subject: Subject) -> None:
    store = subject.store
    before = await store.generation()
    with pytest.raises(NotFound):
        await store.update_principal(principal())
    with pytest.raises(NotFound):
        await store.revoke_principal("nobody", NOW)
    with pytest.raises(NotFound):
        await store.add_token(token(1), max_active=2, now=NOW)
    with pytest.raises(NotFound):
        await store.lift_freeze("frz_0000000000000009", NOW, "x")
    assert await store.generation() == before


async def test_update_replaces_limits_of_an_active_principal_only(subject: Subject) -> None:
    store = subject.store
    await store.add_principal(principal())
    changed = principal(
        client=Client("rule-a", frozenset({"ENG"}), Access.READ, 900, frozenset({Role.RULE})),
        rate_per_second=None,
        burst=None,
        updated_at=NOW + timedelta(minutes=1),
    )
    await store.update_principal(changed)
    assert await store.principal("rule-a") == changed
    await store.revoke_principal("rule-a", NOW)
    with pytest.raises(NotFound):
        await store.update_principal(changed)


async def test_at_most_max_active_usable_tokens(subject: Subject) -> None:
    store = subject.store
    await store.add_principal(principal())
    await store.add_token(token(1), max_active=2, now=NOW)
    await store.add_token(token(2, expires_at=NOW + timedelta(hours=1)), max_active=2, now=NOW)
    with pytest.raises(PrincipalConflict):
        await store.add_token(token(3), max_active=2, now=NOW)
    # Once the second expires it no longer counts.
    later = NOW + timedelta(hours=1)
    await store.add_token(token(3), max_active=2, now=later)
    await store.revoke_token("rule-a", token(1).id, later)
    await store.add_token(token(4), max_active=2, now=later)
    assert [t.id for t in await store.tokens("rule-a")] == [token(n).id for n in (1, 2, 3, 4)]
    state = await store.control_state()
    assert sorted(t.id for t in state.tokens) == [token(n).id for n in (2, 3, 4)]
    assert {t.id: t for t in state.tokens}[token(2).id].expires_at == NOW + timedelta(hours=1)


async def test_concurrent_issues_never_exceed_the_limit(subject: Subject) -> None:
    if subject.kind == "memory":
        pytest.skip("one event loop, no interleaving inside a call: nothing to race")
    await subject.store.add_principal(principal())
    other = await subject.reopen()
    results = await asyncio.gather(
        *(
            (subject.store if n % 2 else other).add_token(token(n), max_active=2, now=NOW)
            for n in range(1, 7)
        ),
        return_exceptions=True,
    )
    assert sum(r is None for r in results) == 2
    assert all(isinstance(r, PrincipalConflict) for r in results if r is not None)


async def test_revoking_a_principal_revokes_its_tokens_and_only_its(subject: Subject) -> None:
    store = subject.store
    await store.add_principal(principal())
    await store.add_principal(principal("rule-b"))
    await store.add_token(token(1), max_active=2, now=NOW)
    await store.add_token(token(2, "rule-b"), max_active=2, now=NOW)
    await store.revoke_principal("rule-a", NOW + timedelta(minutes=5))
    revoked = await store.principal("rule-a")
    assert revoked is not None and revoked.revoked_at == NOW + timedelta(minutes=5)
    assert [t.revoked_at for t in await store.tokens("rule-a")] == [NOW + timedelta(minutes=5)]
    assert [t.client_id for t in (await store.control_state()).tokens] == ["rule-b"]
    with pytest.raises(NotFound):
        await store.revoke_principal("rule-a", NOW)


async def test_revoke_token_names_the_owner(subject: Subject) -> None:
    store = subject.store
    await store.add_principal(principal())
    await store.add_principal(principal("rule-b"))
    await store.add_token(token(1), max_active=2, now=NOW)
    with pytest.raises(NotFound):  # another principal's token
        await store.revoke_token("rule-b", token(1).id, NOW)
    revoked = await store.revoke_token("rule-a", token(1).id, NOW)
    assert revoked == replace(token(1), revoked_at=NOW)
    with pytest.raises(NotFound):  # twice
        await store.revoke_token("rule-a", token(1).id, NOW)


async def test_freezes_round_trip_and_lift_once(subject: Subject) -> None:
    store = subject.store
    everything = Freeze("frz_0000000000000001", "incident 7", NOW, created_by="api:root")
    space = Freeze("frz_0000000000000002", "ENG export bug", NOW + timedelta(seconds=1), "ENG")
    client = Freeze(
        "frz_0000000000000003", "leak", NOW + timedelta(seconds=2), "OPS", "rule-a", "cli:bob"
    )
    for f in (everything, space, client):
        await store.add_freeze(f)
    assert await store.freezes(active_only=True) == [everything, space, client]
    lifted = await store.lift_freeze(space.id, NOW + timedelta(hours=1), "cli:carol")
    assert lifted == replace(space, lifted_at=NOW + timedelta(hours=1), lifted_by="cli:carol")
    with pytest.raises(NotFound):
        await store.lift_freeze(space.id, NOW, "cli:carol")
    assert await store.freezes(active_only=True) == [everything, client]
    assert await store.freezes(active_only=False) == [everything, lifted, client]
    assert list((await store.control_state()).freezes) == [everything, client]


async def test_another_handle_sees_every_change(subject: Subject) -> None:
    """What a second replica (or the CLI) reads: the same rows and generation."""
    await subject.store.add_principal(principal())
    await subject.store.add_token(token(1), max_active=2, now=NOW)
    await subject.store.add_freeze(Freeze("frz_0000000000000001", "why", NOW))
    other = await subject.reopen()
    assert await other.control_state() == await subject.store.control_state()


async def test_hostile_text_is_stored_as_data(subject: Subject) -> None:
    nasty = "'); DROP TABLE principals; -- ünïcødé \u202e"
    await subject.store.add_freeze(Freeze("frz_0000000000000001", nasty, NOW, created_by=nasty))
    assert (await subject.store.freezes(active_only=True))[0].reason == nasty
    assert await subject.store.principal(nasty) is None
    assert await subject.store.principals() == []


async def test_watch_is_told_of_a_change_made_elsewhere(subject: Subject) -> None:
    """PostgreSQL notifies on commit; SQLite cannot (its callers poll the generation) and
    says nothing; the fake tells at once."""
    told = asyncio.Event()
    await subject.store.watch(told.set)
    other = await subject.reopen()
    await other.add_freeze(Freeze("frz_0000000000000001", "why", NOW))
    if subject.kind == "sqlite":
        assert not told.is_set()
        return
    await asyncio.wait_for(told.wait(), timeout=10)
