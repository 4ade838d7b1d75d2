"""Rotation against the real Ceph RGW: every key is proven by a real signed call.

Each test rotates a throw-away user with a role of its own (rgw_identity.py), never the shared
credbroker-broker user. The Rotator is built by wiring.rotation from real Settings, over the
production-shaped secret store (the resilient wrapper around the embedded store or the Vault
double) and a real state store (SQLite, or PostgreSQL).

What RGW 16 answers for a deleted key (pinned by the first test): 403 AccessDenied, on S3 and
STS alike, never InvalidAccessKeyId (the issue expected InvalidAccessKeyId, which is MinIO's
answer). The old-key proofs below therefore assert AccessDenied.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import asyncpg
import botocore.exceptions
import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from credbroker import wiring
from credbroker.callers.composite import CallerAuthChain
from credbroker.callers.tokens import TokenAuth
from credbroker.config import Settings
from credbroker.domain import Access, AccessKey, Client, Flavor, Role, RotationPhase, Scope
from credbroker.errors import ObjectStoreRejected
from credbroker.objectstore.probe import SignedCallProbe
from credbroker.objectstore.sts import StsIssuer
from credbroker.observability import Metrics
from credbroker.policy import render_policy, session_policy
from credbroker.ports import AuditSink, SecretStore
from credbroker.rotation.model import Checkpoint
from credbroker.rotation.rotate import Rotator
from credbroker.rotation.scheduler import RotationScheduler
from credbroker.secrets.sealing import new_key
from credbroker.web import admin
from credbroker.web.appkeys import METRICS, RUNTIME
from credbroker.web.errors import error_middleware
from credbroker.wiring import Runtime
from support.rgw_server import RgwServer, botocore_client, create_bucket
from tests.doubles.vault import VaultDouble
from tests.fakes import SimulatedKill
from tests.integration.conftest import MAIN_BUCKET
from tests.integration.rgw_identity import Identity, create_identity, rgw_admin

# The spaces in the rig's settings name cb-main: a rotated key proves it can list it.
pytestmark = [pytest.mark.rgw, pytest.mark.usefixtures("buckets")]

SERVICE = "credbroker/object-store/service"
ADMIN = "credbroker/object-store/rgw-admin"
POSTGRES_DSN = os.environ.get(
    "CREDBROKER_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test"
)
GRACE = 0.5
BACKOFF = 0.2


@pytest.fixture
def identity(rgw: RgwServer) -> Iterator[Identity]:
    made = create_identity(rgw)
    try:
        yield made
    finally:
        made.remove()


def settings_for(
    rgw: RgwServer,
    identity: Identity,
    state: Path,
    *,
    store: dict[str, Any] | None = None,
    state_store: dict[str, Any] | None = None,
    grace: float = GRACE,
) -> Settings:
    key_file = state / "seal.key"
    if not key_file.exists():
        key_file.write_text(new_key())
        key_file.chmod(0o600)
    raw: dict[str, Any] = {
        "secret_store": store
        or {
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
            "role_arn": identity.role_arn,
            "credentials_path": SERVICE,
        },
        "spaces": {"ENG": {"bucket": MAIN_BUCKET, "prefix": "ENG/"}},
        "audit": {"path": str(state / "audit.jsonl")},
        "rotation": {
            "credentials": [
                {
                    "name": "service",
                    "secret_path": SERVICE,
                    "driver": {
                        "kind": "rgw",
                        "user": identity.uid,
                        "admin_credentials_path": ADMIN,
                    },
                    "schedule": {"interval_seconds": 86400},
                    "grace_seconds": grace,
                }
            ],
            "verify_timeout_seconds": 10,
            "retry": {"initial_seconds": BACKOFF, "max_seconds": 60},
        },
        "state": state_store or {"kind": "sqlite", "path": str(state / "rotation.sqlite3")},
    }
    return Settings.model_validate(json.loads(json.dumps(raw)))


@dataclass
class Rig:
    identity: Identity
    settings: Settings
    store: SecretStore
    issuer: StsIssuer
    audit: AuditSink
    metrics: Metrics
    vault: VaultDouble | None = None  # with store="vault": seal it to make the store unreachable

    @asynccontextmanager
    async def rotator(self, checkpoint: Checkpoint | None = None) -> AsyncIterator[Rotator]:
        """A Rotator as a fresh process would build it: new state handle, new drivers."""
        async with wiring.rotation(
            self.settings,
            store=self.store,
            issuer=self.issuer,
            metrics=self.metrics,
            audit=self.audit,
            checkpoint=checkpoint,
        ) as rotator:
            yield rotator

    async def in_store(self) -> AccessKey:
        return AccessKey.from_secret(await self.store.read(SERVICE))

    async def sts_works(self, key: AccessKey) -> bool:
        """A real AssumeRole of the identity's role, signed with `key`."""
        try:
            await self.issuer.assume_role(
                key,
                policy=render_policy(
                    session_policy(Scope("cb-main", "ENG/", Access.READ), flavor=Flavor.RGW),
                    flavor=Flavor.RGW,
                ),
                duration_seconds=900,
                session_name="cb-rotation-test",
            )
        except ObjectStoreRejected:
            return False
        return True

    def count(self, outcome: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "credbroker_rotations_total", {"credential": "service", "outcome": outcome}
        )
        return value or 0.0


