"""The SecretStore contract (Vault KV v2 semantics), run unchanged against every adapter.

Adapters come from the `subject` fixture in conftest.py. A read-only store (CyberArk CCP:
its owner changes secrets, never the broker) must refuse every write with
SecretStoreReadOnly and write nothing: each write case proves that instead, on such a store
only; a writable store runs the write cases in full.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from credbroker.errors import CasMismatch, SecretNotFound, SecretStoreReadOnly

if TYPE_CHECKING:
    from tests.contract.conftest import Subject


async def refused_as_read_only(subject: Subject, path: str, *, cas: int | None = None) -> bool:
    """On a read-only store: prove the write is refused and wrote nothing, and say so (the
    caller's write case ends there). On a writable store: False, nothing done."""
    if subject.writable:
        assert subject.store.writable is True
        return False
    assert subject.store.writable is False
    before = await _current(subject, path)
    with pytest.raises(SecretStoreReadOnly):
        await subject.store.write(path, {"access_key_id": "AKW", "secret_access_key": "w"}, cas=cas)
    assert await _current(subject, path) == before
    return True


async def _current(subject: Subject, path: str) -> tuple[int, dict[str, str]] | None:
    try:
        secret = await subject.store.read(path)
    except SecretNotFound:
        return None
    return secret.version, dict(secret.data)


async def test_reading_a_missing_secret_raises_secret_not_found(subject: Subject) -> None:
    with pytest.raises(SecretNotFound):
        await subject.store.read(subject.path("missing"))


async def test_first_write_creates_version_1_and_reads_back(subject: Subject) -> None:
    path = subject.path("creds")
    if await refused_as_read_only(subject, path):
        return

    version = await subject.store.write(path, {"access_key_id": "AK1", "secret": "s1"}, cas=None)

    assert version == 1
    secret = await subject.store.read(path)
    assert secret.version == 1
    assert dict(secret.data) == {"access_key_id": "AK1", "secret": "s1"}


async def test_second_write_creates_version_2_and_read_returns_latest(subject: Subject) -> None:
    path = subject.path("creds")
    if await refused_as_read_only(subject, path):
        return
    await subject.store.write(path, {"k": "first"}, cas=None)

    version = await subject.store.write(path, {"k": "second"}, cas=None)

    assert version == 2
    secret = await subject.store.read(path)
    assert (secret.version, dict(secret.data)) == (2, {"k": "second"})


async def test_cas_0_creates_a_missing_secret(subject: Subject) -> None:
    path = subject.path("creds")
    if await refused_as_read_only(subject, path, cas=0):
        return

    assert await subject.store.write(path, {"k": "v"}, cas=0) == 1
    assert (await subject.store.read(path)).version == 1


async def test_cas_0_on_an_existing_secret_is_a_mismatch_and_writes_nothing(
    subject: Subject,
) -> None:
    path = subject.path("creds")
    if await refused_as_read_only(subject, path, cas=0):
        return
    await subject.store.write(path, {"k": "original"}, cas=None)

    with pytest.raises(CasMismatch):
        await subject.store.write(path, {"k": "intruder"}, cas=0)

    secret = await subject.store.read(path)
    assert (secret.version, dict(secret.data)) == (1, {"k": "original"})


async def test_cas_equal_to_the_current_version_writes(subject: Subject) -> None:
    path = subject.path("creds")
    if await refused_as_read_only(subject, path, cas=1):
        return
    await subject.store.write(path, {"k": "v1"}, cas=None)
    await subject.store.write(path, {"k": "v2"}, cas=1)

    version = await subject.store.write(path, {"k": "v3"}, cas=2)

    assert version == 3
    assert dict((await subject.store.read(path)).data) == {"k": "v3"}


async def test_stale_cas_is_a_mismatch_and_leaves_data_unchanged(subject: Subject) -> None:
    path = subject.path("creds")
    if await refused_as_read_only(subject, path, cas=1):
        return
    await subject.store.write(path, {"k": "v1"}, cas=None)
    await subject.store.write(path, {"k": "v2"}, cas=1)

    with pytest.raises(CasMismatch):
        await subject.store.write(path, {"k": "stale"}, cas=1)

    secret = await subject.store.read(path)
    assert (secret.version, dict(secret.data)) == (2, {"k": "v2"})


async def test_concurrent_writers_with_the_same_cas_exactly_one_wins(subject: Subject) -> None:
    path = subject.path("creds")
    if await refused_as_read_only(subject, path, cas=1):
        return
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


async def test_the_store_says_whether_it_is_writable(subject: Subject) -> None:
    assert subject.store.writable is subject.writable
    assert isinstance(subject.store.kind, str) and subject.store.kind


# --- what every store does with a secret its owner put there ---------------------------------

KEY_1 = {"access_key_id": "AKOWNER1", "secret_access_key": "owner-secret-1"}
KEY_2 = {"access_key_id": "AKOWNER2", "secret_access_key": "owner-secret-2"}


async def _owned(subject: Subject) -> str:
    """A path holding a key: the given one (a real CCP's account) or one the owner writes."""
    if subject.existing is not None:
        return subject.existing
    assert subject.owner is not None
    path = subject.path("creds")
    await subject.owner(path, KEY_1)
    return path


async def test_a_secret_reads_back_the_same_with_a_stable_version(subject: Subject) -> None:
    path = await _owned(subject)

    first, second = await subject.store.read(path), await subject.store.read(path)

    assert first.version >= 1
    assert (second.version, dict(second.data)) == (first.version, dict(first.data))
    assert first.get("access_key_id") and first.get("secret_access_key")
    if subject.existing is None:
        assert dict(first.data) == KEY_1


async def test_read_version_of_the_current_version_is_the_current_secret(subject: Subject) -> None:
    path = await _owned(subject)
    current = await subject.store.read(path)

    again = await subject.store.read_version(path, current.version)

    assert (again.version, dict(again.data)) == (current.version, dict(current.data))


async def test_an_owner_change_is_a_new_version_and_the_old_one_is_never_served_as_current(
    subject: Subject,
) -> None:
    if subject.owner is None:
        pytest.skip("this store's owner cannot be driven from the suite (a real CCP)")
    path = subject.path("creds")
    await subject.owner(path, KEY_1)
    old = await subject.store.read(path)

    await subject.owner(path, KEY_2)
    new = await subject.store.read(path)

    assert new.version > old.version
    assert dict(new.data) == KEY_2
    # An older version is either kept (Vault, embedded) or gone (CCP keeps none): never the
    # new secret under the old number.
    try:
        kept = await subject.store.read_version(path, old.version)
    except SecretNotFound:
        return
    assert dict(kept.data) == KEY_1
