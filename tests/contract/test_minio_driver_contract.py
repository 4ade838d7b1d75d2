"""The MinIO key driver's contract, run unchanged against the admin API double and, when
MINIO_ENDPOINT + MINIO_ADMIN_ACCESS_KEY + MINIO_ADMIN_SECRET_KEY are set, a real MinIO.

On a real MinIO the admin keys only create two throw-away users (removed afterwards, with
their access keys); the driver itself runs with the managed user's own keys, as in production
(minio-py's add_service_account sends no targetUser; see rotation/minio.py).
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pytest
import urllib3
from minio import MinioAdmin
from minio.credentials.providers import StaticProvider

from credbroker.domain import AccessKey, Flavor
from credbroker.errors import ConfigError, ObjectStoreRejected
from credbroker.objectstore.minio_admin import MinioKeyDriver
from credbroker.objectstore.probe import SignedCallProbe
from tests.doubles.minio_admin import MinioAdminDouble

REAL = ("MINIO_ENDPOINT", "MINIO_ADMIN_ACCESS_KEY", "MINIO_ADMIN_SECRET_KEY")


@dataclass
class Subject:
    endpoint: str
    region: str
    user: AccessKey  # a built-in user (access key = user name)
    other: AccessKey  # another one
    keys_of: Callable[[str], Any]  # the server's own view: `mc admin accesskey ls USER`

    def driver(
        self, admin: AccessKey | None = None, *, user: AccessKey | None = None
    ) -> MinioKeyDriver:
        """The driver for `user` (default: self.user), signing with `admin` (default: self.user
        itself, as production does)."""
        chosen = admin or self.user

        async def admin_credentials() -> AccessKey:
            return chosen

        return MinioKeyDriver(
            endpoint=self.endpoint,
            owner=(user or self.user).access_key_id,
            admin_credentials=admin_credentials,
            region=self.region,
            timeout_seconds=5,
        )

    def probe(self) -> SignedCallProbe:
        return SignedCallProbe(
            issuer=_NoSts(), endpoint=self.endpoint, region=self.region, flavor=Flavor.MINIO
        )


class _NoSts:
    """The S3 probe never calls STS here (MinIO access keys cannot AssumeRole)."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"unexpected Issuer.{name}")


def _user() -> AccessKey:
    return AccessKey(f"cbtest-{secrets.token_hex(4)}", secrets.token_urlsafe(24))


@pytest.fixture(params=["double", "real"])
async def subject(request: pytest.FixtureRequest) -> AsyncIterator[Subject]:
    user, other = _user(), _user()
    if request.param == "double":
        async with MinioAdminDouble() as double:
            for u in (user, other):
                double.add_user(u.access_key_id, u.secret_access_key)

            async def keys_of(name: str) -> list[str]:
                return double.access_keys(name)

            yield Subject(double.endpoint, double.region, user, other, keys_of)
        return
    if not all(os.environ.get(v) for v in REAL):
        pytest.skip("real MinIO needs " + ", ".join(REAL))
    endpoint = os.environ["MINIO_ENDPOINT"]
    admin = _real_admin(endpoint)
    for u in (user, other):
        await asyncio.to_thread(admin.user_add, u.access_key_id, u.secret_access_key)
    region = os.environ.get("MINIO_REGION", "us-east-1")

    async def real_keys_of(name: str) -> list[str]:
        # Each user lists its own keys (no admin policy needed), as `mc admin accesskey ls`.
        owner = user if name == user.access_key_id else other
        return await Subject(endpoint, region, owner, owner, real_keys_of).driver().list_keys()

    try:
        yield Subject(endpoint, region, user, other, real_keys_of)
    finally:
        for u in (user, other):
            await asyncio.to_thread(admin.user_remove, u.access_key_id)


