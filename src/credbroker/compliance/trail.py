"""Facts read from audit records: which space a grant was for, when each client last used its
access. Pure functions over records; the records come through the AuditTrail port."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from credbroker.domain import SpaceTarget
from credbroker.ports import AuditTrail

GRANTS = ("vend", "presign")


def record_time(record: Mapping[str, Any]) -> datetime | None:
    value = record.get("ts")
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def space_of(spaces: Mapping[str, SpaceTarget], record: Mapping[str, Any]) -> str | None:
    """The space a record names, or whose bucket and prefix hold its prefix (the longest)."""
    named = record.get("space")
    if isinstance(named, str) and named:
        return named
    bucket, prefix = record.get("bucket"), record.get("prefix")
    if not isinstance(bucket, str) or not isinstance(prefix, str):
        return None
    best: tuple[int, str] | None = None
    for key, target in spaces.items():
        fits = target.bucket == bucket and prefix.startswith(target.prefix)
        if fits and (best is None or len(target.prefix) > best[0]):
            best = (len(target.prefix), key)
    return None if best is None else best[1]


def last_use(
    records: Iterable[Mapping[str, Any]],
) -> dict[str, tuple[datetime | None, datetime | None]]:
    found: dict[str, tuple[datetime | None, datetime | None]] = {}
    for record in records:
        if record.get("event") not in GRANTS or not isinstance(record.get("client"), str):
            continue
        moment = record_time(record)
        if moment is None:
            continue
        any_use, write_use = found.get(str(record["client"]), (None, None))
        any_use = moment if any_use is None or moment > any_use else any_use
        if record.get("access") == "write":
            write_use = moment if write_use is None or moment > write_use else write_use
        found[str(record["client"])] = (any_use, write_use)
    return found


class TrailUsage:
    """UsageSource from the audit trail: grants are `vend` and `presign` records. The lease
    table implements the same port (compliance/usage.py)."""

    def __init__(self, trail: AuditTrail) -> None:
        self._trail = trail

    async def last_use(
        self, since: datetime, until: datetime, clients: Collection[str]
    ) -> dict[str, tuple[datetime | None, datetime | None]]:
        wanted = set(clients)
        found = last_use(await self._trail.records(since, until))
        return {client: uses for client, uses in found.items() if client in wanted}
