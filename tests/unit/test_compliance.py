"""The compliance check on fakes of its ports: each control fails a fast test when it stops
finding what it must find, and the run records a summary in the audit trail."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest

from credbroker.compliance.access_report import access_report, as_csv
from credbroker.compliance.check import ComplianceCheck, RotationPolicy
from credbroker.compliance.html import render_html
from credbroker.compliance.job import DailyCompliance
from credbroker.compliance.model import ComplianceResult
from credbroker.compliance.trail import TrailUsage, space_of
from credbroker.domain import Access, Client, RotationRecord, SpaceTarget, TtlLimits
from credbroker.errors import ObjectStoreUnavailable, RotationBusy
from credbroker.rotation.schedule import Schedule
from tests.fakes import FakeAudit

NOW = datetime.fromisoformat("2026-11-30T12:30:00+00:00")
SPACES = {"ENG": SpaceTarget("main", "ENG/"), "FIN": SpaceTarget("other", "fin/")}
WRITER = Client("writer", frozenset({"ENG"}), Access.WRITE, 1800)
READER = Client("reader", frozenset({"FIN"}), Access.READ, 3600)


def grant(minutes_ago: float, client: str = "writer", **fields: Any) -> dict[str, Any]:
    at = NOW - timedelta(minutes=minutes_ago)
    record = {
        "ts": at.isoformat(),
        "event": "vend",
        "client": client,
        "bucket": "main" if client == "writer" else "other",
        "prefix": "ENG/" if client == "writer" else "fin/",
        "access": "write" if client == "writer" else "read",
        "ttl_seconds": 900,
        "expires": (at + timedelta(seconds=900)).isoformat(),
        "mode": "normal",
    }
    return {**record, **fields}


class Exposure:
    def __init__(self) -> None:
        self.public: dict[str, list[str]] = {}
        self.down = False

    async def public_findings(self, bucket: str) -> tuple[list[str], list[str]]:
        if self.down:
            raise ObjectStoreUnavailable("connection refused")
        return self.public.get(bucket, []), [f"asked about {bucket}"]

    async def close(self) -> None:
        return None


class Probe:
    def __init__(self) -> None:
        self.writes = False
        self.asked: list[tuple[str, str]] = []

    async def write_refused(self, bucket: str, key: str) -> tuple[bool, list[str]]:
        self.asked.append((bucket, key))
        return (not self.writes), ["PUT ... WRITTEN" if self.writes else "PUT ... refused 403"]

    async def close(self) -> None:
        return None


class Trail:
    def __init__(self, records: list[dict[str, Any]]) -> None:
        self.items = records
        self.problem: str | None = None

    async def records(self, since: datetime, until: datetime) -> list[Mapping[str, Any]]:
        return [r for r in self.items if since <= datetime.fromisoformat(str(r["ts"])) < until]

    async def verify(self, since: datetime) -> tuple[bool, str | None, list[dict[str, Any]]]:
        chain = {"chain": "h:1:1", "status": "closed", "first_seq": 1, "last_seq": 9}
        return self.problem is None, self.problem, [{**chain, "checkpoints": 1}]


class States:
    def __init__(self) -> None:
        self.records: dict[str, RotationRecord] = {}
        self.held: set[str] = set()
        self.kind = "memory"

    async def load(self, credential: str) -> RotationRecord | None:
        return self.records.get(credential)

    async def save(self, record: RotationRecord) -> None:
        self.records[record.credential] = record

    async def all(self) -> list[RotationRecord]:
        return list(self.records.values())

    @contextlib.asynccontextmanager
    async def lock(self, credential: str) -> AsyncIterator[None]:
        if credential in self.held:
            raise RotationBusy("held")
        self.held.add(credential)
        try:
            yield
        finally:
            self.held.discard(credential)

    async def close(self) -> None:
        return None


class Rig:
    def __init__(self) -> None:
        self.exposure, self.probe, self.state, self.audit = (
            Exposure(),
            Probe(),
            States(),
            FakeAudit(),
        )
        self.trail = Trail([grant(5), grant(65), grant(30, "reader")])
        self.insecure: list[str] = []
        self.accepted: list[str] = []
        self.state.records["service"] = RotationRecord(
            credential="service",
            current_key_id="AK1",
            current_key_since=NOW - timedelta(days=3),
            last_success_at=NOW - timedelta(days=3),
        )

    async def run(self) -> ComplianceResult:
        check = ComplianceCheck(
            spaces=SPACES,
            clients=[WRITER, READER],
            ttl=TtlLimits(900, 900, 3600),
            clock_skew_seconds=60,
            exposure=self.exposure,
            write_probe=self.probe,
            canary_name=".canary",
            state=self.state,
            rotations=[RotationPolicy("service", Schedule(interval_seconds=7 * 86400), 60)],
            trail=self.trail,
            usage=TrailUsage(self.trail),
            unused_days=30,
            insecure_transport=self.insecure,
            accepted_insecure=self.accepted,
            audit=self.audit,
            clock=lambda: NOW,
        )
        return await check.run()


def by_name(result: ComplianceResult, name: str) -> Any:
    return next(c for c in result.controls if c.name == name)


@pytest.fixture
def rig() -> Rig:
    return Rig()


async def test_everything_right_passes_and_is_recorded(rig: Rig) -> None:
    result = await rig.run()
    assert result.passed, result.as_dict()
    [summary] = rig.audit.named("compliance")
    assert summary["status"] == "pass" and summary["failed"] == []
    assert rig.probe.asked[0][0] == "main" and rig.probe.asked[0][1].startswith("ENG/.canary/")
    assert result.vends_per_hour["ENG"][-1] == 1 and result.vends_per_hour["ENG"][-2] == 1
    assert result.vends_per_hour["FIN"][-1] == 1


async def test_a_public_bucket_fails(rig: Rig) -> None:
    rig.exposure.public["other"] = ["bucket policy statement 0 allows Principal *"]
    result = await rig.run()
    assert result.failed() == ["buckets_not_public"]
    assert "other: PUBLIC: bucket policy statement 0 allows Principal *" in (
        by_name(result, "buckets_not_public").evidence
    )
    assert rig.audit.named("compliance")[0]["failed"] == ["buckets_not_public"]


async def test_an_object_store_that_does_not_answer_fails_the_control(rig: Rig) -> None:
    rig.exposure.down = True
    result = await rig.run()
    failed = by_name(result, "buckets_not_public")
    assert not failed.passed and "connection refused" in failed.evidence[0]


async def test_a_read_only_identity_that_writes_fails(rig: Rig) -> None:
    rig.probe.writes = True
    assert (await rig.run()).failed() == ["read_only_cannot_write"]


@pytest.mark.parametrize("change", ["old", "failed", "missing"])
async def test_stale_or_failing_keys_fail(rig: Rig, change: str) -> None:
    record = rig.state.records["service"]
    if change == "old":
        rig.state.records["service"] = replace(
            record, current_key_since=NOW - timedelta(days=7, hours=2)
        )
    elif change == "failed":
        rig.state.records["service"] = replace(record, last_error="boom", attempts=1)
    else:
        del rig.state.records["service"]
    assert (await rig.run()).failed() == ["keys_fresh"]


async def test_a_key_inside_its_period_and_grace_passes(rig: Rig) -> None:
    rig.state.records["service"] = replace(
        rig.state.records["service"], current_key_since=NOW - timedelta(days=7, minutes=30)
    )
    assert (await rig.run()).passed


@pytest.mark.parametrize(
    "fields",
    [{"ttl_seconds": 3601}, {"ttl_seconds": 1801}, {"expires": NOW.isoformat() + "X"}],
)
async def test_a_grant_over_its_ttl_fails(rig: Rig, fields: dict[str, Any]) -> None:
    if "expires" in fields:
        fields = {"expires": (NOW + timedelta(hours=3)).isoformat()}
    rig.trail.items.append(grant(1, **fields))
    assert (await rig.run()).failed() == ["ttl_within_policy"]


async def test_unused_write_and_unused_clients_fail(rig: Rig) -> None:
    rig.trail.items = [grant(10, access="read"), grant(60 * 24 * 31, "reader")]
    result = await rig.run()
    assert sorted(result.failed()) == ["clients_used", "write_used"]
    assert by_name(result, "write_used").evidence[0].startswith("UNUSED: writer")
    assert by_name(result, "clients_used").evidence[0].startswith("UNUSED: reader")


async def test_insecure_transport_fails_unless_accepted(rig: Rig) -> None:
    rig.insecure = ["secret_store.url http://vault.example:8200 (plain http)"]
    assert (await rig.run()).failed() == ["transport_secure"]
    rig.accepted = ["secret_store.url"]
    assert (await rig.run()).passed


async def test_a_broken_chain_fails_and_break_glass_is_listed(rig: Rig) -> None:
    rig.trail.problem = "audit.jsonl:4: chain h:1:1: seq 4 where 3 was due"
    rig.trail.items.append(grant(2, mode="break-glass", lease_id="cb-glass"))
    result = await rig.run()
    assert result.failed() == ["audit_chain"]
    assert by_name(result, "audit_chain").evidence[0].startswith("FIRST PROBLEM: audit.jsonl:4")
    assert "lease_id=cb-glass" in by_name(result, "break_glass").evidence[0]
    html = render_html(result)
    assert 'id="failed">1<' in html and "cb-glass" in html and "<script" not in html


async def test_the_daily_job_runs_once_a_day_across_replicas(rig: Rig) -> None:
    runs: list[ComplianceResult] = []
    published: list[ComplianceResult] = []

    async def run() -> ComplianceResult:
        result = await rig.run()
        runs.append(result)
        return result

    async def publish(result: ComplianceResult) -> None:
        published.append(result)

    async def state() -> States:
        return rig.state

    now = [NOW]
    replicas = [DailyCompliance(run, publish, state, clock=lambda: now[0]) for _ in range(2)]
    assert await replicas[0].once() is not None
    assert await replicas[1].once() is None  # the same day: already run by the first
    async with rig.state.lock("compliance-daily"):  # another replica is running it
        now[0] = NOW + timedelta(days=1)
        assert await replicas[1].once() is None
    assert await replicas[1].once() is not None  # the next day, once
    assert len(runs) == len(published) == 2
    assert rig.state.records["compliance-daily"].last_success_at is not None


def test_the_access_report_counts_grants_denials_and_degraded_periods() -> None:
    records = [
        grant(50, rule="r1", actor="a1"),
        grant(40, rule="r1", actor="a1"),
        grant(30, "reader", mode="read-only"),
        grant(20, "reader", mode="read-only"),
        grant(10, "reader"),
        {"ts": NOW.isoformat(), "event": "denied", "client": "reader", "code": "access_denied"},
        {"ts": (NOW - timedelta(days=3)).isoformat(), "event": "vend", "client": "writer"},
    ]
    report = access_report(
        records,
        start=NOW - timedelta(days=1),
        end=NOW + timedelta(minutes=1),
        space=None,
        client=None,
        space_of=lambda r: space_of(SPACES, r),
    )
    writer = next(g for g in report["grants"] if g["client"] == "writer")
    assert (writer["space"], writer["access"], writer["count"], writer["rule"]) == (
        "ENG",
        "write",
        2,
        "r1",
    )
    assert report["denials"] == [
        {"client": "reader", "space": "-", "event": "denied", "reason": "access_denied", "count": 1}
    ]
    assert [p["grants"] for p in report["degraded"]] == [2]
    only_fin = access_report(
        records,
        start=NOW - timedelta(days=1),
        end=NOW + timedelta(minutes=1),
        space="FIN",
        client=None,
        space_of=lambda r: space_of(SPACES, r),
    )
    assert {g["client"] for g in only_fin["grants"]} == {"reader"}
    csv_text = as_csv(report)
    assert csv_text.splitlines()[0].startswith("kind,client,space,access")
    assert "grant,writer,ENG,write,vend,r1,a1,normal,,2," in csv_text


async def test_only_a_collected_break_glass_key_counts_as_a_grant(rig: Rig) -> None:
    """Every break-glass step's record says mode break-glass; only a successful collect hands
    a key out (breakglass.py)."""
    for step, outcome in (
        ("request", "ok"),
        ("approve", "ok"),
        ("collect", "escrow_sealed"),
        ("collect", "ok"),
        ("close", "ok"),
    ):
        rig.trail.items.append(
            grant(3, event="break_glass", step=step, outcome=outcome, mode="break-glass")
        )
    result = await rig.run()
    assert by_name(result, "break_glass").summary == "1 break-glass grant(s) in the last day"
