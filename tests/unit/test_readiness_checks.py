"""/readyz says ready only when a vend would succeed (issue 16): every configured secret
usable, the fallback key fresh, the vend canary's last run good. The canary runs on its
schedule, never per probe; each check is named and is a gauge."""

from __future__ import annotations

import asyncio

from credbroker.errors import (
    ObjectStoreRejected,
    SecretNotFound,
    SecretRolledBack,
    SecretStoreUnavailable,
)
from credbroker.observability import Metrics
from credbroker.web.readiness import Canary, Readiness
from tests.fakes import DOWN, MonotonicClock
from tests.unit.test_readiness import CountingProbe, Fallback


def readiness(
    *,
    store: CountingProbe | None = None,
    secrets: CountingProbe | None = None,
    canary: Canary | None = None,
    fallback: Fallback | None = None,
    metrics: Metrics | None = None,
    clock: MonotonicClock | None = None,
) -> Readiness:
    return Readiness(
        secret_store=store or CountingProbe(),
        object_store=CountingProbe(),
        fallback=fallback,  # type: ignore[arg-type]
        checks={"secrets": secrets or CountingProbe()},
        canary=canary,
        on_check=metrics.set_readiness_check if metrics is not None else None,
        cache_seconds=1.0,
        deadline_seconds=5.0,
        clock=clock or MonotonicClock(),
    )


def gauge(metrics: Metrics, check: str) -> float | None:
    return metrics.registry.get_sample_value("credbroker_readiness_check", {"check": check})


async def test_a_missing_secret_is_not_ready_and_named() -> None:
    metrics = Metrics()
    missing = SecretNotFound("secret 'credbroker/object-store/read-only' not found")
    ready = readiness(secrets=CountingProbe(missing), fallback=Fallback(), metrics=metrics)
    status, body = await ready.report()
    assert (status, body["status"]) == (503, "not_ready")
    assert body["checks"]["secrets"]["code"] == "secret_not_found"
    assert "read-only" in body["checks"]["secrets"]["message"]
    assert body["checks"]["read_only_fallback"]["ok"] is True  # fresh, but not in the store
    assert gauge(metrics, "secrets") == 0
    assert gauge(metrics, "secret_store") == 1
    await ready.close()


async def test_a_rolled_back_store_is_not_ready() -> None:
    rolled_back = SecretRolledBack("secret 'x' is older than version 3 seen before")
    status, body = await readiness(secrets=CountingProbe(rolled_back)).report()
    assert (status, body["checks"]["secrets"]["code"]) == (503, "secret_rolled_back")


async def test_the_canary_runs_on_its_schedule_not_per_probe() -> None:
    clock = MonotonicClock()
    check = CountingProbe()
    canary = Canary(check, interval_seconds=60, clock=clock)
    ready = readiness(canary=canary, clock=clock)
    for _ in range(20):
        status, body = await ready.report()
        clock.now += 2  # past the cache each time
    assert (status, body["status"]) == (200, "ready")
    assert body["checks"]["vend_canary"]["ok"] is True
    assert check.calls == 1  # the first answer waited for the first run; then its result
    await ready.close()


async def test_a_failing_canary_is_not_ready_until_a_run_succeeds() -> None:
    metrics = Metrics()
    refused = ObjectStoreRejected("key AK authenticates, but a key it mints may not list")
    check = CountingProbe(refused)
    canary = Canary(check, interval_seconds=60)
    ready = readiness(canary=canary, metrics=metrics)
    status, body = await ready.report()
    assert (status, body["status"]) == (503, "not_ready")
    assert body["checks"]["vend_canary"]["code"] == "object_store_rejected"
    assert gauge(metrics, "vend_canary") == 0

    await canary.run_once()  # the next scheduled run: the role works again
    ready.invalidate()
    status, body = await ready.report()
    assert (status, body["status"]) == (200, "ready")
    assert gauge(metrics, "vend_canary") == 1
    await ready.close()


async def test_the_schedule_runs_the_canary_and_sets_the_gauges_without_a_probe() -> None:
    metrics = Metrics()
    check = CountingProbe(ObjectStoreRejected("denied"))
    ready = readiness(canary=Canary(check, interval_seconds=3600), metrics=metrics)
    ready.start()
    async with asyncio.timeout(5):
        while gauge(metrics, "vend_canary") is None:
            await asyncio.sleep(0.01)
    assert gauge(metrics, "vend_canary") == 0
    assert check.calls == 1
    await ready.close()


async def test_an_unreachable_store_is_degraded_even_though_the_checks_needing_it_fail() -> None:
    unreachable = SecretStoreUnavailable("vault unreachable")
    ready = readiness(
        store=CountingProbe(DOWN),
        secrets=CountingProbe(unreachable),
        canary=Canary(CountingProbe(unreachable), interval_seconds=60),
        fallback=Fallback(),
    )
    status, body = await ready.report()
    assert (status, body["status"]) == (200, "degraded"), body

    # ...but not when a check fails for another reason.
    broken = readiness(
        store=CountingProbe(DOWN),
        secrets=CountingProbe(unreachable),
        canary=Canary(CountingProbe(ObjectStoreRejected("denied")), interval_seconds=60),
        fallback=Fallback(),
    )
    assert (await broken.report())[0] == 503
    await ready.close()
    await broken.close()


async def test_a_canary_run_the_store_outage_stopped_is_run_again_once_asked() -> None:
    check = CountingProbe(SecretStoreUnavailable("vault sealed"))
    canary = Canary(check, interval_seconds=3600)
    ready = readiness(store=CountingProbe(DOWN), canary=canary, fallback=Fallback())
    assert (await ready.report())[1]["status"] == "degraded"
    ready.invalidate()  # the store is back (a breaker change)
    status, body = await ready.report()
    assert (status, body["status"], check.calls) == (200, "ready", 2)
    ready.invalidate()
    await ready.report()
    assert check.calls == 2  # a good result is kept until the schedule runs it again
    await ready.close()
