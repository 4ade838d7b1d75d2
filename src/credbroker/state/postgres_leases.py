"""Leases and revocations in the PostgreSQL state store (ports.LeaseLog), mixed into
PostgresStateStore: the same pool and schema, shared by every replica."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import asyncpg

from credbroker.leases import Lease, LeaseFilter, Revocation
from credbroker.state.lease_rows import (
    LEASE_COLUMNS,
    REVOCATION_COLUMNS,
    lease_from_row,
    lease_row,
    revocation_from_row,
    revocation_row,
)

_LEASES = ", ".join(LEASE_COLUMNS)
_REVOCATIONS = ", ".join(REVOCATION_COLUMNS)

# Appended to PostgresStateStore's MIGRATIONS (frozen text: never edit once shipped).
LEASE_MIGRATION_SQL: tuple[str, ...] = (
    "CREATE TABLE {schema}.leases ("
    "lease_id text PRIMARY KEY, kind text NOT NULL, client text NOT NULL, space text, "
    "bucket text NOT NULL, prefix text NOT NULL, access text NOT NULL, "
    "ttl_seconds integer NOT NULL, issued_at timestamptz NOT NULL, "
    "expires_at timestamptz NOT NULL, mode text NOT NULL, access_key_id text, rule text, "
    "actor text, source text, object_key text, revoked_at timestamptz, revocation_id text)",
    "CREATE INDEX leases_client ON {schema}.leases (client, issued_at)",
    "CREATE INDEX leases_space ON {schema}.leases (space, issued_at)",
    "CREATE INDEX leases_expires ON {schema}.leases (expires_at)",
    "CREATE TABLE {schema}.revocations ("
    "revocation_id text PRIMARY KEY, selector text NOT NULL, value text NOT NULL, "
    "created_at timestamptz NOT NULL, created_by text, reason text, "
    "lease_count integer NOT NULL, enforce_until timestamptz NOT NULL, "
    "object_store_enforced boolean NOT NULL, detail text NOT NULL, issued_before timestamptz)",
)


def _where(wanted: LeaseFilter) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    args: list[Any] = []
    for column, value in (
        ("client", wanted.client),
        ("space", wanted.space),
        ("lease_id", wanted.lease_id),
        ("access", wanted.access),
    ):
        if value is not None:
            args.append(value)
            clauses.append(f"{column} = ${len(args)}")
    if wanted.issued_before is not None:
        args.append(wanted.issued_before)
        clauses.append(f"issued_at < ${len(args)}")
    if wanted.active_at is not None:
        args.append(wanted.active_at)
        clauses.append(f"revoked_at IS NULL AND expires_at > ${len(args)}")
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", args


class PostgresLeases:
    """Mixed into PostgresStateStore, which provides `_pool`, `_schema` and `_guard`."""

    _pool: asyncpg.Pool
    _schema: str
    _guard: Callable[[str, Callable[[], Awaitable[Any]]], Awaitable[Any]]

    async def add_leases(self, leases: list[Lease]) -> int:
        rows = [tuple(lease_row(x)[name] for name in LEASE_COLUMNS) for x in leases]
        table = f"{self._schema}.leases"
        width = len(LEASE_COLUMNS)

        async def op() -> int:
            added = 0
            async with self._pool.acquire() as connection, connection.transaction():
                # Multi-row INSERTs (at most 1,000 rows, 18,000 parameters, each): one round
                # trip per chunk; the status line "INSERT 0 N" counts the rows that were new.
                for start in range(0, len(rows), 1000):
                    chunk = rows[start : start + 1000]
                    values = ", ".join(
                        "(" + ", ".join(f"${i * width + j + 1}" for j in range(width)) + ")"
                        for i in range(len(chunk))
                    )
                    status = await connection.execute(
                        f"INSERT INTO {table} ({_LEASES}) VALUES {values} "  # noqa: S608 - fixed names, placeholders
                        "ON CONFLICT (lease_id) DO NOTHING",
                        *(value for row in chunk for value in row),
                    )
                    added += int(str(status).rsplit(" ", 1)[-1])
            return added

        result: int = await self._guard("write", op)
        return result

    async def find(self, wanted: LeaseFilter) -> list[Lease]:
        where, args = _where(wanted)
        query = (
            f"SELECT {_LEASES} FROM {self._schema}.leases{where} "  # noqa: S608 - fixed names
            f"ORDER BY issued_at DESC, lease_id LIMIT ${len(args) + 1}"
        )

        async def op() -> list[Lease]:
            rows = await self._pool.fetch(query, *args, wanted.limit)
            return [lease_from_row(dict(row)) for row in rows]

        result: list[Lease] = await self._guard("read", op)
        return result

    async def mark_revoked(
        self, lease_ids: list[str], *, revocation_id: str, at: datetime
    ) -> list[Lease]:
        table = f"{self._schema}.leases"
        ids = list(lease_ids)

        async def op() -> list[Lease]:
            if not ids:
                return []
            async with self._pool.acquire() as connection, connection.transaction():
                await connection.execute(
                    f"UPDATE {table} SET revoked_at = $1, revocation_id = $2 "  # noqa: S608 - fixed names
                    "WHERE revoked_at IS NULL AND lease_id = ANY($3::text[])",
                    at,
                    revocation_id,
                    ids,
                )
                rows = await connection.fetch(
                    f"SELECT {_LEASES} FROM {table} WHERE revocation_id = $1 "  # noqa: S608 - fixed names
                    "ORDER BY issued_at DESC, lease_id",
                    revocation_id,
                )
            return [lease_from_row(dict(row)) for row in rows]

        result: list[Lease] = await self._guard("write", op)
        return result

    async def revoked_active(self, now: datetime) -> list[str]:
        query = (
            f"SELECT lease_id FROM {self._schema}.leases "  # noqa: S608 - fixed names
            "WHERE revoked_at IS NOT NULL AND expires_at > $1 ORDER BY lease_id"
        )

        async def op() -> list[str]:
            return [str(row["lease_id"]) for row in await self._pool.fetch(query, now)]

        result: list[str] = await self._guard("read", op)
        return result

    async def add_revocation(self, revocation: Revocation) -> None:
        row = revocation_row(revocation)
        placeholders = ", ".join(f"${i}" for i in range(1, len(REVOCATION_COLUMNS) + 1))
        query = (
            f"INSERT INTO {self._schema}.revocations ({_REVOCATIONS}) "  # noqa: S608 - fixed names
            f"VALUES ({placeholders})"
        )

        async def op() -> None:
            await self._pool.execute(query, *(row[name] for name in REVOCATION_COLUMNS))

        await self._guard("write", op)

    async def revocations(self, *, in_effect_at: datetime | None = None) -> list[Revocation]:
        table = f"{self._schema}.revocations"
        where, args = (
            ("", []) if in_effect_at is None else (" WHERE enforce_until > $1", [in_effect_at])
        )
        query = (
            f"SELECT {_REVOCATIONS} FROM {table}{where} "  # noqa: S608 - fixed names
            "ORDER BY created_at DESC, revocation_id"
        )

        async def op() -> list[Revocation]:
            return [revocation_from_row(dict(row)) for row in await self._pool.fetch(query, *args)]

        result: list[Revocation] = await self._guard("read", op)
        return result

    async def prune(self, before: datetime) -> int:
        schema = self._schema

        async def op() -> int:
            async with self._pool.acquire() as connection, connection.transaction():
                leases = await connection.execute(
                    f"DELETE FROM {schema}.leases WHERE expires_at < $1",  # noqa: S608 - fixed names
                    before,
                )
                gone = await connection.execute(
                    f"DELETE FROM {schema}.revocations WHERE enforce_until < $1",  # noqa: S608 - fixed names
                    before,
                )
            return int(str(leases).rsplit(" ", 1)[-1]) + int(str(gone).rsplit(" ", 1)[-1])

        result: int = await self._guard("write", op)
        return result
