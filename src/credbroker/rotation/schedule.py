"""When a managed credential is due: a fixed interval or a crontab line, always in UTC.

The fingerprint names the schedule itself, so a record written under another schedule is
noticed and its next due time recomputed: a changed schedule takes effect at the next start
(or resync) instead of waiting out the old one.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from apscheduler.triggers.cron import CronTrigger

_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DOW_NUMBER = re.compile(r"\d+")


@dataclass(frozen=True, slots=True)
class Schedule:
    interval_seconds: int | None = None
    cron: str | None = None

    def __post_init__(self) -> None:
        if (self.interval_seconds is None) == (self.cron is None):
            raise ValueError("give exactly one of interval_seconds or cron")
        if self.interval_seconds is not None and self.interval_seconds < 1:
            raise ValueError("interval_seconds must be at least 1")
        if self.cron is not None:
            _trigger(self.cron)  # raises ValueError on a bad line

    def next_after(self, moment: datetime) -> datetime:
        """The first due time strictly after `moment`."""
        if self.interval_seconds is not None:
            return moment + timedelta(seconds=self.interval_seconds)
        assert self.cron is not None
        fire: datetime | None = _trigger(self.cron).get_next_fire_time(
            None, moment + timedelta(seconds=1)
        )
        if fire is None:  # a crontab line always fires again; keep mypy and readers honest
            raise ValueError(f"cron {self.cron!r} never fires again")
        return fire.astimezone(UTC)

    @property
    def fingerprint(self) -> str:
        spec = f"interval:{self.interval_seconds}" if self.cron is None else f"cron:{self.cron}"
        return hashlib.sha256(spec.encode()).hexdigest()[:16]

    def describe(self) -> str:
        if self.interval_seconds is not None:
            return f"every {self.interval_seconds} s"
        return f"cron '{self.cron}' (UTC)"


def _trigger(line: str) -> CronTrigger:
    fields = line.split()
    if len(fields) != 5:
        raise ValueError(f"cron needs 5 fields (minute hour day month weekday), got {line!r}")
    # APScheduler 3 reads weekday numbers as 0 = Monday (its own docs call it a historical
    # mistake, fixed only in 4.x); crontab means 0 = Sunday. Numbers become names here, so
    # "0 3 * * 1" fires on Mondays as any crontab reader expects.
    if "/" in fields[4]:
        # Steps count from Monday in APScheduler and from Sunday in crontab: refuse, not guess.
        raise ValueError(f"cron {line!r}: no steps in the weekday field; list the days instead")
    fields[4] = _DOW_NUMBER.sub(lambda m: _day_name(m.group(0)), fields[4])
    try:
        return CronTrigger(
            minute=fields[0],
            hour=fields[1],
            day=fields[2],
            month=fields[3],
            day_of_week=fields[4],
            timezone=UTC,
        )
    except ValueError as exc:
        raise ValueError(f"invalid cron {line!r}: {exc}") from None


def _day_name(number: str) -> str:
    value = int(number)
    if value > 7:
        raise ValueError(f"cron weekday {value} is out of range 0-7")
    return _DAY_NAMES[value]
