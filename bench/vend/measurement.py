"""Driving a call at a concurrency and timing it: one Result per round, one Summary per target."""

from __future__ import annotations

import asyncio
import math
import statistics
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from bench.vend.processes import cpu_seconds, machine_busy, self_cpu

Call = Callable[[], Awaitable[None]]


@dataclass
class Result:
    """One timed measurement (one round of one target at one concurrency)."""

    target: str
    concurrency: int
    latencies_ns: list[int]
    wall_s: float
    errors: Counter[str] = field(default_factory=Counter)
    cpu_s: dict[str, float | None] = field(default_factory=dict)
    other_cpu_share: float = math.nan  # busy CPU of processes not ours, share of all CPUs

    def percentile_ms(self, p: float) -> float:
        data = sorted(self.latencies_ns)
        if not data:
            return math.nan
        index = max(0, math.ceil(p / 100.0 * len(data)) - 1)
        return data[index] / 1e6

    @property
    def throughput(self) -> float:
        return len(self.latencies_ns) / self.wall_s if self.wall_s > 0 else math.nan

    @property
    def done(self) -> int:
        return len(self.latencies_ns) + sum(self.errors.values())


@dataclass
class Summary:
    """All rounds of one target at one concurrency: medians of the per-round figures."""

    target: str
    concurrency: int
    rounds: list[Result]

    @property
    def p50(self) -> float:
        return statistics.median(r.percentile_ms(50) for r in self.rounds)

    @property
    def p99(self) -> float:
        return statistics.median(r.percentile_ms(99) for r in self.rounds)

    @property
    def throughput(self) -> float:
        return statistics.median(r.throughput for r in self.rounds)

    @property
    def throughput_range(self) -> tuple[float, float]:
        values = [r.throughput for r in self.rounds]
        return min(values), max(values)

    @property
    def errors(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for r in self.rounds:
            total.update(r.errors)
        return total

    def cpu_us_per_request(self, who: str) -> float | None:
        values = [r.cpu_s.get(who) for r in self.rounds]
        done = sum(r.done for r in self.rounds)
        if done == 0 or any(v is None for v in values):
            return None
        return sum(v for v in values if v is not None) / done * 1e6

    @property
    def other_cpu_share(self) -> float:
        return statistics.median(r.other_cpu_share for r in self.rounds)


async def drive(
    call: Call, requests: int, concurrency: int
) -> tuple[list[int], float, Counter[str]]:
    """`requests` calls spread over `concurrency` workers; per-call latency and wall time."""
    latencies: list[int] = []
    errors: Counter[str] = Counter()
    remaining = requests

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            start = time.perf_counter_ns()
            try:
                await call()
            except Exception as exc:
                errors[f"{type(exc).__name__}: {str(exc)[:120]}"] += 1
                continue
            latencies.append(time.perf_counter_ns() - start)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, time.perf_counter() - started, errors


async def measure(
    target: str,
    call: Call,
    *,
    requests: int,
    warmup: int,
    concurrency: int,
    pids: dict[str, list[int]],
) -> Result:
    """Warm up (untimed), then time `requests` calls; CPU of each process group meanwhile."""
    if warmup:
        await drive(call, warmup, concurrency)

    def snapshot() -> dict[str, float | None]:
        cpu: dict[str, float | None] = {"generator": self_cpu()}
        for who, group in pids.items():
            values = [cpu_seconds(pid) for pid in group]
            cpu[who] = None if not group or None in values else sum(v or 0.0 for v in values)
        return cpu

    before, (busy0, total0) = snapshot(), machine_busy()
    latencies, wall, errors = await drive(call, requests, concurrency)
    after, (busy1, total1) = snapshot(), machine_busy()
    used: dict[str, float | None] = {}
    for who, value in after.items():
        b = before[who]
        used[who] = None if value is None or b is None else value - b
    ours = sum(v for v in used.values() if v is not None)
    other = max(0.0, (busy1 - busy0) - ours) / (total1 - total0) if total1 > total0 else math.nan
    return Result(target, concurrency, latencies, wall, errors, used, other)
