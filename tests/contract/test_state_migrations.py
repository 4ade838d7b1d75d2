"""The state stores' migrations are frozen text, and they agree with the record mapping.

- A shipped migration never changes (fingerprints below): a database that ran it would never
  see the edit. A schema change is a new migration; add its fingerprint here when it ships.
- A database made by migration 1 alone (what the first release created), holding a record
  that release wrote, opens with today's store: it is upgraded and the record reads back.
- Every RotationRecord field has a column in the mapping (state/records.py) and in the table
  the migrations build, on SQLite and on a real PostgreSQL.

PostgreSQL: $CREDBROKER_TEST_POSTGRES_DSN, default postgresql://postgres@127.0.0.1:5432/test;
each test gets its own schema (cbtest_<random>), dropped afterwards. No silent skip.
"""

from __future__ import annotations

import hashlib
import sqlite3
import stat
import typing
import uuid
from collections.abc import AsyncIterator
from dataclasses import fields
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from credbroker.domain import RotationRecord
from credbroker.state import postgres as postgres_state
from credbroker.state import sqlite as sqlite_state
from credbroker.state.migrations import Migration, checked
from credbroker.state.postgres import PostgresStateStore
from credbroker.state.records import COLUMNS, INT_COLUMNS, TIME_COLUMNS
from credbroker.state.sqlite import SqliteStateStore
from tests.contract.state_records import POSTGRES_DSN, full_record

# sha256 of each shipped migration's statements (joined by NUL), by store and version. A
# mismatch means a shipped migration was edited: undo it and add a new migration instead.
SHIPPED: dict[str, dict[int, str]] = {
    "sqlite": {
        1: "b03177202f4e5976dddfcb00b2695e4a576d8aa10d0f8bccd8dae15856f4b291",
        2: "bb718f51f3468aba64c9ff8e1d3b0deebb2329378fcde65161e227c74bb279ea",
        3: "a6c3b6d4859e7edd5481f26e98f896187bad6572e95216e4b6daff9c661e67e6",
        4: "0656cfe9944d86dcc491d08463cc6e4186b6ad01d0ca80d9c882c137171dd842",
        5: "700247442e7c58256db0a46e858f868a5bf48a058c3db6849cbef92986a5a9ea",
    },
    "postgres": {
        1: "791c6f488cdb7fbddd09872dcc429b6d7dfb2726ce0e1e07c8d7a90f0ee81094",
        2: "e0bcfe4a300cc6c9e240a8de2d7844d1f2645e4250bc05bedd1ddf3533d041e7",
        3: "8ea961baec98ce64baf378c892ab5c50def1cf23b4aba24ad3684bf3b7cef4fa",
        4: "4b3eea1d62a118f8111f9e294785b7d9c6dfc5c31a81991900ae5503164994dc",
        5: "36c17b41f26ec63db49052eb106a7fad9bee2b2d7a32ab16de2ab3dfc2d2ef8d",
    },
}
MIGRATIONS: dict[str, tuple[Migration, ...]] = {
    "sqlite": sqlite_state.MIGRATIONS,
    "postgres": postgres_state.MIGRATIONS,
}
# The columns of migration 1, as the first release read and wrote them.
V1_COLUMNS = (
    "credential",
    "phase",
    "current_key_id",
    "current_key_since",
    "old_key_id",
    "new_key_id",
    "old_version",
    "new_version",
    "started_at",
    "stored_at",
    "finished_at",
    "last_success_at",
    "last_error",
    "attempts",
    "next_due_at",
    "schedule_fingerprint",
    "updated_at",
)
V1_TIMES = {name for name in V1_COLUMNS if name.endswith(("_at", "_since"))}


def fingerprint(migration: Migration) -> str:
    return hashlib.sha256("\0".join(migration.statements).encode()).hexdigest()


def v1_row() -> dict[str, Any]:
    """The record a first-release store wrote: only migration 1's columns."""
    record = full_record()
    row = {name: getattr(record, name) for name in V1_COLUMNS}
    row["phase"] = record.phase.value
    return row


