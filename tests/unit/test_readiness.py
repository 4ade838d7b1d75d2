"""/readyz's probe cache (web/readiness.py): a flood reaches upstream once per cache interval,
one probe at a time, and every failure is an answer, never an exception."""

from __future__ import annotations

import asyncio

from credbroker.errors import SecretStorePermissionDenied
from credbroker.web.readiness import Readiness
from tests.fakes import DOWN, MonotonicClock


class CountingProbe:
    def __init__(self, *outcomes: BaseException | None, gate: asyncio.Event | None = None) -> None:
        self.outcomes = list(outcomes)
        self.calls = 0
        self.in_flight = 0
        self.most_in_flight = 0
        self.gate = gate

    async def __call__(self) -> None:
        self.calls += 1
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.gate is not None:
                await self.gate.wait()
            await asyncio.sleep(0)
            outcome = self.outcomes.pop(0) if self.outcomes else None
            if outcome is not None:
                raise outcome
        finally:
            self.in_flight -= 1


class Fallback:
    """The two questions readiness asks the read-only fallback."""

    max_staleness_seconds = 86400.0

    def __init__(self, problem: str | None = None) -> None:
        self._problem = problem

    def age_seconds(self) -> float | None:
        return 12.34

    def problem(self) -> str | None:
        return self._problem


def readiness(
    store: CountingProbe,
    objects: CountingProbe | None = None,
    *,
    clock: MonotonicClock | None = None,
    fallback: Fallback | None = None,
    deadline: float = 5.0,
) -> Readiness:
    return Readiness(
        secret_store=store,
        object_store=objects or CountingProbe(),
        fallback=fallback,  # type: ignore[arg-type]
        cache_seconds=1.0,
        deadline_seconds=deadline,
        clock=clock or MonotonicClock(),
    )


async def test_a_flood_shares_one_probe_and_then_the_cache() -> None:
    clock = MonotonicClock()
    store, objects = CountingProbe(), CountingProbe()
    ready = readiness(store, objects, clock=clock)

    answers = await asyncio.gather(*(ready.report() for _ in range(500)))
    answers += [await ready.report() for _ in range(100)]

    assert {status for status, _ in answers} == {200}
    assert {body["status"] for _, body in answers} == {"ready"}
    assert (store.calls, objects.calls, store.most_in_flight) == (1, 1, 1)
    clock.now += 1.0
    await ready.report()
    assert (store.calls, objects.calls, ready.probes_started) == (2, 2, 2)
    await ready.close()


async def test_a_hanging_probe_is_a_timeout_answer_and_never_gets_a_second_beside_it() -> None:
    clock = MonotonicClock()
    gate = asyncio.Event()
    store = CountingProbe(gate=gate)
    ready = readiness(store, clock=clock, deadline=0.01)

    status, body = await ready.report()
    assert (status, body["checks"]["secret_store"]["code"]) == (503, "timeout")
    assert body["checks"]["object_store"] == {"ok": True}
    for _ in range(5):  # cache expired each time, the probe still hangs: nobody starts another
        clock.now += 2
        status, body = await ready.report()
        assert status == 503
    assert (store.calls, store.most_in_flight, ready.probes_started) == (1, 1, 1)

    gate.set()
    await asyncio.sleep(0.05)
    clock.now += 0.5  # the late answer is cached when it comes
    status, body = await ready.report()
    assert (status, body["status"], store.calls) == (200, "ready", 1)
    await ready.close()


async def test_invalidate_drops_the_cached_answer_at_once() -> None:
    store = CountingProbe(DOWN)
    ready = readiness(store, fallback=Fallback())
    status, body = await ready.report()
    assert (status, body["status"]) == (200, "degraded")
    assert "secret store unreachable" in body["reason"]
    assert (await ready.report())[1]["status"] == "degraded"  # cached

    ready.invalidate("closed")  # the breaker changed state
    status, body = await ready.report()
    assert (status, body["status"], store.calls) == (200, "ready", 2)
    assert body["checks"]["read_only_fallback"]["age_seconds"] == 12.3


async def test_a_result_of_a_probe_started_before_invalidate_is_not_cached() -> None:
    gate = asyncio.Event()
    store = CountingProbe(DOWN, gate=gate)
    ready = readiness(store, deadline=0.01)
    assert (await ready.report())[0] == 503  # timed out, still running
    ready.invalidate()
    gate.set()
    await asyncio.sleep(0.05)  # the old probe ends with DOWN: not kept
    status, body = await ready.report()
    assert (status, body["status"], store.calls) == (200, "ready", 2)
    await ready.close()


async def test_refusals_and_surprises_are_not_ready_answers() -> None:
    denied = readiness(CountingProbe(SecretStorePermissionDenied("vault check: HTTP 403")))
    status, body = await denied.report()
    assert (status, body["status"]) == (503, "not_ready")
    assert body["checks"]["secret_store"]["code"] == "vault_permission_denied"

    odd = readiness(CountingProbe(), CountingProbe(RuntimeError("boom")), fallback=Fallback())
    status, body = await odd.report()
    assert (status, body["checks"]["object_store"]) == (
        503,
        {"ok": False, "code": "probe_failed", "message": "RuntimeError"},
    )

    stale = readiness(CountingProbe(DOWN), fallback=Fallback("too stale"))
    status, body = await stale.report()
    assert (status, body["status"]) == (503, "not_ready")
    assert body["checks"]["read_only_fallback"] == {
        "ok": False,
        "age_seconds": 12.3,
        "max_staleness_seconds": 86400.0,
        "message": "too stale",
    }