@asynccontextmanager
async def make_rig(
    rgw: RgwServer, identity: Identity, state: Path, *, store: str = "embedded", db: str = "sqlite"
) -> AsyncIterator[Rig]:
    schema = f"cbtest_{uuid.uuid4().hex[:12]}"
    vault = VaultDouble()
    store_config = None
    state_config = None
    if store == "vault":
        await vault.start()
        vault.add_token("rotation-test-token")
        (state / "vault-token").write_text("rotation-test-token")
        store_config = {
            "kind": "vault",
            "url": vault.url,
            "auth": {"method": "token", "token": {"file": str(state / "vault-token")}},
        }
    if db == "postgres":
        (state / "state-dsn").write_text(POSTGRES_DSN)  # a reference, as in production
        state_config = {
            "kind": "postgres",
            "dsn": {"file": str(state / "state-dsn")},
            "schema_name": schema,
        }
    settings = settings_for(rgw, identity, state, store=store_config, state_store=state_config)
    metrics = Metrics()
    secret_store = wiring.build_secret_store(settings, metrics=metrics)
    issuer = StsIssuer(endpoint=rgw.endpoint, region=rgw.region, role_arn=identity.role_arn)
    audit = wiring.build_audit(settings)
    try:
        await secret_store.write(SERVICE, identity.initial.as_secret_data(), cas=0)
        await secret_store.write(ADMIN, identity.admin_key.as_secret_data(), cas=0)
        yield Rig(
            identity,
            settings,
            secret_store,
            issuer,
            audit,
            metrics,
            vault if store == "vault" else None,
        )
    finally:
        await issuer.close()
        await secret_store.close()
        await audit.close()
        await vault.stop()
        if db == "postgres":
            connection = await asyncpg.connect(POSTGRES_DSN)
            try:
                await connection.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            finally:
                await connection.close()


@pytest.fixture
async def rig(rgw: RgwServer, identity: Identity, tmp_path: Path) -> AsyncIterator[Rig]:
    async with make_rig(rgw, identity, tmp_path) as made:
        yield made


# --- what RGW answers ----------------------------------------------------------------------


async def test_rgw_answers_a_removed_or_unknown_key_with_access_denied(
    rgw: RgwServer, identity: Identity
) -> None:
    issuer = StsIssuer(endpoint=rgw.endpoint, region=rgw.region, role_arn=identity.role_arn)
    probe = SignedCallProbe(
        issuer=issuer, endpoint=rgw.endpoint, region=rgw.region, flavor=Flavor.RGW
    )
    try:
        extra = next(
            k
            for k in rgw_admin(rgw).create_key(uid=identity.uid, generate_key=True)
            if k["access_key"] != identity.initial.access_key_id
        )
        removed = AccessKey(extra["access_key"], extra["secret_key"])
        await probe.accepts(removed, via="s3", role_arn=None)  # valid: ListBuckets is 200
        await probe.accepts(removed, via="sts", role_arn=identity.role_arn)
        assert not await probe.refuses(removed)

        rgw_admin(rgw).remove_key(access_key=removed.access_key_id, uid=identity.uid)

        assert await probe.refuses(removed)
        with pytest.raises(ObjectStoreRejected) as s3_answer:
            await probe.accepts(removed, via="s3", role_arn=None)
        with pytest.raises(ObjectStoreRejected) as sts_answer:
            await probe.accepts(removed, via="sts", role_arn=identity.role_arn)
        never = AccessKey("CBNEVEREXISTED000001", "x" * 40)
        with pytest.raises(ObjectStoreRejected) as unknown_answer:
            await probe.accepts(never, via="s3", role_arn=None)
    finally:
        await probe.close()
        await issuer.close()
    # RGW 16 does not say InvalidAccessKeyId for any of them.
    assert s3_answer.value.aws_code == "AccessDenied"
    assert sts_answer.value.aws_code == "AccessDenied"
    assert unknown_answer.value.aws_code == "AccessDenied"


