"""The daily compliance run inside `credbroker serve`: an apscheduler cron job, and one run per
day across replicas. Each replica's job takes the state store's lock "compliance-daily" (never
waits: a replica that finds it held skips), then reads the job's record: a run already started
today (UTC) by any replica means nothing to do. The record is a RotationRecord named
"compliance-daily" in the same store (started_at: the last run's start; last_success_at: the
last run that passed; last_error: what failed), so no new table is needed."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger

from credbroker.compliance.model import ComplianceResult
from credbroker.domain import RotationRecord
from credbroker.errors import CredbrokerError, RotationBusy
from credbroker.ports import StateStore

log = logging.getLogger("credbroker.compliance")

JOB = "compliance-daily"


class DailyCompliance:
    def __init__(
        self,
        run: Callable[[], Awaitable[ComplianceResult]],
        publish: Callable[[ComplianceResult], Awaitable[None]],
        state: Callable[[], Awaitable[StateStore]],
        *,
        at: str = "02:00",
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._run, self._publish, self._state = run, publish, state
        self._hour, self._minute = (int(x) for x in at.split(":"))
        self._clock = clock
        self._scheduler = AsyncIOScheduler(timezone=UTC)

    async def start(self) -> None:
        self._scheduler.start()
        self._scheduler.add_job(
            self.once,
            CronTrigger(hour=self._hour, minute=self._minute, timezone=UTC),
            id=JOB,
            coalesce=True,
            max_instances=1,
            misfire_grace_time=3600,
        )

    async def close(self) -> None:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)

    async def once(self) -> ComplianceResult | None:
        """Run today's check unless a replica already did; None if skipped."""
        store = await self._state()
        try:
            async with store.lock(JOB):
                now = self._clock()
                record = await store.load(JOB) or RotationRecord(credential=JOB)
                if record.started_at is not None and record.started_at.date() == now.date():
                    log.info("compliance: today's run started at %s already", record.started_at)
                    return None
                await store.save(replace(record, started_at=now, updated_at=now))
                result = await self._run()
                await self._publish(result)
                done = self._clock()
                await store.save(
                    replace(
                        record,
                        started_at=now,
                        finished_at=done,
                        last_success_at=done if result.passed else record.last_success_at,
                        last_error=None
                        if result.passed
                        else "failed: " + ", ".join(result.failed()),
                        updated_at=done,
                    )
                )
                log.log(
                    logging.INFO if result.passed else logging.ERROR,
                    "compliance check: %s%s",
                    "pass" if result.passed else "FAIL ",
                    "" if result.passed else ", ".join(result.failed()),
                )
                return result
        except RotationBusy:
            log.info("compliance: another replica is running today's check")
            return None
        except CredbrokerError as exc:
            log.error("compliance: the daily run failed: %s", exc.message)
            return None
        finally:
            await store.close()
