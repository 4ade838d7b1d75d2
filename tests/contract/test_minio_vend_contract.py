"""The vend path against MinIO: a real Broker with its real STS issuer vends read and write
keys and presigned URLs, and each is used against the server, whose own policy engine decides.

Runs against the MinIO double (which parses every session policy with a port of MinIO's
parser and evaluates it as MinIO does) and, unchanged, against a real MinIO when
MINIO_ENDPOINT, MINIO_ADMIN_ACCESS_KEY and MINIO_ADMIN_SECRET_KEY are set: then a throw-away
bucket, policy (vendor/minio's parent policy, rendered for that bucket) and parent user are
created with the admin keys and removed afterwards. The first run against a real MinIO
answers for good whether write keys pass MinIO's policy parser.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import botocore.session
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from yarl import URL

from credbroker.domain import Access, Client, Flavor, SpaceTarget, TtlLimits
from credbroker.errors import InvalidRequest, KeyOutlivesRequest
from credbroker.objectstore.sts import StsIssuer
from credbroker.observability import Metrics
from credbroker.parent_key import ParentKeySource
from credbroker.policy import MAX_KEY_CHARS
from credbroker.vend import Broker, PresignRequest, Vended, VendRequest
from tests.contract.test_minio_driver_contract import REAL, _real_admin
from tests.doubles.minio_admin import MinioAdminDouble
from tests.fakes import FakeAudit, MemorySecretStore

PARENT_POLICY = Path(__file__).parents[2] / "vendor/minio/credbroker-parent-policy.json"
SERVICE = "credbroker/object-store/service"
DENIED = "AccessDenied"
CLIENT = Client("contract-rule", frozenset({"ENG", "HR"}), Access.WRITE, 3600)


def parent_policy(bucket: str) -> str:
    """vendor/minio's parent policy, for `bucket` only (as setup.sh renders it)."""
    document = json.loads(PARENT_POLICY.read_text())
    for statement in document["Statement"]:
        statement["Resource"] = [
            f"arn:aws:s3:::{bucket}/*" if r.endswith("/*") else f"arn:aws:s3:::{bucket}"
            for r in statement["Resource"][:1]
        ]
    return json.dumps(document)


@dataclass
class Minio:
    endpoint: str
    region: str
    bucket: str
    other_bucket: str
    broker: Broker
    audit: FakeAudit
    parent: str  # the built-in user whose key signs AssumeRole
    double: MinioAdminDouble | None  # None: a real MinIO

    def s3(self, vended: Vended) -> Any:
        creds = vended.credentials
        return botocore.session.get_session().create_client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=self.region,
            aws_access_key_id=creds.access_key_id,
            aws_secret_access_key=creds.secret_access_key,
            aws_session_token=creds.session_token,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
        )


async def error_code(call: Callable[..., Any], **kwargs: Any) -> str:
    """botocore is blocking and the double serves on this event loop: a worker thread."""
    try:
        await asyncio.to_thread(call, **kwargs)
    except ClientError as exc:
        return str(exc.response["Error"]["Code"])
    return "ok"


async def run(call: Callable[..., Any], **kwargs: Any) -> Any:
    return await asyncio.to_thread(call, **kwargs)


async def read_object(s3: Any, **kwargs: Any) -> bytes:
    return await asyncio.to_thread(lambda: bytes(s3.get_object(**kwargs)["Body"].read()))


def _admin_s3(endpoint: str, region: str, access: str, secret: str) -> Any:
    return botocore.session.get_session().create_client(
        "s3",
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id=access,
        aws_secret_access_key=secret,
        config=Config(s3={"addressing_style": "path"}),
    )


def _make_broker(
    endpoint: str, region: str, parent: tuple[str, str], bucket: str, other: str
) -> tuple[Broker, FakeAudit, StsIssuer]:
    store = MemorySecretStore()
    store.put(SERVICE, {"access_key_id": parent[0], "secret_access_key": parent[1]})
    audit = FakeAudit()
    issuer = StsIssuer(endpoint=endpoint, region=region, role_arn=None)
    broker = Broker(
        spaces={"ENG": SpaceTarget(bucket, "ENG/"), "HR": SpaceTarget(other, "")},
        ttl=TtlLimits(900, 900, 3600),
        credentials=ParentKeySource(store, SERVICE, cache_seconds=0),
        issuer=issuer,
        audit=audit,
        metrics=Metrics(),
        flavor=Flavor.MINIO,
    )
    return broker, audit, issuer