# --- Proof: new key works, old refused after grace, vended keys keep working ------------------


@pytest.mark.parametrize(
    ("store", "db"), [("embedded", "sqlite"), ("vault", "postgres")], ids=["embedded", "vault"]
)
async def test_after_a_rotation_the_new_key_works_the_old_is_refused_and_vended_keys_live_on(
    rgw: RgwServer, identity: Identity, s3_admin: Any, tmp_path: Path, store: str, db: str
) -> None:
    bucket = f"cbrot-{uuid.uuid4().hex[:8]}"
    create_bucket(s3_admin, rgw, bucket)
    async with make_rig(rgw, identity, tmp_path, store=store, db=db) as rig:
        old = await rig.in_store()
        vended = await rig.issuer.assume_role(
            old,
            policy=render_policy(
                session_policy(Scope(bucket, "ENG/", Access.WRITE), flavor=Flavor.RGW),
                flavor=Flavor.RGW,
            ),
            duration_seconds=900,
            session_name="cb-vended-before-rotation",
        )
        vended_s3 = botocore_client(
            rgw, "s3", vended.access_key_id, vended.secret_access_key, vended.session_token
        )
        old_s3 = botocore_client(rgw, "s3", old.access_key_id, old.secret_access_key)
        try:
            vended_s3.put_object(Bucket=bucket, Key="ENG/before.txt", Body=b"before")

            async with rig.rotator() as rotator:
                first = await rotator.run("service", force=True)
                new = await rig.in_store()

                assert first.result == "waiting_grace"
                assert new.access_key_id != old.access_key_id
                assert new.version == old.version + 1  # a new version, written with cas
                assert identity.access_keys() == sorted([old.access_key_id, new.access_key_id])
                assert await rig.sts_works(old)  # within grace: both work
                assert await rig.sts_works(new)

                await asyncio.sleep(GRACE)
                second = await rotator.run("service")

            assert second.result == "completed"
            assert second.record.phase is RotationPhase.DONE
            assert identity.access_keys() == [new.access_key_id]
            assert await rig.sts_works(new)
            assert not await rig.sts_works(old)
            with pytest.raises(botocore.exceptions.ClientError) as refused:
                old_s3.list_buckets()
            assert refused.value.response["Error"]["Code"] == "AccessDenied"  # RGW's answer
            # The key vended with the old parent key keeps working until it expires.
            got = vended_s3.get_object(Bucket=bucket, Key="ENG/before.txt")["Body"].read()
            assert got == b"before"
            vended_s3.put_object(Bucket=bucket, Key="ENG/after.txt", Body=b"after")
        finally:
            vended_s3.close()
            old_s3.close()
    for key in s3_admin.list_objects_v2(Bucket=bucket).get("Contents", []):
        s3_admin.delete_object(Bucket=bucket, Key=key["Key"])
    s3_admin.delete_bucket(Bucket=bucket)


# --- Proof: stopped after each step in turn, repaired by the next run ------------------------

# After a stop at each phase: (keys on RGW, whether the store already holds the new key).
AFTER_STOP = {
    RotationPhase.CREATING: (1, False),
    RotationPhase.CREATED: (2, False),
    RotationPhase.VERIFIED: (2, False),
    RotationPhase.STORED: (2, True),
    RotationPhase.OLD_DELETED: (1, True),
}


@pytest.mark.parametrize("phase", list(AFTER_STOP), ids=lambda p: p.value)
@pytest.mark.parametrize("how", ["killed", "failed"])
async def test_a_rotation_stopped_after_each_step_is_repaired_by_the_next_run(
    rig: Rig, identity: Identity, phase: RotationPhase, how: str
) -> None:
    async def stop(name: str, reached: RotationPhase) -> None:
        if reached is phase:
            raise SimulatedKill() if how == "killed" else RuntimeError(f"failed at {phase}")

    old = await rig.in_store()
    async with rig.rotator(checkpoint=stop) as rotator:
        if how == "killed":
            with pytest.raises(SimulatedKill):
                await rotator.run("service", force=True, wait=True)
        else:
            assert (await rotator.run("service", force=True, wait=True)).result == "failed"

    keys, switched = AFTER_STOP[phase]
    in_store = await rig.in_store()
    assert len(identity.access_keys()) == keys
    assert (in_store.access_key_id != old.access_key_id) is switched
    assert in_store.access_key_id in identity.access_keys()
    assert await rig.sts_works(in_store)

    await asyncio.sleep(max(GRACE, BACKOFF) + 0.1)  # the next run is due (grace or backoff)
    async with rig.rotator() as fresh:
        outcome = await fresh.run("service")
        in_store = await rig.in_store()
        if outcome.result == "waiting_grace":  # it repaired, then rotated again
            old_key_id = outcome.record.old_key_id
            assert old_key_id is not None  # waiting_grace: the old key is kept until the grace ends
            assert identity.access_keys() == sorted([old_key_id, in_store.access_key_id])
            await asyncio.sleep(GRACE)
            outcome = await fresh.run("service")

    in_store = await rig.in_store()
    assert outcome.result == "completed", outcome.record.last_error
    assert identity.access_keys() == [in_store.access_key_id]  # exactly one key
    assert await rig.sts_works(in_store)


