"""A failed write to the embedded store must change nothing, in memory or on disk."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from credbroker.errors import SealError
from credbroker.secrets import embedded
from credbroker.secrets.embedded import EmbeddedSecretStore
from credbroker.secrets.sealing import load_key, new_key, write_atomically


async def test_a_failed_write_leaves_the_old_version_current(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = EmbeddedSecretStore(tmp_path / "s.sealed", os.urandom(32))
    await store.write("svc", {"v": "one"}, cas=0)

    def disk_full(path: Path, data: bytes) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(embedded, "write_atomically", disk_full)
    with pytest.raises(OSError):
        await store.write("svc", {"v": "two"}, cas=1)

    current = await store.read("svc")
    assert (current.version, dict(current.data)) == (1, {"v": "one"})
    assert await store.versions("svc") == [1]
    fresh = EmbeddedSecretStore(tmp_path / "s.sealed", store._key)
    assert (await fresh.read("svc")).version == 1


def test_concurrent_atomic_writes_never_share_a_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "cache.sealed"
    payloads = [bytes([i]) * 50_000 for i in range(8)]
    errors: list[BaseException] = []

    def write(data: bytes) -> None:
        try:
            for _ in range(20):
                write_atomically(target, data)
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(p,)) for p in payloads]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert target.read_bytes() in payloads  # whole, never a mix or a truncation
    assert [p.name for p in tmp_path.iterdir()] == ["cache.sealed"]
    assert oct(target.stat().st_mode & 0o777) == "0o600"


def test_a_key_file_others_can_read_is_refused(tmp_path: Path) -> None:
    key_file = tmp_path / "seal.key"
    key = new_key()
    key_file.write_text(key)
    key_file.chmod(0o644)
    with pytest.raises(
        SealError, match=r"readable by group or others \(mode 0644\).*chmod 600"
    ) as info:
        load_key(key_file=key_file)
    assert key not in info.value.message
    key_file.chmod(0o640)
    with pytest.raises(SealError, match="mode 0640"):
        load_key(key_file=key_file)
    key_file.chmod(0o600)
    assert len(load_key(key_file=key_file)) == 32
