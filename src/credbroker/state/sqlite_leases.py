"""Leases and revocations in the SQLite state store (ports.LeaseLog), mixed into
SqliteStateStore: the same file, connection and worker thread. Times are fixed-width UTC text
(lease_rows.sortable), so comparisons in SQL are time comparisons."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from credbroker.leases import Lease, LeaseFilter, Revocation
from credbroker.state.lease_rows import (
    LEASE_COLUMNS,
    LEASE_TIMES,
    REVOCATION_COLUMNS,
    REVOCATION_TIMES,
    lease_from_row,
    lease_row,
    revocation_from_row,
    revocation_row,
    sortable,
)

_T = TypeVar("_T")

_LEASES = ", ".join(LEASE_COLUMNS)
_REVOCATIONS = ", ".join(REVOCATION_COLUMNS)

# Appended to SqliteStateStore's MIGRATIONS (frozen text: never edit once shipped).
LEASE_MIGRATION_SQL: tuple[str, ...] = (
    "CREATE TABLE leases ("
    "lease_id TEXT PRIMARY KEY, kind TEXT NOT NULL, client TEXT NOT NULL, space TEXT, "
    "bucket TEXT NOT NULL, prefix TEXT NOT NULL, access TEXT NOT NULL, "
    "ttl_seconds INTEGER NOT NULL, issued_at TEXT NOT NULL, expires_at TEXT NOT NULL, "
    "mode TEXT NOT NULL, access_key_id TEXT, rule TEXT, actor TEXT, source TEXT, "
    "object_key TEXT, revoked_at TEXT, revocation_id TEXT)",
    "CREATE INDEX leases_client ON leases (client, issued_at)",
    "CREATE INDEX leases_space ON leases (space, issued_at)",
    "CREATE INDEX leases_expires ON leases (expires_at)",
    "CREATE TABLE revocations ("
    "revocation_id TEXT PRIMARY KEY, selector TEXT NOT NULL, value TEXT NOT NULL, "
    "created_at TEXT NOT NULL, created_by TEXT, reason TEXT, lease_count INTEGER NOT NULL, "
    "enforce_until TEXT NOT NULL, object_store_enforced INTEGER NOT NULL, detail TEXT NOT NULL, "
    "issued_before TEXT)",
)


def _text_times(row: dict[str, Any], names: frozenset[str]) -> dict[str, Any]:
    for name in names:
        if row[name] is not None:
            row[name] = sortable(row[name])
    return row


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
            clauses.append(f"{column} = ?")
            args.append(value)
    if wanted.issued_before is not None:
        clauses.append("issued_at < ?")
        args.append(sortable(wanted.issued_before))
    if wanted.active_at is not None:
        clauses.append("revoked_at IS NULL AND expires_at > ?")
        args.append(sortable(wanted.active_at))
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", args


class SqliteLeases:
    """Mixed into SqliteStateStore, which provides `_run`."""

    _run: Callable[..., Any]

    async def add_leases(self, leases: list[Lease]) -> int:
        rows = [tuple(_text_times(lease_row(x), LEASE_TIMES).values()) for x in leases]

        def op(db: sqlite3.Connection) -> int:
            before = db.total_changes
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany(
                    f"INSERT OR IGNORE INTO leases ({_LEASES}) "  # noqa: S608 - fixed names
                    f"VALUES ({', '.join('?' for _ in LEASE_COLUMNS)})",
                    rows,
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return int(db.total_changes - before)

        result: int = await self._run(op)
        return result

    async def find(self, wanted: LeaseFilter) -> list[Lease]:
        where, args = _where(wanted)

        def op(db: sqlite3.Connection) -> list[Lease]:
            rows = db.execute(
                f"SELECT {_LEASES} FROM leases{where} "  # noqa: S608 - fixed names, bound values
                "ORDER BY issued_at DESC, lease_id LIMIT ?",
                (*args, wanted.limit),
            ).fetchall()
            return [lease_from_row(dict(zip(LEASE_COLUMNS, row, strict=True))) for row in rows]

        result: list[Lease] = await self._run(op)
        return result

    async def mark_revoked(
        self, lease_ids: list[str], *, revocation_id: str, at: datetime
    ) -> list[Lease]:
        ids = list(lease_ids)

        def op(db: sqlite3.Connection) -> list[Lease]:
            if not ids:
                return []
            marks = ", ".join("?" for _ in ids)
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute(
                    f"UPDATE leases SET revoked_at = ?, revocation_id = ? "  # noqa: S608 - placeholders only
                    f"WHERE revoked_at IS NULL AND lease_id IN ({marks})",
                    (sortable(at), revocation_id, *ids),
                )
                rows = db.execute(
                    f"SELECT {_LEASES} FROM leases "  # noqa: S608 - placeholders only
                    "WHERE revocation_id = ? ORDER BY issued_at DESC, lease_id",
                    (revocation_id,),
                ).fetchall()
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return [lease_from_row(dict(zip(LEASE_COLUMNS, row, strict=True))) for row in rows]

        result: list[Lease] = await self._run(op)
        return result

    async def revoked_active(self, now: datetime) -> list[str]:
        def op(db: sqlite3.Connection) -> list[str]:
            rows = db.execute(
                "SELECT lease_id FROM leases WHERE revoked_at IS NOT NULL AND expires_at > ? "
                "ORDER BY lease_id",
                (sortable(now),),
            ).fetchall()
            return [str(row[0]) for row in rows]

        result: list[str] = await self._run(op)
        return result

    async def add_revocation(self, revocation: Revocation) -> None:
        row = _text_times(revocation_row(revocation), REVOCATION_TIMES)
        row["object_store_enforced"] = int(row["object_store_enforced"])

        def op(db: sqlite3.Connection) -> None:
            db.execute(
                f"INSERT INTO revocations ({_REVOCATIONS}) "  # noqa: S608 - fixed names
                f"VALUES ({', '.join('?' for _ in REVOCATION_COLUMNS)})",
                tuple(row[name] for name in REVOCATION_COLUMNS),
            )

        await self._run(op)

    async def revocations(self, *, in_effect_at: datetime | None = None) -> list[Revocation]:
        where, args = (
            ("", ())
            if in_effect_at is None
            else (
                " WHERE enforce_until > ?",
                (sortable(in_effect_at),),
            )
        )

        def op(db: sqlite3.Connection) -> list[Revocation]:
            rows = db.execute(
                f"SELECT {_REVOCATIONS} FROM revocations{where} "  # noqa: S608 - fixed names
                "ORDER BY created_at DESC, revocation_id",
                args,
            ).fetchall()
            return [
                revocation_from_row(dict(zip(REVOCATION_COLUMNS, row, strict=True))) for row in rows
            ]

        result: list[Revocation] = await self._run(op)
        return result

    async def prune(self, before: datetime) -> int:
        cut = sortable(before)

        def op(db: sqlite3.Connection) -> int:
            db.execute("BEGIN IMMEDIATE")
            try:
                leases = db.execute("DELETE FROM leases WHERE expires_at < ?", (cut,)).rowcount
                gone = db.execute(
                    "DELETE FROM revocations WHERE enforce_until < ?", (cut,)
                ).rowcount
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return int(leases + gone)

        result: int = await self._run(op)
        return result