async def test_a_killed_cli_process_is_repaired_by_the_next_one(
    rgw: RgwServer, identity: Identity, tmp_path: Path
) -> None:
    """SIGKILL `credbroker rotate --now --wait` during the grace period, then run it again."""
    settings = settings_for(rgw, identity, tmp_path, grace=3.0)
    config = tmp_path / "credbroker.yaml"
    config.write_text(yaml.safe_dump(json.loads(settings.model_dump_json())))
    async with make_rig(rgw, identity, tmp_path) as rig:
        old = await rig.in_store()

    first = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "credbroker.cli",
        "rotate",
        "--config",
        str(config),
        "--now",
        "--wait",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert first.stderr is not None
    seen = b""
    async with asyncio.timeout(30):
        while b"stored key" not in seen:
            line = await first.stderr.readline()
            assert line, f"rotate exited early: {seen.decode()}"
            seen += line
    first.send_signal(signal.SIGKILL)
    await first.wait()
    assert len(identity.access_keys()) == 2  # killed within the grace period: old and new

    second = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "credbroker.cli",
        "rotate",
        "--config",
        str(config),
        "--wait",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(second.communicate(), 60)
    assert second.returncode == 0, (out + err).decode()
    assert b"service: completed" in out

    status = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "credbroker.cli",
        "rotation",
        "status",
        "--config",
        str(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    status_out, _ = await asyncio.wait_for(status.communicate(), 60)
    store = wiring.build_secret_store(settings)
    issuer = StsIssuer(endpoint=rgw.endpoint, region=rgw.region, role_arn=identity.role_arn)
    probe = SignedCallProbe(
        issuer=issuer, endpoint=rgw.endpoint, region=rgw.region, flavor=Flavor.RGW
    )
    try:
        new = AccessKey.from_secret(await store.read(SERVICE))
        await probe.accepts(new, via="sts", role_arn=identity.role_arn)  # a real AssumeRole
    finally:
        await probe.close()
        await store.close()
        await issuer.close()
    assert identity.access_keys() == [new.access_key_id]
    assert new.access_key_id in status_out.decode()
    everything = (seen + out + err + status_out).decode()
    for secret in (old.secret_access_key, new.secret_access_key, rgw.admin_secret_key):
        assert secret not in everything


# --- Proof: "rotate now" stores a new key, even over a rotation stuck before its deletion -----

ADMIN_TOKEN = "cbk_rotation-rgw-admin-token"


@asynccontextmanager
async def admin_api(rotator: Rotator) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    """POST /v1/admin/rotations/{name} as the broker serves it, over this Rotator."""
    app = web.Application(middlewares=[error_middleware])
    app[METRICS] = Metrics()
    ops = Client("ops", frozenset(), Access.READ, 900, roles=frozenset({Role.ADMIN}))
    auth = TokenAuth([(hashlib.sha256(ADMIN_TOKEN.encode()).hexdigest(), ops)])
    app[RUNTIME] = cast(
        Runtime, SimpleNamespace(caller_auth=CallerAuthChain(auth), rotator=rotator)
    )
    app.router.add_post("/v1/admin/rotations/{name}", admin.rotate)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield client


async def test_a_forced_rotation_after_a_deletion_the_sealed_vault_stopped_stores_a_new_key(
    rgw: RgwServer, identity: Identity, tmp_path: Path
) -> None:
    """Issue 9: the vault is sealed when the grace ends, so the old key's deletion fails and
    the rotation stays in `stored`. A forced rotation then finishes it (the old key is deleted
    and refused by RGW) and stores a new key, instead of answering completed with nothing new.
    """
    async with make_rig(rgw, identity, tmp_path, store="vault") as rig, rig.rotator() as rotator:
        assert rig.vault is not None
        first = await rig.in_store()
        stored = await rotator.run("service", force=True)
        in_service = await rig.in_store()
        assert stored.result == "waiting_grace"
        assert stored.record.stored_at is not None

        await asyncio.sleep(GRACE)
        rig.vault.seal()
        try:
            stuck = await rotator.run("service")  # what the scheduler runs at the grace's end
        finally:
            rig.vault.unseal()
        assert stuck.result == "failed", stuck
        assert stuck.record.phase is RotationPhase.STORED
        assert "vault_unavailable" in (stuck.record.last_error or "")
        assert identity.access_keys() == sorted([first.access_key_id, in_service.access_key_id])
        assert await rig.sts_works(first)  # never deleted

        async with admin_api(rotator) as client:
            response = await client.post(
                "/v1/admin/rotations/service", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
            )
            body = await response.json()

        new = await rig.in_store()
        assert response.status == 200, body
        assert body["result"] == "waiting_grace"  # not completed: a new key, in its grace
        assert body["currentKeyId"] == body["newKeyId"] == new.access_key_id
        assert new.access_key_id not in (first.access_key_id, in_service.access_key_id)
        assert new.version == in_service.version + 1
        assert body["oldKeyId"] == in_service.access_key_id
        assert body["retiredKeyId"] == first.access_key_id
        stored_at = datetime.fromisoformat(body["storedAt"].replace("Z", "+00:00"))
        assert stored_at > stored.record.stored_at
        assert identity.access_keys() == sorted([in_service.access_key_id, new.access_key_id])
        assert not await rig.sts_works(first)  # deleted, and RGW refuses it
        assert await rig.sts_works(in_service)  # the key it replaced keeps its grace
        assert await rig.sts_works(new)
        text = json.dumps(body)
        for secret in (first, in_service, new):
            assert secret.secret_access_key not in text

        await asyncio.sleep(GRACE)
        done = await rotator.run("service")
        assert done.result == "completed", done.record.last_error
        assert identity.access_keys() == [new.access_key_id]
        assert not await rig.sts_works(in_service)


# --- Proof: a failure is logged, counted, keeps the old key, and is retried with backoff -------


async def test_a_failed_rotation_is_logged_counted_harmless_and_retried_with_backoff(
    rig: Rig, identity: Identity, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    old = await rig.in_store()
    wrong_admin = {
        "access_key_id": rig.identity.rgw.admin_access_key,
        "secret_access_key": "wrong-admin-secret-value-0001",
    }
    await rig.store.write(ADMIN, wrong_admin, cas=None)

    async with rig.rotator() as rotator:
        first = await rotator.run("service", force=True)

        assert first.result == "failed"
        assert "AccessDenied" in (first.record.last_error or "")  # RGW refused the admin key
        assert rig.count("failed") == 1
        assert "rotation service failed (attempt 1" in caplog.text
        assert await rig.in_store() == old
        assert identity.access_keys() == [old.access_key_id]
        assert await rig.sts_works(old)
        backoff_1 = (first.record.next_due_at - first.record.updated_at).total_seconds()  # type: ignore[operator]
        assert backoff_1 == pytest.approx(BACKOFF, abs=0.05)

        await asyncio.sleep(BACKOFF)
        second = await rotator.run("service")
        assert second.result == "failed" and second.record.attempts == 2
        backoff_2 = (second.record.next_due_at - second.record.updated_at).total_seconds()  # type: ignore[operator]
        assert backoff_2 == pytest.approx(2 * BACKOFF, abs=0.05)

        # The admin key is fixed; nobody runs anything by hand: the scheduler retries.
        await rig.store.write(ADMIN, rig.identity.admin_key.as_secret_data(), cas=None)
        scheduler = RotationScheduler(rotator, resync_seconds=0.2)
        await scheduler.start()
        try:
            async with asyncio.timeout(30):
                while True:
                    if (await rotator.record("service")).phase is RotationPhase.DONE:
                        break
                    await asyncio.sleep(0.1)
        finally:
            await scheduler.close()

    new = await rig.in_store()
    assert identity.access_keys() == [new.access_key_id]
    assert await rig.sts_works(new)
    assert rig.count("failed") == 2 and rig.count("completed") == 1
    failures = rig.metrics.registry.get_sample_value(
        "credbroker_rotation_consecutive_failures", {"credential": "service"}
    )
    assert failures == 0
    audit = Path(rig.settings.audit.path or "").read_text()
    for secret in (
        wrong_admin["secret_access_key"],
        rig.identity.rgw.admin_secret_key,
        old.secret_access_key,
        new.secret_access_key,
    ):
        assert secret not in caplog.text
        assert secret not in audit
