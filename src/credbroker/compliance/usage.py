"""When each client last used its access, from the lease table (every key and URL handed out
is a lease row: client, space, access, issued time), and the latest of several sources.

The lease table outlives the audit file's rotation; the audit trail outlives the lease table's
pruning (leases.keep_seconds after expiry). The check asks both and keeps the later time, so a
use is forgotten only when both have lost it (docs/audit.md "Usage")."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime

from credbroker.leases import LeaseFilter
from credbroker.ports import LeaseLog, UsageSource

Uses = dict[str, tuple[datetime | None, datetime | None]]


class LeaseUsage:
    """UsageSource over ports.LeaseLog: two indexed reads per client (its newest lease, and
    its newest write lease, issued before `until`), kept when issued at or after `since`."""

    def __init__(self, leases: LeaseLog) -> None:
        self._leases = leases

    async def last_use(self, since: datetime, until: datetime, clients: Collection[str]) -> Uses:
        found: Uses = {}
        for client in sorted(set(clients)):
            newest = [
                await self._leases.find(
                    LeaseFilter(client=client, access=access, issued_before=until, limit=1)
                )
                for access in (None, "write")
            ]
            any_use, write_use = (
                found_[0].issued_at if found_ and found_[0].issued_at >= since else None
                for found_ in newest
            )
            if any_use is not None or write_use is not None:
                found[client] = (any_use, write_use)
        return found


class LatestUsage:
    """UsageSource: the latest time any of `sources` knows, per client and kind of use."""

    def __init__(self, sources: Sequence[UsageSource]) -> None:
        self._sources = sources

    async def last_use(self, since: datetime, until: datetime, clients: Collection[str]) -> Uses:
        found: Uses = {}
        for source in self._sources:
            for client, (any_use, write_use) in (
                await source.last_use(since, until, clients)
            ).items():
                was_any, was_write = found.get(client, (None, None))
                found[client] = (_later(was_any, any_use), _later(was_write, write_use))
        return found


def _later(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None or b is None:
        return a or b
    return max(a, b)
