# ruff: noqa: S608 - every name in these queries is a fixed column or a validated schema name
"""Principals, token hashes and freezes in the SQLite state file (ports.PrincipalStore).

The same file, migrations and worker thread as the rotation state (state/sqlite.py). Every
change runs in one BEGIN IMMEDIATE transaction that also bumps control_generation, which each
broker on this host polls. SQLite has no notifications: `watch` does nothing.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from credbroker.domain import ControlState, Freeze, Principal, TokenRecord
from credbroker.errors import NotFound, PrincipalConflict
from credbroker.state.control_rows import (
    FREEZE_COLUMNS,
    PRINCIPAL_COLUMNS,
    TOKEN_COLUMNS,
    as_text,
    freeze_from,
    freeze_row,
    principal_from,
    principal_row,
    token_from,
    token_row,
)
from credbroker.state.sqlite import SqliteStateStore

_T = TypeVar("_T")
_P = ", ".join(PRINCIPAL_COLUMNS)
_TK = ", ".join(TOKEN_COLUMNS)
_F = ", ".join(FREEZE_COLUMNS)


def _rows(
    db: sqlite3.Connection, columns: tuple[str, ...], query: str, *args: Any
) -> list[dict[str, Any]]:
    return [dict(zip(columns, row, strict=True)) for row in db.execute(query, args).fetchall()]


def _marks(columns: tuple[str, ...]) -> str:
    return ", ".join("?" for _ in columns)


def _change(op: Callable[[sqlite3.Connection], _T]) -> Callable[[sqlite3.Connection], _T]:
    """Run `op` and bump the generation in one immediate transaction."""

    def transaction(db: sqlite3.Connection) -> _T:
        db.execute("BEGIN IMMEDIATE")
        try:
            result = op(db)
            db.execute("UPDATE control_generation SET generation = generation + 1 WHERE id = 1")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        return result

    return transaction


class SqliteControlStore(SqliteStateStore):
    async def generation(self) -> int:
        def op(db: sqlite3.Connection) -> int:
            return int(db.execute("SELECT generation FROM control_generation").fetchone()[0])

        return await self._run(op)

    async def control_state(self) -> ControlState:
        def op(db: sqlite3.Connection) -> ControlState:
            db.execute("BEGIN")  # one consistent read
            try:
                generation = int(
                    db.execute("SELECT generation FROM control_generation").fetchone()[0]
                )
                principals = _rows(
                    db, PRINCIPAL_COLUMNS, f"SELECT {_P} FROM principals ORDER BY id"
                )
                tokens = _rows(
                    db,
                    TOKEN_COLUMNS,
                    f"SELECT {_TK} FROM principal_tokens WHERE revoked_at IS "
                    "NULL ORDER BY created_at",
                )
                freezes = _rows(
                    db,
                    FREEZE_COLUMNS,
                    f"SELECT {_F} FROM freezes WHERE lifted_at IS NULL ORDER BY created_at",
                )
            finally:
                db.execute("COMMIT")
            return ControlState(
                generation,
                tuple(principal_from(r) for r in principals),
                tuple(token_from(r) for r in tokens),
                tuple(freeze_from(r) for r in freezes),
            )

        return await self._run(op)

    async def principal(self, client_id: str) -> Principal | None:
        def op(db: sqlite3.Connection) -> Principal | None:
            rows = _rows(
                db, PRINCIPAL_COLUMNS, f"SELECT {_P} FROM principals WHERE id = ?", client_id
            )
            return principal_from(rows[0]) if rows else None

        return await self._run(op)

    async def principals(self) -> list[Principal]:
        def op(db: sqlite3.Connection) -> list[Principal]:
            return [
                principal_from(r)
                for r in _rows(db, PRINCIPAL_COLUMNS, f"SELECT {_P} FROM principals ORDER BY id")
            ]

        return await self._run(op)

    async def add_principal(self, principal: Principal) -> None:
        row = as_text(principal_row(principal))

        def op(db: sqlite3.Connection) -> None:
            if db.execute("SELECT 1 FROM principals WHERE id = ?", (principal.id,)).fetchone():
                raise PrincipalConflict(
                    f"principal {principal.id} exists already (or was revoked: ids are not reused)",
                    code="principal_exists",
                )
            db.execute(
                f"INSERT INTO principals ({_P}) VALUES ({_marks(PRINCIPAL_COLUMNS)})",
                tuple(row[name] for name in PRINCIPAL_COLUMNS),
            )

        await self._run(_change(op))

    async def update_principal(self, principal: Principal) -> None:
        row = as_text(principal_row(principal))
        names = [
            n
            for n in PRINCIPAL_COLUMNS
            if n not in ("id", "created_at", "created_by", "revoked_at")
        ]

        def op(db: sqlite3.Connection) -> None:
            changed = db.execute(
                f"UPDATE principals SET {', '.join(f'{n} = ?' for n in names)} "
                "WHERE id = ? AND revoked_at IS NULL",
                (*(row[n] for n in names), principal.id),
            ).rowcount
            if not changed:
                raise NotFound(f"no active principal {principal.id}")

        await self._run(_change(op))

    async def revoke_principal(self, client_id: str, at: datetime) -> None:
        when = at.isoformat()

        def op(db: sqlite3.Connection) -> None:
            changed = db.execute(
                "UPDATE principals SET revoked_at = ?, updated_at = ? "
                "WHERE id = ? AND revoked_at IS NULL",
                (when, when, client_id),
            ).rowcount
            if not changed:
                raise NotFound(f"no active principal {client_id}")
            db.execute(
                "UPDATE principal_tokens SET revoked_at = ? WHERE client_id = "
                "? AND revoked_at IS NULL",
                (when, client_id),
            )

        await self._run(_change(op))

    async def add_token(self, token: TokenRecord, *, max_active: int, now: datetime) -> None:
        row = as_text(token_row(token))

        def op(db: sqlite3.Connection) -> None:
            if not db.execute(
                "SELECT 1 FROM principals WHERE id = ? AND revoked_at IS NULL", (token.client_id,)
            ).fetchone():
                raise NotFound(f"no active principal {token.client_id}")
            held = [
                token_from(r)
                for r in _rows(
                    db,
                    TOKEN_COLUMNS,
                    f"SELECT {_TK} FROM principal_tokens WHERE client_id = ? "
                    "AND revoked_at IS NULL",
                    token.client_id,
                )
            ]
            usable = [t.id for t in held if t.usable(now)]
            if len(usable) >= max_active:
                raise PrincipalConflict(
                    f"principal {token.client_id} holds {len(usable)} usable tokens "
                    f"({', '.join(usable)}), the most it may: revoke one first",
                    code="too_many_tokens",
                )
            db.execute(
                f"INSERT INTO principal_tokens ({_TK}) VALUES ({_marks(TOKEN_COLUMNS)})",
                tuple(row[name] for name in TOKEN_COLUMNS),
            )

        await self._run(_change(op))

    async def tokens(self, client_id: str) -> list[TokenRecord]:
        def op(db: sqlite3.Connection) -> list[TokenRecord]:
            rows = _rows(
                db,
                TOKEN_COLUMNS,
                f"SELECT {_TK} FROM principal_tokens WHERE client_id = ? ORDER BY created_at, id",
                client_id,
            )
            return [token_from(r) for r in rows]

        return await self._run(op)

    async def revoke_token(self, client_id: str, token_id: str, at: datetime) -> TokenRecord:
        def op(db: sqlite3.Connection) -> TokenRecord:
            changed = db.execute(
                "UPDATE principal_tokens SET revoked_at = ? "
                "WHERE id = ? AND client_id = ? AND revoked_at IS NULL",
                (at.isoformat(), token_id, client_id),
            ).rowcount
            if not changed:
                raise NotFound(f"principal {client_id} holds no active token {token_id}")
            rows = _rows(
                db, TOKEN_COLUMNS, f"SELECT {_TK} FROM principal_tokens WHERE id = ?", token_id
            )
            return token_from(rows[0])

        return await self._run(_change(op))

    async def add_freeze(self, freeze: Freeze) -> None:
        row = as_text(freeze_row(freeze))

        def op(db: sqlite3.Connection) -> None:
            db.execute(
                f"INSERT INTO freezes ({_F}) VALUES ({_marks(FREEZE_COLUMNS)})",
                tuple(row[name] for name in FREEZE_COLUMNS),
            )

        await self._run(_change(op))

    async def lift_freeze(self, freeze_id: str, at: datetime, by: str) -> Freeze:
        def op(db: sqlite3.Connection) -> Freeze:
            changed = db.execute(
                "UPDATE freezes SET lifted_at = ?, lifted_by = ? WHERE id = ? "
                "AND lifted_at IS NULL",
                (at.isoformat(), by, freeze_id),
            ).rowcount
            if not changed:
                raise NotFound(f"no active freeze {freeze_id}")
            return freeze_from(
                _rows(db, FREEZE_COLUMNS, f"SELECT {_F} FROM freezes WHERE id = ?", freeze_id)[0]
            )

        return await self._run(_change(op))

    async def freezes(self, *, active_only: bool) -> list[Freeze]:
        where = "WHERE lifted_at IS NULL " if active_only else ""

        def op(db: sqlite3.Connection) -> list[Freeze]:
            return [
                freeze_from(r)
                for r in _rows(
                    db, FREEZE_COLUMNS, f"SELECT {_F} FROM freezes {where}ORDER BY created_at, id"
                )
            ]

        return await self._run(op)

    async def watch(self, changed: Callable[[], None]) -> None:
        return None  # no notifications in SQLite: the control plane polls the generation