@pytest.fixture(params=["double", "real"])
async def minio(request: pytest.FixtureRequest) -> AsyncIterator[Minio]:
    tag = secrets.token_hex(4)
    bucket, other = f"cbvend-{tag}", f"cbvend-{tag}-whole"
    parent = (f"cbvend-{tag}-parent", secrets.token_urlsafe(24))
    if request.param == "double":
        async with MinioAdminDouble() as double:
            for name in (bucket, other):
                double.make_bucket(name)
            double.set_policy("credbroker-parent", parent_policy(bucket))
            double.set_policy("whole-bucket", parent_policy(other))
            double.add_user(*parent)
            double.attach(parent[0], "credbroker-parent", "whole-bucket")
            broker, audit, issuer = _make_broker(
                double.endpoint, double.region, parent, bucket, other
            )
            try:
                yield Minio(
                    double.endpoint, double.region, bucket, other, broker, audit, parent[0], double
                )
            finally:
                await issuer.close()
        return
    if not all(os.environ.get(v) for v in REAL):
        pytest.skip("real MinIO needs " + ", ".join(REAL))
    async for subject in _real(parent, bucket, other):
        yield subject


async def _real(parent: tuple[str, str], bucket: str, other: str) -> AsyncIterator[Minio]:
    endpoint, region = os.environ["MINIO_ENDPOINT"], os.environ.get("MINIO_REGION", "us-east-1")
    admin = _real_admin(endpoint)
    s3 = _admin_s3(
        endpoint, region, os.environ["MINIO_ADMIN_ACCESS_KEY"], os.environ["MINIO_ADMIN_SECRET_KEY"]
    )
    policies = {f"{parent[0]}-p": parent_policy(bucket), f"{parent[0]}-w": parent_policy(other)}
    for name in (bucket, other):
        await asyncio.to_thread(s3.create_bucket, Bucket=name)
    with tempfile.TemporaryDirectory() as tmp:
        for name, document in policies.items():
            path = Path(tmp) / f"{name}.json"
            path.write_text(document)
            await asyncio.to_thread(admin.policy_add, name, str(path))
    await asyncio.to_thread(admin.user_add, *parent)
    await asyncio.to_thread(admin.attach_policy, list(policies), user=parent[0])
    broker, audit, issuer = _make_broker(endpoint, region, parent, bucket, other)
    try:
        yield Minio(endpoint, region, bucket, other, broker, audit, parent[0], None)
    finally:
        await issuer.close()
        await asyncio.to_thread(admin.user_remove, parent[0])
        for name in policies:
            await asyncio.to_thread(admin.policy_remove, name)
        for name in (bucket, other):
            for item in _listed(s3, name):
                await asyncio.to_thread(s3.delete_object, Bucket=name, Key=item)
            await asyncio.to_thread(s3.delete_bucket, Bucket=name)


def _listed(s3: Any, bucket: str) -> Iterator[str]:
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            yield str(item["Key"])


async def _put(m: Minio, bucket: str, key: str, data: bytes = b"x") -> None:
    if m.double is not None:
        m.double.put_object(bucket, key, data)
        return
    s3 = _admin_s3(
        m.endpoint,
        m.region,
        os.environ["MINIO_ADMIN_ACCESS_KEY"],
        os.environ["MINIO_ADMIN_SECRET_KEY"],
    )
    await run(s3.put_object, Bucket=bucket, Key=key, Body=data)


async def test_a_write_key_writes_inside_its_prefix_and_nowhere_else(minio: Minio) -> None:
    vended = await minio.broker.vend(CLIENT, VendRequest(space="ENG", access=Access.WRITE))
    s3 = minio.s3(vended)
    await _put(minio, minio.bucket, "OPS/keep.txt")

    await run(s3.put_object, Bucket=minio.bucket, Key="ENG/new.txt", Body=b"written")
    assert await read_object(s3, Bucket=minio.bucket, Key="ENG/new.txt") == b"written"
    listed = (await run(s3.list_objects_v2, Bucket=minio.bucket, Prefix="ENG/"))["Contents"]
    assert [o["Key"] for o in listed] == ["ENG/new.txt"]
    await run(s3.delete_object, Bucket=minio.bucket, Key="ENG/new.txt")
    # A public ACL header changes nothing on MinIO (PutObject never reads it).
    await run(s3.put_object, Bucket=minio.bucket, Key="ENG/acl.txt", Body=b"x", ACL="public-read")
    await run(s3.delete_object, Bucket=minio.bucket, Key="ENG/acl.txt")

    put, bucket = s3.put_object, minio.bucket
    assert await error_code(put, Bucket=bucket, Key="OPS/x.txt", Body=b"x") == DENIED
    assert await error_code(put, Bucket=bucket, Key="ENGINEERING/x", Body=b"x") == DENIED
    assert await error_code(put, Bucket=minio.other_bucket, Key="ENG/x", Body=b"x") == DENIED
    assert await error_code(s3.delete_object, Bucket=bucket, Key="OPS/keep.txt") == DENIED
    assert await error_code(s3.get_object, Bucket=bucket, Key="OPS/keep.txt") == DENIED
    assert await error_code(s3.list_objects_v2, Bucket=bucket) == DENIED
    assert await error_code(s3.list_objects_v2, Bucket=bucket, Prefix="OPS/") == DENIED
    # No prefix condition on uploads listing exists in MinIO's grammar: not granted.
    assert await error_code(s3.list_multipart_uploads, Bucket=bucket, Prefix="ENG/") == DENIED


