"""The escrow follows the service key at each rotation's switch (wiring._follow_switch), in
the server and in `credbroker rotate` alike, with no share: it then opens to the new key only."""

from __future__ import annotations

from pathlib import Path

from credbroker import wiring
from credbroker.config import Settings
from credbroker.domain import AccessKey
from credbroker.escrow.file import EscrowFile
from credbroker.parent_key import ParentKeySource
from tests.fakes import DOWN, MemorySecretStore

SERVICE = "credbroker/object-store/service"
OLD = AccessKey("AKOLD", "old-secret", 1)
NEW = AccessKey("AKNEW", "new-secret", 2)


def settings(tmp_path: Path) -> Settings:
    return Settings.model_validate(
        {
            "object_store": {"endpoint": "http://127.0.0.1:9000", "credentials_path": SERVICE},
            "spaces": {"ENG": {"bucket": "exports", "prefix": "ENG/"}},
            "break_glass": {"escrow_file": str(tmp_path / "escrow.json")},
        }
    )


async def test_a_switch_of_the_service_key_reseals_the_escrow(tmp_path: Path) -> None:
    config = settings(tmp_path)
    escrow, made = EscrowFile.init(tmp_path / "escrow.json", shares=3, threshold=2)
    store = MemorySecretStore()
    store.put(SERVICE, OLD.as_secret_data())
    credentials = ParentKeySource(store, SERVICE, cache_seconds=60)
    await wiring.refresh_escrow(escrow, credentials)  # at start
    assert escrow.open(list(made.shares[:2])) == OLD

    switched = wiring._follow_switch(config, credentials, None, escrow=escrow)
    store.put(SERVICE, NEW.as_secret_data())
    await switched("credbroker/object-store/read-only")  # another key: the escrow stays
    assert escrow.sealed_key_id() == OLD.access_key_id
    await switched(SERVICE)
    assert escrow.open(list(made.shares[1:])) == NEW
    assert escrow.sealed_key_id() == NEW.access_key_id


async def test_a_refresh_that_cannot_read_the_key_keeps_the_escrow(tmp_path: Path) -> None:
    escrow, made = EscrowFile.init(tmp_path / "escrow.json", shares=3, threshold=2)
    store = MemorySecretStore()
    store.put(SERVICE, OLD.as_secret_data())
    credentials = ParentKeySource(store, SERVICE, cache_seconds=0)
    await wiring.refresh_escrow(escrow, credentials)
    store.down = DOWN
    await wiring.refresh_escrow(escrow, credentials)  # never raises
    assert escrow.open(list(made.shares[:2])) == OLD


def test_build_escrow_follows_the_config(tmp_path: Path) -> None:
    built = wiring.build_escrow(settings(tmp_path))
    assert built is not None and built.path == tmp_path / "escrow.json"
