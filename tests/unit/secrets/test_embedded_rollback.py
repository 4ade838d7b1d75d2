"""A rolled-back or swapped embedded store is refused (issue 9), on a real sealed file and a
real SQLite watermark (the rotation state store).

- Copy the file, write, put the copy back: the older version is refused (secret_rolled_back),
  by this process and by a new one (the watermark is outside the file), for reads and writes.
- A record moved to another path or version does not open (secret_swapped).
- A file written by the previous format (records not sealed one by one) is read, and the next
  write rewrites it in the new format.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from credbroker.cli import main
from credbroker.errors import CasMismatch, SecretRolledBack
from credbroker.secrets.embedded import EmbeddedSecretStore
from credbroker.secrets.sealing import new_key, seal, unseal
from credbroker.state.sqlite import SqliteStateStore

SERVICE = "credbroker/object-store/service"
ADMIN = "credbroker/object-store/admin"


class Opened:
    """The sealed file, its key, and stores on it as separate processes would have them."""

    def __init__(self, tmp_path: Path) -> None:
        self.file = tmp_path / "secrets.sealed"
        self.key = os.urandom(32)
        self.state = tmp_path / "state" / "rotation.sqlite3"
        self.refusals: list[str] = []
        self.stores: list[EmbeddedSecretStore] = []

    async def store(self, *, watermark: bool = True) -> EmbeddedSecretStore:
        store = EmbeddedSecretStore(
            self.file,
            self.key,
            watermark=await SqliteStateStore.open(self.state) if watermark else None,
            on_refused=self.refusals.append,
        )
        self.stores.append(store)
        return store

    def contents(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(
            unseal(self.key, self.file.read_bytes(), purpose="embedded-secrets")
        )
        return loaded

    def replace_contents(self, contents: dict[str, Any]) -> None:
        plaintext = json.dumps(contents).encode()
        self.file.write_bytes(seal(self.key, plaintext, purpose="embedded-secrets"))


@pytest.fixture
async def opened(tmp_path: Path) -> AsyncIterator[Opened]:
    opened = Opened(tmp_path)
    try:
        yield opened
    finally:
        for store in opened.stores:
            await store.close()


def key_pair(n: int) -> dict[str, str]:
    return {"access_key_id": f"AKID{n}", "secret_access_key": f"secret-{n}"}


async def test_a_copied_back_file_is_refused_by_this_process_and_the_next(
    opened: Opened, caplog: pytest.LogCaptureFixture
) -> None:
    store = await opened.store()
    await store.write(SERVICE, key_pair(1), cas=0)
    copy = opened.file.read_bytes()
    await store.write(SERVICE, key_pair(2), cas=1)  # the rotation
    opened.file.write_bytes(copy)  # the old file is put back

    with caplog.at_level(logging.ERROR, logger="credbroker.secrets.embedded"):
        for _ in range(3):
            with pytest.raises(SecretRolledBack) as refused:
                await store.read(SERVICE)
            assert refused.value.code == "secret_rolled_back"
            assert refused.value.status == 502
        assert "version 1" in refused.value.message and "version 2" in refused.value.message
        assert "secret-1" not in refused.value.message

        # A new process (the CLI, a restarted server) knows nothing in memory: the watermark.
        fresh = await opened.store()
        with pytest.raises(SecretRolledBack):
            await fresh.read(SERVICE)
        with pytest.raises(SecretRolledBack):
            await fresh.read_version(SERVICE, 1)
        with pytest.raises(SecretRolledBack):
            await fresh.versions(SERVICE)
        # Never written over either: not with the old version's cas, not unconditionally.
        for cas in (1, None):
            with pytest.raises(SecretRolledBack):
                await fresh.write(SERVICE, key_pair(3), cas=cas)
        assert opened.file.read_bytes() == copy

    # Loud, and once per process for one rolled-back state, not once per vend.
    lines = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(lines) == 2
    assert all("rolled back" in r.getMessage() and r.exc_info is None for r in lines)
    assert all("secret-" not in r.getMessage() for r in lines)
    assert opened.refusals == ["rolled_back"] * 8


async def test_the_watermark_is_per_path(opened: Opened) -> None:
    store = await opened.store()
    await store.write(SERVICE, key_pair(1), cas=0)
    await store.write(ADMIN, key_pair(10), cas=0)
    copy = opened.file.read_bytes()
    await store.write(SERVICE, key_pair(2), cas=1)
    await store.write("only/in/the/new/file", key_pair(20), cas=0)
    opened.file.write_bytes(copy)

    fresh = await opened.store()
    assert (await fresh.read(ADMIN)).version == 1  # not rolled back: still served
    with pytest.raises(SecretRolledBack):
        await fresh.read(SERVICE)
    # A path the copy never held was seen before: gone is rolled back too, not "not found".
    with pytest.raises(SecretRolledBack, match="no secret"):
        await fresh.read("only/in/the/new/file")
    with pytest.raises(SecretRolledBack):
        await fresh.write("only/in/the/new/file", key_pair(21), cas=0)


async def test_a_deleted_file_is_refused_once_versions_were_seen(opened: Opened) -> None:
    store = await opened.store()
    await store.write(SERVICE, key_pair(1), cas=0)
    opened.file.unlink()
    with pytest.raises(SecretRolledBack):
        await (await opened.store()).read(SERVICE)


async def test_first_start_trusts_what_it_finds_and_newer_versions_move_the_mark(
    opened: Opened,
) -> None:
    # Written with no watermark (an earlier release): the first reader records version 2.
    old = await opened.store(watermark=False)
    await old.write(SERVICE, key_pair(1), cas=0)
    await old.write(SERVICE, key_pair(2), cas=1)
    store = await opened.store()
    assert (await store.read(SERVICE)).version == 2
    # Another writer (the CLI) moves it on; this reader follows, and the mark with it.
    await (await opened.store()).write(SERVICE, key_pair(3), cas=2)
    assert (await store.read(SERVICE)).version == 3
    state = await SqliteStateStore.open(opened.state)
    try:
        assert await state.remember_version(str(opened.file.resolve()), SERVICE, 0) == 3
    finally:
        await state.close()
    assert opened.refusals == []


async def test_without_a_watermark_this_process_still_remembers(opened: Opened) -> None:
    store = await opened.store(watermark=False)
    await store.write(SERVICE, key_pair(1), cas=0)
    copy = opened.file.read_bytes()
    await store.write(SERVICE, key_pair(2), cas=1)
    opened.file.write_bytes(copy)
    with pytest.raises(SecretRolledBack):
        await store.read(SERVICE)


async def test_a_record_moved_to_another_path_is_refused(opened: Opened) -> None:
    store = await opened.store()
    await store.write(SERVICE, key_pair(1), cas=0)
    await store.write(ADMIN, key_pair(10), cas=0)
    contents = opened.contents()
    assert contents["format"] == 2
    assert "data" not in json.dumps(contents["secrets"][SERVICE])  # sealed one by one
    # The admin key's record put where the service key's belongs, same version number.
    contents["secrets"][SERVICE]["versions"]["1"] = contents["secrets"][ADMIN]["versions"]["1"]
    opened.replace_contents(contents)

    with pytest.raises(SecretRolledBack) as refused:
        await store.read(SERVICE)
    assert refused.value.code == "secret_swapped"
    assert "secret-10" not in refused.value.message
    assert (await store.read(ADMIN)).data["secret_access_key"] == "secret-10"
    assert opened.refusals == ["swapped"]


async def test_a_record_moved_to_another_version_is_refused(opened: Opened) -> None:
    store = await opened.store()
    await store.write(SERVICE, key_pair(1), cas=0)
    await store.write(SERVICE, key_pair(2), cas=1)
    contents = opened.contents()
    versions = contents["secrets"][SERVICE]["versions"]
    versions["2"] = versions["1"]  # the old key presented as the newest version
    opened.replace_contents(contents)

    with pytest.raises(SecretRolledBack) as refused:
        await store.read(SERVICE)
    assert refused.value.code == "secret_swapped"
    assert (await store.read_version(SERVICE, 1)).data == key_pair(1)


async def test_a_format_1_file_is_read_and_rewritten_as_format_2(opened: Opened) -> None:
    # What earlier releases wrote: records in clear inside the one sealed file.
    opened.replace_contents(
        {
            "secrets": {
                SERVICE: {
                    "current": 2,
                    "versions": {
                        "1": {"data": key_pair(1), "created_time": "2026-01-01T00:00:00+00:00"},
                        "2": {"data": key_pair(2), "created_time": "2026-02-01T00:00:00+00:00"},
                    },
                }
            }
        }
    )
    store = await opened.store()
    read = await store.read(SERVICE)
    assert (read.version, dict(read.data)) == (2, key_pair(2))
    assert opened.contents().get("format") is None  # reading changes nothing on disk

    assert await store.write(ADMIN, key_pair(10), cas=0) == 1
    contents = opened.contents()
    assert contents["format"] == 2
    assert "secret-" not in json.dumps(contents)  # every kept record sealed on its own
    fresh = await opened.store()
    assert (await fresh.read(SERVICE)).data == key_pair(2)
    assert (await fresh.read_version(SERVICE, 1)).data == key_pair(1)
    assert (await fresh.read(ADMIN)).data == key_pair(10)
    with pytest.raises(CasMismatch):
        await fresh.write(SERVICE, key_pair(3), cas=1)


def test_the_cli_refuses_a_rolled_back_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`credbroker secrets put/get` use the same watermark as the server (the state store)."""
    (tmp_path / "seal.key").write_text(new_key())
    (tmp_path / "seal.key").chmod(0o600)
    config = tmp_path / "credbroker.yaml"
    config.write_text(
        json.dumps(
            {
                "secret_store": {
                    "kind": "embedded",
                    "path": "secrets.sealed",
                    "key_env": "CREDBROKER_TEST_UNSET_KEY",
                    "key_file": "seal.key",
                },
                "object_store": {
                    "endpoint": "http://127.0.0.1:9",
                    "role_arn": "arn:aws:iam:::role/vend",
                    "credentials_path": SERVICE,
                },
                "spaces": {"ENG": {"bucket": "cb-main", "prefix": "ENG/"}},
                "state": {"kind": "sqlite", "path": "rotation-state.sqlite3"},
            }
        )
    )

    def cli(*args: str, stdin: str = "") -> int:
        monkeypatch.setattr(sys, "stdin", _Stdin(stdin))
        return main([*args, "--config", str(config)] if args[0] == "secrets" else list(args))

    assert cli("secrets", "put", SERVICE, stdin=json.dumps(key_pair(1))) == 0
    copy = (tmp_path / "secrets.sealed").read_bytes()
    assert cli("secrets", "put", SERVICE, stdin=json.dumps(key_pair(2))) == 0
    (tmp_path / "secrets.sealed").write_bytes(copy)
    capsys.readouterr()

    assert cli("secrets", "get", SERVICE) == 2
    assert "rolled back" in capsys.readouterr().err
    assert cli("secrets", "put", SERVICE, stdin=json.dumps(key_pair(3))) == 2
    assert (tmp_path / "secrets.sealed").read_bytes() == copy
    assert (tmp_path / "rotation-state.sqlite3").exists()


class _Stdin:
    def __init__(self, text: str) -> None:
        self._text = text

    def read(self) -> str:
        return self._text
