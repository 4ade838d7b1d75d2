"""CircuitBreaker and ResilientSecretStore: deterministic (injected clock and sleep), then the
real Vault adapter behind the wrapper against every kind of outage the Vault double can play."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from credbroker.domain import BreakerState, SecretVersion
from credbroker.errors import (
    CasMismatch,
    SecretNotFound,
    SecretStoreCircuitOpen,
    SecretStoreError,
    SecretStorePermissionDenied,
    SecretStoreUnavailable,
)
from credbroker.secrets.resilient import CircuitBreaker, ResilientSecretStore
from credbroker.secrets.vault import VaultKV2Store
from tests.doubles.vault import VaultDouble
from tests.fakes import DOWN, MonotonicClock
from tests.fakes import ScriptedStore as FakeStore


class Sleeps:
    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def breaker(
    clock: MonotonicClock | None = None, *, threshold: int = 3, open_s: float = 10.0
) -> CircuitBreaker:
    return CircuitBreaker(
        failure_threshold=threshold, open_seconds=open_s, clock=clock or MonotonicClock()
    )


def wrap(
    inner: Any,
    cb: CircuitBreaker | None = None,
    *,
    sleep: Callable[[float], Awaitable[None]] | None = None,
    **kw: Any,
) -> ResilientSecretStore:
    options: dict[str, Any] = {"timeout_seconds": 2.0, "attempts": 3}
    return ResilientSecretStore(
        inner, breaker=cb or breaker(), sleep=sleep or Sleeps(), **(options | kw)
    )


# --- the breaker ------------------------------------------------------------------------------


def state_of(cb: CircuitBreaker) -> BreakerState:
    """cb.state, read afresh: the property moves with the clock and with acquire/failed/succeeded,
    and a type checker would otherwise keep it narrowed to the value the previous assert saw."""
    return cb.state


def test_breaker_opens_after_the_threshold_and_fails_fast_until_the_interval_passes() -> None:
    clock = MonotonicClock()
    cb = breaker(clock, threshold=3, open_s=10)
    seen: list[BreakerState] = []
    cb.subscribe(seen.append)

    for _ in range(2):
        assert cb.acquire() is False
        cb.failed("down", trial=False)
    assert state_of(cb) is BreakerState.CLOSED
    cb.acquire()
    cb.failed("down", trial=False)
    assert state_of(cb) is BreakerState.OPEN and seen == [BreakerState.OPEN]

    clock.now += 9.9
    with pytest.raises(SecretStoreCircuitOpen, match=r"next try in 0\.1s") as info:
        cb.acquire()
    assert info.value.code == "vault_unavailable" and info.value.status == 503
    assert cb.retry_after() == pytest.approx(0.1)

    clock.now += 0.1
    assert state_of(cb) is BreakerState.HALF_OPEN
    assert cb.acquire() is True  # the one trial call
    with pytest.raises(SecretStoreCircuitOpen, match="trial call is in flight"):
        cb.acquire()
    cb.succeeded(trial=True)
    assert state_of(cb) is BreakerState.CLOSED
    assert seen == [BreakerState.OPEN, BreakerState.HALF_OPEN, BreakerState.CLOSED]


def test_a_failed_trial_opens_the_breaker_for_another_full_interval() -> None:
    clock = MonotonicClock()
    cb = breaker(clock, threshold=1, open_s=5)
    cb.acquire()
    cb.failed("down", trial=False)
    clock.now += 5
    assert cb.acquire() is True
    clock.now += 1  # the trial itself took a second
    cb.failed("still down", trial=True)

    assert cb.state is BreakerState.OPEN
    assert cb.retry_after() == pytest.approx(5.0)
    clock.now += 5
    assert cb.acquire() is True


def test_only_consecutive_failures_count_and_an_answer_resets_them() -> None:
    cb = breaker(threshold=3)
    for _ in range(5):
        cb.acquire()
        cb.failed("down", trial=False)
        cb.acquire()
        cb.failed("down", trial=False)
        cb.acquire()
        cb.succeeded(trial=False)
    assert cb.state is BreakerState.CLOSED


def test_an_abandoned_trial_frees_the_slot_without_a_verdict() -> None:
    clock = MonotonicClock()
    cb = breaker(clock, threshold=1, open_s=1)
    cb.acquire()
    cb.failed("down", trial=False)
    clock.now += 1
    assert cb.acquire() is True
    cb.abandoned(trial=True)
    assert cb.state is BreakerState.HALF_OPEN
    assert cb.acquire() is True


def test_state_changes_are_logged_once_each(caplog: pytest.LogCaptureFixture) -> None:
    clock = MonotonicClock()
    cb = breaker(clock, threshold=2, open_s=1)
    with caplog.at_level(logging.WARNING, logger="credbroker.secrets.resilient"):
        for _ in range(2):
            cb.acquire()
            cb.failed("vault read of 'p': HTTP 503", trial=False)
        for _ in range(3):
            with pytest.raises(SecretStoreCircuitOpen):
                cb.acquire()
        clock.now += 1
        for _ in range(3):
            trial = cb.acquire()
            cb.succeeded(trial=trial)
    messages = [r.getMessage() for r in caplog.records]
    assert [m.split(":")[0] for m in messages] == [
        "secret store circuit breaker open",
        "secret store circuit breaker half_open",
        "secret store circuit breaker closed",
    ]
    assert "HTTP 503" in messages[0]


def test_a_failing_listener_does_not_break_the_breaker(caplog: pytest.LogCaptureFixture) -> None:
    cb = breaker(threshold=1)

    def boom(state: BreakerState) -> None:
        raise RuntimeError("listener bug")

    seen: list[BreakerState] = []
    cb.subscribe(boom)
    cb.subscribe(seen.append)
    cb.acquire()
    cb.failed("down", trial=False)
    assert seen == [BreakerState.OPEN]
    assert "circuit breaker listener failed" in caplog.text


def test_a_late_success_of_a_call_started_while_closed_does_not_close_the_open_breaker() -> None:
    """The flap seen under load: a slow call admitted while closed answers after the breaker
    opened; its success belongs to the closed state that is gone, so it changes nothing."""
    clock = MonotonicClock()
    cb = breaker(clock, threshold=3, open_s=10)
    assert cb.acquire() is False
    slow = cb.generation
    for _ in range(3):
        cb.acquire()
        cb.failed("down", trial=False, generation=cb.generation)
    assert state_of(cb) is BreakerState.OPEN

    cb.succeeded(trial=False, generation=slow)
    assert state_of(cb) is BreakerState.OPEN
    with pytest.raises(SecretStoreCircuitOpen):
        cb.acquire()


def test_late_failures_do_not_reopen_a_closed_breaker_nor_end_a_trial() -> None:
    clock = MonotonicClock()
    cb = breaker(clock, threshold=1, open_s=5)
    cb.acquire()
    before_open = cb.generation
    cb.failed("down", trial=False, generation=before_open)
    clock.now += 5
    assert cb.acquire() is True
    trial = cb.generation
    cb.failed("stale", trial=False, generation=before_open)  # an old call, late
    assert state_of(cb) is BreakerState.HALF_OPEN
    cb.succeeded(trial=True, generation=trial)
    assert state_of(cb) is BreakerState.CLOSED
    for _ in range(3):
        cb.failed("stale", trial=True, generation=trial)  # the trial's era is over
    assert state_of(cb) is BreakerState.CLOSED


async def test_concurrent_store_calls_do_not_flap_the_breaker() -> None:
    """Through the wrapper: a read that was waiting when the breaker opened comes back fine
    and the breaker stays open until its own trial call."""
    release = asyncio.Event()

    class Slow(FakeStore):
        async def read(self, path: str) -> SecretVersion:
            if not self.calls:
                self.calls.append("read")
                await release.wait()
                return SecretVersion({"k": "v"}, 1)
            return await super().read(path)

    clock = MonotonicClock()
    cb = breaker(clock, threshold=2, open_s=10)
    store = wrap(Slow(DOWN, DOWN), cb, attempts=1)
    slow = asyncio.create_task(store.read("p"))
    await asyncio.sleep(0)
    for _ in range(2):
        with pytest.raises(SecretStoreUnavailable):
            await store.read("p")
    assert state_of(cb) is BreakerState.OPEN
    release.set()
    assert (await slow).version == 1
    assert state_of(cb) is BreakerState.OPEN


async def test_probe_goes_around_the_breaker_and_never_moves_it() -> None:
    clock = MonotonicClock()
    cb = breaker(clock, threshold=1, open_s=10)
    seen: list[BreakerState] = []
    cb.subscribe(seen.append)
    inner = FakeStore(*([DOWN] * 50))
    store = wrap(inner, cb)
    for _ in range(50):  # a /readyz flood against a store that is down
        with pytest.raises(SecretStoreUnavailable):
            await store.probe()
    assert state_of(cb) is BreakerState.CLOSED and seen == []
    assert inner.calls == ["check"] * 50  # one call each, never retried

    await store.read("p")  # succeeds; now open the breaker with real calls
    cb.acquire()
    cb.failed("down", trial=False, generation=cb.generation)
    assert state_of(cb) is BreakerState.OPEN
    with pytest.raises(SecretStoreCircuitOpen, match="next try in"):
        await store.probe()  # the breaker's answer, without a call
    assert inner.calls[-1] == "read"
    clock.now += 10
    await store.probe()  # a healthy probe does not close it either: only its trial may
    assert cb.acquire() is True


# --- retries ----------------------------------------------------------------------------------


async def test_unreachable_reads_are_retried_with_jittered_backoff_then_succeed() -> None:
    inner = FakeStore(DOWN, DOWN, SecretVersion({"k": "v"}, 7))
    sleeps = Sleeps()
    store = wrap(inner, sleep=sleeps, backoff_seconds=0.1, backoff_max_seconds=0.15)

    secret = await store.read("p")

    assert secret.version == 7 and inner.calls == ["read"] * 3
    assert len(sleeps.waits) == 2
    # Full jitter: retry n waits a random time in [0, min(max, base * 2**n)].
    assert 0 <= sleeps.waits[0] <= 0.1
    assert 0 <= sleeps.waits[1] <= 0.15
    assert store.breaker.state is BreakerState.CLOSED


async def test_jitter_really_varies_the_waits() -> None:
    waits: set[float] = set()
    for _ in range(20):
        sleeps = Sleeps()
        await wrap(FakeStore(DOWN), sleep=sleeps, backoff_seconds=1.0).read("p")
        waits.update(sleeps.waits)
    assert len(waits) > 10


async def test_retries_are_bounded_and_the_last_error_is_raised_once_per_call() -> None:
    inner = FakeStore(DOWN, DOWN, SecretStoreUnavailable("vault read of 'p': HTTP 503"))
    cb = breaker(threshold=2)
    store = wrap(inner, cb, attempts=3)

    with pytest.raises(SecretStoreUnavailable, match="HTTP 503"):
        await store.read("p")

    assert inner.calls == ["read"] * 3
    assert cb.state is BreakerState.CLOSED  # one call, one failure: threshold 2 not reached


@pytest.mark.parametrize(
    "refusal",
    [
        SecretStorePermissionDenied("vault read of 'p': HTTP 403 permission denied"),
        SecretNotFound("vault read of 'p': HTTP 404 not found"),
        CasMismatch("vault write of 'p': HTTP 400 check-and-set did not match"),
        SecretStoreError("vault read of 'p': HTTP 400"),
    ],
    ids=lambda e: type(e).__name__,
)
async def test_refusals_pass_straight_through_and_never_trip_the_breaker(
    refusal: SecretStoreError,
) -> None:
    cb = breaker(threshold=1)
    sleeps = Sleeps()
    inner = FakeStore(*([refusal] * 5))
    store = wrap(inner, cb, sleep=sleeps)

    for _ in range(5):
        with pytest.raises(type(refusal)) as info:
            await store.read("p")
        assert info.value is refusal

    assert inner.calls == ["read"] * 5  # never retried
    assert sleeps.waits == []
    assert cb.state is BreakerState.CLOSED


async def test_a_refusal_counts_as_an_answer_and_closes_a_half_open_breaker() -> None:
    clock = MonotonicClock()
    cb = breaker(clock, threshold=1, open_s=1)
    store = wrap(FakeStore(DOWN, DOWN, DOWN, SecretNotFound("not found")), cb, attempts=3)
    with pytest.raises(SecretStoreUnavailable):
        await store.read("p")
    clock.now += 1
    with pytest.raises(SecretNotFound):
        await store.read("p")
    assert cb.state is BreakerState.CLOSED


async def test_writes_are_never_retried() -> None:
    inner = FakeStore(DOWN)
    sleeps = Sleeps()
    store = wrap(inner, sleep=sleeps, attempts=5)

    with pytest.raises(SecretStoreUnavailable):
        await store.write("p", {"k": "v"}, cas=3)

    assert inner.calls == ["write"] and sleeps.waits == []


async def test_checks_are_retried_like_reads() -> None:
    inner = FakeStore(DOWN, None)
    await wrap(inner).check()
    assert inner.calls == ["check", "check"]


async def test_an_open_breaker_fails_fast_without_calling_the_store() -> None:
    inner = FakeStore(DOWN, DOWN, DOWN)
    store = wrap(inner, breaker(threshold=1), attempts=3)
    with pytest.raises(SecretStoreUnavailable):
        await store.read("p")
    calls = len(inner.calls)

    for call in (
        lambda: store.read("p"),
        lambda: store.write("p", {"k": "v"}, cas=None),
        store.check,
    ):
        with pytest.raises(SecretStoreCircuitOpen):
            await call()
    assert len(inner.calls) == calls


# --- the deadline -----------------------------------------------------------------------------


class HangingStore(FakeStore):
    async def read(self, path: str) -> SecretVersion:
        self.calls.append("read")
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def test_a_hanging_store_is_unavailable_at_the_deadline_and_counts_as_a_failure() -> None:
    cb = breaker(threshold=1)
    inner = HangingStore()
    store = wrap(inner, cb, timeout_seconds=0.1)

    started = time.monotonic()
    with pytest.raises(SecretStoreUnavailable, match=r"no answer within 0\.1s") as info:
        await store.read("p")
    elapsed = time.monotonic() - started

    assert 0.1 <= elapsed < 0.3
    assert info.value.__cause__ is None and info.value.__context__ is None
    assert inner.calls == ["read"]  # the deadline covers the whole call, retries included
    assert cb.state is BreakerState.OPEN


async def test_the_deadline_bounds_retries_and_their_waits_together() -> None:
    store = wrap(
        FakeStore(*([DOWN] * 50)),
        timeout_seconds=0.2,
        attempts=10,
        backoff_seconds=0.1,
        backoff_max_seconds=0.1,
        sleep=asyncio.sleep,
    )
    started = time.monotonic()
    with pytest.raises(SecretStoreUnavailable):
        await store.read("p")
    assert time.monotonic() - started < 0.35


async def test_a_cancelled_trial_frees_the_half_open_slot() -> None:
    clock = MonotonicClock()
    cb = breaker(clock, threshold=1, open_s=1)
    store = wrap(HangingStore(), cb, timeout_seconds=5)
    cb.acquire()
    cb.failed("down", trial=False)
    clock.now += 1

    task = asyncio.create_task(store.read("p"))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert cb.state is BreakerState.HALF_OPEN
    assert cb.acquire() is True


async def test_close_and_identity_are_the_inner_stores() -> None:
    inner = FakeStore()
    store = wrap(inner)
    assert (store.kind, store.writable) == ("scripted", True)
    await store.close()
    assert inner.closed


# --- the real Vault adapter behind the wrapper: every outage counts, a 403 does not ------------

TOKEN = "hvs.resilient-test-token-9d1e"


@pytest.fixture
async def vault() -> AsyncIterator[VaultDouble]:
    async with VaultDouble() as double:
        double.add_token(TOKEN)
        double.put("app/creds", {"k": "v"})
        yield double


Outage = Callable[[VaultDouble], Awaitable[None]]


async def _sealed(vault: VaultDouble) -> None:
    vault.seal()


async def _server_error(vault: VaultDouble) -> None:
    vault.fail_next(100, 500)


async def _stopped(vault: VaultDouble) -> None:
    await vault.stop()


async def _hanging(vault: VaultDouble) -> None:
    vault.hang(30)


@pytest.mark.parametrize(
    "outage",
    [_sealed, _server_error, _stopped, _hanging],
    ids=["sealed-503", "http-500", "connection-refused", "hanging"],
)
async def test_every_vault_outage_trips_the_breaker(vault: VaultDouble, outage: Outage) -> None:
    cb = breaker(threshold=1)
    store = wrap(VaultKV2Store(vault.url, token=TOKEN, timeout_seconds=3), cb, timeout_seconds=0.5)
    try:
        assert (await store.read("app/creds")).version == 1
        await outage(vault)

        started = time.monotonic()
        with pytest.raises(SecretStoreUnavailable):
            await store.read("app/creds")
        assert time.monotonic() - started < 0.8
        assert cb.state is BreakerState.OPEN
    finally:
        await vault.stop()  # ends a hanging answer, so close() need not wait for it
        await store.close()


async def test_dns_failure_trips_the_breaker() -> None:
    cb = breaker(threshold=1)
    inner = VaultKV2Store("http://credbroker-vault.invalid:8200", token=TOKEN, timeout_seconds=2)
    store = wrap(inner, cb, timeout_seconds=2.5)
    try:
        with pytest.raises(SecretStoreUnavailable):
            await store.read("app/creds")
        assert cb.state is BreakerState.OPEN
    finally:
        await store.close()


async def test_vault_403_is_permission_denied_and_does_not_trip(vault: VaultDouble) -> None:
    cb = breaker(threshold=1)
    store = wrap(VaultKV2Store(vault.url, token=TOKEN, timeout_seconds=3), cb)
    vault.revoke(TOKEN)
    try:
        for call in (lambda: store.read("app/creds"), store.check):
            with pytest.raises(SecretStorePermissionDenied):
                await call()
        assert cb.state is BreakerState.CLOSED
        assert vault.request_count == 2  # each tried once: a refusal is never retried
    finally:
        await store.close()


async def test_older_versions_go_through_the_wrapper_when_the_inner_store_keeps_them(
    vault: VaultDouble,
) -> None:
    vault.put("app/creds", {"k": "v2"})
    store = wrap(VaultKV2Store(vault.url, token=TOKEN, timeout_seconds=3))
    try:
        assert dict((await store.read_version("app/creds", 1)).data) == {"k": "v"}
    finally:
        await store.close()
    # A store that keeps no older versions says SecretNotFound: passed on, never an outage.
    breaker_store = wrap(FakeStore(SecretNotFound("no older versions kept")))
    with pytest.raises(SecretNotFound):
        await breaker_store.read_version("p", 1)
    assert breaker_store.breaker.state is BreakerState.CLOSED
