# ruff: noqa: S608 - every name in these queries is a fixed column or a validated schema name
"""Principals, token hashes and freezes in PostgreSQL (ports.PrincipalStore), shared by every
replica: the same pool, schema and migrations as the rotation state (state/postgres.py).

Every change is one transaction that bumps control_generation and calls pg_notify on a
channel named after the schema; PostgreSQL delivers the notification to every listening
session when (and only if) the transaction commits. `watch` LISTENs on a connection of its
own (asyncpg add_listener) and hands each notification to the control plane, which then
reloads; a lost connection only delays a change until the next poll of the generation.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

import asyncpg

from credbroker.domain import ControlState, Freeze, Principal, TokenRecord
from credbroker.errors import NotFound, PrincipalConflict
from credbroker.state.control_rows import (
    FREEZE_COLUMNS,
    PRINCIPAL_COLUMNS,
    TOKEN_COLUMNS,
    freeze_from,
    freeze_row,
    principal_from,
    principal_row,
    token_from,
    token_row,
)
from credbroker.state.postgres import PostgresStateStore, _error

log = logging.getLogger("credbroker.state.control")

_T = TypeVar("_T")
_P = ", ".join(PRINCIPAL_COLUMNS)
_TK = ", ".join(TOKEN_COLUMNS)
_F = ", ".join(FREEZE_COLUMNS)
_DB_ERRORS = (OSError, asyncpg.PostgresError, TimeoutError, asyncpg.InterfaceError)


def _values(columns: tuple[str, ...]) -> str:
    return ", ".join(f"${i}" for i in range(1, len(columns) + 1))


class PostgresControlStore(PostgresStateStore):
    _listener: Any = None
    _notified: Callable[..., None] | None = None
    _lost: Callable[..., None] | None = None

    @property
    def channel(self) -> str:
        """NOTIFY channel of this schema (a name shorter than PostgreSQL's 63-byte limit)."""
        return "credbroker_control_" + hashlib.sha256(self._schema.encode()).hexdigest()[:16]

    def _t(self, table: str) -> str:
        return f"{self._schema}.{table}"

    async def generation(self) -> int:
        row = await self._fetchrow(f"SELECT generation FROM {self._t('control_generation')}")
        return int(row["generation"])

    async def control_state(self) -> ControlState:
        async def op(c: Any) -> ControlState:
            generation = await c.fetchval(f"SELECT generation FROM {self._t('control_generation')}")
            principals = await c.fetch(f"SELECT {_P} FROM {self._t('principals')} ORDER BY id")
            tokens = await c.fetch(
                f"SELECT {_TK} FROM {self._t('principal_tokens')} "
                "WHERE revoked_at IS NULL ORDER BY created_at"
            )
            freezes = await c.fetch(
                f"SELECT {_F} FROM {self._t('freezes')} WHERE lifted_at IS NULL ORDER BY created_at"
            )
            return ControlState(
                int(generation),
                tuple(principal_from(dict(r)) for r in principals),
                tuple(token_from(dict(r)) for r in tokens),
                tuple(freeze_from(dict(r)) for r in freezes),
            )

        # REPEATABLE READ: the four reads see one moment.
        return await self._transaction(op, isolation="repeatable_read", change=False)

    async def principal(self, client_id: str) -> Principal | None:
        row = await self._fetchrow(
            f"SELECT {_P} FROM {self._t('principals')} WHERE id = $1", client_id
        )
        return None if row is None else principal_from(dict(row))

    async def principals(self) -> list[Principal]:
        rows = await self._fetch(f"SELECT {_P} FROM {self._t('principals')} ORDER BY id")
        return [principal_from(dict(r)) for r in rows]

    async def add_principal(self, principal: Principal) -> None:
        row = principal_row(principal)

        async def op(c: Any) -> None:
            inserted = await c.fetchval(
                f"INSERT INTO {self._t('principals')} ({_P}) VALUES ({_values(PRINCIPAL_COLUMNS)}) "
                "ON CONFLICT (id) DO NOTHING RETURNING 1",
                *(row[n] for n in PRINCIPAL_COLUMNS),
            )
            if inserted is None:
                raise PrincipalConflict(
                    f"principal {principal.id} exists already (or was revoked: ids are not reused)",
                    code="principal_exists",
                )

        await self._transaction(op)

    async def update_principal(self, principal: Principal) -> None:
        row = principal_row(principal)
        names = [
            n
            for n in PRINCIPAL_COLUMNS
            if n not in ("id", "created_at", "created_by", "revoked_at")
        ]
        sets = ", ".join(f"{n} = ${i}" for i, n in enumerate(names, start=2))

        async def op(c: Any) -> None:
            done = await c.fetchval(
                f"UPDATE {self._t('principals')} SET {sets} "
                "WHERE id = $1 AND revoked_at IS NULL RETURNING 1",
                principal.id,
                *(row[n] for n in names),
            )
            if done is None:
                raise NotFound(f"no active principal {principal.id}")

        await self._transaction(op)

    async def revoke_principal(self, client_id: str, at: datetime) -> None:
        async def op(c: Any) -> None:
            done = await c.fetchval(
                f"UPDATE {self._t('principals')} SET revoked_at = $2, updated_at = $2 "
                "WHERE id = $1 AND revoked_at IS NULL RETURNING 1",
                client_id,
                at,
            )
            if done is None:
                raise NotFound(f"no active principal {client_id}")
            await c.execute(
                f"UPDATE {self._t('principal_tokens')} SET revoked_at = $2 "
                "WHERE client_id = $1 AND revoked_at IS NULL",
                client_id,
                at,
            )

        await self._transaction(op)

    async def add_token(self, token: TokenRecord, *, max_active: int, now: datetime) -> None:
        row = token_row(token)

        async def op(c: Any) -> None:
            # The principal's row lock serialises token issues across replicas.
            found = await c.fetchval(
                f"SELECT 1 FROM {self._t('principals')} "
                "WHERE id = $1 AND revoked_at IS NULL FOR UPDATE",
                token.client_id,
            )
            if found is None:
                raise NotFound(f"no active principal {token.client_id}")
            held = await c.fetch(
                f"SELECT {_TK} FROM {self._t('principal_tokens')} "
                "WHERE client_id = $1 AND revoked_at IS NULL",
                token.client_id,
            )
            usable = [t.id for t in (token_from(dict(r)) for r in held) if t.usable(now)]
            if len(usable) >= max_active:
                raise PrincipalConflict(
                    f"principal {token.client_id} holds {len(usable)} usable tokens "
                    f"({', '.join(usable)}), the most it may: revoke one first",
                    code="too_many_tokens",
                )
            await c.execute(
                f"INSERT INTO {self._t('principal_tokens')} ({_TK}) VALUES "
                f"({_values(TOKEN_COLUMNS)})",
                *(row[n] for n in TOKEN_COLUMNS),
            )

        await self._transaction(op)

    async def tokens(self, client_id: str) -> list[TokenRecord]:
        rows = await self._fetch(
            f"SELECT {_TK} FROM {self._t('principal_tokens')} "
            "WHERE client_id = $1 ORDER BY created_at, id",
            client_id,
        )
        return [token_from(dict(r)) for r in rows]

    async def revoke_token(self, client_id: str, token_id: str, at: datetime) -> TokenRecord:
        async def op(c: Any) -> TokenRecord:
            row = await c.fetchrow(
                f"UPDATE {self._t('principal_tokens')} SET revoked_at = $3 "
                f"WHERE id = $1 AND client_id = $2 AND revoked_at IS NULL RETURNING {_TK}",
                token_id,
                client_id,
                at,
            )
            if row is None:
                raise NotFound(f"principal {client_id} holds no active token {token_id}")
            return token_from(dict(row))

        return await self._transaction(op)

    async def add_freeze(self, freeze: Freeze) -> None:
        row = freeze_row(freeze)

        async def op(c: Any) -> None:
            await c.execute(
                f"INSERT INTO {self._t('freezes')} ({_F}) VALUES ({_values(FREEZE_COLUMNS)})",
                *(row[n] for n in FREEZE_COLUMNS),
            )

        await self._transaction(op)

    async def lift_freeze(self, freeze_id: str, at: datetime, by: str) -> Freeze:
        async def op(c: Any) -> Freeze:
            row = await c.fetchrow(
                f"UPDATE {self._t('freezes')} SET lifted_at = $2, lifted_by = $3 "
                f"WHERE id = $1 AND lifted_at IS NULL RETURNING {_F}",
                freeze_id,
                at,
                by,
            )
            if row is None:
                raise NotFound(f"no active freeze {freeze_id}")
            return freeze_from(dict(row))

        return await self._transaction(op)

    async def freezes(self, *, active_only: bool) -> list[Freeze]:
        where = "WHERE lifted_at IS NULL " if active_only else ""
        rows = await self._fetch(
            f"SELECT {_F} FROM {self._t('freezes')} {where}ORDER BY created_at, id"
        )
        return [freeze_from(dict(r)) for r in rows]

    async def watch(self, changed: Callable[[], None]) -> None:
        """LISTEN on a pooled connection held until close (asyncpg runs the callback on the
        event loop). Called again, it does nothing while that connection lives, and listens
        anew once it was lost (the control plane calls it at every poll)."""
        if self._listener is not None:
            if not self._listener.is_closed():
                return
            lost_connection, self._listener = self._listener, None
            lost_connection.terminate()
            await self._pool.release(lost_connection)
            changed()  # notifications may have been missed meanwhile
        try:
            connection = await self._pool.acquire()
        except _DB_ERRORS as exc:
            raise _error("listen", exc) from None

        def notified(*_: object) -> None:
            changed()

        def lost(*_: object) -> None:
            log.warning("control plane LISTEN connection lost; listening again at the next poll")

        try:
            await connection.add_listener(self.channel, notified)
            connection.add_termination_listener(lost)
        except _DB_ERRORS as exc:
            await self._pool.release(connection)
            raise _error("listen", exc) from None
        self._listener, self._notified, self._lost = connection, notified, lost

    async def close(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            try:
                if self._notified is not None:
                    await listener.remove_listener(self.channel, self._notified)
                if self._lost is not None:
                    listener.remove_termination_listener(self._lost)
                await self._pool.release(listener)
            except _DB_ERRORS:
                listener.terminate()
                await self._pool.release(listener)
        await super().close()

    # --- helpers --------------------------------------------------------------------------

    async def _fetch(self, query: str, *args: Any) -> list[Any]:
        try:
            return list(await self._pool.fetch(query, *args))
        except _DB_ERRORS as exc:
            raise _error("read", exc) from None

    async def _transaction(
        self,
        op: Callable[[Any], Awaitable[_T]],
        *,
        isolation: str = "read_committed",
        change: bool = True,
    ) -> _T:
        """Run `op` in one transaction; a change also bumps the generation and notifies."""
        try:
            async with self._pool.acquire() as c, c.transaction(isolation=isolation):
                result = await op(c)
                if change:
                    generation = await c.fetchval(
                        f"UPDATE {self._t('control_generation')} "
                        "SET generation = generation + 1 WHERE id = 1 RETURNING generation"
                    )
                    await c.execute("SELECT pg_notify($1, $2)", self.channel, str(generation))
                return result
        except _DB_ERRORS as exc:
            raise _error("write" if change else "read", exc) from None
