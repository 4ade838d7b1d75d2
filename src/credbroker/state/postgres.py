"""Rotation state in PostgreSQL (asyncpg), shared by every replica of the broker.

Tables live in their own schema (default `credbroker`):

    schema_migrations(version, applied_at)   which migrations ran
    rotation_state(credential, phase, ...)   one row per managed credential (key ids, times)
    secret_versions_seen(store, path, ...)  the embedded store's rollback watermark
    break_glass_requests(id, ...)           break-glass requests (state/breakglass.py)

Migrations run at start, inside one transaction that first takes a transaction-level advisory
lock, so replicas starting together apply each migration exactly once; running them again
changes nothing.

The rotation lock is a session-level advisory lock (pg_try_advisory_lock) on a connection held
for the whole rotation: no two replicas rotate the same credential at once, and a replica that
dies (or loses its connection) releases it with its session.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Self, TypeVar

import asyncpg

from credbroker.domain import RotationRecord
from credbroker.errors import ConfigError, RotationBusy, StateStoreError
from credbroker.state.breakglass import POSTGRES_TABLE as BREAK_GLASS_TABLE
from credbroker.state.breakglass import PostgresBreakGlassRequests
from credbroker.state.migrations import Migration, checked
from credbroker.state.postgres_leases import LEASE_MIGRATION_SQL, PostgresLeases
from credbroker.state.records import COLUMNS, from_row, to_row

_T = TypeVar("_T")
_SCHEMA = re.compile(r"[a-z_][a-z0-9_]{0,62}")


# Frozen text (state/migrations.py): applied in order, each once, recorded in
# {schema}.schema_migrations. Never edit one that shipped: add the next. {schema} is the
# validated schema name.
MIGRATIONS: tuple[Migration, ...] = checked(
    (
        Migration(
            1,
            "rotation_state: one row per managed credential",
            (
                (
                    "CREATE TABLE {schema}.rotation_state ("
                    "credential text PRIMARY KEY, "
                    "phase text NOT NULL, "
                    "current_key_id text, "
                    "current_key_since timestamptz, "
                    "old_key_id text, "
                    "new_key_id text, "
                    "old_version bigint, "
                    "new_version bigint, "
                    "started_at timestamptz, "
                    "stored_at timestamptz, "
                    "finished_at timestamptz, "
                    "last_success_at timestamptz, "
                    "last_error text, "
                    "attempts integer NOT NULL DEFAULT 0, "
                    "next_due_at timestamptz, "
                    "schedule_fingerprint text, "
                    "updated_at timestamptz"
                    ")"
                ),
            ),
        ),
        Migration(
            2,
            "secret_versions_seen: the highest version seen of each secret, per store and path",
            (
                (
                    "CREATE TABLE {schema}.secret_versions_seen ("
                    "store text NOT NULL, "
                    "path text NOT NULL, "
                    "highest_version bigint NOT NULL, "
                    "updated_at timestamptz NOT NULL DEFAULT now(), "
                    "PRIMARY KEY (store, path)"
                    ")"
                ),
            ),
        ),
        Migration(
            3,
            "break_glass_requests: dual-control break-glass requests (ids and times only)",
            (BREAK_GLASS_TABLE,),
        ),
        Migration(
            4,
            "principals, principal_tokens, freezes, control_generation: the live control plane",
            (
                (
                    "CREATE TABLE {schema}.principals ("
                    "id text PRIMARY KEY, "
                    "roles text NOT NULL, "
                    "spaces text NOT NULL, "
                    "max_access text NOT NULL, "
                    "max_ttl_seconds integer NOT NULL, "
                    "rate_per_second double precision, "
                    "burst integer, "
                    "created_at timestamptz NOT NULL, "
                    "updated_at timestamptz NOT NULL, "
                    "revoked_at timestamptz, "
                    "created_by text"
                    ")"
                ),
                (
                    "CREATE TABLE {schema}.principal_tokens ("
                    "id text PRIMARY KEY, "
                    "client_id text NOT NULL REFERENCES {schema}.principals (id), "
                    "sha256 text NOT NULL UNIQUE, "
                    "created_at timestamptz NOT NULL, "
                    "expires_at timestamptz, "
                    "revoked_at timestamptz, "
                    "created_by text"
                    ")"
                ),
                "CREATE INDEX principal_tokens_client ON {schema}.principal_tokens (client_id)",
                (
                    "CREATE TABLE {schema}.freezes ("
                    "id text PRIMARY KEY, "
                    "space text, "
                    "client_id text, "
                    "reason text NOT NULL, "
                    "created_at timestamptz NOT NULL, "
                    "created_by text, "
                    "lifted_at timestamptz, "
                    "lifted_by text"
                    ")"
                ),
                (
                    "CREATE TABLE {schema}.control_generation ("
                    "id integer PRIMARY KEY CHECK (id = 1), "
                    "generation bigint NOT NULL"
                    ")"
                ),
                "INSERT INTO {schema}.control_generation (id, generation) VALUES (1, 0)",
            ),
        ),
        Migration(5, "leases and revocations", LEASE_MIGRATION_SQL),
    )
)


def _advisory_key(*parts: str) -> int:
    """A stable signed 64-bit key for pg_advisory_* (the same in every replica and release)."""
    digest = hashlib.sha256(":".join(("credbroker", *parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class PostgresStateStore(PostgresLeases, PostgresBreakGlassRequests):
    kind = "postgres"

    def __init__(self, pool: asyncpg.Pool, schema: str) -> None:
        self._pool = pool
        self._schema = schema
        self._table = f"{schema}.rotation_state"

    @classmethod
    async def open(
        cls, dsn: str, *, schema: str = "credbroker", timeout_seconds: float = 10.0
    ) -> Self:
        if not _SCHEMA.fullmatch(schema):
            raise ConfigError(f"invalid PostgreSQL schema name {schema!r}")
        try:
            pool = await asyncpg.create_pool(
                dsn,
                min_size=1,
                max_size=4,
                timeout=timeout_seconds,
                command_timeout=timeout_seconds,
            )
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            # Never the DSN in a message: it may hold a password.
            raise StateStoreError(f"cannot connect to PostgreSQL ({type(exc).__name__})") from None
        store = cls(pool, schema)
        try:
            await store._migrate()
        except BaseException:
            await pool.close()
            raise
        return store

    # --- the StateStore protocol ----------------------------------------------------------

    async def load(self, credential: str) -> RotationRecord | None:
        row = await self._fetchrow(
            f"SELECT {', '.join(COLUMNS)} FROM {self._table} WHERE credential = $1",  # noqa: S608 - fixed names
            credential,
        )
        return None if row is None else from_row(dict(row))

    async def save(self, record: RotationRecord) -> None:
        row = to_row(record)
        updates = ", ".join(f"{name} = EXCLUDED.{name}" for name in COLUMNS[1:])
        placeholders = ", ".join(f"${i}" for i in range(1, len(COLUMNS) + 1))
        await self._execute(
            f"INSERT INTO {self._table} ({', '.join(COLUMNS)}) VALUES ({placeholders}) "  # noqa: S608 - fixed names
            f"ON CONFLICT (credential) DO UPDATE SET {updates}",
            *(row[name] for name in COLUMNS),
        )

    async def all(self) -> list[RotationRecord]:
        try:
            rows = await self._pool.fetch(
                f"SELECT {', '.join(COLUMNS)} FROM {self._table} ORDER BY credential"  # noqa: S608 - fixed names
            )
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            raise _error("read", exc) from None
        return [from_row(dict(row)) for row in rows]

    # --- the VersionWatermark protocol ----------------------------------------------------

    async def remember_version(self, store: str, path: str, version: int) -> int:
        table = f"{self._schema}.secret_versions_seen"
        if version <= 0:
            row = await self._fetchrow(
                f"SELECT highest_version FROM {table} WHERE store = $1 AND path = $2",  # noqa: S608 - fixed names
                store,
                path,
            )
        else:
            # One statement: atomic under concurrent replicas, and it never lowers the mark.
            row = await self._fetchrow(
                f"INSERT INTO {table} AS seen (store, path, highest_version) "  # noqa: S608 - fixed names
                "VALUES ($1, $2, $3) ON CONFLICT (store, path) DO UPDATE SET "
                "highest_version = GREATEST(seen.highest_version, EXCLUDED.highest_version), "
                "updated_at = CASE WHEN EXCLUDED.highest_version > seen.highest_version "
                "THEN now() ELSE seen.updated_at END "
                "RETURNING highest_version",
                store,
                path,
                version,
            )
        return 0 if row is None else int(row["highest_version"])

    @asynccontextmanager
    async def lock(self, credential: str) -> AsyncIterator[None]:
        key = _advisory_key(self._schema, "rotation", credential)
        try:
            connection = await self._pool.acquire()
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            raise _error("lock", exc) from None
        try:
            locked = await connection.fetchval("SELECT pg_try_advisory_lock($1)", key)
        except BaseException:
            await self._discard(connection)
            raise
        if not locked:
            await self._pool.release(connection)
            raise RotationBusy(f"a rotation of {credential} is already running (another replica?)")
        try:
            yield
        finally:
            try:
                await connection.execute("SELECT pg_advisory_unlock($1)", key)
            except BaseException:
                # Never hand a connection that may still hold the lock back to the pool.
                await self._discard(connection)
            else:
                await self._pool.release(connection)

    async def close(self) -> None:
        await self._pool.close()

    # --- helpers --------------------------------------------------------------------------

    async def _discard(self, connection: Any) -> None:
        connection.terminate()  # the session ends, and with it every advisory lock it held
        await self._pool.release(connection)

    async def _migrate(self) -> None:
        schema = self._schema
        try:
            async with self._pool.acquire() as connection, connection.transaction():
                await connection.execute(
                    "SELECT pg_advisory_xact_lock($1)", _advisory_key(schema, "migrations")
                )
                await connection.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
                await connection.execute(
                    f"CREATE TABLE IF NOT EXISTS {schema}.schema_migrations ("
                    "version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
                )
                rows = await connection.fetch(f"SELECT version FROM {schema}.schema_migrations")  # noqa: S608 - validated schema name
                done = {row["version"] for row in rows}
                for migration in MIGRATIONS:
                    if migration.version in done:
                        continue
                    for statement in migration.statements:
                        await connection.execute(statement.format(schema=schema))
                    await connection.execute(
                        f"INSERT INTO {schema}.schema_migrations (version) VALUES ($1)",  # noqa: S608 - validated schema name
                        migration.version,
                    )
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            raise _error("migrate", exc) from None

    async def _guard(self, action: str, op: Callable[[], Awaitable[_T]]) -> _T:
        try:
            return await op()
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            raise _error(action, exc) from None

    async def _fetchrow(self, query: str, *args: Any) -> Any:
        try:
            return await self._pool.fetchrow(query, *args)
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            raise _error("read", exc) from None

    async def _fetch(self, query: str, *args: Any) -> list[Any]:
        try:
            return list(await self._pool.fetch(query, *args))
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            raise _error("read", exc) from None

    async def _execute(self, query: str, *args: Any) -> None:
        try:
            await self._pool.execute(query, *args)
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            raise _error("write", exc) from None


def _error(action: str, exc: BaseException) -> StateStoreError:
    detail = exc.sqlstate if isinstance(exc, asyncpg.PostgresError) else type(exc).__name__
    return StateStoreError(f"PostgreSQL state store {action} failed ({detail})")