# --------------------------------------------------------------------- one database per test


class Database:
    """A database in one of the stores' engines, poked with plain SQL as an old release would."""

    kind: str

    async def make_v1(self) -> None:
        """Apply migration 1 alone and write v1_row(), as the first release did."""
        raise NotImplementedError

    async def open_store(self) -> SqliteStateStore | PostgresStateStore:
        raise NotImplementedError

    async def columns(self) -> set[str]:
        raise NotImplementedError

    async def applied(self) -> list[int]:
        raise NotImplementedError


class SqliteDatabase(Database):
    kind = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, isolation_level=None)

    async def make_v1(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = self._connect()
        try:
            for statement in sqlite_state.MIGRATIONS[0].statements:
                db.execute(statement)
            db.execute("PRAGMA user_version = 1")
            row = v1_row()
            for name in V1_TIMES:  # the first release stored times as ISO text
                row[name] = row[name].isoformat() if row[name] is not None else None
            db.execute(
                f"INSERT INTO rotation_state ({', '.join(V1_COLUMNS)}) "  # noqa: S608 - fixed names
                f"VALUES ({', '.join('?' for _ in V1_COLUMNS)})",
                tuple(row[name] for name in V1_COLUMNS),
            )
        finally:
            db.close()

    async def open_store(self) -> SqliteStateStore:
        return await SqliteStateStore.open(self.path)

    async def columns(self) -> set[str]:
        db = self._connect()
        try:
            return {row[1] for row in db.execute("PRAGMA table_info(rotation_state)")}
        finally:
            db.close()

    async def applied(self) -> list[int]:
        db = self._connect()
        try:
            return list(range(1, int(db.execute("PRAGMA user_version").fetchone()[0]) + 1))
        finally:
            db.close()


class PostgresDatabase(Database):
    kind = "postgres"

    def __init__(self, schema: str) -> None:
        self.schema = schema

    async def make_v1(self) -> None:
        schema = self.schema
        connection = await asyncpg.connect(POSTGRES_DSN)
        try:
            async with connection.transaction():
                await connection.execute(f"CREATE SCHEMA {schema}")
                await connection.execute(
                    f"CREATE TABLE {schema}.schema_migrations ("
                    "version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
                )
                for statement in postgres_state.MIGRATIONS[0].statements:
                    await connection.execute(statement.format(schema=schema))
                await connection.execute(
                    f"INSERT INTO {schema}.schema_migrations (version) VALUES (1)"  # noqa: S608 - test schema
                )
                row = v1_row()
                await connection.execute(
                    f"INSERT INTO {schema}.rotation_state ({', '.join(V1_COLUMNS)}) "  # noqa: S608 - fixed names
                    f"VALUES ({', '.join(f'${i}' for i in range(1, len(V1_COLUMNS) + 1))})",
                    *(row[name] for name in V1_COLUMNS),
                )
        finally:
            await connection.close()

    async def open_store(self) -> PostgresStateStore:
        return await PostgresStateStore.open(POSTGRES_DSN, schema=self.schema)

    async def columns(self) -> set[str]:
        connection = await asyncpg.connect(POSTGRES_DSN)
        try:
            rows = await connection.fetch(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_schema = $1 AND table_name = 'rotation_state'",
                self.schema,
            )
        finally:
            await connection.close()
        return {row["column_name"] for row in rows}

    async def applied(self) -> list[int]:
        connection = await asyncpg.connect(POSTGRES_DSN)
        try:
            rows = await connection.fetch(
                f"SELECT version FROM {self.schema}.schema_migrations ORDER BY version"  # noqa: S608 - test schema
            )
        finally:
            await connection.close()
        return [row["version"] for row in rows]


@pytest.fixture(params=["sqlite", "postgres"])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    if request.param == "sqlite":
        yield SqliteDatabase(tmp_path / "state" / "rotation.sqlite3")
        return
    schema = f"cbtest_{uuid.uuid4().hex[:12]}"
    try:
        yield PostgresDatabase(schema)
    finally:
        connection = await asyncpg.connect(POSTGRES_DSN)
        try:
            await connection.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        finally:
            await connection.close()


# --------------------------------------------------------------------------------- the tests


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_shipped_migrations_are_frozen(kind: str) -> None:
    migrations = MIGRATIONS[kind]
    assert [m.version for m in migrations] == list(range(1, len(migrations) + 1))
    for migration in migrations:
        assert migration.version in SHIPPED[kind], (
            f"{kind} migration {migration.version} is new: freeze it by recording its "
            f"fingerprint {fingerprint(migration)} in SHIPPED"
        )
        assert fingerprint(migration) == SHIPPED[kind][migration.version], (
            f"{kind} migration {migration.version} was edited after it shipped: databases that "
            "ran it will never see the change. Restore it and add a new migration."
        )
    assert set(SHIPPED[kind]) <= {m.version for m in migrations}, "a shipped migration is gone"


async def test_a_migration_1_database_is_upgraded_and_keeps_its_record(
    database: Database,
) -> None:
    await database.make_v1()
    assert await database.applied() == [1]

    store = await database.open_store()
    try:
        # Fields added after migration 1 read as their defaults: the migration that adds a
        # column gives it the field's default.
        expected = RotationRecord(**{name: getattr(full_record(), name) for name in V1_COLUMNS})
        assert await store.load("service") == expected
        assert await store.all() == [expected]
        assert await database.applied() == [m.version for m in MIGRATIONS[database.kind]]
        assert await database.columns() == set(COLUMNS)

        # The upgraded table holds every field of today's record.
        await store.save(full_record("after-upgrade"))
        assert await store.load("after-upgrade") == full_record("after-upgrade")
    finally:
        await store.close()

    reopened = await database.open_store()  # nothing left to apply: nothing is applied twice
    try:
        assert await reopened.load("service") == expected
        assert await database.applied() == [m.version for m in MIGRATIONS[database.kind]]
    finally:
        await reopened.close()


async def test_the_migrations_create_a_column_for_every_record_field(database: Database) -> None:
    store = await database.open_store()
    await store.close()
    record_fields = {f.name for f in fields(RotationRecord)}
    missing = record_fields - await database.columns()
    assert not missing, (
        f"RotationRecord fields with no {database.kind} column: {sorted(missing)}; add a "
        "migration (never edit a shipped one) and the column in state/records.py"
    )
    assert await database.columns() == set(COLUMNS)


def test_the_row_mapping_covers_every_record_field_with_its_type() -> None:
    hints = typing.get_type_hints(RotationRecord)
    names = [f.name for f in fields(RotationRecord)]
    assert len(COLUMNS) == len(set(COLUMNS))
    assert set(COLUMNS) == set(names), (
        f"state/records.py COLUMNS and RotationRecord differ: only in the record "
        f"{sorted(set(names) - set(COLUMNS))}, only in COLUMNS {sorted(set(COLUMNS) - set(names))}"
    )

    def holds(name: str, kind: type) -> bool:
        hint = hints[name]
        return hint is kind or kind in typing.get_args(hint)

    assert {n for n in names if holds(n, datetime)} == TIME_COLUMNS
    assert {n for n in names if holds(n, int)} == INT_COLUMNS


def test_migrations_are_numbered_from_one_without_a_gap() -> None:
    one = Migration(1, "one", ("SELECT 1",))
    three = Migration(3, "three", ("SELECT 3",))
    assert checked([one]) == (one,)
    with pytest.raises(ValueError, match="migration 3"):
        checked([one, three])
    with pytest.raises(ValueError, match="no statement"):
        checked([Migration(1, "empty", ())])


async def test_a_new_sqlite_state_file_is_private(tmp_path: Path) -> None:
    store = await SqliteStateStore.open(tmp_path / "state" / "rotation.sqlite3")
    try:
        await store.save(RotationRecord("service"))
    finally:
        await store.close()
    for path in (tmp_path / "state").glob("rotation.sqlite3*"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
