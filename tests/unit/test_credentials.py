"""ParentKeySource: the service key read at call time, a short cache, one read for a burst of
concurrent misses, and invalidation by version."""

from __future__ import annotations

import asyncio
import gc
import logging

import pytest

from credbroker.domain import AccessKey, SecretVersion
from credbroker.parent_key import ParentKeySource
from tests.fakes import DOWN, MemorySecretStore, MonotonicClock

PATH = "credbroker/object-store/service"
V1 = {"access_key_id": "AKONE", "secret_access_key": "one-secret"}
V2 = {"access_key_id": "AKTWO", "secret_access_key": "two-secret"}


def source(cache_seconds: float) -> tuple[ParentKeySource, MemorySecretStore, MonotonicClock]:
    store, clock = MemorySecretStore(), MonotonicClock()
    store.put(PATH, V1)
    return ParentKeySource(store, PATH, cache_seconds=cache_seconds, clock=clock), store, clock


class GatedStore(MemorySecretStore):
    """Reads wait until the gate opens, so concurrent callers really overlap."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()

    async def read(self, path: str) -> SecretVersion:
        self.calls.append("read")
        await self.gate.wait()
        if self.outages:
            raise self.outages.pop(0)
        history = self.versions[path]
        return SecretVersion(dict(history[-1]), len(history))


async def test_the_key_comes_from_the_store_with_its_version() -> None:
    credentials, store, _ = source(cache_seconds=10)
    store.put(PATH, V2)

    assert await credentials.current() == AccessKey("AKTWO", "two-secret", 2)
    assert (credentials.store, credentials.path) == (store, PATH)


async def test_the_cache_holds_for_exactly_its_seconds() -> None:
    credentials, store, clock = source(cache_seconds=10)

    first = await credentials.current()
    store.put(PATH, V2)
    clock.advance(9.999)
    assert await credentials.current() is first
    assert store.calls == ["read"]

    clock.advance(0.001)  # 10 s after the read: expired
    assert (await credentials.current()).access_key_id == "AKTWO"
    assert store.calls == ["read", "read"]

    clock.advance(9.999)  # counted from the second read, not the first
    assert (await credentials.current()).access_key_id == "AKTWO"
    assert store.calls == ["read", "read"]


async def test_the_first_call_reads_even_at_time_zero() -> None:
    store = MemorySecretStore()
    store.put(PATH, V1)
    credentials = ParentKeySource(store, PATH, cache_seconds=10, clock=MonotonicClock(0.0))
    await credentials.current()
    assert store.calls == ["read"]


async def test_without_a_cache_every_call_reads() -> None:
    credentials, store, _ = source(cache_seconds=0)
    for _ in range(3):
        await credentials.current()
    assert store.calls == ["read"] * 3


async def test_concurrent_misses_share_one_read() -> None:
    store = GatedStore()
    store.put(PATH, V1)
    credentials = ParentKeySource(store, PATH, cache_seconds=0, clock=MonotonicClock())

    waiting = [asyncio.create_task(credentials.current()) for _ in range(5)]
    await asyncio.sleep(0)
    store.gate.set()
    keys = await asyncio.gather(*waiting)

    assert store.calls == ["read"]
    assert {k.access_key_id for k in keys} == {"AKONE"}
    await credentials.current()  # the shared read is over: the next miss reads again
    assert store.calls == ["read", "read"]


async def test_a_failed_shared_read_fails_every_waiter_and_the_next_call_retries() -> None:
    store = GatedStore()
    store.put(PATH, V1)
    store.outages.append(DOWN)
    credentials = ParentKeySource(store, PATH, cache_seconds=10, clock=MonotonicClock())

    waiting = [asyncio.create_task(credentials.current()) for _ in range(3)]
    await asyncio.sleep(0)
    store.gate.set()
    results = await asyncio.gather(*waiting, return_exceptions=True)

    assert results == [DOWN] * 3 and store.calls == ["read"]
    assert (await credentials.current()).access_key_id == "AKONE"
    assert store.calls == ["read", "read"]


async def test_a_cancelled_caller_does_not_cancel_the_read_others_wait_for() -> None:
    store = GatedStore()
    store.put(PATH, V1)
    credentials = ParentKeySource(store, PATH, cache_seconds=10, clock=MonotonicClock())

    quitter = asyncio.create_task(credentials.current())
    stayer = asyncio.create_task(credentials.current())
    await asyncio.sleep(0)
    quitter.cancel()
    await asyncio.sleep(0)
    store.gate.set()

    assert (await stayer).access_key_id == "AKONE"
    assert quitter.cancelled()
    assert store.calls == ["read"]


async def test_a_failed_read_nobody_waits_for_any_more_is_not_left_unretrieved(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The only caller gave up before the read failed: asyncio would log "Task exception was
    never retrieved" when the read is collected, unless the source marks it retrieved."""
    store = GatedStore()
    store.put(PATH, V1)
    store.outages.append(DOWN)
    credentials = ParentKeySource(store, PATH, cache_seconds=10, clock=MonotonicClock())

    alone = asyncio.create_task(credentials.current())
    await asyncio.sleep(0)
    alone.cancel()
    for _ in range(3):  # the cancellation settles: shield stops listening to the read
        await asyncio.sleep(0)
    store.gate.set()
    for _ in range(3):  # the read fails with nobody waiting
        await asyncio.sleep(0)
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        gc.collect()
        await asyncio.sleep(0)

    assert alone.cancelled() and store.calls == ["read"]
    assert [r.getMessage() for r in caplog.records if "never retrieved" in r.getMessage()] == []


async def test_invalidate_drops_the_cached_key() -> None:
    credentials, store, _ = source(cache_seconds=300)
    await credentials.current()
    store.put(PATH, V2)

    credentials.invalidate()

    assert (await credentials.current()).access_key_id == "AKTWO"
    assert store.calls == ["read", "read"]


async def test_invalidate_by_version_drops_only_that_version() -> None:
    credentials, store, _ = source(cache_seconds=300)
    await credentials.current()  # version 1
    store.put(PATH, V2)

    credentials.invalidate(version=2)  # not what is cached: kept
    assert (await credentials.current()).version == 1
    assert store.calls == ["read"]

    credentials.invalidate(version=1)
    assert (await credentials.current()).version == 2
    assert store.calls == ["read", "read"]


def test_invalidating_an_empty_cache_is_harmless() -> None:
    credentials, store, _ = source(cache_seconds=300)
    credentials.invalidate(version=1)
    credentials.invalidate()
    assert store.calls == []
