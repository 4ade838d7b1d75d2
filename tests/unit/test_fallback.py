"""ReadOnlyFallback: fresh from the store, sealed on disk, refused when stale, degraded mode."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
from pathlib import Path
from typing import Any

import pytest

from credbroker.domain import BreakerState, SecretVersion
from credbroker.errors import SecretStoreError, SecretStoreUnavailable
from credbroker.fallback import ReadOnlyFallback
from credbroker.observability import Metrics
from credbroker.secrets.sealing import SealedFile
from tests.fakes import DOWN, Clock
from tests.fakes import ScriptedStore as FakeStore

PATH = "credbroker/object-store/read-only"
ACCESS_KEY = "AKREADONLYFALLBACK01"
SECRET_KEY = "ro-secret-must-never-leak-4f1d9c"
KEYS = {"access_key_id": ACCESS_KEY, "secret_access_key": SECRET_KEY}


def make(
    tmp_path: Path,
    store: Any,
    *,
    clock: Clock | None = None,
    key: bytes | None = None,
    path: str = PATH,
    metrics: Metrics | None = None,
    **overrides: Any,
) -> ReadOnlyFallback:
    options: dict[str, Any] = {
        "refresh_seconds": 60,
        "retry_seconds": 5,
        "max_staleness_seconds": 600,
    }
    return ReadOnlyFallback(
        store,
        path=path,
        role_arn="arn:aws:iam:::role/credbroker-read",
        cache=SealedFile(tmp_path / "fallback.sealed", key or KEY, purpose="read-only-fallback"),
        metrics=metrics or Metrics(),
        clock=clock or Clock(),
        **(options | overrides),
    )


KEY = os.urandom(32)


async def test_refresh_keeps_the_keys_in_memory_and_sealed_on_disk(tmp_path: Path) -> None:
    fallback = make(tmp_path, FakeStore(SecretVersion(KEYS, 4)))

    await fallback.refresh()

    assert fallback.credentials().access_key_id == ACCESS_KEY
    assert fallback.credentials().version == 4
    sealed = (tmp_path / "fallback.sealed").read_bytes()
    for plain in (ACCESS_KEY, SECRET_KEY):
        assert plain.encode() not in sealed
        assert base64.b64encode(plain.encode())[:16] not in sealed
    assert oct((tmp_path / "fallback.sealed").stat().st_mode & 0o777) == "0o600"


async def test_a_restarted_broker_loads_the_sealed_keys_with_their_age(tmp_path: Path) -> None:
    clock = Clock()
    await make(tmp_path, FakeStore(SecretVersion(KEYS, 4)), clock=clock).refresh()
    clock.advance(120)

    restarted = make(tmp_path, FakeStore(DOWN), clock=clock)
    restarted.load_cache()

    assert restarted.credentials().secret_access_key == SECRET_KEY
    assert restarted.age_seconds() == pytest.approx(120)


async def test_keys_older_than_the_maximum_staleness_are_refused(tmp_path: Path) -> None:
    clock = Clock()
    fallback = make(tmp_path, FakeStore(SecretVersion(KEYS, 1)), clock=clock)
    await fallback.refresh()

    clock.advance(600)
    assert fallback.credentials().access_key_id == ACCESS_KEY
    clock.advance(1)
    with pytest.raises(SecretStoreUnavailable, match=r"601s old, over the 600s maximum") as info:
        fallback.credentials()
    assert info.value.code == "vault_unavailable" and info.value.status == 503
    assert SECRET_KEY not in str(info.value)


def test_no_keys_ever_read_means_reads_are_refused(tmp_path: Path) -> None:
    fallback = make(tmp_path, FakeStore(DOWN))
    fallback.load_cache()  # no file: nothing loaded, nothing raised
    assert fallback.problem() == "no read-only fallback key was ever read"
    with pytest.raises(SecretStoreUnavailable, match="was ever read: reads are refused too"):
        fallback.credentials()


@pytest.mark.parametrize("case", ["wrong-key", "other-path", "garbage", "unreadable"])
async def test_an_unusable_cache_file_is_ignored_and_logged(
    tmp_path: Path, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    await make(tmp_path, FakeStore(SecretVersion(KEYS, 1))).refresh()
    cache = tmp_path / "fallback.sealed"
    key, path = KEY, PATH
    if case == "wrong-key":
        key = os.urandom(32)
    elif case == "other-path":
        path = "credbroker/object-store/other"
    elif case == "garbage":
        cache.write_bytes(b"not a sealed file")
    else:
        cache.unlink()
        cache.mkdir()

    fallback = make(tmp_path, FakeStore(DOWN), key=key, path=path)
    with caplog.at_level(logging.WARNING, logger="credbroker.fallback"):
        fallback.load_cache()

    assert fallback.age_seconds() is None
    assert "fallback cache" in caplog.text
    assert SECRET_KEY not in caplog.text


async def test_a_secret_without_the_key_fields_is_an_error_without_values(tmp_path: Path) -> None:
    fallback = make(tmp_path, FakeStore(SecretVersion({"password": SECRET_KEY}, 1)))
    with pytest.raises(SecretStoreError, match="access_key_id and secret_access_key") as info:
        await fallback.refresh()
    assert SECRET_KEY not in str(info.value)
    assert not (tmp_path / "fallback.sealed").exists()


async def test_keep_fresh_survives_an_outage_and_logs_it_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = FakeStore(DOWN, DOWN, DOWN, RuntimeError(SECRET_KEY), DOWN, SecretVersion(KEYS, 2))
    fallback = make(tmp_path, store, refresh_seconds=60, retry_seconds=0.01)

    with caplog.at_level(logging.DEBUG, logger="credbroker.fallback"):
        task = asyncio.create_task(fallback.keep_fresh())
        for _ in range(3000):  # a generous bound: a loaded CI machine fsyncs slowly
            await asyncio.sleep(0.01)
            # The refresh is over once it said so: the key is in memory before the sealed copy
            # is written (in a thread), so an earlier cancel would cut that short.
            if "refreshed again" in caplog.text:
                break
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    assert store.calls == ["read"] * 6  # five failures, retried every 10 ms, then a success
    assert fallback.credentials().version == 2
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "not refreshed" in warnings[0].getMessage()
    assert "refreshed again" in caplog.text
    assert SECRET_KEY not in caplog.text  # an unexpected error is named by its type only


def test_degraded_mode_follows_the_breaker_with_one_line_each_way(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = Metrics()
    fallback = make(tmp_path, FakeStore(), metrics=metrics)

    def gauge() -> float | None:
        return metrics.registry.get_sample_value("credbroker_degraded")

    with caplog.at_level(logging.INFO, logger="credbroker.fallback"):
        for state in (
            BreakerState.OPEN,
            BreakerState.HALF_OPEN,
            BreakerState.OPEN,
            BreakerState.HALF_OPEN,
        ):
            fallback.store_state_changed(state)
            assert fallback.degraded and gauge() == 1
        fallback.store_state_changed(BreakerState.CLOSED)
        fallback.store_state_changed(BreakerState.CLOSED)

    assert not fallback.degraded and gauge() == 0
    messages = [r.getMessage() for r in caplog.records]
    assert [m.split(":")[0] for m in messages] == [
        "entering degraded mode",
        "leaving degraded mode",
    ]
