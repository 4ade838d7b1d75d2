"""Leases and revocation against the real Ceph RGW, through the real broker (admin API) and the
CLI's path (wiring.standalone_leases, as `credbroker revoke` runs it).

What RGW enforces: a Deny in the vend role's permission policy, on aws:userid ("<role id>:
<RoleSessionName>", the session name being the lease id) or on aws:TokenIssueTime. Proven here:
a key works; it is revoked; its very next request is refused (403 AccessDenied); keys not
revoked keep working; keys issued before T are refused and keys issued after T work; after many
revocations the role policy stays within 10,240 characters, and entries leave it when the keys
they target expire.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from botocore.exceptions import ClientError

from credbroker import wiring
from credbroker.leases import Lease, Revoker, Selector
from credbroker.objectstore.rgw_revocation import MAX_POLICY_CHARS
from credbroker.web.appkeys import RUNTIME
from support.rgw_server import RgwServer, botocore_client
from tests.integration.conftest import MAIN_BUCKET, Harness, start_broker

pytestmark = pytest.mark.rgw

ADMIN_PATH = "credbroker/object-store/rgw-iam-admin"
ROLE = "credbroker-vend"


@pytest.fixture
async def broker(
    rgw: RgwServer, buckets: tuple[str, str], tmp_path: Path
) -> AsyncIterator[Harness]:
    policy = f"cbtest-revocations-{uuid.uuid4().hex[:8]}"
    seed = {
        ADMIN_PATH: {
            "access_key_id": rgw.admin_access_key,
            "secret_access_key": rgw.admin_secret_key,
        }
    }
    leases = {
        "enforcer": "rgw-role-policy",
        "admin_credentials_path": ADMIN_PATH,
        "policy_name": policy,
        "flush_seconds": 0.05,
    }
    try:
        async with contextlib.aclosing(
            start_broker(rgw, tmp_path, admin_clients=["sec-admin"], seed=seed, leases=leases)
        ) as brokers:
            async for harness in brokers:
                yield harness
    finally:
        iam = botocore_client(rgw, "iam", rgw.admin_access_key, rgw.admin_secret_key)
        # Never leave a deny behind for other tests (RGW 16 cannot answer the delete of a
        # missing policy in parseable XML: ask first).
        if policy in iam.list_role_policies(RoleName=ROLE)["PolicyNames"]:
            iam.delete_role_policy(RoleName=ROLE, PolicyName=policy)
        iam.close()


async def vend(broker: Harness) -> dict[str, Any]:
    response = await broker.vend("eng-writer", {"space": "ENG", "access": "write"})
    assert response.status == 201, await response.text()
    body: dict[str, Any] = await response.json()
    return body


def works(broker: Harness, key: dict[str, Any]) -> bool:
    s3 = broker.s3_for(key)
    try:
        s3.list_objects_v2(Bucket=MAIN_BUCKET, Prefix="ENG/")
    except ClientError as exc:
        assert exc.response["Error"]["Code"] == "AccessDenied", exc.response
        return False
    finally:
        s3.close()
    return True


async def admin(broker: Harness, method: str, path: str, **kwargs: Any) -> Any:
    headers = {"Authorization": f"Bearer {broker.tokens['sec-admin']}"}
    return await broker.client.request(method, path, headers=headers, **kwargs)


def role_policy(rgw: RgwServer, name: str) -> str | None:
    iam = botocore_client(rgw, "iam", rgw.admin_access_key, rgw.admin_secret_key)
    try:
        if name not in iam.list_role_policies(RoleName=ROLE)["PolicyNames"]:
            return None
        document = iam.get_role_policy(RoleName=ROLE, PolicyName=name)["PolicyDocument"]
    finally:
        iam.close()
    return document if isinstance(document, str) else json.dumps(document, separators=(",", ":"))


async def test_a_revoked_lease_is_refused_at_once_and_another_keeps_working(
    broker: Harness,
) -> None:
    leaked, other = await vend(broker), await vend(broker)
    assert works(broker, leaked) and works(broker, other)

    response = await admin(
        broker,
        "POST",
        "/v1/admin/revocations",
        json={"leaseId": leaked["leaseId"], "reason": "leak"},
    )
    assert response.status == 201, await response.text()
    answer = await response.json()
    assert answer["objectStoreEnforced"] is True and answer["leaseIds"] == [leaked["leaseId"]]

    assert not works(broker, leaked)  # the very next request after the answer
    assert works(broker, other)

    listed = await admin(broker, "GET", "/v1/admin/leases?client=eng-writer")
    states = {x["leaseId"]: x for x in (await listed.json())["leases"]}
    assert states[leaked["leaseId"]]["state"] == "revoked"
    assert states[leaked["leaseId"]]["accessKeyId"] == leaked["accessKeyId"]
    assert states[other["leaseId"]]["state"] == "active"
    assert leaked["secretAccessKey"] not in await listed.text()
    active = await admin(broker, "GET", "/v1/admin/leases?active=true")
    assert [x["leaseId"] for x in (await active.json())["leases"]] == [other["leaseId"]]
    audited = [json.loads(line) for line in broker.audit_path.read_text().splitlines()]
    [event] = [e for e in audited if e["event"] == "revoked"]
    assert event["access_key_ids"] == [leaked["accessKeyId"]]


async def test_revoke_issued_before_refuses_older_keys_only(broker: Harness) -> None:
    old = await vend(broker)
    await asyncio.sleep(1.1)  # aws:TokenIssueTime has whole seconds
    cut = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
    await asyncio.sleep(1.5)
    new = await vend(broker)

    response = await admin(
        broker, "POST", "/v1/admin/revocations", json={"issuedBefore": cut.isoformat()}
    )
    assert response.status == 201, await response.text()
    answer = await response.json()
    assert answer["objectStoreEnforced"] is True
    assert old["leaseId"] in answer["leaseIds"] and new["leaseId"] not in answer["leaseIds"]
    assert not works(broker, old)
    assert works(broker, new)
    assert works(broker, await vend(broker))  # a key issued after the revocation works


async def test_a_client_revoked_from_the_cli_path_loses_its_live_keys(broker: Harness) -> None:
    """Another process (the CLI) on the same state store revokes what the server issued."""
    mine = await vend(broker)
    theirs_response = await broker.vend("eng-reader", {"space": "ENG", "access": "read"})
    theirs = await theirs_response.json()
    await broker.client.app[RUNTIME].lease_writer.flush()
    async with wiring.standalone_leases(broker.settings) as tools:
        answer = await tools.revoker.revoke(Selector.CLIENT, "eng-writer", by="cli:test")
    assert [x.lease_id for x in answer.leases] == [mine["leaseId"]]
    assert answer.revocation.object_store_enforced
    assert not works(broker, mine)
    assert works(broker, theirs)


async def test_many_revocations_stay_under_the_policy_limit_and_expire(
    broker: Harness, rgw: RgwServer
) -> None:
    runtime = broker.client.app[RUNTIME]
    assert runtime.leases is not None and runtime.revoker is not None
    now = datetime.now(UTC)
    # Leases as a busy day leaves them (no real key needed for the policy's size): 250 of one
    # client (half expire in 5 minutes, half in an hour), 100 of another.
    template = Lease(
        lease_id="cb-" + "0" * 24,
        kind="vend",
        client="bulk-a",
        space="ENG",
        bucket=MAIN_BUCKET,
        prefix="ENG/",
        access="write",
        ttl_seconds=900,
        issued_at=now,
        expires_at=now,
        mode="normal",
        access_key_id=None,
    )
    leases = [
        replace(
            template,
            lease_id=f"cb-{n:024x}",
            client="bulk-a" if n <= 250 else "bulk-b",
            expires_at=now + timedelta(seconds=300 if n % 2 and n <= 250 else 3600),
        )
        for n in range(1, 351)
    ]
    await runtime.leases.add_leases(leases)
    policy_name = broker.settings.leases.policy_name

    first = await admin(broker, "POST", "/v1/admin/revocations", json={"client": "bulk-a"})
    assert first.status == 201, await first.text()
    assert (await first.json())["leases"] == 250
    text = role_policy(rgw, policy_name)
    assert text is not None and len(text) <= MAX_POLICY_CHARS

    # 350 unexpired revoked leases would not fit: refused, nothing recorded, policy unchanged.
    second = await admin(broker, "POST", "/v1/admin/revocations", json={"client": "bulk-b"})
    assert second.status == 409, await second.text()
    assert (await second.json())["error"]["code"] == "revocation_too_large"
    assert role_policy(rgw, policy_name) == text
    assert works(broker, await vend(broker))  # keys not revoked keep working

    # Ten minutes on: the pruning job's resync drops the entries of expired keys, and the
    # revocation that did not fit now does.
    later = Revoker(
        leases=runtime.leases,
        enforcer=wiring.build_revocation_enforcer(broker.settings, broker.store),
        audit=runtime.audit,
        max_ttl_seconds=3600,
        clock=lambda: now + timedelta(minutes=10),
    )
    await later.sync()
    shrunk = role_policy(rgw, policy_name)
    assert shrunk is not None and len(shrunk) < len(text)
    assert f"cb-{1:024x}" not in shrunk and f"cb-{2:024x}" in shrunk
    retried = await later.revoke(Selector.CLIENT, "bulk-b")
    assert len(retried.leases) == 100
    full = role_policy(rgw, policy_name)
    assert full is not None and len(full) <= MAX_POLICY_CHARS and f"cb-{350:024x}" in full
    await Revoker(
        leases=runtime.leases,
        enforcer=wiring.build_revocation_enforcer(broker.settings, broker.store),
        audit=runtime.audit,
        max_ttl_seconds=3600,
        clock=lambda: now + timedelta(hours=2),
    ).sync()
    assert role_policy(rgw, policy_name) is None  # nothing left to deny: the policy is gone


HOSTILE_QUERIES = [
    "client=*",
    "client=%27%20OR%201=1--",
    "space=../x",
    "space=" + "a" * 300,
    "active=maybe",
    "limit=0",
    "limit=-1",
    "limit=99999999999999999999",
    "limit=1e3",
    "nope=1",
    "client=a%00b",
]
HOSTILE_BODIES: list[Any] = [
    {},
    {"leaseId": "cb-1"},
    {"leaseId": "cb-" + "0" * 24, "client": "x"},
    {"client": "*"},
    {"client": 7},
    {"space": "../../etc"},
    {"issuedBefore": "yesterday"},
    {"issuedBefore": "2999-01-01T00:00:00Z"},
    {"issuedBefore": "2026-01-01T00:00:00"},
    {"issuedBefore": "9" * 1000},
    {"leaseId": "cb-" + "f" * 24},  # unknown: 404
    {"client": "x", "reason": "a\u202eb"},
    {"client": "x", "extra": 1},
    [],
    "x",
]


async def test_hostile_input_on_the_lease_routes_gets_4xx_never_5xx(broker: Harness) -> None:
    for query in HOSTILE_QUERIES:
        response = await admin(broker, "GET", f"/v1/admin/leases?{query}")
        assert 400 <= response.status < 500, (query, response.status, await response.text())
    for body in HOSTILE_BODIES:
        response = await admin(broker, "POST", "/v1/admin/revocations", json=body)
        assert 400 <= response.status < 500, (body, response.status, await response.text())
        assert "error" in await response.json()
    raw = (
        await admin(broker, "POST", "/v1/admin/revocations", data=b"{not json", headers_extra=None)
        if False
        else None
    )
    assert raw is None
    # Not an admin: 403; no token: 401.
    response = await broker.client.get(
        "/v1/admin/leases", headers={"Authorization": f"Bearer {broker.tokens['eng-writer']}"}
    )
    assert response.status == 403
    assert (await broker.client.post("/v1/admin/revocations", json={"client": "x"})).status == 401


PG_DSN = os.environ.get("CREDBROKER_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")


async def test_two_replicas_on_postgresql_share_leases_and_revocations(
    rgw: RgwServer, buckets: tuple[str, str], tmp_path: Path
) -> None:
    """Two brokers on one PostgreSQL schema: a lease issued by one is listed and revoked from
    the other, and RGW refuses the revoked key; a restarted broker still lists it."""
    schema = f"cbtest_{uuid.uuid4().hex[:12]}"
    dsn_file = tmp_path / "pg-dsn"
    dsn_file.write_text(PG_DSN)
    policy = f"cbtest-revocations-{uuid.uuid4().hex[:8]}"
    admin_key = {
        "access_key_id": rgw.admin_access_key,
        "secret_access_key": rgw.admin_secret_key,
    }
    options: dict[str, Any] = {
        "admin_clients": ["sec-admin"],
        "seed": {ADMIN_PATH: admin_key},
        "leases": {
            "enforcer": "rgw-role-policy",
            "admin_credentials_path": ADMIN_PATH,
            "policy_name": policy,
        },
        "state": {
            "kind": "postgres",
            "dsn": {"file": str(dsn_file)},
            "schema_name": schema,
        },
    }
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    try:
        async with (
            contextlib.aclosing(start_broker(rgw, tmp_path / "a", **options)) as first,
            contextlib.aclosing(start_broker(rgw, tmp_path / "b", **options)) as second,
        ):
            one = await anext(first)
            two = await anext(second)
            leaked, kept = await vend(one), await vend(one)
            assert works(one, leaked) and works(one, kept)
            await asyncio.sleep(0.5)  # past the batch interval: replica one wrote its leases

            listed = await admin(two, "GET", "/v1/admin/leases?client=eng-writer&active=true")
            ids = {x["leaseId"] for x in (await listed.json())["leases"]}
            assert {leaked["leaseId"], kept["leaseId"]} <= ids

            response = await admin(
                two, "POST", "/v1/admin/revocations", json={"leaseId": leaked["leaseId"]}
            )
            assert response.status == 201, await response.text()
            assert (await response.json())["objectStoreEnforced"] is True
            assert not works(one, leaked)
            assert works(one, kept)
            seen = await admin(one, "GET", "/v1/admin/leases?client=eng-writer")
            states = {x["leaseId"]: x["state"] for x in (await seen.json())["leases"]}
            assert states[leaked["leaseId"]] == "revoked"
        # Both stopped (graceful: flushed). A broker started again lists every lease.
        async with contextlib.aclosing(start_broker(rgw, tmp_path / "a", **options)) as again:
            three = await anext(again)
            after = await admin(three, "GET", "/v1/admin/leases?client=eng-writer")
            states = {x["leaseId"]: x["state"] for x in (await after.json())["leases"]}
            assert states == {leaked["leaseId"]: "revoked", kept["leaseId"]: "active"}
    finally:
        iam = botocore_client(rgw, "iam", rgw.admin_access_key, rgw.admin_secret_key)
        if policy in iam.list_role_policies(RoleName=ROLE)["PolicyNames"]:
            iam.delete_role_policy(RoleName=ROLE, PolicyName=policy)
        iam.close()
        connection = await asyncpg.connect(PG_DSN)
        try:
            await connection.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        finally:
            await connection.close()
