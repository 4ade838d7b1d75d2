"""Break-glass requests in the state store: the row mapping and the queries of both engines.

Mixed into SqliteStateStore and PostgresStateStore (the BreakGlassStore port); the table is
made by each store's migration `break_glass_requests`. Every write of an existing request is
conditional on the revision it was read at, so two approvers (or two collects) at once never
both win. Ids, names and times only: never a secret.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, TypeVar

from credbroker.domain import Access, BreakGlassRequest, BreakGlassStatus
from credbroker.errors import BreakGlassConflict

_T = TypeVar("_T")

COLUMNS: tuple[str, ...] = (
    "id",
    "requester",
    "space",
    "access",
    "prefix",
    "ttl_seconds",
    "reason",
    "created_at",
    "approve_by",
    "status",
    "approvals",
    "denied_by",
    "approved_at",
    "collect_by",
    "collected_at",
    "key_id",
    "key_expires_at",
    "used_escrow",
    "closed_at",
    "closed_by",
    "outcome",
    "revision",
)
TIME_COLUMNS = frozenset(
    {
        "created_at",
        "approve_by",
        "approved_at",
        "collect_by",
        "collected_at",
        "key_expires_at",
        "closed_at",
    }
)

SQLITE_TABLE = (
    "CREATE TABLE break_glass_requests ("
    "id TEXT PRIMARY KEY, requester TEXT NOT NULL, space TEXT NOT NULL, access TEXT NOT NULL, "
    "prefix TEXT NOT NULL, ttl_seconds INTEGER NOT NULL, reason TEXT NOT NULL, "
    "created_at TEXT NOT NULL, approve_by TEXT NOT NULL, status TEXT NOT NULL, "
    "approvals TEXT NOT NULL, denied_by TEXT, approved_at TEXT, collect_by TEXT, "
    "collected_at TEXT, key_id TEXT, key_expires_at TEXT, used_escrow INTEGER NOT NULL, "
    "closed_at TEXT, closed_by TEXT, outcome TEXT, revision INTEGER NOT NULL)"
)
POSTGRES_TABLE = (
    "CREATE TABLE {schema}.break_glass_requests ("
    "id text PRIMARY KEY, requester text NOT NULL, space text NOT NULL, access text NOT NULL, "
    "prefix text NOT NULL, ttl_seconds integer NOT NULL, reason text NOT NULL, "
    "created_at timestamptz NOT NULL, approve_by timestamptz NOT NULL, status text NOT NULL, "
    "approvals text NOT NULL, denied_by text, approved_at timestamptz, collect_by timestamptz, "
    "collected_at timestamptz, key_id text, key_expires_at timestamptz, "
    "used_escrow boolean NOT NULL, closed_at timestamptz, closed_by text, outcome text, "
    "revision integer NOT NULL)"
)


def to_row(request: BreakGlassRequest) -> dict[str, Any]:
    row: dict[str, Any] = {name: getattr(request, name) for name in COLUMNS}
    row["access"] = request.access.value
    row["status"] = request.status.value
    row["approvals"] = json.dumps(list(request.approvals))
    for name in TIME_COLUMNS:
        if row[name] is not None and row[name].tzinfo is None:
            raise ValueError(f"{name} must be timezone-aware")
    return row


def from_row(row: Mapping[str, Any]) -> BreakGlassRequest:
    values = {name: row[name] for name in COLUMNS}
    values["access"] = Access(values["access"])
    values["status"] = BreakGlassStatus(values["status"])
    values["approvals"] = tuple(json.loads(values["approvals"]))
    values["used_escrow"] = bool(values["used_escrow"])
    for name in TIME_COLUMNS:
        values[name] = _aware(values[name])
    return BreakGlassRequest(**values)


def _aware(value: datetime | str | None) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _conflict(request: BreakGlassRequest) -> BreakGlassConflict:
    return BreakGlassConflict(
        f"{request.id} was changed by someone else meanwhile; look at it again",
        code="changed_meanwhile",
    )


class SqliteBreakGlassRequests:
    """The BreakGlassStore port on SQLite (the store's single worker thread)."""

    _run: Callable[[Callable[[sqlite3.Connection], Any]], Awaitable[Any]]

    async def create_request(self, request: BreakGlassRequest) -> None:
        row = _sqlite_row(request)

        def op(db: sqlite3.Connection) -> None:
            db.execute(
                f"INSERT INTO break_glass_requests ({', '.join(COLUMNS)}) "  # noqa: S608 - fixed names
                f"VALUES ({', '.join('?' for _ in COLUMNS)})",
                tuple(row[name] for name in COLUMNS),
            )

        await self._run(op)

    async def load_request(self, request_id: str) -> BreakGlassRequest | None:
        def op(db: sqlite3.Connection) -> BreakGlassRequest | None:
            found = db.execute(
                f"SELECT {', '.join(COLUMNS)} FROM break_glass_requests WHERE id = ?",  # noqa: S608 - fixed names
                (request_id,),
            ).fetchone()
            return None if found is None else from_row(dict(zip(COLUMNS, found, strict=True)))

        result: BreakGlassRequest | None = await self._run(op)
        return result

    async def save_request(self, request: BreakGlassRequest) -> BreakGlassRequest:
        saved = replace(request, revision=request.revision + 1)
        row = _sqlite_row(saved)
        names = [n for n in COLUMNS if n != "id"]

        def op(db: sqlite3.Connection) -> int:
            cursor = db.execute(  # one statement in autocommit mode: atomic
                f"UPDATE break_glass_requests SET {', '.join(f'{n} = ?' for n in names)} "  # noqa: S608 - fixed names
                "WHERE id = ? AND revision = ?",
                (*(row[n] for n in names), request.id, request.revision),
            )
            return int(cursor.rowcount)

        if await self._run(op) != 1:
            raise _conflict(request)
        return saved

    async def list_requests(self, *, limit: int = 200) -> list[BreakGlassRequest]:
        def op(db: sqlite3.Connection) -> list[BreakGlassRequest]:
            rows = db.execute(
                f"SELECT {', '.join(COLUMNS)} FROM break_glass_requests "  # noqa: S608 - fixed names
                "ORDER BY created_at DESC, id LIMIT ?",
                (limit,),
            ).fetchall()
            return [from_row(dict(zip(COLUMNS, r, strict=True))) for r in rows]

        result: list[BreakGlassRequest] = await self._run(op)
        return result


def _sqlite_row(request: BreakGlassRequest) -> dict[str, Any]:
    row = to_row(request)
    for name in TIME_COLUMNS:
        row[name] = row[name].isoformat() if row[name] is not None else None
    row["used_escrow"] = int(request.used_escrow)
    return row


class PostgresBreakGlassRequests:
    """The BreakGlassStore port on PostgreSQL."""

    _schema: str
    _fetchrow: Callable[..., Awaitable[Any]]
    _execute: Callable[..., Awaitable[None]]
    _fetch: Callable[..., Awaitable[list[Any]]]

    async def create_request(self, request: BreakGlassRequest) -> None:
        row = to_row(request)
        placeholders = ", ".join(f"${i}" for i in range(1, len(COLUMNS) + 1))
        await self._execute(
            f"INSERT INTO {self._schema}.break_glass_requests ({', '.join(COLUMNS)}) "  # noqa: S608 - fixed names
            f"VALUES ({placeholders})",
            *(row[name] for name in COLUMNS),
        )

    async def load_request(self, request_id: str) -> BreakGlassRequest | None:
        found = await self._fetchrow(
            f"SELECT {', '.join(COLUMNS)} FROM {self._schema}.break_glass_requests "  # noqa: S608 - fixed names
            "WHERE id = $1",
            request_id,
        )
        return None if found is None else from_row(dict(found))

    async def save_request(self, request: BreakGlassRequest) -> BreakGlassRequest:
        saved = replace(request, revision=request.revision + 1)
        row = to_row(saved)
        names = [n for n in COLUMNS if n != "id"]
        sets = ", ".join(f"{n} = ${i}" for i, n in enumerate(names, start=1))
        found = await self._fetchrow(
            f"UPDATE {self._schema}.break_glass_requests SET {sets} "  # noqa: S608 - fixed names
            f"WHERE id = ${len(names) + 1} AND revision = ${len(names) + 2} RETURNING id",
            *(row[n] for n in names),
            request.id,
            request.revision,
        )
        if found is None:
            raise _conflict(request)
        return saved

    async def list_requests(self, *, limit: int = 200) -> list[BreakGlassRequest]:
        rows = await self._fetch(
            f"SELECT {', '.join(COLUMNS)} FROM {self._schema}.break_glass_requests "  # noqa: S608 - fixed names
            "ORDER BY created_at DESC, id LIMIT $1",
            limit,
        )
        return [from_row(dict(r)) for r in rows]
