"""Revocation on MinIO: a real Broker vends keys through its real STS issuer (which tags each
AssumeRole with TokenRevokeType = lease id), the real Revoker revokes one lease through
MinioTokenRevoker (MinIO's admin call revoke-tokens), and the server itself then refuses that
key while another key of the same client keeps working.

Runs against the MinIO double and, unchanged, against a real MinIO (RELEASE.2025-04-03 or
later: the revoke-tokens route) when MINIO_ENDPOINT, MINIO_ADMIN_ACCESS_KEY and
MINIO_ADMIN_SECRET_KEY are set; then a throw-away bucket, policy and parent user are made with
the admin keys (which must hold admin:RemoveServiceAccount, as the root user does) and removed
afterwards.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from botocore.config import Config

from credbroker.domain import Access, AccessKey, Client, Flavor, SpaceTarget, TtlLimits
from credbroker.leases import Lease, Revoker, Selector
from credbroker.objectstore.minio_revocation import MinioTokenRevoker
from credbroker.objectstore.sts import StsIssuer
from credbroker.observability import Metrics
from credbroker.parent_key import ParentKeySource
from credbroker.vend import Broker, Vended, VendRequest
from tests.contract.test_minio_driver_contract import REAL, _real_admin
from tests.contract.test_minio_vend_contract import (
    _admin_s3,
    _listed,
    error_code,
    parent_policy,
    read_object,
)
from tests.doubles.minio_admin import MinioAdminDouble
from tests.fake_leases import MemoryLeaseLog
from tests.fakes import FakeAudit, MemorySecretStore

SERVICE = "credbroker/object-store/service"
CLIENT = Client("revoke-rule", frozenset({"ENG"}), Access.READ, 3600)
READ = VendRequest(space="ENG", access=Access.READ)
OBJECT = "ENG/report.txt"
GONE = "InvalidAccessKeyId"  # cmd/signature-v4-utils.go checkKeyValid: no such key


@dataclass
class Sink:
    leases: list[Lease] = field(default_factory=list)

    def issued(self, lease: Lease) -> None:
        self.leases.append(lease)


@dataclass
class Rig:
    endpoint: str
    region: str
    bucket: str
    parent: str
    admin: AccessKey
    broker: Broker
    sink: Sink
    audit: FakeAudit
    double: MinioAdminDouble | None

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

    async def revoker(self) -> tuple[Revoker, MemoryLeaseLog, MinioTokenRevoker]:
        log = MemoryLeaseLog()
        await log.add_leases(self.sink.leases)
        admin = self.admin

        async def admin_credentials() -> AccessKey:
            return admin

        async def parent_users() -> list[str]:
            return [self.parent]

        enforcer = MinioTokenRevoker(
            endpoint=self.endpoint,
            parent_users=parent_users,
            admin_credentials=admin_credentials,
            region=self.region,
        )
        return (
            Revoker(leases=log, enforcer=enforcer, audit=self.audit, max_ttl_seconds=3600),
            (log),
            enforcer,
        )


def _broker(
    endpoint: str, region: str, parent: tuple[str, str], bucket: str
) -> tuple[Broker, Sink, FakeAudit, StsIssuer]:
    store = MemorySecretStore()
    store.put(SERVICE, {"access_key_id": parent[0], "secret_access_key": parent[1]})
    sink, audit = Sink(), FakeAudit()
    issuer = StsIssuer(endpoint=endpoint, region=region, role_arn=None, tag_revoke_type=True)
    broker = Broker(
        spaces={"ENG": SpaceTarget(bucket, "ENG/")},
        ttl=TtlLimits(900, 900, 3600),
        credentials=ParentKeySource(store, SERVICE, cache_seconds=0),
        issuer=issuer,
        audit=audit,
        metrics=Metrics(),
        flavor=Flavor.MINIO,
        leases=sink,
    )
    return broker, sink, audit, issuer


@pytest.fixture(params=["double", "real"])
async def rig(request: pytest.FixtureRequest) -> AsyncIterator[Rig]:
    tag = secrets.token_hex(4)
    bucket = f"cbrevoke-{tag}"
    parent = (f"cbrevoke-{tag}-parent", secrets.token_urlsafe(24))
    if request.param == "double":
        async with MinioAdminDouble() as double:
            double.make_bucket(bucket)
            double.put_object(bucket, OBJECT, b"report")
            double.set_policy("credbroker-parent", parent_policy(bucket))
            double.add_user(*parent)
            double.attach(parent[0], "credbroker-parent")
            admin = AccessKey("cb-revoker", "cb-revoker-secret-0123456789")
            double.add_user(admin.access_key_id, admin.secret_access_key, admin=True)
            broker, sink, audit, issuer = _broker(double.endpoint, double.region, parent, bucket)
            try:
                yield Rig(
                    double.endpoint,
                    double.region,
                    bucket,
                    parent[0],
                    admin,
                    broker,
                    sink,
                    audit,
                    double,
                )
            finally:
                await issuer.close()
        return
    if not all(os.environ.get(v) for v in REAL):
        pytest.skip("real MinIO needs " + ", ".join(REAL))
    endpoint, region = os.environ["MINIO_ENDPOINT"], os.environ.get("MINIO_REGION", "us-east-1")
    admin_key = AccessKey(
        os.environ["MINIO_ADMIN_ACCESS_KEY"], os.environ["MINIO_ADMIN_SECRET_KEY"]
    )
    madmin = _real_admin(endpoint)
    s3 = _admin_s3(endpoint, region, admin_key.access_key_id, admin_key.secret_access_key)
    policy = f"{parent[0]}-p"
    await asyncio.to_thread(s3.create_bucket, Bucket=bucket)
    await asyncio.to_thread(s3.put_object, Bucket=bucket, Key=OBJECT, Body=b"report")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "policy.json"
        path.write_text(parent_policy(bucket))
        await asyncio.to_thread(madmin.policy_add, policy, str(path))
    await asyncio.to_thread(madmin.user_add, *parent)
    await asyncio.to_thread(madmin.attach_policy, [policy], user=parent[0])
    broker, sink, audit, issuer = _broker(endpoint, region, parent, bucket)
    try:
        yield Rig(endpoint, region, bucket, parent[0], admin_key, broker, sink, audit, None)
    finally:
        await issuer.close()
        await asyncio.to_thread(madmin.user_remove, parent[0])
        await asyncio.to_thread(madmin.policy_remove, policy)
        for item in _listed(s3, bucket):
            await asyncio.to_thread(s3.delete_object, Bucket=bucket, Key=item)
        await asyncio.to_thread(s3.delete_bucket, Bucket=bucket)


async def test_a_revoked_lease_key_is_refused_and_another_keeps_working(rig: Rig) -> None:
    revoked, kept = [await rig.broker.vend(CLIENT, READ) for _ in range(2)]
    gone_s3, kept_s3 = rig.s3(revoked), rig.s3(kept)
    for s3 in (gone_s3, kept_s3):
        assert await read_object(s3, Bucket=rig.bucket, Key=OBJECT) == b"report"
    revoker, log, enforcer = await rig.revoker()

    answer = await revoker.revoke(Selector.LEASE, revoked.lease_id, by="contract")

    assert answer.revocation.object_store_enforced is True, answer.revocation.detail
    assert [lease.lease_id for lease in answer.leases] == [revoked.lease_id]
    assert log.leases[revoked.lease_id].revoked_at is not None
    assert log.leases[kept.lease_id].revoked_at is None
    assert await error_code(gone_s3.get_object, Bucket=rig.bucket, Key=OBJECT) == GONE
    assert await read_object(kept_s3, Bucket=rig.bucket, Key=OBJECT) == b"report"
    (event,) = rig.audit.named("revoked")
    assert event["access_key_ids"] == [revoked.credentials.access_key_id]
    if rig.double is not None:  # the server's own view: only that key is gone
        assert rig.double.sts_keys(rig.parent) == [kept.credentials.access_key_id]
    # The pruning job's resync repeats nothing already done, and changes nothing.
    assert (await revoker.sync()).enforced is True
    assert await read_object(kept_s3, Bucket=rig.bucket, Key=OBJECT) == b"report"
    await enforcer.close()


async def test_issued_before_revokes_the_known_leases_and_says_what_minio_cannot(
    rig: Rig,
) -> None:
    old = await rig.broker.vend(CLIENT, READ)
    cut = datetime.now(UTC)
    new = await rig.broker.vend(CLIENT, READ)
    old_s3, new_s3 = rig.s3(old), rig.s3(new)
    revoker, _, enforcer = await rig.revoker()

    answer = await revoker.revoke(Selector.ISSUED_BEFORE, cut.isoformat(), by="contract")

    assert [lease.lease_id for lease in answer.leases] == [old.lease_id]
    assert await error_code(old_s3.get_object, Bucket=rig.bucket, Key=OBJECT) == GONE
    assert await read_object(new_s3, Bucket=rig.bucket, Key=OBJECT) == b"report"
    # MinIO cannot name keys by issue time: the answer does not claim every key before T.
    assert answer.revocation.object_store_enforced is False
    assert "cannot refuse keys by issue time" in answer.revocation.detail
    # A later revocation of one lease is enforced, though the cut is still in effect.
    later = await revoker.revoke(Selector.LEASE, new.lease_id)
    assert later.revocation.object_store_enforced is True, later.revocation.detail
    assert await error_code(new_s3.get_object, Bucket=rig.bucket, Key=OBJECT) == GONE
    await enforcer.close()
