"""The SecretStore contract (Vault KV v2 semantics), run unchanged against every adapter.

Adapters come from the `subject` fixture in conftest.py.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from credbroker.errors import CasMismatch, SecretNotFound

if TYPE_CHECKING:
    from tests.contract.conftest import Subject


async def test_reading_a_missing_secret_raises_secret_not_found(subject: Subject) -> None:
    with pytest.raises(SecretNotFound):
        await subject.store.read(subject.path("missing"))


async def test_first_write_creates_version_1_and_reads_back(subject: Subject) -> None:
    path = subject.path("creds")

    version = await subject.store.write(path, {"access_key_id": "AK1", "secret": "s1"}, cas=None)

    assert version == 1
    secret = await subject.store.read(path)
    assert secret.version == 1
    assert dict(secret.data) == {"access_key_id": "AK1", "secret": "s1"}


async def test_second_write_creates_version_2_and_read_returns_latest(subject: Subject) -> None:
    path = subject.path("creds")
    await subject.store.write(path, {"k": "first"}, cas=None)

    version = await subject.store.write(path, {"k": "second"}, cas=None)

    assert version == 2
    secret = await subject.store.read(path)
    assert (secret.version, dict(secret.data)) == (2, {"k": "second"})


async def test_cas_0_creates_a_missing_secret(subject: Subject) -> None:
    path = subject.path("creds")

    assert await subject.store.write(path, {"k": "v"}, cas=0) == 1
    assert (await subject.store.read(path)).version == 1


async def test_cas_0_on_an_existing_secret_is_a_mismatch_and_writes_nothing(
    subject: Subject,
) -> None:
    path = subject.path("creds")
    await subject.store.write(path, {"k": "original"}, cas=None)

    with pytest.raises(CasMismatch):
        await subject.store.write(path, {"k": "intruder"}, cas=0)

    secret = await subject.store.read(path)
    assert (secret.version, dict(secret.data)) == (1, {"k": "original"})


async def test_cas_equal_to_the_current_version_writes(subject: Subject) -> None:
    path = subject.path("creds")
    await subject.store.write(path, {"k": "v1"}, cas=None)
    await subject.store.write(path, {"k": "v2"}, cas=1)

    version = await subject.store.write(path, {"k": "v3"}, cas=2)

    assert version == 3
    assert dict((await subject.store.read(path)).data) == {"k": "v3"}


async def test_stale_cas_is_a_mismatch_and_leaves_data_unchanged(subject: Subject) -> None:
    path = subject.path("creds")
    await subject.store.write(path, {"k": "v1"}, cas=None)
    await subject.store.write(path, {"k": "v2"}, cas=1)

    with pytest.raises(CasMismatch):
        await subject.store.write(path, {"k": "stale"}, cas=1)

    secret = await subject.store.read(path)
    assert (secret.version, dict(secret.data)) == (2, {"k": "v2"})


async def test_concurrent_writers_with_the_same_cas_exactly_one_wins(subject: Subject) -> None:
    path = subject.path("creds")
    await subject.store.write(path, {"k": "v1"}, cas=None)

    results = await asyncio.gather(
        *(subject.store.write(path, {"k": f"writer-{n}"}, cas=1) for n in range(8)),
        return_exceptions=True,
    )

    winners = [n for n, result in enumerate(results) if result == 2]
    losers = [result for result in results if isinstance(result, CasMismatch)]
    assert len(winners) == 1, results
    assert len(losers) == 7, results
    secret = await subject.store.read(path)
    assert (secret.version, dict(secret.data)) == (2, {"k": f"writer-{winners[0]}"})


async def test_check_passes_on_a_healthy_store(subject: Subject) -> None:
    await subject.store.check()


async def test_the_store_says_it_is_writable(subject: Subject) -> None:
    assert subject.store.writable is True
    assert isinstance(subject.store.kind, str) and subject.store.kind
