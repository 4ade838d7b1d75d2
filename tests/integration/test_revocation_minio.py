"""Revocation on MinIO through the whole product, wired from real Settings: the web app vends
over HTTP (each AssumeRole tagged TokenRevokeType = lease id), an admin revokes over
POST /v1/admin/revocations, and the CLI's path (wiring.standalone_leases, as `credbroker revoke`
runs it) revokes by client; leases.enforcer minio-sts-revoke deletes the keys with MinIO's
revoke-tokens. On the MinIO double and the Vault double, with a SQLite state store.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from credbroker import wiring
from credbroker.callers.tokens import new_token
from credbroker.config import Settings
from credbroker.domain import AccessKey
from credbroker.leases import LeaseFilter, Selector
from credbroker.secrets.vault import VaultKV2Store
from credbroker.web.app import create_app
from tests.doubles.minio_admin import MinioAdminDouble
from tests.doubles.vault import VaultDouble

PATH = "credbroker/object-store/service"
REVOKER = "credbroker/object-store/minio-revoker"
PARENT = "credbroker-a"
BUCKET = "confluence-exports"
OBJECT = f"/{BUCKET}/ENG/page.html"
POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Action": ["s3:*"],
            "Resource": [f"arn:aws:s3:::{BUCKET}", f"arn:aws:s3:::{BUCKET}/*"],
        }
    ],
}


@dataclass
class World:
    minio: MinioAdminDouble
    settings: Settings
    http: TestClient[Any, Any]
    rule: str
    ops: str

    async def vend(self, client: str = "rule") -> dict[str, Any]:
        token = self.rule if client == "rule" else self.ops
        response = await self.http.post(
            "/v1/credentials",
            json={"space": "ENG", "access": "read"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert response.status == 201, await response.text()
        body: dict[str, Any] = await response.json()
        return body

    async def get(self, key: dict[str, Any]) -> tuple[int, str]:
        """GET the object with a vended key: the status and MinIO's error code."""
        request = AWSRequest(method="GET", url=self.minio.endpoint + OBJECT)
        credentials = Credentials(key["accessKeyId"], key["secretAccessKey"], key["sessionToken"])
        S3SigV4Auth(credentials, "s3", self.minio.region).add_auth(request)
        async with (
            aiohttp.ClientSession() as http,
            http.get(request.url, headers=dict(request.headers.items())) as response,
        ):
            text = await response.text()
        code = text.split("<Code>", 1)[1].split("</Code>", 1)[0] if "<Code>" in text else ""
        return response.status, code


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async with MinioAdminDouble() as minio, VaultDouble() as vault:
        parent = AccessKey(PARENT, secrets.token_urlsafe(24))
        revoker = AccessKey("credbroker-revoker", secrets.token_urlsafe(24))
        minio.add_user(parent.access_key_id, parent.secret_access_key)
        minio.add_user(revoker.access_key_id, revoker.secret_access_key, admin=True)
        minio.set_policy("credbroker-parent", POLICY)
        minio.attach(PARENT, "credbroker-parent")
        minio.put_object(BUCKET, "ENG/page.html", b"<html/>")
        vault.add_token("root-token")
        store = VaultKV2Store(vault.url, token="root-token")
        await store.write(PATH, parent.as_secret_data(), cas=0)
        await store.write(REVOKER, revoker.as_secret_data(), cas=0)
        await store.close()
        (tmp_path / "token").write_text("root-token")
        rule, rule_hash = new_token()
        ops, ops_hash = new_token()
        settings = Settings.model_validate(
            {
                "secret_store": {
                    "kind": "vault",
                    "url": vault.url,
                    "auth": {"method": "token", "token": {"file": str(tmp_path / "token")}},
                },
                "secret_cache_seconds": 0,
                "object_store": {
                    "flavor": "minio",
                    "endpoint": minio.endpoint,
                    "region": minio.region,
                },
                "spaces": {"ENG": {"bucket": BUCKET, "prefix": "ENG/"}},
                "audit": {"path": str(tmp_path / "audit.jsonl")},
                "state": {"kind": "sqlite", "path": str(tmp_path / "state.sqlite3")},
                "leases": {
                    "enforcer": "minio-sts-revoke",
                    "admin_credentials_path": REVOKER,
                    "flush_seconds": 0.05,
                },
                "clients": [
                    {"id": "rule", "token_sha256": rule_hash, "spaces": ["ENG"]},
                    {"id": "ops", "token_sha256": ops_hash, "spaces": ["ENG"], "admin": True},
                ],
            }
        )
        http = TestClient(TestServer(create_app(settings)))
        await http.start_server()
        try:
            yield World(minio, settings, http, rule, ops)
        finally:
            await http.close()


async def test_an_admin_revocation_deletes_that_key_and_spares_the_others(world: World) -> None:
    leaked, other = await world.vend(), await world.vend()
    assert world.minio.revoke_type_of(leaked["accessKeyId"]) == leaked["leaseId"]
    assert await world.get(leaked) == (200, "") and await world.get(other) == (200, "")

    response = await world.http.post(
        "/v1/admin/revocations",
        json={"leaseId": leaked["leaseId"], "reason": "leak"},
        headers={"Authorization": f"Bearer {world.ops}"},
    )
    assert response.status == 201, await response.text()
    answer = await response.json()
    assert answer["objectStoreEnforced"] is True, answer
    assert answer["leaseIds"] == [leaked["leaseId"]]

    assert await world.get(leaked) == (403, "InvalidAccessKeyId")
    assert await world.get(other) == (200, "")
    audit = Path(world.settings.audit.path or "").read_text().splitlines()
    [event] = [e for e in map(json.loads, audit) if e["event"] == "revoked"]
    assert event["access_key_ids"] == [leaked["accessKeyId"]]
    assert event["object_store_enforced"] is True


async def test_the_clis_path_revokes_a_clients_keys_and_no_one_elses(world: World) -> None:
    mine = [await world.vend() for _ in range(2)]
    theirs = await world.vend("ops")
    # The server's batched writer: leases reach the state store within flush_seconds.
    async with wiring.standalone_leases(world.settings) as tools:
        for _ in range(100):
            if len(await tools.leases.find(LeaseFilter())) == 3:
                break
            await asyncio.sleep(0.05)
        answer = await tools.revoker.revoke(Selector.CLIENT, "rule", by="cli")
    assert answer.revocation.object_store_enforced is True, answer.revocation.detail
    assert sorted(x.lease_id for x in answer.leases) == sorted(k["leaseId"] for k in mine)
    for key in mine:
        assert await world.get(key) == (403, "InvalidAccessKeyId")
    assert await world.get(theirs) == (200, "")
