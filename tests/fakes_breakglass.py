"""Fakes of the break-glass ports (breakglass.py): the request store, the escrow, the notifier
and the metrics. Each behaves as the real adapter does as far as the use case can tell."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from credbroker.domain import AccessKey, BreakGlassRequest
from credbroker.errors import BreakGlassConflict, EscrowError, EscrowSealed


class MemoryBreakGlassStore:
    def __init__(self) -> None:
        self.requests: dict[str, BreakGlassRequest] = {}

    async def create_request(self, request: BreakGlassRequest) -> None:
        assert request.id not in self.requests
        self.requests[request.id] = request

    async def load_request(self, request_id: str) -> BreakGlassRequest | None:
        return self.requests.get(request_id)

    async def save_request(self, request: BreakGlassRequest) -> BreakGlassRequest:
        stored = self.requests.get(request.id)
        if stored is None or stored.revision != request.revision:
            raise BreakGlassConflict("changed meanwhile", code="changed_meanwhile")
        saved = replace(request, revision=request.revision + 1)
        self.requests[request.id] = saved
        return saved

    async def list_requests(self, *, limit: int = 200) -> list[BreakGlassRequest]:
        ordered = sorted(self.requests.values(), key=lambda r: (r.created_at, r.id), reverse=True)
        return ordered[:limit]


class FakeEscrow:
    """Shares are "share-<i>"; any `threshold` of the N known ones open it."""

    def __init__(self, key: AccessKey | None, *, shares: int = 5, threshold: int = 3) -> None:
        self.key = key
        self.count = shares
        self._threshold = threshold
        self.opened = 0

    @property
    def threshold(self) -> int:
        return self._threshold

    def share_index(self, share: str) -> int:
        prefix, _, number = share.partition("-")
        if prefix != "share" or not number.isdigit() or not 1 <= int(number) <= self.count:
            raise EscrowError("not a share of this escrow")
        return int(number)

    def open(self, shares: list[str]) -> AccessKey:
        indices = {self.share_index(s) for s in shares}
        if len(indices) < self._threshold:
            raise EscrowError("the shares do not open this escrow")
        if self.key is None:
            raise EscrowSealed("empty")
        self.opened += 1
        return self.key

    def sealed_key_id(self) -> str | None:
        return self.key.access_key_id if self.key else None

    def seal(self, key: AccessKey) -> None:
        self.key = key


class FakeNotifier:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def notify(self, event: Mapping[str, Any]) -> None:
        self.events.append(dict(event))

    async def close(self) -> None:
        return None


class FakeBreakGlassMetrics:
    def __init__(self) -> None:
        self.steps: list[tuple[str, str]] = []

    def count_break_glass(self, step: str, outcome: str) -> None:
        self.steps.append((step, outcome))
