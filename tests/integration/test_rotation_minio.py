"""A MinIO access key rotated end to end: wiring from real Settings, the MinIO admin API double
(SigV4, encrypted bodies), the Vault double (KV v2 with cas) and a SQLite state store.

MinIO refuses AssumeRole signed by an access key, so this credential is verified with a signed
S3 call (verify: s3); see rotation/minio.py.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

from credbroker import wiring
from credbroker.config import Settings
from credbroker.domain import AccessKey, Flavor, RotationPhase
from credbroker.objectstore.minio_admin import MinioKeyDriver
from credbroker.objectstore.probe import SignedCallProbe
from credbroker.objectstore.sts import StsIssuer
from credbroker.observability import Metrics
from credbroker.secrets.vault import VaultKV2Store
from tests.doubles.minio_admin import MinioAdminDouble
from tests.doubles.vault import VaultDouble
from tests.integration.minio_settings import minio_rotation_settings

PATH = "credbroker/object-store/app"
ADMIN = "credbroker/object-store/app-owner"
USER = "credbroker-app"


def settings(minio: MinioAdminDouble, vault: VaultDouble, tmp_path: Path) -> Settings:
    return minio_rotation_settings(
        minio,
        vault,
        tmp_path,
        {
            "name": "app",
            "secret_path": PATH,
            "driver": {"kind": "minio", "user": USER, "admin_credentials_path": ADMIN},
            "schedule": {"cron": "0 3 * * 1"},
            "verify": "s3",
        },
    )


async def test_a_minio_access_key_rotates_through_vault_with_cas(tmp_path: Path) -> None:
    password = secrets.token_urlsafe(24)
    async with MinioAdminDouble() as minio, VaultDouble() as vault:
        minio.add_user(USER, password)
        vault.add_token("rotation-token")
        config = settings(minio, vault, tmp_path)
        store = VaultKV2Store(vault.url, token="rotation-token")
        issuer = StsIssuer(endpoint=minio.endpoint, region=minio.region, role_arn=None)
        probe = SignedCallProbe(
            issuer=issuer, endpoint=minio.endpoint, region=minio.region, flavor=Flavor.MINIO
        )
        owner = AccessKey(USER, password)

        async def owner_keys() -> AccessKey:
            return owner

        first = await MinioKeyDriver(
            endpoint=minio.endpoint, owner=USER, admin_credentials=owner_keys
        ).create_key()
        try:
            await store.write(PATH, first.as_secret_data(), cas=0)
            await store.write(ADMIN, owner.as_secret_data(), cas=0)
            async with wiring.rotation(
                config, store=store, issuer=issuer, metrics=Metrics()
            ) as rotator:
                outcome = await rotator.run("app", force=True)
                new = AccessKey.from_secret(await store.read(PATH))
                assert outcome.result == "waiting_grace"
                assert minio.access_keys(USER) == sorted([first.access_key_id, new.access_key_id])
                assert vault.current_version(PATH) == 2  # a new version, written with cas=1

                outcome = await rotator.run("app", wait=True)  # finishes the grace, then proves

                assert outcome.result == "completed"
                assert outcome.record.phase is RotationPhase.DONE
                [status] = await rotator.status()
            assert minio.access_keys(USER) == [new.access_key_id]
            await probe.accepts(new, via="s3", role_arn=None)
            assert await probe.refuses(first)  # MinIO: InvalidAccessKeyId
            assert status.current_key_id == new.access_key_id
            assert status.keys == [new.access_key_id]
            assert status.schedule == "cron '0 3 * * 1' (UTC)"
            assert new.secret_access_key not in json.dumps(status.as_dict(), default=str)
        finally:
            await probe.close()
            await issuer.close()
            await store.close()
