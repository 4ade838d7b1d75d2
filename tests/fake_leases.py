"""In-memory LeaseLog and RevocationEnforcer for unit tests. The LeaseLog contract suite
(tests/contract/test_lease_log_contract.py) runs against MemoryLeaseLog too, so it behaves as
the real stores do."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime

from credbroker.errors import RevocationTooLarge, StateStoreError
from credbroker.leases import Denials, Enforcement, Lease, LeaseFilter, Revocation


@dataclass
class MemoryLeaseLog:
    leases: dict[str, Lease] = field(default_factory=dict)
    revoked: list[Revocation] = field(default_factory=list)
    fail_writes: int = 0  # the next N add_leases calls raise StateStoreError
    add_calls: int = 0

    async def add_leases(self, leases: list[Lease]) -> int:
        self.add_calls += 1
        if self.fail_writes > 0:
            self.fail_writes -= 1
            raise StateStoreError("state store down (fake)")
        added = 0
        for lease in leases:
            if lease.lease_id not in self.leases:
                self.leases[lease.lease_id] = lease
                added += 1
        return added

    async def find(self, wanted: LeaseFilter) -> list[Lease]:
        found = [x for x in self.leases.values() if wanted.matches(x)]
        found.sort(key=lambda x: x.lease_id)
        found.sort(key=lambda x: x.issued_at, reverse=True)
        return found[: wanted.limit]

    async def mark_revoked(
        self, lease_ids: list[str], *, revocation_id: str, at: datetime
    ) -> list[Lease]:
        for lease_id in lease_ids:
            lease = self.leases.get(lease_id)
            if lease is not None and lease.revoked_at is None:
                self.leases[lease_id] = replace(lease, revoked_at=at, revocation_id=revocation_id)
        return await self.find_revoked(revocation_id)

    async def find_revoked(self, revocation_id: str) -> list[Lease]:
        found = [x for x in self.leases.values() if x.revocation_id == revocation_id]
        found.sort(key=lambda x: x.lease_id)
        found.sort(key=lambda x: x.issued_at, reverse=True)
        return found

    async def revoked_active(self, now: datetime) -> list[str]:
        return sorted(
            x.lease_id
            for x in self.leases.values()
            if x.revoked_at is not None and x.expires_at > now
        )

    async def add_revocation(self, revocation: Revocation) -> None:
        self.revoked.append(revocation)

    async def revocations(self, *, in_effect_at: datetime | None = None) -> list[Revocation]:
        found = [r for r in self.revoked if in_effect_at is None or r.enforce_until > in_effect_at]
        found.sort(key=lambda r: r.revocation_id)
        found.sort(key=lambda r: r.created_at, reverse=True)
        return found

    async def prune(self, before: datetime) -> int:
        gone = [k for k, x in self.leases.items() if x.expires_at < before]
        for key in gone:
            del self.leases[key]
        kept = [r for r in self.revoked if r.enforce_until >= before]
        count = len(gone) + len(self.revoked) - len(kept)
        self.revoked = kept
        return count


@dataclass
class FakeEnforcer:
    """Records each set of denials applied; refuses more than `max_names` session names."""

    kind: str = "fake"
    applied: list[Denials] = field(default_factory=list)
    max_names: int = 1000
    fail: Exception | None = None
    issue_time_gap: str | None = None  # set: plays a store that cannot refuse by issue time

    def check(self, denials: Denials) -> None:
        if len(denials.session_names) > self.max_names:
            raise RevocationTooLarge("too many (fake)")

    async def apply(self, denials: Denials) -> Enforcement:
        if self.fail is not None:
            raise self.fail
        self.check(denials)
        self.applied.append(denials)
        return Enforcement(True, f"fake: {len(denials.session_names)} names")

    async def close(self) -> None:
        return None
