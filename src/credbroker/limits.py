"""Fair use in memory: a token bucket per client (ports.RateLimiter) and a cap on work in
flight. Each replica counts alone; event-loop only (no locks: nothing here awaits)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from credbroker.ports import RateLimiter


@dataclass(frozen=True, slots=True)
class Rate:
    per_second: float
    burst: int

    def __post_init__(self) -> None:
        if self.per_second <= 0 or self.burst < 1:
            raise ValueError("a rate needs per_second > 0 and burst >= 1")


class TokenBuckets:
    """ports.RateLimiter: each client may spend `burst` at once, refilled at `per_second`.
    Buckets exist only for authenticated clients (the configured set), so memory is bounded."""

    def __init__(
        self,
        default: Rate,
        per_client: Mapping[str, Rate] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        live: Callable[[str], tuple[float | None, int | None]] | None = None,
        processes: int = 1,
    ) -> None:
        """`live`: a principal's own (rate_per_second, burst) as the control plane knows it now
        (None, None: not set there), asked before `per_client` and the default. `processes`: how
        many processes share these rates (`serve --workers N`, each counting alone): each grants
        its 1/N share, so together they never exceed the configured rate."""
        if processes < 1:
            raise ValueError("processes must be >= 1")
        self._live = live
        self._processes = processes
        self._default = default
        self._rates = dict(per_client or {})
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # client -> (tokens, at)

    def try_acquire(self, client_id: str) -> float:
        rate = self._share(self._rate(client_id))
        now = self._clock()
        tokens, at = self._buckets.get(client_id, (float(rate.burst), now))
        tokens = min(float(rate.burst), tokens + max(0.0, now - at) * rate.per_second)
        if tokens >= 1.0:
            self._buckets[client_id] = (tokens - 1.0, now)
            return 0.0
        self._buckets[client_id] = (tokens, now)
        return (1.0 - tokens) / rate.per_second

    def _rate(self, client_id: str) -> Rate:
        base = self._rates.get(client_id, self._default)
        if self._live is None:
            return base
        per_second, burst = self._live(client_id)
        if per_second is None and burst is None:
            return base
        return Rate(per_second or self._default.per_second, burst or self._default.burst)

    def _share(self, rate: Rate) -> Rate:
        if self._processes == 1:
            return rate
        return Rate(rate.per_second / self._processes, max(1, -(-rate.burst // self._processes)))


class InFlightCap:
    """At most `limit` units of work at once; past it the caller refuses (never queues)."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        self.limit = limit
        self.current = 0

    def try_enter(self) -> bool:
        if self.current >= self.limit:
            return False
        self.current += 1
        return True

    def leave(self) -> None:
        self.current = max(0, self.current - 1)


@dataclass(frozen=True, slots=True)
class Limits:
    """What the HTTP layer enforces (web/limits.py), built by wiring from `limits:`."""

    rate: RateLimiter
    in_flight: InFlightCap
    body_timeout_seconds: float
