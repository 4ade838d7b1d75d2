"""The MinIO STS parent key rotated by the dual-account pattern (driver minio-users), end to
end: wiring from real Settings, the MinIO double (admin API with encrypted bodies, SigV4, and
STS AssumeRole as MinIO answers it), the Vault double (KV v2 with cas), a SQLite state store.

Most tests vend as the broker does with its parent key (read it from the secret store at call
time, then AssumeRole); the last one drives the real web app: rule requests and an operator's
forced rotation over HTTP.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from credbroker import wiring
from credbroker.config import Settings
from credbroker.domain import AccessKey, RotationPhase, SessionKey
from credbroker.errors import ObjectStoreRejected
from credbroker.objectstore.sts import StsIssuer
from credbroker.observability import Metrics
from credbroker.secrets.vault import VaultKV2Store
from tests.doubles.minio_admin import MinioAdminDouble
from tests.doubles.vault import VaultDouble
from tests.fakes import SimulatedKill
from tests.integration.minio_settings import minio_rotation_settings

PATH = "credbroker/object-store/service"
ADMIN = "credbroker/object-store/minio-admin"
PAIR = ("credbroker-a", "credbroker-b")
POLICY = "credbroker-parent"
VENDS = 50
BUCKET = "confluence-exports"
_READ = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["s3:GetObject"],
                "Resource": [f"arn:aws:s3:::{BUCKET}/ENG/*"],
            }
        ],
    }
)
_PARENT_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Action": ["s3:*"],
            "Resource": [f"arn:aws:s3:::{BUCKET}", f"arn:aws:s3:::{BUCKET}/*"],
        }
    ],
}


def settings(minio: MinioAdminDouble, vault: VaultDouble, tmp_path: Path) -> Settings:
    return minio_rotation_settings(
        minio,
        vault,
        tmp_path,
        {
            "name": "service",
            "secret_path": PATH,
            "driver": {
                "kind": "minio-users",
                "users": list(PAIR),
                "policy": POLICY,
                "admin_credentials_path": ADMIN,
            },
            "schedule": {"interval_seconds": 86400},
            "verify": "sts",
        },
    )


class World:
    def __init__(self, minio: MinioAdminDouble, vault: VaultDouble, tmp_path: Path) -> None:
        self.minio, self.vault, self.tmp_path = minio, vault, tmp_path
        self.config = settings(minio, vault, tmp_path)
        self.store = VaultKV2Store(vault.url, token="rotation-token")
        self.issuer = StsIssuer(endpoint=minio.endpoint, region=minio.region, role_arn=None)
        self.first = AccessKey(PAIR[0], secrets.token_urlsafe(24))

    async def seed(self) -> None:
        admin = AccessKey("credbroker-admin", secrets.token_urlsafe(24))
        self.minio.add_user(admin.access_key_id, admin.secret_access_key, admin=True)
        self.minio.add_user(PAIR[0], self.first.secret_access_key)
        self.minio.add_user(PAIR[1], secrets.token_urlsafe(24))  # setup.sh: nobody keeps it
        # The pair's policy must exist before anyone attaches it (MinIO: 404
        # XMinioAdminNoSuchPolicy, cmd/iam-store.go PolicyDBUpdate); the first user has it.
        self.minio.set_policy(POLICY, _PARENT_POLICY)
        self.minio.attach(PAIR[0], POLICY)
        self.minio.put_object(BUCKET, "ENG/page.html", b"<html/>")
        self.vault.add_token("rotation-token")
        await self.store.write(PATH, self.first.as_secret_data(), cas=0)
        await self.store.write(ADMIN, admin.as_secret_data(), cas=0)

    async def current(self) -> AccessKey:
        return AccessKey.from_secret(await self.store.read(PATH))

    async def vend(self) -> SessionKey:
        """As the broker vends: the parent key read at call time, then AssumeRole."""
        parent = await self.current()
        return await self.issuer.assume_role(
            parent, policy=_READ, duration_seconds=900, session_name="vend"
        )

    async def close(self) -> None:
        await self.issuer.close()
        await self.store.close()


@pytest.fixture
async def world(tmp_path: Path) -> Any:
    async with MinioAdminDouble() as minio, VaultDouble() as vault:
        w = World(minio, vault, tmp_path)
        await w.seed()
        try:
            yield w
        finally:
            await w.close()


async def list_buckets(endpoint: str, region: str, key: SessionKey) -> int:
    """A signed S3 call with an STS key (its session token included): the HTTP status."""
    return (await s3_get(endpoint + "/", region, key))[0]


async def s3_get(url: str, region: str, key: SessionKey) -> tuple[int, str]:
    """A signed S3 GET with an STS key: the HTTP status and the body."""
    request = AWSRequest(method="GET", url=url)
    S3SigV4Auth(
        Credentials(key.access_key_id, key.secret_access_key, key.session_token), "s3", region
    ).add_auth(request)
    async with (
        aiohttp.ClientSession() as http,
        http.get(request.url, headers=dict(request.headers.items())) as response,
    ):
        return response.status, await response.text()


async def refused_code(world: World, key: AccessKey) -> str | None:
    """None if AssumeRole with `key` works, else MinIO's error code (STS answers every failed
    authentication AccessDenied: cmd/sts-handlers.go apiToSTSError)."""
    try:
        await world.issuer.assume_role(key, policy=_READ, duration_seconds=900, session_name="t")
    except ObjectStoreRejected as exc:
        return exc.aws_code
    return None


async def test_50_vends_over_a_rotation_all_succeed_and_the_old_secret_dies(
    world: World,
) -> None:
    before = await world.vend()  # an STS key vended before the rotation
    results: list[BaseException | SessionKey] = []

    async def vend(i: int) -> None:
        await asyncio.sleep(1.5 * i / VENDS)
        try:
            results.append(await world.vend())
        except Exception as exc:
            results.append(exc)

    async with wiring.rotation(
        world.config, store=world.store, issuer=world.issuer, metrics=Metrics()
    ) as rotator:

        async def rotate() -> Any:
            await asyncio.sleep(0.2)
            return await rotator.run("service", force=True, wait=True)

        *_, outcome = await asyncio.gather(*(vend(i) for i in range(VENDS)), rotate())
        [status] = await rotator.status()

    assert outcome.result == "completed", outcome.record.last_error
    assert [r for r in results if not isinstance(r, SessionKey)] == []
    assert len(results) == VENDS
    new = await world.current()
    assert new.access_key_id == PAIR[1]  # the standby took over
    assert len(new.secret_access_key) == 40
    assert outcome.record.old_key_id == PAIR[0]
    assert world.minio.users() == sorted([*PAIR, "credbroker-admin"])  # nobody removed
    assert world.minio.user_policies(PAIR[1]) == [POLICY]  # attached while creating
    assert await refused_code(world, new) is None  # the store's user works
    assert await refused_code(world, world.first) == "AccessDenied"  # old secret dead
    assert world.minio.secret_of(PAIR[0]) != world.first.secret_access_key
    # MinIO (iam-store.go AddUser): a parent's new secret leaves its STS keys alone.
    assert await list_buckets(world.minio.endpoint, world.minio.region, before) == 200
    assert status.keys == list(PAIR)
    assert status.current_key_id == PAIR[1]
    assert status.problems == []
    assert new.secret_access_key not in json.dumps(status.as_dict(), default=str)


async def test_two_rotations_alternate_the_pair(world: World) -> None:
    async with wiring.rotation(
        world.config, store=world.store, issuer=world.issuer, metrics=Metrics()
    ) as rotator:
        first = await rotator.run("service", force=True, wait=True)
        middle = await world.current()
        second = await rotator.run("service", force=True, wait=True)

    assert (first.result, second.result) == ("completed", "completed")
    final = await world.current()
    assert (middle.access_key_id, final.access_key_id) == (PAIR[1], PAIR[0])
    assert await refused_code(world, middle) == "AccessDenied"
    assert await refused_code(world, world.first) == "AccessDenied"
    assert await refused_code(world, final) is None


async def test_a_disabled_parent_denies_its_vended_keys_which_is_why_retire_scrambles(
    world: World,
) -> None:
    """MinIO's policyDBGet finds no policy for a disabled user, and an STS key is authorised
    through its parent: disabling the old user would break every key vended from it."""
    vended = await world.vend()
    page = f"{world.minio.endpoint}/{BUCKET}/ENG/page.html"
    assert await s3_get(page, world.minio.region, vended) == (200, "<html/>")

    world.minio.set_user_status(PAIR[0], enabled=False)  # mc admin user disable

    status, body = await s3_get(page, world.minio.region, vended)
    assert (status, "<Code>AccessDenied</Code>" in body) == (403, True)
    # ListBuckets never answers AccessDenied to a signed-in caller: it filters the list
    # (cmd/bucket-handlers.go ListBucketsHandler), so it cannot show the denial.
    assert await list_buckets(world.minio.endpoint, world.minio.region, vended) == 200


@pytest.mark.parametrize(
    "phase",
    [
        RotationPhase.CREATING,
        RotationPhase.CREATED,
        RotationPhase.VERIFIED,
        RotationPhase.STORED,
        RotationPhase.OLD_DELETED,
    ],
)
async def test_a_run_killed_after_each_phase_is_repaired(
    world: World, phase: RotationPhase
) -> None:
    async def die(name: str, reached: RotationPhase) -> None:
        if reached is phase:
            raise SimulatedKill()

    with pytest.raises(SimulatedKill):
        async with wiring.rotation(
            world.config, store=world.store, issuer=world.issuer, metrics=Metrics(), checkpoint=die
        ) as rotator:
            await rotator.run("service", force=True, wait=True)
    standby = PAIR[1]
    secret_at_death = world.minio.secret_of(standby)

    async with wiring.rotation(
        world.config, store=world.store, issuer=world.issuer, metrics=Metrics()
    ) as rotator:
        outcome = await rotator.run("service", force=True, wait=True)

    assert outcome.result == "completed", outcome.record.last_error
    current = await world.current()
    assert await refused_code(world, current) is None  # the store's user works
    # Every other secret either user had is refused: the first one, and whatever the killed
    # run set on the standby (it lived only in the dead process).
    for old in (world.first, AccessKey(standby, secret_at_death)):
        if old.secret_access_key != current.secret_access_key:
            assert await refused_code(world, old) == "AccessDenied"
    assert outcome.record.phase is RotationPhase.DONE


async def test_vends_through_the_http_api_survive_a_rotation_forced_by_an_admin(
    world: World,
) -> None:
    """The whole product on the MinIO double: Confluence-style POST /v1/credentials requests in
    flight while an operator forces a pair rotation through the admin API."""
    from aiohttp.test_utils import TestClient, TestServer

    from credbroker.callers.tokens import new_token
    from credbroker.web.app import create_app

    rule_token, rule_hash = new_token()
    admin_token, admin_hash = new_token()
    raw = world.config.model_dump(mode="json")
    raw["clients"] = [
        {
            "id": "rule",
            "token_sha256": rule_hash,
            "spaces": ["ENG"],
            "max_access": "read",
            # Waves of vends until the rotation ends: this test is not about fair use.
            "rate_per_second": 100_000,
            "burst": 100_000,
        },
        {"id": "ops", "token_sha256": admin_hash, "spaces": ["ENG"], "admin": True},
    ]
    client = TestClient(TestServer(create_app(Settings.model_validate(raw))))
    await client.start_server()
    try:
        before = await world.current()

        async def vend(i: int) -> tuple[int, dict[str, Any]]:
            response = await client.post(
                "/v1/credentials",
                json={"space": "ENG", "access": "read", "rule": f"r{i}"},
                headers={"Authorization": f"Bearer {rule_token}"},
            )
            return response.status, await response.json()

        async def wave() -> list[tuple[int, dict[str, Any]]]:
            return list(await asyncio.gather(*(vend(i) for i in range(10))))

        vends = await wave()  # before: all from the first user
        rotating = asyncio.create_task(
            client.post(
                "/v1/admin/rotations/service?wait=true",
                headers={"Authorization": f"Bearer {admin_token}"},
            )
        )
        while not rotating.done():  # in flight across the switch and the grace
            vends += await wave()
            await asyncio.sleep(0.02)
        vends += await wave()  # after: all from the second user
        response = await rotating
        rotation = (response.status, await response.json())
        assert rotation[0] == 200, rotation
        assert (rotation[1]["result"], rotation[1]["phase"]) == ("completed", "done"), rotation
        assert (rotation[1]["oldKeyId"], rotation[1]["newKeyId"]) == PAIR
        assert len(vends) >= 30, len(vends)  # a wave before, at least one during, one after
        assert [status for status, _ in vends] == [201] * len(vends), [
            b for s, b in vends if s != 201
        ]
        after = await world.current()
        assert after.access_key_id != before.access_key_id  # the other user of the pair
        # The vends spanned the switch: keys were minted by both users of the pair.
        minted_by = {
            user
            for user in PAIR
            for _, body in vends
            if body["accessKeyId"] in world.minio.sts_keys(user)
        }
        assert minted_by == set(PAIR), minted_by
        for _, body in (vends[0], vends[-1]):  # keys from before and after the switch work
            key = SessionKey(
                body["accessKeyId"],
                body["secretAccessKey"],
                body["sessionToken"],
                datetime.fromisoformat(body["expiration"]),
            )
            assert await list_buckets(world.minio.endpoint, world.minio.region, key) == 200
        assert await refused_code(world, before) == "AccessDenied"  # the old secret is dead
    finally:
        await client.close()
