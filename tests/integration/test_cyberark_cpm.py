"""CyberArk's CPM rotates the broker's key; the broker follows it without failing a vend.

A real broker on CyberArk CCP (the CCP double over mTLS) and the real Ceph RGW, with a
throw-away RGW user and role (rgw_identity.py). The CPM's change is done the way a CPM plug-in
for an S3 access key does it: a new key for the user on RGW, the account in CyberArk updated
(new UserName = key id, new Content = secret), the old key deleted on RGW. The broker holds
the old key in its cache (secret_cache_seconds: 300) and learns of the change only from RGW's
refusal: it reads CCP again and retries that one call with the new key (vend.py). Every vend
succeeds; none needs more than that one retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest

from credbroker.domain import AccessKey
from support.rgw_server import RgwServer, botocore_client
from tests.doubles.cyberark_ccp import Account, CcpDouble, Pki
from tests.integration import ccp_settings
from tests.integration.conftest import MAIN_BUCKET, SERVICE_PATH, Harness, start_broker
from tests.integration.rgw_identity import Identity, create_identity, rgw_admin

pytestmark = [pytest.mark.rgw, pytest.mark.usefixtures("buckets")]


@pytest.fixture
def identity(rgw: RgwServer) -> Iterator[Identity]:
    made = create_identity(rgw, prefix="cbcpm")
    try:
        yield made
    finally:
        made.remove()


@pytest.fixture
async def ccp(tmp_path: Path, identity: Identity) -> AsyncIterator[CcpDouble]:
    async with CcpDouble(Pki(tmp_path / "pki")) as double:
        # The account a CyberArk admin onboards (vendor/cyberark/README.md).
        double.add_account(
            Account(
                ccp_settings.SAFE,
                ccp_settings.SERVICE_OBJECT,
                identity.initial.secret_access_key,
                {"UserName": identity.initial.access_key_id},
            )
        )
        yield double


@pytest.fixture
async def broker(
    rgw: RgwServer, tmp_path: Path, identity: Identity, ccp: CcpDouble
) -> AsyncIterator[Harness]:
    overrides: dict[str, Any] = {
        "object_store": identity.rotation_overrides(SERVICE_PATH, "unused", tmp_path, grace=1)[
            "object_store"
        ],
        "secret_cache_seconds": 300,  # only RGW's refusal tells the broker the key changed
    }
    async with contextlib.aclosing(start_broker(rgw, tmp_path, ccp=ccp, **overrides)) as brokers:
        async for harness in brokers:
            yield harness


def cpm_change(rgw: RgwServer, identity: Identity, ccp: CcpDouble, old: AccessKey) -> AccessKey:
    """What the CPM's change task does for an S3 key: create, store in CyberArk, delete old."""
    admin = rgw_admin(rgw)
    keys = admin.create_key(uid=identity.uid, key_type="s3", generate_key=True)
    fresh = next(
        k for k in keys if k["access_key"] != old.access_key_id and k["user"] == identity.uid
    )
    new = AccessKey(fresh["access_key"], fresh["secret_key"])
    ccp.cpm_change(
        ccp_settings.SAFE,
        ccp_settings.SERVICE_OBJECT,
        content=new.secret_access_key,
        UserName=new.access_key_id,
    )
    admin.remove_key(access_key=old.access_key_id, key_type="s3", uid=identity.uid)
    return new


def wait_until_refused(rgw: RgwServer, identity: Identity, old: AccessKey) -> None:
    """RGW refuses the deleted key before the test goes on (AccessDenied on RGW 16)."""
    deadline = time.monotonic() + 10
    sts = botocore_client(rgw, "sts", old.access_key_id, old.secret_access_key)
    try:
        while True:
            try:
                sts.assume_role(RoleArn=identity.role_arn, RoleSessionName="probe")
            except botocore.exceptions.ClientError as exc:
                # RGW's STS answers a deleted key 403 (its body is not always parsed).
                assert exc.response["ResponseMetadata"]["HTTPStatusCode"] == 403, exc.response
                return
            assert time.monotonic() < deadline, "RGW still accepts the deleted key"
            time.sleep(0.1)
    finally:
        sts.close()


async def refreshes(harness: Harness) -> float:
    text = await (await harness.client.get("/metrics")).text()
    for line in text.splitlines():
        if line.startswith("credbroker_parent_key_refreshes_total "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError("credbroker_parent_key_refreshes_total not found")


async def vend(harness: Harness) -> dict[str, Any]:
    response = await harness.vend("eng-reader", {"space": "ENG", "access": "read"})
    body: dict[str, Any] = await response.json()
    assert response.status == 201, body
    assert body["mode"] == "normal"
    return body


async def test_vends_follow_a_cpm_rotation_with_at_most_one_retry_and_none_fails(
    broker: Harness, rgw: RgwServer, identity: Identity, ccp: CcpDouble
) -> None:
    # Readiness reads every configured secret at start: let that finish before counting the
    # reads the vend path makes.
    assert (await broker.client.get("/readyz")).status in (200, 503)
    first = await vend(broker)  # the old key is now in the broker's cache
    assert await refreshes(broker) == 0
    reads_before = len(ccp.requests)

    # Sequential: the first vend after the change is refused once, re-reads CCP, succeeds.
    new = cpm_change(rgw, identity, ccp, identity.initial)
    await asyncio.to_thread(wait_until_refused, rgw, identity, identity.initial)
    sequential = [await vend(broker) for _ in range(10)]
    assert await refreshes(broker) == 1  # one retried call, then the cache holds the new key
    assert len(ccp.requests) - reads_before == 1  # and CCP was read once for it

    # Concurrent: a burst meets the next change; each vend retries at most once (vend.py has
    # no second retry) and they share one CCP read (single flight).
    reads_before = len(ccp.requests)
    newer = cpm_change(rgw, identity, ccp, new)
    await asyncio.to_thread(wait_until_refused, rgw, identity, new)
    burst = await asyncio.gather(*(vend(broker) for _ in range(8)))
    retried = await refreshes(broker) - 1
    assert 1 <= retried <= len(burst)
    assert len(ccp.requests) - reads_before <= 2

    # Every key vended works on RGW (list its prefix), before and after the changes.
    for body in (first, sequential[-1], *burst):
        s3 = broker.s3_for(body)
        s3.list_objects_v2(Bucket=MAIN_BUCKET, Prefix="ENG/")
        s3.close()
    status = ccp.account(ccp_settings.SAFE, ccp_settings.SERVICE_OBJECT).properties
    assert status["UserName"] == newer.access_key_id
    print(
        f"\n[cpm] 10 sequential vends after a CPM change: 1 retried call, 1 CCP read; "
        f"8 concurrent vends after the next: {int(retried)} retried calls, "
        f"{len(ccp.requests) - reads_before} CCP read(s); none failed"
    )
