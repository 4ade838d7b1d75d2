"""The runbooks' marked command blocks (```bash runbook) run as written against the real RGW,
and each test asserts the state its runbook promises afterwards (support/runbooks.py).

- 06 (repair a failed rotation): after `credbroker rotate --now --wait` from the CLI, the
  server process's /metrics shows the state store's figures (failure streak 0, the CLI's last
  success) at its next resync, so the failing-rotation alert clears.
- 05 (re-seal under a new key): every configured secret (service, read-only, RGW admin) is in
  the new store, the broker on the new config is ready and vends, the CLI rotated the parent
  key in the new store and the old parent key is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from credbroker import wiring
from credbroker.callers.tokens import new_token
from credbroker.config import EmbeddedStoreConfig, Settings
from credbroker.secrets.embedded import EmbeddedSecretStore
from credbroker.secrets.sealing import load_key, new_key
from credbroker.state.sqlite import SqliteStateStore
from support.rgw_server import RgwServer
from support.runbooks import run_runbook
from tests.integration.conftest import (
    READ_ONLY_PATH,
    SERVICE_PATH,
    Harness,
    s3_client,
    start_broker,
)
from tests.integration.rgw_identity import Identity, create_identity
from tests.integration.test_fallback import fallback_config

pytestmark = pytest.mark.rgw

ROOT = Path(__file__).parents[2]
RUNBOOKS = ROOT / "runbooks"
ADMIN_PATH = "credbroker/object-store/rgw-admin"
CB = str(Path(sys.executable).parent / "credbroker")


@pytest.fixture
def identity(rgw: RgwServer) -> Any:
    made = create_identity(rgw, prefix="cbbook")
    try:
        yield made
    finally:
        made.remove()


def write_config(settings: Settings, path: Path) -> Path:
    path.write_text(yaml.safe_dump(settings.model_dump(mode="json", exclude_none=True)))
    return path


def runbook_env(**extra: str) -> dict[str, str]:
    return {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), "CB": CB, **extra}


def overrides(identity: Identity, state: Path, *, grace: float) -> dict[str, Any]:
    settings = identity.rotation_overrides(SERVICE_PATH, ADMIN_PATH, state, grace=grace)
    settings["rotation"]["resync_seconds"] = 1
    return settings


@contextlib.asynccontextmanager
async def started(rgw: RgwServer, folder: Path, /, **options: Any) -> AsyncIterator[Harness]:
    async with contextlib.aclosing(start_broker(rgw, folder, **options)) as brokers:
        async for harness in brokers:
            yield harness
            return


async def test_runbook_06_repair_clears_the_failing_rotation_on_the_server(
    rgw: RgwServer, buckets: tuple[str, str], identity: Identity, tmp_path: Path
) -> None:
    wrong_admin = {"access_key_id": rgw.admin_access_key, "secret_access_key": "not-the-secret"}
    async with started(
        rgw,
        tmp_path,
        admin_clients=["ops-admin"],
        seed={SERVICE_PATH: identity.initial.as_secret_data(), ADMIN_PATH: wrong_admin},
        **overrides(identity, tmp_path, grace=1),
    ) as broker:
        # Two failed rotations in the server process (the admin key in the store is wrong).
        for _ in range(2):
            failed = await broker.client.post(
                "/v1/admin/rotations/service",
                headers={"Authorization": f"Bearer {broker.tokens['ops-admin']}"},
            )
            assert failed.status == 502, await failed.text()
        metrics = await (await broker.client.get("/metrics")).text()
        assert 'credbroker_rotation_consecutive_failures{credential="service"} 2.0' in metrics

        # The cause is fixed (the right admin key), then the runbook's repair from the CLI.
        await broker.store.write(ADMIN_PATH, identity.admin_key.as_secret_data(), cas=None)
        conf = write_config(broker.settings, tmp_path / "credbroker.yaml")
        base = str(broker.client.make_url("/")).rstrip("/")
        done = await asyncio.to_thread(
            run_runbook,
            RUNBOOKS / "06-rotation.md",
            env=runbook_env(CONF=str(conf), BROKER=base),
            cwd=tmp_path,
            timeout=180,
        )
        metrics = await (await broker.client.get("/metrics")).text()
        assert done.returncode == 0, done.stdout + done.stderr + metrics

        # What the runbook promises: a new key in service, the old one gone, and the server's
        # gauges are the state store's figures.
        state = await SqliteStateStore.open(tmp_path / "rotation.sqlite3")
        try:
            record = await state.load("service")
        finally:
            await state.close()
        assert record is not None and record.attempts == 0 and record.last_success_at
        assert identity.access_keys() == [record.current_key_id]
        assert record.current_key_id != identity.initial.access_key_id
        metrics = await (await broker.client.get("/metrics")).text()
        assert 'credbroker_rotation_consecutive_failures{credential="service"} 0.0' in metrics
        success = record.last_success_at.timestamp()
        line = 'credbroker_rotation_last_success_timestamp_seconds{credential="service"} '
        exported = [float(x.removeprefix(line)) for x in metrics.splitlines() if x.startswith(line)]
        assert exported == [pytest.approx(success, abs=1e-3)]
        for secret in (rgw.admin_secret_key, identity.initial.secret_access_key):
            assert secret not in done.stdout + done.stderr


async def test_runbook_05_carries_every_secret_into_the_new_store(
    rgw: RgwServer, buckets: tuple[str, str], identity: Identity, tmp_path: Path
) -> None:
    read_only = {
        "access_key_id": rgw.readonly_access_key,
        "secret_access_key": rgw.readonly_secret_key,
    }
    options = {
        **overrides(identity, tmp_path, grace=1),
        "fallback": fallback_config(rgw, tmp_path),
        "readiness": {"canary_seconds": 1},
    }
    seed = {
        **identity.broker_seed(SERVICE_PATH, ADMIN_PATH),
        READ_ONLY_PATH: read_only,
    }
    async with started(rgw, tmp_path, seed=seed, **options) as broker:
        body = await ready(broker)
        settings = broker.settings
    conf = write_config(settings, tmp_path / "credbroker.yaml")

    done = await asyncio.to_thread(
        run_runbook,
        RUNBOOKS / "05-seal-key.md",
        env=runbook_env(CONF=str(conf), ETC=str(tmp_path)),
        cwd=tmp_path,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for secret in (rgw.readonly_secret_key, rgw.admin_secret_key):
        assert secret not in done.stdout + done.stderr

    # The runbook switched the config to the new store, sealed under the new key.
    new = Settings.model_validate(yaml.safe_load(conf.read_text()))
    assert isinstance(new.secret_store, EmbeddedStoreConfig)
    assert new.secret_store.path == tmp_path / "secrets.sealed.new"
    assert new.secret_store.key_file == tmp_path / "seal.key.new"
    assert (tmp_path / "credbroker.yaml.prev").exists()

    # The broker on the new config (the restart): ready with every check, and it vends.
    store = wiring.build_secret_store(new)
    try:
        carried = {p: dict((await store.read(p)).data) for p in (READ_ONLY_PATH, ADMIN_PATH)}
    finally:
        await store.close()
    assert carried == {READ_ONLY_PATH: read_only, ADMIN_PATH: identity.admin_key.as_secret_data()}
    async with started(rgw, tmp_path, seed={}, **_as_overrides(new)) as broker:
        body = await ready(broker)
        assert all(check["ok"] for check in body["checks"].values()), body
        vended = await broker.vend("eng-reader", {"space": "ENG", "access": "read"})
        assert vended.status == 201, await vended.text()
        key = await vended.json()
        broker.s3_for(key).list_objects_v2(Bucket="cb-main", Prefix="ENG/")
    store = wiring.build_secret_store(new)
    try:
        current = (await store.read(SERVICE_PATH)).data["access_key_id"]
    finally:
        await store.close()

    # Option 1: the parent key was rotated in the new store; the old one is refused.
    assert current != identity.initial.access_key_id
    assert identity.access_keys() == [current]
    old = s3_client(rgw, identity.initial.access_key_id, identity.initial.secret_access_key)
    with pytest.raises(Exception, match=r"AccessDenied|InvalidAccessKeyId"):
        old.list_buckets()


def _as_overrides(settings: Settings) -> dict[str, Any]:
    """start_broker overrides that run `settings` as they are (its own store and clients are
    replaced by the harness's; the store's location and key are what the runbook made)."""
    raw = settings.model_dump(mode="json", exclude_none=True)
    return {k: raw[k] for k in ("secret_store", "object_store", "fallback", "rotation", "state")}


async def ready(harness: Harness, seconds: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while True:
        response = await harness.client.get("/readyz")
        body: dict[str, Any] = await response.json()
        if response.status == 200 and body["status"] == "ready":
            return body
        assert time.monotonic() < deadline, json.dumps(body)
        await asyncio.sleep(0.2)


async def test_runbook_01_validates_and_puts_the_parent_key_into_the_state_dir(
    rgw: RgwServer, tmp_path: Path
) -> None:
    etc, state = tmp_path / "etc", tmp_path / "state"
    etc.mkdir()
    state.mkdir()
    (etc / "seal.key").write_text(new_key())
    (etc / "seal.key").chmod(0o600)
    _, digest = new_token()
    config = {
        "secret_store": {"kind": "embedded", "key_env": "CB_UNSET_KEY", "key_file": "seal.key"},
        "object_store": {
            "flavor": "rgw",
            "endpoint": rgw.endpoint,
            "role_arn": rgw.vend_role_arn,
            "credentials_path": SERVICE_PATH,
        },
        "spaces": {"ENG": {"bucket": "cb-main", "prefix": "ENG/"}},
        "clients": [{"id": "eng-reader", "token_sha256": digest, "spaces": ["ENG"]}],
    }
    conf = etc / "credbroker.yaml"
    conf.write_text(yaml.safe_dump(config))
    keys = tmp_path / "credbroker.json"
    keys.write_text(
        json.dumps(
            {"access_key_id": rgw.broker_access_key, "secret_access_key": rgw.broker_secret_key}
        )
    )
    done = await asyncio.to_thread(
        run_runbook,
        RUNBOOKS / "01-deploy.md",
        env=runbook_env(CONF=str(conf), KEYS_FILE=str(keys), CREDBROKER_STATE_DIR=str(state)),
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{conf}: ok" in done.stdout
    assert rgw.broker_secret_key not in done.stdout + done.stderr
    # The promised state: the key is in the store under the state dir, nothing beside the config.
    assert {p.name for p in etc.iterdir()} == {"seal.key", "credbroker.yaml"}
    store = EmbeddedSecretStore(state / "secrets.sealed", load_key(key_file=etc / "seal.key"))
    assert (await store.read(SERVICE_PATH)).data["access_key_id"] == rgw.broker_access_key


async def test_runbook_02_verify_vends_a_key_that_reads_its_space_only(
    broker: Harness, tmp_path: Path
) -> None:
    admin = s3_client(broker.rgw, broker.rgw.admin_access_key, broker.rgw.admin_secret_key)
    admin.put_object(Bucket="cb-main", Key="ENG/runbook-02.txt", Body=b"x")
    admin.put_object(Bucket="cb-main", Key="OPS/runbook-02.txt", Body=b"y")
    base = str(broker.client.make_url("/")).rstrip("/")
    done = await asyncio.to_thread(
        run_runbook,
        RUNBOOKS / "02-onboard-a-rule.md",
        env=runbook_env(
            BROKER=base,
            TOKEN=broker.tokens["eng-reader"],
            SPACE="ENG",
            OBJECT="cb-main/ENG/runbook-02.txt",
            OTHER="cb-main/OPS/runbook-02.txt",
        ),
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert not Path("/tmp/vend.json").exists()  # cleaned up
    records = [json.loads(line) for line in broker.audit_path.read_text().splitlines()]
    vends = [r for r in records if r["event"] == "vend"]
    assert vends and vends[-1]["client"] == "eng-reader" and vends[-1]["rule"] == "runbook-02"
