"""The daily compliance check against the real RGW: all pass on a broker set up right, then
each control broken on purpose fails with evidence naming what is wrong. The HTML report is
rendered by headless Chromium (the screenshot is kept in var/test-artifacts/)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from credbroker import wiring
from credbroker.audit.chain import generate_private_pem
from credbroker.callers.tokens import new_token
from credbroker.cli import main
from credbroker.compliance.model import ComplianceResult
from credbroker.config import Settings
from credbroker.domain import Access, Client, Principal, RotationRecord, TokenRecord
from credbroker.observability import Metrics
from credbroker.secrets.sealing import new_key
from credbroker.state.control_sqlite import SqliteControlStore
from credbroker.state.sqlite import SqliteStateStore
from credbroker.web.appkeys import RUNTIME
from support.rgw_server import REPO_ROOT, RgwServer, create_bucket
from tests.integration.conftest import READ_ONLY_PATH, Harness, start_broker

pytestmark = pytest.mark.rgw

ADMIN_PATH = "credbroker/object-store/admin"
ARTIFACTS = REPO_ROOT / "var" / "test-artifacts"


@dataclass
class Setup:
    harness: Harness
    settings: Settings
    bucket: str
    other: str
    state: Path

    async def check(self, settings: Settings | None = None) -> ComplianceResult:
        async with wiring.compliance_check(settings or self.settings) as check:
            return await check.run()

    def with_(self, **changes: Any) -> Settings:
        raw = self.settings.model_dump(mode="json")
        raw.update(changes)
        return Settings.model_validate(raw)


def control(result: ComplianceResult, name: str) -> Any:
    return next(c for c in result.controls if c.name == name)


async def save_record(path: Path, record: RotationRecord) -> None:
    store = await SqliteStateStore.open(path)
    try:
        await store.save(record)
    finally:
        await store.close()


@pytest.fixture
async def setup(rgw: RgwServer, s3_admin: Any, tmp_path: Path) -> AsyncIterator[Setup]:
    bucket, other = (f"cmp-{uuid.uuid4().hex[:10]}" for _ in range(2))
    for name in (bucket, other):
        create_bucket(s3_admin, rgw, name)
    signing = tmp_path / "audit-signing.pem"
    signing.write_bytes(generate_private_pem())
    fallback_key = tmp_path / "fallback.key"
    fallback_key.write_text(new_key())
    fallback_key.chmod(0o600)
    overrides: dict[str, Any] = {
        "spaces": {
            "ENG": {"bucket": bucket, "prefix": "ENG/"},
            "OPS": {"bucket": bucket, "prefix": "OPS/"},
            "FIN": {"bucket": other, "prefix": "finance/"},
        },
        "audit": {
            "path": str(tmp_path / "audit.jsonl"),
            "signing_key_file": str(signing),
            "checkpoint_seconds": 60,
        },
        "fallback": {
            "credentials_path": READ_ONLY_PATH,
            "role_arn": rgw.read_role_arn,
            "cache_file": str(tmp_path / "fallback.sealed"),
            "key_env": "CREDBROKER_TEST_UNSET_KEY",
            "key_file": str(fallback_key),
        },
        "rotation": {
            "scheduler": False,
            "credentials": [
                {
                    "name": "service",
                    "secret_path": "credbroker/object-store/service",
                    "driver": {
                        "kind": "rgw",
                        "user": rgw.broker_uid,
                        "admin_credentials_path": ADMIN_PATH,
                    },
                    "schedule": {"interval_seconds": 30 * 86400},
                    "grace_seconds": 60,
                }
            ],
        },
        "compliance": {
            "scheduler": False,
            "inspect_credentials_path": ADMIN_PATH,
            "report_dir": str(tmp_path / "reports"),
        },
    }
    seed = {
        ADMIN_PATH: {
            "access_key_id": rgw.admin_access_key,
            "secret_access_key": rgw.admin_secret_key,
        },
        READ_ONLY_PATH: {
            "access_key_id": rgw.readonly_access_key,
            "secret_access_key": rgw.readonly_secret_key,
        },
    }
    async with contextlib.aclosing(start_broker(rgw, tmp_path, seed=seed, **overrides)) as gen:
        async for harness in gen:
            now = datetime.now(UTC)
            await save_record(
                tmp_path / "rotation-state.sqlite3",
                RotationRecord(
                    credential="service",
                    current_key_id=rgw.broker_access_key,
                    current_key_since=now - timedelta(days=2),
                    last_success_at=now - timedelta(days=2),
                ),
            )
            # Every rule client uses its access: a write for each writer, a read for the reader.
            for who, space, access in (
                ("eng-writer", "ENG", "write"),
                ("eng-reader", "ENG", "read"),
                ("ops-writer", "OPS", "write"),
                ("eng-writer", "ENG", "read"),
            ):
                answer = await harness.vend(
                    who, {"space": space, "access": access, "rule": "r1", "actor": "a1"}
                )
                assert answer.status == 201, await answer.text()
            yield Setup(harness, harness.settings, bucket, other, tmp_path)


def chromium_screenshot(html: Path, png: Path, profile: Path) -> None:
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not os.path.exists(chromium):
        pytest.fail("Chromium is not installed (scripts/bootstrap.sh installs it)")
    subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--window-size=1000,1400",
            f"--screenshot={png}",
            html.as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )


async def test_all_controls_pass_and_the_html_report_renders(setup: Setup) -> None:
    result = await setup.check()
    assert result.passed, json.dumps(result.as_dict(), indent=2)
    assert {c.name for c in result.controls} >= {
        "buckets_not_public",
        "read_only_cannot_write",
        "keys_fresh",
        "ttl_within_policy",
        "write_used",
        "clients_used",
        "token_age",
        "transport_secure",
        "audit_chain",
        "break_glass",
    }
    # Asked of the real systems: the evidence says what RGW answered.
    probe = "\n".join(control(result, "read_only_cannot_write").evidence)
    assert "its own key: refused 403 AccessDenied" in probe
    assert f"role {setup.harness.rgw.read_role_arn}): refused 403 AccessDenied" in probe
    buckets = "\n".join(control(result, "buckets_not_public").evidence)
    assert "anonymous ListObjectsV2: refused 403" in buckets
    assert result.vends_per_hour["ENG"][-1] == 3 and result.vends_per_hour["OPS"][-1] == 1

    # The report files, and the summary record in the audit trail.
    json_path, html_path = wiring.write_compliance_report(result, setup.state / "reports")
    data = json.loads(json_path.read_text())
    html = html_path.read_text()
    assert data["status"] == "pass" and data["vends_total"] == 4
    assert f'<b id="vends-total">{data["vends_total"]}</b>' in html
    assert f'<b id="failed">{len(data["failed"])}</b>' in html
    for c in data["controls"]:
        assert c["name"] in html
    for space, counts in data["vends_per_space_hour"]["spaces"].items():
        assert f"{space} ({sum(counts)})" in html  # the chart's legend: the JSON's totals
    assert "<script" not in html and "http" not in html.split("<svg")[0].split("</style>")[1]
    summaries = [
        json.loads(line)
        for line in setup.harness.audit_path.read_text().splitlines()
        if '"compliance"' in line
    ]
    assert summaries and summaries[-1]["status"] == "pass"

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    png = ARTIFACTS / "compliance-report.png"
    png.unlink(missing_ok=True)
    chromium_screenshot(html_path, png, setup.state / "chromium-profile")
    image = png.read_bytes()
    assert image[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(image) > 20_000  # a rendered page with a table and a chart, not a blank one


async def test_a_public_bucket_policy_fails(setup: Setup, s3_admin: Any) -> None:
    policy = json.loads(s3_admin.get_bucket_policy(Bucket=setup.other)["Policy"])
    policy["Statement"].append(
        {
            "Effect": "Allow",
            "Principal": "*",
            "Action": ["s3:GetObject"],
            "Resource": [f"arn:aws:s3:::{setup.other}/*"],
        }
    )
    s3_admin.delete_public_access_block(Bucket=setup.other)
    s3_admin.put_bucket_policy(Bucket=setup.other, Policy=json.dumps(policy))
    result = await setup.check()
    failed = control(result, "buckets_not_public")
    assert not failed.passed and result.failed() == ["buckets_not_public"]
    assert setup.other in failed.summary and setup.bucket not in failed.summary
    assert any(
        f"{setup.other}: PUBLIC: bucket policy statement 1 allows Principal *" in e
        for e in failed.evidence
    )


async def test_a_public_acl_fails(setup: Setup, s3_admin: Any) -> None:
    s3_admin.put_bucket_acl(Bucket=setup.other, ACL="public-read")
    result = await setup.check()
    failed = control(result, "buckets_not_public")
    assert not failed.passed
    assert any("ACL grants READ to http://acs.amazonaws.com/groups/global/AllUsers" in e
               for e in failed.evidence)  # fmt: skip


async def test_a_read_only_identity_given_write_fails(
    setup: Setup, s3_admin: Any, rgw: RgwServer
) -> None:
    policy = json.loads(s3_admin.get_bucket_policy(Bucket=setup.bucket)["Policy"])
    policy["Statement"].append(
        {
            "Effect": "Allow",
            "Principal": {"AWS": [f"arn:aws:iam:::user/{rgw.readonly_uid}"]},
            "Action": ["s3:PutObject", "s3:DeleteObject"],
            "Resource": [f"arn:aws:s3:::{setup.bucket}/*"],
        }
    )
    # RGW 16 refuses this grant under BlockPublicPolicy (it counts any other principal).
    s3_admin.delete_public_access_block(Bucket=setup.bucket)
    s3_admin.put_bucket_policy(Bucket=setup.bucket, Policy=json.dumps(policy))
    result = await setup.check()
    failed = control(result, "read_only_cannot_write")
    assert not failed.passed and result.failed() == ["read_only_cannot_write"]
    assert "WROTE" in failed.summary
    assert any("with its own key: WRITTEN (200)" in e for e in failed.evidence)
    assert "the canary object was deleted again" in failed.evidence
    left = s3_admin.list_objects_v2(Bucket=setup.bucket, Prefix="ENG/.credbroker-canary/")
    assert left.get("KeyCount", 0) == 0


@pytest.mark.parametrize("broken", ["old", "failed"])
async def test_an_old_key_or_a_failed_rotation_fails(setup: Setup, broken: str) -> None:
    now = datetime.now(UTC)
    record = RotationRecord(
        credential="service",
        current_key_id=setup.harness.rgw.broker_access_key,
        current_key_since=now - timedelta(days=400 if broken == "old" else 2),
        last_success_at=now - timedelta(days=400 if broken == "old" else 2),
    )
    if broken == "failed":
        record = replace(record, last_error="object_store_unavailable", attempts=3)
    await save_record(setup.state / "rotation-state.sqlite3", record)
    result = await setup.check()
    failed = control(result, "keys_fresh")
    assert not failed.passed and result.failed() == ["keys_fresh"]
    expected = "OLDER THAN ITS ROTATION PERIOD" if broken == "old" else "THE LAST ROTATION FAILED"
    assert expected in failed.evidence[0]
    assert setup.harness.rgw.broker_access_key in failed.evidence[0]


async def test_plain_http_transport_fails_unless_accepted(setup: Setup) -> None:
    insecure = setup.with_(
        object_store={
            **setup.settings.object_store.model_dump(mode="json"),
            "public_endpoint": "http://s3.example.com",
        },
        allow_insecure_transport=True,
    )
    result = await setup.check(insecure)
    failed = control(result, "transport_secure")
    assert not failed.passed and result.failed() == ["transport_secure"]
    assert failed.evidence == [
        "INSECURE: object_store.public_endpoint http://s3.example.com (plain http)"
    ]
    accepted = setup.with_(
        object_store=insecure.object_store.model_dump(mode="json"),
        allow_insecure_transport=True,
        compliance={
            **setup.settings.compliance.model_dump(mode="json"),
            "accept_insecure_transport": ["object_store.public_endpoint"],
        },
    )
    assert control(await setup.check(accepted), "transport_secure").passed


async def test_unused_clients_fail(setup: Setup) -> None:
    idle = setup.with_(
        clients=[
            *setup.settings.model_dump(mode="json")["clients"],
            {
                "id": "idle-writer",
                "token_sha256": "ab" * 32,
                "spaces": ["FIN"],
                "max_access": "write",
            },
        ]
    )
    result = await setup.check(idle)
    assert sorted(result.failed()) == ["clients_used", "write_used"]
    assert "UNUSED: idle-writer: last grant None" in control(result, "clients_used").evidence
    assert "UNUSED: idle-writer: last write grant None" in control(result, "write_used").evidence


async def test_a_grant_past_its_ttl_and_break_glass_are_reported(setup: Setup) -> None:
    audit = setup.harness.client.app[RUNTIME].audit
    now = datetime.now(UTC)
    await audit.record(
        {
            "ts": now.isoformat(),
            "event": "vend",
            "client": "eng-reader",
            "bucket": setup.bucket,
            "prefix": "ENG/",
            "access": "read",
            "ttl_seconds": 86400,
            "expires": (now + timedelta(days=1)).isoformat(),
            "mode": "break-glass",
            "lease_id": "cb-breakglass",
        }
    )
    result = await setup.check()
    assert result.failed() == ["ttl_within_policy"]
    assert "ttl 86400 s over the maximum 3600 s" in control(result, "ttl_within_policy").evidence[0]
    glass = control(result, "break_glass")
    assert glass.passed and "lease_id=cb-breakglass" in glass.evidence[0]


async def test_an_edited_audit_record_fails_the_chain_control(setup: Setup) -> None:
    path = setup.harness.audit_path
    lines = path.read_text().splitlines(keepends=True)
    index = next(i for i, x in enumerate(lines) if '"access":"write"' in x)
    lines[index] = lines[index].replace('"access":"write"', '"access":"read"')
    path.write_text("".join(lines))
    result = await setup.check()
    failed = control(result, "audit_chain")
    assert not failed.passed
    assert f"audit.jsonl:{index + 2}" in failed.evidence[0]
    assert "was edited" in failed.evidence[0]


async def test_the_daily_job_of_serve_runs_once_and_writes_the_reports(setup: Setup) -> None:
    runtime = setup.harness.client.app[RUNTIME]
    metrics = Metrics()
    daily = wiring.build_daily_compliance(
        setup.settings,
        store=runtime.secret_store,
        issuer=runtime.issuer,
        audit=runtime.audit,
        metrics=metrics,
    )
    result = await daily.once()
    assert result is not None and result.passed, result and result.as_dict()
    assert await daily.once() is None  # the same day, from any replica sharing the state store
    reports = sorted(p.suffix for p in (setup.state / "reports").iterdir())
    assert reports == [".html", ".json"]
    assert metrics.compliance_failed._value.get() == 0


async def test_the_cli_exit_status_says_pass_or_fail(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    config = setup.state / "credbroker.yaml"
    config.write_text(json.dumps(setup.settings.model_dump(mode="json")))
    out = setup.state / "cli-reports"
    argv = ["compliance", "check", "--config", str(config), "--out", str(out)]
    assert await asyncio.to_thread(main, argv) == 0
    assert "PASS  read_only_cannot_write" in capsys.readouterr().out
    broken = setup.with_(
        compliance={
            **setup.settings.compliance.model_dump(mode="json"),
            "unused_days": 1,
        },
        clients=[
            *setup.settings.model_dump(mode="json")["clients"],
            {"id": "idle", "token_sha256": "cd" * 32, "spaces": ["ENG"]},
        ],
    )
    config.write_text(json.dumps(broken.model_dump(mode="json")))
    assert await asyncio.to_thread(main, [*argv, "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["status"] == "fail" and report["failed"] == ["clients_used"]
    assert len(list(out.glob("*.html"))) == 2


async def add_store_token(setup: Setup, client_id: str, days_old: float) -> tuple[str, str]:
    """A token of a store principal created `days_old` ago, written through the PrincipalStore
    (the CLI and the admin API stamp the present time; an old token is made this way).
    Returns (token id, token); the control plane is reloaded so the broker accepts it."""
    token, digest = new_token()
    token_id = f"tok_{uuid.uuid4().hex[:16]}"
    now = datetime.now(UTC)
    store = await SqliteControlStore.open(setup.state / "rotation-state.sqlite3")
    try:
        if await store.principal(client_id) is None:
            await store.add_principal(
                Principal(
                    client=Client(client_id, frozenset({"ENG"}), Access.WRITE, 900),
                    created_at=now - timedelta(days=days_old),
                    updated_at=now - timedelta(days=days_old),
                    created_by="test",
                )
            )
        await store.add_token(
            TokenRecord(
                id=token_id,
                client_id=client_id,
                sha256=digest,
                created_at=now - timedelta(days=days_old),
                created_by="test",
            ),
            max_active=2,
            now=now,
        )
    finally:
        await store.close()
    runtime = setup.harness.client.app[RUNTIME]
    await runtime.control.refresh(force=True)
    setup.harness.tokens[token_id] = token
    return token_id, token


async def test_store_principals_tokens_and_lease_usage_are_checked(setup: Setup) -> None:
    """A store principal with a young token that wrote through the broker passes every
    control (its use read from the lease table); a second token of it older than
    compliance.token_max_age_days fails token_age alone, naming client, token and age."""
    young, token = await add_store_token(setup, "ci-bot", days_old=10)
    answer = await setup.harness.vend(young, {"space": "ENG", "access": "write", "rule": "r9"})
    assert answer.status == 201, await answer.text()
    runtime = setup.harness.client.app[RUNTIME]
    await runtime.lease_writer.flush()
    result = await setup.check()
    assert result.passed, json.dumps(result.as_dict(), indent=2)
    ages = control(result, "token_age").evidence
    assert any(e.startswith(f"ci-bot: token {young} created ") and "(10 d 0 h old)" in e
               for e in ages)  # fmt: skip
    assert "eng-writer: not checkable: config-file token (no creation date)" in ages
    assert any(
        e.startswith("ci-bot: last write grant 20") for e in control(result, "write_used").evidence
    )

    old, old_token = await add_store_token(setup, "ci-bot", days_old=120)
    result = await setup.check()
    assert result.failed() == ["token_age"], json.dumps(result.as_dict(), indent=2)
    failed = control(result, "token_age")
    assert failed.summary == f"1 token(s) older than 90 days: ci-bot/{old}"
    [line] = [e for e in failed.evidence if "OLDER" in e]
    assert line.startswith(f"ci-bot: token {old} created ") and "(120 d 0 h old)" in line
    assert line.endswith("OLDER THAN THE MAXIMUM OF 90 DAYS")
    text = json.dumps(result.as_dict())
    for secret in (token, old_token):
        assert secret not in text
        assert hashlib.sha256(secret.encode()).hexdigest()[:8] not in text

    # config-file tokens fail too when dated tokens are required
    strict = setup.with_(
        compliance={
            **setup.settings.compliance.model_dump(mode="json"),
            "token_max_age_days": 365,
            "require_dated_tokens": True,
        }
    )
    result = await setup.check(strict)
    assert result.failed() == ["token_age"]
    assert "ENG-WRITER: NOT CHECKABLE: CONFIG-FILE TOKEN (NO CREATION DATE)" in (
        control(result, "token_age").evidence
    )


async def test_a_store_principal_never_used_fails_the_usage_controls(setup: Setup) -> None:
    await add_store_token(setup, "idle-bot", days_old=1)
    result = await setup.check()
    assert sorted(result.failed()) == ["clients_used", "write_used"]
    assert "UNUSED: idle-bot: last grant None" in control(result, "clients_used").evidence
    assert "UNUSED: idle-bot: last write grant None" in control(result, "write_used").evidence


async def test_usage_survives_the_audit_files_rotation(setup: Setup) -> None:
    """The audit files that saw the setup's vends are gone (rotated away and archived: the
    check reads a fresh audit path); the lease table in the state store still shows every
    client's use, so the usage controls pass. Without the leases they would fail."""
    runtime = setup.harness.client.app[RUNTIME]
    await runtime.lease_writer.flush()
    fresh = setup.state / "rotated"
    fresh.mkdir()
    rotated = setup.with_(
        audit={**setup.settings.audit.model_dump(mode="json"), "path": str(fresh / "audit.jsonl")}
    )
    result = await setup.check(rotated)
    for name in ("clients_used", "write_used"):
        assert control(result, name).passed, json.dumps(result.as_dict(), indent=2)
    assert any(
        e.startswith("eng-writer: last write grant 20")
        for e in control(result, "write_used").evidence
    )
    assert control(result, "ttl_within_policy").summary.startswith("0 grant(s)")  # no trail

    # the same check with the lease rows gone: the fresh trail alone knows no use
    store = await SqliteStateStore.open(setup.state / "rotation-state.sqlite3")
    try:
        assert await store.prune(datetime.now(UTC) + timedelta(days=1)) >= 4
    finally:
        await store.close()
    result = await setup.check(rotated)
    assert not control(result, "clients_used").passed
    assert "UNUSED: eng-reader: last grant None" in control(result, "clients_used").evidence
