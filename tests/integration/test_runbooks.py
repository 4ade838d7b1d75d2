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
import re
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hvac
import pytest
import yaml
from botocore.exceptions import ClientError

from credbroker import wiring
from credbroker.callers.tokens import new_token
from credbroker.config import EmbeddedStoreConfig, Settings
from credbroker.secrets.embedded import EmbeddedSecretStore
from credbroker.secrets.sealing import load_key, new_key
from credbroker.secrets.vault import VaultKV2Store
from credbroker.state.sqlite import SqliteStateStore
from support.rgw_server import RgwServer, botocore_client
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
from tests.openbao_server import VaultServer

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


@dataclass
class Secrets:
    """Where a store-agnostic runbook's broker keeps its secrets: the paths, the broker's
    `secret_store` settings (none: the harness's embedded store), and a writer for the test's
    own changes (the harness's store, or an admin client of the real OpenBao)."""

    service: str
    admin: str
    settings: dict[str, Any] | None
    vault: VaultKV2Store | None

    async def write(self, broker: Harness, path: str, data: dict[str, str]) -> None:
        await (self.vault or broker.store).write(path, data, cas=None)

    async def read(self, broker: Harness, path: str) -> dict[str, str]:
        return dict((await (self.vault or broker.store).read(path)).data)


@pytest.fixture(params=["embedded", "openbao"])
async def secrets_at(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Secrets]:
    """The same runbook on the embedded store and on a real OpenBao (Vault KV v2, token auth),
    on paths of its own there, removed afterwards."""
    if request.param == "embedded":
        yield Secrets(SERVICE_PATH, ADMIN_PATH, None, None)
        return
    server: VaultServer = request.getfixturevalue("real_vault")
    root = f"cbbook-{uuid.uuid4().hex[:8]}"
    token_file = tmp_path / "vault-token"
    token_file.write_text(server.token)
    token_file.chmod(0o600)
    settings = {
        "kind": "vault",
        "url": server.addr,
        "mount": server.mount,
        "auth": {"method": "token", "token": {"file": str(token_file)}},
    }
    store = VaultKV2Store(server.addr, mount_point=server.mount, token=server.token)
    try:
        yield Secrets(f"{root}/service", f"{root}/rgw-admin", settings, store)
    finally:
        await store.close()
        admin = hvac.Client(url=server.addr, token=server.token)
        for path in (f"{root}/service", f"{root}/rgw-admin"):
            admin.secrets.kv.v2.delete_metadata_and_all_versions(path, mount_point=server.mount)
        admin.adapter.close()