def _real_admin(endpoint: str) -> MinioAdmin:
    parts = urlsplit(endpoint)
    return MinioAdmin(
        endpoint=parts.netloc,
        credentials=StaticProvider(
            os.environ["MINIO_ADMIN_ACCESS_KEY"], os.environ["MINIO_ADMIN_SECRET_KEY"]
        ),
        secure=parts.scheme == "https",
        http_client=urllib3.PoolManager(timeout=urllib3.Timeout(connect=5, read=10)),
    )


async def test_a_new_user_has_no_access_keys(subject: Subject) -> None:
    assert await subject.driver().list_keys() == []


async def test_a_created_key_is_listed_and_works(subject: Subject) -> None:
    user = subject.user.access_key_id
    driver, probe = subject.driver(), subject.probe()
    try:
        key = await driver.create_key()

        assert key.access_key_id and key.secret_access_key
        assert await driver.list_keys() == [key.access_key_id]
        assert await subject.keys_of(user) == [key.access_key_id]
        await probe.accepts(key, via="s3", role_arn=None)  # a real signed call
        assert not await probe.refuses(key)
    finally:
        await probe.close()


async def test_old_and_new_keys_overlap(subject: Subject) -> None:
    driver, probe = subject.driver(), subject.probe()
    try:
        first = await driver.create_key()
        second = await driver.create_key()

        assert await driver.list_keys() == sorted([first.access_key_id, second.access_key_id])
        for key in (first, second):
            await probe.accepts(key, via="s3", role_arn=None)
    finally:
        await probe.close()


async def test_a_deleted_key_is_gone_and_refused(subject: Subject) -> None:
    driver, probe = subject.driver(), subject.probe()
    try:
        keep, drop = await driver.create_key(), await driver.create_key()

        await driver.delete_key(drop.access_key_id)

        assert await driver.list_keys() == [keep.access_key_id]
        assert await probe.refuses(drop)  # InvalidAccessKeyId
        with pytest.raises(ObjectStoreRejected) as info:
            await probe.accepts(drop, via="s3", role_arn=None)
        assert info.value.aws_code == "InvalidAccessKeyId"
        await probe.accepts(keep, via="s3", role_arn=None)
    finally:
        await probe.close()


async def test_deleting_twice_or_someone_elses_key_changes_nothing(subject: Subject) -> None:
    other = subject.other.access_key_id
    mine = await subject.driver().create_key()
    theirs = await subject.driver(subject.other, user=subject.other).create_key()

    await subject.driver().delete_key(mine.access_key_id)
    await subject.driver().delete_key(mine.access_key_id)  # already gone: fine
    await subject.driver().delete_key(theirs.access_key_id)  # not ours: untouched

    assert await subject.keys_of(other) == [theirs.access_key_id]


async def test_admin_keys_of_another_user_never_leave_a_key_behind(subject: Subject) -> None:
    user, other = subject.user.access_key_id, subject.other.access_key_id
    driver = subject.driver(admin=subject.other)  # misconfigured: other's keys for `user`

    with pytest.raises(ConfigError, match="own keys"):
        await driver.create_key()

    assert await subject.keys_of(other) == []
    assert await subject.keys_of(user) == []


async def test_a_wrong_admin_secret_is_refused_by_signature(subject: Subject) -> None:
    wrong = AccessKey(subject.user.access_key_id, "not-the-secret-" + "x" * 20)
    with pytest.raises(ObjectStoreRejected) as info:
        await subject.driver(admin=wrong).list_keys()
    assert info.value.aws_code == "SignatureDoesNotMatch"
    assert wrong.secret_access_key not in info.value.message


async def test_an_unknown_admin_key_is_refused(subject: Subject) -> None:
    unknown = AccessKey("NOSUCHKEY" + secrets.token_hex(6).upper(), "x" * 40)
    with pytest.raises(ObjectStoreRejected) as info:
        await subject.driver(admin=unknown).list_keys()
    assert info.value.aws_code == "InvalidAccessKeyId"


async def test_listing_another_users_keys_needs_admin_rights(subject: Subject) -> None:
    with pytest.raises(ObjectStoreRejected) as info:
        await subject.driver(user=subject.other).list_keys()
    assert info.value.aws_code == "AccessDenied"
