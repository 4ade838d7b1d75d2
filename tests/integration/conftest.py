"""A real broker (embedded store, real RGW) driven through aiohttp's test client.

start_broker(..., vault=VaultDouble) runs the same broker on Vault KV v2 (the double) instead,
with the service keys and the read-only identity's keys seeded there; ccp=CcpDouble on CyberArk
CCP (the double over mTLS), the same keys as CyberArk accounts.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from aiohttp.test_utils import TestClient, TestServer

from credbroker.callers.tokens import new_token
from credbroker.config import Settings
from credbroker.ports import SecretStore
from credbroker.secrets.embedded import EmbeddedSecretStore
from credbroker.secrets.sealing import load_key, new_key
from credbroker.secrets.vault import VaultKV2Store
from credbroker.web.app import create_app
from support.rgw_server import RgwServer, create_bucket
from tests.doubles.cyberark_ccp import CcpDouble
from tests.doubles.vault import VaultDouble
from tests.integration import ccp_settings

MAIN_BUCKET = "cb-main"
OTHER_BUCKET = "cb-other"
SERVICE_PATH = "credbroker/object-store/service"
READ_ONLY_PATH = "credbroker/object-store/read-only"
VAULT_TOKEN = "hvs.integration-token-must-never-leak-8c2f"


@pytest.fixture(scope="session")
def buckets(rgw: RgwServer) -> Iterator[tuple[str, str]]:
    s3 = s3_client(rgw, rgw.admin_access_key, rgw.admin_secret_key)
    for bucket in (MAIN_BUCKET, OTHER_BUCKET):
        # Set up as vendor/rgw prescribes: IgnorePublicAcls, and the owner may read what
        # role sessions write.
        create_bucket(s3, rgw, bucket)
    yield MAIN_BUCKET, OTHER_BUCKET


def s3_client(rgw: RgwServer, access_key: str, secret_key: str, token: str | None = None) -> Any:
    return botocore.session.get_session().create_client(
        "s3",
        endpoint_url=rgw.endpoint,
        region_name=rgw.region,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        aws_session_token=token,
    )


@dataclass
class Harness:
    client: TestClient[Any, Any]
    rgw: RgwServer
    settings: Settings
    store: SecretStore
    tokens: dict[str, str]
    audit_path: Path

    async def vend(self, token_for: str, body: dict[str, Any]) -> Any:
        return await self.client.post(
            "/v1/credentials",
            json=body,
            headers={"Authorization": f"Bearer {self.tokens[token_for]}"},
        )

    def s3_for(self, vended: dict[str, Any]) -> Any:
        return s3_client(
            self.rgw, vended["accessKeyId"], vended["secretAccessKey"], vended["sessionToken"]
        )


def broker_settings(
    rgw: RgwServer,
    state: Path,
    hashes: dict[str, str],
    /,  # positional-only: a `state=` override (the rotation state store) goes to **overrides
    *,
    extra_clients: Sequence[Mapping[str, Any]] = (),
    **overrides: Any,
) -> Settings:
    key_file = state / "seal.key"
    if not key_file.exists():
        key_file.write_text(new_key())
        key_file.chmod(0o600)
    raw: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "port": 0},
        "secret_store": {
            "kind": "embedded",
            "path": str(state / "secrets.sealed"),
            "key_env": "CREDBROKER_TEST_UNSET_KEY",
            "key_file": str(key_file),
        },
        "secret_cache_seconds": 0,
        "object_store": {
            "flavor": "rgw",
            "endpoint": rgw.endpoint,
            "region": rgw.region,
            "role_arn": rgw.vend_role_arn,
            "credentials_path": SERVICE_PATH,
            "ttl": {"min_seconds": 900, "default_seconds": 900, "max_seconds": 3600},
        },
        "spaces": {
            "ENG": {"bucket": MAIN_BUCKET, "prefix": "ENG/"},
            "OPS": {"bucket": MAIN_BUCKET, "prefix": "OPS/"},
            "FIN": {"bucket": OTHER_BUCKET, "prefix": "finance/"},
        },
        "clients": [
            {
                "id": "eng-writer",
                "token_sha256": hashes["eng-writer"],
                "spaces": ["ENG"],
                "max_access": "write",
                "max_ttl_seconds": 1800,
            },
            {
                "id": "eng-reader",
                "token_sha256": hashes["eng-reader"],
                "spaces": ["ENG"],
                "max_access": "read",
                "max_ttl_seconds": 3600,
            },
            {
                "id": "ops-writer",
                "token_sha256": hashes["ops-writer"],
                "spaces": ["OPS"],
                "max_access": "write",
            },
        ],
        "audit": {"path": str(state / "audit.jsonl")},
        # The rotation state store, and the embedded store's rollback watermark: per test.
        "state": {"kind": "sqlite", "path": str(state / "rotation-state.sqlite3")},
    }
    raw["clients"].extend(extra_clients)
    raw.update(overrides)
    return Settings.model_validate(json.loads(json.dumps(raw)))


@pytest.fixture
async def broker(
    rgw: RgwServer, buckets: tuple[str, str], tmp_path: Path
) -> AsyncIterator[Harness]:
    # aclosing: a failing test still shuts the app down now, not at loop teardown.
    async with contextlib.aclosing(start_broker(rgw, tmp_path)) as brokers:
        async for harness in brokers:
            yield harness


def vault_store_config(vault: VaultDouble, state: Path, **options: Any) -> dict[str, Any]:
    """`secret_store` settings for the Vault double: token auth, the token in a file."""
    token_file = state / "vault-token"
    token_file.write_text(VAULT_TOKEN)
    auth = {"method": "token", "token": {"file": str(token_file)}}
    return {"kind": "vault", "url": vault.url, "auth": auth, **options}


async def start_broker(
    rgw: RgwServer,
    state: Path,
    /,  # positional-only: a `state=` override (the rotation state store) goes to **overrides
    *,
    vault: VaultDouble | None = None,
    ccp: CcpDouble | None = None,
    admin_clients: Sequence[str] = (),
    seed: Mapping[str, Mapping[str, str]] | None = None,
    **overrides: Any,
) -> AsyncGenerator[Harness, None]:
    """`admin_clients`: extra clients with admin: true (space ENG), tokens in Harness.tokens.
    `seed`: secrets written to the store after the defaults, before the broker starts."""
    tokens, hashes = {}, {}
    for name in ("eng-writer", "eng-reader", "ops-writer", *admin_clients):
        tokens[name], hashes[name] = new_token()
    extra = [
        {"id": name, "token_sha256": hashes[name], "spaces": ["ENG"], "admin": True}
        for name in admin_clients
    ]
    if vault is not None:
        overrides.setdefault("secret_store", vault_store_config(vault, state))
    if ccp is not None:  # CyberArk owns the keys: seeded in the double, read-only for us
        ccp_settings.seed(ccp, rgw)
        overrides.setdefault(
            "secret_store",
            ccp_settings.ccp_store_config(
                ccp,
                {
                    SERVICE_PATH: ccp_settings.SERVICE_OBJECT,
                    READ_ONLY_PATH: ccp_settings.READ_ONLY_OBJECT,
                },
            ),
        )
    settings = broker_settings(rgw, state, hashes, extra_clients=extra, **overrides)
    store: SecretStore
    if ccp is not None:
        store = ccp_settings.ccp_store(ccp, overrides["secret_store"], SERVICE_PATH)
    elif vault is None:
        store = EmbeddedSecretStore(state / "secrets.sealed", load_key(key_file=state / "seal.key"))
        await store.write(
            SERVICE_PATH,
            {"access_key_id": rgw.broker_access_key, "secret_access_key": rgw.broker_secret_key},
            cas=None,
        )
    else:
        vault.add_token(VAULT_TOKEN)
        vault.put(
            SERVICE_PATH,
            {"access_key_id": rgw.broker_access_key, "secret_access_key": rgw.broker_secret_key},
        )
        vault.put(
            READ_ONLY_PATH,
            {
                "access_key_id": rgw.readonly_access_key,
                "secret_access_key": rgw.readonly_secret_key,
            },
        )
        store = VaultKV2Store(vault.url, token=VAULT_TOKEN, timeout_seconds=3)
    for path, data in (seed or {}).items():
        await store.write(path, dict(data), cas=None)
    client = TestClient(TestServer(create_app(settings)))
    await client.start_server()
    try:
        yield Harness(client, rgw, settings, store, tokens, state / "audit.jsonl")
    finally:
        await client.close()
        if vault is not None or ccp is not None:
            await store.close()
