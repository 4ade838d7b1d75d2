"""Rotation state in one SQLite file (the zero set-up default), with a per-credential lock file.

sqlite3 is blocking, so every query runs on this store's own single worker thread (one
connection, used by that thread only) and never on the event loop. WAL mode and a busy timeout
let `credbroker rotate` and `credbroker serve` share the file.

The lock is an exclusive, non-blocking flock on `<file>.locks/<credential>.lock`: it covers
every process on this host (the server, the CLI, a second server by mistake), and the kernel
drops it when its holder dies, however it dies. Several hosts need the PostgreSQL store.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import re
import sqlite3
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Self, TypeVar

from credbroker.domain import RotationRecord
from credbroker.errors import RotationBusy, StateStoreError
from credbroker.state.breakglass import SQLITE_TABLE as BREAK_GLASS_TABLE
from credbroker.state.breakglass import SqliteBreakGlassRequests
from credbroker.state.migrations import Migration, checked
from credbroker.state.records import COLUMNS, TIME_COLUMNS, from_row, to_row
from credbroker.state.sqlite_leases import LEASE_MIGRATION_SQL, SqliteLeases

_T = TypeVar("_T")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")

# Frozen text (state/migrations.py): applied in order, each once; PRAGMA user_version records
# how many ran. Never edit one that shipped: add the next. Times are ISO 8601 text.
MIGRATIONS: tuple[Migration, ...] = checked(
    (
        Migration(
            1,
            "rotation_state: one row per managed credential",
            (
                (
                    "CREATE TABLE rotation_state ("
                    "credential TEXT PRIMARY KEY, "
                    "phase TEXT, "
                    "current_key_id TEXT, "
                    "current_key_since TEXT, "
                    "old_key_id TEXT, "
                    "new_key_id TEXT, "
                    "old_version INTEGER, "
                    "new_version INTEGER, "
                    "started_at TEXT, "
                    "stored_at TEXT, "
                    "finished_at TEXT, "
                    "last_success_at TEXT, "
                    "last_error TEXT, "
                    "attempts INTEGER, "
                    "next_due_at TEXT, "
                    "schedule_fingerprint TEXT, "
                    "updated_at TEXT"
                    ")"
                ),
            ),
        ),
        Migration(
            2,
            "secret_versions_seen: the highest version seen of each secret, per store and path",
            (
                (
                    "CREATE TABLE secret_versions_seen ("
                    "store TEXT NOT NULL, "
                    "path TEXT NOT NULL, "
                    "highest_version INTEGER NOT NULL, "
                    "updated_at TEXT NOT NULL, "
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
                    "CREATE TABLE principals ("
                    "id TEXT PRIMARY KEY, "
                    "roles TEXT NOT NULL, "
                    "spaces TEXT NOT NULL, "
                    "max_access TEXT NOT NULL, "
                    "max_ttl_seconds INTEGER NOT NULL, "
                    "rate_per_second REAL, "
                    "burst INTEGER, "
                    "created_at TEXT NOT NULL, "
                    "updated_at TEXT NOT NULL, "
                    "revoked_at TEXT, "
                    "created_by TEXT"
                    ")"
                ),
                (
                    "CREATE TABLE principal_tokens ("
                    "id TEXT PRIMARY KEY, "
                    "client_id TEXT NOT NULL REFERENCES principals (id), "
                    "sha256 TEXT NOT NULL UNIQUE, "
                    "created_at TEXT NOT NULL, "
                    "expires_at TEXT, "
                    "revoked_at TEXT, "
                    "created_by TEXT"
                    ")"
                ),
                "CREATE INDEX principal_tokens_client ON principal_tokens (client_id)",
                (
                    "CREATE TABLE freezes ("
                    "id TEXT PRIMARY KEY, "
                    "space TEXT, "
                    "client_id TEXT, "
                    "reason TEXT NOT NULL, "
                    "created_at TEXT NOT NULL, "
                    "created_by TEXT, "
                    "lifted_at TEXT, "
                    "lifted_by TEXT"
                    ")"
                ),
                (
                    "CREATE TABLE control_generation ("
                    "id INTEGER PRIMARY KEY CHECK (id = 1), "
                    "generation INTEGER NOT NULL"
                    ")"
                ),
                "INSERT INTO control_generation (id, generation) VALUES (1, 0)",
            ),
        ),
        Migration(5, "leases and revocations", LEASE_MIGRATION_SQL),
    )
)


class SqliteStateStore(SqliteLeases, SqliteBreakGlassRequests):
    kind = "sqlite"

    def __init__(self, path: Path) -> None:
        self._path = path
        self._locks = path.with_name(path.name + ".locks")
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="credbroker-sqlite")
        self._connection: sqlite3.Connection | None = None
        self._closed = False

    @classmethod
    async def open(cls, path: Path) -> Self:
        """Create the file (and its folder) if needed and apply pending migrations."""
        store = cls(path)
        try:
            await store._run(store._migrate)
        except BaseException:
            await store.close()
            raise
        return store

    # --- the StateStore protocol ----------------------------------------------------------

    async def load(self, credential: str) -> RotationRecord | None:
        def op(db: sqlite3.Connection) -> RotationRecord | None:
            row = db.execute(
                f"SELECT {', '.join(COLUMNS)} FROM rotation_state WHERE credential = ?",  # noqa: S608 - fixed column names
                (credential,),
            ).fetchone()
            return None if row is None else from_row(dict(zip(COLUMNS, row, strict=True)))

        return await self._run(op)

    async def save(self, record: RotationRecord) -> None:
        row = to_row(record)
        for name in TIME_COLUMNS:
            row[name] = row[name].isoformat() if row[name] is not None else None

        def op(db: sqlite3.Connection) -> None:
            db.execute(  # one statement in autocommit mode: atomic
                f"INSERT OR REPLACE INTO rotation_state ({', '.join(COLUMNS)}) "  # noqa: S608 - fixed column names
                f"VALUES ({', '.join('?' for _ in COLUMNS)})",
                tuple(row[name] for name in COLUMNS),
            )

        await self._run(op)

    async def all(self) -> list[RotationRecord]:
        def op(db: sqlite3.Connection) -> list[RotationRecord]:
            rows = db.execute(
                f"SELECT {', '.join(COLUMNS)} FROM rotation_state ORDER BY credential"  # noqa: S608 - fixed column names
            ).fetchall()
            return [from_row(dict(zip(COLUMNS, row, strict=True))) for row in rows]

        return await self._run(op)

    # --- the VersionWatermark protocol ----------------------------------------------------

    async def remember_version(self, store: str, path: str, version: int) -> int:
        now = datetime.now(UTC).isoformat()

        def op(db: sqlite3.Connection) -> int:
            if version > 0:
                db.execute(  # one statement in autocommit mode: atomic, never lowers it
                    "INSERT INTO secret_versions_seen (store, path, highest_version, updated_at) "
                    "VALUES (?, ?, ?, ?) ON CONFLICT (store, path) DO UPDATE SET "
                    "highest_version = excluded.highest_version, updated_at = excluded.updated_at "
                    "WHERE excluded.highest_version > secret_versions_seen.highest_version",
                    (store, path, version, now),
                )
            row = db.execute(
                "SELECT highest_version FROM secret_versions_seen WHERE store = ? AND path = ?",
                (store, path),
            ).fetchone()
            return 0 if row is None else int(row[0])

        return await self._run(op)

    @asynccontextmanager
    async def lock(self, credential: str) -> AsyncIterator[None]:
        if not _NAME.fullmatch(credential):
            raise StateStoreError(f"invalid credential name {credential!r}")
        self._locks.mkdir(parents=True, exist_ok=True)
        # A local file and a non-blocking flock: two syscalls, nothing here waits.
        fd = os.open(self._locks / f"{credential}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RotationBusy(f"a rotation of {credential} is already running") from None
        try:
            yield
        finally:
            os.close(fd)  # closing the last descriptor releases the flock

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True

        def shutdown() -> None:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, shutdown)
        self._executor.shutdown(wait=True)

    # --- the worker thread ----------------------------------------------------------------

    async def _run(self, op: Callable[[sqlite3.Connection], _T]) -> _T:
        if self._closed:
            raise StateStoreError("the SQLite state store is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._call, op)

    def _call(self, op: Callable[[sqlite3.Connection], _T]) -> _T:
        try:
            return op(self._db())
        except sqlite3.Error as exc:
            error = StateStoreError(f"SQLite state store {self._path}: {type(exc).__name__}")
        except OSError as exc:
            error = StateStoreError(f"SQLite state store {self._path}: {exc.strerror}")
        raise error

    def _db(self) -> sqlite3.Connection:
        if self._connection is None:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            # Created 0600 (SQLite gives its -wal and -shm files the same mode): key ids and
            # rotation history are nobody else's business. Only when it does not exist yet:
            # closing any descriptor of the file drops every POSIX lock this process holds on
            # it, those of another connection to it in this process (the embedded store's
            # watermark) included, and that connection then kept reading an old snapshot.
            with contextlib.suppress(FileExistsError):
                os.close(os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
            db = sqlite3.connect(self._path, timeout=5.0, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA busy_timeout=5000")
            self._connection = db
        return self._connection

    def _migrate(self, db: sqlite3.Connection) -> None:
        db.execute("BEGIN IMMEDIATE")  # one migrating process at a time
        try:
            applied = int(db.execute("PRAGMA user_version").fetchone()[0])
            for migration in MIGRATIONS[applied:]:
                for statement in migration.statements:
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {migration.version:d}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
