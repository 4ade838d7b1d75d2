"""The MinIO user-pair driver's contract (kind minio-users), run against the MinIO double and,
when MINIO_ENDPOINT + MINIO_ADMIN_ACCESS_KEY + MINIO_ADMIN_SECRET_KEY are set, a real MinIO
(two throw-away users, removed afterwards; the admin keys drive the pair, as in production).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import pytest
from minio import MinioAdmin
from minio.credentials.providers import StaticProvider

from credbroker.domain import AccessKey, Flavor
from credbroker.errors import ConfigError, ObjectStoreError, ObjectStoreRejected
from credbroker.objectstore.minio_admin import MinioUserPairDriver
from credbroker.objectstore.probe import SignedCallProbe
from credbroker.objectstore.sts import StsIssuer
from tests.contract.test_minio_driver_contract import REAL, _real_admin
from tests.doubles.minio_admin import MinioAdminDouble


@dataclass
class Pair:
    endpoint: str
    region: str
    admin: AccessKey
    first: AccessKey  # the member the store holds at the start

    @property
    def users(self) -> tuple[str, str]:
        return self.first.access_key_id, self.other

    other: str = ""

    def driver(self, admin: AccessKey | None = None) -> MinioUserPairDriver:
        chosen = admin or self.admin

        async def admin_credentials() -> AccessKey:
            return chosen

        return MinioUserPairDriver(
            users=self.users,
            policy=None,
            endpoint=self.endpoint,
            admin_credentials=admin_credentials,
            region=self.region,
            timeout_seconds=5,
        )


@pytest.fixture(params=["double", "real"])
async def pair(request: pytest.FixtureRequest) -> AsyncIterator[Pair]:
    tag = secrets.token_hex(4)
    first = AccessKey(f"cbpair-{tag}-a", secrets.token_urlsafe(24))
    other = f"cbpair-{tag}-b"
    if request.param == "double":
        async with MinioAdminDouble() as double:
            admin = AccessKey("cbadmin", secrets.token_urlsafe(24))
            double.add_user(admin.access_key_id, admin.secret_access_key, admin=True)
            double.add_user(first.access_key_id, first.secret_access_key)
            double.add_user(other, secrets.token_urlsafe(24))
            yield Pair(double.endpoint, double.region, admin, first, other)
        return
    if not all(os.environ.get(v) for v in REAL):
        pytest.skip("real MinIO needs " + ", ".join(REAL))
    endpoint = os.environ["MINIO_ENDPOINT"]
    real = _real_admin(endpoint)
    for name, secret in ((first.access_key_id, first.secret_access_key), (other, "x" * 40)):
        await asyncio.to_thread(real.user_add, name, secret)
    admin = AccessKey(os.environ["MINIO_ADMIN_ACCESS_KEY"], os.environ["MINIO_ADMIN_SECRET_KEY"])
    try:
        yield Pair(endpoint, os.environ.get("MINIO_REGION", "us-east-1"), admin, first, other)
    finally:
        for name in (first.access_key_id, other):
            await asyncio.to_thread(real.user_remove, name)


# MinIO refuses a session policy without Version ("{}" is 400 InvalidParameterValue "Version
# cannot be empty expecting '2012-10-17'": cmd/sts-handlers.go populateSessionPolicy).
_POLICY = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": ["arn:aws:s3:::none/x"]}
        ],
    }
)


async def _refused(pair: Pair, key: AccessKey) -> str | None:
    issuer = StsIssuer(endpoint=pair.endpoint, region=pair.region, role_arn=None)
    try:
        await issuer.assume_role(key, policy=_POLICY, duration_seconds=900, session_name="t")
    except ObjectStoreRejected as exc:
        return exc.aws_code
    finally:
        await issuer.close()
    return None


async def test_both_users_are_listed(pair: Pair) -> None:
    assert await pair.driver().list_keys() == sorted(pair.users)


async def test_create_sets_the_standby_and_leaves_the_kept_user_alone(pair: Pair) -> None:
    new = await pair.driver().create_key(keep=pair.first.access_key_id)

    assert new.access_key_id == pair.other
    assert len(new.secret_access_key) == 40
    assert await _refused(pair, new) is None  # a real signed AssumeRole
    assert await _refused(pair, pair.first) is None  # the kept user still works


async def test_delete_scrambles_so_the_old_secret_is_refused(pair: Pair) -> None:
    driver = pair.driver()
    issuer = StsIssuer(endpoint=pair.endpoint, region=pair.region, role_arn=None)
    probe = SignedCallProbe(
        issuer=issuer,
        endpoint=pair.endpoint,
        region=pair.region,
        flavor=Flavor.MINIO,
    )
    try:
        await driver.delete_key(pair.first.access_key_id)

        # MinIO's STS says AccessDenied for any failed authentication (apiToSTSError); S3
        # names the reason: the user exists, its old secret no longer signs.
        assert await _refused(pair, pair.first) == "AccessDenied"
        assert await probe.refuses(pair.first, via="sts")
        assert await probe.refuses(pair.first, via="s3")
        assert await driver.list_keys() == sorted(pair.users)  # never removed
        await driver.delete_key("not-a-member")  # nothing to do, no user created
        assert await driver.list_keys() == sorted(pair.users)
    finally:
        await probe.close()
        await issuer.close()


async def test_a_store_key_outside_the_pair_changes_nothing(pair: Pair) -> None:
    with pytest.raises(ConfigError, match="not a user of the pair"):
        await pair.driver().create_key(keep="someone-else")
    assert await _refused(pair, pair.first) is None


async def test_a_pair_member_as_admin_is_refused(pair: Pair) -> None:
    with pytest.raises(ConfigError, match="pair member"):
        await pair.driver(admin=pair.first).create_key(keep=pair.first.access_key_id)
    assert await _refused(pair, pair.first) is None


def _admin_client(pair: Pair) -> MinioAdmin:
    return MinioAdmin(
        endpoint=urlsplit(pair.endpoint).netloc,
        credentials=StaticProvider(pair.admin.access_key_id, pair.admin.secret_access_key),
        region=pair.region,
        secure=pair.endpoint.startswith("https"),
    )


async def test_a_retire_leaves_a_user_an_operator_disabled_disabled(pair: Pair) -> None:
    """runbooks/03 disables the parent of a leaked key: the rotation's retire must not
    enable it again (add-user sets the status it is sent), which would revive that key."""
    admin = _admin_client(pair)
    await asyncio.to_thread(admin.user_disable, pair.first.access_key_id)

    await pair.driver().delete_key(pair.first.access_key_id)

    info = json.loads(await asyncio.to_thread(admin.user_info, pair.first.access_key_id))
    assert info["status"] == "disabled"
    assert await _refused(pair, pair.first) == "AccessDenied"
    # An enabled member is scrambled and stays enabled.
    await pair.driver().delete_key(pair.other)
    info = json.loads(await asyncio.to_thread(admin.user_info, pair.other))
    assert info["status"] == "enabled"


async def test_a_disabled_standby_is_never_enabled_by_a_rotation(pair: Pair) -> None:
    admin = _admin_client(pair)
    await asyncio.to_thread(admin.user_disable, pair.other)

    with pytest.raises(ObjectStoreRejected, match="is disabled"):
        await pair.driver().create_key(keep=pair.first.access_key_id)

    info = json.loads(await asyncio.to_thread(admin.user_info, pair.other))
    assert info["status"] == "disabled"
    await asyncio.to_thread(admin.user_enable, pair.other)
    new = await pair.driver().create_key(keep=pair.first.access_key_id)
    assert await _refused(pair, new) is None


async def test_a_fips_build_is_reported_by_name_and_nothing_changes() -> None:
    """A FIPS MinIO answers admin calls in madmin-go format 0x02, which minio-py cannot
    decrypt (double only: the real server's build is what it is)."""
    async with MinioAdminDouble() as double:
        admin = AccessKey("cbadmin", secrets.token_urlsafe(24))
        double.add_user(admin.access_key_id, admin.secret_access_key, admin=True)
        first = AccessKey("cbfips-a", secrets.token_urlsafe(24))
        double.add_user(first.access_key_id, first.secret_access_key)
        double.add_user("cbfips-b", secrets.token_urlsafe(24))
        double.fips = True
        pair = Pair(double.endpoint, double.region, admin, first, "cbfips-b")
        with pytest.raises(ObjectStoreError) as info:
            await pair.driver().list_keys()
        assert info.value.code == "minio_fips_admin_encryption"
        assert double.secret_of(first.access_key_id) == first.secret_access_key