async def test_a_narrowed_write_key_stays_in_its_narrower_prefix(minio: Minio) -> None:
    request = VendRequest(space="ENG", access=Access.WRITE, prefix="reports/2026")
    vended = await minio.broker.vend(CLIENT, request)
    s3 = minio.s3(vended)
    assert vended.scope.prefix == "ENG/reports/2026/"

    await run(s3.put_object, Bucket=minio.bucket, Key="ENG/reports/2026/q4.pdf", Body=b"%PDF")
    put = s3.put_object
    assert await error_code(put, Bucket=minio.bucket, Key="ENG/q4.pdf", Body=b"x") == DENIED
    assert await error_code(put, Bucket=minio.bucket, Key="ENG/reports/x", Body=b"x") == DENIED
    await run(s3.delete_object, Bucket=minio.bucket, Key="ENG/reports/2026/q4.pdf")


async def test_a_read_key_reads_and_never_writes(minio: Minio) -> None:
    await _put(minio, minio.bucket, "ENG/report.txt", b"report")
    vended = await minio.broker.vend(CLIENT, VendRequest(space="ENG", access=Access.READ))
    s3 = minio.s3(vended)

    assert await read_object(s3, Bucket=minio.bucket, Key="ENG/report.txt") == b"report"
    put, bucket = s3.put_object, minio.bucket
    assert await error_code(put, Bucket=bucket, Key="ENG/x.txt", Body=b"x") == DENIED
    assert await error_code(s3.delete_object, Bucket=bucket, Key="ENG/report.txt") == DENIED


async def test_a_whole_bucket_write_key_may_list_uploads(minio: Minio) -> None:
    vended = await minio.broker.vend(CLIENT, VendRequest(space="HR", access=Access.WRITE))
    s3 = minio.s3(vended)
    await run(s3.put_object, Bucket=minio.other_bucket, Key="any/where.txt", Body=b"x")
    assert await error_code(s3.list_multipart_uploads, Bucket=minio.other_bucket) == "ok"
    assert await error_code(s3.list_objects_v2, Bucket=minio.bucket, Prefix="ENG/") == DENIED
    await run(s3.delete_object, Bucket=minio.other_bucket, Key="any/where.txt")


async def test_presigned_put_then_get_work_for_that_object_only(minio: Minio) -> None:
    key = "uploads/été & co.txt"
    put = await minio.broker.presign(
        CLIENT, PresignRequest(space="ENG", key=key, method="PUT", ttl_seconds=300)
    )
    get = await minio.broker.presign(
        CLIENT, PresignRequest(space="ENG", key=key, method="GET", ttl_seconds=300)
    )
    async with aiohttp.ClientSession() as http:
        async with http.put(URL(put.url, encoded=True), data=b"via url") as r:
            assert r.status == 200, await r.text()
        async with http.get(URL(get.url, encoded=True)) as r:
            assert r.status == 200 and await r.read() == b"via url"
        other = get.url.replace("/ENG/uploads/", "/ENG/elsewhere/", 1)
        async with http.get(URL(other, encoded=True)) as r:
            assert r.status == 403


async def test_the_largest_accepted_presign_policy_is_accepted_by_minio(minio: Minio) -> None:
    """At the key cap, counted as MinIO counts (& is six bytes in Go's JSON), the session
    policy is at most 2048 bytes: MinIO's STS accepts it; one & more is refused before any
    call."""
    room = MAX_KEY_CHARS - len("ENG/")
    key = "a" * (room % 6) + "&" * (room // 6)
    await minio.broker.presign(CLIENT, PresignRequest(space="ENG", key=key, method="PUT"))
    with pytest.raises(InvalidRequest):
        await minio.broker.presign(CLIENT, PresignRequest(space="ENG", key=key + "&", method="PUT"))


async def test_a_server_overriding_the_duration_gets_no_key_handed_out(minio: Minio) -> None:
    """MINIO_STS_DURATION makes MinIO ignore DurationSeconds (openid.go GetDefaultExpiration):
    a key longer-lived than asked is refused, audited with its id; presigned URLs are cut to
    the key's life when it is shorter. The double plays the server setting."""
    if minio.double is None:
        pytest.skip("needs a server started with MINIO_STS_DURATION; the double plays one")
    minio.double.sts_duration_override = 12 * 3600
    with pytest.raises(KeyOutlivesRequest, match="MINIO_STS_DURATION"):
        await minio.broker.vend(CLIENT, VendRequest(space="ENG", access=Access.READ))
    (denied,) = [e for e in minio.audit.events if e.get("code") == "sts_duration_ignored"]
    assert denied["access_key_id"] in minio.double.sts_keys(minio.parent)
    assert denied["expires"] > datetime.now(UTC).isoformat()

    minio.double.sts_duration_override = 900
    presigned = await minio.broker.presign(
        CLIENT, PresignRequest(space="ENG", key="a.txt", method="GET", ttl_seconds=3600)
    )
    assert (presigned.expires_at - datetime.now(UTC)).total_seconds() <= 900
