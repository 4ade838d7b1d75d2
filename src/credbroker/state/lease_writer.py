"""The batched, asynchronous lease writer (ports.LeaseSink) in front of the state store.

`issued()` only appends to a list: the vend path never waits on the database. A background
task writes the batch every `flush_seconds` (100 ms by default), or at once when `batch_size`
leases wait. A failed write keeps the batch and tries again at the next tick; the buffer is
bounded (`max_pending`): beyond it the oldest leases are dropped from memory, logged and
counted, and come back from the audit file at the next start.

No lease is lost on a crash: the vend's audit record is written synchronously before the
answer and carries every lease field, and `reconcile()` (run at start) adds every unexpired
lease of the audit file that the table misses. `close()` flushes what is left (graceful
shutdown).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import replace

from credbroker.audit import context as audit_context
from credbroker.errors import CredbrokerError
from credbroker.leases import Lease
from credbroker.ports import LeaseLog

log = logging.getLogger("credbroker.leases.writer")


class BatchedLeaseWriter:
    def __init__(
        self,
        leases: LeaseLog,
        *,
        flush_seconds: float = 0.1,
        batch_size: int = 256,
        max_pending: int = 100_000,
        on_dropped: Callable[[int], None] | None = None,
    ) -> None:
        self._leases = leases
        self._flush_seconds = flush_seconds
        self._batch_size = batch_size
        self._max_pending = max_pending
        self._on_dropped = on_dropped
        self._pending: list[Lease] = []
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self.written = 0
        self.dropped = 0

    # --- the LeaseSink port (the hot path) --------------------------------------------------

    def issued(self, lease: Lease) -> None:
        if lease.source is None:
            source = audit_context.SOURCE.get()
            if source is not None:
                lease = replace(lease, source=source)
        self._pending.append(lease)
        if len(self._pending) > self._max_pending:
            over = len(self._pending) - self._max_pending
            del self._pending[:over]
            self.dropped += over
            log.error("lease buffer full: %d leases dropped (the audit file keeps them)", over)
            if self._on_dropped is not None:
                self._on_dropped(over)
        if len(self._pending) >= self._batch_size:
            self._wake.set()

    # --- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="credbroker-lease-writer")

    async def flush(self) -> None:
        """Write every pending lease now; StateStoreError if the store refuses (they stay)."""
        async with self._lock:
            while self._pending:
                batch = self._pending[: self._batch_size * 4]
                await self._leases.add_leases(batch)
                del self._pending[: len(batch)]
                self.written += len(batch)

    async def reconcile(self, audited: list[Lease]) -> int:
        """Add the audit file's leases that the table misses; the number added."""
        added = 0
        for start in range(0, len(audited), 500):
            added += await self._leases.add_leases(audited[start : start + 500])
        if added:
            log.warning("%d leases restored from the audit file (written there, not stored)", added)
        return added

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            # Never cancelled in the middle of a write (a database client cancelled mid-query
            # can hang its pool): the loop ends after the batch it is writing.
            self._stop.set()
            self._wake.set()
            await task
        try:
            await self.flush()
        except CredbrokerError as exc:
            log.error(
                "%d leases not stored at shutdown (%s): the audit file keeps them, the next "
                "start restores them",
                len(self._pending),
                exc.message,
            )

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def _loop(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._flush_seconds)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                await self.flush()
            except CredbrokerError as exc:
                log.warning("lease batch not written (%s): retried", exc.message)