async def test_runbook_06_repair_clears_the_failing_rotation_on_the_server(
    rgw: RgwServer,
    buckets: tuple[str, str],
    identity: Identity,
    tmp_path: Path,
    secrets_at: Secrets,
) -> None:
    wrong_admin = {"access_key_id": rgw.admin_access_key, "secret_access_key": "not-the-secret"}
    options = identity.rotation_overrides(secrets_at.service, secrets_at.admin, tmp_path, grace=1)
    options["rotation"]["resync_seconds"] = 1
    if secrets_at.settings is not None:
        options["secret_store"] = secrets_at.settings
    seed = {secrets_at.service: identity.initial.as_secret_data(), secrets_at.admin: wrong_admin}
    for path, data in seed.items():
        if secrets_at.vault is not None:
            await secrets_at.vault.write(path, data, cas=None)
    async with started(
        rgw,
        tmp_path,
        admin_clients=["ops-admin"],
        seed=seed if secrets_at.vault is None else {},
        **options,
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
        await secrets_at.write(broker, secrets_at.admin, identity.admin_key.as_secret_data())
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

        # What the runbook promises: a new key in service (in the store the broker reads),
        # the old one gone, and the server's gauges are the state store's figures.
        state = await SqliteStateStore.open(tmp_path / "rotation.sqlite3")
        try:
            record = await state.load("service")
        finally:
            await state.close()
        assert record is not None and record.attempts == 0 and record.last_success_at
        assert identity.access_keys() == [record.current_key_id]
        assert record.current_key_id != identity.initial.access_key_id
        stored = await secrets_at.read(broker, secrets_at.service)
        assert stored["access_key_id"] == record.current_key_id
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


async def test_runbook_02_adds_a_client_live_whose_key_reads_its_space_only(
    broker: Harness, tmp_path: Path
) -> None:
    admin = s3_client(broker.rgw, broker.rgw.admin_access_key, broker.rgw.admin_secret_key)
    admin.put_object(Bucket="cb-main", Key="OPS/runbook-02.txt", Body=b"x")
    admin.put_object(Bucket="cb-main", Key="ENG/runbook-02.txt", Body=b"y")
    conf = write_config(broker.settings, tmp_path / "credbroker.yaml")
    base = str(broker.client.make_url("/")).rstrip("/")
    done = await asyncio.to_thread(
        run_runbook,
        RUNBOOKS / "02-onboard-a-rule.md",
        env=runbook_env(
            CONF=str(conf),
            BROKER=base,
            CLIENT="ops-nightly",
            SPACE="OPS",
            OBJECT="cb-main/OPS/runbook-02.txt",
            OTHER="cb-main/ENG/runbook-02.txt",
        ),
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "cbk_" not in done.stdout + done.stderr  # the token went to the file only
    assert not Path("/tmp/vend.json").exists()  # cleaned up
    assert not (tmp_path / "ops-nightly.token").exists()
    # The promised state, with no restart: the server that was running vended for the new
    # client, with exactly the limits the runbook gave it.
    shown = json.loads(cli(conf, "clients", "show", "ops-nightly", "--json").stdout)
    assert (shown["spaces"], shown["maxAccess"], shown["maxTtlSeconds"]) == (["OPS"], "read", 900)
    assert [t["usable"] for t in shown["tokens"]] == [True]
    records = [json.loads(line) for line in broker.audit_path.read_text().splitlines()]
    vends = [r for r in records if r["event"] == "vend"]
    assert vends and vends[-1]["client"] == "ops-nightly" and vends[-1]["rule"] == "runbook-02"


# --- 03: revoke a client, a leaked token, leaked keys; freeze ----------------------------------


@pytest.fixture
async def revoking_broker(
    rgw: RgwServer, buckets: tuple[str, str], tmp_path: Path, secrets_at: Secrets
) -> AsyncIterator[Harness]:
    """A broker whose revocations RGW enforces (leases.enforcer: rgw-role-policy), on a
    policy name of its own, removed afterwards (as tests/integration/test_revocation_rgw.py);
    its secrets on the embedded store or on OpenBao."""
    policy = f"cbtest-revocations-{uuid.uuid4().hex[:8]}"
    leases = {
        "enforcer": "rgw-role-policy",
        "admin_credentials_path": secrets_at.admin,
        "policy_name": policy,
        "flush_seconds": 0.05,
    }
    admin_key = {"access_key_id": rgw.admin_access_key, "secret_access_key": rgw.admin_secret_key}
    seed: dict[str, dict[str, str]] = {secrets_at.admin: admin_key}
    options: dict[str, Any] = {"leases": leases}
    if secrets_at.vault is not None:
        assert secrets_at.settings is not None
        service = {
            "access_key_id": rgw.broker_access_key,
            "secret_access_key": rgw.broker_secret_key,
        }
        for path, data in {**seed, secrets_at.service: service}.items():
            await secrets_at.vault.write(path, data, cas=None)
        seed = {}
        options["secret_store"] = secrets_at.settings
        options["object_store"] = {
            "flavor": "rgw",
            "endpoint": rgw.endpoint,
            "region": rgw.region,
            "role_arn": rgw.vend_role_arn,
            "credentials_path": secrets_at.service,
        }
    try:
        async with started(rgw, tmp_path, seed=seed, **options) as broker:
            yield broker
    finally:
        iam = botocore_client(rgw, "iam", rgw.admin_access_key, rgw.admin_secret_key)
        if policy in iam.list_role_policies(RoleName="credbroker-vend")["PolicyNames"]:
            iam.delete_role_policy(RoleName="credbroker-vend", PolicyName=policy)
        iam.close()


def cli(conf: Path, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [CB, *args, "--config", str(conf)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def key_works(broker: Harness, key: dict[str, Any]) -> bool:
    s3 = broker.s3_for(key)
    try:
        s3.list_objects_v2(Bucket="cb-main", Prefix="ENG/")
    except ClientError as exc:
        assert exc.response["Error"]["Code"] == "AccessDenied", exc.response
        return False
    finally:
        s3.close()
    return True


async def vend_as(broker: Harness, token: str, seconds: float = 10) -> Any:
    """A read vend of ENG with `token`, once the control plane knows it (within 2 s)."""
    deadline = time.monotonic() + seconds
    while True:
        response = await broker.client.post(
            "/v1/credentials",
            json={"space": "ENG", "access": "read"},
            headers={"Authorization": f"Bearer {token}"},
        )
        if response.status != 401 or time.monotonic() > deadline:
            return response
        await asyncio.sleep(0.2)


@pytest.mark.parametrize("retire", ["no", "yes"])
async def test_runbook_03_revokes_the_token_the_keys_and_freezes_then_lifts(
    revoking_broker: Harness, tmp_path: Path, retire: str
) -> None:
    broker = revoking_broker
    conf = write_config(broker.settings, tmp_path / "credbroker.yaml")
    # The incident: a store client (runbook 02) whose token leaked, with two live keys.
    added = cli(conf, "clients", "add", "leaky", "--space", "ENG", "--issue-token")
    [leaked] = re.findall(r"shown once: (\S+)", added.stdout)
    keys = []
    for _ in range(2):
        response = await vend_as(broker, leaked)
        assert response.status == 201, await response.text()
        keys.append(await response.json())
    other = await broker.vend("eng-writer", {"space": "ENG", "access": "write"})
    assert other.status == 201, await other.text()
    other_key = await other.json()
    assert all(key_works(broker, k) for k in [*keys, other_key])
    deadline = time.monotonic() + 10
    while len(json.loads(cli(conf, "leases", "list", "--client", "leaky", "--json").stdout)) < 2:
        assert time.monotonic() < deadline, "the leases never reached the state store"
        await asyncio.sleep(0.1)
    token_file = tmp_path / "leaked.token"
    token_file.write_text(leaked + "\n")
    token_file.chmod(0o600)

    base = str(broker.client.make_url("/")).rstrip("/")
    done = await asyncio.to_thread(
        run_runbook,
        RUNBOOKS / "03-revoke-a-client.md",
        env=runbook_env(
            CONF=str(conf),
            BROKER=base,
            CLIENT="leaky",
            INCIDENT="INC-42",
            LEAKED_TOKEN_FILE=str(token_file),
            LEAKED_KEY_ID=keys[0]["accessKeyId"],
            FREEZE_SPACE="ENG",
            RETIRE=retire,
        ),
        cwd=tmp_path,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert leaked not in done.stdout + done.stderr
    assert "object store enforced: yes" in done.stdout

    # The leaked token is refused; its live keys are refused by RGW; others keep working.
    refused = await broker.client.post(
        "/v1/credentials",
        json={"space": "ENG", "access": "read"},
        headers={"Authorization": f"Bearer {leaked}"},
    )
    assert refused.status == 401, await refused.text()
    assert not any(key_works(broker, k) for k in keys)
    assert key_works(broker, other_key)
    fresh = await broker.vend("eng-writer", {"space": "ENG", "access": "write"})
    assert fresh.status == 201, await fresh.text()  # the freeze is lifted
    assert key_works(broker, await fresh.json())
    leases = json.loads(cli(conf, "leases", "list", "--client", "leaky", "--json").stdout)
    # Every lease of the client is revoked: the two keys, and any the runbook's own check
    # vended with the old token before the revocation reached the server (part B follows it).
    assert {k["leaseId"] for k in keys} <= {x["leaseId"] for x in leases}
    assert {x["state"] for x in leases} == {"revoked"}

    # The freeze was in place (the runbook waited for /readyz to list it), and is lifted.
    freezes = json.loads(cli(conf, "freeze", "--list", "--all", "--json").stdout)
    assert [(f["space"], f["reason"], bool(f["liftedAt"])) for f in freezes] == [
        ("ENG", "INC-42 investigating", True)
    ]

    # A rule kept running gets a new token that works; a retired client is gone.
    new_token = tmp_path / "leaky.new-token"
    shown = cli(conf, "clients", "show", "leaky", "--json")
    if retire == "no":
        assert new_token.stat().st_mode & 0o077 == 0
        [token] = re.findall(r"shown once: (\S+)", new_token.read_text())
        replaced = await vend_as(broker, token)
        assert replaced.status == 201, await replaced.text()
        assert key_works(broker, await replaced.json())
        assert json.loads(shown.stdout)["revokedAt"] is None
    else:
        assert not new_token.exists()
        assert json.loads(shown.stdout)["revokedAt"]
