"""Runs rotations inside `credbroker serve`: apscheduler's AsyncIOScheduler, due times from the
state store.

Each managed credential has one date job at the due time its record holds (the next scheduled
rotation, the end of a grace period, or a retry after a failure). After every run the job is
set again from the new record. A resync job re-reads every record now and then, so a run made
by the CLI or another replica, or a changed schedule, moves the job, and the rotation gauges
(failure streak, last success, key age, next due) are set from the records, not from this
process's runs. Nothing is kept only in memory: a restart or a failover schedules from the
records, and neither skips nor repeats.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

from credbroker.domain import RotationRecord
from credbroker.errors import CredbrokerError, RotationBusy
from credbroker.rotation.rotate import Rotator

log = logging.getLogger("credbroker.rotation.scheduler")

_RESYNC_JOB = "credbroker-rotation-resync"
_BUSY_RETRY = 5.0  # seconds until a run that found the lock held looks again


class RotationScheduler:
    def __init__(
        self,
        rotator: Rotator,
        *,
        resync_seconds: float = 60.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._rotator = rotator
        self._resync_seconds = resync_seconds
        self._clock = clock
        self._scheduler = AsyncIOScheduler(timezone=UTC)
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._scheduler.start()
        self._rotator.subscribe(lambda record: self._schedule(record.credential, record))
        await self.sync()
        self._scheduler.add_job(
            self._guarded(self.sync),
            IntervalTrigger(seconds=self._resync_seconds, timezone=UTC),
            id=_RESYNC_JOB,
            coalesce=True,
            max_instances=1,
            misfire_grace_time=None,
        )

    async def close(self) -> None:
        """Stop scheduling; a run in progress is cancelled (the next start repairs it)."""
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def next_run(self, name: str) -> datetime | None:
        job = self._scheduler.get_job(_job_id(name))
        return None if job is None else job.next_run_time

    async def sync(self) -> None:
        """Schedule every credential from its record (and notice read-only stores' keys); the
        rotation gauges follow the stored records, whoever wrote them."""
        for name in self._rotator.credentials:
            try:
                if not self._rotator.writable:
                    outcome = await self._rotator.run(name)  # notices a key its owner rotated
                    self._rotator.observe(outcome.record)
                    continue
                record = await self._rotator.enroll(name)
                self._rotator.observe(record)
            except RotationBusy:
                continue
            except CredbrokerError as exc:
                log.error("rotation %s: cannot read its state: %s", name, exc.message)
                continue
            self._schedule(name, record)

    def _schedule(self, name: str, record: RotationRecord) -> None:
        if not self._scheduler.running:
            return
        spec = self._rotator.credential(name)
        job_id = _job_id(name)
        if not (spec.enabled or record.phase.in_progress):
            if self._scheduler.get_job(job_id) is not None:
                self._scheduler.remove_job(job_id)
            return
        now = self._clock()
        due = max(record.next_due_at or now, now)
        job = self._scheduler.get_job(job_id)
        if job is not None and job.next_run_time == due:
            return
        self._add(name, due)

    def _add(self, name: str, due: datetime) -> None:
        self._scheduler.add_job(
            self._guarded(self._tick),
            DateTrigger(run_date=due, timezone=UTC),
            args=[name],
            id=_job_id(name),
            replace_existing=True,
            coalesce=True,
            max_instances=1,
            misfire_grace_time=None,  # late (a busy loop, a suspended VM) still runs, once
        )
        log.debug("rotation %s: next run at %s", name, due.isoformat())

    async def _tick(self, name: str) -> None:
        """One due run; the run's end re-times the job (through the Rotator's listener)."""
        try:
            await self._rotator.run(name)
        except RotationBusy:
            # Someone else's run (the CLI, another replica) holds the lock: look again soon;
            # if that run finishes the rotation, this one finds nothing due.
            retry = self._clock() + timedelta(seconds=min(self._resync_seconds, _BUSY_RETRY))
            log.info("rotation %s: another run holds the lock; trying again at %s", name, retry)
            self._add(name, retry)
        except CredbrokerError as exc:
            log.error("rotation %s: run not started: %s", name, exc.message)

    def _guarded(self, job: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
        """Track the job's task, so close() can cancel it and wait for it to unwind."""

        async def run(*args: str) -> None:
            task = asyncio.current_task()
            assert task is not None
            self._tasks.add(task)
            try:
                await job(*args)
            finally:
                self._tasks.discard(task)

        run.__name__ = getattr(job, "__name__", "job")
        return run


def _job_id(name: str) -> str:
    return f"credbroker-rotate:{name}"
